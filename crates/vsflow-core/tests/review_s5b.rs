//! Review s5b (attacker's review of the restore's staged decode, `codec::decode_staged` /
//! `codec::apply_staged`, landed e757ffa): the restore blob is the source host's (or a tampered
//! migration stream's), so every property here is over blobs the encoder did not write.

mod common;

use common::*;
use proptest::prelude::*;
use vsflow_core::codec::{
    self, ApplyConfig, ApplyError, DecodeConfig, Decoded, DecodedStaged, StageConfig, format,
};
use vsflow_core::flow::{BudgetRef, FlowBudget, TableConfig, TimeoutClass};
use vsflow_core::time::secs;
use vsflow_core::{
    Direction, IpFamily, Mode, PacketMeta, Port, PortConfig, PortIdentity, protocol,
};

const NOW: u64 = 1_000_000_000_000;

fn dst(table: TableConfig) -> Port {
    let cfg = PortConfig { table, initial_mode: Mode::Enforce };
    Port::try_new(PortIdentity::try_from_str("rv5b").unwrap(), cfg).unwrap()
}

/// `arb_state`'s ages are any `u64` (nearly every flow past its timeout): with `young`, each
/// flow's last age within 0-150 s (most flows live, some past the shorter timeouts), the
/// blob's order kept (so classes are out of age order).
fn live_ages(mut s: vsflow_core::codec::PortState, young: bool) -> vsflow_core::codec::PortState {
    if young {
        for f in &mut s.flows {
            let span = f.first_age - f.last_age;
            f.last_age %= secs(150);
            f.first_age = f.last_age + span % secs(100);
        }
    }
    s
}

/// Each class's list oldest first by `last_seen` (what the sweep and eviction rely on: they
/// read a list from its tail and stop at the first live flow).
fn in_recency_order(p: &Port) {
    for class in TimeoutClass::ALL {
        let ages: Vec<u64> = p.table().iter_lru(class).map(|(_, r)| r.last_seen).collect();
        assert!(ages.is_sorted(), "{class:?} list out of recency order: {ages:?}");
    }
}

/// Applies what the two decodes of `blob` gave to two like ports; both must agree.
fn compare(blob: &[u8], table: TableConfig, window_keys: &[vsflow_core::FlowKey], wait: u64) {
    let cfg = DecodeConfig::default();
    let listed = codec::decode(blob, &cfg);
    let placement = StageConfig { table, base: NOW - wait, now: NOW };
    let staged = codec::decode_staged(blob, &cfg, &placement);
    match (listed, staged) {
        (Err(a), Err(b)) => assert_eq!(a, b, "decode errors"),
        (Ok(Decoded::State(mut list)), Ok(DecodedStaged::State(state, flows))) => {
            assert!(state.flows.is_empty());
            let mut aged = list.clone();
            for f in &mut aged.flows {
                f.first_age = f.first_age.saturating_add(wait);
                f.last_age = f.last_age.saturating_add(wait);
            }
            list.flows.clear();
            assert_eq!(list, state, "the states but their flows");
            let (mut a, mut b) = (dst(table), dst(table));
            window(&mut a, window_keys, NOW - 2);
            window(&mut b, window_keys, NOW - 2);
            let config = ApplyConfig::default();
            let ra = codec::apply_with(&mut a, &aged, NOW, &config);
            let rb = codec::apply_staged(&mut b, &state, flows, NOW, &config);
            match (&ra, &rb) {
                (Ok(x), Ok(y)) => assert_eq!(x, y, "reports"),
                (Err(ApplyError::DuplicateFlow { .. }), Err(ApplyError::DuplicateFlow { .. })) => {}
                _ => panic!("list apply {ra:?}, staged apply {rb:?}"),
            }
            assert_eq!(outcome(&a), outcome(&b), "ports");
            if rb.is_ok() {
                in_recency_order(&b);
            }
        }
        (Ok(Decoded::NoState { reason: a }), Ok(DecodedStaged::NoState { reason: b })) => {
            assert_eq!(a, b);
        }
        (
            Ok(Decoded::UnsupportedMajor { major: a, minor: c }),
            Ok(DecodedStaged::UnsupportedMajor { major: b, minor: d }),
        ) => assert_eq!((a, c), (b, d)),
        (a, b) => panic!("list decode {a:?}, staged decode {b:?}"),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

    /// Any resealed mutation of any blob (the checks past the CRC reached: counts, tags,
    /// dictionary indexes, lengths, flags), under any bound and pended wait: the staged decode
    /// and apply give what the list decode and apply give, error for error.
    #[test]
    fn a_staged_restore_of_a_tampered_blob_equals_the_list_restore(
        s in arb_state(24),
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..4),
        bound in 1u32..40,
        picks in proptest::collection::vec(any::<prop::sample::Index>(), 0..4),
        wait_s in prop_oneof![Just(0u64), 0u64..200, 0u64..100_000],
        young in any::<bool>(),
    ) {
        let s = live_ages(s, young);
        let keys: Vec<_> = picks
            .iter()
            .filter(|_| !s.flows.is_empty())
            .map(|i| s.flows[i.index(s.flows.len())].key)
            .collect();
        let mut blob = encode_state(&s);
        for (pos, v) in edits {
            let i = pos.index(blob.len());
            blob[i] = v;
        }
        let blob = reseal(blob);
        let table = TableConfig { max_flows: bound, hash_seed: 5, ..TableConfig::default() };
        compare(&blob, table, &keys, secs(wait_s));
    }

    /// The same over edits aimed at the compact records' payloads (the entries the staging
    /// places as it reads them).
    #[test]
    fn a_staged_restore_of_a_blob_with_tampered_entries_equals_the_list_restore(
        s in arb_state(24),
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
        bound in 1u32..40,
        wait_s in prop_oneof![Just(0u64), 0u64..100_000],
        young in any::<bool>(),
        picks in proptest::collection::vec(any::<prop::sample::Index>(), 0..4),
    ) {
        let s = live_ages(s, young);
        let keys: Vec<_> = picks
            .iter()
            .filter(|_| !s.flows.is_empty())
            .map(|i| s.flows[i.index(s.flows.len())].key)
            .collect();
        let mut blob = encode_state(&s);
        let compacts: Vec<_> = records(&blob)
            .into_iter()
            .filter(|r| r.kind == format::rec::COMPACT_V4 || r.kind == format::rec::COMPACT_V6)
            .filter(|r| r.payload.1 > r.payload.0)
            .collect();
        prop_assume!(!compacts.is_empty());
        for (n, (pos, v)) in edits.into_iter().enumerate() {
            let r = compacts[n % compacts.len()];
            let i = r.payload.0 + pos.index(r.payload.1 - r.payload.0);
            blob[i] = v;
        }
        let blob = reseal(blob);
        let table = TableConfig { max_flows: bound, hash_seed: 5, ..TableConfig::default() };
        compare(&blob, table, &keys, secs(wait_s));
    }
}

