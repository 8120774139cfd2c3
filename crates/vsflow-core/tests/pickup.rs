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
    // The peer speaks first on one (tentative until the VM answers), the VM on the other.
    assert_eq!(p.classify(&a, RESTORED_AT + 1), Verdict::Permit);
    assert_eq!(p.classify(&a.reply(ACK), RESTORED_AT + 1), Verdict::Permit);
    assert_eq!(p.classify(&b.reply(ACK), RESTORED_AT + 1), Verdict::Permit);
    assert_eq!(p.classify(&b, RESTORED_AT + 2), Verdict::Permit);
    for m in [&a, &b] {
        assert_eq!(p.table().get(&FlowKey::of(m)).unwrap().state, FlowState::Established);
    }
    assert_eq!(p.counters().fingerprint_pickups, 2);
    assert_eq!(p.counters().pickups_confirmed, 2);
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
    assert_eq!(p.classify(&outbound(1, ACK), RESTORED_AT + 1), Verdict::Permit);
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
fn a_tentative_pickup_takes_no_table_slot_and_the_vms_answer_may_displace_like_its_own_packet() {
    let mut p = port(2);
    p.set_pickup_config(PickupConfig { loose: true, ..PickupConfig::default() });
    let fp = inbound(9, ACK);
    restore(&mut p, &[FlowKey::of(&fp)]);
    // Two established connections the VM opened fill the table.
    for n in 1..=2 {
        p.classify(&inbound(n, SYN).reply(SYN), RESTORED_AT + 1);
        p.classify(&inbound(n, 0x12), RESTORED_AT + 2);
    }
    // Pickups the VM has not answered: admitted, but they hold no slot and evict nothing.
    assert_eq!(p.classify(&inbound(5, ACK), RESTORED_AT + 3), Verdict::Permit);
    assert_eq!(p.classify(&fp, RESTORED_AT + 4), Verdict::Permit);
    let c = p.counters();
    assert_eq!((c.picked_up_loose, c.fingerprint_pickups), (1, 1));
    assert_eq!((c.evicted_lru, c.refused_full, p.table().len()), (0, 0, 2));
    assert!(p.table().get(&FlowKey::of(&inbound(1, ACK))).is_some());
    // The VM's answer is its own mid-stream segment: an established connection of the VM,
    // which may displace the least recently used one as the VM's own packets may.
    assert_eq!(p.classify(&fp.reply(ACK), RESTORED_AT + secs(1)), Verdict::Permit);
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

    /// Within the window, against a model of the pickup (issue 16): an inbound segment of a
    /// flow never seen passes only if it is mid-stream (readable, ACK set, SYN and RST clear)
    /// and fingerprinted, and then only a few times until the VM answers; the VM's reset
    /// refuses the flow for good, any other answer establishes it. An inbound initial SYN
    /// never passes (no rule admits it), and an unfingerprinted flow the VM never spoke on
    /// admits nothing.
    #[test]
    fn fingerprinted_flows_pass_within_the_window(
        packets in proptest::collection::vec((0u8..16, any::<bool>(), any::<u8>(), 0u64..secs(20)), 1..200),
    ) {
        #[derive(Clone, Copy, PartialEq, Eq)]
        enum Model { Tentative(u8), Refused, Vm, Judged }
        let mut p = port(64);
        let keys: Vec<FlowKey> = (0u8..16).step_by(2).map(|n| FlowKey::of(&inbound(n, ACK))).collect();
        restore(&mut p, &keys);
        let mut now = RESTORED_AT;
        let mut model = std::collections::HashMap::new();
        // Keys whose fingerprint the VM used up, and keys the VM refused.
        let (mut used, mut refused) = (std::collections::HashSet::new(), std::collections::HashSet::new());
        for (n, out, flags, dt) in packets {
            now += dt;
            let m = if out { outbound(n, flags) } else { inbound(n, flags) };
            let key = FlowKey::of(&m);
            let answers_vm_syn = p.table().get(&key).is_some_and(|r| r.state == FlowState::SynSent);
            // A flow in the table, not idle past its timeout and not a closed one an initial
            // SYN restarts (those start afresh).
            let restart = flags & (SYN | ACK | RST) == SYN
                && p.table().get(&key).is_some_and(|r| r.state == FlowState::Closed);
            let known =
                !restart && p.table().find(&key).is_some_and(|at| !p.table().is_expired(at, now));
            let v = p.classify(&m, now);
            let in_window = now - RESTORED_AT < DEFAULT_PICKUP_WINDOW;
            let midstream = flags & ACK != 0 && flags & (SYN | RST) == 0;
            if out {
                prop_assert_eq!(v, Verdict::Permit);
                // The VM's reset refuses a tentative flow, and so does its SYN-ACK (it
                // answers a SYN: a peer's connection, which the rules judge); anything else it
                // sends opens (or confirms) a flow of its own, as the VM's traffic always
                // does. In the window (fingerprints armed), a mid-stream segment of a flow the
                // table does not know
                // and no unused fingerprint of the VM's vouches for opens a flow whose return
                // traffic the rules judge (issue 16: it may be a connection a peer opened).
                let synack = flags & (SYN | ACK | RST) == SYN | ACK;
                match model.get(&key).copied() {
                    Some(Model::Tentative(_)) if flags & RST != 0 => {
                        refused.insert(key);
                        model.insert(key, Model::Refused);
                    }
                    // A SYN-ACK answers a SYN: the VM resumes nothing, the pickup is refused,
                    // and the half-open flow it opens is judged by the rules.
                    Some(Model::Tentative(_)) if synack => {
                        refused.insert(key);
                        model.insert(key, Model::Judged);
                    }
                    _ if synack && !known => {
                        model.insert(key, Model::Judged);
                    }
                    // The VM's initial SYN withdraws the tentative flow (its own new
                    // connection, no fingerprint used); anything else confirms it.
                    Some(Model::Tentative(_)) if flags & (SYN | ACK | RST) == SYN => {
                        model.insert(key, Model::Vm);
                    }
                    Some(Model::Tentative(_)) if flags & RST == 0 => {
                        used.insert(key);
                        model.insert(key, Model::Vm);
                    }
                    _ if flags & RST == 0 && !known => {
                        let vouched =
                            keys.contains(&key) && !used.contains(&key) && !refused.contains(&key);
                        let flow = match (midstream && in_window, vouched) {
                            (true, true) => {
                                used.insert(key);
                                Model::Vm
                            }
                            (true, false) => Model::Judged,
                            (false, _) => Model::Vm,
                        };
                        model.insert(key, flow);
                    }
                    _ => {}
                }
                continue;
            }
            let initial_syn = flags & (SYN | ACK | RST) == SYN;
            if initial_syn {
                if !answers_vm_syn {
                    prop_assert_eq!(v, Verdict::Block(BlockReason::Unsolicited), "an inbound SYN passed");
                }
                continue;
            }
            // A flow of the VM's that ended (idle past its timeout) is gone: the packet is the
            // first of a flow the table does not know.
            let entry = match model.get(&key).copied() {
                Some(Model::Vm | Model::Judged) if !known => {
                    model.remove(&key);
                    None
                }
                m => m,
            };
            let usable = keys.contains(&key) && !used.contains(&key) && !refused.contains(&key);
            let expected = match entry {
                Some(Model::Vm) => Verdict::Permit,
                Some(Model::Judged) => Verdict::Block(BlockReason::NotAdmitted),
                Some(Model::Tentative(k)) if midstream && in_window && k < 4 => {
                    model.insert(key, Model::Tentative(k + 1));
                    Verdict::Permit
                }
                None if midstream && in_window && usable => {
                    model.insert(key, Model::Tentative(1));
                    Verdict::Permit
                }
                Some(Model::Refused | Model::Tentative(_)) | None => {
                    Verdict::Block(BlockReason::Unsolicited)
                }
            };
            prop_assert_eq!(v, expected, "flags {:#x} of peer {}", flags, n);
            if let Err(e) = p.table().check_invariants() {
                return Err(TestCaseError::fail(e));
            }
        }
        prop_assert!(p.table().iter().all(|(_, r)| r.packets[0] > 0), "a flow the VM never spoke on holds the table");
    }
}

