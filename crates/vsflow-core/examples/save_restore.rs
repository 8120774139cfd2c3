//! The save and restore work of issue 18 item 4, for callgrind (instruction counts compare
//! versions repeatably on a shared machine): `ROUNDS` encodes, or decodes + applies, of a port
//! at the default table (4,096 established IPv4 connections, all exact) or past it (20,000,
//! exact records and fingerprints). `setup-N` builds the port and one blob only: subtract it.
//! `cold-N` saves with a new encoder each time (a port's first save, or one after the driver
//! freed its encoder: its memory allocated, every connection's fingerprint computed); `first-N`
//! the same a minute apart each (another salt each time, as `vsflow-sim bench`'s first saves:
//! the planner's work depends on the fingerprint values); `prepared-N` the same with the
//! encoder readied first as the driver's expiry sweep readies it (`Encoder::prepare`; count
//! the saves alone with `--toggle-collect='*Encoder*encode*'`); `save-N` with the port's
//! encoder kept, as the driver keeps it between saves.
//!
//! ```text
//! cargo build --release -p vsflow-core --example save_restore
//! for m in setup-4096 save-4096 restore-4096 setup-20000 save-20000 cold-20000 first-20000 \
//!          prepared-20000 restore-20000; do
//!   valgrind --tool=callgrind --callgrind-out-file=/dev/null \
//!     target/release/examples/save_restore $m 2>&1 | grep Collected
//! done   # per operation = (mode - setup) / 20 (first, prepared: / 60); the saves alone:
//!        # --toggle-collect='*Encoder*encode*'
//! ```

use std::hint::black_box;

use vsflow_core::codec::{self, DecodeConfig, DecodedStaged};

#[path = "../benches/workload/mod.rs"]
mod workload;

/// Rounds per measured mode.
const ROUNDS: usize = 20;

fn main() {
    let mode = std::env::args().nth(1).unwrap_or_else(|| "save-4096".into());
    let (what, n) = mode.split_once('-').expect("MODE-FLOWS");
    let n: u32 = n.parse().expect("a flow count");
    let now = 1_000_000_000_000u64;
    let port = workload::established_port(now, n);
    let cfg = codec::EncodeConfig { provider: workload::PROVIDER, cap: codec::DEFAULT_CAP };
    let mut out = Vec::with_capacity(codec::DEFAULT_CAP);
    let s = codec::encode(&port, now, &cfg, &mut out).expect("encodes");
    // The port's encoder, as the driver keeps one per port (its first save sizes it).
    let mut encoder = codec::Encoder::new();
    encoder.encode(&port, now, &cfg, &mut out).expect("encodes");
    let rounds = match what {
        "setup" => 0,
        "save" | "cold" | "restore" => ROUNDS,
        "first" | "prepared" => 3 * ROUNDS,
        other => panic!("unknown mode {other}"),
    };
    let mut last_fresh = 0;
    for round in 0..rounds {
        if what == "save" {
            black_box(encoder.encode(black_box(&port), now, &cfg, &mut out).expect("encodes"));
        } else if what == "cold" || what == "first" || what == "prepared" {
            // `first`: a minute later each round (the salt is drawn from the save's instant).
            let at = if what == "cold" {
                now
            } else {
                now + 610_000_000 * u64::try_from(round).unwrap_or(0)
            };
            let mut fresh = codec::Encoder::new();
            // `prepared`: readied first as the driver's sweep does (once a second).
            while what == "prepared" && fresh.prepare(&port, at, cfg.cap) > 0 {}
            black_box(fresh.encode(black_box(&port), at, &cfg, &mut out).expect("encodes"));
            last_fresh = fresh.heap_bytes();
        } else {
            // As the driver restores: the flows decoded straight into the port's future table
            // (`decode_staged`), then applied (`apply_staged`).
            let mut dst = workload::port(n, 64);
            let stage =
                codec::StageConfig { table: *dst.table().config(), base: now + 5, now: now + 5 };
            let Ok(DecodedStaged::State(st, flows)) =
                codec::decode_staged(black_box(&out), &DecodeConfig::default(), &stage)
            else {
                panic!("decodes")
            };
            let config = codec::ApplyConfig::default();
            black_box(
                codec::apply_staged(&mut dst, &st, flows, now + 5, &config).expect("applies"),
            );
        }
    }
    println!(
        "{mode}: {rounds} rounds; blob {} bytes, {} exact, {} fingerprinted, {} lost; the port's \
         encoder holds {} bytes (the last round's new one: {last_fresh})",
        out.len(),
        s.flows_written,
        s.flows_fingerprinted,
        s.flows_dropped,
        encoder.heap_bytes()
    );
}
