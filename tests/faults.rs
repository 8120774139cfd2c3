//! The fault sweep: every call of every fallible service (driver allocations, work items,
//! engine calls that add, open, register or commit) is failed once, each in its own process,
//! during a full migration of one VM port from host A to host B. Each run must end with no
//! panic or abort, no leak, every pended notification completed exactly once, no contract
//! violation, the VM's restore not failed by vsflow, and the port's state all-or-nothing
//! (every carried flow, or none). After the migration the destination's switch is paused and
//! restarted and BFE stops and starts, so their calls are failed too. Results:
//! docs/FAULT-INJECTION.md.

use std::process::Command;

use fwps_sys as sys;
use vsflow_callout::RestoreMode;
use vsflow_scenarios::{delivered, enforce, open_connections, try_flows_of};
use vsflow_sim::kernel::faults::{self, Site};
use vsflow_sim::{Host, VmRestore};

const CONNS: u16 = 3;
const NAME: &str = "6F1C0001-5A3B-4C2D-9E8F-00000000FA11";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Role {
    Source,
    Destination,
}

fn host(seed: u64) -> Host {
    Host::new(seed)
}

fn check_clean(h: &mut Host, who: &str) -> Result<(), String> {
    h.unload_driver();
    let v = h.violations();
    if v.is_empty() {
        Ok(())
    } else {
        Err(format!("{who}: {}", v.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")))
    }
}

/// The migration, with the fault plan armed on `role`'s host. `plan`: site and call number
/// (None: count only).
fn scenario(role: Role, plan: Option<(Site, u64)>) -> Result<([u64; 3], String), String> {
    let mut a = host(1);
    let mut b = host(2);
    let armed = |h: &Host| match plan {
        Some((site, n)) => faults::arm(h.id(), Some(site), n),
        None => faults::arm(h.id(), None, 0),
    };
    armed(if role == Role::Source { &a } else { &b });
    let a_loaded = a.load_driver(enforce(RestoreMode::Pending)).is_ok();
    let sa = a.create_switch("SW-A", &[]);
    let _ = a.create_port(sa, 10, NAME, false);
    let _ = a.nic_event(sa, 10, 1, sys::FWPS_VSWITCH_EVENT_INTERFACE_CREATE);
    let _ = a.nic_event(sa, 10, 1, sys::FWPS_VSWITCH_EVENT_INTERFACE_CONNECT);
    let inbound = if a_loaded { try_open(&mut a, sa) } else { Vec::new() };
    let (blobs, _) = a.save(sa, 10);
    let _ = a.nic_event(sa, 10, 1, sys::FWPS_VSWITCH_EVENT_INTERFACE_DISCONNECT);
    let _ = a.nic_event(sa, 10, 1, sys::FWPS_VSWITCH_EVENT_INTERFACE_DELETE);
    let _ = a.delete_port(sa, 10);

    let b_loaded = b.load_driver(enforce(RestoreMode::Pending)).is_ok();
    let sb = b.create_switch("SW-B", &[]);
    let _ = b.create_port(sb, 77, NAME, true);
    let _ = b.nic_event(sb, 77, 1, sys::FWPS_VSWITCH_EVENT_INTERFACE_CREATE);
    let tickets = b.restore(sb, 77, &blobs);
    b.run_deferred();
    let _ = b.nic_event(sb, 77, 1, sys::FWPS_VSWITCH_EVENT_INTERFACE_CONNECT);
    let restore = b.vm_restore(&tickets);
    // ListPorts allocates its list of port references: the fault may land there (no count).
    let flows = if b_loaded { try_flows_of(&b, NAME).ok().flatten() } else { None };
    let reached = delivered(&mut b, sb, 77, &inbound);
    // The extension paused and restarted, then BFE stopped and started again: more calls to fail.
    b.pause_restart(sb);
    b.stop_bfe();
    b.start_bfe();
    let _ = delivered(&mut b, sb, 77, &inbound);
    let counts =
        [faults::count(Site::Alloc), faults::count(Site::WorkItem), faults::count(Site::Engine)];
    faults::disarm();
    check_clean(&mut a, "host A")?;
    check_clean(&mut b, "host B")?;
    if restore != VmRestore::Succeeded {
        return Err(format!("the VM's restore did not succeed: {restore:?}"));
    }
    let carried = usize::from(CONNS);
    if a_loaded && b_loaded && inbound.len() == carried {
        if let Some(n) = flows
            && n != 0
            && n != carried
        {
            return Err(format!("partial state: {n} of {carried} flows restored"));
        }
        if reached != 0 && reached != carried {
            return Err(format!("partial state: {reached} of {carried} connections carried"));
        }
    }
    let outcome = match (a_loaded, b_loaded) {
        (false, _) => "A's driver did not start".to_owned(),
        (true, false) => "B's driver did not start".to_owned(),
        _ if inbound.len() < carried => "connections not opened on A".to_owned(),
        _ if reached == carried => "all connections carried".to_owned(),
        _ => "restored empty".to_owned(),
    };
    Ok((counts, outcome))
}

/// Opens the connections on A if every handshake packet gets through (a fault may stop one).
fn try_open(a: &mut Host, sa: usize) -> Vec<vsflow_sim::SimPacket> {
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        open_connections(a, sa, 10, CONNS)
    }));
    r.unwrap_or_default()
}

