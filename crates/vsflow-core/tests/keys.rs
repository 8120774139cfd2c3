//! One per-boot seed, several hashes: the flow table's, the port map's and the shards' hints
//! (foldhash), the encoder's address index, the fingerprint salt's and the blob digest's
//! (`SipHash`). Each must be keyed by a key of its own, derived from the seed for that purpose
//! (docs/SECURITY.md, "Keys"), so that what a peer learns of one hash's behaviour (which of its
//! 5-tuples collide in the flow table, say) tells it nothing about another's.

use foldhash::fast::FixedState;
use vsflow_core::flow::{FlowKey, FlowTable, TableConfig};
use vsflow_core::packet::v4;
use vsflow_core::{IpFamily, protocol};

fn keys(n: u16) -> impl Iterator<Item = FlowKey> {
    (0..n).map(|i| FlowKey {
        family: IpFamily::V4,
        protocol: protocol::TCP,
        local_addr: v4([10, 0, 0, 7]),
        remote_addr: v4([198, 51, 100, u8::try_from(i % 251).unwrap_or(0)]),
        local_port: 443,
        remote_port: 10_000 + i,
    })
}

/// The port map (vsflow-callout) hashes with foldhash keyed by the boot seed itself, and so did
/// the flow table and the encoder's address index: one hash's collisions were the others'.
#[test]
fn the_flow_tables_hash_is_not_keyed_by_the_boot_seed_itself() {
    for seed in [1u64, 0x5653_464c_4f57_0001, 0xdead_beef_0123_4567] {
        let table = FlowTable::try_new(TableConfig { hash_seed: seed, ..TableConfig::default() })
            .expect("a table");
        let raw = FixedState::with_seed(seed);
        let same = keys(256).filter(|k| table.hash(k) == std::hash::BuildHasher::hash_one(&raw, k));
        assert_eq!(same.count(), 0, "seed {seed:#x}: the table hashes with the seed as its key");
    }
}
