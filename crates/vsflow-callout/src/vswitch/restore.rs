//! The runtime-state restore lifecycle, top to bottom: a blob from the source host becomes a
//! port's state here, and every notification that returned `STATUS_PENDING` is completed
//! exactly once.
//!
//! 1. [`restore_fn`] (WFP's callback) -> [`Driver::on_restore`]: pending mode (default) copies
//!    the blob, records the notification in the pending set, asks for deferred work and
//!    returns `STATUS_PENDING`; synchronous mode (or no work item) decodes and applies inline.
//! 2. [`Driver::run_deferred`] (the work item, `PASSIVE_LEVEL`): takes each entry, decodes it
//!    outside every lock, then claims it (no canceller can remove it any more) and, once it is
//!    applied, removes it from the set: whoever removes an entry completes it. Until then the
//!    restore is in flight for a save of its port (`PendingSet::in_flight`).
//!    The blob's flows are placed, as they are decoded, in the table the port will get
//!    (`codec::decode_staged`, the port's table configuration), their ages counted from the
//!    callback: the time the entry waited ages them (a flow that idled past its timeout while
//!    the work item was late arrives expired). The synchronous path decodes the same way.
//! 3. [`Driver::apply_restore`]: under the port's own lock only (the map's is held just to take
//!    a reference on the port), applies the state (flows seen in the restore window merge with
//!    the restored ones), or degrades (no flows carried, policy kept or closed). Only into the
//!    port *instance* the restore was received for: a port deleted after the work item claimed
//!    its restore (no delete can cancel it then) and created again with the same id is another
//!    port, perhaps another VM's, which is left as it is (the restore counted and traced as
//!    degraded, [`DegradedReason::PortReplaced`]): never the old VM's flows or policy.
//! 4. [`Driver::complete`]: `FwpsvSwitchNotifyComplete0`, once.
//!
//! Cancel paths (each removes the entries it completes, so a worker that comes second finds
//! nothing): [`Driver::cancel_port`] (port delete or replaced), [`Driver::cancel_switch`]
//! (switch delete): the port is gone, so is its VM. Stop does not cancel:
//! [`Driver::finish_all`] closes the set (restores from then on complete synchronously) and
//! finishes every restore still pended — decode, apply, complete with its status — so
//! unloading the driver during a migration fails no VM's restore.
//!
//! A blob longer than [`MAX_BLOB_LEN`] (the format's documented maximum) is refused before it
//! is copied or decoded: counted (`restores_oversized`), the port degraded
//! ([`DegradedReason::Oversized`]), the restore completes at once.
//!
//! A migration never fails because of vsflow, and never opens the firewall: an empty,
//! damaged, foreign or unknown-major blob, one from a source without state, or one that cannot
//! be applied, restores no flows and never lowers the port's policy (the operator's settings,
//! else the policy the blob still carries, else Enforce: `codec::apply_degraded`); it is
//! counted (`restores_empty`) and traced at error level ([`RestoreOutcome::Degraded`]), and
//! the restore reports success. Failing such a restore is an opt-in policy (registry
//! `FailBadRestores` = 1; the port is closed the same way first). Restoring the same blob
//! (same keyed digest and length) into the same port a second time changes nothing and is
//! traced [`RestoreOutcome::Repeated`]. Policy set by an operator while the port awaits its
//! restore wins over the blob's (the blob carries an older decision), even when the work item
//! runs after the window closed: a pended restore keeps the window open. The rules version
//! stays monotonic. vsflow-core's `Port` restore API decides policy and versions.

use alloc::vec::Vec;
use core::ffi::c_void;

use fwps_sys::{
    NDIS_SWITCH_PARAMETERS, NTSTATUS, STATUS_CANCELLED, STATUS_PENDING, STATUS_SUCCESS,
};
use vsflow_core::codec::{
    self, ApplyError, DecodeConfig, DecodeError, DecodedStaged, SalvagedPolicy, StageConfig, Staged,
};

use super::{driver, identity};
use crate::config::RestoreMode;
use crate::driver::Driver;
use crate::error::CalloutError;
use crate::keys;
use crate::pending::Target;
use crate::percpu::Counter;
use crate::ports::{PortKey, PortState};
use crate::services::{KernelServices, LogLevel};
use crate::trace::{DegradedReason, RestoreOutcome, TraceEvent};

