//! A port split into shards judges and saves as the one-lock port would (issue 18 §2).
//!
//! The same random traffic (TCP with any flags, UDP, ICMP queries, replies and errors quoting
//! flows, unreadable headers), interleaved with rule and mode changes, expiry and idle time, goes
//! to a whole port and to a port of four shards, each packet to the shard
//! `ShardHasher::shard_of` names (what the callout does). Every verdict must be the same, and
//! merged back (what a save, a restore or an IOCTL sees) the sharded port must hold exactly the
//! whole port's flows, records and counters. Rule and mode changes merge, change and split
//! again, as the driver does (`PortSlot::lock_whole`, then the sweep).

use proptest::prelude::*;
use vsflow_core::flow::TableConfig;
use vsflow_core::packet::Headers;
use vsflow_core::port::shards::{self, ShardHasher};
use vsflow_core::{
    AllowRule, Direction, FlowKey, FlowRecord, Icmp, Mode, PacketMeta, Port, PortConfig,
    PortCounters, PortIdentity, PortRange, Prefix, icmp::Quoted, protocol,
};

const SHARDS: usize = 4;
const MAX_FLOWS: u32 = 4096;

fn arb_packet() -> impl Strategy<Value = PacketMeta> {
    (
        any::<bool>(),
        prop_oneof![Just(protocol::TCP), Just(protocol::UDP), Just(protocol::ICMP)],
        0u8..4,
        0u16..40,
        0u8..4,
        0u16..6,
        any::<u8>(),
        0u8..16,
    )
        .prop_map(|(out, proto, local, lport, remote, rport, flags, extra)| {
            let vm = [10, 0, 0, local];
            let peer = [198, 51, 100, remote];
            let mut m = if out {
                PacketMeta::ipv4(Direction::Outbound, proto, vm, lport, peer, rport, flags, 60)
            } else {
                PacketMeta::ipv4(Direction::Inbound, proto, peer, rport, vm, lport, flags, 60)
            };
            if proto == protocol::ICMP {
                m.icmp = match extra % 6 {
                    0 | 1 => Icmp::Query { request: extra % 6 == 0, kind: 8, id: lport },
                    // An error quoting a TCP or UDP packet of these endpoints (back to its
                    // sender, or not), or the VM's echo.
                    2 | 3 => Icmp::Error(Quoted {
                        protocol: if extra % 6 == 2 { protocol::TCP } else { protocol::UDP },
                        dst_addr: m.src_addr,
                        src_port: m.dst_port,
                        dst_port: m.src_port,
                        to_sender: extra < 12,
                        query: None,
                    }),
                    4 => Icmp::Error(Quoted {
                        protocol: protocol::ICMP,
                        dst_addr: m.src_addr,
                        src_port: 0,
                        dst_port: 0,
                        to_sender: true,
                        query: Some((true, 8, lport)),
                    }),
                    _ => Icmp::Other,
                };
            } else if extra == 15 {
                m.headers = Headers::NoFlags;
            } else if extra == 14 {
                m.headers = Headers::NoPorts;
            }
            m
        })
}

#[derive(Clone, Debug)]
enum Step {
    Packet(PacketMeta, u64),
    Rules(u16),
    Mode(bool),
    Expire,
}

fn arb_step() -> impl Strategy<Value = Step> {
    prop_oneof![
        40 => (arb_packet(), 0u64..2_000_000_000).prop_map(|(m, dt)| Step::Packet(m, dt)),
        1 => (0u16..40).prop_map(Step::Rules),
        1 => any::<bool>().prop_map(Step::Mode),
        1 => Just(Step::Expire),
    ]
}

fn config() -> TableConfig {
    TableConfig { max_flows: MAX_FLOWS, initial_capacity: 4, ..TableConfig::default() }
}

fn port(table: TableConfig) -> Port {
    let cfg = PortConfig { table, initial_mode: Mode::Enforce };
    Port::try_new(PortIdentity::try_from_str("shards").unwrap(), cfg).unwrap()
}

/// The whole port and its shards (`home` and `others`), split.
struct Sharded {
    home: Port,
    others: Vec<Option<Port>>,
    hasher: ShardHasher,
}

impl Sharded {
    fn new() -> Self {
        let table = TableConfig {
            max_flows: shards::shard_bound(MAX_FLOWS, SHARDS),
            initial_capacity: 0,
            ..config()
        };
        let mut s = Self {
            home: port(config()),
            others: (1..SHARDS).map(|_| Some(port(table))).collect(),
            hasher: ShardHasher::new(0x1234_5678),
        };
        s.split();
        s
    }

    fn refs(others: &mut [Option<Port>]) -> Vec<Option<&mut Port>> {
        others.iter_mut().map(Option::as_mut).collect()
    }

    fn split(&mut self) {
        assert!(shards::may_split(&self.home, 0));
        let mut refs = Self::refs(&mut self.others);
        shards::split(&mut self.home, &mut refs, &self.hasher, &config()).expect("splits");
    }

    fn merge(&mut self, now: u64) {
        let mut refs = Self::refs(&mut self.others);
        assert_eq!(shards::merge(&mut self.home, &mut refs, &config(), now), 0);
    }

    fn shard(&mut self, meta: &PacketMeta) -> &mut Port {
        match self.hasher.shard_of(meta, SHARDS) {
            0 => &mut self.home,
            s => self.others[s - 1].as_mut().unwrap(),
        }
    }
}