/// A blob of two flows whose first compact record declares 65,535 entries (the payload holds
/// two): rejected, as the list decode rejects it. The staging split its table's index for the
/// declared count before the decoder checked it against the payload (`decode_v1`'s
/// `placed_count`, `Staged::try_new` -> `FlowTable::reserve_index`), charged to the host's
/// flow-memory budget even past its limit (a restore's charge): a record of a few dozen bytes made the host
/// allocate 256 KiB of bucket heads and overdraw the limit by 145 KiB (`FlowBudget::overdraft`) while every other
/// port's new flows were refused against it. A record's entries take at least 7 bytes each:
/// what the staging sizes for must be what the record's bytes can hold.
#[test]
fn a_blobs_declared_entry_count_does_not_size_the_staging_past_what_its_bytes_hold() {
    let budget: &'static FlowBudget = Box::leak(Box::new(FlowBudget::new(128 * 1024)));
    let table = TableConfig {
        max_flows: vsflow_core::flow::MAX_FLOWS_LIMIT,
        hash_seed: 5,
        budget: Some(BudgetRef(budget)),
        ..TableConfig::default()
    };
    let port = {
        let mut p = dst(TableConfig { max_flows: 2, ..TableConfig::default() });
        window(
            &mut p,
            &[
                vsflow_core::FlowKey {
                    family: IpFamily::V4,
                    protocol: protocol::UDP,
                    local_addr: vsflow_core::packet::v4([10, 0, 0, 2]),
                    remote_addr: vsflow_core::packet::v4([192, 0, 2, 1]),
                    local_port: 5000,
                    remote_port: 53,
                },
                vsflow_core::FlowKey {
                    family: IpFamily::V4,
                    protocol: protocol::UDP,
                    local_addr: vsflow_core::packet::v4([10, 0, 0, 2]),
                    remote_addr: vsflow_core::packet::v4([192, 0, 2, 2]),
                    local_port: 5001,
                    remote_port: 53,
                },
            ],
            NOW - 5,
        );
        p
    };
    let mut blob = Vec::new();
    codec::encode(&port, NOW, &encode_config(), &mut blob).unwrap();
    let stage = StageConfig { table, base: NOW, now: NOW };
    // Control: the blob as written stages within the budget.
    let Ok(DecodedStaged::State(_, Ok(staged))) =
        codec::decode_staged(&blob, &DecodeConfig::default(), &stage)
    else {
        panic!("the intact blob decodes and stages")
    };
    assert_eq!(staged.len(), 2);
    drop(staged);
    assert_eq!(budget.overdraft(), 0, "the intact blob's staging stays within the budget");
    let r = records(&blob)
        .into_iter()
        .find(|r| r.kind == format::rec::COMPACT_V4)
        .expect("a compact record");
    assert_eq!(le32(&blob, r.payload.0 + 4), 2, "the count field");
    blob[r.payload.0 + 4..r.payload.0 + 8].copy_from_slice(&65_535u32.to_le_bytes());
    let blob = reseal(blob);
    let listed = codec::decode(&blob, &DecodeConfig::default());
    assert!(listed.is_err(), "the list decode rejects the count");
    let staged = codec::decode_staged(&blob, &DecodeConfig::default(), &stage);
    assert_eq!(staged.err(), listed.err(), "the staged decode rejects it alike");
    assert_eq!(budget.used(), 0, "everything given back");
    assert_eq!(
        budget.overdraft(),
        0,
        "a rejected record of two entries charged bytes past the host's flow-memory limit"
    );
}

