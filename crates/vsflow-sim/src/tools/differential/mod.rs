//! The differential harness (issue 16): the same traffic, packet by packet, through host A where
//! the VM stayed and through host B after the VM migrated there.
//!
//! **The invariant it checks.** After a migration, B never admits a packet that A, had the VM
//! stayed, would have blocked, except mid-stream TCP segments picked up by a restored
//! fingerprint (a documented, counted false admission, [`crate::tools::differential`] "The
//! bound"), and B admits every packet of every carried connection that A admits.
//!
//! **How.** Three hosts run the real callout code on the simulator ([`Host`], the wire, the
//! `vsflow-sim` vSwitch and WFP doubles), each loaded from its registry `Parameters` as the
//! shipped driver is:
//! 1. *history*: the reference host A and the source host A' take the same packets (the VM's
//!    connections, the operator's policy through the control device), which must get the same
//!    verdicts on both;
//! 2. *the move*: A' saves the port and deletes it ([`migrate::depart`], the main job's code);
//!    B creates it with `RESTORING_PORT` under another `PortId` and receives the blob, as
//!    [`Arrival`] says (intact, damaged, foreign, empty, of an unknown major, for another port,
//!    never; or A' fails to encode it);
//! 3. *the script*: every later packet goes to A and to B at the same simulated instants; each
//!    is compared. The guest ([`Guest`]) answers what each host delivers to it as a TCP stack
//!    does (a segment of no connection gets a RST, a SYN to a listening port a SYN-ACK), so a
//!    packet B lets through changes what happens next on B only.
//!
//! **Judging a difference.** A packet both hosts treat alike passes. Otherwise:
//! - A blocks, B admits: a *documented fingerprint admission* if the packet is a TCP segment
//!   whose flags are in the packet, with ACK set and SYN and RST clear, whose key matches a
//!   fingerprint the blob carried, within the pickup window; a *loose admission* if the
//!   operator turned `LoosePickup` on and it is such a segment; anything else is **opened**: a
//!   failure. Opened initial SYNs count as new inbound connections, opened non-TCP packets as
//!   UDP/other flows.
//! - A admits, B blocks: a packet of the VM's legitimate traffic is **lost** (its connection,
//!   if it has one, counts once), a failure unless the class documents the loss (a damaged blob
//!   cannot bring its flows); an adversarial packet is *tightened* (B fails closed: allowed).
//!
//! Results are grouped into classes ([`ClassReport`]): packets, differing verdicts, documented
//! false admissions, opened, carried connections lost. The `vsflow-sim differential` command
//! prints them; `tests/differential.rs` asserts them case by case.
//!
//! ## The bound
//! A set of `n` distinct 32-bit keyed fingerprints, under a salt the sender cannot know, matches
//! an unknown key with probability `n / 2^32` ([`vsflow_core::fingerprint`]). A spray of `N`
//! packets therefore expects `N n / 2^32` matches; the harness fails a class whose documented
//! admissions exceed that expectation by more than `6 sqrt(x) + 6` (a Poisson tail far below
//! one in a million), and reports both.

use std::collections::{HashMap, HashSet};

use fwps_sys as sys;
use vsflow_core::codec::{self, DecodeConfig, Decoded};
use vsflow_core::fingerprint::{FingerprintSet, fingerprint};
use vsflow_core::policy::{AllowRule, PortRange, Prefix};
use vsflow_core::{FlowKey, IpFamily, Mode, TICKS_PER_SECOND, Tick, protocol};
use vsflow_proto::request::Request;

use crate::host::{EXTERNAL_PORT, Host, PacketFate, RestoreTicket};
use crate::tools::migrate;
use crate::tools::rng::SplitMix64;
use crate::tools::traffic::{remote_addr, tcp, vm_addr};
use crate::vswitch::packet::{Fragment, SimPacket};

mod cases;
mod guest;
mod report;

pub use cases::CASES;
pub use guest::Guest;
pub use report::{ClassReport, Documented, Judged, Report};

/// The migrating port's name (its durable identity on every host).
pub const PORT_NAME: &str = "6F1C0016-5A3B-4C2D-9E8F-0000000000D1";
/// The VM's number (its addresses: [`vm_addr`]).
const VM: u32 = 16;
const NIC: u16 = 1;
/// Port ids on A and A' (the same), B and C: a port's id changes across a migration.
const ID_A: u32 = 10;
const ID_B: u32 = 20;
const ID_C: u32 = 30;
/// Ports the guest listens on: SSH (an allow rule admits 203.0.113.0/24), RDP and HTTP (no
/// rule admits them: an outsider reaching them is what the firewall exists to stop).
pub const LISTENING: [u16; 3] = [22, 3389, 80];

/// The operator's policy on A before the move: Enforce, and SSH from 203.0.113.0/24.
#[must_use]
pub fn ssh_rule() -> AllowRule {
    AllowRule {
        protocol: Some(protocol::TCP),
        local_ports: PortRange::single(22),
        remote: Prefix::v4([203, 0, 113, 0], 24).unwrap_or(Prefix::Any),
    }
}

/// The hosts and the VM's history before the move.
#[derive(Clone, Debug)]
pub struct Setup {
    /// Registry values (`Parameters`) of every host's driver, over the documented defaults.
    pub registry: Vec<(&'static str, u32)>,
    /// Further values for the destination hosts only.
    pub destination_registry: Vec<(&'static str, u32)>,
    /// Values set last on every host (`vsflow-sim differential --set NAME=VALUE`), over the
    /// case's own.
    pub settings: Vec<(String, u32)>,
    /// VM-opened TCP connections established on A (to remote port 443).
    pub vm_tcp: u32,
    /// Inbound SSH connections the allow rule admitted on A, opened before the VM's own.
    pub ssh: u32,
    /// UDP exchanges of the VM (DNS).
    pub udp: u32,
    /// The destination's clock when the VM arrives (its uptime).
    pub destination_uptime: Tick,
    /// Seed of the hosts and the traffic.
    pub seed: u64,
}

impl Setup {
    /// The registry values of a source (or, with `destination`, a destination) host, in the
    /// order they are set: the case's, the destination's, then `settings`.
    #[must_use]
    pub fn registry_of(&self, destination: bool) -> Vec<(String, u32)> {
        let own = self.registry.iter();
        let dest = self.destination_registry.iter().filter(|_| destination);
        own.chain(dest)
            .map(|(n, v)| ((*n).to_owned(), *v))
            .chain(self.settings.iter().cloned())
            .collect()
    }
}

impl Default for Setup {
    fn default() -> Self {
        Self {
            registry: Vec::new(),
            destination_registry: Vec::new(),
            settings: Vec::new(),
            vm_tcp: 40,
            ssh: 8,
            udp: 8,
            destination_uptime: 86_400 * TICKS_PER_SECOND,
            seed: 16,
        }
    }
}

/// How the port's state reaches the destination.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arrival {
    /// The blob as A' saved it; a pended restore completes at [`Run::complete_restore`].
    Intact,
    /// The blob damaged on the way.
    Damaged(Damage),
    /// A' cannot encode the port (an allocation fails in the save): it sends its minimal blob.
    EncodeFailure,
    /// The restore names a port id B does not have: the VM's port never hears of a restore.
    OtherPort,
    /// No restore at all (a source host without vsflow).
    Nothing,
}

/// Damage to a blob.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Damage {
    /// A byte flipped three quarters in (the flow records), the CRC left as it was.
    FlowSection,
    /// Zero bytes.
    Empty,
    /// Saved under another provider GUID (CRC fixed).
    Foreign,
    /// Major version 2 (CRC fixed).
    UnknownMajor,
    /// Cut in half.
    Truncated,
}

