//! Responses: encoded by the driver into the caller's output buffer, decoded by user mode.
//!
//! Each `encode_*` first computes the size it needs and returns
//! [`ProtoError::BufferTooSmall`] with it if the buffer is shorter, writing nothing.

use vsflow_core::codec::SavedFlow;
use vsflow_core::flow::Admission;
use vsflow_core::{FlowKey, FlowState, IpFamily, Mode, Opener, PortIdentity};

use crate::error::ProtoError;
use crate::request::PortRef;
use crate::wire::{HEADER_LEN, Header, Reader, Writer, count32, ensure};

/// Driver-wide counters, in wire order (the driver's `DriverStats`).
pub const DRIVER_COUNTER_NAMES: [&str; 20] = [
    "classify_calls",
    "trusted_port_packets",
    "unknown_port_packets",
    "malformed_values",
    "saves",
    "saves_empty",
    "restores_sync",
    "restores_pended",
    "restores_applied",
    "restores_empty",
    "restores_failed",
    "restores_cancelled",
    "identity_mismatches",
    "restores_unknown_port",
    "reorder_events",
    "settings_refused",
    "restores_oversized",
    "flows_refused_budget",
    "flow_memory_bytes",
    "saves_unkept",
];

/// A writer over exactly the `needed` bytes of `out`, header written.
fn begin(out: &mut [u8], needed: usize) -> Result<Writer<'_>, ProtoError> {
    ensure(out, needed)?;
    let mut w = Writer::new(out.get_mut(..needed).unwrap_or_default());
    Header::CURRENT.write(&mut w);
    Ok(w)
}

/// The length written, checking the encoder filled exactly what it sized.
fn done(w: &Writer<'_>, needed: usize) -> Result<usize, ProtoError> {
    if w.overflowed() || w.len() != needed {
        return Err(ProtoError::InvalidField("response size (encoder bug)"));
    }
    Ok(w.len())
}

fn read_header(bytes: &[u8]) -> Result<Reader<'_>, ProtoError> {
    let mut r = Reader::new(bytes);
    Header::read(&mut r)?;
    Ok(r)
}

/// A response with no body (clear counters, set mode).
///
/// # Errors
/// [`ProtoError::BufferTooSmall`].
pub fn encode_empty(out: &mut [u8]) -> Result<usize, ProtoError> {
    let w = begin(out, HEADER_LEN)?;
    done(&w, HEADER_LEN)
}

/// Checks a response with no body.
///
/// # Errors
/// A malformed response.
pub fn decode_empty(bytes: &[u8]) -> Result<(), ProtoError> {
    read_header(bytes)?.finish()
}

/// [`crate::Ioctl::GetVersion`]'s answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VersionInfo {
    /// Protocol version the driver speaks.
    pub protocol: u16,
    /// Driver version (major, minor, patch).
    pub driver: [u16; 3],
    /// Runtime-state format the driver writes (major, minor).
    pub format: [u16; 2],
}

impl VersionInfo {
    /// Encoded length.
    pub const LEN: usize = HEADER_LEN + 14;

    /// Encodes.
    ///
    /// # Errors
    /// [`ProtoError::BufferTooSmall`].
    pub fn encode(&self, out: &mut [u8]) -> Result<usize, ProtoError> {
        let mut w = begin(out, Self::LEN)?;
        w.u16(self.protocol);
        for v in self.driver.iter().chain(self.format.iter()) {
            w.u16(*v);
        }
        w.u16(0);
        done(&w, Self::LEN)
    }

    /// Decodes.
    ///
    /// # Errors
    /// A malformed response.
    pub fn decode(bytes: &[u8]) -> Result<Self, ProtoError> {
        let mut r = read_header(bytes)?;
        let v = Self {
            protocol: r.u16()?,
            driver: [r.u16()?, r.u16()?, r.u16()?],
            format: [r.u16()?, r.u16()?],
        };
        r.u16()?;
        r.finish()?;
        Ok(v)
    }
}

