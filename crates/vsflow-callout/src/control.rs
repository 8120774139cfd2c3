//! The control device's IOCTL handling, below the WDK seam.
//!
//! The driver's dispatch routine passes the code and the system buffer's input and output views
//! here and completes the request with the returned status and `Information`.
//!
//! Every request is validated completely by `vsflow_proto::Request::decode` before anything
//! is touched. Mapping: unknown code -> `STATUS_INVALID_DEVICE_REQUEST`; malformed ->
//! `STATUS_INVALID_PARAMETER` (protocol version -> `STATUS_REVISION_MISMATCH`); output too
//! small -> `STATUS_BUFFER_TOO_SMALL` with the needed size in `Information`; unknown port ->
//! `STATUS_NOT_FOUND`. Runs at `PASSIVE_LEVEL`.

use alloc::vec::Vec;

use fwps_sys::{
    NTSTATUS, STATUS_BUFFER_TOO_SMALL, STATUS_INSUFFICIENT_RESOURCES,
    STATUS_INVALID_DEVICE_REQUEST, STATUS_INVALID_DEVICE_STATE, STATUS_INVALID_PARAMETER,
    STATUS_NOT_FOUND, STATUS_REVISION_MISMATCH, STATUS_SUCCESS,
};
use vsflow_core::codec::{SavedFlow, UnknownMajor, format};
use vsflow_core::{AllowRule, Error as CoreError};
use vsflow_proto::request::{PortRef, Request};
use vsflow_proto::response::{self, ConfigInfo, PortInfo, VersionInfo};
use vsflow_proto::{PROTOCOL_VERSION, ProtoError};

use crate::config::RestoreMode;
use crate::driver::Driver;
use crate::error::CalloutError;
use crate::ports::{PortKey, PortState};
use crate::services::KernelServices;

/// How an IOCTL completes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IoctlOutcome {
    /// The request's status.
    pub status: NTSTATUS,
    /// `IoStatus.Information`: bytes written, or bytes needed with `STATUS_BUFFER_TOO_SMALL`.
    pub information: usize,
}

impl IoctlOutcome {
    const fn ok(len: usize) -> Self {
        Self { status: STATUS_SUCCESS, information: len }
    }

    const fn fail(status: NTSTATUS) -> Self {
        Self { status, information: 0 }
    }
}

fn proto_error(e: ProtoError) -> IoctlOutcome {
    match e {
        ProtoError::UnknownIoctl(_) => IoctlOutcome::fail(STATUS_INVALID_DEVICE_REQUEST),
        ProtoError::UnsupportedVersion(_) => IoctlOutcome::fail(STATUS_REVISION_MISMATCH),
        ProtoError::BufferTooSmall { needed } => {
            IoctlOutcome { status: STATUS_BUFFER_TOO_SMALL, information: needed }
        }
        ProtoError::Truncated { .. }
        | ProtoError::TrailingBytes
        | ProtoError::BadMagic
        | ProtoError::BadFlags(_)
        | ProtoError::InvalidField(_) => IoctlOutcome::fail(STATUS_INVALID_PARAMETER),
    }
}

fn written(r: Result<usize, ProtoError>) -> IoctlOutcome {
    r.map_or_else(proto_error, IoctlOutcome::ok)
}

const fn key(p: PortRef) -> PortKey {
    PortKey { switch: p.switch_id, port: p.port_id }
}

fn parse_version() -> [u16; 3] {
    let mut out = [0u16; 3];
    for (slot, part) in out.iter_mut().zip(env!("CARGO_PKG_VERSION").split('.')) {
        *slot = part.parse().unwrap_or(0);
    }
    out
}

