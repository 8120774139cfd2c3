//! The ports and packets the benchmarks (and `examples/encode_over_cap.rs`, which callgrind
//! measures) work on: deterministic, so runs are comparable.

#![allow(dead_code, reason = "each user takes what it needs")]

use vsflow_core::flow::TableConfig;
use vsflow_core::{Direction, Guid, Mode, PacketMeta, Port, PortConfig, PortIdentity, protocol};

pub const PROVIDER: Guid = Guid::from_parts(0x7673_666c, 0x6f77, 0x4d31, *b"vsflow01");

/// A deterministic pseudo-random sequence (`SplitMix64`), so runs are comparable.
pub struct Mix(pub u64);
impl Mix {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

pub fn packets(n: usize, seed: u64) -> Vec<PacketMeta> {
    let mut r = Mix(seed);
    (0..n)
        .map(|_| {
            let x = r.next();
            let b = x.to_le_bytes();
            PacketMeta::ipv4(
                Direction::Outbound,
                if b[7] & 1 == 0 { protocol::TCP } else { protocol::UDP },
                [10, 0, b[0], b[1]],
                u16::from_le_bytes([b[2], b[3]]),
                [198, 18, b[4], b[5]],
                443,
                0x10,
                1200,
            )
        })
        .collect()
}

pub fn port(max_flows: u32, reserve: u32) -> Port {
    let cfg = PortConfig {
        table: TableConfig { max_flows, initial_capacity: reserve, ..TableConfig::default() },
        initial_mode: Mode::Enforce,
    };
    Port::try_new(PortIdentity::try_from_str("bench-port").unwrap(), cfg).unwrap()
}

pub fn full_port(now: u64) -> Port {
    port_with_flows(now, 886)
}

/// `n` established TCP connections opened by the VM (`10.0.0.2`) to random peers over the
/// last hour, on a port whose bound holds them all.
pub fn established_port(now: u64, count: u32) -> Port {
    let mut p = port(count, count);
    let mut rng = Mix(0xE57A_B115_4ED0);
    for i in 0..count {
        let b = rng.next().to_le_bytes();
        let syn = PacketMeta::ipv4(
            Direction::Outbound,
            protocol::TCP,
            [10, 0, 0, 2],
            u16::from_le_bytes([b[0], b[1]]),
            [b[2] | 1, b[3], b[4], b[5]],
            443,
            0x02,
            60,
        );
        let t = now - u64::from(count - i) * 36_000_000_000 / u64::from(count);
        p.classify(&syn, t);
        p.classify(&syn.reply(0x12), t + 1);
    }
    p
}

pub fn port_with_flows(now: u64, flows: usize) -> Port {
    // Realistic counters: established TCP flows with thousands of packets, megabytes, ages of
    // seconds to minutes.
    let mut p = port(4096, 4096);
    let pkts = packets(flows, 5);
    for (i, m) in pkts.iter().enumerate() {
        let t = now - (i as u64 % 600) * 10_000_000;
        let syn =
            PacketMeta { tcp_flags: vsflow_core::TcpFlags(0x02), protocol: protocol::TCP, ..*m };
        p.classify(&syn, t - 5_000_000);
        p.classify(&syn.reply(0x12), t - 4_000_000);
        for _ in 0..(i % 7) {
            p.classify(&m.reply(0x10), t);
        }
    }
    p
}

/// The baseline of a codec benchmark group, measured in the same run: copying the blob's bytes
/// (`baseline_copy_from_slice`).
pub fn bench_baseline_copy(
    g: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    blob: &[u8],
) {
    let mut dst = vec![0u8; blob.len()];
    g.bench_function("baseline_copy_from_slice", |b| {
        b.iter(|| {
            dst.copy_from_slice(std::hint::black_box(blob));
            std::hint::black_box(&dst);
        });
    });
}
