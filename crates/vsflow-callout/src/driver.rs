//! The driver object: configuration, kernel services, switch state, WFP registration, and the
//! deferred worker that finishes pended restores.

use core::ffi::c_void;
use core::fmt;

use fwps_sys::{FWPS_VSWITCH_EVENT_DISPATCH_TABLE0, NTSTATUS, STATUS_CANCELLED, STATUS_SUCCESS};
use vsflow_core::codec::{self, DecodeConfig, Decoded};

use crate::config::DriverConfig;
use crate::error::CalloutError;
use crate::keys;
use crate::registration::Registration;
use crate::services::{KernelServices, LogLevel};
use crate::state::{PortKey, SwitchState};
use crate::sync::SpinMutex;
use crate::vswitch;

/// Lifecycle of the driver's WFP registration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Created, `start` not called.
    Created,
    /// Waiting for the base filtering engine to report RUNNING.
    WaitingForBfe,
    /// Callouts, objects and vSwitch subscription in place.
    Running,
    /// Stopped (terminal).
    Stopped,
}

/// Driver-wide counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DriverStats {
    /// Classify calls.
    pub classify_calls: u64,
    /// Packets of port 0 (the default port): trusted, never filtered.
    pub trusted_port_packets: u64,
    /// Packets of ports vsflow does not track (permitted).
    pub unknown_port_packets: u64,
    /// Classify calls whose values were not of the expected types (permitted).
    pub malformed_values: u64,
    /// Runtime-state saves answered.
    pub saves: u64,
    /// Saves that produced no blob (unknown port or out of memory).
    pub saves_empty: u64,
    /// Restores completed synchronously.
    pub restores_sync: u64,
    /// Restores pended.
    pub restores_pended: u64,
    /// Restores applied.
    pub restores_applied: u64,
    /// Restores of an unknown major version accepted as empty (lenient).
    pub restores_empty: u64,
    /// Restores rejected (damaged blob, unknown major when strict, out of memory).
    pub restores_failed: u64,
    /// Pended restores completed as cancelled (port or switch deleted, driver stopping).
    pub restores_cancelled: u64,
    /// Restores whose blob named another port identity than the target port's.
    pub identity_mismatches: u64,
    /// Restores for a port vsflow does not know (accepted, nothing applied).
    pub restores_unknown_port: u64,
    /// Filter-engine reorder notifications.
    pub reorder_events: u64,
}

/// The driver. Create with [`Driver::try_new`], then [`Driver::start`]; the address must stay
/// fixed until [`Driver::stop`] returns (WFP holds pointers to it).
pub struct Driver<S: KernelServices> {
    pub(crate) services: S,
    pub(crate) config: DriverConfig,
    pub(crate) device_object: usize,
    pub(crate) state: SpinMutex<S::Lock, SwitchState>,
    pub(crate) reg: SpinMutex<S::Lock, Registration>,
    pub(crate) dispatch: FWPS_VSWITCH_EVENT_DISPATCH_TABLE0,
}

impl<S: KernelServices> fmt::Debug for Driver<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Driver").field("config", &self.config).finish_non_exhaustive()
    }
}

impl<S: KernelServices> Driver<S> {
    /// Creates the driver object with the configuration read through
    /// [`KernelServices::config_value`] (what `DriverEntry` does).
    ///
    /// # Errors
    /// Invalid configuration values.
    pub fn try_from_services(
        services: S,
        device_object: *mut c_void,
    ) -> Result<Self, CalloutError> {
        let config = DriverConfig::from_services(&services)?;
        Self::try_new(services, config, device_object)
    }