impl<S: KernelServices> Driver<S> {
    /// Handles one IOCTL of the control device.
    pub fn handle_ioctl(&self, code: u32, input: &[u8], output: &mut [u8]) -> IoctlOutcome {
        let request = match Request::decode(code, input) {
            Ok(r) => r,
            Err(e) => return proto_error(e),
        };
        match request {
            Request::GetVersion => {
                let v = VersionInfo {
                    protocol: PROTOCOL_VERSION,
                    driver: parse_version(),
                    format: [format::MAJOR, format::MINOR],
                };
                written(v.encode(output))
            }
            Request::GetConfig => {
                let c = &self.config;
                let info = ConfigInfo {
                    restore_mode: u8::from(c.restore_mode == RestoreMode::Synchronous),
                    unknown_major: u8::from(c.unknown_major == UnknownMajor::Lenient),
                    default_mode: c.default_mode,
                    flows_per_port: c.flows_per_port,
                    blob_cap: u32::try_from(c.blob_cap).unwrap_or(u32::MAX),
                };
                written(info.encode(output))
            }
            Request::ListPorts => {
                // A reference to each port, then one port lock at a time; never a host-wide one.
                let ports = match self.ports.snapshot(self.services.current_processor()) {
                    Ok(ports) => ports,
                    Err(CalloutError::InvalidState) => {
                        return IoctlOutcome::fail(STATUS_INVALID_DEVICE_STATE);
                    }
                    Err(_) => return IoctlOutcome::fail(STATUS_INSUFFICIENT_RESOURCES),
                };
                let listed = ports.iter().map(|slot| {
                    let e = slot.state.lock();
                    let flows = slot.flow_count(&e);
                    PortInfo {
                        port: PortRef { switch_id: slot.key.switch, port_id: slot.key.port },
                        flow_count: u32::try_from(flows).unwrap_or(u32::MAX),
                        mode: e.port.mode(),
                        nic_connected: e.nic_connected,
                        restoring: e.port.is_restoring(),
                        rules_version: e.port.rules().version(),
                        name: *e.port.identity(),
                    }
                });
                written(response::encode_ports(listed, output))
            }
            Request::GetFlows { port, start, max } => self.get_flows(port, start, max, output),
            Request::GetCounters { port: None } => {
                written(response::encode_counters(&self.stats().to_array(), output))
            }
            Request::GetCounters { port: Some(p) } => {
                // Every shard's counters summed, one shard lock at a time: the port stays split.
                let Some(slot) = self.port_ref(|_| Some(key(p))) else {
                    return IoctlOutcome::fail(STATUS_NOT_FOUND);
                };
                let counters = slot.counters(&slot.state.lock());
                // Every counter, extended ones included (`PortCounters::ALL_NAMES` order): the
                // answer is count-prefixed and only ever appended to, so an older reader takes
                // the counters it knows and skips the rest (no protocol version change).
                written(response::encode_counters(&counters.to_all_array(), output))
            }
            Request::GetRules { port } => self.with_port(port, |e| {
                let rules = e.port.rules();
                written(response::encode_rules(rules.version(), rules.rules(), output))
            }),
            // Requests that change state check the output size first: a request that fails
            // changes nothing.
            Request::ClearCounters { port } => {
                if let Some(fail) = too_small(output, response::encode_empty) {
                    return fail;
                }
                match port {
                    None => {
                        self.clear_stats();
                        let now = self.now();
                        for slot in self.each_port() {
                            slot.lock_whole(now).port.clear_counters();
                        }
                        written(response::encode_empty(output))
                    }
                    Some(p) => self.with_port(p, |e| {
                        e.port.clear_counters();
                        written(response::encode_empty(output))
                    }),
                }
            }
            Request::SetPortMode { port, mode } => {
                if let Some(fail) = too_small(output, response::encode_empty) {
                    return fail;
                }
                self.with_port(port, |e| {
                    // In the restore window the operator's choice wins over the blob's.
                    e.port.set_mode(mode);
                    written(response::encode_empty(output))
                })
            }
            Request::ReplaceRules { port, expected_version, rules } => {
                if let Some(fail) = too_small(output, |o| response::encode_rules_version(0, o)) {
                    return fail;
                }
                self.replace_rules(port, expected_version, rules.iter(), rules.len(), output)
            }
        }
    }

    /// Runs `f` on a port under its own lock, the port whole (a sharded port merged:
    /// `PortSlot::lock_whole`); `STATUS_NOT_FOUND` if there is no such port.
    fn with_port(
        &self,
        port: PortRef,
        f: impl FnOnce(&mut PortState) -> IoctlOutcome,
    ) -> IoctlOutcome {
        // The map lock only to take a reference; the request runs under the port's locks.
        let now = self.now();
        self.port_ref(|_| Some(key(port)))
            .map_or(IoctlOutcome::fail(STATUS_NOT_FOUND), |slot| f(&mut slot.lock_whole(now)))
    }
}