// ---- Issue 16: pickups admit no new conversation ----

const RST: u8 = 0x04;
const SALT: [u64; 2] = [11, 12];

/// The VM's packet on the flow of `inbound(n, _)`.
fn outbound(n: u8, flags: u8) -> PacketMeta {
    inbound(n, flags).reply(flags)
}

/// `SplitMix64`: deterministic keys for the collision searches below.
struct Mix(u64);
impl Mix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

/// An inbound packet of `proto` from a random peer to the VM (10.0.0.2).
fn random_inbound(rng: &mut Mix, proto: u8, flags: u8) -> PacketMeta {
    let r = rng.next().to_le_bytes();
    PacketMeta::ipv4(
        Direction::Inbound,
        proto,
        [r[0] | 1, r[1], r[2], r[3]],
        u16::from_le_bytes([r[4], r[5]]),
        [10, 0, 0, 2],
        u16::from_le_bytes([r[6], r[7]]) | 1,
        flags,
        60,
    )
}

/// Two inbound packets of protocols `a` and `b` on different flows whose keys have the same
/// fingerprint under [`SALT`]: what an outsider's spray finds by chance (a birthday search
/// over 2^18 keys of each protocol; deterministic).
fn colliding(a: u8, b: u8) -> (PacketMeta, PacketMeta) {
    let fp = |m: &PacketMeta| vsflow_core::fingerprint::fingerprint(SALT, &FlowKey::of(m));
    let mut rng = Mix(0x16_0016);
    let mut seen = std::collections::HashMap::new();
    for _ in 0..1 << 18 {
        let m = random_inbound(&mut rng, a, ACK);
        seen.insert(fp(&m), m);
    }
    let mut rng = Mix(0x16_0017);
    for _ in 0..1 << 20 {
        let m = random_inbound(&mut rng, b, ACK);
        if let Some(first) = seen.get(&fp(&m))
            && FlowKey::of(first) != FlowKey::of(&m)
        {
            return (*first, m);
        }
    }
    unreachable!("no collision in 2^38 pairs")
}