impl Arrival {
    /// A short name.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Self::Intact => "intact",
            Self::Damaged(Damage::FlowSection) => "damaged flow section",
            Self::Damaged(Damage::Empty) => "empty",
            Self::Damaged(Damage::Foreign) => "foreign provider",
            Self::Damaged(Damage::UnknownMajor) => "unknown major",
            Self::Damaged(Damage::Truncated) => "truncated",
            Self::EncodeFailure => "source encode failure (minimal blob)",
            Self::OtherPort => "restore for another port",
            Self::Nothing => "no restore (source without vsflow)",
        }
    }
}

/// How a connection of the VM reached the destination.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Carried {
    /// Not moved yet, or opened after the move.
    NotMoved,
    /// An exact record in the blob.
    Exact,
    /// A fingerprint in the blob.
    Fingerprint,
    /// Neither (left out by the cap, or the blob was unusable).
    No,
}

/// The kind of a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConnKind {
    /// The VM opened it (TCP to port 443).
    VmTcp,
    /// A peer opened it to the VM's SSH port through the allow rule.
    Ssh,
    /// The VM's UDP exchange (DNS).
    Udp,
}

/// A connection of the VM.
#[derive(Clone, Debug)]
pub struct Conn {
    /// Its kind.
    pub kind: ConnKind,
    /// Its key, the VM's side local.
    pub key: FlowKey,
    /// A packet from the peer (data, or the UDP reply).
    pub inbound: SimPacket,
    /// A packet from the VM.
    pub outbound: SimPacket,
    /// How it reached the current destination.
    pub carried: Carried,
}

/// The key of `p`'s flow, the VM's side local, as the driver builds it (ports 0 when the
/// packet has none, or for a protocol without ports).
#[must_use]
pub fn vm_key(p: &SimPacket, inbound: bool) -> FlowKey {
    let ports = p.has_ports() || !matches!(p.protocol, protocol::TCP | protocol::UDP);
    let (sport, dport) = if ports && !matches!(p.fragment, Fragment::NonFirst(_)) {
        (p.sport, p.dport)
    } else {
        (0, 0)
    };
    if inbound {
        FlowKey {
            family: p.family,
            protocol: p.protocol,
            local_addr: p.dst,
            remote_addr: p.src,
            local_port: dport,
            remote_port: sport,
        }
    } else {
        FlowKey {
            family: p.family,
            protocol: p.protocol,
            local_addr: p.src,
            remote_addr: p.dst,
            local_port: sport,
            remote_port: dport,
        }
    }
}

/// True if `p` is a mid-stream TCP segment: the only packets a pickup may admit.
///
/// Its flags are in the packet (not a later fragment, not a first fragment cut before byte 14
/// of the TCP header), with ACK set and SYN and RST clear (issue 16, item 2).
#[must_use]
pub fn is_midstream(p: &SimPacket) -> bool {
    let flags_present = flags_in_packet(p);
    p.protocol == protocol::TCP
        && flags_present
        && p.flags & tcp::ACK != 0
        && p.flags & (tcp::SYN | tcp::RST) == 0
}

/// An initial SYN whose flags are in the packet.
fn is_initial_syn(p: &SimPacket) -> bool {
    p.protocol == protocol::TCP
        && flags_in_packet(p)
        && p.flags & (tcp::SYN | tcp::ACK | tcp::RST) == tcp::SYN
}

/// The TCP flags are in the packet: not a later fragment, not a first fragment cut before
/// byte 14 of the TCP header (a parser that walks every header can read them).
fn flags_in_packet(p: &SimPacket) -> bool {
    !matches!(p.fragment, Fragment::NonFirst(_)) && p.transport_cut.is_none_or(|n| n >= 14)
}

/// Who sent a packet and why.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    /// Legitimate traffic, of connection `Some(i)` of [`Run::conns`] or of none: B must admit
    /// what A admits.
    Legit(Option<usize>),
    /// A new peer an allow rule may admit: B blocking what A admits is B failing closed.
    Peer,
    /// An outsider (or a packet no one should admit).
    Adversary,
}

/// One host's side of the comparison.
struct Side {
    host: Host,
    sw: usize,
    id: u32,
    guest: Guest,
}

impl Side {
    fn new(seed: u64, registry: &[(String, u32)], uptime: Tick, switch: &str) -> Self {
        let mut host = Host::new(seed);
        host.advance(uptime);
        for (name, value) in registry {
            host.set_parameter(name, *value);
        }
        host.load_driver_from_registry().expect("the scenario's registry values are valid");
        let sw = host.create_switch(switch, &[]);
        Self { host, sw, id: 0, guest: Guest::default() }
    }

    fn transmit(&mut self, p: &SimPacket, inbound: bool) -> bool {
        let (src, dst) = if inbound { (EXTERNAL_PORT, self.id) } else { (self.id, EXTERNAL_PORT) };
        self.host.transmit(self.sw, src, dst, p) == PacketFate::Delivered
    }

    fn port_ref(&self) -> Option<vsflow_proto::response::PortInfo> {
        self.host.list_ports().into_iter().find(|p| p.name.to_string() == PORT_NAME)
    }
}

/// A case in progress: the reference host A and the host the VM is on now.
pub struct Run {
    a: Side,
    b: Side,
    /// History (A and A') or after the move (A and B).
    moved: bool,
    setup: Setup,
    /// The VM's connections.
    pub conns: Vec<Conn>,
    fingerprints: FingerprintSet,
    tickets: Vec<RestoreTicket>,
    restored_at: Option<Tick>,
    arrival: Option<Arrival>,
    class: usize,
    report: Report,
    retired: Vec<Host>,
    /// Traffic randomness.
    pub rng: SplitMix64,
    /// Ticks between two scripted packets (default 10 us).
    pub gap: Tick,
    pending_second: Tick,
    /// The destination's clock when the VM's port was created there.
    arrived_at: Tick,
    holding: bool,
    held: Vec<(SimPacket, (bool, bool))>,
    /// 5-tuples the VM reset on B after B admitted an outsider's packet A blocked.
    refused: HashSet<FlowKey>,
    /// Outsiders' segments B admitted and A blocked per 5-tuple since the VM last spoke on it.
    unanswered: HashMap<FlowKey, u32>,
}