/// One port in [`crate::Ioctl::ListPorts`]'s answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PortInfo {
    /// How to address the port.
    pub port: PortRef,
    /// Flows in its table.
    pub flow_count: u32,
    /// Its mode.
    pub mode: Mode,
    /// A NIC is connected.
    pub nic_connected: bool,
    /// Created to receive restored state.
    pub restoring: bool,
    /// Allow-rule set version.
    pub rules_version: u32,
    /// Durable identity (port name).
    pub name: PortIdentity,
}

/// Bytes of one port entry.
pub const PORT_ENTRY_LEN: usize = 4 + 4 + 4 + 4 + 1 + 1 + 2 + 2 * 256;
const PORTS_FIXED: usize = HEADER_LEN + 8;

/// Encodes a port list.
///
/// # Errors
/// [`ProtoError::BufferTooSmall`] with the size for all ports.
pub fn encode_ports(
    ports: impl ExactSizeIterator<Item = PortInfo>,
    out: &mut [u8],
) -> Result<usize, ProtoError> {
    let n = ports.len();
    let needed = PORTS_FIXED + n * PORT_ENTRY_LEN;
    let mut w = begin(out, needed)?;
    w.u32(count32(n));
    w.u32(0);
    for p in ports {
        w.u32(p.port.switch_id);
        w.u32(p.port.port_id);
        w.u32(p.flow_count);
        w.u32(p.rules_version);
        w.u8(p.mode.to_wire());
        w.u8(u8::from(p.nic_connected) | (u8::from(p.restoring) << 1));
        let units = p.name.as_utf16();
        w.u16(u16::try_from(units.len()).unwrap_or(0));
        for i in 0..256 {
            w.u16(units.get(i).copied().unwrap_or(0));
        }
    }
    done(&w, needed)
}

/// Decodes a port list, calling `f` on each port.
///
/// # Errors
/// A malformed response.
pub fn decode_ports(bytes: &[u8], mut f: impl FnMut(PortInfo)) -> Result<u32, ProtoError> {
    let mut r = read_header(bytes)?;
    let n = r.u32()?;
    r.u32()?;
    for _ in 0..n {
        let port = PortRef { switch_id: r.u32()?, port_id: r.u32()? };
        let flow_count = r.u32()?;
        let rules_version = r.u32()?;
        let mode = Mode::from_wire(r.u8()?).ok_or(ProtoError::InvalidField("mode"))?;
        let flags = r.u8()?;
        let len = usize::from(r.u16()?);
        let mut units = [0u16; 256];
        for u in &mut units {
            *u = r.u16()?;
        }
        let name = PortIdentity::try_from_utf16(
            units.get(..len).ok_or(ProtoError::InvalidField("name length"))?,
        )
        .map_err(|_| ProtoError::InvalidField("name length"))?;
        f(PortInfo {
            port,
            flow_count,
            mode,
            nic_connected: flags & 1 != 0,
            restoring: flags & 2 != 0,
            rules_version,
            name,
        });
    }
    r.finish()?;
    Ok(n)
}

/// Bytes of one flow entry.
pub const FLOW_ENTRY_LEN: usize = 96;
/// Fixed part of a flows page.
pub const FLOWS_FIXED: usize = HEADER_LEN + 16;

/// [`FlowsPage::next`] when the port has no more flows.
pub const FLOWS_END: u32 = u32::MAX;

/// A page of a port's flows, as decoded.
///
/// Paging uses a cursor: the first request passes `start = 0`, each next one passes the
/// previous page's [`FlowsPage::next`], until it is [`FLOWS_END`]. (The cursor is a position in
/// the port's table: a page never walks the flows before it. Pages taken while traffic flows
/// may miss or repeat a flow: diagnostics, not a snapshot.)
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlowsPage {
    /// Flows the port has.
    pub total: u32,
    /// The cursor this page started at.
    pub start: u32,
    /// Flows in this page.
    pub returned: u32,
    /// The cursor of the next page, or [`FLOWS_END`].
    pub next: u32,
}

/// How many flows of `remaining` (at most `max`) fit in `out_len` bytes, and the size needed
/// for at least one when none fits.
#[must_use]
pub fn flows_that_fit(out_len: usize, remaining: usize, max: usize) -> (usize, usize) {
    let want = remaining.min(max);
    let fit = out_len.saturating_sub(FLOWS_FIXED) / FLOW_ENTRY_LEN;
    (want.min(fit), FLOWS_FIXED + FLOW_ENTRY_LEN * want.min(1))
}

