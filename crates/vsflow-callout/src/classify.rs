//! Where a packet goes: the classify function WFP calls at the four vSwitch transport layers.
//!
//! Reading order: [`classify_fn`] (WFP's entry point: finds the driver without trusting
//! `filter->context`) -> [`Driver::classify`] (values, packet bytes, the port, the verdict) ->
//! the readers of WFP's values below.
//!
//! Ingress layers see a packet entering the switch from its source port: if that port is a VM
//! port vsflow tracks, the packet is the VM's *outbound* traffic. Egress layers see a packet
//! leaving the switch to its destination port: for a tracked VM port it is *inbound*. Port 0
//! (the default port) is trusted and never filtered; ports and switches vsflow does not track
//! are never blocked. Packets are never modified.
//!
//! Locks: none host-wide. The port is found in the port map under a shared hold of this
//! processor's reader/writer lock ([`crate::ports`]) and judged under its own spin lock;
//! driver-wide counters are per processor.

use core::ffi::c_void;
use core::ptr;

use fwps_sys as sys;
use fwps_sys::{
    FWPS_CLASSIFY_OUT0, FWPS_FILTER3, FWPS_INCOMING_METADATA_VALUES0, FWPS_INCOMING_VALUES0, GUID,
    NTSTATUS, STATUS_SUCCESS,
};
use vsflow_core::{
    Direction, Headers, Icmp, IpFamily, PacketMeta, TcpFlags, Verdict, icmp, protocol,
};

use crate::driver::Driver;
use crate::frame::{
    IP_PREFIX, headers_rewritable, is_ah_later_fragment, is_non_first_fragment,
    may_overlap_headers, plain_tcp_flags, tcp_flags,
};
use crate::instances;
use crate::keys::HOOKS;
use crate::percpu::Counter;
use crate::ports::NO_WAIT;
use crate::services::KernelServices;
use crate::trace::TraceEvent;

/// `classifyFn` of vsflow's callouts (`FWPS_CALLOUT_CLASSIFY_FN3`).
///
/// The driver is found by comparing `filter->context` and `filter->filterId` with the running
/// drivers and the filters they added ([`crate::instances`]); a filter vsflow did not add is
/// left alone (permit), and its context is never dereferenced.
///
/// # Safety
/// Called by WFP with valid pointers.
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
    // SAFETY: WFP's filter, valid for the call; only its plain fields are read.
    let f = unsafe { &*filter };
    let (context, filter_id) = (f.context, f.filterId);
    let verdict = match instances::driver_for_filter(context, filter_id) {
        None => None,
        Some(address) => {
            // SAFETY: `address` is a running driver (registered before its filters were
            // added, unregistered only after its callouts are unregistered and its classify
            // calls in flight drained), compared by value, never taken from the filter.
            let driver = unsafe { &*(address as *const Driver<S>) };
            // SAFETY: non-null, valid for the call (WFP's contract).
            let values = unsafe { &*in_fixed_values };
            // SAFETY: as above.
            let meta = unsafe { &*in_meta_values };
            // SAFETY: WFP's pointers, valid for the call.
            unsafe { driver.classify(values, meta, layer_data) }
        }
    };
    match verdict {
        Some(Verdict::Block(_)) => {
            out.actionType = sys::FWP_ACTION_BLOCK;
            out.rights &= !sys::FWPS_RIGHT_ACTION_WRITE;
        }
        Some(Verdict::Permit) | None => out.actionType = sys::FWP_ACTION_PERMIT,
    }
}

