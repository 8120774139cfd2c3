//! The encoder: a port's state to bytes, within the size cap.

use alloc::vec::Vec;

use super::format::{self, hdr, rec};
use super::{PortState, SaveInfo, SavedFlow, crc32c};
use crate::counters::PortCounters;
use crate::error::Error;
use crate::flow::{Admission, TimeoutClass};
use crate::guid::Guid;
use crate::packet::IpFamily;
use crate::policy::{AllowRule, Mode, RuleSet};
use crate::port::{Port, PortIdentity};
use crate::time::Tick;

/// Encoder settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EncodeConfig {
    /// Provider GUID written into the header (the vSwitch subscription's providerGuid).
    pub provider: Guid,
    /// Largest blob to produce, in bytes (default [`super::DEFAULT_CAP`]).
    pub cap: usize,
}

/// What one encode produced.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EncodeSummary {
    /// Blob length.
    pub len: usize,
    /// Flows written.
    pub flows_written: u32,
    /// Flows left out by the cap.
    pub flows_dropped: u32,
}

/// Where the encoder gets a port's contents: a live [`Port`] or a decoded [`PortState`].
trait Source {
    fn identity(&self) -> &PortIdentity;
    fn mode(&self) -> Mode;
    fn rules(&self) -> &RuleSet;
    fn counters(&self) -> PortCounters;
    fn flow_count(&self) -> usize;
    fn family_counts(&self) -> (usize, usize);
    /// Flows of `family`, oldest activity first where the source knows it.
    fn for_each(&self, family: IpFamily, f: &mut dyn FnMut(SavedFlow));
}

struct LivePort<'a> {
    port: &'a Port,
    now: Tick,
}

impl Source for LivePort<'_> {
    fn identity(&self) -> &PortIdentity {
        &self.port.identity
    }
    fn mode(&self) -> Mode {
        self.port.mode
    }
    fn rules(&self) -> &RuleSet {
        &self.port.rules
    }
    fn counters(&self) -> PortCounters {
        self.port.counters
    }
    fn flow_count(&self) -> usize {
        self.port.table.len()
    }
    fn family_counts(&self) -> (usize, usize) {
        let v4 = self.port.table.iter().filter(|(k, _)| k.family == IpFamily::V4).count();
        (v4, self.port.table.len() - v4)
    }
    fn for_each(&self, family: IpFamily, f: &mut dyn FnMut(SavedFlow)) {
        // Class by class, least recently used first: the decoder's recency sort then sees
        // long sorted runs.
        for class in TimeoutClass::ALL {
            for (k, r) in self.port.table.iter_lru(class) {
                if k.family == family {
                    f(SavedFlow::from_record(*k, r, self.now));
                }
            }
        }
    }
}

impl Source for PortState {
    fn identity(&self) -> &PortIdentity {
        &self.identity
    }
    fn mode(&self) -> Mode {
        self.mode
    }
    fn rules(&self) -> &RuleSet {
        &self.rules
    }
    fn counters(&self) -> PortCounters {
        self.counters
    }
    fn flow_count(&self) -> usize {
        self.flows.len()
    }
    fn family_counts(&self) -> (usize, usize) {
        let v4 = self.flows.iter().filter(|s| s.key.family == IpFamily::V4).count();
        (v4, self.flows.len() - v4)
    }
    fn for_each(&self, family: IpFamily, f: &mut dyn FnMut(SavedFlow)) {
        for s in self.flows.iter().filter(|s| s.key.family == family) {
            f(*s);
        }
    }
}

/// Encodes a live port as of `now` into `out` (cleared first; its allocation is reused).
///
/// If every flow fits under `config.cap` they are all written; otherwise the most valuable
/// flows are kept (established TCP first, then most recently active) and the number left out
/// is recorded in the blob and the summary.
///
/// # Errors
/// [`Error::CapTooSmall`] if even the flowless records exceed the cap;
/// [`Error::OutOfMemory`]. `out` is left empty on error.
pub fn encode(
    port: &Port,
    now: Tick,
    config: &EncodeConfig,
    out: &mut Vec<u8>,
) -> Result<EncodeSummary, Error> {
    encode_source(&LivePort { port, now }, config, out)
}

/// Encodes a [`PortState`] (tools, fixtures, tests). The state's `save_info` is replaced by
/// what this encode does; its `minor` is ignored (this build writes [`format::MINOR`]).
///
/// # Errors
/// As [`encode`].
pub fn encode_state(
    state: &PortState,
    config: &EncodeConfig,
    out: &mut Vec<u8>,
) -> Result<EncodeSummary, Error> {
    encode_source(state, config, out)
}