/// Encodes a page of `count` flows taken from `flows` (ages relative to the request time).
///
/// # Errors
/// [`ProtoError::BufferTooSmall`] with the size for one page of the flows given.
pub fn encode_flows(
    total: u32,
    start: u32,
    count: usize,
    next: u32,
    flows: impl Iterator<Item = SavedFlow>,
    out: &mut [u8],
) -> Result<usize, ProtoError> {
    let needed = FLOWS_FIXED + count * FLOW_ENTRY_LEN;
    let mut w = begin(out, needed)?;
    w.u32(total);
    w.u32(start);
    w.u32(count32(count));
    w.u32(next);
    let mut written = 0usize;
    for f in flows.take(count) {
        written += 1;
        let (adm, version) = match f.admission {
            Admission::Vm => (1, 0),
            Admission::Monitor => (2, 0),
            Admission::Rule(v) => (3, v),
        };
        w.u8(match f.key.family {
            IpFamily::V4 => 4,
            IpFamily::V6 => 6,
        });
        w.u8(f.key.protocol);
        w.u8(f.state.to_wire());
        w.u8(f.opener.to_wire());
        w.u8(adm);
        w.u8(f.fin_seen);
        w.u16(0);
        w.u32(version);
        w.bytes(&f.key.local_addr);
        w.bytes(&f.key.remote_addr);
        w.u16(f.key.local_port);
        w.u16(f.key.remote_port);
        for v in [f.packets[0], f.packets[1], f.bytes[0], f.bytes[1], f.first_age, f.last_age] {
            w.u64(v);
        }
    }
    let len = if written == count { done(&w, needed)? } else { w.len() };
    if written < count {
        // Fewer flows than promised (the table changed): fix the count.
        if let Some(dst) = out.get_mut(HEADER_LEN + 8..HEADER_LEN + 12) {
            dst.copy_from_slice(&count32(written).to_le_bytes());
        }
    }
    Ok(len)
}

/// Decodes a page of flows, calling `f` on each.
///
/// # Errors
/// A malformed response.
pub fn decode_flows(bytes: &[u8], mut f: impl FnMut(SavedFlow)) -> Result<FlowsPage, ProtoError> {
    let mut r = read_header(bytes)?;
    let page = FlowsPage { total: r.u32()?, start: r.u32()?, returned: r.u32()?, next: r.u32()? };
    for _ in 0..page.returned {
        let family = match r.u8()? {
            4 => IpFamily::V4,
            6 => IpFamily::V6,
            _ => return Err(ProtoError::InvalidField("family")),
        };
        let protocol = r.u8()?;
        let state = FlowState::from_wire(r.u8()?).ok_or(ProtoError::InvalidField("state"))?;
        let opener = Opener::from_wire(r.u8()?).ok_or(ProtoError::InvalidField("opener"))?;
        let adm = r.u8()?;
        let fin_seen = r.u8()?;
        r.u16()?;
        let version = r.u32()?;
        let admission = match adm {
            1 => Admission::Vm,
            2 => Admission::Monitor,
            3 => Admission::Rule(version),
            _ => return Err(ProtoError::InvalidField("admission")),
        };
        let local_addr = r.bytes16()?;
        let remote_addr = r.bytes16()?;
        let local_port = r.u16()?;
        let remote_port = r.u16()?;
        let key = FlowKey { family, protocol, local_addr, remote_addr, local_port, remote_port };
        let mut v = [0u64; 6];
        for x in &mut v {
            *x = r.u64()?;
        }
        let [p0, p1, b0, b1, first_age, last_age] = v;
        f(SavedFlow {
            key,
            state,
            opener,
            admission,
            fin_seen,
            packets: [p0, p1],
            bytes: [b0, b1],
            first_age,
            last_age,
        });
    }
    r.finish()?;
    Ok(page)
}

