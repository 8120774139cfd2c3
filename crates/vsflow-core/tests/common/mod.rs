//! Shared by the integration tests: proptest strategies for valid states and ports, blob
//! surgery helpers (reseal after an edit, walk records), and the fixed inputs of the golden
//! fixtures.

#![allow(dead_code, reason = "each test binary uses a different subset")]
#![allow(clippy::missing_panics_doc, reason = "test helpers")]

use proptest::prelude::*;
use vsflow_core::codec::{self, PortState, SaveInfo, SavedFlow, format};
use vsflow_core::fingerprint::FingerprintSet;
use vsflow_core::flow::Admission;
use vsflow_core::packet::v4;
use vsflow_core::{
    AllowRule, FlowKey, FlowState, Guid, IpFamily, Mode, Opener, PortCounters, PortIdentity,
    PortRange, Prefix, RuleSet, protocol,
};

/// The provider GUID the tests save under: vsflow's real provider
/// (`vsflow_callout::keys::PROVIDER`, asserted equal in the end-to-end tests), so the golden
/// fixtures restore through the driver too.
pub const PROVIDER: Guid =
    Guid::from_parts(0x7673_666c, 0x6f77, 0x4d31, [0xa0, 0x01, 0x76, 0x73, 0x66, 0x77, 0x50, 0x0d]);

pub fn encode_config() -> codec::EncodeConfig {
    codec::EncodeConfig { provider: PROVIDER, cap: codec::DEFAULT_CAP }
}

pub fn arb_family_addr(family: IpFamily) -> BoxedStrategy<[u8; 16]> {
    match family {
        IpFamily::V4 => any::<[u8; 4]>().prop_map(v4).boxed(),
        IpFamily::V6 => any::<[u8; 16]>().boxed(),
    }
}

pub fn arb_key() -> impl Strategy<Value = FlowKey> {
    (
        prop_oneof![Just(IpFamily::V4), Just(IpFamily::V6)],
        prop_oneof![Just(protocol::TCP), Just(protocol::UDP), Just(protocol::ICMP), any::<u8>()],
    )
        .prop_flat_map(|(family, proto)| {
            (arb_family_addr(family), arb_family_addr(family), any::<u16>(), any::<u16>()).prop_map(
                move |(l, r, lp, rp)| FlowKey {
                    family,
                    protocol: proto,
                    local_addr: l,
                    remote_addr: r,
                    local_port: lp,
                    remote_port: rp,
                },
            )
        })
}

pub fn arb_saved_flow() -> impl Strategy<Value = SavedFlow> {
    (
        arb_key(),
        0usize..5,
        any::<bool>(),
        any::<u32>(),
        0u8..4,
        any::<[u64; 4]>(),
        any::<u64>(),
        any::<u64>(),
    )
        .prop_map(|(key, st, remote, ver, fin, c, a, b)| {
            let tcp = key.protocol == protocol::TCP;
            let state = if tcp {
                [
                    FlowState::SynSent,
                    FlowState::SynReceived,
                    FlowState::Established,
                    FlowState::FinWait,
                    FlowState::Closed,
                ][st]
            } else {
                FlowState::Active
            };
            let (opener, admission) = if remote {
                (
                    Opener::Remote,
                    if ver % 2 == 0 { Admission::Monitor } else { Admission::Rule(ver) },
                )
            } else {
                (Opener::Vm, Admission::Vm)
            };
            SavedFlow {
                key,
                state,
                opener,
                admission,
                fin_seen: if tcp { fin } else { 0 },
                packets: [c[0], c[1]],
                bytes: [c[2], c[3]],
                first_age: a.max(b),
                last_age: a.min(b),
            }
        })
}

pub fn arb_rule() -> impl Strategy<Value = AllowRule> {
    (
        proptest::option::of(any::<u8>()),
        any::<u16>(),
        any::<u16>(),
        prop_oneof![
            Just(Prefix::Any),
            (any::<[u8; 4]>(), 0u8..=32).prop_map(|(a, l)| Prefix::v4(a, l).unwrap()),
            (any::<[u8; 16]>(), 0u8..=128).prop_map(|(a, l)| Prefix::v6(a, l).unwrap()),
        ],
    )
        .prop_map(|(protocol, a, b, remote)| AllowRule {
            protocol,
            local_ports: PortRange::new(a.min(b), a.max(b)).unwrap(),
            remote,
        })
}

