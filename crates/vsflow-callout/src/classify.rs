//! Where a packet goes: the classify function WFP calls at the four vSwitch transport layers.
//!
//! Ingress layers see a packet entering the switch from its source port: if that port is a VM
//! port vsflow tracks, the packet is the VM's *outbound* traffic. Egress layers see a packet
//! leaving the switch to its destination port: for a tracked VM port it is *inbound*. Port 0
//! (the default port) is trusted and never filtered; ports vsflow does not track are never
//! blocked. Packets are never modified.

use core::ffi::c_void;
use core::ptr;

use fwps_sys as sys;
use fwps_sys::{
    FWPS_CLASSIFY_OUT0, FWPS_FILTER3, FWPS_INCOMING_METADATA_VALUES0, FWPS_INCOMING_VALUES0, GUID,
    NTSTATUS, STATUS_SUCCESS,
};
use vsflow_core::{Direction, PacketMeta, TcpFlags, Verdict, protocol};

use crate::driver::Driver;
use crate::frame::{FRAME_PREFIX, FRAME_PREFIX_V4, tcp_flags};
use crate::services::KernelServices;
use crate::state::PortKey;

/// The vSwitch fields of one classify call, read from WFP's values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Classified {
    /// The VM port's id on this switch.
    pub port_id: u32,
    /// The packet as vsflow-core sees it.
    pub meta: PacketMeta,
}

/// Why classify permitted without consulting a port.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bypass {
    /// Port 0: trusted.
    TrustedPort,
    /// The port id is not in the metadata.
    NoPortId,
    /// The values are not of the types the layer documents.
    Malformed,
    /// Not one of vsflow's layers.
    UnknownLayer,
}

/// Reads one incoming value, if present.
///
/// # Safety
/// `values` is WFP's valid `FWPS_INCOMING_VALUES0` for this call.
unsafe fn value(values: &FWPS_INCOMING_VALUES0, index: usize) -> Option<sys::FWP_VALUE0> {
    if values.incomingValue.is_null() || index >= values.valueCount as usize {
        return None;
    }
    // SAFETY: `index < valueCount` and the array has `valueCount` elements (caller's contract).
    let v = unsafe { values.incomingValue.add(index) };
    // SAFETY: `v` points inside the array.
    Some(unsafe { (*v).value })
}

/// Reads the 5-tuple and the VM's port id from the values of one classify call.
///
/// # Errors
/// The [`Bypass`] reason when the packet is not one vsflow classifies.
///
/// # Safety
/// `values` and `meta` are the valid pointers WFP passed to classify.
pub unsafe fn read_values(
    values: &FWPS_INCOMING_VALUES0,
    meta: &FWPS_INCOMING_METADATA_VALUES0,
) -> Result<Classified, Bypass> {
    let (ingress, v6) = match values.layerId {
        sys::FWPS_LAYER_INGRESS_VSWITCH_TRANSPORT_V4 => (true, false),
        sys::FWPS_LAYER_INGRESS_VSWITCH_TRANSPORT_V6 => (true, true),
        sys::FWPS_LAYER_EGRESS_VSWITCH_TRANSPORT_V4 => (false, false),
        sys::FWPS_LAYER_EGRESS_VSWITCH_TRANSPORT_V6 => (false, true),
        _ => return Err(Bypass::UnknownLayer),
    };
    let (bit, port_id, direction) = if ingress {
        (
            sys::FWPS_L2_METADATA_FIELD_VSWITCH_SOURCE_PORT_ID,
            meta.vSwitchSourcePortId,
            Direction::Outbound,
        )
    } else {
        (
            sys::FWPS_L2_METADATA_FIELD_VSWITCH_DESTINATION_PORT_ID,
            meta.vSwitchDestinationPortId,
            Direction::Inbound,
        )
    };
    if meta.currentL2MetadataValues & bit == 0 {
        return Err(Bypass::NoPortId);
    }
    if port_id == 0 {
        return Err(Bypass::TrustedPort);
    }
    // SAFETY: caller's contract on `values`.
    let src = unsafe { value(values, sys::FIELD_IP_SOURCE_ADDRESS) }.ok_or(Bypass::Malformed)?;
    // SAFETY: as above.
    let dst =
        unsafe { value(values, sys::FIELD_IP_DESTINATION_ADDRESS) }.ok_or(Bypass::Malformed)?;
    // SAFETY: as above.
    let proto = unsafe { value(values, sys::FIELD_IP_PROTOCOL) }.ok_or(Bypass::Malformed)?;
    // SAFETY: as above.
    let sport = unsafe { value(values, sys::FIELD_IP_SOURCE_PORT) };
    // SAFETY: as above.
    let dport = unsafe { value(values, sys::FIELD_IP_DESTINATION_PORT) };
    if proto.r#type != sys::FWP_UINT8 {
        return Err(Bypass::Malformed);
    }
    // SAFETY: the type tag says `uint8` is the active arm.
    let protocol = unsafe { proto.u.uint8 };
    let port = |v: Option<sys::FWP_VALUE0>| match v {
        // SAFETY: the type tag says `uint16` is the active arm.
        Some(v) if v.r#type == sys::FWP_UINT16 => unsafe { v.u.uint16 },
        _ => 0,
    };
    let (src_addr, dst_addr) = if v6 {
        // SAFETY: caller's contract; `addr16` checks the type tag and the pointer.
        (
            unsafe { addr16(&src) }.ok_or(Bypass::Malformed)?,
            unsafe { addr16(&dst) }.ok_or(Bypass::Malformed)?,
        )
    } else {
        (addr4(&src).ok_or(Bypass::Malformed)?, addr4(&dst).ok_or(Bypass::Malformed)?)
    };
    Ok(Classified {
        port_id,
        meta: PacketMeta {
            direction,
            family: if v6 { vsflow_core::IpFamily::V6 } else { vsflow_core::IpFamily::V4 },
            protocol,
            src_addr,
            dst_addr,
            src_port: port(sport),
            dst_port: port(dport),
            tcp_flags: TcpFlags(0),
            length: 0,
        },
    })
}