fn registry_value(regs: &[(String, u32)], name: &str) -> Option<u32> {
    regs.iter().rev().find(|(n, _)| *n == name).map(|(_, v)| *v)
}

impl Run {
    /// Loads A and A', puts the VM's port on both with the operator's policy (Enforce, the SSH
    /// rule) and runs the history of [`Setup`].
    ///
    /// # Panics
    /// If a driver does not load or the operator's requests fail (a scenario bug).
    #[must_use]
    pub fn start(case: &str, setup: Setup) -> Self {
        let uptime = 3 * 86_400 * TICKS_PER_SECOND;
        let source = setup.registry_of(false);
        let mut a = Side::new(setup.seed, &source, uptime, "0E5B1C2D-AAAA-4000-8000-00000000016A");
        let b = Side::new(setup.seed, &source, uptime, "0E5B1C2D-AAAA-4000-8000-00000000016A");
        a.id = ID_A;
        let mut run = Self {
            a,
            b,
            moved: false,
            rng: SplitMix64(setup.seed),
            setup,
            conns: Vec::new(),
            fingerprints: FingerprintSet::default(),
            tickets: Vec::new(),
            restored_at: None,
            arrival: None,
            class: 0,
            report: Report { case: case.to_owned(), ..Report::default() },
            retired: Vec::new(),
            gap: 100,
            pending_second: 0,
            arrived_at: 0,
            holding: false,
            held: Vec::new(),
            refused: HashSet::new(),
            unanswered: HashMap::new(),
        };
        run.b.id = ID_A;
        for side in [&mut run.a, &mut run.b] {
            attach(side);
        }
        run.operator_mode(Mode::Enforce);
        run.operator_rules(&[ssh_rule()]);
        run.class("history");
        let s = run.setup.clone();
        for k in 0..s.ssh {
            run.open(ConnKind::Ssh, k);
        }
        for k in 0..s.vm_tcp {
            run.open(ConnKind::VmTcp, k);
        }
        for k in 0..s.udp {
            run.open(ConnKind::Udp, k);
        }
        run
    }

    /// The host the VM is on now (A' before the move).
    #[must_use]
    pub fn destination(&self) -> &Host {
        &self.b.host
    }

    /// The reference host A.
    #[must_use]
    pub fn reference(&self) -> &Host {
        &self.a.host
    }

    /// The fingerprint set the destination armed (empty before the move or without a usable
    /// blob).
    #[must_use]
    pub const fn fingerprint_set(&self) -> &FingerprintSet {
        &self.fingerprints
    }

    /// Starts (or returns to) the class `name`: later packets are counted under it.
    pub fn class(&mut self, name: &str) {
        if let Some(i) = self.report.classes.iter().position(|c| c.name == name) {
            self.class = i;
        } else {
            self.report.classes.push(ClassReport::new(name));
            self.class = self.report.classes.len() - 1;
        }
    }

    /// Marks losing connections in the current class as the documented outcome.
    pub fn loss_documented(&mut self, why: &'static str) {
        self.report.classes[self.class].loss_documented = Some(why);
    }

    /// Adds `x` to the current class's expected fingerprint matches.
    fn expect_matches(&mut self, packets: u64) {
        #[allow(clippy::cast_precision_loss, reason = "an expectation")]
        let x = packets as f64 * self.fingerprints.false_match_probability();
        self.report.classes[self.class].expected_fingerprint_matches += x;
    }

    /// Time passes on every host; the idle-flow timer (`Driver::expire_idle`, every second,
    /// budget 64, as `driver/src/expiry.rs` runs it) fires for each second that ends.
    pub fn advance(&mut self, ticks: Tick) {
        for side in [&mut self.a, &mut self.b] {
            side.host.advance(ticks);
        }
        self.pending_second += ticks;
        let seconds = (self.pending_second / TICKS_PER_SECOND).min(7_300);
        self.pending_second %= TICKS_PER_SECOND;
        for _ in 0..seconds {
            for side in [&self.a, &self.b] {
                side.host.driver().expire_idle(64);
            }
        }
    }

    /// A packet from outside to the VM, on both hosts; the guests answer what reaches them.
    pub fn inbound(&mut self, p: &SimPacket, origin: Origin) -> (bool, bool) {
        let r = self.inbound_quiet(p, origin);
        self.answer(p, r);
        r
    }

    /// Holds the guests' answers from now on (packets arriving back to back, faster than the
    /// guest answers) until [`Self::release_answers`].
    pub fn hold_answers(&mut self) {
        self.holding = true;
    }

    /// The guests send the answers held since [`Self::hold_answers`], in order.
    pub fn release_answers(&mut self) {
        self.holding = false;
        for (p, r) in std::mem::take(&mut self.held) {
            self.answer(&p, r);
        }
    }

    fn inbound_quiet(&mut self, p: &SimPacket, origin: Origin) -> (bool, bool) {
        self.advance(self.gap);
        let fa = self.a.transmit(p, true);
        let fb = self.b.transmit(p, true);
        self.judge(p, true, origin, fa, fb);
        (fa, fb)
    }

    /// The guests answer `p` where it was delivered (each its own answer).
    fn answer(&mut self, p: &SimPacket, (fa, fb): (bool, bool)) {
        if self.holding {
            self.held.push((p.clone(), (fa, fb)));
            return;
        }
        let ra = if fa { self.a.guest.receive(p) } else { None };
        let rb = if fb { self.b.guest.receive(p) } else { None };
        self.a.guest.newly_accepted.clear();
        for key in std::mem::take(&mut self.b.guest.newly_accepted) {
            // B's guest completed a connection a peer opened that A's never had: B admitted a
            // new inbound connection, whatever vsflow took its packets for.
            if self.moved && !self.a.guest.accepted.contains(&key) {
                let what = describe(p, true, Origin::Adversary, fa, fb);
                self.report.classes[self.class].record_accepted(&what);
            }
        }
        match (ra, rb) {
            (Some(x), Some(y)) if x == y => {
                self.outbound_sent(&x, Origin::Legit(None));
            }
            (x, y) => {
                if let Some(x) = x {
                    self.a.transmit(&x, false);
                }
                if let Some(y) = y {
                    self.b.transmit(&y, false);
                    self.vm_spoke(&y);
                }
            }
        }
    }

    /// The VM sent `p` on B: a reset refuses its 5-tuple (nothing more may be admitted on it
    /// that A blocks); any other packet answers it (the count of segments admitted before an
    /// answer starts again).
    fn vm_spoke(&mut self, p: &SimPacket) {
        let key = vm_key(p, false);
        if p.protocol == protocol::TCP && p.flags & tcp::RST != 0 {
            self.refused.insert(key);
        } else {
            self.unanswered.remove(&key);
        }
    }