pub fn arb_identity() -> impl Strategy<Value = PortIdentity> {
    proptest::collection::vec(any::<u16>(), 0..=256)
        .prop_map(|u| PortIdentity::try_from_utf16(&u).unwrap())
}

/// A valid state with up to `max_flows` flows (keys may repeat: decode does not reject
/// duplicates, apply does).
pub fn arb_state(max_flows: usize) -> impl Strategy<Value = PortState> {
    (
        arb_identity(),
        any::<bool>(),
        any::<u32>(),
        proptest::collection::vec(arb_rule(), 0..8),
        proptest::collection::vec(arb_saved_flow(), 0..=max_flows),
        any::<[u64; PortCounters::COUNT]>(),
        proptest::option::of(arb_identity()),
    )
        .prop_map(|(identity, enforce, version, rules, flows, counters, nic)| PortState {
            minor: format::MINOR,
            provider: PROVIDER,
            identity,
            mode: if enforce { Mode::Enforce } else { Mode::Monitor },
            rules: RuleSet::try_from_slice(version, &rules).unwrap(),
            flows,
            counters: PortCounters::from_values(counters.into_iter()),
            save_info: SaveInfo::default(),
            skipped_records: 0,
            nic,
            fingerprints: FingerprintSet::default(),
            digest: 0,
        })
}

/// What a 1.0 decoder returned for a state encoded under the cap by a 1.0 writer: the same
/// state with the encoder's save accounting, exact ages and counters.
pub fn as_decoded_v1_0(mut s: PortState) -> PortState {
    s.minor = 0;
    s.save_info =
        SaveInfo { flows_in_table: u32::try_from(s.flows.len()).unwrap(), ..SaveInfo::default() };
    s.skipped_records = 0;
    s.digest = 0;
    // The encoder writes IPv4 flows, then IPv6 flows, each in list order.
    let (mut a, b): (Vec<_>, Vec<_>) = s.flows.iter().partition(|f| f.key.family == IpFamily::V4);
    a.extend(b);
    s.flows = a;
    s
}

/// The ages a 1.1 compact record carries, as decoded: last-seen in whole seconds, read as the
/// oldest age it may stand for (plus a second less a tick), the duration in whole minutes.
pub fn coarse(f: &mut SavedFlow) {
    let sec = vsflow_core::TICKS_PER_SECOND;
    let last = f.last_age / sec * sec;
    let dur = (f.first_age - f.last_age) / (60 * sec) * (60 * sec);
    let slack = (sec - 1).min(u64::MAX - (last + dur));
    f.last_age = last + slack;
    f.first_age = last + dur + slack;
}

/// What decode returns for a state this build encoded with every flow exact: the same state
/// with coarse ages, the encoder's save accounting, and per-flow counters only if `counters`.
pub fn as_decoded(mut s: PortState, counters: bool) -> PortState {
    s = as_decoded_v1_0(s);
    s.minor = format::MINOR;
    for f in &mut s.flows {
        coarse(f);
        if !counters {
            f.packets = [0; 2];
            f.bytes = [0; 2];
        }
    }
    s
}

/// True if the blob's compact records carry per-flow counters.
pub fn has_flow_counters(b: &[u8]) -> bool {
    records(b)
        .iter()
        .filter(|r| r.kind == format::rec::COMPACT_V4 || r.kind == format::rec::COMPACT_V6)
        .any(|r| b[r.payload.0] & format::compact::FLAG_COUNTERS != 0)
}

pub fn encode_state(s: &PortState) -> Vec<u8> {
    let mut out = Vec::new();
    codec::encode_state(s, &encode_config(), &mut out).unwrap();
    out
}

/// Decodes strictly; the digest is cleared so states compare by contents.
pub fn decode_state(b: &[u8]) -> Result<PortState, codec::DecodeError> {
    match codec::decode(b, &codec::DecodeConfig::default())? {
        codec::Decoded::State(mut s) => {
            assert_ne!(s.digest, 0);
            s.digest = 0;
            Ok(s)
        }
        codec::Decoded::UnsupportedMajor { .. } => panic!("strict decode returned lenient result"),
        codec::Decoded::NoState { .. } => panic!("a no-state blob"),
    }
}