const fn flows_record_len(count: usize, entry: usize) -> usize {
    format::RECORD_HEADER_LEN + format::FLOWS_PAYLOAD_HEADER + count * entry
}

#[allow(clippy::too_many_lines, reason = "the blob layout, written in order")]
fn encode_source(
    src: &dyn Source,
    config: &EncodeConfig,
    out: &mut Vec<u8>,
) -> Result<EncodeSummary, Error> {
    out.clear();
    let identity = src.identity().as_utf16();
    let rules = src.rules().rules();
    let fixed = format::HEADER_LEN
        + 2 * identity.len()
        + format::RECORD_HEADER_LEN + 1 // mode
        + format::RECORD_HEADER_LEN + 8 + rules.len() * format::RULE_ENTRY_LEN
        + format::RECORD_HEADER_LEN + 2 + 8 * PortCounters::COUNT
        + format::RECORD_HEADER_LEN + 8 // save info
        + flows_record_len(0, 0) * 2
        + format::TRAILER_LEN;
    if fixed > config.cap {
        return Err(Error::CapTooSmall);
    }
    let budget = config.cap - fixed;
    let (n4, n6) = src.family_counts();
    let all = n4 * format::FLOW_V4_ENTRY_LEN + n6 * format::FLOW_V6_ENTRY_LEN;
    let total_flows = src.flow_count();

    // Over the cap: rank every flow (compact 12-byte sort keys, not the flows themselves) and
    // keep greedily the best that fit.
    let mut chosen: Vec<SavedFlow> = Vec::new();
    let (c4, c6) = if all <= budget {
        (n4, n6)
    } else {
        let mut every: Vec<SavedFlow> = Vec::new();
        every.try_reserve_exact(total_flows)?;
        src.for_each(IpFamily::V4, &mut |s| every.push(s));
        src.for_each(IpFamily::V6, &mut |s| every.push(s));
        let mut order: Vec<(u64, u32)> = Vec::new();
        order.try_reserve_exact(every.len())?;
        order.extend((0u32..).zip(every.iter()).map(|(i, s)| (s.value_rank(), i)));
        if n4 == 0 || n6 == 0 {
            // One entry size: exactly `budget / entry` flows fit, so the best of them are found
            // by selection (linear) rather than by sorting everything.
            let entry = if n6 == 0 { format::FLOW_V4_ENTRY_LEN } else { format::FLOW_V6_ENTRY_LEN };
            let keep = (budget / entry).min(order.len());
            if keep < order.len() {
                order.select_nth_unstable(keep);
                order.truncate(keep);
            }
        } else {
            // Two entry sizes: greedy in rank order, taking each flow that still fits.
            order.sort_unstable();
            let mut left = budget;
            order.retain(|&(_, i)| {
                let cost = match every.get(i as usize).map(|s| s.key.family) {
                    Some(IpFamily::V4) => format::FLOW_V4_ENTRY_LEN,
                    Some(IpFamily::V6) => format::FLOW_V6_ENTRY_LEN,
                    None => usize::MAX,
                };
                if cost <= left {
                    left -= cost;
                    true
                } else {
                    false
                }
            });
        }
        // Written oldest activity first, like a live port, so restore sorts cheaply.
        for (key, i) in &mut order {
            *key = u64::MAX - every.get(*i as usize).map_or(0, |s| s.last_age);
        }
        order.sort_unstable();
        chosen.try_reserve_exact(order.len())?;
        chosen.extend(order.iter().filter_map(|&(_, i)| every.get(i as usize).copied()));
        let c4 = chosen.iter().filter(|s| s.key.family == IpFamily::V4).count();
        (c4, chosen.len() - c4)
    };
    let written = c4 + c6;
    let dropped = total_flows - written;
    let len = fixed + c4 * format::FLOW_V4_ENTRY_LEN + c6 * format::FLOW_V6_ENTRY_LEN;
    out.try_reserve_exact(len)?;

    let clamp = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
    let info = SaveInfo { flows_in_table: clamp(total_flows), flows_dropped: clamp(dropped) };
    let mut w = Writer { out };
    // Header.
    w.bytes(&format::MAGIC);
    w.u16(format::MAJOR);
    w.u16(format::MINOR);
    #[allow(clippy::cast_possible_truncation, reason = "HEADER_LEN is 40")]
    w.u16(format::HEADER_LEN as u16);
    w.u16(if dropped > 0 { format::FLAG_FLOWS_DROPPED } else { 0 });
    w.u32(clamp(len));
    w.bytes(&config.provider.to_bytes());
    #[allow(clippy::cast_possible_truncation, reason = "REQUIRED has 6 entries")]
    w.u32(rec::REQUIRED.len() as u32);
    #[allow(clippy::cast_possible_truncation, reason = "identity is at most 256 units")]
    w.u16(identity.len() as u16);
    w.u16(0);
    debug_assert_eq!(w.out.len(), format::HEADER_LEN);
    debug_assert_eq!(hdr::RESERVED + 2, format::HEADER_LEN);
    for &u in identity {
        w.u16(u);
    }
    // Mode.
    w.record(rec::MODE, 1);
    w.u8(src.mode().to_wire());
    // Rules.
    w.record(rec::RULES, 8 + rules.len() * format::RULE_ENTRY_LEN);
    w.u32(src.rules().version());
    #[allow(clippy::cast_possible_truncation, reason = "constant 24")]
    w.u16(format::RULE_ENTRY_LEN as u16);
    #[allow(clippy::cast_possible_truncation, reason = "at most MAX_RULES (256)")]
    w.u16(rules.len() as u16);
    for r in rules {
        write_rule(&mut w, r);
    }
    // Flows.
    for (family, count, entry, kind) in [
        (IpFamily::V4, c4, format::FLOW_V4_ENTRY_LEN, rec::FLOWS_V4),
        (IpFamily::V6, c6, format::FLOW_V6_ENTRY_LEN, rec::FLOWS_V6),
    ] {
        w.record(kind, format::FLOWS_PAYLOAD_HEADER + count * entry);
        #[allow(clippy::cast_possible_truncation, reason = "69 or 93")]
        w.u16(entry as u16);
        w.u16(0);
        w.u32(clamp(count));
        if chosen.is_empty() {
            src.for_each(family, &mut |s| write_flow(&mut w, &s));
        } else {
            for s in chosen.iter().filter(|s| s.key.family == family) {
                write_flow(&mut w, s);
            }
        }
    }
    // Counters.
    w.record(rec::COUNTERS, 2 + 8 * PortCounters::COUNT);
    #[allow(clippy::cast_possible_truncation, reason = "COUNT is 14")]
    w.u16(PortCounters::COUNT as u16);
    for v in src.counters().to_array() {
        w.u64(v);
    }
    // Save info.
    w.record(rec::SAVE_INFO, 8);
    w.u32(info.flows_in_table);
    w.u32(info.flows_dropped);
    // Trailer.
    let crc = crc32c(w.out);
    w.u32(crc);
    debug_assert_eq!(out.len(), len);
    Ok(EncodeSummary { len, flows_written: clamp(written), flows_dropped: clamp(dropped) })
}