/// Encodes counter values (names: [`DRIVER_COUNTER_NAMES`], or for a port
/// `PortCounters::ALL_NAMES`: the runtime-state counters, then the extended ones).
///
/// The answer is count-prefixed and its lists are only ever appended to: a reader that knows
/// fewer counters takes the first ones it knows ([`decode_counters`] skips the rest), a reader
/// that knows more sees the count the driver sent. Adding counters therefore needs no protocol
/// version change (protocol 2 readers of an 18-counter port answer read a 24-counter one).
///
/// # Errors
/// [`ProtoError::BufferTooSmall`].
pub fn encode_counters(values: &[u64], out: &mut [u8]) -> Result<usize, ProtoError> {
    let needed = HEADER_LEN + 4 + 8 * values.len();
    let mut w = begin(out, needed)?;
    w.u16(u16::try_from(values.len()).unwrap_or(0));
    w.u16(0);
    for v in values {
        w.u64(*v);
    }
    done(&w, needed)
}

/// Decodes counter values into `out`; returns how many the driver sent.
///
/// # Errors
/// A malformed response.
pub fn decode_counters(bytes: &[u8], out: &mut [u64]) -> Result<usize, ProtoError> {
    let mut r = read_header(bytes)?;
    let n = usize::from(r.u16()?);
    r.u16()?;
    for i in 0..n {
        let v = r.u64()?;
        if let Some(slot) = out.get_mut(i) {
            *slot = v;
        }
    }
    r.finish()?;
    Ok(n)
}

/// The status of a stale [`crate::Request::ReplaceRules`].
///
/// Its `expected_version` is no longer the port's rule-set version (someone replaced the rules
/// since the caller read them): `STATUS_TRANSACTIONAL_CONFLICT`, which `DeviceIoControl` reports as
/// `ERROR_TRANSACTIONAL_CONFLICT` (6800). Nothing was replaced; read again and retry.
pub const STATUS_RULES_CHANGED: i32 = 0xC019_0001_u32.cast_signed();

/// [`crate::Ioctl::ReplaceRules`]'s answer: the new rule-set version.
///
/// # Errors
/// [`ProtoError::BufferTooSmall`].
pub fn encode_rules_version(version: u32, out: &mut [u8]) -> Result<usize, ProtoError> {
    let mut w = begin(out, HEADER_LEN + 4)?;
    w.u32(version);
    done(&w, HEADER_LEN + 4)
}

/// Decodes [`encode_rules_version`].
///
/// # Errors
/// A malformed response.
pub fn decode_rules_version(bytes: &[u8]) -> Result<u32, ProtoError> {
    let mut r = read_header(bytes)?;
    let v = r.u32()?;
    r.finish()?;
    Ok(v)
}

/// Encodes a port's rules: version, count, entry length, entries (the 24-byte rule entry of the
/// runtime-state format).
///
/// # Errors
/// [`ProtoError::BufferTooSmall`].
pub fn encode_rules(
    version: u32,
    rules: &[vsflow_core::AllowRule],
    out: &mut [u8],
) -> Result<usize, ProtoError> {
    let len = vsflow_core::codec::RULE_LEN;
    let needed = HEADER_LEN + 8 + len * rules.len();
    let mut w = begin(out, needed)?;
    w.u32(version);
    w.u16(u16::try_from(rules.len()).unwrap_or(u16::MAX));
    w.u16(u16::try_from(len).unwrap_or(0));
    for r in rules {
        w.bytes(&vsflow_core::codec::rule_to_bytes(r));
    }
    done(&w, needed)
}

/// Decodes [`encode_rules`], calling `f` on each rule; returns the version.
///
/// # Errors
/// A malformed response.
pub fn decode_rules(
    bytes: &[u8],
    mut f: impl FnMut(vsflow_core::AllowRule),
) -> Result<u32, ProtoError> {
    let mut r = read_header(bytes)?;
    let version = r.u32()?;
    let n = r.u16()?;
    let len = usize::from(r.u16()?);
    if len < vsflow_core::codec::RULE_LEN {
        return Err(ProtoError::InvalidField("rule entry length"));
    }
    for i in 0..n {
        let e = r.take(len)?;
        f(vsflow_core::codec::rule_from_bytes(e, u32::from(i))
            .map_err(|_| ProtoError::InvalidField("rule"))?);
    }
    r.finish()?;
    Ok(version)
}