    /// A packet the VM sends (scripted), on both hosts.
    pub fn outbound(&mut self, p: &SimPacket, origin: Origin) -> (bool, bool) {
        self.a.guest.send(p);
        self.b.guest.send(p);
        self.outbound_sent(p, origin)
    }

    fn outbound_sent(&mut self, p: &SimPacket, origin: Origin) -> (bool, bool) {
        if self.moved {
            self.vm_spoke(p);
        }
        self.advance(self.gap);
        let fa = self.a.transmit(p, false);
        let fb = self.b.transmit(p, false);
        self.judge(p, false, origin, fa, fb);
        (fa, fb)
    }

    fn dest_registry(&self) -> Vec<(String, u32)> {
        self.setup.registry_of(true)
    }

    fn judge(&mut self, p: &SimPacket, inbound: bool, origin: Origin, fa: bool, fb: bool) {
        if !self.moved {
            if fa != fb {
                self.report.history_divergence += 1;
            }
            return;
        }
        let key = vm_key(p, inbound);
        // Only an outsider's packet can be a *false* admission: B admitting a legitimate packet
        // A blocks (its connection no longer admitted) is never documented.
        let outsider = !matches!(origin, Origin::Legit(_));
        // A pickup (fingerprint, window or loose) admits at most 4 segments of a 5-tuple before
        // the VM answers, and nothing after the VM refused it (runtime-state-format.md,
        // "Pickups: what they admit").
        let within_cap = fb && !fa && !self.refused.contains(&key) && {
            let n = self.unanswered.entry(key).or_insert(0);
            *n += 1;
            *n <= PICKUP_SEGMENTS
        };
        // Loose pickup (opt-in) admits any mid-stream segment of a flow B does not know, the
        // VM's own connections included, whatever the rules (docs/SECURITY.md, edge 5).
        let loose = registry_value(&self.dest_registry(), "LoosePickup") == Some(1);
        let documented = if !(within_cap && inbound && is_midstream(p)) {
            Documented::No
        } else if outsider && self.in_pickup_window() && self.fingerprints.contains(&key) {
            Documented::Fingerprint
        } else if outsider && self.in_restore_window() {
            Documented::Window
        } else if loose {
            Documented::Loose
        } else {
            Documented::No
        };
        let describe = || describe(p, inbound, origin, fa, fb);
        let j = Judged {
            a: fa,
            b: fb,
            origin,
            key,
            documented,
            initial_syn: inbound && is_initial_syn(p),
            non_tcp: p.protocol != protocol::TCP,
            describe: &describe,
        };
        self.report.classes[self.class].record(&j);
    }

    /// Within `PickupWindowSeconds` of the destination's restore.
    fn in_pickup_window(&self) -> bool {
        let window = registry_value(&self.dest_registry(), "PickupWindowSeconds").unwrap_or(300);
        self.restored_at.is_some_and(|at| {
            self.b.host.now().saturating_sub(at) < u64::from(window) * TICKS_PER_SECOND
        })
    }

    /// The destination's port is restoring: created with `RESTORING_PORT`, no restore applied
    /// yet, and a restore pended (however late) or the port created less than
    /// `RestoreWindowSeconds` ago.
    fn in_restore_window(&self) -> bool {
        let window = registry_value(&self.dest_registry(), "RestoreWindowSeconds").unwrap_or(60);
        let young = self.b.host.now().saturating_sub(self.arrived_at)
            < u64::from(window) * TICKS_PER_SECOND;
        self.restored_at.is_none() && (young || !self.tickets.is_empty())
    }

    // ---- History --------------------------------------------------------------------------

    /// Opens connection number `k` of `kind` (its addresses and ports follow from `k`) with
    /// the packets that establish it; returns its index in [`Self::conns`].
    pub fn open(&mut self, kind: ConnKind, k: u32) -> usize {
        match kind {
            ConnKind::Ssh => self.open_ssh(k),
            ConnKind::VmTcp => self.open_vm_tcp(k),
            ConnKind::Udp => self.open_udp(k),
        }
        self.conns.len() - 1
    }

    fn open_ssh(&mut self, k: u32) {
        let remote = remote_addr(IpFamily::V4, k, true);
        let sport = 40_000 + u16::try_from(k % 20_000).unwrap_or(0);
        let syn = SimPacket::new(
            IpFamily::V4,
            protocol::TCP,
            remote,
            sport,
            self.vm(IpFamily::V4),
            22,
            tcp::SYN,
            0,
        );
        let i = self.conns.len();
        self.conns.push(Conn {
            kind: ConnKind::Ssh,
            key: vm_key(&syn, true),
            inbound: syn.reply(tcp::ACK, 0).reply(tcp::PSH_ACK, 100),
            outbound: syn.reply(tcp::PSH_ACK, 200),
            carried: Carried::NotMoved,
        });
        self.inbound(&syn, Origin::Legit(Some(i)));
        self.inbound(&syn.reply(tcp::ACK, 0).reply(tcp::ACK, 0), Origin::Legit(Some(i)));
        self.advance(TICKS_PER_SECOND / 100);
    }

    fn open_vm_tcp(&mut self, k: u32) {
        let family = if k % 5 == 4 { IpFamily::V6 } else { IpFamily::V4 };
        let remote = remote_addr(family, k, false);
        let sport = 20_000 + u16::try_from(k % 40_000).unwrap_or(0);
        let syn =
            SimPacket::new(family, protocol::TCP, self.vm(family), sport, remote, 443, tcp::SYN, 0);
        let i = self.conns.len();
        self.conns.push(Conn {
            kind: ConnKind::VmTcp,
            key: vm_key(&syn, false),
            inbound: syn.reply(tcp::PSH_ACK, 500),
            outbound: syn.reply(tcp::ACK, 0).reply(tcp::PSH_ACK, 80),
            carried: Carried::NotMoved,
        });
        self.outbound(&syn, Origin::Legit(Some(i)));
        // The peer's SYN-ACK; the guest's ACK follows (its answer).
        self.inbound(&syn.reply(tcp::SYN_ACK, 0), Origin::Legit(Some(i)));
        self.advance(TICKS_PER_SECOND / 100);
    }

    fn open_udp(&mut self, k: u32) {
        let remote = vsflow_core::packet::v4([192, 0, 2, 53]);
        let sport = 50_000 + u16::try_from(k % 10_000).unwrap_or(0);
        let q = SimPacket::new(
            IpFamily::V4,
            protocol::UDP,
            self.vm(IpFamily::V4),
            sport,
            remote,
            53,
            0,
            40,
        );
        let i = self.conns.len();
        self.conns.push(Conn {
            kind: ConnKind::Udp,
            key: vm_key(&q, false),
            inbound: q.reply(0, 120),
            outbound: q.clone(),
            carried: Carried::NotMoved,
        });
        self.outbound(&q, Origin::Legit(Some(i)));
        self.inbound(&q.reply(0, 120), Origin::Legit(Some(i)));
        self.advance(TICKS_PER_SECOND / 100);
    }