/// `notifyFn` of vsflow's callouts: accepts vsflow's own filters and every delete.
///
/// A filter anyone else adds that names a vsflow callout is refused (failing
/// `FWPS_CALLOUT_NOTIFY_ADD_FILTER` makes the filter add fail) and reported.
///
/// # Safety
/// Called by WFP with valid (or null) pointers.
pub unsafe extern "system" fn notify_fn<S: KernelServices>(
    notify_type: sys::FWPS_CALLOUT_NOTIFY_TYPE,
    filter_key: *const GUID,
    filter: *mut FWPS_FILTER3,
) -> NTSTATUS {
    if notify_type != sys::FWPS_CALLOUT_NOTIFY_ADD_FILTER {
        return STATUS_SUCCESS;
    }
    // SAFETY: WFP's pointers, valid (or null) for the call.
    let key = unsafe { filter_key.as_ref() };
    // SAFETY: as above.
    let f = unsafe { filter.as_ref() };
    let Some(f) = f else { return sys::STATUS_INVALID_PARAMETER };
    let ours = key.is_some_and(|k| HOOKS.iter().any(|h| h.filter == *k))
        && instances::is_driver(f.context);
    if ours {
        return STATUS_SUCCESS;
    }
    if let Some(address) = instances::driver_for_callout(f.action.calloutId) {
        // SAFETY: a registered driver (see `classify_fn`); notifyFn runs while its callouts
        // are registered.
        let driver = unsafe { &*(address as *const Driver<S>) };
        let layer_id = HOOKS
            .iter()
            .zip(0u16..)
            .find(|(_, i)| driver.callout_id(usize::from(*i)) == f.action.calloutId)
            .map_or(0, |(h, _)| h.layer_id);
        driver.trace(&TraceEvent::ForeignFilterRejected { filter_id: f.filterId, layer_id });
    }
    sys::STATUS_INVALID_PARAMETER
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
        // 1. WFP's values: the VM's port and the 5-tuple, written into the packet as the core
        //    reads it (built in place: no intermediate copy).
        let mut packet = UNREAD;
        // SAFETY: caller's contract.
        let (port_id, name) = match unsafe { read_values_into(values, meta, &mut packet) } {
            Ok(read) => read,
            Err(why) => {
                // One count, which stands for the classify call too (`Counter`).
                self.count(match why {
                    Bypass::TrustedPort => Counter::TrustedPortPackets,
                    Bypass::Malformed | Bypass::UnknownLayer => Counter::MalformedValues,
                    Bypass::NoPortId | Bypass::NonFirstFragment => Counter::UnknownPortPackets,
                });
                return None;
            }
        };
        // 2. (The switch's name, read with the values above, is compared with the port map's
        //    switches in step 4: never guessed.)
        // 3. Packet bytes (data starts at the IP header at these layers): the TCP flags, what an
        //    ICMP message says (WFP's port values hold only its type and code), and for a packet
        //    WFP gave no ports for, whether it is a non-first fragment.
        //    Every packet's IP headers are read: a fragment may rewrite what WFP's protocol and
        //    ports rest on (`frame::headers_rewritable`).
        let icmp = icmp::is_icmp(packet.family, packet.protocol);
        let portless = packet.headers == Headers::NoPorts;
        let mut storage = [0u8; icmp::READ_LEN];
        let want = if icmp || packet.family == IpFamily::V6 { icmp::READ_LEN } else { IP_PREFIX };
        let storage = storage.get_mut(..want).unwrap_or(&mut []);
        if icmp {
            packet.icmp = Icmp::Unreadable;
        }
        // SAFETY: caller's contract on `layer_data` and `meta`; `storage` is local to this call.
        let frame = unsafe { self.services.read_frame(layer_data, meta, storage) };
        if let Some(frame) = &frame {
            packet.length = frame.frame_len;
        }
        let head = frame.as_ref().map_or(&[][..], |f| f.head);
        if let Some(flags) =
            (packet.protocol == protocol::TCP && !portless).then(|| plain_tcp_flags(head)).flatten()
        {
            // The common packet (IPv4 without options, not a fragment, TCP): what the branches
            // below find for it, read with one look (`frame::plain_tcp_flags`).
            packet.tcp_flags = TcpFlags(flags);
        } else if headers_rewritable(head) {
            // Neither its protocol nor its ports can be relied on: inbound in Enforce only a
            // rule admitting everything from its source admits it (review s4, R4-1 and R4-2).
            packet.headers = Headers::Unknown;
        } else if portless {
            // A later fragment that may overlap its first fragment's headers (RFC 1858 3.3) is
            // judged without ports, like a first fragment without them: inbound in Enforce
            // only a rule admitting every port of its protocol admits it (issue 16).
            if is_non_first_fragment(head) && !may_overlap_headers(head) {
                // No transport header: it passes on its first fragment's verdict (without that
                // fragment the datagram is never reassembled).
                self.count(Counter::UnknownPortPackets);
                return None;
            }
        } else if packet.protocol == protocol::TCP {
            // Flags that cannot be read are never "no flags" (issue 16).
            match tcp_flags(head) {
                Some(flags) => packet.tcp_flags = TcpFlags(flags),
                None => packet.headers = Headers::NoFlags,
            }
        } else if icmp && frame.is_some() {
            packet.icmp = icmp::read(head);
        } else if is_ah_later_fragment(head) {
            // An AH-protected datagram's later fragment past the bound (within it, it is
            // `Unknown` above): WFP judged its first fragment by the transport behind the AH,
            // so no flow matches this one, which names only the AH; it rewrites nothing that
            // verdict rested on, and passes on it like a TCP or UDP later fragment (review s4,
            // L3; `frame::is_ah_later_fragment`).
            self.count(Counter::UnknownPortPackets);
            return None;
        }
        // 4. The port, and its verdict under the port's own lock.
        let now = self.now();
        // Read before the map lock raises the IRQL: at PASSIVE_LEVEL the thread may move after
        // it, which costs a line another processor writes, never a wrong verdict
        // (`PortSlot::classify`).
        let cpu = self.services.current_processor();
        // The port from this processor's port cache, or the map (crate::ports); judged under
        // this processor's shard's lock only, for its own flows.
        let found = match self.ports.with_packet_port(cpu, name, port_id, |slot| {
            slot.classify::<NO_WAIT>(cpu, &packet, now)
        }) {
            Some(Ok(verdict)) => Some(verdict),
            // Its home lock was taken: judged waiting for it, outside the map lock.
            Some(Err(port)) => Some(port.classify_waiting(cpu, &packet, now)),
            None => None,
        };
        match found {
            Some(Some(verdict)) => Some(verdict),
            Some(None) => {
                // A generic port without a VM NIC: not judged (the port counted the call).
                self.count(Counter::UnjudgedPortPackets);
                None
            }
            None => {
                self.count(Counter::UnknownPortPackets);
                None
            }
        }
    }
}