/// `vSwitchRuntimeStateRestoreNotifyFn`.
///
/// # Safety
/// Called by WFP with valid pointers; `runtime_state` has `runtime_state_length` readable
/// bytes for the duration of the call.
pub unsafe extern "system" fn restore_fn<S: KernelServices>(
    notify_context: *mut c_void,
    completion_context: *mut c_void,
    _event_type: u32,
    v_switch: *const NDIS_SWITCH_PARAMETERS,
    port_id: u32,
    runtime_state: *mut c_void,
    runtime_state_length: usize,
) -> NTSTATUS {
    // SAFETY: WFP passes the subscription's context.
    let Some(d) = (unsafe { driver::<S>(notify_context) }) else { return STATUS_SUCCESS };
    let Some(_in_flight) = d.enter_callback() else { return STATUS_SUCCESS };
    // SAFETY: WFP's pointer, valid for the call.
    let Some(sw) = (unsafe { v_switch.as_ref() }) else {
        // Nothing to restore into; a migration never fails because of vsflow.
        d.restore_into_nothing(port_id, runtime_state_length);
        return STATUS_SUCCESS;
    };
    let blob: &[u8] = if runtime_state.is_null() || runtime_state_length == 0 {
        &[]
    } else {
        // SAFETY: WFP's buffer of `runtime_state_length` bytes, valid for the call; copied
        // before the callback returns.
        unsafe { core::slice::from_raw_parts(runtime_state.cast::<u8>(), runtime_state_length) }
    };
    d.on_restore(completion_context, sw, port_id, blob)
}

/// The longest blob vsflow restores: 65,535 bytes.
///
/// docs/runtime-state-format.md, "Validation on restore"; a save never writes more than
/// `BlobCap`, at most 65,000. A longer one is refused before anything is copied.
pub const MAX_BLOB_LEN: usize = u16::MAX as usize;

/// What a decode produced, ready to apply.
#[allow(clippy::large_enum_variant, reason = "one value per restore, moved once, never stored")]
enum Restorable {
    /// A state to apply: its policy, and its flows placed in the port's future table (or what
    /// placing them met, the apply's error).
    State(vsflow_core::codec::PortState, Result<Staged, ApplyError>),
    /// No flows: a degraded restore (or a failed one under the opt-in policy), with the policy
    /// the blob still carries if its own check survived the damage (format 1.2).
    Degraded(DegradedReason, Option<CalloutError>, Option<SalvagedPolicy>),
}

impl<S: KernelServices> Driver<S> {
    // ---- 1. The callback ----------------------------------------------------------------

    /// Handles a restore notification; returns `STATUS_PENDING` only after recording
    /// `completion` for exactly-once completion.
    pub fn on_restore(
        &self,
        completion: *mut c_void,
        switch: &NDIS_SWITCH_PARAMETERS,
        port_id: u32,
        blob: &[u8],
    ) -> NTSTATUS {
        let switch_id = identity(&switch.SwitchName)
            .and_then(|name| self.read_ports(|ix| ix.switch_id(name.as_utf16())).flatten());
        let Some(switch) = switch_id else {
            // A switch vsflow does not know (or whose name it cannot read): no port to restore
            // into. Succeeds: only FailBadRestores may fail a VM's restore.
            self.restore_into_nothing(port_id, blob.len());
            return STATUS_SUCCESS;
        };
        let key = PortKey { switch, port: port_id };
        // The port instance this restore is for: only it is restored into, however late.
        let target = (key, self.port_ref(|_| Some(key)).map(|slot| slot.instance));
        if blob.len() > MAX_BLOB_LEN {
            // Refused before any copy: a hostile or broken source must not make the host
            // allocate and hash what it sends.
            self.count(Counter::RestoresOversized);
            self.log(
                LogLevel::Warning,
                format_args!(
                    "port {port_id}: restore blob of {} bytes is over the maximum {MAX_BLOB_LEN}",
                    blob.len()
                ),
            );
            let refused = Restorable::Degraded(DegradedReason::Oversized, None, None);
            return self.apply_restore(target, blob.len(), None, refused);
        }
        if self.config.restore_mode == RestoreMode::Pending && !completion.is_null() {
            match self.pend_restore(completion, target, blob) {
                Ok(()) => return STATUS_PENDING,
                Err(e) => self.log(
                    LogLevel::Warning,
                    format_args!(
                        "port {port_id}: restore not pended ({e}); restoring synchronously"
                    ),
                ),
            }
        }
        self.count(Counter::RestoresSync);
        let decoded = self.decode(blob, self.now());
        let sum = self.digest_of(blob, &decoded);
        self.apply_restore(target, blob.len(), Some(sum), decoded)
    }

