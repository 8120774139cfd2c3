//! Review s6 (review, wip/review6): defects found in session 5's code, each with the test that
//! failed before its fix. See /work/team/notes/review-s6.md.

use vsflow_core::codec::{Encoder, PREPARE_SCAN};
use vsflow_core::flow::TableConfig;
use vsflow_core::{Direction, Mode, PacketMeta, Port, PortConfig, PortIdentity, protocol};

/// The VM's TCP SYN of connection `n` (distinct for every `n` below 2^24), from `local`.
fn syn(local: u8, n: u32) -> PacketMeta {
    let [_, a, b, c] = n.to_be_bytes();
    PacketMeta::ipv4(
        Direction::Outbound,
        protocol::TCP,
        [10, 0, 0, local],
        40_000,
        [198, a, b, c],
        443,
        0x02,
        60,
    )
}

/// A port (Enforce, bound `max_flows`) with `n` TCP flows the VM opened from `local`.
fn port_with(name: &str, max_flows: u32, local: u8, n: u32) -> Port {
    let cfg = PortConfig {
        table: TableConfig { max_flows, initial_capacity: 64, ..TableConfig::default() },
        initial_mode: Mode::Enforce,
    };
    let mut p = Port::try_new(PortIdentity::try_from_str(name).unwrap(), cfg).unwrap();
    for i in 0..n {
        p.classify(&syn(local, i), 1_000 + u64::from(i));
    }
    assert_eq!(p.table().len(), n as usize);
    p
}

/// R6-2: the sweep readies a split port's fingerprints with one cursor over every table (the
/// home shard's, then each processor shard's), a bounded number of flows a sweep. A sweep whose
/// budget ran out exactly at the end of a table did not note where it stopped, so the next
/// sweep began a new round at the home shard: a home shard of exactly `PREPARE_SCAN` flows
/// (all computed) spends every sweep's whole scan budget and ends exactly at its end, every
/// time, and the processors' shards are never readied (their connections hashed by the save).
#[test]
fn a_sweep_budget_spent_exactly_at_a_tables_end_goes_on_to_the_next_table() {
    let scan = u32::try_from(PREPARE_SCAN).unwrap();
    let home = port_with("home", 65_536, 2, scan);
    let shard = port_with("shard", 65_536, 3, 100);
    let mut e = Encoder::new();
    // A cap the port's flows are well past.
    let cap = 4_096;
    let mut shard_computed = 0;
    for sweep in 0..40u64 {
        let now = 10_000_000 + sweep * 10_000_000;
        e.prepare_split(&home, home.table().len() + shard.table().len(), now, cap);
        shard_computed += e.prepare_shard(0, &shard);
    }
    assert!(e.is_prepared());
    assert_eq!(
        shard_computed, 100,
        "40 sweeps readied {shard_computed} of the processor shard's 100 connections"
    );
}

mod large_window {
    //! A restore whose window is larger than its carried flows, at sizes the session-4
    //! reference property does not reach (up to 3,000 window flows and 1,000 carried, their
    //! times interleaved): the flows are the union, a flow both saw merged (the later time),
    //! every class list in recency order, the table's invariants hold.

    use std::collections::BTreeMap;

    use proptest::prelude::*;
    use vsflow_core::codec::{self, ApplyConfig, PortState, SaveInfo, SavedFlow};
    use vsflow_core::flow::{Admission, FlowRecord, Opener, TableConfig, TimeoutClass};
    use vsflow_core::policy::RuleSet;
    use vsflow_core::{
        Direction, FlowKey, FlowState, Mode, PacketMeta, Port, PortConfig, PortCounters,
        PortIdentity, protocol,
    };

    const NOW: u64 = 1_000_000_000_000;
    /// Every time lies within the last 20 s (UDP's timeout is longer).
    const SPAN: u64 = 200_000_000;

    fn udp(n: u16) -> PacketMeta {
        let [a, b] = n.to_be_bytes();
        PacketMeta::ipv4(
            Direction::Outbound,
            protocol::UDP,
            [10, 0, 0, 2],
            7_000,
            [10, 7, a, b],
            53,
            0,
            60,
        )
    }

    fn identity() -> PortIdentity {
        PortIdentity::try_from_str("large-window").unwrap()
    }