fn addr4(v: &sys::FWP_VALUE0) -> Option<[u8; 16]> {
    if v.r#type != sys::FWP_UINT32 {
        return None;
    }
    // SAFETY: the type tag says `uint32` is the active arm. WFP gives IPv4 addresses in host
    // byte order (verify on Windows, item 10).
    let a = unsafe { v.u.uint32 };
    Some(vsflow_core::packet::v4(a.to_be_bytes()))
}

/// # Safety
/// `v` is a value WFP passed; a `FWP_BYTE_ARRAY16_TYPE` value points to 16 valid bytes.
unsafe fn addr16(v: &sys::FWP_VALUE0) -> Option<[u8; 16]> {
    if v.r#type != sys::FWP_BYTE_ARRAY16_TYPE {
        return None;
    }
    // SAFETY: the type tag says `byteArray16` is the active arm.
    let p = unsafe { v.u.byteArray16 };
    if p.is_null() {
        return None;
    }
    // SAFETY: non-null, and WFP's contract for this type (caller's contract).
    Some(unsafe { ptr::read_unaligned(p) }.byteArray16)
}

/// The switch a classify call belongs to, from the `VSWITCH_ID` value (assumed: the switch
/// name as a UTF-16 byte blob; verify on Windows, item 9). With one switch on the host, the
/// value is not consulted.
///
/// # Safety
/// As [`read_values`].
unsafe fn switch_name_units(values: &FWPS_INCOMING_VALUES0, out: &mut [u16; 257]) -> Option<usize> {
    // SAFETY: caller's contract.
    let v = unsafe { value(values, sys::FIELD_VSWITCH_ID) }?;
    if v.r#type != sys::FWP_BYTE_BLOB_TYPE {
        return None;
    }
    // SAFETY: the type tag says `byteBlob` is the active arm.
    let blob = unsafe { v.u.byteBlob };
    if blob.is_null() {
        return None;
    }
    // SAFETY: non-null blob from WFP.
    let blob = unsafe { ptr::read_unaligned(blob) };
    if blob.data.is_null() {
        return None;
    }
    let bytes = (blob.size as usize).min(2 * out.len());
    // SAFETY: WFP's blob has `size` readable bytes; we read at most that many.
    let data = unsafe { core::slice::from_raw_parts(blob.data, bytes) };
    let mut n = 0;
    for (dst, pair) in out.iter_mut().zip(data.chunks_exact(2)) {
        let u = u16::from_le_bytes([
            pair.first().copied().unwrap_or(0),
            pair.get(1).copied().unwrap_or(0),
        ]);
        if u == 0 {
            break;
        }
        *dst = u;
        n += 1;
    }
    Some(n)
}