    /// A restore for no port vsflow knows: counted (`restores_unknown_port`), traced as
    /// degraded; the caller reports success.
    fn restore_into_nothing(&self, port_id: u32, bytes: usize) {
        self.count(Counter::RestoresUnknownPort);
        self.trace_restore(
            port_id,
            bytes,
            (0, 0),
            RestoreOutcome::Degraded(DegradedReason::UnknownPort),
            STATUS_SUCCESS,
        );
    }

    fn pend_restore(
        &self,
        completion: *mut c_void,
        target: Target,
        blob: &[u8],
    ) -> Result<(), CalloutError> {
        let mut copy = Vec::new();
        copy.try_reserve_exact(blob.len())?;
        copy.extend_from_slice(blob);
        // The restore is coming: the port's window must not close on its own meanwhile,
        // however late the work item runs (the operator's changes made in it win either way).
        let (key, instance) = target;
        if let Some(slot) = self.port_ref(|_| Some(key)).filter(|s| Some(s.instance) == instance) {
            slot.state.lock().window_deadline = vsflow_core::Tick::MAX;
        }
        let id = self.pending.lock().push(completion as usize, target, copy, self.now())?;
        self.count(Counter::RestoresPended);
        if let Err(e) = self.services.request_deferred_work() {
            // Take it back; if it is already gone, someone completed it: still report pending.
            if self.pending.lock().remove(id).is_some() {
                self.counters.add(
                    self.services.current_processor(),
                    Counter::RestoresPended,
                    u64::MAX,
                );
                return Err(e);
            }
        }
        Ok(())
    }

    // ---- 2. The worker ------------------------------------------------------------------

    /// Finishes pended restores: decodes each blob at `PASSIVE_LEVEL` outside every lock,
    /// applies it under the port's lock, and completes the notification, unless a canceller
    /// removed it meanwhile (then the canceller has completed it). Called by the driver's work
    /// item, and at `PASSIVE_LEVEL` by stop and by a re-registration after a BFE restart
    /// (entries the work item took meanwhile it completes itself).
    pub fn run_deferred(&self) {
        loop {
            let job = self.pending.lock().take_next();
            let Some((id, target, blob, received_at)) = job else { break };
            // Ages count from the callback: the wait ages the flows.
            let decoded = self.decode(&blob, received_at);
            // Claimed, not removed: until it is applied the restore stays in flight for a save
            // of the port, which would otherwise encode the port as it was before its restore.
            let Some((completion, _)) = self.pending.lock().claim(id) else {
                // Cancelled while decoding: completed by the canceller.
                continue;
            };
            let sum = self.digest_of(&blob, &decoded);
            let status = self.apply_restore(target, blob.len(), Some(sum), decoded);
            self.pending.lock().release(id);
            Self::complete(completion, status);
        }
    }

    /// Finishes, here and now, every pended restore of port `key` the work item has not taken
    /// yet (a save of the port is asked for: the VM's state is the port's only once its restore
    /// is applied). Whoever removes an entry completes it: the worker then finds nothing.
    pub(crate) fn finish_pended(&self, key: PortKey) {
        loop {
            let entry = self.pending.lock().remove_waiting(key);
            let Some(entry) = entry else { break };
            let decoded = self.decode(&entry.blob, entry.received_at);
            let sum = Some(self.digest_of(&entry.blob, &decoded));
            let status = self.apply_restore((key, entry.instance), entry.blob.len(), sum, decoded);
            Self::complete(entry.completion, status);
        }
    }

