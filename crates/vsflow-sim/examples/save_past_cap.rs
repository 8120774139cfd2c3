//! Saves past the cap through the callout, alone (issue 18 item 4): the loops of
//! `vsflow-sim bench --mode callbacks`'s `save, past cap (20000, ...)` row ("kept": the port's
//! saves one after another, its encoder kept) and `save, past cap, first save` row ("first":
//! each save after a packet on every connection, its encoder freed and 25 s of the sweep's
//! preparations) without the rest
//! of the bench: same driver settings, the port in its production shape (`FlowsPerPort` raised to
//! `OVER_CAP_BOUND`, split by the sweep, its 20,000 connections in the processors' shards), the
//! same callback. For profiles and instruction counts of what the save callback runs. Prints
//! the saves' thread-CPU p50 and p99.
//!
//! ```text
//! cargo build --release -p vsflow-sim --example save_past_cap
//! target/release/examples/save_past_cap kept 200
//! valgrind --tool=callgrind --toggle-collect='*save_fn*' --callgrind-out-file=/dev/null \
//!   target/release/examples/save_past_cap first 10     # Collected / 10 = one first save
//! ```
//!
//! "first" at most 40 rounds (as the bench: 40 x 86 s stay within the connections' two-hour
//! idle timeout).

use std::time::Duration;

use vsflow_callout::{DriverConfig, RestoreMode};
use vsflow_core::policy::Mode;
use vsflow_sim::host::Host;
use vsflow_sim::tools::bench::{OVER_CAP_BOUND, OVER_CAP_FLOWS, fill_port, spread_port};

fn main() {
    let mode = std::env::args().nth(1).unwrap_or_else(|| "kept".to_owned());
    let rounds: usize = std::env::args().nth(2).and_then(|s| s.parse().ok()).unwrap_or(200);
    let first = match mode.as_str() {
        "kept" => false,
        "first" => true,
        _ => {
            eprintln!("usage: save_past_cap kept|first [rounds]");
            std::process::exit(2);
        }
    };
    let cfg = DriverConfig {
        default_mode: Mode::Enforce,
        restore_mode: RestoreMode::Synchronous,
        flows_per_port: OVER_CAP_BOUND,
        ..DriverConfig::default()
    };
    let mut a = Host::new(1);
    a.load_driver(cfg).expect("loads");
    let sa = a.create_switch("BENCH-A", &[]);
    a.create_port(sa, 11, "over-cap", false);
    fill_port(&mut a, sa, 11, OVER_CAP_FLOWS);
    spread_port(&mut a, sa, 11, OVER_CAP_FLOWS);
    let totals = a.within(|| a.driver().flow_totals());
    let sweeps = |a: &mut Host, n: u32| {
        for _ in 0..n {
            a.advance(10_000_000);
            let _ = a.within(|| a.driver().expire_idle(16));
        }
    };
    if !first {
        // The encoder made and kept by a first save.
        let _ = a.save(sa, 11);
    }
    let mut cpu: Vec<Duration> = (0..rounds)
        .map(|_| {
            if first {
                // As the bench: the connections carry on between saves.
                spread_port(&mut a, sa, 11, OVER_CAP_FLOWS);
                sweeps(&mut a, 61 + 25);
            }
            let t = vsflow_sim::tools::bench::thread_cpu();
            let _ = a.save(sa, 11);
            vsflow_sim::tools::bench::thread_cpu().saturating_sub(t)
        })
        .collect();
    cpu.sort_unstable();
    let at = |q: usize| cpu.get(cpu.len().saturating_sub(1) * q / 100).copied().unwrap_or_default();
    println!(
        "save past the cap ({OVER_CAP_FLOWS} conns, {} in processors' shards), {mode}: {rounds} saves, CPU p50 {:.1} us, p99 {:.1} us",
        totals.in_shards,
        at(50).as_secs_f64() * 1e6,
        at(99).as_secs_f64() * 1e6
    );
    a.unload_driver();
}
