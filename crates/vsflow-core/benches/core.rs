//! Criterion benchmarks of vsflow-core, each with a baseline measured in the same run.
//!
//! - `classify/existing_10k`: a packet of an existing flow, 10,000 flows in the port; baseline
//!   `classify/std_hashmap_existing_10k`, the same lookup-and-update on
//!   `std::collections::HashMap` with its default (`SipHash`) hasher.
//! - `classify/new_with_room`: the first packet of a new flow while the table has room.
//! - `codec/*`: encode, and decode + validate + apply, of a port whose blob is ~60 KiB, against
//!   `copy_from_slice` of the same bytes and against serde + postcard for the same flows.
//!
//! Results and the command are recorded in docs/PERFORMANCE.md.

use std::collections::HashMap;
use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use serde::{Deserialize, Serialize};
use vsflow_core::codec::{self, DecodeConfig, Decoded};
use vsflow_core::{Direction, FlowKey, FlowRecord, FlowState, Opener, PacketMeta};

mod workload;
use workload::{Mix, PROVIDER, full_port, packets, port, port_with_flows};

/// The baseline's per-packet work: the same decision logic as `classify` for an existing flow
/// (Enforce admission check, counters, TCP transition), on std's `HashMap` with its default
/// `SipHash` hasher and no LRU upkeep.
fn std_classify(
    map: &mut HashMap<FlowKey, FlowRecord>,
    m: &PacketMeta,
    now: u64,
) -> Option<FlowState> {
    let r = map.get_mut(&FlowKey::of(m))?;
    if m.direction == Direction::Inbound && r.admission != vsflow_core::flow::Admission::Vm {
        return None;
    }
    r.count(m.direction, m.length, now);
    let (state, fin) =
        vsflow_core::classify::tcp_transition(r.state, m.direction, m.tcp_flags, r.fin_seen);
    r.state = state;
    r.fin_seen = fin;
    Some(state)
}

fn bench_existing(
    g: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    flows: usize,
    label: &str,
) {
    let pkts = packets(flows, 1);
    // Replies (inbound) of the same flows, in another order.
    let mut order: Vec<usize> = (0..pkts.len()).collect();
    let mut r = Mix(7);
    for i in (1..order.len()).rev() {
        let j = usize::try_from(r.next() % (i as u64 + 1)).unwrap();
        order.swap(i, j);
    }
    let replies: Vec<PacketMeta> = order.iter().map(|&i| pkts[i].reply(0x10)).collect();

    let mut p = port(16_384, 16_384);
    for (i, m) in pkts.iter().enumerate() {
        p.classify(m, i as u64);
    }
    assert_eq!(p.table().len(), flows);
    let mut i = 0usize;
    let mut now = 100_000u64;
    g.bench_function(format!("existing_{label}"), |b| {
        b.iter(|| {
            i = if i + 1 == replies.len() { 0 } else { i + 1 };
            now += 1;
            black_box(p.classify(black_box(&replies[i]), now))
        });
    });

    let mut map: HashMap<FlowKey, FlowRecord> = HashMap::new();
    for (i, m) in pkts.iter().enumerate() {
        let mut rec = FlowRecord::new(
            FlowState::Established,
            Opener::Vm,
            vsflow_core::flow::Admission::Vm,
            i as u64,
        );
        rec.count(m.direction, m.length, i as u64);
        map.insert(FlowKey::of(m), rec);
    }
    let mut i = 0usize;
    g.bench_function(format!("std_hashmap_existing_{label}"), |b| {
        b.iter(|| {
            i = if i + 1 == replies.len() { 0 } else { i + 1 };
            now += 1;
            black_box(std_classify(&mut map, black_box(&replies[i]), now))
        });
    });
}

fn bench_classify(c: &mut Criterion) {
    let mut g = c.benchmark_group("classify");
    bench_existing(&mut g, 10_000, "10k");
    bench_existing(&mut g, 1_000, "1k");

    let fresh = packets(4096, 99);
    g.bench_function("new_with_room", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            let mut done = 0u64;
            while done < iters {
                let n = usize::try_from((iters - done).min(4096)).unwrap();
                let mut p = port(4096, 4096);
                let start = Instant::now();
                for (k, m) in fresh[..n].iter().enumerate() {
                    black_box(p.classify(black_box(m), k as u64));
                }
                total += start.elapsed();
                done += n as u64;
                drop(p);
            }
            total
        });
    });
    g.finish();
}