#[test]
fn a_syn_on_a_fingerprint_picked_up_flow_is_judged_by_the_rules() {
    let mut p = port(64);
    let (a, b) = (inbound(1, ACK), inbound(2, ACK));
    restore(&mut p, &[FlowKey::of(&a), FlowKey::of(&b)]);
    // Picked up, and the VM answered: an established connection.
    assert_eq!(p.classify(&a, RESTORED_AT + 1), Verdict::Permit);
    assert_eq!(p.classify(&outbound(1, ACK), RESTORED_AT + 2), Verdict::Permit);
    assert_eq!(p.classify(&a, RESTORED_AT + 3), Verdict::Permit);
    // A SYN on its 5-tuple is a new connection: no rule admits it.
    assert_eq!(
        p.classify(&inbound(1, SYN), RESTORED_AT + 4),
        Verdict::Block(BlockReason::Unsolicited)
    );
    // The same before the VM answered.
    assert_eq!(p.classify(&b, RESTORED_AT + 5), Verdict::Permit);
    assert_eq!(
        p.classify(&inbound(2, SYN), RESTORED_AT + 6),
        Verdict::Block(BlockReason::Unsolicited)
    );
}

#[test]
fn loose_pickup_never_admits_the_syn_that_follows_an_ack() {
    let mut p = port(64);
    p.set_pickup_config(PickupConfig { loose: true, loose_window: secs(30) });
    restore(&mut p, &[]);
    assert_eq!(p.classify(&inbound(1, ACK), RESTORED_AT + 1), Verdict::Permit);
    assert_eq!(
        p.classify(&inbound(1, SYN), RESTORED_AT + 2),
        Verdict::Block(BlockReason::Unsolicited)
    );
    assert_eq!(p.classify(&outbound(1, RST), RESTORED_AT + 3), Verdict::Permit);
    assert_eq!(
        p.classify(&inbound(1, ACK), RESTORED_AT + 4),
        Verdict::Block(BlockReason::Unsolicited),
        "after the VM refused the picked-up flow, nothing on it passes"
    );
}