/// Runs one point in this process when the parent asked for it (`VSFLOW_FAULT=role:site:n`).
#[test]
fn fault_child() {
    let Ok(spec) = std::env::var("VSFLOW_FAULT") else { return };
    let mut it = spec.split(':');
    let role = if it.next() == Some("A") { Role::Source } else { Role::Destination };
    let site = it.next().and_then(Site::from_name).expect("site");
    let n: u64 = it.next().and_then(|x| x.parse().ok()).expect("n");
    match scenario(role, Some((site, n))) {
        Ok((_, outcome)) => eprintln!("FAULT-OUTCOME fired={} {outcome}", faults::fired()),
        Err(e) => panic!("FAULT-RESULT {e}"),
    }
}

#[test]
fn every_fallible_call_failed_once_during_a_migration_leaves_a_clean_state() {
    let exe = std::env::current_exe().expect("test binary");
    let mut failures = Vec::new();
    let mut summary = Vec::new();
    let mut outcomes: Vec<(String, u64)> = Vec::new();
    for (role, tag) in [(Role::Source, "A"), (Role::Destination, "B")] {
        let (counts, outcome) = scenario(role, None).expect("the scenario passes without faults");
        assert_eq!(outcome, "all connections carried");
        for site in Site::ALL {
            let total = counts[match site {
                Site::Alloc => 0,
                Site::WorkItem => 1,
                Site::Engine => 2,
            }];
            // Every call, up to 400 per site; past that every k-th.
            let step = total.div_ceil(400).max(1);
            let (mut run, mut bad) = (0u64, 0u64);
            let mut n = 1;
            while n <= total {
                let out = Command::new(&exe)
                    .args(["fault_child", "--exact", "--test-threads", "1", "--nocapture"])
                    .env("VSFLOW_FAULT", format!("{tag}:{}:{n}", site.name()))
                    .output()
                    .expect("child runs");
                run += 1;
                let text = String::from_utf8_lossy(&out.stderr);
                if let Some(l) = text.lines().find(|l| l.starts_with("FAULT-OUTCOME")) {
                    let o = l.split_once(' ').map_or("", |x| x.1).to_owned();
                    match outcomes.iter_mut().find(|(k, _)| *k == o) {
                        Some(e) => e.1 += 1,
                        None => outcomes.push((o, 1)),
                    }
                }
                if !out.status.success() {
                    bad += 1;
                    let why = text
                        .lines()
                        .find(|l| {
                            l.contains("FAULT-RESULT")
                                || l.contains("panicked at")
                                || l.contains("memory allocation")
                        })
                        .map_or_else(|| format!("exit {:?}", out.status), |l| l.trim().to_owned());
                    failures.push(format!("host {tag}, {} call {n}: {why}", site.name()));
                }
                n += step;
            }
            summary.push(format!(
                "host {tag} {:<9} calls {total:>5} points {run:>4} failed {bad:>4}",
                site.name()
            ));
        }
    }
    summary.extend(outcomes.iter().map(|(o, n)| format!("outcome {n:>4} x {o}")));
    let report = format!(
        "{}\n{}",
        summary.join("\n"),
        failures.iter().take(40).cloned().collect::<Vec<_>>().join("\n")
    );
    println!("{report}");
    if let Some(dir) = std::env::var_os("VSFLOW_FAULT_REPORT") {
        let _ = std::fs::write(std::path::Path::new(&dir).join("fault-sweep.txt"), &report);
    }
    assert!(failures.is_empty(), "{} fault points left a bad state:\n{report}", failures.len());
}
