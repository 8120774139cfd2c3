//! A switch port: its durable identity and everything vsflow keeps for it, including the
//! port's side of a live-migration restore.
//!
//! # Restoring
//!
//! Traffic may flow on the destination after the NIC is created and before the pended restore
//! completes. A port created with `NDIS_SWITCH_PORT_PARAMETERS_FLAG_RESTORING_PORT` is put in
//! the *restoring* state ([`Port::begin_restore`]) until the restore is applied
//! ([`Port::commit_restore`]), cancelled ([`Port::cancel_restore`]), or none came in time
//! ([`Port::restore_timed_out`]: a source host without vsflow saves nothing for it).
//!
//! **The restore window enforces** (issue 16), whatever the port's configured mode: the blob
//! may carry Enforce, and until it is read nothing may open a conversation the source would
//! have blocked. In the window classify admits and tracks the VM's own traffic (as Enforce
//! does), admits inbound mid-stream TCP segments (readable flags, ACK set, SYN and RST clear:
//! carried connections keep working) as *tentative* pickups ([`crate::flow::tentative`]:
//! tracked once the VM answers, as [`Admission::Monitor`], so they are re-checked against the
//! restored rules after the commit), and judges everything else inbound by the port's current
//! rules: inbound initial SYNs and unsolicited UDP and other protocols are blocked (counted in
//! `window_blocked`; the peer retries). Only an operator who sets Monitor during the window
//! ([`Port::set_mode`]) makes it Monitor. An outsider cannot fill the table in the window:
//! flows the VM has not answered are never in it.
//!

//! A restore is applied in three steps that the codec's `apply` drives:
//! 1. [`Port::plan_restore`] decides what policy the restore installs (fallible, changes
//!    nothing);
//! 2. the codec builds the new table from the carried flows, each with the admission
//!    [`RestorePlan::admission`] maps it to, and adds the flows this port already tracks
//!    (seen in the window), merging a flow both sides know with
//!    [`crate::FlowRecord::merge_window`] (when the window holds more flows than the blob,
//!    the carried flows go into the port's table instead: the same table, built with the
//!    carried flows' work, not the window's);
//! 3. [`Port::commit_restore`] swaps everything in (infallible), and the codec arms the
//!    restored fingerprints ([`Port::arm_pickup`]).
//!
//! **Policy.** An operator's change made while the port awaits its restore (from
//! [`Port::begin_restore`] until a restore commits, even after the window closed on its own
//! and the restore is still pended) is later than the state the source host saved, so it
//! wins: if [`Port::replace_rules`] ran, the port keeps its rules and the blob's are
//! discarded; likewise for [`Port::set_mode`] and the blob's mode (counted in
//! `restore_policy_kept`). Otherwise the blob's mode and rules are installed (the VM's policy
//! migrates with it).
//!
//! **A degraded restore never lowers policy** ([`Port::plan_uncarried`],
//! [`Port::commit_degraded`]): when the blob carries no usable flows, the operator's settings
//! stay; otherwise the policy the blob still carries is installed (an intact blob that could
//! not be applied, or a damaged one whose separately checked policy survived); otherwise the
//! port keeps a mode the operator or an earlier restore set, and else becomes
//! [`Mode::Enforce`] with its rules (none on a new port). Never the host's default mode for new
//! ports by accident: that would turn an Enforce VM's port into Monitor. Nor does a lost
//! connection become the VM's: for the pickup window the VM's mid-stream segment of a connection
//! the port does not know is judged ([`Port::judge_uncarried_until`]).
//!
//! **Rule versions** are this host's: they only ever increase on a port, whatever the restore
//! (a restore installs the carried rules as version `max(local, carried) + 1`; a carried
//! version of 2^31 or more is not taken over, so versions cannot be pushed to wrap; a restore
//! that installs no rules keeps the version). A carried flow admitted under exactly the rules
//! being installed, complete (the source's blob cap left no rule out), keeps its admission
//! under the new version; every other carried rule admission becomes [`Admission::Monitor`]
//! (re-checked), and flows admitted under this host's older rules carry older versions: a
//! change of rules, by restore or by the operator, always re-checks. Versions of two hosts
//! never meet in one table.
//!
//! **Collisions.** A flow both carried and seen in the window keeps the carried opener and
//! admission (the source saw its start), the further TCP state, the union of FIN bits, summed
//! counters, the earlier first-seen and the later last-seen time; if the carried flow was
//! closed and the window saw a new connection on the same 5-tuple, the window's flow wins.
//!
//! # Pickups (issues 12 and 16)
//!
//! A connection the destination does not know exactly may be *picked up*: in the restore window
//! (above); within the pickup window after a restore, when its key has an unused fingerprint in
//! the restored set ([`crate::fingerprint::Pickup`]); or, with [`PickupConfig::loose`] (off by
//! default), for [`PickupConfig::loose_window`] after the restore window ends (by a restore, a
//! degraded one included ([`Port::open_loose_window`]), or by [`Port::restore_timed_out`] when
//! none comes: a source host without vsflow, loose pickup's documented case), Linux conntrack's
//! loose mode.
//!
//! **What is picked up, and how** (issue 16: pickups admit no new conversation):
//! - Only TCP, and inbound only a mid-stream segment ([`PacketMeta::is_midstream_tcp`]). An
//!   inbound initial SYN, or a segment whose flags could not be read, is judged by the rules as
//!   a new connection, on a picked-up flow or not. UDP and other protocols are never picked up:
//!   only established TCP connections are fingerprinted (every non-TCP match would be false),
//!   and nothing tells a datagram that answers the VM from one that starts a conversation. The
//!   VM's own UDP opens its flow as it always does (the VM's traffic does in Enforce), without
//!   consulting the fingerprints.
//! - An inbound pickup is *tentative* ([`crate::flow::tentative`]): it admits at most a few
//!   segments and holds no table slot until the VM answers. The VM's answer confirms it (an
//!   established flow, [`Admission::Vm`], the fingerprint used up), or the VM's reset refuses
//!   it: nothing more on that 5-tuple is picked up, and the fingerprint is *not* used up, so an
//!   outsider's spray costs no carried connection. The VM's SYN-ACK refuses it too (it
//!   answers a SYN, it resumes nothing; the rules judge that connection).
//! - The VM's own mid-stream segment of an unknown flow with an unused fingerprint is picked up
//!   at once (the VM spoke), with the right to displace an established connection if the table
//!   is full.
//!
//! Counted: `fingerprint_pickups` and `picked_up_loose` (flows admitted by each, tentative
//! included), `pickups_confirmed`, `pickups_refused`. Monitor mode permits everything and
//! picks nothing up (the VM's own segments aside).