/// The packet before [`read_values_into`] writes WFP's values into it.
const UNREAD: PacketMeta = PacketMeta {
    direction: Direction::Inbound,
    family: IpFamily::V4,
    protocol: 0,
    src_addr: [0; 16],
    dst_addr: [0; 16],
    src_port: 0,
    dst_port: 0,
    tcp_flags: TcpFlags(0),
    length: 0,
    headers: Headers::Complete,
    icmp: Icmp::None,
};

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
    /// A non-first IP fragment of TCP or UDP (its IP header's fragment offset is not 0): WFP
    /// gives no ports (`FWP_EMPTY`). The first fragment was judged with its ports; the others
    /// are permitted without creating a flow (a flow keyed on port 0 would be wrong, blocking
    /// them as unsolicited would break every fragmented datagram of an admitted flow, and
    /// without its first fragment a datagram is never reassembled). A TCP or UDP packet without
    /// ports that is *not* one (a tiny first fragment), or a later fragment that may overlap
    /// the first one's headers (`frame::may_overlap_headers`), is judged: [`Headers::NoPorts`].
    NonFirstFragment,
}

/// The incoming values classify reads: `FIELD_IP_SOURCE_ADDRESS` ..= `FIELD_VSWITCH_ID`, the
/// first [`READ_FIELDS`] of every vSwitch transport layer's values (14 at ingress, 17 at
/// egress), read by constant index (no bounds check per value).
const READ_FIELDS: usize = sys::FIELD_VSWITCH_ID + 1;
const _: () = assert!(
    sys::FIELD_IP_SOURCE_ADDRESS < READ_FIELDS
        && sys::FIELD_IP_DESTINATION_ADDRESS < READ_FIELDS
        && sys::FIELD_IP_PROTOCOL < READ_FIELDS
        && sys::FIELD_IP_SOURCE_PORT < READ_FIELDS
        && sys::FIELD_IP_DESTINATION_PORT < READ_FIELDS
        && READ_FIELDS == 8
);