/// The serde mirror of one saved flow, for the postcard comparison.
#[derive(Serialize, Deserialize)]
struct SerdeFlow {
    v6: bool,
    protocol: u8,
    state: u8,
    opener: u8,
    admission: u8,
    fin: u8,
    version: u32,
    local: [u8; 16],
    remote: [u8; 16],
    local_port: u16,
    remote_port: u16,
    packets: [u64; 2],
    bytes: [u64; 2],
    first_age: u64,
    last_age: u64,
}

fn bench_codec(c: &mut Criterion) {
    let now = 1_000_000_000_000u64;
    let p = full_port(now);
    let cfg = codec::EncodeConfig { provider: PROVIDER, cap: codec::DEFAULT_CAP };
    let mut blob = Vec::new();
    let summary = codec::encode(&p, now, &cfg, &mut blob).unwrap();
    assert_eq!(summary.flows_dropped, 0);
    // Format 1.1: the 886 flows that filled a 1.0 blob take about 11 KiB.
    assert!(blob.len() <= codec::DEFAULT_CAP, "blob is {} bytes", blob.len());
    let Ok(Decoded::State(state)) = codec::decode(&blob, &DecodeConfig::default()) else {
        panic!()
    };
    let serde_flows: Vec<SerdeFlow> = state
        .flows
        .iter()
        .map(|f| SerdeFlow {
            v6: f.key.family == vsflow_core::IpFamily::V6,
            protocol: f.key.protocol,
            state: f.state.to_wire(),
            opener: f.opener.to_wire(),
            admission: 1,
            fin: f.fin_seen,
            version: 0,
            local: f.key.local_addr,
            remote: f.key.remote_addr,
            local_port: f.key.local_port,
            remote_port: f.key.remote_port,
            packets: f.packets,
            bytes: f.bytes,
            first_age: f.first_age,
            last_age: f.last_age,
        })
        .collect();
    let post = postcard::to_allocvec(&serde_flows).unwrap();
    eprintln!(
        "codec sizes: vsflow blob {} bytes for {} flows; postcard {} bytes for the same flows",
        blob.len(),
        state.flows.len(),
        post.len()
    );

    let mut g = c.benchmark_group("codec");
    g.throughput(Throughput::Bytes(blob.len() as u64));
    workload::bench_baseline_copy(&mut g, &blob);
    let mut out = Vec::with_capacity(codec::DEFAULT_CAP);
    g.bench_function("encode_full_port", |b| {
        b.iter(|| black_box(codec::encode(black_box(&p), now, &cfg, &mut out).unwrap()));
    });
    // Over the cap (1,200 IPv4 flows, ~880 fit): the flows to keep must be chosen.
    let over = port_with_flows(now, 1200);
    g.bench_function("encode_over_cap_1200_flows", |b| {
        b.iter(|| black_box(codec::encode(black_box(&over), now, &cfg, &mut out).unwrap()));
    });
    g.bench_function("decode_validate_apply", |b| {
        b.iter_batched_ref(
            || port(4096, 0),
            |dst| {
                let Ok(Decoded::State(s)) =
                    codec::decode(black_box(&blob), &DecodeConfig::default())
                else {
                    panic!()
                };
                black_box(codec::apply(dst, &s, 5).unwrap())
            },
            BatchSize::SmallInput,
        );
    });
    g.bench_function("crc32c_only", |b| {
        b.iter(|| black_box(codec::crc32c(black_box(&blob))));
    });
    g.bench_function("decode_validate_only", |b| {
        b.iter(|| black_box(codec::decode(black_box(&blob), &DecodeConfig::default()).unwrap()));
    });
    g.bench_function("postcard_encode_same_flows", |b| {
        let mut buf = vec![0u8; post.len() + 64];
        b.iter(|| black_box(postcard::to_slice(black_box(&serde_flows), &mut buf).unwrap().len()));
    });
    g.bench_function("postcard_decode_same_flows", |b| {
        b.iter(|| black_box(postcard::from_bytes::<Vec<SerdeFlow>>(black_box(&post)).unwrap()));
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(3));
    targets = bench_classify, bench_codec
}
criterion_main!(benches);
