//! Runtime-state save: a port's state becomes a blob on the source host of a live migration.
//!
//! Synchronous, always: how a *pended* save would hand its buffer back is not documented
//! (`FwpsvSwitchNotifyComplete0` has no buffer argument). The driver keeps ownership of the
//! buffer it returns (who frees it is not documented either): one buffer per port, reused by
//! the next save of that port, freed with the port or at stop, and charged to the host's
//! flow-memory budget meanwhile ([`crate::save_buffer`]). Both are listed in
//! docs/WINDOWS-VERIFICATION.md (verify on Windows: items 1-3).
//!
//! The encode runs under the saved port's own lock only (the port map's lock is held just to
//! take a reference on the port): other ports' packets never wait for it. The output is `_Outptr_result_buffer_`: success always comes with a valid blob. A port
//! vsflow does not track, an encode that fails, a save while the driver stops, while the work
//! item holds the port's restore (decoding or applying it: the entry leaves the pending set
//! only once applied, so a restore that arrived after the window closed on its own is covered
//! too), or while the port is still in its restore window (checked under the port's lock) send
//! the no-state blob (format 1.2): the source never sends a policy it does not have, and the
//! destination keeps or closes its own. A restore of the port still pended (not yet taken by
//! the work item) is applied first, here: the VM's state is the port's only once it is (a
//! second migration before the work item ran carries it on).

use core::ffi::c_void;

use fwps_sys::{NDIS_SWITCH_PARAMETERS, NTSTATUS, STATUS_INVALID_PARAMETER, STATUS_SUCCESS};
use vsflow_core::codec::EncodeConfig;

use super::{driver, identity};
use crate::driver::{Driver, NoState};
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
    let (data, len) = if let (Some(_in_flight), Some(sw)) = (d.enter_callback(), sw) {
        d.on_save(sw, port_id)
    } else {
        // Stopping (or no switch parameters): no state to give.
        let blob = d.no_state(NoState::Unavailable);
        (blob.as_ptr(), blob.len())
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
        let cfg = EncodeConfig { provider: keys::provider_core(), cap: self.config.blob_cap };
        let name = identity(&switch.SwitchName);
        let key = name
            .and_then(|n| self.read_ports(|ix| ix.switch_id(n.as_utf16())).flatten())
            .map(|switch| PortKey { switch, port: port_id });
        // A restore of the port still pended: apply it first (its state is the VM's).
        if let Some(key) = key {
            self.finish_pended(key);
        }
        if key.is_some_and(|k| self.pending.lock().in_flight(k)) {
            // The work item is decoding or applying this port's restore right now: the port's
            // state is not the VM's yet, and its policy may be only this host's default.
            return self.save_no_state(port_id, NoState::Unavailable);
        }
        let now = self.now();
        // The map lock only to take a reference; the encode runs under the port's lock alone.
        let slot = key.and_then(|key| self.port_ref(|_| Some(key)));
        let saved = slot.map(|slot| {
            // The port whole: every one of its locks held, a split port's shards read in place
            // (the blob the port merged would give: `PortSlot::with_all_locks`).
            slot.with_all_locks(|st, shards| {
                if st.port.is_restoring() {
                    // Still in its restore window under the port's own lock: no restore has been
                    // applied (none arrived yet), so its mode is this host's default for new ports
                    // and its rules none, not the VM's. A restore the work item holds is in flight
                    // above until applied.
                    return Err(None);
                }
                let mut buffer = core::mem::take(&mut st.save_buffer);
                // The port's own encoder: its working memory is reused from the last save.
                // Into the spare the sweep readied, if the port grew since its last save
                // (crate::save_buffer): no allocation here.
                let result =
                    st.encoder.encode_split(&st.port, shards, now, &cfg, buffer.for_save());
                st.last_save = now;
                let out = match result {
                    Ok(summary) => {
                        st.port.note_saved(summary.flows_dropped, summary.flows_fingerprinted);
                        let (blob, len) = buffer.blob();
                        Ok((
                            blob,
                            len,
                            summary.flows_written,
                            summary.flows_dropped,
                            summary.flows_fingerprinted,
                        ))
                    }
                    Err(e) => {
                        buffer.bytes_mut().clear();
                        Err(Some(e))
                    }
                };
                // What the buffer holds is charged to the host's flow-memory budget (even past it:
                // WFP may read it after we return; crate::save_buffer).
                buffer.settle(self.budget.handle());
                // The buffer moves back into the port: its heap block (what WFP reads) stays put.
                st.save_buffer = buffer;
                out
            })
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
            Some(Err(Some(e))) => {
                self.log(
                    LogLevel::Error,
                    format_args!("port {port_id}: runtime state not saved: {e}"),
                );
                self.save_no_state(port_id, NoState::EncodeFailed)
            }
            Some(Err(None)) => {
                self.log(
                    LogLevel::Error,
                    format_args!("port {port_id}: saved before its restore was applied: no state"),
                );
                self.save_no_state(port_id, NoState::Unavailable)
            }
            None => self.save_no_state(port_id, NoState::Untracked),
        }
    }

    /// Answers a save with the no-state blob (counted `saves_empty`, traced).
    fn save_no_state(&self, port_id: u32, why: NoState) -> (*const u8, usize) {
        let blob = self.no_state(why);
        self.count(Counter::SavesEmpty);
        self.trace(&TraceEvent::Save {
            port: port_id,
            bytes: u32::try_from(blob.len()).unwrap_or(u32::MAX),
            flows_saved: 0,
            flows_dropped: 0,
            flows_fingerprinted: 0,
            status: STATUS_SUCCESS,
        });
        (blob.as_ptr(), blob.len())
    }
}