pub mod shards;

use core::fmt;

use crate::classify::{Verdict, classify};
use crate::counters::PortCounters;
use crate::error::Error;
use crate::fingerprint::Pickup;
use crate::flow::{Admission, FlowTable, PickupKind, TableConfig, TentativeFlows};
use crate::packet::PacketMeta;
use crate::policy::{AllowRule, Mode, RuleSet};
use crate::time::{Tick, secs};

/// Loose pickup after the restore window (see the module docs). The fingerprint window is the
/// codec's (`codec::ApplyConfig::pickup_window`): it arms the restored set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PickupConfig {
    /// Loose pickup of mid-stream TCP segments (default off).
    pub loose: bool,
    /// Window of loose pickup after the restore window ends (default 60 s).
    pub loose_window: Tick,
}

impl Default for PickupConfig {
    fn default() -> Self {
        Self { loose: false, loose_window: secs(60) }
    }
}

/// How classify judges the port's traffic (kept in step with the mode and the restore state by
/// every method that changes either, so the packet path reads one byte).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Judging {
    /// Permit and track everything.
    Monitor,
    /// Stateful, with allow rules.
    Enforce,
    /// The restore window: Enforce, plus tentative pickup of inbound mid-stream TCP, and
    /// window flows admitted as [`Admission::Monitor`] pass until the restore re-checks them.
    Restoring,
}

/// The port's restore state.
#[derive(Clone, Debug, Default)]
pub(crate) struct RestoreState {
    /// Between [`Port::begin_restore`] and the restore's commit or cancel.
    pub(crate) restoring: bool,
    /// Between [`Port::begin_restore`] and the restore's commit: the restore window may have
    /// closed on its own (no restore yet after `RestoreWindowSeconds`), but a restore may still
    /// come, and the operator's changes made meanwhile must win over it.
    awaiting: bool,
    /// What the operator changed while the port awaited its restore.
    operator: OperatorChanges,
    /// The port's mode is the VM's (set by the operator or by a restore), not just this
    /// host's default for new ports.
    mode_known: bool,
    /// Packets classified (permitted + blocked) when the window opened: the window's packets
    /// are counted when it closes, at no cost per packet.
    window_start: u64,
    /// When the latest restore was committed.
    restored_at: Option<Tick>,
    /// Until when the VM's mid-stream segment of a TCP connection nothing carried is judged
    /// (its return traffic re-checked by the rules), after a degraded restore: see
    /// [`Port::judge_uncarried_until`].
    judge_uncarried_until: Tick,
    /// When the latest restore window ended (committed, or timed out): the loose window opens.
    loose_from: Option<Tick>,
    pickup: PickupConfig,
}

