//! The driver object: configuration, kernel services, the port map, the notifications in
//! flight, counters and WFP registration.
//!
//! Locks, and their order (a lock is only ever taken after the ones above it):
//! 1. the port map: the current processor's reader/writer spin lock shared (readers), or every
//!    processor's exclusively, in order (switch and port create/delete, stop): [`crate::ports`].
//!    Held only to find a port and take a reference on it, or to judge one packet;
//! 2. one port's spin lock ([`crate::ports::PortSlot::state`]);
//! 3. `pending` (spin; leaf), `reg` (spin; leaf).
//!
//! Packets take 1 shared (on a cache line only their processor writes) and 2. Saves, restores,
//! sweeps and IOCTLs take 1 only to take a port reference, then 2 alone. Everything works at
//! `IRQL <= DISPATCH_LEVEL`; only `stop` and the work item wait, at `PASSIVE_LEVEL`.

use alloc::vec::Vec;
use core::ffi::c_void;
use core::fmt;
use core::sync::atomic::{AtomicU8, AtomicU64, Ordering};

use fwps_sys::FWPS_VSWITCH_EVENT_DISPATCH_TABLE0;
use vsflow_core::PortIdentity;
use vsflow_core::codec;
use vsflow_core::flow::FlowBudget;

use crate::budget::HostBudget;
use crate::config::{DriverConfig, flow_memory_budget};
use crate::error::CalloutError;
use crate::keys;
use crate::pending::PendingSet;
use crate::percpu::{Counter, PerCpuCounters};
use crate::ports::{Index, PortKey, PortMap, PortRef};
use crate::registration::{Phase, Registration};
use crate::services::{KernelServices, LogLevel};
use crate::sync::SpinMutex;
use crate::trace::TraceEvent;
use crate::vswitch;

/// Where vsflow-core's clock starts: one day after the kernel's interrupt time (0 at boot).
///
/// A restored flow's times are rebased from ages (`last seen = now - idle time`); on a host
/// that booted seconds ago, a flow idle for minutes would need a time before 0. Starting the
/// core's clock past the longest idle timeout (2 h for established TCP) keeps every restorable
/// idle time representable, so a carried flow expires exactly when it would have on the
/// source, however recently the destination booted.
pub const CLOCK_EPOCH: vsflow_core::Tick = vsflow_core::time::secs(86_400);

/// Why a save sends the no-state blob (its reason byte, `codec::format::no_state`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum NoState {
    /// The port is not one vsflow tracks.
    Untracked = codec::format::no_state::UNTRACKED,
    /// Encoding failed (out of memory).
    EncodeFailed = codec::format::no_state::ENCODE_FAILED,
    /// The driver is stopping, or the port's restore is being applied right now.
    Unavailable = codec::format::no_state::UNAVAILABLE,
}

/// Driver-wide counters (summed over processors and ports when read).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DriverStats {
    /// Classify calls.
    pub classify_calls: u64,
    /// Packets of port 0 (the default port): trusted, never filtered.
    pub trusted_port_packets: u64,
    /// Packets of ports (or switches) vsflow does not track (permitted).
    pub unknown_port_packets: u64,
    /// Classify calls whose values were not of the expected types (permitted).
    pub malformed_values: u64,
    /// Runtime-state saves answered.
    pub saves: u64,
    /// Saves of a port vsflow does not track, or whose encode failed: a minimal empty blob.
    pub saves_empty: u64,
    /// Restores completed synchronously.
    pub restores_sync: u64,
    /// Restores pended.
    pub restores_pended: u64,
    /// Restores applied.
    pub restores_applied: u64,
    /// Restores degraded to an empty port (empty, damaged, foreign, unknown-major blob).
    pub restores_empty: u64,
    /// Restores failed (only under the opt-in `FailBadRestores` policy, or out of memory).
    pub restores_failed: u64,
    /// Pended restores completed as cancelled (port or switch deleted, driver stopping).
    pub restores_cancelled: u64,
    /// Restores whose blob named another port identity than the target port's.
    pub identity_mismatches: u64,
    /// Restores for a port vsflow does not know (accepted, nothing applied).
    pub restores_unknown_port: u64,
    /// Filter-engine reorder notifications.
    pub reorder_events: u64,
    /// Registry values refused at load (out of range or not a `REG_DWORD`; their defaults
    /// apply, each traced `SettingRefused`).
    pub settings_refused: u64,
    /// Restores refused because the blob was longer than the format's maximum (also counted
    /// in `restores_empty`: the port was degraded).
    pub restores_oversized: u64,
    /// New flows refused because the host-wide flow-memory budget (`FlowMemoryMB`) had no
    /// room for their table's growth step (traced `FlowMemoryRefused`).
    pub flows_refused_budget: u64,
    /// Bytes of flow tables, of save memory kept for a port's next save and of the save
    /// buffers handed to WFP, charged to the budget now.
    pub flow_memory_bytes: u64,
    /// Saves whose working memory the flow-memory budget had no room to keep for the port's
    /// next save: freed as the save ended (the blob carried every connection; the next save
    /// allocates again). Traced in `FlowMemoryRefused`.
    pub saves_unkept: u64,
}