/// An `FWP_EMPTY` incoming value.
const EMPTY_VALUE: sys::FWPS_INCOMING_VALUE0 = sys::FWPS_INCOMING_VALUE0 {
    value: sys::FWP_VALUE0 {
        r#type: sys::FWP_EMPTY,
        u: sys::FWP_VALUE0_u { uint64: ptr::null_mut() },
    },
};

/// WFP's incoming values of one classify call, as a slice (empty if there are none).
///
/// # Safety
/// `values` is WFP's valid `FWPS_INCOMING_VALUES0` for this call: `incomingValue` points to
/// `valueCount` values, valid for the call.
#[inline]
unsafe fn value_slice(values: &FWPS_INCOMING_VALUES0) -> &[sys::FWPS_INCOMING_VALUE0] {
    if values.incomingValue.is_null() {
        return &[];
    }
    // SAFETY: non-null, `valueCount` elements valid for the call (caller's contract).
    unsafe { core::slice::from_raw_parts(values.incomingValue, values.valueCount as usize) }
}

/// The first [`READ_FIELDS`] values of a call that has fewer (none of vsflow's layers does),
/// those it lacks `FWP_EMPTY`: read as a call with all of them would be, absent as absent.
#[cold]
#[inline(never)]
fn padded(fields: &[sys::FWPS_INCOMING_VALUE0]) -> [sys::FWPS_INCOMING_VALUE0; READ_FIELDS] {
    let mut all = [EMPTY_VALUE; READ_FIELDS];
    for (to, from) in all.iter_mut().zip(fields) {
        *to = *from;
    }
    all
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
    let mut packet = UNREAD;
    // SAFETY: caller's contract.
    let (port_id, _) = unsafe { read_values_into(values, meta, &mut packet) }?;
    Ok(Classified { port_id, meta: packet })
}

/// [`read_values`] into `packet`, as classify uses it: writes its direction, family, protocol,
/// addresses, ports and `headers` (the other fields are left as they are; the addresses'
/// unused bytes must be zero already) and returns the VM's port id and the switch's name
/// ([`switch_name_bytes`]). Every value is read by constant index from one array of the
/// first [`READ_FIELDS`] (WFP's own when it has them all, as every vsflow layer does).
///
/// # Errors
/// As [`read_values`] (`packet` may then be partly written).
///
/// # Safety
/// As [`read_values`]; the name's bytes live as long as WFP's values (the classify call).
#[inline]
unsafe fn read_values_into<'v>(
    values: &'v FWPS_INCOMING_VALUES0,
    meta: &FWPS_INCOMING_METADATA_VALUES0,
    packet: &mut PacketMeta,
) -> Result<(u32, Option<&'v [u8]>), Bypass> {
    // SAFETY: caller's contract on `values`.
    let all = unsafe { value_slice(values) };
    let padded_fields;
    let fields = if let Some(fields) = all.first_chunk::<READ_FIELDS>() {
        fields
    } else {
        padded_fields = padded(all);
        &padded_fields
    };
    // A value absent from a short call reads as `FWP_EMPTY` (`padded`): every check below
    // rejects either the same way.
    let value = |i: usize| fields.get(i).map(|v| v.value);
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
    let src = value(sys::FIELD_IP_SOURCE_ADDRESS).ok_or(Bypass::Malformed)?;
    let dst = value(sys::FIELD_IP_DESTINATION_ADDRESS).ok_or(Bypass::Malformed)?;
    let proto = value(sys::FIELD_IP_PROTOCOL).ok_or(Bypass::Malformed)?;
    let sport = value(sys::FIELD_IP_SOURCE_PORT);
    let dport = value(sys::FIELD_IP_DESTINATION_PORT);
    if proto.r#type != sys::FWP_UINT8 {
        return Err(Bypass::Malformed);
    }
    // SAFETY: the type tag says `uint8` is the active arm.
    let protocol = unsafe { proto.u.uint8 };
    let port = |v: Option<sys::FWP_VALUE0>| match v {
        // SAFETY: the type tag says `uint16` is the active arm.
        Some(v) if v.r#type == sys::FWP_UINT16 => Some(unsafe { v.u.uint16 }),
        _ => None,
    };
    let (src_port, dst_port, headers) = match (port(sport), port(dport)) {
        (Some(s), Some(d)) => (s, d, Headers::Complete),
        // A non-first fragment, or a first fragment too short for the ports: the caller tells
        // them apart from the IP header.
        _ if matches!(protocol, protocol::TCP | protocol::UDP) => (0, 0, Headers::NoPorts),
        _ => (0, 0, Headers::Complete),
    };
    if v6 {
        // SAFETY: caller's contract; `addr16` checks the type tag and the pointer.
        packet.src_addr = unsafe { addr16(&src) }.ok_or(Bypass::Malformed)?;
        // SAFETY: as above.
        packet.dst_addr = unsafe { addr16(&dst) }.ok_or(Bypass::Malformed)?;
        packet.family = IpFamily::V6;
    } else {
        // The first four bytes (`vsflow_core::packet::v4`); the rest are zero already.
        addr4(&src, &mut packet.src_addr).ok_or(Bypass::Malformed)?;
        addr4(&dst, &mut packet.dst_addr).ok_or(Bypass::Malformed)?;
        packet.family = IpFamily::V4;
    }
    packet.direction = direction;
    packet.protocol = protocol;
    packet.src_port = src_port;
    packet.dst_port = dst_port;
    packet.headers = headers;
    // SAFETY: caller's contract (the values' blob is valid for the call).
    let name = unsafe { switch_name_bytes(value(sys::FIELD_VSWITCH_ID)) };
    Ok((port_id, name))
}