impl Judging {
    const fn of(mode: Mode) -> Self {
        match mode {
            Mode::Monitor => Self::Monitor,
            Mode::Enforce => Self::Enforce,
        }
    }
}

/// The policy a runtime-state blob carries for a port, as far as it could be read.
#[derive(Clone, Copy, Debug)]
pub struct CarriedPolicy<'a> {
    /// The VM's mode on the source host.
    pub mode: Mode,
    /// Its allow rules (with the source host's version).
    pub rules: &'a RuleSet,
    /// False if the source's blob cap left rules out: `rules` is a prefix of the VM's rules,
    /// so no carried rule admission can be trusted (each is re-checked).
    pub complete: bool,
}

/// The operator's changes made while a port awaited its restore: they win over the blob.
#[derive(Clone, Copy, Debug, Default)]
struct OperatorChanges {
    /// [`Port::set_mode`] ran.
    mode: bool,
    /// [`Port::replace_rules`] ran.
    rules: bool,
}

impl OperatorChanges {
    const fn any(self) -> bool {
        self.mode || self.rules
    }
}

/// What a restore installs, decided by [`Port::plan_restore`]; see the module docs.
#[derive(Debug)]
pub struct RestorePlan {
    /// `None`: the port keeps its rules (the operator changed them, or nothing was carried).
    rules: Option<RuleSet>,
    /// `None`: the port keeps its mode.
    mode: Option<Mode>,
    /// The carried rules' version, if a complete carried rule set is installed: carried flows
    /// admitted under exactly that version keep a rule admission.
    trusted_version: Option<u32>,
    version: u32,
    /// The carried rules could not be copied (no memory): the plan installs none of them.
    rules_lost: bool,
}

impl RestorePlan {
    /// The admission on this host of a carried flow that was admitted as `carried`.
    ///
    /// A rule admission survives only if the complete rule set that admitted it is what the
    /// port installs; every other one is re-checked against the port's rules on the flow's
    /// next inbound packet ([`Admission::Monitor`]).
    #[must_use]
    pub const fn admission(&self, carried: Admission) -> Admission {
        match (carried, self.trusted_version) {
            (Admission::Vm, _) => Admission::Vm,
            (Admission::Rule(v), Some(t)) if v == t => Admission::Rule(self.version),
            (Admission::Rule(_) | Admission::Monitor, _) => Admission::Monitor,
        }
    }

    /// The rules version the port has once the plan is committed.
    #[must_use]
    pub const fn version(&self) -> u32 {
        self.version
    }

    /// True if the blob's rules will be installed (the operator did not change them during
    /// the window).
    #[must_use]
    pub const fn installs_rules(&self) -> bool {
        self.rules.is_some()
    }

    /// True if the carried rules could not be copied for want of memory: the plan installs an
    /// empty rule set in their place (fail closed), [`Port::plan_restore`].
    #[must_use]
    pub const fn rules_lost(&self) -> bool {
        self.rules_lost
    }
}

/// Longest name the vSwitch reports (`IF_MAX_STRING_SIZE` UTF-16 code units).
pub const MAX_NAME_UNITS: usize = 256;

/// The durable identity of a port: the name the vSwitch gives it (`PortName` of
/// `NDIS_SWITCH_PORT_PARAMETERS`), in UTF-16 as reported.
///
/// The numeric `NDIS_SWITCH_PORT_ID` is only the current host's alias: it changes across a
/// live migration, the name does not. Kept inline (no allocation) so ports can be compared
/// at `DISPATCH_LEVEL`.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct PortIdentity {
    len: u16,
    units: [u16; MAX_NAME_UNITS],
}