/// [`crate::Ioctl::GetConfig`]'s answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConfigInfo {
    /// 0 pending, 1 synchronous.
    pub restore_mode: u8,
    /// 0 strict, 1 lenient.
    pub unknown_major: u8,
    /// Mode of new ports.
    pub default_mode: Mode,
    /// Flow-table bound per port.
    pub flows_per_port: u32,
    /// Blob size cap.
    pub blob_cap: u32,
}

impl ConfigInfo {
    /// Encoded length.
    pub const LEN: usize = HEADER_LEN + 12;

    /// Encodes.
    ///
    /// # Errors
    /// [`ProtoError::BufferTooSmall`].
    pub fn encode(&self, out: &mut [u8]) -> Result<usize, ProtoError> {
        let mut w = begin(out, Self::LEN)?;
        w.bytes(&[self.restore_mode, self.unknown_major, self.default_mode.to_wire(), 0]);
        w.u32(self.flows_per_port);
        w.u32(self.blob_cap);
        done(&w, Self::LEN)
    }

    /// Decodes.
    ///
    /// # Errors
    /// A malformed response.
    pub fn decode(bytes: &[u8]) -> Result<Self, ProtoError> {
        let mut r = read_header(bytes)?;
        let restore_mode = r.u8()?;
        let unknown_major = r.u8()?;
        let default_mode = Mode::from_wire(r.u8()?).ok_or(ProtoError::InvalidField("mode"))?;
        r.u8()?;
        let c = Self {
            restore_mode,
            unknown_major,
            default_mode,
            flows_per_port: r.u32()?,
            blob_cap: r.u32()?,
        };
        r.finish()?;
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use std::vec::Vec;

    #[test]
    fn responses_round_trip_and_report_the_size_they_need() {
        let mut buf = [0u8; 4096];
        let v = VersionInfo { protocol: 1, driver: [0, 1, 0], format: [1, 0] };
        let n = v.encode(&mut buf).unwrap();
        assert_eq!(VersionInfo::decode(&buf[..n]), Ok(v));
        assert_eq!(
            v.encode(&mut [0u8; 10]),
            Err(ProtoError::BufferTooSmall { needed: VersionInfo::LEN })
        );

        let port = PortInfo {
            port: PortRef { switch_id: 1, port_id: 9 },
            flow_count: 3,
            mode: Mode::Enforce,
            nic_connected: true,
            restoring: false,
            rules_version: 2,
            name: PortIdentity::try_from_str("vm-a").unwrap(),
        };
        let n = encode_ports([port, port].into_iter(), &mut buf).unwrap();
        let mut got = Vec::new();
        assert_eq!(decode_ports(&buf[..n], |p| got.push(p)), Ok(2));
        assert_eq!(got, [port, port]);
        assert_eq!(
            encode_ports([port; 10].into_iter(), &mut buf),
            Err(ProtoError::BufferTooSmall { needed: 16 + 10 * PORT_ENTRY_LEN })
        );

        let c = ConfigInfo {
            restore_mode: 0,
            unknown_major: 1,
            default_mode: Mode::Monitor,
            flows_per_port: 4096,
            blob_cap: 61440,
        };
        let n = c.encode(&mut buf).unwrap();
        assert_eq!(ConfigInfo::decode(&buf[..n]), Ok(c));

        let n = encode_counters(&[1, 2, 3], &mut buf).unwrap();
        // A reader that knows fewer counters than the driver sends takes the first ones.
        let mut vals = [0u64; 2];
        assert_eq!(decode_counters(&buf[..n], &mut vals), Ok(3));
        assert_eq!(vals, [1, 2]);
    }

    #[test]
    fn flows_page_sizes_follow_the_buffer() {
        assert_eq!(
            flows_that_fit(FLOWS_FIXED + 3 * FLOW_ENTRY_LEN + 5, 10, 100),
            (3, FLOWS_FIXED + FLOW_ENTRY_LEN)
        );
        assert_eq!(flows_that_fit(10, 10, 100), (0, FLOWS_FIXED + FLOW_ENTRY_LEN));
        assert_eq!(flows_that_fit(10_000, 0, 100), (0, FLOWS_FIXED));
        assert_eq!(flows_that_fit(10_000, 50, 4), (4, FLOWS_FIXED + FLOW_ENTRY_LEN));
    }
}