/// Rewrites the total length and CRC after an edit (and, in a 1.2 blob, the policy's own CRC,
/// as a writer would), so a test reaches the checks behind them.
pub fn reseal(mut b: Vec<u8>) -> Vec<u8> {
    if b.len() < 20 {
        return b;
    }
    let n = b.len();
    let len = u32::try_from(n).unwrap().to_le_bytes();
    b[12..16].copy_from_slice(&len);
    if let Some(at) = policy_crc_at(&b) {
        let crc = codec::crc32c(&b[..at]).to_le_bytes();
        b[at..at + 4].copy_from_slice(&crc);
    }
    let crc = codec::crc32c(&b[..n - 4]).to_le_bytes();
    b[n - 4..].copy_from_slice(&crc);
    b
}

/// Where the policy CRC of a 1.2 blob is: the last four bytes of its third record, when that
/// is a `POLICY_CHECK` of the right length (`None` for anything else).
pub fn policy_crc_at(b: &[u8]) -> Option<usize> {
    let get16 = |at: usize| Some(u16::from_le_bytes(b.get(at..at + 2)?.try_into().ok()?));
    let get32 = |at: usize| Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?));
    if b.len() < 40 || get16(6)? < 2 {
        return None;
    }
    let mut at = usize::from(get16(8)?) + 2 * usize::from(get16(36)?);
    for _ in 0..2 {
        at = at.checked_add(8)?.checked_add(get32(at + 4)? as usize)?;
    }
    let crc_at = at + 8 + 4;
    (get16(at)? == format::rec::POLICY_CHECK
        && get32(at + 4)? == 8
        && crc_at + 4 <= b.len().checked_sub(4)?)
    .then_some(crc_at)
}

/// One record of a blob: type, start of its header, payload range.
#[derive(Clone, Copy, Debug)]
pub struct RecordAt {
    pub kind: u16,
    pub start: usize,
    pub payload: (usize, usize),
}

pub fn le16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

pub fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// Walks the records of a valid 1.x blob.
pub fn records(b: &[u8]) -> Vec<RecordAt> {
    let header_len = usize::from(le16(b, 8));
    let units = usize::from(le16(b, 36));
    let count = le32(b, 32);
    let mut at = header_len + 2 * units;
    let mut out = Vec::new();
    for _ in 0..count {
        let kind = le16(b, at);
        let len = le32(b, at + 4) as usize;
        out.push(RecordAt { kind, start: at, payload: (at + 8, at + 8 + len) });
        at += 8 + len;
    }
    out
}

/// Rewrites a 1.0 blob as a later minor version would write it: `minor`, four extra header
/// bytes, `extra_entry` more bytes per flow and rule entry, and an unknown record appended.
pub fn as_future_minor(b: &[u8], minor: u16, extra_entry: usize) -> Vec<u8> {
    let header_len = usize::from(le16(b, 8));
    let units = usize::from(le16(b, 36));
    let mut out = Vec::new();
    out.extend_from_slice(&b[..header_len]);
    out[6..8].copy_from_slice(&minor.to_le_bytes());
    out[8..10].copy_from_slice(&u16::try_from(header_len + 4).unwrap().to_le_bytes());
    out.extend_from_slice(&[0xAA, 0xBB, 0xCC, 0xDD]);
    out.extend_from_slice(&b[header_len..header_len + 2 * units]);
    let recs = records(b);
    for r in &recs {
        let payload = &b[r.payload.0..r.payload.1];
        let (fixed, entry_at) = match r.kind {
            format::rec::FLOWS_V4 | format::rec::FLOWS_V6 => (8, 0usize),
            format::rec::RULES => (8, 4usize),
            _ => {
                out.extend_from_slice(&b[r.start..r.payload.1]);
                continue;
            }
        };
        let entry = usize::from(le16(payload, entry_at));
        let count = (payload.len() - fixed) / entry;
        let mut p = payload[..fixed].to_vec();
        p[entry_at..entry_at + 2]
            .copy_from_slice(&u16::try_from(entry + extra_entry).unwrap().to_le_bytes());
        for i in 0..count {
            p.extend_from_slice(&payload[fixed + i * entry..fixed + (i + 1) * entry]);
            p.extend(std::iter::repeat_n(0x5A, extra_entry));
        }
        out.extend_from_slice(&r.kind.to_le_bytes());
        out.extend_from_slice(&0u16.to_le_bytes());
        out.extend_from_slice(&u32::try_from(p.len()).unwrap().to_le_bytes());
        out.extend_from_slice(&p);
    }
    // An unknown record type.
    out.extend_from_slice(&0x7777u16.to_le_bytes());
    out.extend_from_slice(&0u16.to_le_bytes());
    out.extend_from_slice(&3u32.to_le_bytes());
    out.extend_from_slice(b"new");
    let count = le32(b, 32) + 1;
    out[32..36].copy_from_slice(&count.to_le_bytes());
    out.extend_from_slice(&[0; 4]);
    reseal(out)
}

