//! Runtime-state save: a port's state becomes a blob on the source host of a live migration.
//!
//! Synchronous, always: how a *pended* save would hand its buffer back is not documented
//! (`FwpsvSwitchNotifyComplete0` has no buffer argument). The driver keeps ownership of the
//! buffer it returns (who frees it is not documented either): one buffer per port, reused by
//! the next save of that port, freed with the port or when the driver unsubscribes. Both are
//! listed in docs/WINDOWS-VERIFICATION.md (verify on Windows: items 1-3).

use core::ffi::c_void;
use core::ptr;

use fwps_sys::{NDIS_SWITCH_PARAMETERS, NTSTATUS, STATUS_INVALID_PARAMETER, STATUS_SUCCESS};
use vsflow_core::codec::{self, EncodeConfig};

use super::{driver, identity};
use crate::driver::Driver;
use crate::keys;
use crate::services::{KernelServices, LogLevel};
use crate::state::PortKey;

impl<S: KernelServices> Driver<S> {
    /// Encodes the port's state into its save buffer; returns the buffer's address and length,
    /// valid until the next save of the port, its deletion or unsubscribe. A port vsflow does
    /// not know, or an encode that fails, saves nothing (length 0): the migration proceeds and
    /// the destination starts that port empty.
    pub fn on_save(&self, switch: &NDIS_SWITCH_PARAMETERS, port_id: u32) -> (*const u8, usize) {
        let Some(name) = identity(&switch.SwitchName) else { return (ptr::null(), 0) };
        let now = self.services.now();
        let cfg = EncodeConfig { provider: keys::provider_core(), cap: self.config.blob_cap };
        let mut st = self.state.lock();
        st.stats.saves += 1;
        let key = st.switch_id(name.as_utf16()).map(|switch| PortKey { switch, port: port_id });
        let Some(entry) = key.and_then(|k| st.ports.get_mut(&k)) else {
            st.stats.saves_empty += 1;
            return (ptr::null(), 0);
        };
        let mut buffer = core::mem::take(&mut entry.save_buffer);
        let result = codec::encode(&entry.port, now, &cfg, &mut buffer);
        match result {
            Ok(summary) => {
                let c = &mut entry.port;
                c.note_saved(summary.flows_dropped);
                entry.save_buffer = buffer;
                (entry.save_buffer.as_ptr(), entry.save_buffer.len())
            }
            Err(e) => {
                entry.save_buffer = buffer;
                entry.save_buffer.clear();
                st.stats.saves_empty += 1;
                drop(st);
                self.log(
                    LogLevel::Error,
                    format_args!("port {port_id}: runtime state not saved: {e}"),
                );
                (ptr::null(), 0)
            }
        }
    }
}

/// `vSwitchRuntimeStateSaveNotifyFn`.
///
/// # Safety
/// Called by WFP with valid pointers.
pub unsafe extern "system" fn save_fn<S: KernelServices>(
    notify_context: *mut c_void,
    _completion_context: *mut c_void,
    _event_type: u32,
    v_switch: *const NDIS_SWITCH_PARAMETERS,
    port_id: u32,
    runtime_state: *mut *mut c_void,
    runtime_state_length: *mut usize,
) -> NTSTATUS {
    if runtime_state.is_null() || runtime_state_length.is_null() {
        return STATUS_INVALID_PARAMETER;
    }
    // SAFETY: WFP passes the subscription's context.
    let d = unsafe { driver::<S>(notify_context) };
    // SAFETY: WFP's pointer, valid for the call.
    let sw = unsafe { v_switch.as_ref() };
    let (data, len) = match (d, sw) {
        (Some(d), Some(sw)) => d.on_save(sw, port_id),
        _ => (ptr::null(), 0),
    };
    // SAFETY: non-null out-pointers from WFP.
    unsafe { runtime_state.write(data.cast_mut().cast()) };
    // SAFETY: as above.
    unsafe { runtime_state_length.write(len) };
    STATUS_SUCCESS
}