#[test]
fn a_pickup_is_tentative_until_the_vm_answers_and_a_refused_one_uses_up_no_fingerprint() {
    let mut p = port(64);
    let a = inbound(1, ACK);
    restore(&mut p, &[FlowKey::of(&a)]);
    assert_eq!(p.classify(&a, RESTORED_AT + 1), Verdict::Permit);
    assert!(p.table().get(&FlowKey::of(&a)).is_none(), "tentative: not in the table yet");
    // The VM's TCP stack has no such connection: it answers with a reset.
    assert_eq!(p.classify(&outbound(1, RST), RESTORED_AT + 2), Verdict::Permit);
    assert_eq!(p.pickup().picked(), 0, "a refused pickup used up its fingerprint");
    for flags in [ACK, SYN, ACK | 0x08] {
        assert_eq!(
            p.classify(&inbound(1, flags), RESTORED_AT + 3),
            Verdict::Block(BlockReason::Unsolicited),
            "flags {flags:#x} passed after the VM refused the flow"
        );
    }
    assert!(p.table().get(&FlowKey::of(&a)).is_none());
}

#[test]
fn a_false_match_the_vm_refuses_does_not_cost_the_real_connection() {
    let (real, spray) = colliding(protocol::TCP, protocol::TCP);
    let mut p = port(64);
    restore(&mut p, &[FlowKey::of(&real)]);
    // The outsider's ACK matches the real connection's fingerprint: one mid-stream segment
    // reaches the VM, which resets it; then nothing more passes on that 5-tuple.
    assert_eq!(p.classify(&spray, RESTORED_AT + 1), Verdict::Permit);
    assert_eq!(p.classify(&spray.reply(RST), RESTORED_AT + 2), Verdict::Permit);
    assert_eq!(p.classify(&spray, RESTORED_AT + 3), Verdict::Block(BlockReason::Unsolicited));
    let syn = PacketMeta { tcp_flags: vsflow_core::TcpFlags(SYN), ..spray };
    assert_eq!(p.classify(&syn, RESTORED_AT + 4), Verdict::Block(BlockReason::Unsolicited));
    // The real connection resumes: picked up, confirmed by the VM, established.
    assert_eq!(p.classify(&real, RESTORED_AT + 5), Verdict::Permit);
    assert_eq!(p.classify(&real.reply(ACK), RESTORED_AT + 6), Verdict::Permit);
    assert_eq!(p.classify(&real, RESTORED_AT + 7), Verdict::Permit);
    assert_eq!(p.table().get(&FlowKey::of(&real)).map(|r| r.state), Some(FlowState::Established));
    assert_eq!(p.pickup().picked(), 1);
}

#[test]
fn udp_and_other_protocols_are_never_picked_up_by_a_fingerprint() {
    // A UDP datagram whose key has the fingerprint of a carried TCP connection.
    let (tcp, udp) = colliding(protocol::TCP, protocol::UDP);
    let mut p = port(64);
    restore(&mut p, &[FlowKey::of(&tcp)]);
    assert_eq!(p.classify(&udp, RESTORED_AT + 1), Verdict::Block(BlockReason::Unsolicited));
    assert_eq!(p.classify(&udp, RESTORED_AT + 2), Verdict::Block(BlockReason::Unsolicited));
    // Another protocol whose key is fingerprinted (as if it collided): not picked up either.
    let gre = PacketMeta { protocol: 47, src_port: 0, dst_port: 0, ..inbound(7, 0) };
    let mut q = port(64);
    restore(&mut q, &[FlowKey::of(&gre)]);
    assert_eq!(q.classify(&gre, RESTORED_AT + 1), Verdict::Block(BlockReason::Unsolicited));
    assert_eq!(q.counters().fingerprint_pickups, 0);
}

#[test]
fn the_vms_own_udp_on_a_colliding_key_does_not_use_up_the_tcp_connections_pickup() {
    let (tcp, udp) = colliding(protocol::TCP, protocol::UDP);
    let mut p = port(64);
    restore(&mut p, &[FlowKey::of(&tcp)]);
    // The VM's datagram opens its own flow, as always, and its reply passes.
    assert_eq!(p.classify(&udp.reply(0), RESTORED_AT + 1), Verdict::Permit);
    assert_eq!(p.classify(&udp, RESTORED_AT + 2), Verdict::Permit);
    // The TCP connection is still picked up.
    assert_eq!(p.classify(&tcp, RESTORED_AT + 3), Verdict::Permit);
    assert_eq!(p.classify(&tcp.reply(ACK), RESTORED_AT + 4), Verdict::Permit);
    assert_eq!(p.pickup().picked(), 1);
}