/// R5b-2: a carried flow the restore window saw keeps its blob place in its class's list
/// (`FlowTable::update_record`, as the session-4 apply kept it), now dated by the window's
/// packet: the oldest UDP flow of the blob, seen a second before the restore, sits at its
/// list's tail with a fresh `last_seen`. The sweep (`FlowTable::expire`) walks each list from
/// the tail and stops at the first live flow, and eviction at the bound looks only at the
/// tails: the blob's other UDP flows that idle past their timeout behind it are neither
/// reclaimed nor seen as idle until the window's flow itself expires (up to a whole timeout
/// later), and at the bound the live, just-used flow is what goes first.
#[test]
fn a_window_merge_keeps_each_list_in_recency_order_for_the_sweep() {
    use vsflow_core::codec::SavedFlow;
    use vsflow_core::flow::Admission;
    use vsflow_core::{FlowState, Opener};
    let udp = |n: u8, age_s: u64| SavedFlow {
        key: vsflow_core::FlowKey {
            family: IpFamily::V4,
            protocol: protocol::UDP,
            local_addr: vsflow_core::packet::v4([10, 0, 0, 2]),
            remote_addr: vsflow_core::packet::v4([192, 0, 2, n]),
            local_port: 5000,
            remote_port: 53,
        },
        state: FlowState::Active,
        opener: Opener::Vm,
        admission: Admission::Vm,
        fin_seen: 0,
        packets: [1, 1],
        bytes: [100, 100],
        first_age: secs(age_s),
        last_age: secs(age_s),
    };
    // Oldest first, as the encoder writes a class.
    let (oldest, middle, young) = (udp(1, 50), udp(2, 40), udp(3, 10));
    let mut saved = fixture_monitor_mixed();
    saved.flows = vec![oldest, middle, young];
    let blob = encode_state(&saved);
    let table = TableConfig { max_flows: 16, hash_seed: 5, ..TableConfig::default() };
    let mut p = dst(table);
    window(&mut p, &[oldest.key], NOW - secs(1));
    let stage = StageConfig { table, base: NOW, now: NOW };
    let Ok(DecodedStaged::State(st, flows)) =
        codec::decode_staged(&blob, &DecodeConfig::default(), &stage)
    else {
        panic!("decodes")
    };
    let r = codec::apply_staged(&mut p, &st, flows, NOW, &ApplyConfig::default()).unwrap();
    assert_eq!(r.restored, 3);
    assert_eq!(p.counters().window_flows_merged, 1);
    // 25 s on: the middle flow idled 65 s (past UDP's 60 s), the young one 35 s, the oldest
    // (seen in the window) 26 s.
    let later = NOW + secs(25);
    let removed = p.expire(later, usize::MAX);
    assert_eq!(removed, 1, "the sweep reclaims the carried flow that idled past its timeout");
    assert!(p.table().get(&middle.key).is_none());
    assert!(p.table().get(&oldest.key).is_some() && p.table().get(&young.key).is_some());
}

/// The VM (10.0.0.2) opens a TCP connection from `local_port` to `remote`:443 at `at`: its
/// SYN, the peer's SYN-ACK, its ACK (established).
fn connect(p: &mut Port, local_port: u16, remote: [u8; 4], at: u64) {
    let vm = [10, 0, 0, 2];
    let out = |flags| {
        PacketMeta::ipv4(Direction::Outbound, protocol::TCP, vm, local_port, remote, 443, flags, 60)
    };
    p.classify(&out(0x02), at);
    let syn_ack =
        PacketMeta::ipv4(Direction::Inbound, protocol::TCP, remote, 443, vm, local_port, 0x12, 60);
    p.classify(&syn_ack, at);
    p.classify(&out(0x10), at);
}

