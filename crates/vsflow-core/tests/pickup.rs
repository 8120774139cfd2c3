//! Issue 12's classification semantics after a restore: fingerprint pickup (both directions,
//! within its window) and loose pickup (opt-in, non-SYN TCP, within its window), counted apart
//! from flows carried exactly.

use proptest::prelude::*;
use vsflow_core::codec::{self, DecodeConfig, Decoded};
use vsflow_core::fingerprint::{DEFAULT_PICKUP_WINDOW, FingerprintSet};
use vsflow_core::flow::TableConfig;
use vsflow_core::port::PickupConfig;
use vsflow_core::time::secs;
use vsflow_core::{
    BlockReason, Direction, FlowKey, FlowState, Guid, Mode, PacketMeta, Port, PortConfig,
    PortCounters, PortIdentity, Verdict, protocol,
};

const RESTORED_AT: u64 = 1_000 * 10_000_000;
const PROVIDER: Guid = Guid::from_parts(1, 2, 3, *b"pickup!!");

fn port(max_flows: u32) -> Port {
    let cfg = PortConfig {
        table: TableConfig { max_flows, ..TableConfig::default() },
        initial_mode: Mode::Enforce,
    };
    Port::try_new(PortIdentity::try_from_str("pickup").unwrap(), cfg).unwrap()
}

/// Applies a restore that carries no exact flow, only the fingerprints of `keys` (an Enforce
/// port without rules saved it).
fn restore(p: &mut Port, keys: &[FlowKey]) {
    let mut blob = Vec::new();
    let cfg = codec::EncodeConfig { provider: PROVIDER, cap: codec::DEFAULT_CAP };
    codec::encode(&port(4), 0, &cfg, &mut blob).unwrap();
    let Decoded::State(mut state) = codec::decode(&blob, &DecodeConfig::default()).unwrap() else {
        unreachable!()
    };
    state.fingerprints = FingerprintSet::try_from_keys([11, 12], keys.iter()).unwrap();
    state.digest = 0;
    codec::apply(p, &state, RESTORED_AT).unwrap();
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
    restore(&mut p, &[FlowKey::of(&a), FlowKey::of(&b)]);
    assert_eq!(p.pickup().set().len(), 2);
    // The peer speaks first on one, the VM on the other.
    assert_eq!(p.classify(&a, RESTORED_AT + 1), Verdict::Permit);
    assert_eq!(p.classify(&b.reply(ACK), RESTORED_AT + 1), Verdict::Permit);
    assert_eq!(p.classify(&b, RESTORED_AT + 2), Verdict::Permit);
    for m in [&a, &b] {
        assert_eq!(p.table().get(&FlowKey::of(m)).unwrap().state, FlowState::Established);
    }
    assert_eq!(p.counters().fingerprint_pickups, 2);
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
    restore(&mut p, &[FlowKey::of(&a), FlowKey::of(&b), FlowKey::of(&c)]);
    let window = DEFAULT_PICKUP_WINDOW;
    assert_eq!(p.classify(&c, RESTORED_AT + 1), Verdict::Block(BlockReason::Unsolicited));
    assert_eq!(p.classify(&a, RESTORED_AT + window - 1), Verdict::Permit);
    assert_eq!(p.classify(&b, RESTORED_AT + window), Verdict::Block(BlockReason::Unsolicited));
    assert_eq!(p.counters().fingerprint_pickups, 1);
    // The periodic sweep frees the set once the window is over.
    p.expire(RESTORED_AT + window - 1, 16);
    assert_eq!(p.pickup().set().len(), 3);
    p.expire(RESTORED_AT + window, 16);
    assert!(p.pickup().set().is_empty());
}

#[test]
fn loose_pickup_is_off_by_default_and_takes_only_non_syn_tcp_within_its_window() {
    let mut p = port(64);
    restore(&mut p, &[]);
    assert_eq!(
        p.classify(&inbound(1, ACK), RESTORED_AT + 1),
        Verdict::Block(BlockReason::Unsolicited)
    );

    let mut p = port(64);
    let cfg = PickupConfig { loose: true, loose_window: secs(30) };
    p.set_pickup_config(cfg);
    restore(&mut p, &[]);
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
    assert_eq!((c.picked_up_loose, c.fingerprint_pickups), (1, 0));
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
    restore(&mut p, &[FlowKey::of(&fp)]);
    // Two established connections the VM opened fill the table.
    for n in 1..=2 {
        p.classify(&inbound(n, SYN).reply(SYN), RESTORED_AT + 1);
        p.classify(&inbound(n, 0x12), RESTORED_AT + 2);
    }
    assert_eq!(p.classify(&inbound(5, ACK), RESTORED_AT + 3), Verdict::Permit);
    assert_eq!(p.counters().refused_full, 1, "a loose pickup displaced a connection");
    assert_eq!(p.counters().picked_up_loose, 0);
    assert_eq!(p.classify(&fp, RESTORED_AT + 4), Verdict::Permit);
    assert_eq!(p.counters().fingerprint_pickups, 1);
    assert_eq!(p.counters().evicted_lru, 1);
    assert!(p.table().get(&FlowKey::of(&fp)).is_some());
}

#[test]
fn counters_keep_the_pickup_split_through_the_counter_arrays() {
    let mut p = port(64);
    let a = inbound(1, ACK);
    restore(&mut p, &[FlowKey::of(&a)]);
    p.classify(&a, RESTORED_AT + 1);
    let all = p.counters().to_all_array();
    let at = PortCounters::ALL_NAMES.iter().position(|n| *n == "fingerprint_pickups").unwrap();
    assert_eq!(all[at], 1);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    /// Within the window, an inbound packet of a fingerprinted flow that is not a SYN or RST
    /// passes, in whatever order the two directions speak, until the connection ends (a
    /// fingerprint admits one flow: once a picked-up flow is reset or finished and gone, it is
    /// not picked up again); an inbound packet of a flow never seen and not fingerprinted is
    /// unsolicited.
    #[test]
    fn fingerprinted_flows_pass_within_the_window(
        packets in proptest::collection::vec((0u8..16, any::<bool>(), any::<u8>(), 0u64..secs(20)), 1..200),
    ) {
        let mut p = port(64);
        let keys: Vec<FlowKey> = (0u8..16).step_by(2).map(|n| FlowKey::of(&inbound(n, ACK))).collect();
        restore(&mut p, &keys);
        let mut now = RESTORED_AT;
        let mut seen = std::collections::HashSet::new();
        let mut ended = std::collections::HashSet::new();
        for (n, out, flags, dt) in packets {
            now += dt;
            let m = if out { inbound(n, flags).reply(flags) } else { inbound(n, flags) };
            let key = FlowKey::of(&m);
            let v = p.classify(&m, now);
            let in_window = now - RESTORED_AT < DEFAULT_PICKUP_WINDOW;
            let starts = flags & (0x02 | 0x04) != 0;
            if keys.contains(&key) && in_window && !starts && !out && !ended.contains(&key) {
                prop_assert_eq!(v, Verdict::Permit);
            }
            if flags & (0x01 | 0x04) != 0 {
                ended.insert(key);
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