impl PortIdentity {
    /// From UTF-16 code units (not necessarily valid UTF-16: compared as given).
    ///
    /// # Errors
    /// [`Error::NameTooLong`] past [`MAX_NAME_UNITS`].
    pub fn try_from_utf16(units: &[u16]) -> Result<Self, Error> {
        let mut id = Self { len: 0, units: [0; MAX_NAME_UNITS] };
        let dst = id.units.get_mut(..units.len()).ok_or(Error::NameTooLong)?;
        dst.copy_from_slice(units);
        #[allow(clippy::cast_possible_truncation, reason = "len <= MAX_NAME_UNITS")]
        let len = units.len() as u16;
        id.len = len;
        Ok(id)
    }

    /// From a Rust string.
    ///
    /// # Errors
    /// [`Error::NameTooLong`].
    pub fn try_from_str(s: &str) -> Result<Self, Error> {
        let mut id = Self { len: 0, units: [0; MAX_NAME_UNITS] };
        for (n, u) in s.encode_utf16().enumerate() {
            *id.units.get_mut(n).ok_or(Error::NameTooLong)? = u;
            #[allow(clippy::cast_possible_truncation, reason = "n < MAX_NAME_UNITS")]
            let len = n as u16 + 1;
            id.len = len;
        }
        Ok(id)
    }

    /// The code units.
    #[must_use]
    pub fn as_utf16(&self) -> &[u16] {
        self.units.get(..usize::from(self.len)).unwrap_or(&[])
    }
}

impl fmt::Display for PortIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for c in char::decode_utf16(self.as_utf16().iter().copied()) {
            fmt::Write::write_char(f, c.unwrap_or(char::REPLACEMENT_CHARACTER))?;
        }
        Ok(())
    }
}

impl fmt::Debug for PortIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PortIdentity({self})")
    }
}

/// Configuration of a port.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PortConfig {
    /// Flow table sizing, timeouts and hash seed.
    pub table: TableConfig,
    /// Mode of a newly created port.
    pub initial_mode: Mode,
}

/// Everything vsflow keeps for one switch port.
#[derive(Debug)]
pub struct Port {
    pub(crate) identity: PortIdentity,
    pub(crate) mode: Mode,
    pub(crate) rules: RuleSet,
    pub(crate) table: FlowTable,
    pub(crate) counters: PortCounters,
    /// How classify judges: from the mode and the restore state (see [`Judging`]).
    pub(crate) judging: Judging,
    pub(crate) restore: RestoreState,
    /// The VM network adapter's durable name (`NicName`), once the NIC events have named it.
    pub(crate) nic: Option<PortIdentity>,
    /// Fingerprints armed by the latest restore, for the classify pickup hook.
    pub(crate) pickup: Pickup,
    /// Flows picked up that the VM has not answered yet (bounded, never in the table).
    pub(crate) tentative: TentativeFlows,
    /// The digest of the latest blob restored into this port, so that applying the same blob
    /// again changes nothing (`None`: no restore yet, or a blob without a digest).
    pub(crate) restored_digest: Option<u64>,
}

impl Port {
    /// A new port with an empty table.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`], [`Error::OutOfMemory`].
    pub fn try_new(identity: PortIdentity, config: PortConfig) -> Result<Self, Error> {
        Ok(Self {
            identity,
            mode: config.initial_mode,
            rules: RuleSet::default(),
            table: FlowTable::try_new(config.table)?,
            counters: PortCounters::default(),
            judging: Judging::of(config.initial_mode),
            restore: RestoreState::default(),
            nic: None,
            pickup: Pickup::default(),
            tentative: TentativeFlows::try_new()?,
            restored_digest: None,
        })
    }

    /// The durable identity.
    #[must_use]
    pub const fn identity(&self) -> &PortIdentity {
        &self.identity
    }

    /// The current mode.
    #[must_use]
    pub const fn mode(&self) -> Mode {
        self.mode
    }

    /// True if classify permits everything on this port (Monitor, outside a restore window or
    /// set by the operator in it).
    #[inline]
    pub(crate) const fn monitors(&self) -> bool {
        matches!(self.judging, Judging::Monitor)
    }

    /// The mode classify applies: [`Port::mode`], except that the restore window enforces
    /// unless the operator set Monitor during it (see the module docs).
    #[inline]
    #[must_use]
    pub const fn effective_mode(&self) -> Mode {
        match self.judging {
            Judging::Monitor => Mode::Monitor,
            Judging::Enforce | Judging::Restoring => Mode::Enforce,
        }
    }