    /// Decodes a blob (no lock held), placing its flows in a table with the configuration
    /// every port of this driver has (`Driver::port_config`: a restore's port has it unless a
    /// merge of its shards raised its bound, and then the apply places them again), their ages
    /// counted from `received` (the callback's instant): the time the restore waited for the
    /// work item ages them.
    fn decode(&self, blob: &[u8], received: vsflow_core::Tick) -> Restorable {
        if blob.is_empty() {
            return Restorable::Degraded(DegradedReason::Empty, None, None);
        }
        let cfg = DecodeConfig {
            expected_provider: Some(keys::provider_core()),
            unknown_major: self.config.unknown_major,
            max_len: MAX_BLOB_LEN,
            digest_key: self.digest_key(),
            ..DecodeConfig::default()
        };
        // Flows idle past their timeout at the receipt are left out here; those that pass it
        // while the restore waits are removed by the apply, before the window merges (no
        // clock read here: the work item reads it once it has claimed the restore).
        let placement =
            StageConfig { table: self.port_config().table, base: received, now: received };
        match codec::decode_staged(blob, &cfg, &placement) {
            Ok(DecodedStaged::State(port, flows)) => Restorable::State(port, flows),
            Ok(DecodedStaged::UnsupportedMajor { major, minor }) => Restorable::Degraded(
                DegradedReason::UnknownMajor,
                Some(CalloutError::Decode(DecodeError::UnsupportedMajor { major, minor })),
                None,
            ),
            Ok(DecodedStaged::NoState { reason }) => {
                self.log(
                    LogLevel::Error,
                    format_args!("runtime state from a source without state (reason {reason})"),
                );
                Restorable::Degraded(DegradedReason::NoState, None, None)
            }
            Err(e) => {
                let reason = match e {
                    DecodeError::UnsupportedMajor { .. } => DegradedReason::UnknownMajor,
                    DecodeError::ProviderMismatch => DegradedReason::Foreign,
                    DecodeError::OutOfMemory => DegradedReason::OutOfMemory,
                    _ => DegradedReason::Damaged,
                };
                // Damage may have spared the policy: a 1.2 blob checks it on its own. A blob
                // this host had no memory to decode is intact: its policy stands (review s7
                // F6, faults: it was lost with the flows).
                let salvaged =
                    matches!(reason, DegradedReason::Damaged | DegradedReason::OutOfMemory)
                        .then(|| codec::salvage_policy(blob, &cfg))
                        .flatten();
                Restorable::Degraded(reason, Some(CalloutError::Decode(e)), salvaged)
            }
        }
    }

    // ---- 3. Apply -----------------------------------------------------------------------

    /// The key of the digest that identifies a blob: per boot, random (derived from the boot
    /// seed for this purpose, `vsflow_core::keys`), so nobody can build a second blob that
    /// passes for the first.
    fn digest_key(&self) -> [u64; 2] {
        use vsflow_core::keys::{Purpose, derive128};
        derive128(self.services.hash_seed(), Purpose::BlobDigest)
    }

    /// A blob's keyed digest (with its length, what identifies a blob already applied).
    fn digest(&self, blob: &[u8]) -> u64 {
        codec::blob_digest(self.digest_key(), blob)
    }

    /// [`Self::digest`] of the blob `decoded` came from: a decoded state carries it already
    /// (the decoder computed it under the same key, [`Self::decode`]), so a blob of 60 KB is not
    /// hashed twice; a degraded one is hashed here.
    fn digest_of(&self, blob: &[u8], decoded: &Restorable) -> u64 {
        match decoded {
            Restorable::State(state, _) if state.digest != 0 => state.digest,
            _ => self.digest(blob),
        }
    }

    /// Applies a decode result to the port of `target` under the port's lock only (the map's
    /// is held just to take a reference on the port); returns the status to report and traces
    /// the outcome.
    ///
    /// `target` is the port's key and the instance that had it when the restore was received;
    /// `bytes` is the blob's length, `sum` its keyed digest (`None` for a blob refused unread).
    ///
    /// The port is found by its key, so it may be another instance: the one the restore was
    /// for was deleted after the work item claimed the restore (a delete cancels only what the
    /// work item has not claimed) and a port created with the same id since, maybe another
    /// VM's. That port is left as it is: never the old VM's flows or policy, and nothing of its
    /// own touched (its restore window, fingerprints, policy: another VM migrating in awaits
    /// its own restore); the restore is counted (`restores_empty`) and traced as degraded
    /// ([`DegradedReason::PortReplaced`]). The notification succeeds whatever
    /// `FailBadRestores` says: the blob is not bad, and its port is gone.
    fn apply_restore(
        &self,
        (key, instance): Target,
        bytes: usize,
        sum: Option<u64>,
        decoded: Restorable,
    ) -> NTSTATUS {
        let now = self.now();
        let Some(slot) = self.port_ref(|_| Some(key)).filter(|slot| !slot.is_removed()) else {
            self.restore_into_nothing(key.port, bytes);
            return STATUS_SUCCESS;
        };
        if instance != Some(slot.instance) {
            // Nothing of the old port concerns this one: it is left exactly as it is (its own
            // restore window, armed fingerprints and policy: it may be another VM migrating in,
            // whose own restore is still to come; review s5, R5-5). Counted and traced as a
            // degraded restore; the notification succeeds whatever `FailBadRestores` says (the
            // blob is not bad, and its port is gone).
            self.log(
                LogLevel::Warning,
                format_args!(
                    "port {}: restore received for a port since deleted; port '{}' has its id now \
                     and is left as it is",
                    key.port, slot.identity
                ),
            );
            self.count(Counter::RestoresEmpty);
            let replaced = RestoreOutcome::Degraded(DegradedReason::PortReplaced);
            self.trace_restore(key.port, bytes, (0, 0), replaced, STATUS_SUCCESS);
            return STATUS_SUCCESS;
        }
        let mut st = slot.lock_whole(now);
        self.apply_locked(&mut st, key, bytes, sum, decoded, now)
    }

