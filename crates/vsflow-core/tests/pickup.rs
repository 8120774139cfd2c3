//! Issue 12's classification semantics after a restore: fingerprint pickup (both directions,
//! within its window) and loose pickup (opt-in, non-SYN TCP, within its window), counted apart
//! from flows carried exactly.

use proptest::prelude::*;
use vsflow_core::flow::{FlowTable, TableConfig};
use vsflow_core::port::{FingerprintSet, PickupConfig};
use vsflow_core::time::secs;
use vsflow_core::{
    BlockReason, Direction, FlowKey, FlowState, Mode, PacketMeta, Port, PortConfig, PortCounters,
    PortIdentity, RuleSet, Verdict, protocol,
};

/// Exact keys: no false positives, so tests can name what matches.
#[derive(Debug)]
struct Keys(Vec<FlowKey>);

impl FingerprintSet for Keys {
    fn contains(&self, key: &FlowKey) -> bool {
        self.0.contains(key)
    }
    fn len(&self) -> usize {
        self.0.len()
    }
}

const RESTORED_AT: u64 = 1_000 * 10_000_000;

fn port(max_flows: u32) -> Port {
    let cfg = PortConfig {
        table: TableConfig { max_flows, ..TableConfig::default() },
        initial_mode: Mode::Enforce,
    };
    Port::try_new(PortIdentity::try_from_str("pickup").unwrap(), cfg).unwrap()
}

/// Commits a restore that carries no exact flow, only `fingerprints`.
fn restore(p: &mut Port, fingerprints: Vec<FlowKey>) {
    let mut plan = p.plan_restore(Mode::Enforce, &RuleSet::default()).unwrap();
    plan.try_set_fingerprints(Keys(fingerprints)).unwrap();
    let table = FlowTable::try_new(*p.table().config()).unwrap();
    let counters = *p.counters();
    p.commit_restore(plan, table, counters, RESTORED_AT);
}

fn inbound(n: u8, flags: u8) -> PacketMeta {
    PacketMeta::ipv4(
        Direction::Inbound,
        protocol::TCP,
        [198, 51, 100, n],
        443,
        [10, 0, 0, 2],
        40000 + u16::from(n),
        flags,
        100,
    )
}

const ACK: u8 = 0x10;
const SYN: u8 = 0x02;

#[test]
fn a_fingerprinted_flow_is_picked_up_as_established_in_both_directions() {
    let mut p = port(64);
    let (a, b) = (inbound(1, ACK), inbound(2, ACK));
    restore(&mut p, vec![FlowKey::of(&a), FlowKey::of(&b)]);
    assert_eq!(p.fingerprints().map(FingerprintSet::len), Some(2));
    // The peer speaks first on one, the VM on the other.
    assert_eq!(p.classify(&a, RESTORED_AT + 1), Verdict::Permit);
    assert_eq!(p.classify(&b.reply(ACK), RESTORED_AT + 1), Verdict::Permit);
    assert_eq!(p.classify(&b, RESTORED_AT + 2), Verdict::Permit);
    for m in [&a, &b] {
        assert_eq!(p.table().get(&FlowKey::of(m)).unwrap().state, FlowState::Established);
    }
    assert_eq!(p.counters().picked_up_fingerprint, 2);
    assert_eq!(p.counters().picked_up_loose, 0);
    // An unknown flow without a fingerprint is still unsolicited.
    assert_eq!(
        p.classify(&inbound(3, ACK), RESTORED_AT + 3),
        Verdict::Block(BlockReason::Unsolicited)
    );
}

#[test]
fn fingerprint_pickup_ends_with_its_window_and_never_takes_a_syn() {
    let mut p = port(64);
    let (a, b, c) = (inbound(1, ACK), inbound(2, ACK), inbound(3, SYN));
    restore(&mut p, vec![FlowKey::of(&a), FlowKey::of(&b), FlowKey::of(&c)]);
    let window = PickupConfig::default().fingerprint_window;
    assert_eq!(p.classify(&c, RESTORED_AT + 1), Verdict::Block(BlockReason::Unsolicited));
    assert_eq!(p.classify(&a, RESTORED_AT + window), Verdict::Permit);
    assert_eq!(p.classify(&b, RESTORED_AT + window + 1), Verdict::Block(BlockReason::Unsolicited));
    assert_eq!(p.counters().picked_up_fingerprint, 1);
    // The periodic sweep drops the set once the window is over.
    p.expire(RESTORED_AT + window + 1, 16);
    assert!(p.fingerprints().is_none());
}

