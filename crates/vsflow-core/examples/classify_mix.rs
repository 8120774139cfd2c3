//! The classify workloads of the criterion benches, as a program callgrind can count
//! instructions of (repeatable on a noisy machine, unlike wall time):
//!
//! ```text
//! cargo build --release -p vsflow-core --example classify_mix
//! for m in setup existing new; do
//!   valgrind --tool=callgrind --callgrind-out-file=/dev/null \
//!     target/release/examples/classify_mix $m 2>&1 | grep Collected
//! done
//! ```
//!
//! `setup` builds a port with 10,000 flows; `existing` adds 1,000,000 packets of those flows
//! (replies, shuffled); `new` adds 100 rounds of 4,096 new flows into an empty port with room.
//! Instructions per packet = (mode - setup) / packets.

use std::hint::black_box;

use vsflow_core::PacketMeta;

#[path = "../benches/workload/mod.rs"]
mod workload;
use workload::{Mix, packets, port};

fn main() {
    let mode = std::env::args().nth(1).unwrap_or_default();
    let pkts = packets(10_000, 1);
    let mut order: Vec<usize> = (0..pkts.len()).collect();
    let mut r = Mix(7);
    for i in (1..order.len()).rev() {
        let j = usize::try_from(r.next() % (i as u64 + 1)).unwrap_or(0);
        order.swap(i, j);
    }
    let replies: Vec<PacketMeta> = order.iter().map(|&i| pkts[i].reply(0x10)).collect();
    let mut p = port(16_384, 16_384);
    for (i, m) in pkts.iter().enumerate() {
        p.classify(m, i as u64);
    }
    let fresh = packets(4096, 99);
    let mut permitted = 0u64;
    match mode.as_str() {
        "existing" => {
            let mut now = 100_000u64;
            for k in 0..1_000_000usize {
                now += 1;
                let m = &replies[k % replies.len()];
                permitted +=
                    u64::from(p.classify(black_box(m), now) == vsflow_core::Verdict::Permit);
            }
        }
        "new" => {
            for _ in 0..100 {
                let mut q = port(4096, 4096);
                for (k, m) in fresh.iter().enumerate() {
                    let v = q.classify(black_box(m), k as u64);
                    permitted += u64::from(v == vsflow_core::Verdict::Permit);
                }
            }
        }
        _ => {}
    }
    println!("{mode}: {} flows, {permitted} permitted", p.table().len());
}