    /// The VM's address.
    #[must_use]
    pub fn vm(&self, family: IpFamily) -> [u8; 16] {
        vm_addr(family, VM)
    }

    // ---- The move ---------------------------------------------------------------------------

    /// Moves the VM from A' (or from the current destination, for a second move) to a new
    /// destination host, its state arriving as `arrival` says. The restore is pended: the
    /// window is open until [`Self::complete_restore`].
    ///
    /// # Panics
    /// If a host cannot be loaded (a scenario bug).
    pub fn migrate(&mut self, arrival: Arrival) {
        self.migrate_inner(arrival, None);
    }

    /// Moves the VM onward from its current destination (A -> B -> C), the reference staying
    /// A; `complete_first` runs B's pended restore before the save.
    pub fn migrate_onward(&mut self, complete_first: bool) {
        if complete_first {
            self.complete_restore();
        }
        self.migrate_inner(Arrival::Intact, Some(ID_C));
    }

    fn migrate_inner(&mut self, arrival: Arrival, onward: Option<u32>) {
        let uptime = self.setup.destination_uptime;
        let regs = self.dest_registry();
        let seed = self.setup.seed ^ onward.map_or(0xB, u64::from);
        let switch = if onward.is_some() {
            "0E5B1C2D-CCCC-4000-8000-00000000016C"
        } else {
            "0E5B1C2D-BBBB-4000-8000-00000000016B"
        };
        let mut next = Side::new(seed, &regs, uptime, switch);
        next.id = onward.unwrap_or(ID_B);
        next.guest = self.b.guest.clone();
        // The source's save, as the main job saves; an encode failure is an allocation failing
        // inside it.
        if arrival == Arrival::EncodeFailure {
            crate::kernel::faults::arm(
                self.b.host.id(),
                Some(crate::kernel::faults::Site::Alloc),
                1,
            );
        }
        // Restores the host the VM leaves failed while it was there (a second move cancels a
        // pended one by deleting the port: the VM has left by then).
        if self.moved {
            self.report.failed_restores += self.b.host.failed_vm_restores().len();
        }
        let save = arrival != Arrival::Nothing;
        let (mut blobs, _) = migrate::depart(&mut self.b.host, self.b.sw, self.b.id, NIC, save);
        crate::kernel::faults::disarm();
        for (_, blob) in &mut blobs {
            if let Arrival::Damaged(d) = arrival {
                damage(blob, d);
            }
        }
        // What the blob carries, as far as it decodes.
        let state =
            blobs.iter().find_map(|(_, b)| match codec::decode(b, &DecodeConfig::default()) {
                Ok(Decoded::State(s)) => Some(s),
                _ => None,
            });
        self.fingerprints = state.as_ref().map(|s| s.fingerprints.clone()).unwrap_or_default();
        self.report.fingerprints = self.fingerprints.len();
        let exact: HashSet<FlowKey> =
            state.iter().flat_map(|s| s.flows.iter().map(|f| f.key)).collect();
        let (mut e, mut f, mut n) = (0, 0, 0);
        for c in &mut self.conns {
            c.carried = if exact.contains(&c.key) {
                e += 1;
                Carried::Exact
            } else if self.fingerprints.contains(&c.key) && c.kind != ConnKind::Udp {
                f += 1;
                Carried::Fingerprint
            } else {
                n += 1;
                Carried::No
            };
        }
        self.report.carried = (e, f, n);
        arrival.name().clone_into(&mut self.report.arrival);
        self.arrival = Some(arrival);
        migrate::arrive(&mut next.host, next.sw, next.id, PORT_NAME, NIC, true);
        next.host.nic_event(next.sw, next.id, NIC, sys::FWPS_VSWITCH_EVENT_INTERFACE_CONNECT);
        self.tickets = match arrival {
            Arrival::Nothing => Vec::new(),
            Arrival::OtherPort => next.host.restore(next.sw, next.id + 1, &blobs),
            _ => next.host.restore(next.sw, next.id, &blobs),
        };
        self.restored_at = None;
        self.arrived_at = next.host.now();
        let old = std::mem::replace(&mut self.b, next);
        self.retired.push(old.host);
        self.moved = true;
    }

    /// The destination's work item runs: the pended restore is applied (or degrades).
    pub fn complete_restore(&mut self) {
        self.b.host.run_deferred();
        for t in &self.tickets {
            match self.b.host.restore_status(t) {
                Some(s) if sys::nt_success(s) => {}
                _ => self.report.failed_restores += 1,
            }
        }
        self.tickets.clear();
        self.restored_at = Some(self.b.host.now());
    }

    // ---- The operator ------------------------------------------------------------------------

    /// The operator replaces the VM port's rules on both hosts (the `ReplaceRules` request with
    /// the version `ListPorts` reports, as netports sends it).
    ///
    /// # Panics
    /// If the request does not encode.
    pub fn operator_rules(&mut self, rules: &[AllowRule]) {
        for side in [&self.a, &self.b] {
            let Some(port) = side.port_ref() else { continue };
            let mut space = vec![0u8; 24 * rules.len().max(1)];
            let list = vsflow_proto::request::rule_list(rules, &mut space).expect("rules encode");
            let req = Request::ReplaceRules {
                port: port.port,
                expected_version: port.rules_version,
                rules: list,
            };
            let (status, _) = side.host.control(&req, 64);
            assert!(
                sys::nt_success(status),
                "ReplaceRules on host {}: {status:#x}",
                side.host.id()
            );
        }
    }

    /// The operator sets the VM port's mode on both hosts (`SetPortMode`).
    ///
    /// # Panics
    /// If the request fails.
    pub fn operator_mode(&mut self, mode: Mode) {
        for side in [&self.a, &self.b] {
            let Some(port) = side.port_ref() else { continue };
            let (status, _) =
                side.host.control(&Request::SetPortMode { port: port.port, mode }, 64);
            assert!(sys::nt_success(status), "SetPortMode on host {}: {status:#x}", side.host.id());
        }
    }

    // ---- Traffic ------------------------------------------------------------------------------

    /// Connection `i`'s peer sends data (the guest acknowledges it).
    pub fn resume_inbound(&mut self, i: usize) -> (bool, bool) {
        let p = self.conns[i].inbound.clone();
        self.inbound(&p, Origin::Legit(Some(i)))
    }

    /// The VM sends on connection `i`.
    pub fn resume_outbound(&mut self, i: usize) -> (bool, bool) {
        let p = self.conns[i].outbound.clone();
        self.outbound(&p, Origin::Legit(Some(i)))
    }