    const fn update_judging(&mut self) {
        let r = &self.restore;
        self.judging = if !r.restoring {
            Judging::of(self.mode)
        } else if r.operator.mode && matches!(self.mode, Mode::Monitor) {
            Judging::Monitor
        } else {
            Judging::Restoring
        };
    }

    /// Switches mode. Peer-opened flows admitted in Monitor mode are re-checked against the
    /// rules on their next inbound packet once in Enforce mode. While restoring, the operator's
    /// mode wins over the blob's (see the module docs).
    pub const fn set_mode(&mut self, mode: Mode) {
        self.mode = mode;
        self.restore.operator.mode |= self.restore.awaiting;
        self.restore.mode_known = true;
        self.update_judging();
    }

    /// The allow rules.
    #[must_use]
    pub const fn rules(&self) -> &RuleSet {
        &self.rules
    }

    /// Replaces the allow rules atomically; returns the new version (always greater than the
    /// old one). While restoring, these rules win over the blob's (see the module docs).
    ///
    /// # Errors
    /// [`Error::TooManyRules`], [`Error::OutOfMemory`]; the old rules stay on error.
    pub fn replace_rules(&mut self, rules: &[AllowRule]) -> Result<u32, Error> {
        let v = self.rules.replace(rules)?;
        self.restore.operator.rules |= self.restore.awaiting;
        Ok(v)
    }

    /// Enters the restoring state (the port was created to receive a restore): the restore
    /// window (see the module docs) until [`Port::commit_restore`], [`Port::cancel_restore`]
    /// or [`Port::restore_timed_out`].
    ///
    /// Idempotent: while the port already awaits its restore (a replayed port create), the
    /// window and the operator's changes made since are kept.
    pub const fn begin_restore(&mut self) {
        if !self.restore.restoring {
            self.restore.window_start = self.packets_classified();
        }
        if !self.restore.awaiting {
            self.restore.operator = OperatorChanges { mode: false, rules: false };
        }
        self.restore.restoring = true;
        self.restore.awaiting = true;
        self.update_judging();
    }

    /// True between [`Port::begin_restore`] and the restore's commit or cancel.
    #[must_use]
    pub const fn is_restoring(&self) -> bool {
        self.restore.restoring
    }

    /// Leaves the restoring state without a restore (the window closed on its own, or the same
    /// blob came again): the port applies its own mode again; flows seen in the window stay,
    /// inbound ones re-checked on their next packet; pickups the VM has not answered end. A
    /// restore may still come: the operator's changes made until then win over it.
    pub fn cancel_restore(&mut self) {
        self.close_window();
        self.update_judging();
        self.end_window_pickups();
    }

    /// The restore window ends at `now` without a restore: none came within the driver's
    /// `RestoreWindowSeconds` (a source host without vsflow saves nothing for it). As
    /// [`Port::cancel_restore`], and the loose pickup window opens now (its documented case:
    /// connections from such a host are known neither exactly nor by fingerprint).
    pub fn restore_timed_out(&mut self, now: Tick) {
        if !self.restore.restoring {
            return;
        }
        self.close_window();
        self.update_judging();
        self.restore.loose_from = Some(now);
        self.settle_window_pickups(now);
    }

    /// A restore that carried no connection (degraded: [`Port::commit_degraded`]) ended the
    /// restore window at `now`: the loose pickup window opens now, as after a restore or a
    /// timed-out window (none of the VM's connections is known exactly or by fingerprint).
    pub fn open_loose_window(&mut self, now: Tick) {
        self.restore.loose_from = Some(now);
    }

    /// After a restore (the codec's `apply`) or a degraded one (the driver): until `until`
    /// (the restore instant plus `PickupWindowSeconds`), the VM's mid-stream segment of a TCP
    /// connection the table does not know and no fingerprint vouches for opens a flow whose
    /// return traffic the rules judge: the connection may be one a peer opened (admitted by a
    /// rule on the source) that the blob could not carry (peer-opened connections are never
    /// fingerprinted), which must not become the VM's and survive a later rule removal. The VM's own connections were lost with the blob
    /// (documented); a connection its rules admit resumes under them. While loose pickup is
    /// open (the opt-in that takes an unknown connection as the VM's) the VM's segment opens
    /// the VM's flow, as a peer's segment would be picked up.
    pub const fn judge_uncarried_until(&mut self, until: Tick) {
        self.restore.judge_uncarried_until = until;
    }

