//! 200 encodes of a 1,200-flow IPv4 port, over the 60 KiB cap (about 880 flows kept): the
//! workload docs/PERFORMANCE.md measures with callgrind, which counts instructions and so
//! compares versions repeatably on a noisy machine:
//!
//! ```text
//! cargo build --release -p vsflow-core --example encode_over_cap
//! valgrind --tool=callgrind --callgrind-out-file=/dev/null \
//!     target/release/examples/encode_over_cap 2>&1 | grep Collected
//! ```

use std::hint::black_box;

use vsflow_core::codec;

#[path = "../benches/workload/mod.rs"]
mod workload;

fn main() {
    let now = 1_000_000_000_000u64;
    let port = workload::port_with_flows(now, 1200);
    let cfg = codec::EncodeConfig { provider: workload::PROVIDER, cap: codec::DEFAULT_CAP };
    let mut out = Vec::with_capacity(codec::DEFAULT_CAP);
    let mut dropped = 0u64;
    for _ in 0..200 {
        let summary = codec::encode(black_box(&port), now, &cfg, &mut out);
        dropped += summary.map_or(0, |s| u64::from(s.flows_dropped));
    }
    println!("200 encodes, {} bytes each, {} flows dropped each", out.len(), dropped / 200);
}