/// `Some(STATUS_BUFFER_TOO_SMALL)` when `output` cannot hold the response `encode` writes
/// (measured on a scratch buffer, before anything changes).
fn too_small(
    output: &[u8],
    encode: impl FnOnce(&mut [u8]) -> Result<usize, ProtoError>,
) -> Option<IoctlOutcome> {
    let mut scratch = [0u8; 64];
    match encode(&mut scratch) {
        Ok(needed) if needed <= output.len() => None,
        Ok(needed) => Some(IoctlOutcome { status: STATUS_BUFFER_TOO_SMALL, information: needed }),
        Err(e) => Some(proto_error(e)),
    }
}

impl<S: KernelServices> Driver<S> {
    fn get_flows(&self, port: PortRef, start: u32, max: u32, output: &mut [u8]) -> IoctlOutcome {
        let now = self.now();
        // One page under the port's lock: the cursor is a position in the port's table, so a
        // page walks only its own flows, never the table before it.
        self.with_port(port, |entry| {
            // The sweep leaves the port whole for a while, so the next page's cursor points
            // into the same table (ports::LISTING_HOLD; review s4, L2).
            entry.last_listed = now;
            let table = entry.port.table();
            let total = u32::try_from(table.len()).unwrap_or(u32::MAX);
            let remaining = table.iter_from(start).take(max as usize + 1).count();
            let (count, needed) = response::flows_that_fit(output.len(), remaining, max as usize);
            if count == 0 && remaining > 0 && max > 0 {
                return IoctlOutcome { status: STATUS_BUFFER_TOO_SMALL, information: needed };
            }
            // The cursor after the page: the position after its last flow, or the end.
            let next = table
                .iter_from(start)
                .nth(count)
                .map_or(response::FLOWS_END, |(position, _, _)| position);
            let flows = table.iter_from(start).map(|(_, k, r)| SavedFlow::from_record(*k, r, now));
            written(response::encode_flows(total, start, count, next, flows, output))
        })
    }

    fn replace_rules(
        &self,
        port: PortRef,
        expected_version: u32,
        rules: impl Iterator<Item = AllowRule>,
        len: usize,
        output: &mut [u8],
    ) -> IoctlOutcome {
        // Build the new list outside the lock (it allocates).
        let mut list: Vec<AllowRule> = Vec::new();
        if list.try_reserve_exact(len).is_err() {
            return IoctlOutcome::fail(STATUS_INSUFFICIENT_RESOURCES);
        }
        list.extend(rules);
        // Compare and replace under the port's lock: an edit based on stale rules is refused.
        self.with_port(port, |e| {
            if e.port.rules().version() != expected_version {
                return IoctlOutcome::fail(response::STATUS_RULES_CHANGED);
            }
            match e.port.replace_rules(&list) {
                Ok(version) => written(response::encode_rules_version(version, output)),
                Err(CoreError::OutOfMemory) => IoctlOutcome::fail(STATUS_INSUFFICIENT_RESOURCES),
                Err(_) => IoctlOutcome::fail(STATUS_INVALID_PARAMETER),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use crate::driver::DriverStats;

    #[test]
    fn driver_counters_match_the_protocol_names() {
        assert_eq!(
            DriverStats::default().to_array().len(),
            vsflow_proto::response::DRIVER_COUNTER_NAMES.len()
        );
        let s = DriverStats {
            classify_calls: 1,
            reorder_events: 15,
            settings_refused: 16,
            ..DriverStats::default()
        };
        let a = s.to_array();
        assert_eq!((a[0], a[14], a[15]), (1, 15, 16));
        assert_eq!(vsflow_proto::response::DRIVER_COUNTER_NAMES[14], "reorder_events");
        assert_eq!(vsflow_proto::response::DRIVER_COUNTER_NAMES[15], "settings_refused");
    }
}