    /// True if the VM's mid-stream segment of an unknown connection is judged at `now` (see
    /// [`Port::judge_uncarried_until`]).
    #[inline]
    pub(crate) const fn judges_uncarried(&self, now: Tick) -> bool {
        now < self.restore.judge_uncarried_until
    }

    /// Pickups of the restore window the VM has not answered end with it (no restore armed
    /// anything to hold them).
    fn end_window_pickups(&mut self) {
        self.tentative.rekind(|_, kind| (kind != PickupKind::Window).then_some(kind));
    }

    const fn packets_classified(&self) -> u64 {
        self.counters.packets_permitted.wrapping_add(self.counters.packets_blocked)
    }

    /// Leaves the restoring state, counting the packets classified in the window.
    const fn close_window(&mut self) {
        if self.restore.restoring {
            let n = self.packets_classified().wrapping_sub(self.restore.window_start);
            self.counters.window_packets = self.counters.window_packets.saturating_add(n);
            self.restore.restoring = false;
        }
    }

    /// The pickup windows.
    #[must_use]
    pub const fn pickup_config(&self) -> &PickupConfig {
        &self.restore.pickup
    }

    /// Sets the pickup windows (driver configuration).
    pub const fn set_pickup_config(&mut self, config: PickupConfig) {
        self.restore.pickup = config;
    }

    /// When the latest restore was committed, if any.
    #[must_use]
    pub const fn restored_at(&self) -> Option<Tick> {
        self.restore.restored_at
    }

    /// Step 1 of a restore: what it installs given the policy the blob carries. Changes
    /// nothing.
    ///
    /// The operator's settings made since the port was created (or last restored) stay: they
    /// are later than the source's save; otherwise the carried mode and rules are installed
    /// (the VM's policy migrates with it).
    ///
    /// Without the memory to copy the carried rules (a few bytes a rule), the plan installs an
    /// empty rule set at the same new version instead, and trusts no carried rule admission
    /// ([`RestorePlan::rules_lost`]): the refusal costs the rules (fail closed: no new
    /// conversation they would admit, every carried flow they admitted re-checked against the
    /// empty set on its next inbound packet), never the carried flows; it was the apply's error,
    /// a degraded restore that lost every carried connection (review s7 F2, faults).
    ///
    /// # Errors
    /// [`Error::TooManyRules`] (a carried set past [`crate::policy::MAX_RULES`]); the caller may
    /// fall back to [`Port::plan_uncarried`], which cannot fail.
    pub fn plan_restore(&self, carried: CarriedPolicy<'_>) -> Result<RestorePlan, Error> {
        let local = self.rules.version();
        let r = &self.restore;
        let mut rules_lost = false;
        let (rules, version, trusted_version) = if r.operator.rules {
            (None, local, None)
        } else {
            let from = carried.rules.version();
            let base = if from < 1 << 31 { local.max(from) } else { local };
            let version = base.wrapping_add(1).max(1);
            match RuleSet::try_from_slice(version, carried.rules.rules()) {
                Ok(rules) => (Some(rules), version, carried.complete.then_some(from)),
                Err(Error::OutOfMemory) => {
                    rules_lost = true;
                    // An empty set allocates nothing.
                    (Some(RuleSet::try_from_slice(version, &[])?), version, None)
                }
                Err(e) => return Err(e),
            }
        };
        let mode = (!r.operator.mode).then_some(carried.mode);
        Ok(RestorePlan { rules, mode, trusted_version, version, rules_lost })
    }

    /// Step 1 of a restore that carries no policy (the blob could not be read, or its source
    /// had no state for the port): the port keeps its rules (the operator's or an earlier
    /// restore's; none on a new port) and its mode if the operator or an earlier restore set
    /// it; otherwise it becomes [`Mode::Enforce`]. Never the host's default mode for new ports
    /// by accident: that would open an Enforce VM's firewall. Changes nothing; cannot fail.
    #[must_use]
    pub const fn plan_uncarried(&self) -> RestorePlan {
        let r = &self.restore;
        let mode = if r.operator.mode || r.mode_known { None } else { Some(Mode::Enforce) };
        RestorePlan {
            rules: None,
            mode,
            trusted_version: None,
            version: self.rules.version(),
            rules_lost: false,
        }
    }

