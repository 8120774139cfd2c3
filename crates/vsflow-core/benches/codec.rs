//! Runtime-state format 1.1 benchmarks: encode and decode+apply of the default table (4,096
//! IPv4 flows, all exact), encode and decode of a port past the exact capacity (20,000
//! established connections: exact records plus fingerprints), and the fingerprint lookup the
//! classify hook does per unknown packet. The baseline of each group is a `copy_from_slice` of
//! the same blob, measured in the same run.
//!
//! ```text
//! cargo bench -p vsflow-core --bench codec
//! ```
//! Sizes, flows per 60 KiB and the save/restore p99 are printed by
//! `cargo run --release -p vsflow-core --example codec_figures`.

use std::hint::black_box;
use std::time::Duration;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use vsflow_core::codec::{self, DecodeConfig, Decoded};
use vsflow_core::{FlowKey, Port};

#[path = "workload/mod.rs"]
mod workload;

fn decode(blob: &[u8]) -> codec::PortState {
    match codec::decode(blob, &DecodeConfig::default()) {
        Ok(Decoded::State(s)) => s,
        _ => panic!("decode"),
    }
}

fn group(c: &mut Criterion, name: &str, p: &Port, flows: u64, now: u64) {
    let cfg = codec::EncodeConfig { provider: workload::PROVIDER, cap: codec::DEFAULT_CAP };
    let mut blob = Vec::new();
    let s = codec::encode(p, now, &cfg, &mut blob).unwrap();
    eprintln!(
        "{name}: {} bytes, {} exact, {} fingerprinted, {} lost",
        blob.len(),
        s.flows_written,
        s.flows_fingerprinted,
        s.flows_dropped
    );
    let mut g = c.benchmark_group(name);
    // Per-flow figures: criterion's "elements" throughput is flows per second.
    g.throughput(Throughput::Elements(flows));
    workload::bench_baseline_copy(&mut g, &blob);
    let mut out = Vec::with_capacity(codec::DEFAULT_CAP);
    g.bench_function("encode", |b| {
        b.iter(|| black_box(codec::encode(black_box(p), now, &cfg, &mut out).unwrap()));
    });
    g.bench_function("decode_validate", |b| b.iter(|| black_box(decode(black_box(&blob)))));
    let bound = u32::try_from(flows).unwrap().max(4096);
    g.bench_function("decode_validate_apply", |b| {
        b.iter_batched_ref(
            || workload::port(bound, 0),
            |dst| black_box(codec::apply(dst, &decode(black_box(&blob)), 5).unwrap()),
            BatchSize::SmallInput,
        );
    });
    g.finish();
}

fn bench(c: &mut Criterion) {
    let now = 1_000_000_000_000u64;
    // The default table: 4,096 established IPv4 connections of one VM address.
    let full = workload::established_port(now, 4096);
    group(c, "codec11_4096_ipv4", &full, 4096, now);
    let busy = workload::established_port(now, 20_000);
    group(c, "codec11_20000_established", &busy, 20_000, now);

    // The classify hook's cost per unknown packet while the pickup window is open.
    let cfg = codec::EncodeConfig { provider: workload::PROVIDER, cap: codec::DEFAULT_CAP };
    let mut blob = Vec::new();
    codec::encode(&busy, now, &cfg, &mut blob).unwrap();
    let set = decode(&blob).fingerprints;
    let probes: Vec<FlowKey> = workload::packets(4096, 99).iter().map(FlowKey::of).collect();
    let mut g = c.benchmark_group("fingerprint");
    g.throughput(Throughput::Elements(probes.len() as u64));
    g.bench_function("lookup_unknown_4096_keys", |b| {
        b.iter(|| probes.iter().filter(|k| set.contains(black_box(k))).count());
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    targets = bench
}
criterion_main!(benches);
