//! The runtime-state figures docs/PERFORMANCE.md records: bytes per flow (format 1.0 against
//! 1.1), flows carried per 60 KiB, and the p50/p99 of the save work (encode) and of the restore
//! work (decode + apply) at the default table and past it.
//!
//! ```text
//! cargo run --release -p vsflow-core --example codec_figures
//! ```

#![allow(
    clippy::cast_precision_loss,
    clippy::many_single_char_names,
    reason = "a report of measured figures"
)]

use std::time::Instant;

use vsflow_core::codec::{self, DecodeConfig, Decoded, format};
use vsflow_core::{Port, PortCounters};

#[path = "../benches/workload/mod.rs"]
mod workload;

const NOW: u64 = 1_000_000_000_000;

fn encode(p: &Port) -> (Vec<u8>, codec::EncodeSummary) {
    let cfg = codec::EncodeConfig { provider: workload::PROVIDER, cap: codec::DEFAULT_CAP };
    let mut blob = Vec::new();
    let s = codec::encode(p, NOW, &cfg, &mut blob).unwrap();
    (blob, s)
}

/// What the 1.0 encoder wrote for `v4` IPv4 and `v6` IPv6 flows and no rules (its layout is
/// fixed-width: `docs/runtime-state-format.md`, "Size cap").
fn v1_0_len(identity_units: usize, v4: usize, v6: usize) -> usize {
    40 + 2 * identity_units
        + 9
        + 16
        + (8 + 2 + 8 * 14)
        + 16
        + 2 * 16
        + 4
        + v4 * format::FLOW_V4_ENTRY_LEN
        + v6 * format::FLOW_V6_ENTRY_LEN
}

fn percentiles(mut ns: Vec<u128>) -> (u128, u128) {
    ns.sort_unstable();
    (ns[ns.len() / 2], ns[ns.len() * 99 / 100])
}

fn time_port(name: &str, p: &Port, bound: u32, runs: usize) {
    let (blob, s) = encode(p);
    let mut out = Vec::with_capacity(codec::DEFAULT_CAP);
    let cfg = codec::EncodeConfig { provider: workload::PROVIDER, cap: codec::DEFAULT_CAP };
    let mut save = Vec::with_capacity(runs);
    let mut restore = Vec::with_capacity(runs);
    for _ in 0..runs {
        let t = Instant::now();
        codec::encode(p, NOW, &cfg, &mut out).unwrap();
        save.push(t.elapsed().as_nanos());
        let mut dst = workload::port(bound, 0);
        let t = Instant::now();
        let Ok(Decoded::State(st)) = codec::decode(&blob, &DecodeConfig::default()) else {
            panic!()
        };
        codec::apply(&mut dst, &st, 5).unwrap();
        restore.push(t.elapsed().as_nanos());
    }
    let flows = u128::from(s.flows_written + s.flows_fingerprinted);
    let (s50, s99) = percentiles(save);
    let (r50, r99) = percentiles(restore);
    println!(
        "{name}: {} bytes ({} exact, {} fingerprinted, {} lost); save p50 {:.1} us p99 {:.1} us \
         ({} ns/flow); restore (decode+apply) p50 {:.1} us p99 {:.1} us ({} ns/flow)",
        blob.len(),
        s.flows_written,
        s.flows_fingerprinted,
        s.flows_dropped,
        s50 as f64 / 1e3,
        s99 as f64 / 1e3,
        s50 / flows,
        r50 as f64 / 1e3,
        r99 as f64 / 1e3,
        r50 / flows
    );
}

fn main() {
    assert_eq!(PortCounters::COUNT, 18);
    let units = "bench-port".len();
    // Bytes per flow, old and new, on the same ports. The benchmark mix gives every flow its
    // own local address (10.0.x.y) and per-flow counters; a VM normally has one address.
    for (name, p, n) in [
        ("benchmark mix, 886 flows", workload::port_with_flows(NOW, 886), 886usize),
        ("one VM address, 4,096 established", workload::established_port(NOW, 4096), 4096),
    ] {
        let (blob, s) = encode(&p);
        assert_eq!(s.flows_written as usize, n);
        let old = v1_0_len(units, n, 0);
        println!(
            "{name}: 1.0 {} bytes ({:.1} B/flow{}), 1.1 {} bytes ({:.2} B/flow)",
            old,
            old as f64 / n as f64,
            if old > codec::DEFAULT_CAP { ", over the cap" } else { "" },
            blob.len(),
            blob.len() as f64 / n as f64
        );
    }
    let (blob, s) = encode(&workload::port_with_flows(NOW, 4096));
    println!(
        "benchmark mix, 4,096 flows (4,096 distinct local addresses): {} bytes, {} exact, {} fingerprinted, {} lost",
        blob.len(),
        s.flows_written,
        s.flows_fingerprinted,
        s.flows_dropped
    );
    // Exact capacity of one 60 KiB blob: grow the table until a flow is not exact.
    let mut lo = 4096u32;
    let mut hi = 8192u32;
    while hi - lo > 16 {
        let mid = u32::midpoint(lo, hi);
        let (_, s) = encode(&workload::established_port(NOW, mid));
        if s.flows_written == mid { lo = mid } else { hi = mid }
    }
    println!(
        "exact capacity of 60 KiB (IPv4, one VM address, established, ages < 1 h): about {lo} flows"
    );
    // Connections carried (exact + fingerprint) per 60 KiB.
    let (_, s) = encode(&workload::established_port(NOW, 40_000));
    println!(
        "40,000 established connections: {} exact + {} fingerprinted = {} carried, {} lost",
        s.flows_written,
        s.flows_fingerprinted,
        s.flows_written + s.flows_fingerprinted,
        s.flows_dropped
    );
    time_port(
        "4,096 IPv4 flows (one VM address)",
        &workload::established_port(NOW, 4096),
        4096,
        2000,
    );
    time_port("20,000 established", &workload::established_port(NOW, 20_000), 20_000, 300);
}