    /// Every connection resumes: the peer's packet, then the VM's.
    pub fn resume_all(&mut self) {
        for i in 0..self.conns.len() {
            self.resume_inbound(i);
            self.resume_outbound(i);
        }
    }

    /// The VM opens a new TCP connection to `remote:443` (SYN out, SYN-ACK in, the guest's ACK)
    /// and exchanges data on it; returns the fates of the peer's packets.
    pub fn vm_new_connection(&mut self, n: u32) -> Vec<(bool, bool)> {
        let remote = remote_addr(IpFamily::V4, 40_000 + n, false);
        let sport = 61_000 + u16::try_from(n % 4_000).unwrap_or(0);
        let syn = SimPacket::new(
            IpFamily::V4,
            protocol::TCP,
            self.vm(IpFamily::V4),
            sport,
            remote,
            443,
            tcp::SYN,
            0,
        );
        self.outbound(&syn, Origin::Legit(None));
        let a = self.inbound(&syn.reply(tcp::SYN_ACK, 0), Origin::Legit(None));
        let b = self.inbound(&syn.reply(tcp::PSH_ACK, 300), Origin::Legit(None));
        vec![a, b]
    }

    /// An outsider's packet to the VM: `n` picks the source (198.18.0.0/15, `2001:db8:ffff::/48`
    /// for IPv6) and source port.
    #[must_use]
    pub fn outsider(
        &self,
        family: IpFamily,
        proto: u8,
        n: u64,
        dport: u16,
        flags: u8,
    ) -> SimPacket {
        let (src, sport) = outsider_endpoint(family, n);
        let payload = if proto == protocol::TCP { 0 } else { 32 };
        SimPacket::new(family, proto, src, sport, self.vm(family), dport, flags, payload)
    }

    /// The key of [`Self::outsider`]'s packet (the VM's side local), without building it.
    #[must_use]
    pub fn outsider_key(&self, family: IpFamily, proto: u8, n: u64, dport: u16) -> FlowKey {
        let (src, sport) = outsider_endpoint(family, n);
        FlowKey {
            family,
            protocol: proto,
            local_addr: self.vm(family),
            remote_addr: src,
            local_port: dport,
            remote_port: sport,
        }
    }

    /// Sprays `n` outsider packets of `kind` at the VM, spread over `over` ticks. Each one B
    /// admits and A blocks is followed at once, before the guest answers, by a SYN on its
    /// tuple (class `SYN after a pickup`), and after the guest's answer by an ACK again (class
    /// `after the VM refused`).
    pub fn spray(&mut self, kind: Spray, n: u64, over: Tick) {
        let name = format!("spray: {}", kind.name());
        self.class(&name);
        self.expect_matches(n);
        let saved_gap = self.gap;
        self.gap = (over / n.max(1)).max(1);
        let base = self.rng.next();
        for k in 0..n {
            let seq = base.wrapping_add(k);
            let family = if seq % 8 == 7 { IpFamily::V6 } else { IpFamily::V4 };
            let (proto, dport, flags) = kind.packet(seq);
            let p = self.outsider(family, proto, seq, dport, flags);
            let (fa, fb) = self.inbound_quiet(&p, Origin::Adversary);
            if fb && !fa {
                self.follow_up(&p, &name);
            } else {
                self.answer(&p, (fa, fb));
            }
        }
        self.gap = saved_gap;
    }

    /// After B admitted `p` (A blocked it): for TCP, the outsider's SYN on the same tuple before
    /// the guest answers, then the guests' answers, then the outsider's ACK after the refusal;
    /// otherwise a second datagram of the same flow.
    fn follow_up(&mut self, p: &SimPacket, class: &str) {
        if p.protocol != protocol::TCP {
            self.class(&format!("{class}: the next datagram"));
            let r = self.inbound_quiet(p, Origin::Adversary);
            self.answer(p, r);
            self.class(class);
            return;
        }
        let syn = with_flags(p, tcp::SYN);
        self.class(SYN_AFTER_PICKUP);
        self.hold_answers();
        self.answer(p, (false, true));
        let r = self.inbound_quiet(&syn, Origin::Adversary);
        self.answer(&syn, r);
        self.release_answers();
        self.class(AFTER_REFUSAL);
        // These tuples were admitted already: the bound on chance matches is the spray's.
        self.chosen_keys();
        let again = with_flags(p, tcp::ACK);
        let r = self.inbound_quiet(&again, Origin::Adversary);
        self.answer(&again, r);
        self.class(class);
    }

    /// The first `want` numbers `n = 0, 1, ...` whose `key(n)`, under the armed set's salt, has
    /// a fingerprint in the set: a white-box search (one keyed hash per try). An outsider, who
    /// cannot know the salt, sends such a key with probability `n / 2^32` per packet; the
    /// cases use these to show what a hit does. Gives up after 2^32 tries.
    pub fn colliding(&self, want: usize, key: impl Fn(u64) -> FlowKey) -> Vec<u64> {
        let mut found = Vec::new();
        if self.fingerprints.is_empty() {
            return found;
        }
        let mut n = 0u64;
        while found.len() < want && n < 1 << 32 {
            if self.fingerprints.contains(&key(n)) {
                found.push(n);
            }
            n += 1;
        }
        found
    }

    /// Marks the current class as sent on keys that were not drawn by chance (chosen to match a
    /// fingerprint, or tuples a spray's match admitted already): the bound on chance matches
    /// does not apply to it.
    pub fn chosen_keys(&mut self) {
        self.report.classes[self.class].chosen_keys = true;
    }

    /// The connection whose fingerprint `key` shares, if any.
    #[must_use]
    pub fn fingerprint_owner(&self, key: &FlowKey) -> Option<usize> {
        let salt = self.fingerprints.salt();
        let v = fingerprint(salt, key);
        self.conns
            .iter()
            .position(|c| c.carried == Carried::Fingerprint && fingerprint(salt, &c.key) == v)
    }

    /// Ends the case: unloads every driver and returns the report.
    #[must_use]
    pub fn finish(mut self) -> Report {
        // A restore still pended completes (its work item would have run long ago).
        self.b.host.run_deferred();
        self.report.failed_restores += self.b.host.failed_vm_restores().len();
        let mut hosts = vec![self.a.host, self.b.host];
        hosts.append(&mut self.retired);
        for h in &mut hosts {
            h.unload_driver();
            self.report.violations.extend(h.violations().iter().map(ToString::to_string));
        }
        self.report
    }

    /// The operator sets the mode of the VM's port on the destination only (the reference
    /// keeps its own): a change the harness must see as the destination opening or tightening.
    ///
    /// # Panics
    /// If the request fails.
    pub fn destination_mode(&mut self, mode: Mode) {
        let Some(port) = self.b.port_ref() else { return };
        let (status, _) = self.b.host.control(&Request::SetPortMode { port: port.port, mode }, 64);
        assert!(sys::nt_success(status), "SetPortMode: {status:#x}");
    }