    /// Creates the driver object with an explicit configuration (nothing registered yet).
    ///
    /// # Errors
    /// Invalid configuration.
    pub fn try_new(
        services: S,
        config: DriverConfig,
        device_object: *mut c_void,
    ) -> Result<Self, CalloutError> {
        config.validate()?;
        let state = SpinMutex::new(services.new_lock(), SwitchState::new(services.hash_seed()));
        let reg = SpinMutex::new(services.new_lock(), Registration::default());
        Ok(Self {
            services,
            config,
            device_object: device_object as usize,
            state,
            reg,
            dispatch: vswitch::dispatch_table::<S>(),
        })
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

    /// Driver-wide counters.
    #[must_use]
    pub fn stats(&self) -> DriverStats {
        self.state.lock().stats
    }

    /// Runs `f` on the switch state under the lock (IOCTL handlers, diagnostics, tests).
    pub fn with_state<R>(&self, f: impl FnOnce(&mut SwitchState) -> R) -> R {
        f(&mut self.state.lock())
    }

    pub(crate) fn log(&self, level: LogLevel, args: fmt::Arguments<'_>) {
        self.services.log(level, args);
    }

    /// Finishes pended restores: decodes each blob at `PASSIVE_LEVEL` outside the lock, applies
    /// it, and completes the notification, unless the port went away meanwhile (then whoever
    /// removed it has completed it). Called by the driver's work item.
    pub fn run_deferred(&self) {
        loop {
            let job = self.state.lock().pending.take_next();
            let Some((id, key, blob)) = job else { break };
            let decoded = self.decode(&blob);
            let mut st = self.state.lock();
            let Some(entry) = st.pending.remove(id) else {
                // Cancelled while decoding: completed by the canceller.
                continue;
            };
            let status = self.finish_restore(&mut st, key, decoded);
            drop(st);
            Self::complete(entry.completion, status);
        }
    }

    pub(crate) fn decode(&self, blob: &[u8]) -> Result<Decoded, CalloutError> {
        let cfg = DecodeConfig {
            expected_provider: Some(keys::provider_core()),
            unknown_major: self.config.unknown_major,
            max_len: usize::from(u16::MAX),
        };
        codec::decode(blob, &cfg).map_err(CalloutError::from)
    }

    /// Applies a decode result to a port and returns the status to report. Called with the
    /// state lock held.
    pub(crate) fn finish_restore(
        &self,
        st: &mut SwitchState,
        key: PortKey,
        decoded: Result<Decoded, CalloutError>,
    ) -> NTSTATUS {
        let now = self.services.now();
        let result = match (decoded, st.ports.get_mut(&key)) {
            (Err(e), _) => Err(e),
            (Ok(_), None) => {
                st.stats.restores_unknown_port += 1;
                Ok(())
            }
            (Ok(Decoded::UnsupportedMajor { major, minor }), Some(entry)) => {
                codec::apply_empty(&mut entry.port);
                st.stats.restores_empty += 1;
                self.log(LogLevel::Warning, format_args!("port {}: runtime state format {major}.{minor} unreadable, restored empty (lenient)", key.port));
                Ok(())
            }
            (Ok(Decoded::State(state)), Some(entry)) => {
                // PortName is assumed durable across migration (verify on Windows: item 5); a
                // mismatch is logged and counted, never fatal.
                if state.identity != *entry.port.identity() {
                    st.stats.identity_mismatches += 1;
                    self.log(
                        LogLevel::Warning,
                        format_args!(
                            "port {}: blob saved for port '{}', restoring into '{}'",
                            key.port,
                            state.identity,
                            entry.port.identity()
                        ),
                    );
                }
                match codec::apply(&mut entry.port, &state, now) {
                    Ok(_) => {
                        entry.restoring = false;
                        st.stats.restores_applied += 1;
                        Ok(())
                    }
                    Err(e) => Err(CalloutError::from(e)),
                }
            }
        };
        match result {
            Ok(()) => STATUS_SUCCESS,
            Err(e) => {
                st.stats.restores_failed += 1;
                self.log(LogLevel::Error, format_args!("port {}: restore failed: {e}", key.port));
                e.to_ntstatus()
            }
        }
    }

    /// Completes every pended notification of the ports matching `pred` as cancelled.
    pub(crate) fn cancel_pending(&self, mut pred: impl FnMut(&PortKey) -> bool) {
        loop {
            let entry = {
                let mut st = self.state.lock();
                let e = st.pending.remove_where(&mut pred);
                if e.is_some() {
                    st.stats.restores_cancelled += 1;
                }
                e
            };
            let Some(entry) = entry else { break };
            Self::complete(entry.completion, STATUS_CANCELLED);
        }
    }

    pub(crate) fn complete(completion: usize, status: NTSTATUS) {
        // SAFETY: `completion` is the context WFP passed to a callback that returned
        // STATUS_PENDING; it was removed from the pending set under the lock, so this is its
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

    /// Removes idle flows from every port, up to `budget` per port (periodic timer).
    pub fn expire_idle(&self, budget: usize) -> usize {
        let now = self.services.now();
        let mut st = self.state.lock();
        st.ports.values_mut().map(|e| e.port.expire(now, budget)).sum()
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