    /// Step 3 of a restore: installs `table`, the planned mode and rules, and `counters`; ends
    /// the restoring state and opens the pickup windows at `now`. Cannot fail.
    pub fn commit_restore(
        &mut self,
        plan: RestorePlan,
        table: FlowTable,
        counters: PortCounters,
        now: Tick,
    ) {
        let mut counters = counters;
        if self.restore.operator.any() {
            counters.restore_policy_kept = counters.restore_policy_kept.saturating_add(1);
        }
        self.install(plan);
        // The window's packets, counted against the counters they were classified under.
        let window = if self.restore.restoring {
            self.packets_classified().wrapping_sub(self.restore.window_start)
        } else {
            0
        };
        counters.window_packets = counters.window_packets.saturating_add(window);
        self.table = table;
        self.counters = counters;
        self.restore.restoring = false;
        self.restore.restored_at = Some(now);
        self.restore.loose_from = Some(now);
        self.restore.judge_uncarried_until = 0;
        self.update_judging();
    }

    /// A degraded restore (the blob was empty, damaged, foreign, of an unknown major version,
    /// from a source without state, or could not be applied): installs the planned policy
    /// ([`Port::plan_restore`]: never lower than what the port or the blob had), keeps the
    /// flows seen in the window (inbound ones are re-checked on their next packet), drops any
    /// armed fingerprints, ends the restoring state and counts it (`restores_empty`). Cannot
    /// fail.
    pub fn commit_degraded(&mut self, plan: RestorePlan) {
        if self.restore.operator.any() {
            let c = &mut self.counters;
            c.restore_policy_kept = c.restore_policy_kept.saturating_add(1);
        }
        self.install(plan);
        self.pickup.clear();
        self.counters.restores_empty = self.counters.restores_empty.saturating_add(1);
        self.close_window();
        self.update_judging();
        self.end_window_pickups();
    }

    /// Installs a plan's mode and rules. The operator's settings have been honoured: later
    /// ones are judged against the next restore.
    fn install(&mut self, plan: RestorePlan) {
        if let Some(rules) = plan.rules {
            self.rules = rules;
        }
        if let Some(mode) = plan.mode {
            self.mode = mode;
        }
        self.restore.mode_known = true;
        self.restore.awaiting = false;
        self.restore.operator = OperatorChanges { mode: false, rules: false };
    }

    /// Arms the fingerprints a restore carried, for the pickup window (the codec's `apply`
    /// calls this right after [`Port::commit_restore`]). Flows picked up in the restore window
    /// that the VM has not answered yet are held on by the fingerprint that matches them, or
    /// by loose pickup, or dropped.
    pub fn arm_pickup(&mut self, pickup: Pickup, now: Tick) {
        self.pickup = pickup;
        // Positions of an older set mean nothing in this one.
        self.tentative.rekind(|_, kind| match kind {
            PickupKind::Fingerprint(_) => None,
            k => Some(k),
        });
        self.settle_window_pickups(now);
    }

    /// Re-decides what holds the tentative flows picked up in the restore window, once it has
    /// ended: a fingerprint of the armed set, loose pickup, or nothing (dropped).
    fn settle_window_pickups(&mut self, now: Tick) {
        let loose = self.loose_open(now);
        let Self { pickup, tentative, counters: c, .. } = self;
        tentative.rekind(|key, kind| match kind {
            PickupKind::Window => {
                let held = pickup
                    .lookup(key, now)
                    .map(PickupKind::Fingerprint)
                    .or_else(|| loose.then_some(PickupKind::Loose));
                // Counted as admitted by what holds it now.
                match held {
                    Some(PickupKind::Fingerprint(_)) => {
                        c.fingerprint_pickups = c.fingerprint_pickups.wrapping_add(1);
                    }
                    Some(PickupKind::Loose) => {
                        c.picked_up_loose = c.picked_up_loose.wrapping_add(1);
                    }
                    Some(PickupKind::Window) | None => {}
                }
                held
            }
            k => Some(k),
        });
    }

    /// True if loose pickup is configured (whether or not its window is open).
    #[inline]
    pub(crate) const fn restore_loose(&self) -> bool {
        self.restore.pickup.loose
    }