#[test]
fn loose_pickup_is_off_by_default_and_takes_only_non_syn_tcp_within_its_window() {
    let mut p = port(64);
    restore(&mut p, Vec::new());
    assert_eq!(
        p.classify(&inbound(1, ACK), RESTORED_AT + 1),
        Verdict::Block(BlockReason::Unsolicited)
    );

    let mut p = port(64);
    let cfg = PickupConfig { loose: true, loose_window: secs(30), ..PickupConfig::default() };
    p.set_pickup_config(cfg);
    restore(&mut p, Vec::new());
    assert_eq!(p.classify(&inbound(1, ACK), RESTORED_AT + 1), Verdict::Permit);
    assert_eq!(
        p.table().get(&FlowKey::of(&inbound(1, ACK))).unwrap().state,
        FlowState::Established
    );
    assert_eq!(
        p.classify(&inbound(2, SYN), RESTORED_AT + 1),
        Verdict::Block(BlockReason::Unsolicited)
    );
    let udp = PacketMeta { protocol: protocol::UDP, ..inbound(3, 0) };
    assert_eq!(p.classify(&udp, RESTORED_AT + 1), Verdict::Block(BlockReason::Unsolicited));
    assert_eq!(
        p.classify(&inbound(4, ACK), RESTORED_AT + secs(30) + 1),
        Verdict::Block(BlockReason::Unsolicited)
    );
    let c = p.counters();
    assert_eq!((c.picked_up_loose, c.picked_up_fingerprint), (1, 0));
}

#[test]
fn no_pickup_without_a_restore() {
    let mut p = port(64);
    p.set_pickup_config(PickupConfig { loose: true, ..PickupConfig::default() });
    assert_eq!(p.classify(&inbound(1, ACK), 5), Verdict::Block(BlockReason::Unsolicited));
}

#[test]
fn a_fingerprint_pickup_may_displace_an_established_connection_a_loose_one_may_not() {
    let mut p = port(2);
    p.set_pickup_config(PickupConfig { loose: true, ..PickupConfig::default() });
    let fp = inbound(9, ACK);
    restore(&mut p, vec![FlowKey::of(&fp)]);
    // Two established connections the VM opened fill the table.
    for n in 1..=2 {
        p.classify(&inbound(n, SYN).reply(SYN), RESTORED_AT + 1);
        p.classify(&inbound(n, 0x12), RESTORED_AT + 2);
    }
    assert_eq!(p.classify(&inbound(5, ACK), RESTORED_AT + 3), Verdict::Permit);
    assert_eq!(p.counters().refused_full, 1, "a loose pickup displaced a connection");
    assert_eq!(p.counters().picked_up_loose, 0);
    assert_eq!(p.classify(&fp, RESTORED_AT + 4), Verdict::Permit);
    assert_eq!(p.counters().picked_up_fingerprint, 1);
    assert_eq!(p.counters().evicted_lru, 1);
    assert!(p.table().get(&FlowKey::of(&fp)).is_some());
}

#[test]
fn counters_keep_the_pickup_split_through_the_counter_arrays() {
    let mut p = port(64);
    let a = inbound(1, ACK);
    restore(&mut p, vec![FlowKey::of(&a)]);
    p.classify(&a, RESTORED_AT + 1);
    let all = p.counters().to_all_array();
    let at = PortCounters::ALL_NAMES.iter().position(|n| *n == "picked_up_fingerprint").unwrap();
    assert_eq!(all[at], 1);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    /// Within the window every non-SYN, non-RST packet of a fingerprinted flow passes, in
    /// either direction and whatever came before it; after the window, an inbound packet of a
    /// flow never seen is unsolicited.
    #[test]
    fn fingerprinted_flows_always_pass_within_the_window(
        packets in proptest::collection::vec((0u8..16, any::<bool>(), any::<u8>(), 0u64..secs(20)), 1..200),
    ) {
        let mut p = port(8);
        let keys: Vec<FlowKey> = (0u8..16).step_by(2).map(|n| FlowKey::of(&inbound(n, ACK))).collect();
        restore(&mut p, keys.clone());
        let mut now = RESTORED_AT;
        let mut seen = std::collections::HashSet::new();
        for (n, out, flags, dt) in packets {
            now += dt;
            let m = if out { inbound(n, flags).reply(flags) } else { inbound(n, flags) };
            let key = FlowKey::of(&m);
            let v = p.classify(&m, now);
            let in_window = now - RESTORED_AT <= PickupConfig::default().fingerprint_window;
            let starts = flags & (0x02 | 0x04) != 0;
            if keys.contains(&key) && in_window && !starts && !out {
                prop_assert_eq!(v, Verdict::Permit);
            }
            if !out && !seen.contains(&key) && !keys.contains(&key) {
                prop_assert_eq!(v, Verdict::Block(BlockReason::Unsolicited));
            }
            if out || v == Verdict::Permit {
                seen.insert(key);
            }
            if let Err(e) = p.table().check_invariants() {
                return Err(TestCaseError::fail(e));
            }
        }
    }
}