impl DriverStats {
    /// The counters in `vsflow_proto::response::DRIVER_COUNTER_NAMES` order.
    #[must_use]
    pub const fn to_array(&self) -> [u64; 20] {
        [
            self.classify_calls,
            self.trusted_port_packets,
            self.unknown_port_packets,
            self.malformed_values,
            self.saves,
            self.saves_empty,
            self.restores_sync,
            self.restores_pended,
            self.restores_applied,
            self.restores_empty,
            self.restores_failed,
            self.restores_cancelled,
            self.identity_mismatches,
            self.restores_unknown_port,
            self.reorder_events,
            self.settings_refused,
            self.restores_oversized,
            self.flows_refused_budget,
            self.flow_memory_bytes,
            self.saves_unkept,
        ]
    }
}

/// A summary of every tracked port's flows (diagnostics; one port lock at a time).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowTotals {
    /// Ports tracked.
    pub ports: usize,
    /// Flows in their tables.
    pub flows: usize,
    /// Of which established.
    pub established: usize,
    /// Packets blocked on them.
    pub packets_blocked: u64,
    /// Ports in their restore window.
    pub restoring: usize,
    /// Flows of the fullest port.
    pub largest_port: usize,
    /// Ports whose flows are spread over shards (one port on several processors).
    pub sharded: usize,
    /// Flows held in processors' shards (not in their port's home shard).
    pub in_shards: usize,
    /// Every port's flow table passed its invariant check.
    pub consistent: bool,
}

/// The driver. Create with [`Driver::try_new`], then [`Driver::start`]; the address must stay
/// fixed until [`Driver::stop`] returns (WFP holds pointers to it).
pub struct Driver<S: KernelServices> {
    pub(crate) services: S,
    pub(crate) config: DriverConfig,
    pub(crate) device_object: usize,
    pub(crate) ports: PortMap<S>,
    pub(crate) pending: SpinMutex<S::Lock, PendingSet>,
    pub(crate) counters: PerCpuCounters,
    /// vSwitch callbacks and IOCTLs in flight (drained at stop).
    pub(crate) callbacks: S::Rundown,
    pub(crate) reg: SpinMutex<S::Lock, Registration>,
    /// Last filter-engine reorder report: 0 none, 1 out of position, 2 in position.
    pub(crate) reorder_position: AtomicU8,
    /// The last port instance handed out (`PortSlot::instance`).
    pub(crate) port_instances: AtomicU64,
    /// The no-state blobs saved for a port vsflow has no state for, by reason
    /// ([`NoState`]): they carry no policy (format 1.2).
    pub(crate) no_state_blobs: [Vec<u8>; 3],
    pub(crate) dispatch: FWPS_VSWITCH_EVENT_DISPATCH_TABLE0,
    /// The host-wide flow-memory budget every port's table charges. Declared last: dropped
    /// after the ports.
    pub(crate) budget: HostBudget,
}

impl<S: KernelServices> fmt::Debug for Driver<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Driver").field("config", &self.config).finish_non_exhaustive()
    }
}

impl<S: KernelServices> Driver<S> {
    /// Creates the driver object with the configuration read through
    /// [`KernelServices::config_value`] (what `DriverEntry` does; values out of range are
    /// refused there, with their defaults: [`DriverConfig::from_services`]).
    ///
    /// # Errors
    /// Out of memory.
    pub fn try_from_services(
        services: S,
        device_object: *mut c_void,
    ) -> Result<Self, CalloutError> {
        let (config, refused) = DriverConfig::read(&services);
        let driver = Self::try_new(services, config, device_object)?;
        driver.counters.add(0, Counter::SettingsRefused, u64::from(refused));
        Ok(driver)
    }