    /// Whether the guests' own firewall drops what it does not expect without answering
    /// (Windows Defender Firewall's default for unsolicited inbound traffic) instead of the
    /// TCP stack's RST; see [`Guest`].
    pub fn guest_silent(&mut self, silent: bool) {
        self.a.guest.silent = silent;
        self.b.guest.silent = silent;
    }
}

/// Puts the VM's port (id `side.id`) on a fresh side, with its NIC connected.
fn attach(side: &mut Side) {
    side.host.create_port(side.sw, side.id, PORT_NAME, false);
    side.host.nic_event(side.sw, side.id, NIC, sys::FWPS_VSWITCH_EVENT_INTERFACE_CREATE);
    side.host.nic_event(side.sw, side.id, NIC, sys::FWPS_VSWITCH_EVENT_INTERFACE_CONNECT);
}

/// An outsider's address and source port: `n` picks them (198.18.0.0/15, RFC 2544's
/// benchmarking range; `2001:db8:ffff::/48` for IPv6): the low 17 bits the address, the next
/// bits the port (1024..65535), so up to 2^17 x 64,512 (8.4e9) consecutive `n` are distinct
/// 5-tuples.
fn outsider_endpoint(family: IpFamily, n: u64) -> ([u8; 16], u16) {
    let [_, _, _, _, _, b, c, d] = (n & 0x1_ffff).to_be_bytes();
    let src = match family {
        IpFamily::V4 => vsflow_core::packet::v4([198, 0x12 | b, c, d]),
        IpFamily::V6 => [0x20, 0x01, 0x0d, 0xb8, 0xff, 0xff, 0, 0, 0, 0, 0, 0, 0, b, c, d],
    };
    (src, 1024 + u16::try_from((n >> 17) % 64_512).unwrap_or(0))
}

/// The same packet (addresses, ports) with other TCP flags, as a plain whole packet.
#[must_use]
pub fn with_flags(p: &SimPacket, flags: u8) -> SimPacket {
    SimPacket::new(p.family, p.protocol, p.src, p.sport, p.dst, p.dport, flags, 0)
}

/// Segments a pickup may admit on one 5-tuple before the VM answers
/// (runtime-state-format.md, "Pickups: what they admit").
pub const PICKUP_SEGMENTS: u32 = 4;

/// The class of an outsider's SYN sent right after B picked up its tuple, before the guest
/// answered.
pub const SYN_AFTER_PICKUP: &str = "SYN on a picked-up tuple, before the VM answers";
/// The class of an outsider's ACK sent after the guest answered a picked-up tuple (a RST, or
/// nothing from a guest whose firewall drops silently).
pub const AFTER_REFUSAL: &str = "ACK on a picked-up tuple after the VM's answer (RST or none)";

/// One line about a packet and its two verdicts.
fn describe(p: &SimPacket, inbound: bool, origin: Origin, fa: bool, fb: bool) -> String {
    let verdict = |x: bool| if x { "admits" } else { "blocks" };
    format!(
        "{} {} {}{} flags {:#04x}{} {}:{} -> {}:{}: A {}, B {}",
        if inbound { "inbound" } else { "outbound" },
        match origin {
            Origin::Adversary => "adversarial",
            Origin::Peer => "new peer",
            Origin::Legit(_) => "legit",
        },
        match p.protocol {
            protocol::TCP => "TCP".to_owned(),
            protocol::UDP => "UDP".to_owned(),
            other => format!("protocol {other}"),
        },
        match p.fragment {
            Fragment::Whole => String::new(),
            Fragment::First => match p.transport_cut {
                Some(n) => format!(" tiny first fragment ({n} transport bytes)"),
                None => " first fragment".to_owned(),
            },
            Fragment::NonFirst(off) => format!(" fragment at {off}"),
        },
        p.flags,
        match (p.ipv4_ah, p.ipv6_ext.len()) {
            (false, 0) => String::new(),
            (true, _) => " behind an AH".to_owned(),
            (false, n) => format!(" behind {n} extension header(s)"),
        },
        short_addr(&p.src, p.family),
        p.sport,
        short_addr(&p.dst, p.family),
        p.dport,
        verdict(fa),
        verdict(fb),
    )
}

fn short_addr(a: &[u8; 16], family: IpFamily) -> String {
    match family {
        IpFamily::V4 => format!("{}.{}.{}.{}", a[0], a[1], a[2], a[3]),
        IpFamily::V6 => format!("[..{:02x}{:02x}:{:02x}{:02x}]", a[12], a[13], a[14], a[15]),
    }
}

/// Damages a blob as `d` says; a damage that keeps the blob readable fixes its CRC-32C trailer.
pub fn damage(blob: &mut Vec<u8>, d: Damage) {
    let fix_crc = |b: &mut Vec<u8>| {
        if b.len() >= 8 {
            let n = b.len() - 4;
            let crc = codec::crc32c(&b[..n]);
            b[n..].copy_from_slice(&crc.to_le_bytes());
        }
    };
    match d {
        Damage::FlowSection => {
            let at = blob.len() * 3 / 4;
            if let Some(x) = blob.get_mut(at) {
                *x ^= 0x5A;
            }
        }
        Damage::Empty => blob.clear(),
        Damage::Foreign => {
            if let Some(g) = blob.get_mut(16..32) {
                for x in g.iter_mut() {
                    *x ^= 0xA5;
                }
            }
            fix_crc(blob);
        }
        Damage::UnknownMajor => {
            if let Some(m) = blob.get_mut(4..6) {
                m.copy_from_slice(&2u16.to_le_bytes());
            }
            fix_crc(blob);
        }
        Damage::Truncated => blob.truncate(blob.len() / 2),
    }
}

/// What an outsider sprays.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Spray {
    /// TCP ACKs to RDP (3389: the guest listens, no rule admits it).
    TcpAck,
    /// TCP with every other flag combination but SYN (none, FIN, PSH, URG, ECE/CWR, with and
    /// without ACK; RST; FIN+PSH+URG) to RDP.
    TcpFlags,
    /// UDP datagrams to SNMP (161).
    Udp,
    /// Every other protocol: ICMP, IGMP, GRE, ESP, AH, `ICMPv6`, SCTP, 0 and 255.
    Other,
}

impl Spray {
    /// Every kind.
    pub const ALL: [Self; 4] = [Self::TcpAck, Self::TcpFlags, Self::Udp, Self::Other];