/// Writes an IPv4 address value's four bytes (network order) to the start of `to`.
fn addr4(v: &sys::FWP_VALUE0, to: &mut [u8; 16]) -> Option<()> {
    if v.r#type != sys::FWP_UINT32 {
        return None;
    }
    // SAFETY: the type tag says `uint32` is the active arm. WFP gives IPv4 addresses in host
    // byte order (verify on Windows, item 10).
    let a = unsafe { v.u.uint32 };
    *to.first_chunk_mut::<4>()? = a.to_be_bytes();
    Some(())
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

/// The switch a classify call belongs to: the bytes of the `VSWITCH_ID` value `v` (assumed:
/// the switch name as a UTF-16LE byte blob, maybe NUL-terminated; verify on Windows, item 9),
/// at most 256 units. Always consulted: a packet of a switch vsflow does not know is never
/// judged by another switch's port. Compared in place, never copied.
///
/// The bytes are compared only after the map lock is taken (`PortMap::with_packet_port`), and
/// an interlocked operation waits for every load issued before it: their line is asked for
/// here ([`crate::prefetch`]), so that its miss overlaps the packet's other reads instead of
/// following the lock.
///
/// # Safety
/// As [`read_values`]; `v` is the call's `VSWITCH_ID` value (or `None`); the returned bytes
/// live as long as WFP's values (the classify call).
#[allow(
    clippy::inline_always,
    reason = "once per packet on the classify path: out of line it costs a call and a frame (callgrind, docs/PERFORMANCE.md)"
)]
#[inline(always)]
unsafe fn switch_name_bytes<'v>(v: Option<sys::FWP_VALUE0>) -> Option<&'v [u8]> {
    let v = v?;
    if v.r#type != sys::FWP_BYTE_BLOB_TYPE {
        return None;
    }
    // SAFETY: the type tag says `byteBlob` is the active arm.
    let blob = unsafe { v.u.byteBlob };
    if blob.is_null() {
        return None;
    }
    // SAFETY: non-null blob from WFP, valid for the call.
    let blob = unsafe { ptr::read_unaligned(blob) };
    if blob.data.is_null() {
        return None;
    }
    crate::prefetch::line(blob.data);
    let bytes = (blob.size as usize).min(2 * 256);
    // SAFETY: WFP's blob has `size` readable bytes for the call; we read at most that many.
    Some(unsafe { core::slice::from_raw_parts(blob.data, bytes) })
}
