//! A randomized event-order soak: 10,000 runs, each a random sequence of vSwitch events,
//! traffic, saves, restores (pended and synchronous), deferred-work timing, reorders, switch
//! deletion and driver reloads on one host, checking every invariant after every step:
//! no contract violation, every pended notification still tracked by the driver or completed
//! exactly once, flow tables consistent and bounded, and a clean unload at the end.

use fwps_sys as sys;
use vsflow_callout::{DriverConfig, RestoreMode};
use vsflow_core::{IpFamily, Mode, protocol};
use vsflow_sim::host::EXTERNAL_PORT;
use vsflow_sim::tools::rng::SplitMix64 as Rng;
use vsflow_sim::{Host, SimPacket};

fn config(r: &mut Rng) -> DriverConfig {
    DriverConfig {
        restore_mode: if r.below(2) == 0 { RestoreMode::Pending } else { RestoreMode::Synchronous },
        default_mode: if r.below(2) == 0 { Mode::Enforce } else { Mode::Monitor },
        flows_per_port: 16,
        ..DriverConfig::default()
    }
}

fn check(h: &Host, run: u64, step: usize) {
    let v = h.violations();
    assert!(v.is_empty(), "run {run} step {step}: {v:?}");
    let totals = h.driver().flow_totals();
    let (pending, ports_ok) =
        (h.driver().pending_count(), totals.consistent && totals.largest_port <= 16);
    assert!(ports_ok, "run {run} step {step}: a flow table is inconsistent");
    assert_eq!(
        h.outstanding(),
        pending,
        "run {run} step {step}: WFP and the driver disagree on what is pending"
    );
}

#[derive(Default)]
struct Coverage {
    pended: u64,
    cancelled: u64,
    failed: u64,
    applied: u64,
    sync: u64,
    reloads: u64,
    blocked: u64,
}

fn absorb(c: &mut Coverage, h: &Host) {
    let s = h.driver().stats();
    c.pended += s.restores_pended;
    c.cancelled += s.restores_cancelled;
    // Damaged blobs restore an empty port (degraded), never fail the migration.
    c.failed += s.restores_empty;
    c.applied += s.restores_applied;
    c.sync += s.restores_sync;
    c.blocked += h.driver().flow_totals().packets_blocked;
}

#[allow(clippy::too_many_lines, reason = "one match arm per kind of event")]
fn one_run(run: u64, cov: &mut Coverage) {
    let mut r = Rng(run);
    let mut h = Host::new(run);
    h.load_driver(config(&mut r)).expect("loads");
    let mut sw = h.create_switch("SOAK", &[]);
    let mut blobs: Vec<(Option<sys::GUID>, Vec<u8>)> = Vec::new();
    let mut ports: Vec<u32> = Vec::new();
    for step in 0..24 {
        h.advance(r.below(50_000_000));
        match r.below(12) {
            0 | 1 => {
                let id = 10 + u32::try_from(r.below(4)).unwrap_or(0);
                if !ports.contains(&id) {
                    h.create_port(sw, id, &format!("port-{id}"), r.below(2) == 0);
                    ports.push(id);
                }
            }
            2 => {
                if let Some(&id) = ports.get(usize::try_from(r.below(4)).unwrap_or(0)) {
                    h.delete_port(sw, id);
                    ports.retain(|&p| p != id);
                }
            }
            3 => {
                if let Some(&id) = ports.first() {
                    let event = [
                        sys::FWPS_VSWITCH_EVENT_INTERFACE_CREATE,
                        sys::FWPS_VSWITCH_EVENT_INTERFACE_CONNECT,
                        sys::FWPS_VSWITCH_EVENT_INTERFACE_DISCONNECT,
                        sys::FWPS_VSWITCH_EVENT_INTERFACE_DELETE,
                    ][usize::try_from(r.below(4)).unwrap_or(0)];
                    h.nic_event(sw, id, 1, event);
                }
            }
            4..=6 => {
                if let Some(&id) = ports.get(usize::try_from(r.below(4)).unwrap_or(0)) {
                    let [_, _, hi, lo] = id.to_be_bytes();
                    let vm = vsflow_core::packet::v4([10, hi, lo, 2]);
                    let remote = vsflow_core::packet::v4([
                        198,
                        51,
                        100,
                        u8::try_from(r.below(8)).unwrap_or(0),
                    ]);
                    let proto = if r.below(3) == 0 { protocol::UDP } else { protocol::TCP };
                    let p = SimPacket::new(
                        IpFamily::V4,
                        proto,
                        vm,
                        1000 + u16::try_from(r.below(40)).unwrap_or(0),
                        remote,
                        443,
                        u8::try_from(r.below(32)).unwrap_or(0),
                        10,
                    );
                    if r.below(2) == 0 {
                        h.transmit(sw, id, EXTERNAL_PORT, &p);
                    } else {
                        h.transmit(sw, EXTERNAL_PORT, id, &p.reply(0x10, 10));
                    }
                }
            }
            7 => {
                if let Some(&id) = ports.first() {
                    let (b, _) = h.save(sw, id);
                    if b.iter().any(|(_, x)| !x.is_empty()) {
                        blobs = b;
                    }
                }
            }
            8 => {
                if let Some(&id) = ports.last() {
                    let mut b = blobs.clone();
                    if r.below(4) == 0 {
                        for (_, x) in &mut b {
                            if let Some(byte) = x.get_mut(usize::try_from(r.below(64)).unwrap_or(0))
                            {
                                *byte ^= 1;
                            }
                        }
                    }
                    let _ = h.restore(sw, id, &b);
                }
            }
            9 => {
                h.run_deferred();
            }
            10 => {
                h.reorder(r.below(2) == 0);
            }
            _ => match r.below(3) {
                0 => {
                    h.delete_switch(sw);
                    ports.clear();
                    sw = h.create_switch("SOAK", &[]);
                }
                1 => {
                    absorb(cov, &h);
                    cov.reloads += 1;
                    h.unload_driver();
                    check_clean(&h, run, step);
                    h.load_driver(config(&mut r)).expect("reloads");
                    ports.clear();
                    sw = h.create_switch("SOAK", &[]);
                }
                _ => h.refuse_deferred_work(r.below(2) == 0),
            },
        }
        check(&h, run, step);
    }
    absorb(cov, &h);
    h.unload_driver();
    check_clean(&h, run, 24);
}

fn check_clean(h: &Host, run: u64, step: usize) {
    let v = h.violations();
    assert!(v.is_empty(), "run {run} step {step} (unload): {v:?}");
    assert_eq!(h.outstanding(), 0);
}

#[test]
fn ten_thousand_random_event_orders_keep_every_invariant() {
    let runs: u64 =
        std::env::var("VSFLOW_SOAK_RUNS").ok().and_then(|s| s.parse().ok()).unwrap_or(10_000);
    let mut cov = Coverage::default();
    for run in 0..runs {
        one_run(run, &mut cov);
    }
    eprintln!(
        "soak: {runs} runs: {} restores pended, {} synchronous, {} applied, {} degraded to empty, {} cancelled, {} reloads, {} packets blocked",
        cov.pended, cov.sync, cov.applied, cov.failed, cov.cancelled, cov.reloads, cov.blocked
    );
    if runs >= 1000 {
        // The soak is only worth its time if it reached every interesting path.
        assert!(cov.pended > 0 && cov.sync > 0 && cov.applied > 0 && cov.failed > 0);
        assert!(cov.cancelled > 0 && cov.reloads > 0 && cov.blocked > 0);
    }
}