fn write_rule(w: &mut Writer<'_>, r: &AllowRule) {
    w.bytes(&super::rule::rule_to_bytes(r));
}

fn write_flow(w: &mut Writer<'_>, s: &SavedFlow) {
    let (adm, version) = match s.admission {
        Admission::Vm => (format::admission::VM, 0),
        Admission::Monitor => (format::admission::MONITOR, 0),
        Admission::Rule(v) => (format::admission::RULE, v),
    };
    w.u8(s.key.protocol);
    w.u8(s.state.to_wire());
    w.u8(s.opener.to_wire());
    w.u8(adm);
    w.u8(s.fin_seen);
    w.u32(version);
    match s.key.family {
        IpFamily::V4 => {
            w.bytes(s.key.local_addr.get(..4).unwrap_or(&[0; 4]));
            w.bytes(s.key.remote_addr.get(..4).unwrap_or(&[0; 4]));
        }
        IpFamily::V6 => {
            w.bytes(&s.key.local_addr);
            w.bytes(&s.key.remote_addr);
        }
    }
    w.u16(s.key.local_port);
    w.u16(s.key.remote_port);
    w.u64(s.packets[0]);
    w.u64(s.packets[1]);
    w.u64(s.bytes[0]);
    w.u64(s.bytes[1]);
    w.u64(s.first_age);
    w.u64(s.last_age);
}

/// Appends to a vector whose capacity was reserved up front (no allocation while writing).
struct Writer<'a> {
    out: &'a mut Vec<u8>,
}

impl Writer<'_> {
    #[inline]
    fn bytes(&mut self, b: &[u8]) {
        self.out.extend_from_slice(b);
    }
    #[inline]
    fn u8(&mut self, v: u8) {
        self.out.push(v);
    }
    #[inline]
    fn u16(&mut self, v: u16) {
        self.bytes(&v.to_le_bytes());
    }
    #[inline]
    fn u32(&mut self, v: u32) {
        self.bytes(&v.to_le_bytes());
    }
    #[inline]
    fn u64(&mut self, v: u64) {
        self.bytes(&v.to_le_bytes());
    }
    fn record(&mut self, kind: u16, payload: usize) {
        self.u16(kind);
        self.u16(0);
        self.u32(u32::try_from(payload).unwrap_or(u32::MAX));
    }
}
