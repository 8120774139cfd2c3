//! What TCP window tracking would cost vsflow (issue 17): a measurement, not a feature.
//!
//! `window/classify_existing_10k` is the same-run baseline: classify of a packet of an existing
//! flow, 10,000 flows in the port (as `benches/core.rs`). `window/conntrack_check_10k` is a
//! prototype of the per-packet work Linux conntrack's `tcp_in_window` does (read sequence,
//! acknowledgment, window and payload length from the TCP header; check the sequence against
//! the receiver's window and the acknowledgment against the sender's; advance both
//! directions' edges), over per-flow window state kept beside the table (32 bytes a flow), for
//! the same packets. The sum is what classify would cost with window tracking. The state is
//! 2 x 13 bytes, 32 with alignment. Results:
//! docs/CONFORMANCE.md, "TCP window tracking".

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use vsflow_core::PacketMeta;

mod workload;
use workload::{Mix, packets, port};

/// One direction's window state, as conntrack keeps it (`struct ip_ct_tcp_state`).
#[derive(Clone, Copy, Default)]
struct Edge {
    /// Highest sequence number sent + length (`td_end`).
    end: u32,
    /// Highest acknowledgment + window seen from the other side (`td_maxend`).
    max_end: u32,
    /// Largest window advertised (`td_maxwin`).
    max_win: u32,
    /// Window scale (`td_scale`).
    scale: u8,
}

/// Both directions: 2 x 13 bytes of state, 32 with alignment.
#[derive(Clone, Copy, Default)]
struct Window {
    edge: [Edge; 2],
}

const _: () = assert!(core::mem::size_of::<Window>() == 32);

/// A TCP header's fields the check reads (the callout would read them from the 20 bytes it
/// already has for the flags).
#[derive(Clone, Copy)]
struct Segment {
    seq: u32,
    ack: u32,
    win: u16,
    len: u32,
    outbound: bool,
}

fn header(s: &Segment) -> [u8; 20] {
    let mut h = [0u8; 20];
    h[4..8].copy_from_slice(&s.seq.to_be_bytes());
    h[8..12].copy_from_slice(&s.ack.to_be_bytes());
    h[12] = 0x50;
    h[13] = 0x10;
    h[14..16].copy_from_slice(&s.win.to_be_bytes());
    h
}

const fn before(a: u32, b: u32) -> bool {
    a.wrapping_sub(b).cast_signed() < 0
}

const fn after(a: u32, b: u32) -> bool {
    before(b, a)
}

/// conntrack's in-window test and state update, reduced to the data path of an established
/// connection: true if the segment is acceptable.
fn in_window(w: &mut Window, tcp: &[u8; 20], len: u32, dir: usize) -> bool {
    let seq = u32::from_be_bytes([tcp[4], tcp[5], tcp[6], tcp[7]]);
    let ack = u32::from_be_bytes([tcp[8], tcp[9], tcp[10], tcp[11]]);
    let win = u32::from(u16::from_be_bytes([tcp[14], tcp[15]]));
    let (s, r) = if dir == 0 { (0, 1) } else { (1, 0) };
    let sender = w.edge[s];
    let receiver = w.edge[r];
    let end = seq.wrapping_add(len);
    let win = win << sender.scale;
    let max_win = receiver.max_win.max(1);
    let ok = !before(seq, sender.end.wrapping_sub(max_win))
        && !after(end, sender.max_end)
        && !before(ack, receiver.end.wrapping_sub(max_win.max(66_000)))
        && !after(ack, receiver.end.wrapping_add(1));
    if ok {
        let e = &mut w.edge[s];
        if after(end, e.end) {
            e.end = end;
        }
        e.max_win = e.max_win.max(win);
        let r = &mut w.edge[r];
        if after(ack.wrapping_add(win), r.max_end) {
            r.max_end = ack.wrapping_add(win);
        }
    }
    ok
}

fn bench(crit: &mut Criterion) {
    const FLOWS: usize = 10_000;
    let metas: Vec<PacketMeta> = packets(FLOWS, 1);
    let mut vm_port = port(16_384, 16_384);
    for (i, m) in metas.iter().enumerate() {
        vm_port.classify(m, i as u64);
    }
    // Each flow: both directions mid-transfer, 1,448-byte segments, 64 KiB windows.
    let mut mix = Mix(3);
    let mut windows = vec![Window::default(); FLOWS];
    let mut segments = Vec::with_capacity(FLOWS);
    for window in &mut windows {
        let low = |x: u64| u32::try_from(x & 0xffff_ffff).unwrap_or(0);
        let (ours, theirs) = (low(mix.next()), low(mix.next()));
        window.edge = [
            Edge { end: ours, max_end: ours.wrapping_add(65_535), max_win: 65_535, scale: 0 },
            Edge { end: theirs, max_end: theirs.wrapping_add(65_535), max_win: 65_535, scale: 0 },
        ];
        segments.push(Segment { seq: ours, ack: theirs, win: 65_535, len: 1448, outbound: true });
    }
    let headers: Vec<[u8; 20]> = segments.iter().map(header).collect();
    let mut order: Vec<usize> = (0..FLOWS).collect();
    for i in (1..order.len()).rev() {
        let j = usize::try_from(mix.next() % (i as u64 + 1)).unwrap_or(0);
        order.swap(i, j);
    }
    let mut group = crit.benchmark_group("window");
    group.throughput(Throughput::Elements(1));
    let mut next = 0usize;
    let mut now = FLOWS as u64;
    group.bench_function("classify_existing_10k", |bench| {
        bench.iter(|| {
            let flow = order[next % FLOWS];
            next += 1;
            now += 1;
            black_box(vm_port.classify(black_box(&metas[flow]), now))
        });
    });
    let mut next = 0usize;
    group.bench_function("conntrack_check_10k", |bench| {
        bench.iter(|| {
            let flow = order[next % FLOWS];
            next += 1;
            let seg = segments[flow];
            black_box(in_window(
                &mut windows[flow],
                black_box(&headers[flow]),
                seg.len,
                usize::from(!seg.outbound),
            ))
        });
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(30).warm_up_time(std::time::Duration::from_millis(500)).measurement_time(std::time::Duration::from_secs(2));
    targets = bench
}
criterion_main!(benches);