impl<S: KernelServices> Driver<S> {
    /// Classifies one packet. Returns the verdict, or `None` for "not ours: leave the action
    /// to others" (permit).
    ///
    /// # Safety
    /// The pointers are those WFP passed to classify, valid for the call.
    pub unsafe fn classify(
        &self,
        values: &FWPS_INCOMING_VALUES0,
        meta: &FWPS_INCOMING_METADATA_VALUES0,
        layer_data: *mut c_void,
    ) -> Option<Verdict> {
        // SAFETY: caller's contract.
        let read = unsafe { read_values(values, meta) };
        let mut c = match read {
            Ok(c) => c,
            Err(why) => {
                let mut st = self.state.lock();
                st.stats.classify_calls += 1;
                match why {
                    Bypass::TrustedPort => st.stats.trusted_port_packets += 1,
                    Bypass::Malformed | Bypass::UnknownLayer => st.stats.malformed_values += 1,
                    Bypass::NoPortId => st.stats.unknown_port_packets += 1,
                }
                return None;
            }
        };
        let mut storage = [0u8; FRAME_PREFIX];
        // Only TCP needs header bytes (for its flags); IPv4 headers end within 96 bytes.
        let want = match (c.meta.protocol, c.meta.family) {
            (protocol::TCP, vsflow_core::IpFamily::V4) => FRAME_PREFIX_V4,
            (protocol::TCP, vsflow_core::IpFamily::V6) => FRAME_PREFIX,
            _ => 0,
        };
        let storage = storage.get_mut(..want).unwrap_or(&mut []);
        // SAFETY: caller's contract on `layer_data` and `meta`; `storage` is local to this call.
        if let Some(frame) = unsafe { self.services.read_frame(layer_data, meta, storage) } {
            c.meta.length = frame.frame_len;
            if c.meta.protocol == protocol::TCP {
                c.meta.tcp_flags = TcpFlags(tcp_flags(frame.head).unwrap_or(0));
            }
        }
        let now = self.services.now();
        let mut st = self.state.lock();
        st.stats.classify_calls += 1;
        let switch = st.single_switch().or_else(|| {
            let mut name = [0u16; 257];
            // SAFETY: caller's contract.
            let n = unsafe { switch_name_units(values, &mut name) };
            n.and_then(|n| st.switch_id(name.get(..n).unwrap_or(&[])))
        });
        let key = switch.map(|switch| PortKey { switch, port: c.port_id });
        let verdict = key.and_then(|k| st.ports.get_mut(&k)).map(|e| e.port.classify(&c.meta, now));
        if verdict.is_none() {
            st.stats.unknown_port_packets += 1;
        }
        verdict
    }
}

/// `classifyFn` of vsflow's callouts (`FWPS_CALLOUT_CLASSIFY_FN3`).
///
/// # Safety
/// Called by WFP with valid pointers; `filter->context` is the driver pointer vsflow put into
/// the filter's `rawContext`.
pub unsafe extern "system" fn classify_fn<S: KernelServices>(
    in_fixed_values: *const FWPS_INCOMING_VALUES0,
    in_meta_values: *const FWPS_INCOMING_METADATA_VALUES0,
    layer_data: *mut c_void,
    _classify_context: *const c_void,
    filter: *const FWPS_FILTER3,
    _flow_context: u64,
    classify_out: *mut FWPS_CLASSIFY_OUT0,
) {
    if classify_out.is_null()
        || filter.is_null()
        || in_fixed_values.is_null()
        || in_meta_values.is_null()
    {
        return;
    }
    // SAFETY: non-null and valid for the call (WFP's contract).
    let out = unsafe { &mut *classify_out };
    if out.rights & sys::FWPS_RIGHT_ACTION_WRITE == 0 {
        // A higher-weight filter decided already.
        return;
    }
    // SAFETY: as above.
    let context = unsafe { (*filter).context };
    let verdict = if context == 0 {
        None
    } else {
        // SAFETY: `context` is the address of the running driver (set when the filter was
        // added; the filter is deleted before the driver goes away).
        let driver = unsafe { &*(context as *const Driver<S>) };
        // SAFETY: non-null, valid for the call (WFP's contract).
        let values = unsafe { &*in_fixed_values };
        // SAFETY: as above.
        let meta = unsafe { &*in_meta_values };
        // SAFETY: WFP's pointers, valid for the call.
        unsafe { driver.classify(values, meta, layer_data) }
    };
    match verdict {
        Some(Verdict::Block(_)) => {
            out.actionType = sys::FWP_ACTION_BLOCK;
            out.rights &= !sys::FWPS_RIGHT_ACTION_WRITE;
        }
        Some(Verdict::Permit) | None => out.actionType = sys::FWP_ACTION_PERMIT,
    }
}

/// `notifyFn` of vsflow's callouts: accepts every filter add and delete.
///
/// # Safety
/// Called by WFP.
pub unsafe extern "system" fn notify_fn(
    _notify_type: sys::FWPS_CALLOUT_NOTIFY_TYPE,
    _filter_key: *const GUID,
    _filter: *mut FWPS_FILTER3,
) -> NTSTATUS {
    STATUS_SUCCESS
}