    /// Creates the driver object with an explicit configuration (nothing registered yet).
    ///
    /// # Errors
    /// Invalid configuration, out of memory.
    pub fn try_new(
        services: S,
        config: DriverConfig,
        device_object: *mut c_void,
    ) -> Result<Self, CalloutError> {
        config.validate()?;
        let ports = PortMap::try_new(&services)?;
        let counters = PerCpuCounters::try_new(services.processor_count())?;
        let callbacks = services.new_rundown()?;
        let pending = SpinMutex::new(services.new_lock(), PendingSet::default());
        let reg = SpinMutex::new(services.new_lock(), Registration::default());
        let limit = flow_memory_budget(config.flow_memory_mb, services.physical_memory_bytes());
        let budget = HostBudget::try_new(limit)?;
        let no_state_blobs = [
            Self::no_state_blob(NoState::Untracked)?,
            Self::no_state_blob(NoState::EncodeFailed)?,
            Self::no_state_blob(NoState::Unavailable)?,
        ];
        Ok(Self {
            services,
            config,
            device_object: device_object as usize,
            ports,
            pending,
            counters,
            callbacks,
            reg,
            reorder_position: AtomicU8::new(0),
            port_instances: AtomicU64::new(0),
            no_state_blobs,
            dispatch: vswitch::dispatch_table::<S>(),
            budget,
        })
    }

    /// The blob saved for a port vsflow has no state for (format 1.2's no-state blob): no
    /// policy, no flows, the reason. The destination keeps or closes its own policy: the source
    /// never sends a policy it does not have (WFP's save output is `_Outptr_result_buffer_`:
    /// never NULL with success, so something must be sent).
    fn no_state_blob(reason: NoState) -> Result<Vec<u8>, CalloutError> {
        let identity = PortIdentity::try_from_utf16(&[])?;
        let mut out = Vec::new();
        codec::encode_no_state(&identity, reason as u8, keys::provider_core(), &mut out)?;
        Ok(out)
    }

    /// The no-state blob for `reason`.
    pub(crate) fn no_state(&self, reason: NoState) -> &[u8] {
        match reason {
            NoState::Untracked => &self.no_state_blobs[0],
            NoState::EncodeFailed => &self.no_state_blobs[1],
            NoState::Unavailable => &self.no_state_blobs[2],
        }
    }

    /// The configuration.
    #[must_use]
    pub const fn config(&self) -> &DriverConfig {
        &self.config
    }

    /// The kernel services.
    #[must_use]
    pub const fn services(&self) -> &S {
        &self.services
    }

    /// The registration phase.
    #[must_use]
    pub fn phase(&self) -> Phase {
        self.reg.lock().phase
    }

    /// Driver-wide counters: per-processor counters plus every port's classify count.
    #[must_use]
    pub fn stats(&self) -> DriverStats {
        let c = &self.counters;
        let port_calls = self
            .each_port()
            .iter()
            .map(|p| p.classify_calls(&mut p.state.lock(), false))
            .fold(0u64, u64::wrapping_add);
        // A packet passed by counts one event, which is its classify call too
        // (crate::percpu::Counter).
        let (trusted, unknown, malformed) = (
            c.sum(Counter::TrustedPortPackets),
            c.sum(Counter::UnknownPortPackets),
            c.sum(Counter::MalformedValues),
        );
        DriverStats {
            classify_calls: c
                .sum(Counter::ClassifyCalls)
                .wrapping_add(trusted)
                .wrapping_add(unknown)
                .wrapping_add(malformed)
                .wrapping_add(port_calls),
            trusted_port_packets: trusted,
            unknown_port_packets: unknown.wrapping_add(c.sum(Counter::UnjudgedPortPackets)),
            malformed_values: malformed,
            saves: c.sum(Counter::Saves),
            saves_empty: c.sum(Counter::SavesEmpty),
            restores_sync: c.sum(Counter::RestoresSync),
            restores_pended: c.sum(Counter::RestoresPended),
            restores_applied: c.sum(Counter::RestoresApplied),
            restores_empty: c.sum(Counter::RestoresEmpty),
            restores_failed: c.sum(Counter::RestoresFailed),
            restores_cancelled: c.sum(Counter::RestoresCancelled),
            identity_mismatches: c.sum(Counter::IdentityMismatches),
            restores_unknown_port: c.sum(Counter::RestoresUnknownPort),
            reorder_events: c.sum(Counter::ReorderEvents),
            settings_refused: c.sum(Counter::SettingsRefused),
            restores_oversized: c.sum(Counter::RestoresOversized),
            flows_refused_budget: self.budget.get().refused(),
            flow_memory_bytes: self.budget.get().used() as u64,
            saves_unkept: self.budget.get().saves_unkept(),
        }
    }

    /// Runs `f` on the port map under this processor's shared lock (see [`crate::ports`]);
    /// `None` once stopped. `f` must be short: a lookup, or one packet's classify.
    pub(crate) fn read_ports<R>(&self, f: impl FnOnce(&Index<S::Lock>) -> R) -> Option<R> {
        self.ports.read(self.services.current_processor(), f)
    }

    /// A reference to the port `find` picks (the map lock is held only for the lookup).
    pub(crate) fn port_ref(
        &self,
        find: impl FnOnce(&Index<S::Lock>) -> Option<PortKey>,
    ) -> Option<PortRef<S::Lock>> {
        self.ports.get(self.services.current_processor(), find)
    }