fn flows(p: &Port) -> Vec<(FlowKey, FlowRecord)> {
    let mut v: Vec<_> = p.table().iter().map(|(k, r)| (*k, *r)).collect();
    v.sort_by_key(|f| f.0);
    v
}

fn rules(n: u16) -> Vec<AllowRule> {
    (0..n % 4)
        .map(|i| AllowRule {
            protocol: Some(protocol::TCP),
            local_ports: PortRange::single(i * 3),
            remote: Prefix::Any,
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn a_sharded_port_judges_and_merges_back_as_the_whole_port(
        steps in proptest::collection::vec(arb_step(), 1..600),
    ) {
        let mut whole = port(config());
        let mut sharded = Sharded::new();
        let mut now = 1_000u64;
        for step in steps {
            match step {
                Step::Packet(m, dt) => {
                    now += dt;
                    let a = whole.classify(&m, now);
                    let b = sharded.shard(&m).classify(&m, now);
                    prop_assert_eq!(a, b, "verdict on {:?}", m);
                }
                Step::Rules(n) => {
                    // As the driver does: the port whole for the change, split again later.
                    sharded.merge(now);
                    let v = whole.replace_rules(&rules(n)).unwrap();
                    prop_assert_eq!(sharded.home.replace_rules(&rules(n)).unwrap(), v);
                    sharded.split();
                }
                Step::Mode(enforce) => {
                    let mode = if enforce { Mode::Enforce } else { Mode::Monitor };
                    sharded.merge(now);
                    whole.set_mode(mode);
                    sharded.home.set_mode(mode);
                    sharded.split();
                }
                Step::Expire => {
                    let a = whole.expire(now, usize::MAX);
                    let mut b = sharded.home.expire(now, usize::MAX);
                    for o in sharded.others.iter_mut().flatten() {
                        b += o.expire(now, usize::MAX);
                    }
                    prop_assert_eq!(a, b, "flows expired");
                }
            }
        }
        sharded.merge(now);
        prop_assert_eq!(flows(&whole), flows(&sharded.home));
        prop_assert_eq!(
            whole.counters().to_all_array(),
            sharded.home.counters().to_all_array()
        );
        prop_assert!(sharded.home.table().check_invariants().is_ok());
        prop_assert_eq!(sharded.home.rules(), whole.rules());
        prop_assert_eq!(sharded.home.mode(), whole.mode());
    }
}

#[test]
fn every_flow_of_a_split_port_is_in_the_shard_its_packets_go_to() {
    let mut s = Sharded { home: port(config()), others: Vec::new(), hasher: ShardHasher::new(7) };
    let table = TableConfig {
        max_flows: shards::shard_bound(MAX_FLOWS, SHARDS),
        initial_capacity: 0,
        ..config()
    };
    s.others = (1..SHARDS).map(|_| Some(port(table))).collect();
    let mut packets = Vec::new();
    for k in 0..2_000u16 {
        let m = PacketMeta::ipv4(
            Direction::Outbound,
            protocol::TCP,
            [10, 0, 0, 1],
            1024 + k,
            [198, 51, 100, 7],
            443,
            0x02,
            60,
        );
        let _ = s.home.classify(&m, 10);
        packets.push(m);
    }
    s.split();
    let mut sizes = [s.home.table().len(), 0, 0, 0];
    for (i, o) in s.others.iter().flatten().enumerate() {
        sizes[i + 1] = o.table().len();
    }
    assert_eq!(sizes.iter().sum::<usize>(), 2_000);
    assert!(sizes.iter().all(|&n| n > 350), "a keyed hash spreads the flows: {sizes:?}");
    for m in &packets {
        let answer = PacketMeta::ipv4(
            Direction::Inbound,
            protocol::TCP,
            [198, 51, 100, 7],
            443,
            [10, 0, 0, 1],
            m.src_port,
            0x12,
            60,
        );
        assert!(s.shard(&answer).table().get(&FlowKey::of(&answer)).is_some());
    }
    let c: PortCounters = *s.home.counters();
    s.merge(10);
    assert_eq!(s.home.table().len(), 2_000);
    assert_eq!(s.home.counters().flows_created, c.flows_created);
}

#[test]
fn a_split_that_would_overfill_a_shard_changes_nothing() {
    // A port over its shards' bound (e.g. FlowsPerPort lowered) stays whole.
    let small = TableConfig { max_flows: 8, initial_capacity: 4, ..TableConfig::default() };
    let mut home = port(small);
    for k in 0..8u16 {
        let m = PacketMeta::ipv4(
            Direction::Outbound,
            protocol::UDP,
            [10, 0, 0, 1],
            k,
            [198, 51, 100, 7],
            53,
            0,
            60,
        );
        let _ = home.classify(&m, 10);
    }
    let shard_table = TableConfig { max_flows: shards::shard_bound(8, 8), ..small };
    let mut others: Vec<Option<Port>> = (1..8).map(|_| Some(port(shard_table))).collect();
    let mut refs: Vec<Option<&mut Port>> = others.iter_mut().map(Option::as_mut).collect();
    let before = flows(&home);
    let _ = shards::split(&mut home, &mut refs, &ShardHasher::new(1), &small);
    let spread: usize = others.iter().flatten().map(|o| o.table().len()).sum();
    if flows(&home) == before {
        assert_eq!(spread, 0, "a refused split moves nothing");
    } else {
        assert_eq!(spread + home.table().len(), 8, "a split moves every flow");
    }
}
