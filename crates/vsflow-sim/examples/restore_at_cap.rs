//! Synchronous restores at the cap through the callout, alone (issue 18 item 4): the loop of
//! `vsflow-sim bench --mode callbacks`'s `restore sync, at cap (4096)` row without the rest of
//! the bench (same driver settings, port, blob and callback), for profiles and instruction
//! counts of what the restore callback runs. Prints the callbacks' wall p50 and p99.
//!
//! ```text
//! cargo build --release -p vsflow-sim --example restore_at_cap
//! target/release/examples/restore_at_cap 2000
//! valgrind --tool=callgrind --toggle-collect='*restore_fn*' --callgrind-out-file=/dev/null \
//!   target/release/examples/restore_at_cap 40        # Collected / 40 = one restore
//! ```

use std::time::Duration;

use vsflow_callout::{DriverConfig, RestoreMode};
use vsflow_core::policy::Mode;
use vsflow_sim::host::Host;
use vsflow_sim::tools::bench::{OVER_CAP_FLOWS, fill_port};

fn main() {
    let rounds: usize = std::env::args().nth(1).and_then(|s| s.parse().ok()).unwrap_or(2000);
    // As the bench: synchronous restores, the port bound raised for its past-the-cap port.
    let cfg = DriverConfig {
        default_mode: Mode::Enforce,
        restore_mode: RestoreMode::Synchronous,
        flows_per_port: OVER_CAP_FLOWS.into(),
        ..DriverConfig::default()
    };
    let mut a = Host::new(1);
    a.load_driver(cfg).expect("loads");
    let sa = a.create_switch("BENCH-A", &[]);
    a.create_port(sa, 10, "at-cap", false);
    fill_port(&mut a, sa, 10, 4096);
    let (blobs, _) = a.save(sa, 10);
    let mut b = Host::new(2);
    b.load_driver(cfg).expect("loads");
    let sb = b.create_switch("BENCH-B", &[]);
    let mut wall: Vec<Duration> = (100..)
        .take(rounds)
        .map(|id| {
            b.create_port(sb, id, "at-cap", true);
            let t = b.restore(sb, id, &blobs);
            b.delete_port(sb, id);
            t.first().map_or(Duration::ZERO, |t| t.elapsed)
        })
        .collect();
    wall.sort_unstable();
    let at =
        |q: usize| wall.get(wall.len().saturating_sub(1) * q / 100).copied().unwrap_or_default();
    println!(
        "restore sync, at cap (4096): {rounds} restores, p50 {:.1} us, p99 {:.1} us",
        at(50).as_secs_f64() * 1e6,
        at(99).as_secs_f64() * 1e6
    );
    a.unload_driver();
    b.unload_driver();
}
