//! The worst single classify while a port's table grows (issue 18 item 3), as a program
//! callgrind counts the instructions of one call of (repeatable on a noisy machine):
//!
//! ```text
//! cargo build --release -p vsflow-core --example growth_worst
//! for n in 32767 32768 32769; do
//!   valgrind --tool=callgrind --callgrind-out-file=/dev/null --toggle-collect='*growth_worst*probe*' \
//!     target/release/examples/growth_worst probe $n 2>&1 | grep Collected
//! done
//! target/release/examples/growth_worst timed 5
//! ```
//!
//! A port bounded at 65,536 flows, created with room for 64, takes one new UDP flow per
//! classify. `probe N` classifies flows `0..N` and then flow `N` inside `probe`, the only code
//! callgrind collects: the instructions of that one call. Flow 32,768 is where a table that
//! doubles copies its 32,768 flows (main before issue 18); it is also a slab segment boundary
//! of the segmented table. `timed R` grows the port `R` times and, for each flow, keeps the
//! fastest of the `R` times its classify took (preemption on a shared machine only adds time,
//! so the per-flow minimum is its cost), then prints the largest of those per-flow minimums,
//! where it was, and the median.

use std::hint::black_box;
use std::time::Instant;

use vsflow_core::flow::TableConfig;
use vsflow_core::{Direction, Mode, PacketMeta, Port, PortConfig, PortIdentity, protocol};

const FLOWS: u32 = 65_536;

/// The VM's `i`-th UDP flow.
fn udp(i: u32) -> PacketMeta {
    let [_, a, b, c] = i.to_be_bytes();
    let sport = u16::from_be_bytes([b, c]);
    PacketMeta::ipv4(
        Direction::Outbound,
        protocol::UDP,
        [10, 0, 0, 2],
        sport,
        [192, 0, a, 1],
        53,
        0,
        60,
    )
}

fn port() -> Port {
    let cfg = PortConfig {
        table: TableConfig { max_flows: FLOWS, initial_capacity: 64, ..TableConfig::default() },
        initial_mode: Mode::Enforce,
    };
    Port::try_new(PortIdentity::try_from_str("growth").expect("a short name"), cfg).expect("a port")
}

#[inline(never)]
fn probe(port: &mut Port, m: &PacketMeta, now: u64) {
    black_box(port.classify(black_box(m), now));
}

fn main() {
    let mut args = std::env::args().skip(1);
    let mode = args.next().unwrap_or_default();
    let n: u32 = args.next().and_then(|s| s.parse().ok()).unwrap_or(5);
    let metas: Vec<PacketMeta> = (0..FLOWS).map(udp).collect();
    match mode.as_str() {
        "probe" => {
            let mut p = port();
            for (i, m) in (0..n).zip(&metas) {
                black_box(p.classify(m, u64::from(i)));
            }
            probe(&mut p, &metas[n as usize], u64::from(n));
            assert_eq!(p.table().len(), n as usize + 1);
        }
        "timed" => {
            let mut best = vec![u64::MAX; FLOWS as usize];
            for _ in 0..n {
                let mut p = port();
                for (i, m) in (0..FLOWS).zip(&metas) {
                    let t = Instant::now();
                    black_box(p.classify(black_box(m), u64::from(i)));
                    let ns = u64::try_from(t.elapsed().as_nanos()).unwrap_or(u64::MAX);
                    let b = &mut best[i as usize];
                    *b = (*b).min(ns);
                }
            }
            let (at, worst) = best.iter().enumerate().max_by_key(|(_, v)| **v).expect("flows");
            let mut sorted = best.clone();
            sorted.sort_unstable();
            let median = sorted[sorted.len() / 2];
            let p999 = sorted[sorted.len() * 999 / 1000];
            println!(
                "worst classify {worst} ns (flow {at}), p99.9 {p999} ns, median {median} ns; \
                 per-flow minimum of {n} growths to {FLOWS} flows"
            );
        }
        _ => eprintln!("usage: growth_worst probe N | timed RUNS"),
    }
}