/// The spray, scaled to a test: 2^20 ACKs from random peers to random ports in one
/// pickup window, each followed by the SYN an attacker sends when its ACK got through and by
/// a UDP datagram on the same ports; the VM resets every ACK it receives (it has no such
/// connection). Nothing new is opened, no fingerprint is used up, and every carried connection
/// is picked up afterwards. (docs/SECURITY.md and `examples/pickup_spray.rs` run 10^8.)
#[test]
fn a_spray_opens_nothing_and_costs_no_carried_connection() {
    let n = 40_000u32;
    let mut rng = Mix(0x5EED_0016);
    let real: Vec<PacketMeta> =
        (0..n).map(|_| random_inbound(&mut rng, protocol::TCP, ACK)).collect();
    let keys: Vec<FlowKey> = real.iter().map(FlowKey::of).collect();
    let mut p = port(65_536);
    restore(&mut p, &keys);
    let carried: std::collections::HashSet<FlowKey> = keys.iter().copied().collect();
    let mut rng = Mix(0xA77A_C4E5);
    let (mut acks, mut syns, mut udp) = (0u64, 0u64, 0u64);
    let mut now = RESTORED_AT;
    for _ in 0..1 << 20 {
        now += 1;
        let ack = random_inbound(&mut rng, protocol::TCP, ACK);
        if carried.contains(&FlowKey::of(&ack)) {
            continue;
        }
        if p.classify(&ack, now) == Verdict::Permit {
            acks += 1;
            p.classify(&ack.reply(RST), now);
        }
        let syn = PacketMeta { tcp_flags: vsflow_core::TcpFlags(SYN), ..ack };
        syns += u64::from(p.classify(&syn, now) == Verdict::Permit);
        let dgram =
            PacketMeta { protocol: protocol::UDP, tcp_flags: vsflow_core::TcpFlags(0), ..ack };
        udp += u64::from(p.classify(&dgram, now) == Verdict::Permit);
    }
    assert_eq!((syns, udp), (0, 0), "new inbound connections / UDP flows admitted");
    // Expected false matches: 2^20 * 40,000 / 2^32 = 9.8 (the documented rate).
    assert!(acks <= 40, "{acks} mid-stream segments admitted, far over n/2^32 per packet");
    assert_eq!(p.pickup().picked(), 0, "the spray used up fingerprints");
    let mut lost = 0;
    for m in &real {
        now += 1;
        if p.classify(m, now) != Verdict::Permit {
            lost += 1;
        }
        p.classify(&m.reply(ACK), now);
    }
    assert_eq!(lost, 0, "carried connections lost to the spray");
    assert_eq!(p.pickup().picked(), n);
}

/// The VM's SYN-ACK on a 5-tuple picked up tentatively (by fingerprint, loosely, or in the
/// restore window) means a SYN reached the VM that vsflow never judged as one: a later
/// fragment that overlaps the first fragment's TCP flags, reassembled by the guest (RFC 1858
/// section 3.3). A VM resuming a carried connection never answers with a SYN-ACK. The answer
/// passes (the VM's own packet), but it confirms nothing: the peer's handshake ACK and data are
/// judged by the rules, which admit nothing here, and no fingerprint is used up.
#[test]
fn the_vms_syn_ack_never_confirms_a_pickup() {
    const SYNACK: u8 = 0x12;
    const PSH: u8 = 0x08;
    let a = inbound(1, ACK);
    let mut fingerprint = port(64);
    restore(&mut fingerprint, &[FlowKey::of(&a)]);
    let mut loose = port(64);
    loose.set_pickup_config(PickupConfig { loose: true, loose_window: secs(30) });
    restore(&mut loose, &[]);
    let mut window = port(64);
    window.begin_restore();
    for (name, p) in
        [("fingerprint", &mut fingerprint), ("loose", &mut loose), ("window", &mut window)]
    {
        assert_eq!(p.classify(&a, RESTORED_AT + 1), Verdict::Permit, "{name}: not picked up");
        assert_eq!(p.classify(&outbound(1, SYNACK), RESTORED_AT + 2), Verdict::Permit, "{name}");
        for (t, flags) in [ACK, ACK | PSH, ACK].into_iter().enumerate() {
            let v = p.classify(&inbound(1, flags), RESTORED_AT + 3 + t as u64);
            assert!(
                matches!(v, Verdict::Block(_)),
                "{name}: the peer's segment {t} (flags {flags:#x}) after the VM's SYN-ACK passed: \
                 a connection opened to a port no rule admits"
            );
        }
    }
    assert_eq!(fingerprint.pickup().picked(), 0, "the SYN-ACK used up a carried fingerprint");
}