/// Sets the major version of a blob and reseals it.
pub fn with_major(b: &[u8], major: u16) -> Vec<u8> {
    let mut v = b.to_vec();
    v[4..6].copy_from_slice(&major.to_le_bytes());
    reseal(v)
}

fn flow(
    family: IpFamily,
    proto: u8,
    n: u8,
    state: FlowState,
    opener: Opener,
    admission: Admission,
    age: u64,
) -> SavedFlow {
    let (local_addr, remote_addr) = match family {
        IpFamily::V4 => (v4([10, 1, 0, n]), v4([203, 0, 113, n])),
        IpFamily::V6 => {
            let mut l = [0u8; 16];
            l[..4].copy_from_slice(&[0xfd, 0, 0, 1]);
            l[15] = n;
            let mut r = [0u8; 16];
            r[..4].copy_from_slice(&[0x20, 0x01, 0x0d, 0xb8]);
            r[15] = n;
            (l, r)
        }
    };
    let tcp = proto == protocol::TCP;
    SavedFlow {
        key: FlowKey {
            family,
            protocol: proto,
            local_addr,
            remote_addr,
            local_port: 40000 + u16::from(n),
            remote_port: if tcp { 443 } else { 53 },
        },
        state,
        opener,
        admission,
        fin_seen: u8::from(state == FlowState::FinWait),
        packets: [u64::from(n) * 10, u64::from(n) * 9],
        bytes: [u64::from(n) * 1500, u64::from(n) * 1400],
        first_age: age * 2 + 10_000_000,
        last_age: age,
    }
}

/// The fixed input of the `v1.0-monitor-mixed` fixture.
pub fn fixture_monitor_mixed() -> PortState {
    let mut flows = Vec::new();
    let states = [
        FlowState::SynSent,
        FlowState::SynReceived,
        FlowState::Established,
        FlowState::FinWait,
        FlowState::Closed,
    ];
    for n in 0..20u8 {
        let family = if n % 3 == 0 { IpFamily::V6 } else { IpFamily::V4 };
        let (proto, state) = match n % 4 {
            0 | 1 => (protocol::TCP, states[usize::from(n) % 5]),
            2 => (protocol::UDP, FlowState::Active),
            _ => (protocol::ICMP, FlowState::Active),
        };
        let (opener, admission) = if n % 5 == 0 {
            (Opener::Remote, Admission::Monitor)
        } else {
            (Opener::Vm, Admission::Vm)
        };
        flows.push(flow(family, proto, n, state, opener, admission, u64::from(n) * 1_000_000));
    }
    PortState {
        minor: format::MINOR,
        provider: PROVIDER,
        identity: PortIdentity::try_from_str("6A1B2C3D-0000-4E5F-8A9B-0C1D2E3F4A5B").unwrap(),
        mode: Mode::Monitor,
        rules: RuleSet::default(),
        flows,
        counters: PortCounters::from_values(100..),
        save_info: SaveInfo::default(),
        skipped_records: 0,
        nic: None,
        fingerprints: FingerprintSet::default(),
        digest: 0,
    }
}