/// The source of R5b-3's tests: 64 established outbound connections (a full slab segment),
/// 30 s old, and its blob.
fn sixty_four_connections() -> (Port, Vec<u8>) {
    let mut src = dst(TableConfig { max_flows: 4096, hash_seed: 5, ..TableConfig::default() });
    for n in 0..64u16 {
        let [hi, lo] = n.to_be_bytes();
        connect(&mut src, 20_000 + n, [198, 51, hi, lo], NOW - secs(30));
    }
    let mut blob = Vec::new();
    codec::encode(&src, NOW, &encode_config(), &mut blob).unwrap();
    (src, blob)
}

/// The destination's table when the host's flow budget is used up (limit 0: every byte
/// charged is past it).
fn spent_budget() -> TableConfig {
    let budget: &'static FlowBudget = Box::leak(Box::new(FlowBudget::new(0)));
    TableConfig {
        max_flows: 4096,
        hash_seed: 5,
        budget: Some(BudgetRef(budget)),
        ..TableConfig::default()
    }
}

/// Applies the staged restore of [`sixty_four_connections`] to `p`, whose window holds
/// `window` flows: the restore applies, and every carried connection stays beside them.
fn restore_keeps_every_carried(
    p: &mut Port,
    src: &Port,
    st: &codec::PortState,
    flows: Result<codec::Staged, ApplyError>,
    window: usize,
) {
    let r = codec::apply_staged(p, st, flows, NOW, &ApplyConfig::default());
    let report = r.expect("the restore applies: a window flow is no reason to lose the carried");
    assert_eq!(report.restored, 64);
    let carried = src.table().iter().filter(|(k, _)| p.table().get(k).is_some()).count();
    assert_eq!(carried, 64, "every carried connection stays");
    assert_eq!(p.table().len(), 64 + window, "every carried connection and the window's flows");
    p.table().check_invariants().unwrap();
}

/// `blob` decoded into a table staged with `table`, received at `NOW`.
fn stage(blob: &[u8], table: TableConfig) -> (codec::PortState, Result<codec::Staged, ApplyError>) {
    let stage = StageConfig { table, base: NOW, now: NOW };
    let Ok(DecodedStaged::State(st, flows)) =
        codec::decode_staged(blob, &DecodeConfig::default(), &stage)
    else {
        panic!("decodes")
    };
    (st, flows)
}

/// R5b-3: past the host's flow-memory budget (a host-wide limit the other ports' flows may
/// have used up, e.g. a neighbour VM's flood), a restore whose table's slab is full (4,096
/// carried connections fill 64 segments exactly) and whose window saw a flow of its own (a DNS
/// query the VM sent before the restore landed) must still carry every connection. The apply
/// kept the window's flow with `FlowTable::insert`, which grows the slab only within the
/// budget and otherwise reclaims a slot: an unestablished flow may not displace an established
/// one, so the insert failed `OverBudget`, the apply failed and the restore degraded: every
/// carried connection lost for one DNS query. (The apply's docs say the window's flows kept
/// are charged even past the limit, as the carried ones are.)
#[test]
fn a_window_flow_past_the_budget_never_costs_the_carried_connections() {
    let (src, blob) = sixty_four_connections();
    let table = spent_budget();
    let mut p = dst(table);
    let dns = vsflow_core::FlowKey {
        family: IpFamily::V4,
        protocol: protocol::UDP,
        local_addr: vsflow_core::packet::v4([10, 0, 0, 2]),
        remote_addr: vsflow_core::packet::v4([192, 0, 2, 53]),
        local_port: 5353,
        remote_port: 53,
    };
    window(&mut p, &[dns], NOW - secs(1));
    assert_eq!(p.table().len(), 1, "the window's flow (in the port's first storage)");
    let (st, flows) = stage(&blob, table);
    // And a connection the VM opened in the window (established): kept beside the carried
    // ones, not in place of one.
    connect(&mut p, 40_000, [203, 0, 113, 9], NOW - secs(1));
    assert_eq!(p.table().len(), 2, "the window's flows (in the port's first storage)");
    restore_keeps_every_carried(&mut p, &src, &st, flows, 2);
}

/// R5b-3's other half: the window holds only a connection the VM opened (established).
/// `FlowTable::insert` past the budget with the slab full reclaimed the least recently used
/// established flow for it: a carried connection, silently lost (the restore reported success).
#[test]
fn an_established_window_flow_past_the_budget_displaces_no_carried_connection() {
    let (src, blob) = sixty_four_connections();
    let table = spent_budget();
    let mut p = dst(table);
    let (st, flows) = stage(&blob, table);
    // A connection the VM opened in the window (established): kept beside the carried ones,
    // not in place of one.
    connect(&mut p, 40_000, [203, 0, 113, 9], NOW - secs(1));
    assert_eq!(p.table().len(), 1, "the window's connection (in the port's first storage)");
    restore_keeps_every_carried(&mut p, &src, &st, flows, 1);
}
