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