/// The fixed input of the `v1.0-enforce-rules` fixture.
pub fn fixture_enforce_rules() -> PortState {
    let rules = [
        AllowRule {
            protocol: Some(protocol::TCP),
            local_ports: PortRange::single(22),
            remote: Prefix::v4([198, 51, 100, 0], 24).unwrap(),
        },
        AllowRule {
            protocol: Some(protocol::UDP),
            local_ports: PortRange::new(3544, 3544).unwrap(),
            remote: Prefix::Any,
        },
        AllowRule {
            protocol: None,
            local_ports: PortRange::new(8000, 8099).unwrap(),
            remote: Prefix::v6([0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0], 32)
                .unwrap(),
        },
    ];
    let flows = vec![
        flow(
            IpFamily::V4,
            protocol::TCP,
            1,
            FlowState::Established,
            Opener::Vm,
            Admission::Vm,
            5_000_000,
        ),
        flow(
            IpFamily::V4,
            protocol::TCP,
            2,
            FlowState::Established,
            Opener::Remote,
            Admission::Rule(7),
            1_000_000,
        ),
        flow(
            IpFamily::V6,
            protocol::UDP,
            3,
            FlowState::Active,
            Opener::Remote,
            Admission::Rule(7),
            2_000_000,
        ),
        flow(IpFamily::V6, protocol::TCP, 4, FlowState::SynSent, Opener::Vm, Admission::Vm, 0),
    ];
    PortState {
        minor: format::MINOR,
        provider: PROVIDER,
        identity: PortIdentity::try_from_str("Dynamic Ethernet Switch Port 7").unwrap(),
        mode: Mode::Enforce,
        rules: RuleSet::try_from_slice(7, &rules).unwrap(),
        flows,
        counters: PortCounters::default(),
        save_info: SaveInfo::default(),
        skipped_records: 0,
        nic: Some(PortIdentity::try_from_str("Network Adapter").unwrap()),
        fingerprints: FingerprintSet::default(),
        digest: 0,
    }
}

/// The fixed input of the capped fixtures: 300 flows (100 established), with the cap of
/// `v1.1-capped` (2 KiB; `v1.0-capped` was written under 4 KiB).
pub fn fixture_capped() -> (PortState, usize) {
    let mut s = fixture_monitor_mixed();
    s.flows.clear();
    for n in 0..300u16 {
        let lo = u8::try_from(n % 250).unwrap();
        let mut f = flow(
            if n % 2 == 0 { IpFamily::V4 } else { IpFamily::V6 },
            protocol::TCP,
            lo,
            if n % 3 == 0 { FlowState::Established } else { FlowState::SynSent },
            Opener::Vm,
            Admission::Vm,
            u64::from(n) * 1000,
        );
        f.key.remote_port = n;
        s.flows.push(f);
    }
    (s, 2048)
}

/// Packets the destination port saw in a restore window: outbound, on `keys` (IPv4 TCP and
/// UDP ones; others are skipped), at `at`.
pub fn window(p: &mut vsflow_core::Port, keys: &[FlowKey], at: u64) {
    use vsflow_core::{Direction, PacketMeta};
    for k in keys {
        if k.family != IpFamily::V4 || !(k.protocol == protocol::TCP || k.protocol == protocol::UDP)
        {
            continue;
        }
        let a = |x: [u8; 16]| [x[0], x[1], x[2], x[3]];
        let flags = if k.protocol == protocol::TCP { 0x10 } else { 0 };
        let m = PacketMeta::ipv4(
            Direction::Outbound,
            k.protocol,
            a(k.local_addr),
            k.local_port,
            a(k.remote_addr),
            k.remote_port,
            flags,
            60,
        );
        p.classify(&m, at);
    }
}

/// Everything a restore leaves in a port that two restore paths must agree on: each timeout
/// class's list in LRU order, the counters, the mode and the rules (the table's invariants
/// checked).
pub fn outcome(p: &vsflow_core::Port) -> impl PartialEq + core::fmt::Debug {
    let lists: Vec<Vec<_>> = vsflow_core::flow::TimeoutClass::ALL
        .iter()
        .map(|&c| p.table().iter_lru(c).map(|(k, r)| (*k, *r)).collect())
        .collect();
    p.table().check_invariants().unwrap();
    (lists, *p.counters(), p.mode(), p.rules().clone())
}

/// A port in Enforce with room for `max_flows` flows (the duplicate-key tests' port).
pub fn enforce_config(max_flows: u32) -> vsflow_core::PortConfig {
    vsflow_core::PortConfig {
        table: vsflow_core::flow::TableConfig { max_flows, ..Default::default() },
        initial_mode: Mode::Enforce,
    }
}

/// The VM's TCP connection `n` to 192.0.2.9:443 from 10.0.0.2:`1024 + n`: its SYN.
pub fn vm_syn(n: u16) -> vsflow_core::PacketMeta {
    vsflow_core::PacketMeta::ipv4(
        vsflow_core::Direction::Outbound,
        protocol::TCP,
        [10, 0, 0, 2],
        1024 + n,
        [192, 0, 2, 9],
        443,
        0x02,
        60,
    )
}