    /// A reference to every port, for a walk after the map lock is released (empty once
    /// stopped, or if the list cannot be allocated: a diagnostic walk then sees no port).
    pub(crate) fn each_port(&self) -> Vec<PortRef<S::Lock>> {
        self.ports.snapshot(self.services.current_processor()).unwrap_or_default()
    }

    /// Zeroes the driver-wide counters.
    pub(crate) fn clear_stats(&self) {
        self.counters.clear();
        for p in self.each_port() {
            let _ = p.classify_calls(&mut p.state.lock(), true);
        }
    }

    /// Counts one event on the current processor's line.
    #[inline]
    pub(crate) fn count(&self, c: Counter) {
        self.counters.add(self.services.current_processor(), c, 1);
    }

    /// The last filter-engine reorder report: whether vsflow's filter engine is in its
    /// required position in the extension stack.
    #[must_use]
    pub fn reorder_in_position(&self) -> Option<bool> {
        match self.reorder_position.load(Ordering::Relaxed) {
            1 => Some(false),
            2 => Some(true),
            _ => None,
        }
    }

    /// Switches known.
    #[must_use]
    pub fn switch_count(&self) -> usize {
        self.read_ports(Index::switch_count).unwrap_or(0)
    }

    /// Ports tracked.
    #[must_use]
    pub fn port_count(&self) -> usize {
        self.read_ports(Index::len).unwrap_or(0)
    }

    /// Restore notifications pended and not yet completed.
    #[must_use]
    pub fn pending_count(&self) -> usize {
        self.pending.lock().len()
    }

    /// Flow totals over every port (one port lock at a time; diagnostics).
    #[must_use]
    pub fn flow_totals(&self) -> FlowTotals {
        let mut t = FlowTotals { consistent: true, ..FlowTotals::default() };
        for p in self.each_port() {
            let st = p.state.lock();
            t.ports += 1;
            t.restoring += usize::from(st.port.is_restoring());
            t.sharded += usize::from(p.is_sharded());
            let mut flows = 0;
            p.each_shard(&st, |port| {
                let table = port.table();
                flows += table.len();
                t.established += table
                    .iter()
                    .filter(|(_, r)| r.state == vsflow_core::flow::FlowState::Established)
                    .count();
                t.packets_blocked += port.counters().packets_blocked;
                t.consistent &= table.check_invariants().is_ok();
            });
            t.in_shards += flows - st.port.table().len();
            t.flows += flows;
            t.largest_port = t.largest_port.max(flows);
        }
        t
    }

    /// The clock vsflow-core runs on: the kernel's interrupt time plus [`CLOCK_EPOCH`].
    #[inline]
    pub(crate) fn now(&self) -> vsflow_core::Tick {
        self.services.now().saturating_add(CLOCK_EPOCH)
    }

    pub(crate) fn log(&self, level: LogLevel, args: fmt::Arguments<'_>) {
        self.services.log(level, args);
    }

    pub(crate) fn trace(&self, event: &TraceEvent) {
        self.services.trace(event);
    }

    /// The host-wide flow-memory budget.
    #[must_use]
    pub fn flow_budget(&self) -> &FlowBudget {
        self.budget.get()
    }

    /// Removes idle flows from every port, up to `budget` per port and shard (periodic timer),
    /// splits a port that has nothing of a migration open into its shards ([`crate::ports`]),
    /// frees the save memory of ports not saved for a minute
    /// ([`crate::ports::ENCODER_KEEP`]) and readies the encoder of every port past the cap
    /// for its next save (`vsflow_core::codec::Encoder::prepare`). Takes one port's locks at a
    /// time, never the map's.
    /// Reports what the flow-memory budget refused since the last tick, new flows and saves'
    /// kept memory (`FlowMemoryRefused`: one event per tick at most, not one per flow or save).
    pub fn expire_idle(&self, budget: usize) -> usize {
        let now = self.now();
        let flows = self.budget.get();
        let unreported = flows.take_unreported();
        if !unreported.is_empty() {
            self.trace(&TraceEvent::FlowMemoryRefused {
                refused: u32::try_from(unreported.refused).unwrap_or(u32::MAX),
                saves_unkept: u32::try_from(unreported.saves_unkept).unwrap_or(u32::MAX),
                used: flows.used() as u64,
                limit: flows.limit() as u64,
            });
        }
        let cap = self.config.blob_cap;
        self.each_port().iter().map(|p| p.sweep(now, budget, cap)).sum()
    }
}

impl<S: KernelServices> Drop for Driver<S> {
    fn drop(&mut self) {
        // Dropping a started driver without stop would leave WFP holding dangling pointers.
        if matches!(self.phase(), Phase::Running | Phase::WaitingForBfe) {
            self.stop();
        }
    }
}