    fn state(flows: Vec<SavedFlow>) -> PortState {
        PortState {
            minor: vsflow_core::codec::format::MINOR,
            provider: vsflow_core::Guid::default(),
            identity: identity(),
            mode: Mode::Enforce,
            rules: RuleSet::default(),
            flows,
            counters: PortCounters::default(),
            save_info: SaveInfo::default(),
            skipped_records: 0,
            nic: None,
            fingerprints: vsflow_core::fingerprint::FingerprintSet::default(),
            digest: 0,
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn a_large_window_keeps_every_flow_merged_and_every_list_in_recency_order(
            window in proptest::collection::vec((0u16..4_000, 0..SPAN), 1..3_000),
            carried in proptest::collection::vec((0u16..4_000, 0..SPAN), 0..1_000),
            tight in any::<prop::sample::Index>(),
        ) {
            // The bound: room for all, or (half the cases) between the larger side and the
            // union, so that window flows only the window saw are let go.
            let distinct = |v: &[(u16, u64)]| v.iter().map(|p| p.0).collect::<std::collections::BTreeSet<_>>();
            let (dw, dc) = (distinct(&window), distinct(&carried));
            let union = dw.union(&dc).count();
            let larger = dw.len().max(dc.len());
            let bound = if tight.index(2) == 0 {
                65_536
            } else {
                u32::try_from(larger + tight.index(union - larger + 1)).unwrap()
            };
            let cfg = PortConfig {
                table: TableConfig { max_flows: bound, initial_capacity: 64, ..TableConfig::default() },
                initial_mode: Mode::Enforce,
            };
            let mut port = Port::try_new(identity(), cfg).unwrap();
            // The window's flows in time order (as packets make them), each key once.
            let mut w: BTreeMap<u16, u64> = BTreeMap::new();
            for &(n, ago) in &window {
                w.entry(n).or_insert(NOW - ago);
            }
            let mut by_time: Vec<(u64, u16)> = w.iter().map(|(&n, &t)| (t, n)).collect();
            by_time.sort_unstable();
            for &(t, n) in &by_time {
                port.classify(&udp(n), t);
            }
            // The carried flows (distinct keys, blob order oldest first).
            let mut c: BTreeMap<u16, u64> = BTreeMap::new();
            for &(n, ago) in &carried {
                c.entry(n).or_insert(ago);
            }
            let mut saved: Vec<SavedFlow> = c
                .iter()
                .map(|(&n, &ago)| SavedFlow {
                    key: FlowKey::of(&udp(n)),
                    state: FlowState::Active,
                    opener: Opener::Vm,
                    admission: Admission::Vm,
                    fin_seen: 0,
                    packets: [1, 0],
                    bytes: [60, 0],
                    first_age: ago,
                    last_age: ago,
                })
                .collect();
            saved.sort_by_key(|s| std::cmp::Reverse(s.last_age));
            let before = port.table().len();
            let report = codec::apply_with(&mut port, &state(saved), NOW, &ApplyConfig::default());
            let report = report.map_err(|e| TestCaseError::fail(e.to_string()))?;
            port.table().check_invariants().map_err(TestCaseError::fail)?;
            // The union, each flow at the later of its two times; at the bound, the window's
            // own flows kept in the order the window made them while room remains.
            let mut want: BTreeMap<u16, u64> =
                c.iter().map(|(&n, &ago)| (n, NOW - ago)).collect();
            let mut room = (bound as usize).saturating_sub(c.len());
            for &(t, n) in &by_time {
                if let Some(x) = want.get_mut(&n) {
                    *x = (*x).max(t);
                } else if room > 0 {
                    want.insert(n, t);
                    room -= 1;
                }
            }
            let both = c.keys().filter(|n| w.contains_key(n)).count();
            prop_assert_eq!(port.table().len(), want.len());
            prop_assert_eq!(report.kept_local as usize, want.len() - c.len());
            prop_assert!(report.kept_local as usize <= before - both);
            for (&n, &t) in &want {
                let r: Option<&FlowRecord> = port.table().get(&FlowKey::of(&udp(n)));
                prop_assert_eq!(r.map(|r| r.last_seen), Some(t), "flow {}", n);
            }
            for class in TimeoutClass::ALL {
                let times: Vec<u64> = port.table().iter_lru(class).map(|(_, r)| r.last_seen).collect();
                prop_assert!(times.is_sorted(), "{:?} out of recency order", class);
            }
        }
    }
}