    fn apply_locked(
        &self,
        st: &mut PortState,
        key: PortKey,
        bytes: usize,
        sum: Option<u64>,
        decoded: Restorable,
        now: vsflow_core::Tick,
    ) -> NTSTATUS {
        if sum.is_some_and(|sum| st.last_restore == Some((sum, bytes))) {
            // The same blob again (same keyed digest and length): nothing changes.
            st.port.cancel_restore();
            st.window_deadline = vsflow_core::Tick::MAX;
            self.trace_restore(key.port, bytes, (0, 0), RestoreOutcome::Repeated, STATUS_SUCCESS);
            return STATUS_SUCCESS;
        }
        match decoded {
            Restorable::State(state, staged) => {
                if state.identity != *st.port.identity() {
                    self.count(Counter::IdentityMismatches);
                    self.log(
                        LogLevel::Warning,
                        format_args!(
                            "port {}: blob saved for port '{}', restoring into '{}'",
                            key.port,
                            state.identity,
                            st.port.identity()
                        ),
                    );
                }
                let config = self.config.apply_config();
                match codec::apply_staged(&mut st.port, &state, staged, now, &config) {
                    Ok(report) => {
                        if report.rules_lost {
                            self.log(
                                LogLevel::Error,
                                format_args!(
                                    "port {}: restore: no memory for the blob's allow rules: \
                                     none installed (closed to what they admitted)",
                                    key.port
                                ),
                            );
                        }
                        st.window_deadline = vsflow_core::Tick::MAX;
                        st.last_restore = sum.map(|sum| (sum, bytes));
                        let outcome = if report.repeated {
                            RestoreOutcome::Repeated
                        } else {
                            self.count(Counter::RestoresApplied);
                            RestoreOutcome::Applied
                        };
                        self.trace_restore(
                            key.port,
                            bytes,
                            (report.restored, report.fingerprints),
                            outcome,
                            STATUS_SUCCESS,
                        );
                        STATUS_SUCCESS
                    }
                    Err(e) => {
                        let reason = if matches!(
                            e,
                            codec::ApplyError::Core(vsflow_core::Error::OutOfMemory)
                        ) {
                            DegradedReason::OutOfMemory
                        } else {
                            DegradedReason::Damaged
                        };
                        // The blob was intact: its policy stands even though its flows could
                        // not be applied.
                        let carried = Some(codec::carried_policy(&state));
                        self.degrade(st, key, (bytes, sum), reason, Some(e.into()), carried)
                    }
                }
            }
            Restorable::Degraded(reason, error, salvaged) => {
                let carried = salvaged.as_ref().map(SalvagedPolicy::carried);
                self.degrade(st, key, (bytes, sum), reason, error, carried)
            }
        }
    }