    /// True if loose pickup is on and `now` is within its window after the latest restore
    /// window ended.
    #[inline]
    pub(crate) fn loose_open(&self, now: Tick) -> bool {
        let r = &self.restore;
        r.pickup.loose
            && r.loose_from.is_some_and(|at| now.saturating_sub(at) <= r.pickup.loose_window)
    }

    /// True if any pickup may admit an unknown flow at `now`: the restore window, armed
    /// fingerprints, or loose pickup.
    #[inline]
    pub(crate) fn pickups_open(&self, now: Tick) -> bool {
        matches!(self.judging, Judging::Restoring)
            || self.pickup.is_armed(now)
            || self.loose_open(now)
    }

    /// Flows picked up that the VM has not answered (or has refused), see
    /// [`crate::flow::tentative`].
    #[must_use]
    pub const fn tentative(&self) -> &TentativeFlows {
        &self.tentative
    }

    /// The flow table.
    #[must_use]
    pub const fn table(&self) -> &FlowTable {
        &self.table
    }

    /// The counters.
    #[must_use]
    pub const fn counters(&self) -> &PortCounters {
        &self.counters
    }

    /// The VM network adapter's name (`NicName`), if known.
    #[must_use]
    pub const fn nic_identity(&self) -> Option<&PortIdentity> {
        self.nic.as_ref()
    }

    /// Records the VM network adapter's name (`NicName`) from the NIC events; it travels in
    /// the runtime state beside the port's name.
    pub const fn set_nic_identity(&mut self, nic: Option<PortIdentity>) {
        self.nic = nic;
    }

    /// Fingerprints armed by the latest restore (see [`crate::fingerprint`]).
    #[must_use]
    pub const fn pickup(&self) -> &Pickup {
        &self.pickup
    }

    /// Resets the counters to zero.
    pub fn clear_counters(&mut self) {
        self.counters = PortCounters::default();
        self.restore.window_start = 0;
    }

    /// Classifies one packet: see [`classify`].
    #[inline]
    pub fn classify(&mut self, meta: &PacketMeta, now: Tick) -> Verdict {
        classify(self, meta, now)
    }

    /// Classifies one packet of a flow this port holds, or changes nothing and returns `None`:
    /// see [`crate::classify::classify_existing`].
    #[inline]
    pub fn classify_existing(&mut self, meta: &PacketMeta, now: Tick) -> Option<Verdict> {
        crate::classify::classify_existing(self, meta, now)
    }

    /// Counts a runtime-state save of this port that left `dropped` flows out and carried
    /// `fingerprinted` connections as fingerprints (the blob's own counters include it).
    pub const fn note_saved(&mut self, dropped: u32, fingerprinted: u32) {
        let c = &mut self.counters;
        c.saves = c.saves.saturating_add(1);
        c.save_dropped = c.save_dropped.saturating_add(dropped as u64);
        c.save_fingerprinted = c.save_fingerprinted.saturating_add(fingerprinted as u64);
    }

    /// Removes up to `budget` idle flows; returns how many. Also frees the restored
    /// fingerprints once their window is over. The driver calls this from a periodic timer.
    pub fn expire(&mut self, now: Tick, budget: usize) -> usize {
        let n = self.table.expire(now, budget);
        self.counters.expired = self.counters.expired.saturating_add(n as u64);
        if !self.pickup.set().is_empty() && !self.pickup.is_armed(now) {
            self.pickup.clear();
        }
        if !self.tentative.is_empty() && !self.pickups_open(now) {
            self.tentative.clear();
        }
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::ToString;
    use alloc::vec::Vec;

    #[test]
    fn identity_round_trips_utf16_and_rejects_long_names() {
        let id = PortIdentity::try_from_str("B4A1E0A7-3F2C-4D7E-9C11-0A2B3C4D5E6F").unwrap();
        assert_eq!(id.to_string(), "B4A1E0A7-3F2C-4D7E-9C11-0A2B3C4D5E6F");
        let units: Vec<u16> = "port-ä".encode_utf16().collect();
        assert_eq!(PortIdentity::try_from_utf16(&units).unwrap().as_utf16(), &units[..]);
        assert_eq!(PortIdentity::try_from_utf16(&[0u16; 257]), Err(Error::NameTooLong));
        let long: alloc::string::String = core::iter::repeat_n('x', 257).collect();
        assert_eq!(PortIdentity::try_from_str(&long), Err(Error::NameTooLong));
        assert!(PortIdentity::try_from_utf16(&[0u16; 256]).is_ok());
    }
}
