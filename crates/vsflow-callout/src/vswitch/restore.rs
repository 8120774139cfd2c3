//! Runtime-state restore: a blob from the source host becomes a port's state here.
//!
//! Pending mode (default): copy the blob into driver memory, record the notification, ask for
//! deferred work, return `STATUS_PENDING`; the worker decodes at `PASSIVE_LEVEL`, applies all
//! or nothing, and calls `FwpsvSwitchNotifyComplete0` exactly once (see [`crate::pending`]).
//! Synchronous mode, or when no work item can be queued: decode and apply in the callback.
//! A damaged blob, or an unknown major version in strict mode, fails the restore (Hyper-V then
//! fails the VM's restore); nothing is applied.

use alloc::vec::Vec;
use core::ffi::c_void;

use fwps_sys::{
    NDIS_SWITCH_PARAMETERS, NTSTATUS, STATUS_INVALID_PARAMETER, STATUS_PENDING, STATUS_SUCCESS,
};

use super::{driver, identity};
use crate::config::RestoreMode;
use crate::driver::Driver;
use crate::error::CalloutError;
use crate::services::{KernelServices, LogLevel};
use crate::state::PortKey;

impl<S: KernelServices> Driver<S> {
    /// Handles a restore notification; returns `STATUS_PENDING` only after recording
    /// `completion` for exactly-once completion.
    pub fn on_restore(
        &self,
        completion: *mut c_void,
        switch: &NDIS_SWITCH_PARAMETERS,
        port_id: u32,
        blob: &[u8],
    ) -> NTSTATUS {
        let Some(name) = identity(&switch.SwitchName) else { return STATUS_INVALID_PARAMETER };
        let key = {
            let st = self.state.lock();
            st.switch_id(name.as_utf16()).map(|switch| PortKey { switch, port: port_id })
        };
        let Some(key) = key else {
            self.state.lock().stats.restores_unknown_port += 1;
            self.log(
                LogLevel::Warning,
                format_args!("restore for port {port_id} of an unknown switch ignored"),
            );
            return STATUS_SUCCESS;
        };
        if self.config.restore_mode == RestoreMode::Pending && !completion.is_null() {
            match self.pend_restore(completion, key, blob) {
                Ok(()) => return STATUS_PENDING,
                Err(e) => self.log(
                    LogLevel::Warning,
                    format_args!(
                        "port {port_id}: restore not pended ({e}); restoring synchronously"
                    ),
                ),
            }
        }
        let decoded = self.decode(blob);
        let mut st = self.state.lock();
        st.stats.restores_sync += 1;
        self.finish_restore(&mut st, key, decoded)
    }

    fn pend_restore(
        &self,
        completion: *mut c_void,
        key: PortKey,
        blob: &[u8],
    ) -> Result<(), CalloutError> {
        let mut copy = Vec::new();
        copy.try_reserve_exact(blob.len())?;
        copy.extend_from_slice(blob);
        let id = {
            let mut st = self.state.lock();
            if st.stopping {
                return Err(CalloutError::InvalidState);
            }
            let id = st.pending.push(completion as usize, key, copy)?;
            st.stats.restores_pended += 1;
            id
        };
        if let Err(e) = self.services.request_deferred_work() {
            // Take it back; if it is already gone, someone completed it: still report pending.
            let mut st = self.state.lock();
            if st.pending.remove(id).is_some() {
                st.stats.restores_pended -= 1;
                return Err(e);
            }
        }
        Ok(())
    }
}

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
    // SAFETY: WFP's pointer, valid for the call.
    let Some(sw) = (unsafe { v_switch.as_ref() }) else { return STATUS_INVALID_PARAMETER };
    let blob: &[u8] = if runtime_state.is_null() || runtime_state_length == 0 {
        &[]
    } else {
        // SAFETY: WFP's buffer of `runtime_state_length` bytes, valid for the call; copied
        // before the callback returns.
        unsafe { core::slice::from_raw_parts(runtime_state.cast::<u8>(), runtime_state_length) }
    };
    d.on_restore(completion_context, sw, port_id, blob)
}