    /// A degraded restore: no flows carried, and policy never lowered (the operator's settings,
    /// else the policy the blob still carries, else Enforce: `codec::apply_degraded`).
    /// Counted and traced at error level. The restore succeeds, unless the opt-in policy
    /// (`FailBadRestores`) fails it: the port is closed the same way first.
    fn degrade(
        &self,
        st: &mut PortState,
        key: PortKey,
        (bytes, sum): (usize, Option<u64>),
        reason: DegradedReason,
        error: Option<CalloutError>,
        carried: Option<vsflow_core::port::CarriedPolicy<'_>>,
    ) -> NTSTATUS {
        codec::apply_degraded(&mut st.port, carried);
        let now = self.now();
        // No connection was carried: loose pickup (if on) is for exactly this (issue 16).
        st.port.open_loose_window(now);
        // Nor was any connection's opener: for the pickup window the VM's mid-stream segment of
        // a connection the port does not know may be a peer's, so its return traffic is judged
        // by the rules (never made the VM's: a later rule removal must cut it).
        let window = self.config.apply_config().pickup_window;
        st.port.judge_uncarried_until(if window == 0 { 0 } else { now.saturating_add(window) });
        st.window_deadline = vsflow_core::Tick::MAX;
        // Lenient: an unknown major is a rolling downgrade, expected, not a bad blob.
        let expected = reason == DegradedReason::UnknownMajor
            && self.config.unknown_major == codec::UnknownMajor::Lenient;
        if self.config.fail_bad_restores && !expected {
            let status = error.map_or(fwps_sys::STATUS_DATA_ERROR, CalloutError::to_ntstatus);
            self.count(Counter::RestoresFailed);
            self.log(
                LogLevel::Error,
                format_args!(
                    "port {}: restore failed ({reason:?}): policy FailBadRestores",
                    key.port
                ),
            );
            self.trace_restore(key.port, bytes, (0, 0), RestoreOutcome::Failed, status);
            return status;
        }
        st.last_restore = sum.map(|sum| (sum, bytes));
        self.count(Counter::RestoresEmpty);
        self.log(
            LogLevel::Error,
            format_args!(
                "port {}: runtime state unusable ({reason:?}): no flows restored, policy kept or \
                 closed",
                key.port
            ),
        );
        self.trace_restore(
            key.port,
            bytes,
            (0, 0),
            RestoreOutcome::Degraded(reason),
            STATUS_SUCCESS,
        );
        STATUS_SUCCESS
    }

    fn trace_restore(
        &self,
        port: u32,
        bytes: usize,
        (flows, fingerprints): (u32, u32),
        outcome: RestoreOutcome,
        status: NTSTATUS,
    ) {
        self.trace(&TraceEvent::Restore {
            port,
            bytes: u32::try_from(bytes).unwrap_or(u32::MAX),
            flows_restored: flows,
            fingerprints,
            outcome,
            status,
        });
    }

    // ---- 4. Complete --------------------------------------------------------------------

    /// Completes a pended notification. Only whoever removed its entry from the pending set
    /// calls this, once.
    pub(crate) fn complete(completion: usize, status: NTSTATUS) {
        // SAFETY: `completion` is the context WFP passed to a callback that returned
        // STATUS_PENDING; it was removed from the pending set under its lock, so this is its
        // only completion, and `status` is never STATUS_PENDING.
        unsafe {
            fwps_sys::FwpsvSwitchNotifyComplete0(
                completion as *mut c_void,
                status,
                0,
                core::ptr::null_mut(),
            );
        };
    }

    // ---- Cancel paths -------------------------------------------------------------------

    /// Completes every pended notification of the ports matching `pred` as cancelled.
    fn cancel_where(&self, mut pred: impl FnMut(&PortKey) -> bool) {
        loop {
            let entry = self.pending.lock().remove_where(&mut pred);
            let Some(entry) = entry else { break };
            self.count(Counter::RestoresCancelled);
            self.trace_restore(
                entry.key.port,
                entry.blob.len(),
                (0, 0),
                RestoreOutcome::Cancelled,
                STATUS_CANCELLED,
            );
            Self::complete(entry.completion, STATUS_CANCELLED);
        }
    }

    /// A port is deleted (or replaced by another port with the same id).
    pub(crate) fn cancel_port(&self, key: PortKey) {
        self.cancel_where(|k| *k == key);
    }

    /// A switch is deleted.
    pub(crate) fn cancel_switch(&self, switch: u32) {
        self.cancel_where(|k| k.switch == switch);
    }

    /// The driver stops (`PASSIVE_LEVEL`): nothing more is pended (restores from now on
    /// complete synchronously), and every restore still pended is finished here — decoded,
    /// applied, completed with its status — never cancelled: `OID_SWITCH_NIC_RESTORE` fails the
    /// VM's whole restore if an extension fails it. Entries the work item has taken it
    /// completes itself; the caller flushes it next.
    pub(crate) fn finish_all(&self) {
        self.pending.lock().close();
        self.run_deferred();
    }
}