/// ICMP errors across a migration (conntrack's RELATED, `icmp.rs`): an outsider's error whose
/// quote names the VM's packet of a carried connection not picked up yet, of a tentative
/// pickup, or of no connection at all is blocked on the destination, in the restore window as
/// after it; it creates no flow, confirms no pickup and uses up no fingerprint; and an error
/// quoting a connection that has expired does not bring it back.
#[test]
fn a_forged_icmp_error_creates_confirms_or_resurrects_nothing_across_a_migration() {
    use vsflow_core::Icmp;
    use vsflow_core::icmp::Quoted;
    // Destination unreachable from the peer of `inbound(n, _)`, quoting the VM's segment to it.
    let error = |n: u8| {
        let peer = inbound(n, ACK);
        let mut m = PacketMeta::ipv4(
            Direction::Inbound,
            protocol::ICMP,
            [198, 51, 100, n],
            3,
            [10, 0, 0, 2],
            1,
            0,
            56,
        );
        m.icmp = Icmp::Error(Quoted {
            protocol: protocol::TCP,
            dst_addr: peer.src_addr,
            src_port: peer.dst_port,
            dst_port: peer.src_port,
            to_sender: true,
            query: None,
        });
        m
    };
    let unsolicited = Verdict::Block(BlockReason::Unsolicited);
    // The restore window: nothing is known yet.
    let mut w = port(64);
    w.begin_restore();
    assert_eq!(w.classify(&inbound(2, ACK), RESTORED_AT), Verdict::Permit, "window pickup");
    for n in [1, 2, 3] {
        assert_eq!(w.classify(&error(n), RESTORED_AT + 1), unsolicited, "window, peer {n}");
    }
    assert!(w.table().is_empty(), "an error made a flow in the window");
    assert!(w.tentative().is_tentative(&FlowKey::of(&inbound(2, ACK))));
    // After the restore: 1 and 2 carried as fingerprints, 2 picked up tentatively, 3 unknown.
    let (a, b) = (inbound(1, ACK), inbound(2, ACK));
    let mut p = port(64);
    restore(&mut p, &[FlowKey::of(&a), FlowKey::of(&b)]);
    assert_eq!(p.classify(&b, RESTORED_AT + 1), Verdict::Permit);
    for n in [1, 2, 3] {
        assert_eq!(p.classify(&error(n), RESTORED_AT + 2), unsolicited, "peer {n}");
    }
    assert!(p.table().is_empty(), "an error made a flow");
    assert!(p.tentative().is_tentative(&FlowKey::of(&b)), "an error settled a pickup");
    assert_eq!(p.pickup().picked(), 0, "an error used up a fingerprint");
    // The real connections still resume.
    assert_eq!(p.classify(&b.reply(ACK), RESTORED_AT + 3), Verdict::Permit);
    assert_eq!(p.classify(&a, RESTORED_AT + 3), Verdict::Permit);
    assert_eq!(p.classify(&a.reply(ACK), RESTORED_AT + 4), Verdict::Permit);
    assert_eq!(p.pickup().picked(), 2);
    // Related while the connection lives; not once it has expired, and it stays expired.
    assert_eq!(p.classify(&error(1), RESTORED_AT + 5), Verdict::Permit, "a real error");
    let late = RESTORED_AT + 5 + TableConfig::default().timeouts.tcp_established + 1;
    assert_eq!(p.classify(&error(1), late), unsolicited, "an error on an expired connection");
    assert_eq!(p.classify(&a, late + 1), unsolicited, "the error resurrected the connection");
}
