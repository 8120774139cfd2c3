//! Runtime-state save: a port's state becomes a blob on the source host of a live migration.
//!
//! Synchronous, always: how a *pended* save would hand its buffer back is not documented
//! (`FwpsvSwitchNotifyComplete0` has no buffer argument). The driver keeps ownership of the
//! buffer it returns (who frees it is not documented either): one buffer per port, reused by
//! the next save of that port, freed with the port or at stop. Both are listed in
//! docs/WINDOWS-VERIFICATION.md (verify on Windows: items 1-3).
//!
//! The encode runs under the saved port's own lock only (the port map's lock is held just to
//! take a reference on the port): other ports' packets never wait for it. The output is `_Outptr_result_buffer_`: success always comes with a valid blob. A port
//! vsflow does not track (or whose encode fails) saves the driver's minimal blob (no flows,
//! no rules), so the destination restores an empty port.

use core::ffi::c_void;

use fwps_sys::{NDIS_SWITCH_PARAMETERS, NTSTATUS, STATUS_INVALID_PARAMETER, STATUS_SUCCESS};
use vsflow_core::codec::{self, EncodeConfig};

use super::{driver, identity};
use crate::driver::Driver;
use crate::keys;
use crate::percpu::Counter;
use crate::ports::PortKey;
use crate::services::{KernelServices, LogLevel};
use crate::trace::TraceEvent;

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
    let Some(d) = (unsafe { driver::<S>(notify_context) }) else {
        return STATUS_INVALID_PARAMETER;
    };
    // SAFETY: WFP's pointer, valid for the call.
    let sw = unsafe { v_switch.as_ref() };
    let (data, len) = match (d.enter_callback(), sw) {
        (Some(_in_flight), Some(sw)) => d.on_save(sw, port_id),
        _ => (d.empty_blob.as_ptr(), d.empty_blob.len()),
    };
    // SAFETY: non-null out-pointers from WFP.
    unsafe { runtime_state.write(data.cast_mut().cast()) };
    // SAFETY: as above.
    unsafe { runtime_state_length.write(len) };
    STATUS_SUCCESS
}

impl<S: KernelServices> Driver<S> {
    /// Encodes the port's state into its save buffer; returns the buffer's address and length,
    /// valid until the next save of the port, its deletion or stop. Never empty: a port vsflow
    /// does not track, or an encode that fails, returns the minimal blob.
    pub fn on_save(&self, switch: &NDIS_SWITCH_PARAMETERS, port_id: u32) -> (*const u8, usize) {
        self.count(Counter::Saves);
        let now = self.now();
        let cfg = EncodeConfig { provider: keys::provider_core(), cap: self.config.blob_cap };
        let name = identity(&switch.SwitchName);
        // The map lock only to take a reference; the encode runs under the port's lock alone.
        let slot = name.and_then(|name| {
            self.port_ref(|ix| {
                Some(PortKey { switch: ix.switch_id(name.as_utf16())?, port: port_id })
            })
        });
        let saved = slot.map(|slot| {
            let mut st = slot.state.lock();
            let mut buffer = core::mem::take(&mut st.save_buffer);
            let result = codec::encode(&st.port, now, &cfg, &mut buffer);
            let out = match result {
                Ok(summary) => {
                    st.port.note_saved(summary.flows_dropped, summary.flows_fingerprinted);
                    Ok((
                        buffer.as_ptr(),
                        buffer.len(),
                        summary.flows_written,
                        summary.flows_dropped,
                        summary.flows_fingerprinted,
                    ))
                }
                Err(e) => {
                    buffer.clear();
                    Err(e)
                }
            };
            // The buffer moves back into the port: its heap block (what WFP reads) stays put.
            st.save_buffer = buffer;
            out
        });
        match saved {
            Some(Ok((p, len, written, dropped, fingerprinted))) => {
                self.trace(&TraceEvent::Save {
                    port: port_id,
                    bytes: u32::try_from(len).unwrap_or(u32::MAX),
                    flows_saved: written,
                    flows_dropped: dropped,
                    flows_fingerprinted: fingerprinted,
                    status: STATUS_SUCCESS,
                });
                (p, len)
            }
            other => {
                if let Some(Err(e)) = other {
                    self.log(
                        LogLevel::Error,
                        format_args!("port {port_id}: runtime state not saved: {e}"),
                    );
                }
                self.count(Counter::SavesEmpty);
                self.trace(&TraceEvent::Save {
                    port: port_id,
                    bytes: u32::try_from(self.empty_blob.len()).unwrap_or(u32::MAX),
                    flows_saved: 0,
                    flows_dropped: 0,
                    flows_fingerprinted: 0,
                    status: STATUS_SUCCESS,
                });
                (self.empty_blob.as_ptr(), self.empty_blob.len())
            }
        }
    }
}