    /// A short name.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Self::TcpAck => "tcp ack",
            Self::TcpFlags => "tcp other flags",
            Self::Udp => "udp",
            Self::Other => "other protocols",
        }
    }

    /// Protocol, destination port and TCP flags of the `seq`-th packet.
    #[must_use]
    pub const fn packet(self, seq: u64) -> (u8, u16, u8) {
        const FLAGS: [u8; 12] = [
            0,
            tcp::FIN,
            tcp::PSH,
            0x20, // URG
            0xC0, // ECE | CWR
            tcp::FIN | tcp::PSH | 0x20,
            tcp::RST,
            tcp::RST | tcp::ACK,
            tcp::FIN_ACK,
            tcp::PSH_ACK,
            tcp::ACK | 0x20,
            tcp::ACK | 0xC0,
        ];
        const OTHER: [u8; 9] = [1, 2, 47, 50, 51, 58, 132, 0, 255];
        match self {
            Self::TcpAck => (protocol::TCP, 3389, tcp::ACK),
            Self::TcpFlags => (protocol::TCP, 3389, FLAGS[(seq % 12) as usize]),
            Self::Udp => (protocol::UDP, 161, 0),
            Self::Other => (OTHER[(seq % 9) as usize], 0, 0),
        }
    }
}

/// Options of the `vsflow-sim differential` command and of the cases.
#[derive(Clone, Debug)]
pub struct Options {
    /// Outsider packets sprayed at the port in the pickup window, split over the kinds (60%
    /// TCP ACK, 15% other TCP flags, 15% UDP, 10% other protocols).
    pub spray: u64,
    /// Established connections of the spray case's port (carried exactly and as fingerprints).
    pub connections: u32,
    /// Size cap of the blob in the fingerprint cases (registry `BlobCap`).
    pub blob_cap: u32,
    /// Registry values set last on every host of every case (e.g. `RestoreMode` 1).
    pub settings: Vec<(String, u32)>,
    /// Seed.
    pub seed: u64,
}

impl Default for Options {
    fn default() -> Self {
        Self { spray: 20_000, connections: 3_000, blob_cap: 16_384, settings: Vec::new(), seed: 16 }
    }
}

/// A case of the catalogue.
#[derive(Clone, Copy, Debug)]
pub struct Case {
    /// Its name (`vsflow-sim differential --case NAME`).
    pub name: &'static str,
    /// What it sends.
    pub what: &'static str,
    /// Runs it.
    pub run: fn(&Options) -> Report,
}

/// The catalogue, in order.
#[must_use]
pub fn cases() -> Vec<Case> {
    CASES.to_vec()
}

/// Runs the case named `name`.
#[must_use]
pub fn run_case(name: &str, opts: &Options) -> Option<Report> {
    cases().into_iter().find(|c| c.name == name).map(|c| (c.run)(opts))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inbound(flags: u8) -> SimPacket {
        SimPacket::new(
            IpFamily::V4,
            protocol::TCP,
            vsflow_core::packet::v4([198, 18, 0, 1]),
            4000,
            vm_addr(IpFamily::V4, VM),
            3389,
            flags,
            0,
        )
    }

    #[test]
    fn only_readable_ack_segments_without_syn_or_rst_are_midstream() {
        assert!(is_midstream(&inbound(tcp::ACK)));
        assert!(is_midstream(&inbound(tcp::PSH_ACK)));
        assert!(is_midstream(&inbound(tcp::FIN_ACK)));
        for flags in [0, tcp::FIN, tcp::SYN, tcp::SYN_ACK, tcp::RST, tcp::RST | tcp::ACK, tcp::PSH]
        {
            assert!(!is_midstream(&inbound(flags)), "{flags:#x}");
        }
        assert!(!is_midstream(&inbound(tcp::ACK).tiny_first_fragment(13)), "flags cut off");
        assert!(is_midstream(&inbound(tcp::ACK).tiny_first_fragment(14)));
        assert!(is_midstream(&inbound(tcp::ACK).with_ah()), "behind an AH the flags are there");
        assert!(!is_midstream(&inbound(tcp::ACK).as_fragment(Fragment::NonFirst(3))));
        assert!(is_initial_syn(&inbound(tcp::SYN)));
        assert!(!is_initial_syn(&inbound(tcp::SYN).tiny_first_fragment(8)));
    }

    #[test]
    fn a_key_is_the_vms_view_and_has_no_ports_without_port_values() {
        let p = inbound(tcp::ACK);
        let k = vm_key(&p, true);
        assert_eq!((k.local_port, k.remote_port), (3389, 4000));
        assert_eq!(vm_key(&p.reply(tcp::ACK, 0), false), k, "both directions, one key");
        let frag = p.as_fragment(Fragment::NonFirst(1));
        assert_eq!((vm_key(&frag, true).local_port, vm_key(&frag, true).remote_port), (0, 0));
    }

    #[test]
    fn the_guest_answers_as_a_tcp_stack_or_stays_silent() {
        let mut g = Guest::default();
        let ack = inbound(tcp::ACK);
        assert_eq!(g.receive(&ack).map(|r| r.flags), Some(tcp::RST), "no connection: RST");
        let syn = inbound(tcp::SYN);
        assert_eq!(g.receive(&syn).map(|r| r.flags), Some(tcp::SYN_ACK), "3389 listens");
        assert_eq!(g.receive(&ack), None, "the handshake completes");
        assert_eq!(g.receive(&syn).map(|r| r.flags), Some(tcp::ACK), "challenge ACK");
        let closed =
            SimPacket::new(IpFamily::V4, protocol::TCP, ack.src, 4001, ack.dst, 8080, tcp::SYN, 0);
        assert_eq!(g.receive(&closed).map(|r| r.flags), Some(tcp::RST | tcp::ACK));
        let mut silent = Guest::default();
        silent.silent = true;
        assert_eq!(silent.receive(&ack), None);
        assert_eq!(silent.receive(&closed), None);
        assert_eq!(silent.receive(&syn).map(|r| r.flags), Some(tcp::SYN_ACK), "it still listens");
    }

    #[test]
    fn damage_keeps_the_crc_only_where_the_blob_should_still_read() {
        let mut blob: Vec<u8> = (0..64u8).collect();
        let n = blob.len() - 4;
        let crc = codec::crc32c(&blob[..n]);
        blob[n..].copy_from_slice(&crc.to_le_bytes());
        for d in [Damage::Foreign, Damage::UnknownMajor] {
            let mut b = blob.clone();
            damage(&mut b, d);
            assert_ne!(b, blob);
            assert_eq!(codec::crc32c(&b[..n]).to_le_bytes(), b[n..], "{d:?} fixes the CRC");
        }
        let mut b = blob.clone();
        damage(&mut b, Damage::FlowSection);
        assert_ne!(codec::crc32c(&b[..n]).to_le_bytes(), b[n..], "damage breaks the CRC");
        let mut b = blob.clone();
        damage(&mut b, Damage::Empty);
        assert!(b.is_empty());
        let mut b = blob;
        damage(&mut b, Damage::Truncated);
        assert_eq!(b.len(), 32);
    }
}
