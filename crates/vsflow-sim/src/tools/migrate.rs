//! The main job: a two-host live migration with live traffic, and the report users care about.
//!
//! Host A and host B each run vsflow (Enforce mode, an SSH allow rule). VMs on A open TCP
//! connections (IPv4 and IPv6), receive SSH connections through the allow rule, and exchange
//! UDP. Then every VM port migrates: save on A, NIC disconnect/delete and port delete on A;
//! port create with a *different* `PortId`, NIC create, restore, NIC connect on B. The proof:
//! every connection established on A is established on B, and its inbound packets are
//! permitted on B right after the restore, while the same scenario with save/restore disabled
//! blocks them.

use crate::tools::bench::thread_cpu;
use crate::tools::rng::SplitMix64;
use std::collections::HashSet;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use fwps_sys as sys;
use vsflow_callout::{DriverConfig, RestoreMode, RestoreOutcome, TraceEvent};
use vsflow_core::codec::{self, DecodeConfig, Decoded};
use vsflow_core::fingerprint::FingerprintSet;
use vsflow_core::policy::{AllowRule, PortRange, Prefix};
use vsflow_core::{FlowKey, IpFamily, Mode, PortCounters, protocol};
use vsflow_proto::request::Request;
use vsflow_proto::response;

use crate::host::{EXTERNAL_PORT, Host, PacketFate};
use crate::tools::traffic::{self, remote_addr};
use crate::vswitch::packet::SimPacket;

/// Scenario options.
#[derive(Clone, Debug)]
pub struct MigrateOptions {
    /// VM ports to migrate.
    pub ports: u32,
    /// Flows opened per port before migration.
    pub flows_per_port: u32,
    /// Restore completion mode on the destination.
    pub restore_mode: RestoreMode,
    /// Seed of traffic mix and event-order shuffling.
    pub seed: u64,
    /// Shuffle the destination's event order (restore before or after NIC connect; deferred
    /// work run at once or after later events) and the order ports migrate in.
    pub shuffle: bool,
    /// Write every port's blob as migrated.
    pub save_dir: Option<PathBuf>,
    /// Carry runtime state (false: the baseline run).
    pub save_restore: bool,
    /// Flow-table bound per port on both hosts (the driver's `FlowsPerPort`; `None`: its
    /// default, 4,096). Raise it with `flows_per_port` beyond the default table.
    pub max_flows: Option<u32>,
}

impl Default for MigrateOptions {
    fn default() -> Self {
        Self {
            ports: 64,
            flows_per_port: 1000,
            restore_mode: RestoreMode::Pending,
            seed: 1,
            shuffle: false,
            save_dir: None,
            save_restore: true,
            max_flows: None,
        }
    }
}

/// Latency percentiles of one callback kind.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Latency {
    /// Median.
    pub p50: Duration,
    /// 99th percentile.
    pub p99: Duration,
    /// Maximum.
    pub max: Duration,
}

impl Latency {
    /// Percentiles of `v`.
    #[must_use]
    pub fn of(mut v: Vec<Duration>) -> Self {
        if v.is_empty() {
            return Self::default();
        }
        v.sort();
        let at = |q: f64| {
            #[allow(
                clippy::cast_possible_truncation,
                clippy::cast_sign_loss,
                clippy::cast_precision_loss,
                reason = "an index into a short vector"
            )]
            let i = ((v.len() - 1) as f64 * q).round() as usize;
            v[i.min(v.len() - 1)]
        };
        Self { p50: at(0.5), p99: at(0.99), max: *v.last().unwrap_or(&Duration::ZERO) }
    }
}

/// What one run measured and proved.
#[derive(Clone, Debug, Default)]
pub struct MigrationReport {
    /// Options of the run.
    pub ports: u32,
    /// Flows per port requested.
    pub flows_per_port: u32,
    /// Restore mode.
    pub pending: bool,
    /// Save callback latency.
    pub save: Latency,
    /// Restore callback latency (until it returned).
    pub restore_callback: Latency,
    /// Restore latency until completion (callback + deferred decode/apply/complete).
    pub restore_complete: Latency,
    /// All callbacks of one migrating port together (save, NIC disconnect/delete, port delete;
    /// port create, NIC create, restore to completion, NIC connect), each host call timed on
    /// its own and summed: the harness's own work between them (decoding the blobs for its
    /// statistics, writing them out, advancing the clock, the one packet it sends in the
    /// restore window) is not a callback of the port and is not in the sample.
    pub per_port_total: Latency,
    /// [`Self::per_port_total`] in the thread's CPU time: what the callbacks cost whatever
    /// else the machine runs (a descheduled thread's wait is not in it).
    pub per_port_cpu: Latency,
    /// Blob sizes: min, mean, max.
    pub blob_sizes: (usize, usize, usize),
    /// Flows on host A before migration.
    pub flows_on_a: usize,
    /// Flows carried in blobs as exact records.
    pub flows_carried: u64,
    /// Established connections carried in blobs as keyed fingerprints.
    pub flows_fingerprinted: u64,
    /// Flows carried neither exactly nor as a fingerprint (lost to the size cap).
    pub flows_dropped: u64,
    /// The opened connections, split by how they reached host B.
    pub split: Split,
    /// The same split as host B's port counters report it (the `GetCounters` IOCTL, summed
    /// over ports), and as the drivers' ETW events report it (`None` in the baseline run).
    pub reported: Option<Reported>,
    /// TCP connections established on A (flows in the established state in A's tables).
    pub established_on_a: usize,
    /// The connections the scenario opened and checks on B.
    pub connections: usize,
    /// Of those, established on B after restore.
    pub established_on_b: usize,
    /// Inbound packets of established connections permitted on B right after restore.
    pub inbound_permitted: usize,
    /// The same packets in the baseline run (no save/restore): blocked.
    pub baseline_blocked: Option<usize>,
    /// Restores that failed (as Hyper-V sees them: any extension's failure fails the VM's).
    pub failed_restores: usize,
    /// Inbound packets sent in the restore window (NIC created, restore not completed):
    /// delivered, sent.
    pub window: (usize, usize),
    /// Contract violations on either host.
    pub violations: Vec<String>,
}

/// How the connections opened on host A reached host B.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Split {
    /// Carried as exact records: established on B as soon as the restore is applied.
    pub exact: usize,
    /// Not carried exactly, but permitted on B when the VM's traffic resumed: picked up by
    /// their fingerprint.
    pub picked_up: usize,
    /// Not carried exactly, but permitted on B by the port's allow rules (the SSH rule admits a
    /// mid-stream packet of its own; a rule is consulted before a fingerprint, which it then
    /// does not use): not lost.
    pub by_rule: usize,
    /// Blocked on B: lost.
    pub lost: usize,
}

/// The split as the driver itself reports it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Reported {
    /// Port counters on B, summed: `restored_flows`.
    pub restored_flows: u64,
    /// `restored_fingerprints`.
    pub restored_fingerprints: u64,
    /// `fingerprint_pickups`.
    pub fingerprint_pickups: u64,
    /// `picked_up_loose`.
    pub picked_up_loose: u64,
    /// ETW on A, summed over `RuntimeStateSave`: flows saved exactly, fingerprinted, lost.
    pub etw_saved: (u64, u64, u64),
    /// ETW on B, summed over applied `RuntimeStateRestore`: flows restored exactly,
    /// fingerprints armed.
    pub etw_restored: (u64, u64),
}

/// Established TCP connections of one port the 60 KiB blob carries, exactly or as
/// fingerprints (docs/runtime-state-format.md, "Capacity of the default 60 KiB blob"): within
/// it, no connection may be lost.
pub const DOCUMENTED_CAPACITY: usize = 25_900;

struct Conn {
    port: usize,
    packet: SimPacket,
}

/// The key of the connection an inbound packet belongs to (local: the VM's side).
const fn inbound_key(p: &SimPacket) -> FlowKey {
    FlowKey {
        family: p.family,
        protocol: p.protocol,
        local_addr: p.dst,
        remote_addr: p.src,
        local_port: p.dport,
        remote_port: p.sport,
    }
}

const TICK_MS: u64 = 10_000;

/// The source host's side of one port's migration, in Hyper-V's order.
///
/// The runtime-state save (if `save`), then NIC disconnect, NIC delete and port delete. Returns
/// the blobs and how long the save callbacks took. The main job and the differential harness
/// ([`crate::tools::differential`]) both move ports with it.
pub fn depart(
    a: &mut Host,
    sa: usize,
    id: u32,
    nic: u16,
    save: bool,
) -> (Vec<crate::host::SavedBlob>, Duration) {
    let saved = if save { a.save(sa, id) } else { (Vec::new(), Duration::ZERO) };
    a.nic_event(sa, id, nic, sys::FWPS_VSWITCH_EVENT_INTERFACE_DISCONNECT);
    a.nic_event(sa, id, nic, sys::FWPS_VSWITCH_EVENT_INTERFACE_DELETE);
    a.delete_port(sa, id);
    saved
}

/// The destination host's side of one port's migration, up to the restore.
///
/// The port is created (with `NDIS_SWITCH_PORT_PARAMETERS_FLAG_RESTORING_PORT` if `restoring`)
/// under a new `PortId` and the same name, then its NIC is created; traffic flows from then
/// on, before the restore ("Hyper-V extensible switch port and network adapter states"). NIC
/// connect and the restore itself ([`Host::restore`]) are the caller's, in whichever order it
/// tests.
pub fn arrive(b: &mut Host, sb: usize, id: u32, name: &str, nic: u16, restoring: bool) {
    b.create_port(sb, id, name, restoring);
    b.nic_event(sb, id, nic, sys::FWPS_VSWITCH_EVENT_INTERFACE_CREATE);
}

/// Time between two checked packets on host B after the migrations (10 us: every VM's traffic
/// resumes at once, about 100,000 packets a second on the host). Fingerprints are armed for the
/// pickup window (default 5 minutes) after each port's restore; a serial 1 ms per packet would
/// put the last of a million checked packets 16 minutes after its port's restore, which no live
/// migration looks like. Connections whose traffic does not resume within the window are lost
/// (the window is the driver's `PickupWindowSeconds`).
const RESUME_GAP: u64 = 100;

fn config(opts: &MigrateOptions) -> DriverConfig {
    let d = DriverConfig::default();
    DriverConfig {
        restore_mode: opts.restore_mode,
        default_mode: Mode::Enforce,
        // Past the default table (4,096 flows) the bound is raised to hold every flow opened,
        // unless `max_flows` sets it.
        flows_per_port: opts.max_flows.unwrap_or_else(|| d.flows_per_port.max(opts.flows_per_port)),
        ..d
    }
}

fn port_name(i: usize) -> String {
    format!("6F1C{i:04X}-5A3B-4C2D-9E8F-{:012X}", i * 7919)
}

/// Wall-clock and thread CPU time of one port's callbacks, summed host call by host call.
#[derive(Clone, Copy, Debug, Default)]
struct CallbackTime {
    wall: Duration,
    cpu: Duration,
}

impl CallbackTime {
    /// Runs one host call (the callbacks it makes and the double's bookkeeping around them)
    /// and adds its time.
    fn time<T>(&mut self, call: impl FnOnce() -> T) -> T {
        let (cpu, wall) = (thread_cpu(), Instant::now());
        let out = call();
        self.wall += wall.elapsed();
        self.cpu += thread_cpu().saturating_sub(cpu);
        out
    }
}

/// Runs the scenario (and, if `opts.save_restore`, the baseline too) and returns the report.
///
/// # Panics
/// If the simulated driver cannot be loaded (a bug, reported loudly).
#[must_use]
#[allow(clippy::too_many_lines, reason = "the scenario, step by step")]
pub fn run(opts: &MigrateOptions) -> MigrationReport {
    let mut report = run_once(opts);
    if opts.save_restore {
        let baseline =
            run_once(&MigrateOptions { save_restore: false, save_dir: None, ..opts.clone() });
        report.baseline_blocked = Some(baseline.connections - baseline.inbound_permitted);
        report.violations.extend(baseline.violations);
    }
    report
}

#[allow(clippy::too_many_lines, reason = "the scenario, step by step")]
fn run_once(opts: &MigrateOptions) -> MigrationReport {
    let mut rng = SplitMix64(opts.seed);
    let mut a = Host::new(opts.seed);
    let mut b = Host::new(opts.seed ^ 0xB);
    b.advance(123_456_789); // another host, another tick base
    a.advance(987_654_321_000);
    a.load_driver(config(opts)).expect("driver loads on host A");
    b.load_driver(config(opts)).expect("driver loads on host B");
    let sa = a.create_switch("0E5B1C2D-AAAA-4000-8000-00000000000A", &[]);
    let sb = b.create_switch("0E5B1C2D-BBBB-4000-8000-00000000000B", &[]);
    let ports = opts.ports as usize;
    let ssh = AllowRule {
        protocol: Some(protocol::TCP),
        local_ports: PortRange::single(22),
        remote: Prefix::v4([203, 0, 113, 0], 24).unwrap_or(Prefix::Any),
    };
    for i in 0..ports {
        let id = 100 + u32::try_from(i).unwrap_or(0);
        a.create_port(sa, id, &port_name(i), false);
        let nic = u16::try_from(i % 60_000).unwrap_or(0) + 1;
        a.nic_event(sa, id, nic, sys::FWPS_VSWITCH_EVENT_INTERFACE_CREATE);
        a.nic_event(sa, id, nic, sys::FWPS_VSWITCH_EVENT_INTERFACE_CONNECT);
    }
    // Rules go in as an operator's tool sends them: the ReplaceRules IOCTL.
    let ruled = a.replace_rules_everywhere(&[ssh]);
    assert_eq!(ruled, ports, "every VM port accepts the SSH rule");

    // Traffic on A. Data starts at the IP header; some packets carry IPv4 options or IPv6
    // extension headers, and some are laid out in MDL chains cut inside the headers.
    let mut conns: Vec<Conn> = Vec::new();
    for i in 0..ports {
        let id = 100 + u32::try_from(i).unwrap_or(0);
        let vm_n = u32::try_from(i).unwrap_or(0);
        for f in 0..opts.flows_per_port {
            a.advance(TICK_MS);
            let kind = rng.below(100);
            let family = if rng.below(5) == 0 { IpFamily::V6 } else { IpFamily::V4 };
            let lport = 20_000 + u16::try_from(f % 40_000).unwrap_or(0);
            let cut = usize::try_from(rng.below(60)).unwrap_or(0) + 1;
            let shape = |p: SimPacket| match f % 8 {
                1 | 5 => p.split_at(&[cut]),
                3 if p.family == IpFamily::V4 => p.with_ipv4_options(2).split_at(&[cut]),
                3 => p.with_ipv6_ext(&[crate::vswitch::packet::Ipv6Ext::HopByHop]),
                _ => p,
            };
            match kind {
                // Inbound SSH through the allow rule (IPv4 only: the rule's prefix).
                0..=9 => {
                    let syn = traffic::inbound_syn(
                        IpFamily::V4,
                        remote_addr(IpFamily::V4, f, true),
                        lport,
                        vm_n,
                        22,
                    );
                    let (_, data) = traffic::inbound_handshake(&mut a, sa, id, &shape(syn));
                    conns.push(Conn { port: i, packet: data });
                }
                // VM-opened TCP, established.
                10..=74 => {
                    let syn =
                        traffic::vm_syn(family, vm_n, lport, remote_addr(family, f, false), 443);
                    let (_, data) = traffic::vm_handshake(&mut a, sa, id, &shape(syn));
                    conns.push(Conn { port: i, packet: data });
                }
                // VM-opened TCP still in handshake.
                75..=84 => {
                    let syn =
                        traffic::vm_syn(family, vm_n, lport, remote_addr(family, f, false), 8443);
                    a.transmit(sa, id, EXTERNAL_PORT, &shape(syn));
                }
                // UDP.
                _ => {
                    let q = SimPacket::new(
                        family,
                        protocol::UDP,
                        traffic::vm_addr(family, vm_n),
                        lport,
                        remote_addr(family, f, false),
                        53,
                        0,
                        40,
                    );
                    traffic::udp_exchange(&mut a, sa, id, &shape(q));
                }
            }
        }
    }
    let totals_a = a.driver().flow_totals();
    let established_on_a = totals_a.established;
    let flows_on_a = totals_a.flows;

    // Migration, port by port.
    let mut order: Vec<usize> = (0..ports).collect();
    if opts.shuffle {
        for k in (1..order.len()).rev() {
            let j = usize::try_from(rng.below(k as u64 + 1)).unwrap_or(0);
            order.swap(k, j);
        }
    }
    let mut saves = Vec::new();
    let mut restore_cb = Vec::new();
    let mut restore_done = Vec::new();
    let mut per_port = Vec::new();
    let mut per_port_cpu = Vec::new();
    let mut sizes = Vec::new();
    let mut carried = 0u64;
    let mut fingerprinted = 0u64;
    let mut dropped = 0u64;
    let mut exact_keys: HashSet<(usize, FlowKey)> = HashSet::new();
    let mut fingerprint_sets: Vec<Option<FingerprintSet>> = (0..ports).map(|_| None).collect();
    let mut failed = 0usize;
    let mut deferred_tickets = Vec::new();
    let mut first_conn: Vec<Option<usize>> = vec![None; ports];
    for (k, c) in conns.iter().enumerate() {
        if first_conn[c.port].is_none() {
            first_conn[c.port] = Some(k);
        }
    }
    let mut window_sent = 0usize;
    let mut window_delivered = 0usize;
    for &i in &order {
        let id_a = 100 + u32::try_from(i).unwrap_or(0);
        let id_b = 5000 + u32::try_from(i).unwrap_or(0);
        let nic = u16::try_from(i % 60_000).unwrap_or(0) + 1;
        // The port's callbacks, host call by host call (the field's doc says what is out).
        let mut callbacks = CallbackTime::default();
        let (blobs, elapsed) = callbacks.time(|| depart(&mut a, sa, id_a, nic, opts.save_restore));
        let blobs = if opts.save_restore {
            saves.push(elapsed);
            for (_, blob) in &blobs {
                sizes.push(blob.len());
                if let Ok(Decoded::State(s)) = codec::decode(blob, &DecodeConfig::default()) {
                    carried += s.flows.len() as u64;
                    fingerprinted += u64::from(s.save_info.flows_fingerprinted);
                    dropped += u64::from(s.save_info.flows_dropped);
                    exact_keys.extend(s.flows.iter().map(|f| (i, f.key)));
                    if let Some(slot) = fingerprint_sets.get_mut(i) {
                        *slot = Some(s.fingerprints);
                    }
                }
                if let Some(dir) = &opts.save_dir {
                    let _ = std::fs::create_dir_all(dir);
                    let _ =
                        std::fs::write(dir.join(format!("port-{i:04}-{}.bin", port_name(i))), blob);
                }
            }
            blobs
        } else {
            Vec::new()
        };

        b.advance(TICK_MS);
        callbacks.time(|| arrive(&mut b, sb, id_b, &port_name(i), nic, opts.save_restore));
        let connect_first = opts.shuffle && rng.below(2) == 0;
        if connect_first {
            callbacks
                .time(|| b.nic_event(sb, id_b, nic, sys::FWPS_VSWITCH_EVENT_INTERFACE_CONNECT));
        }
        if opts.save_restore {
            let tickets = callbacks.time(|| b.restore(sb, id_b, &blobs));
            // The restore window: the NIC is created and traffic flows before the pended
            // restore completes ("Hyper-V extensible switch port and network adapter
            // states"). The VM's first carried connection sends now.
            if let Some(c) = first_conn.get(i).copied().flatten() {
                b.advance(TICK_MS);
                window_sent += 1;
                if b.transmit(sb, EXTERNAL_PORT, id_b, &conns[c].packet) == PacketFate::Delivered {
                    window_delivered += 1;
                }
            }
            let defer = opts.shuffle && rng.below(3) == 0;
            for t in tickets {
                restore_cb.push(t.elapsed);
                if t.returned == sys::STATUS_PENDING && defer {
                    deferred_tickets.push(t);
                    continue;
                }
                let wall_before = callbacks.wall;
                callbacks.time(|| b.run_deferred());
                restore_done.push(t.elapsed + callbacks.wall.saturating_sub(wall_before));
                if b.restore_status(&t) != Some(sys::STATUS_SUCCESS) {
                    failed += 1;
                }
            }
        }
        if !connect_first {
            callbacks
                .time(|| b.nic_event(sb, id_b, nic, sys::FWPS_VSWITCH_EVENT_INTERFACE_CONNECT));
        }
        per_port.push(callbacks.wall);
        per_port_cpu.push(callbacks.cpu);
    }
    // Deferred work the shuffle held back runs now, after later ports' events.
    b.run_deferred();
    for t in deferred_tickets {
        restore_done.push(t.elapsed);
        if b.restore_status(&t) != Some(sys::STATUS_SUCCESS) {
            failed += 1;
        }
    }

    // The proof: established connections on B, and their inbound packets right after restore
    // (the VM's traffic resumes): carried exactly, picked up by fingerprint, or lost.
    let established_on_b = b.driver().flow_totals().established;
    let mut inbound_permitted = 0;
    let mut split = Split::default();
    for c in &conns {
        let id_b = 5000 + u32::try_from(c.port).unwrap_or(0);
        b.advance(RESUME_GAP);
        let key = inbound_key(&c.packet);
        let exact = exact_keys.contains(&(c.port, key));
        let fingerprinted = fingerprint_sets
            .get(c.port)
            .and_then(Option::as_ref)
            .is_some_and(|set| set.contains(&key));
        if b.transmit(sb, EXTERNAL_PORT, id_b, &c.packet) == PacketFate::Delivered {
            inbound_permitted += 1;
            let ruled = ssh.matches(key.protocol, key.family, key.local_port, &key.remote_addr);
            if exact {
                split.exact += 1;
            } else if fingerprinted && !ruled {
                split.picked_up += 1;
            } else {
                split.by_rule += 1;
            }
        } else {
            split.lost += 1;
        }
    }
    let reported = opts.save_restore.then(|| reported(&a, &b));
    // Hyper-V fails a VM's restore if any extension failed it.
    failed = failed.max(b.failed_vm_restores().len());
    a.unload_driver();
    b.unload_driver();
    let violations =
        a.violations().into_iter().chain(b.violations()).map(|v| v.to_string()).collect();
    let (min, max) =
        (sizes.iter().copied().min().unwrap_or(0), sizes.iter().copied().max().unwrap_or(0));
    let mean = if sizes.is_empty() { 0 } else { sizes.iter().sum::<usize>() / sizes.len() };
    MigrationReport {
        ports: opts.ports,
        flows_per_port: opts.flows_per_port,
        pending: opts.restore_mode == RestoreMode::Pending,
        save: Latency::of(saves),
        restore_callback: Latency::of(restore_cb),
        restore_complete: Latency::of(restore_done),
        per_port_total: Latency::of(per_port),
        per_port_cpu: Latency::of(per_port_cpu),
        blob_sizes: (min, mean, max),
        flows_on_a,
        flows_carried: carried,
        flows_fingerprinted: fingerprinted,
        flows_dropped: dropped,
        split,
        reported,
        established_on_a,
        connections: conns.len(),
        established_on_b,
        inbound_permitted,
        baseline_blocked: None,
        failed_restores: failed,
        window: (window_delivered, window_sent),
        violations,
    }
}

/// What the drivers report: B's port counters through the `GetCounters` IOCTL, and both
/// hosts' ETW events.
fn reported(a: &Host, b: &Host) -> Reported {
    let mut r = Reported::default();
    let index = |name: &str| PortCounters::ALL_NAMES.iter().position(|n| *n == name);
    for p in b.list_ports() {
        let (status, bytes) =
            b.control(&Request::GetCounters { port: Some(p.port) }, 8 + 4 + 8 * 64);
        let mut values = [0u64; 64];
        if !sys::nt_success(status) || response::decode_counters(&bytes, &mut values).is_err() {
            continue;
        }
        let get = |name| index(name).and_then(|i| values.get(i)).copied().unwrap_or(0);
        r.restored_flows += get("restored_flows");
        r.restored_fingerprints += get("restored_fingerprints");
        r.fingerprint_pickups += get("fingerprint_pickups");
        r.picked_up_loose += get("picked_up_loose");
    }
    for e in a.trace_events() {
        if let TraceEvent::Save { flows_saved, flows_fingerprinted, flows_dropped, .. } = e {
            r.etw_saved.0 += u64::from(flows_saved);
            r.etw_saved.1 += u64::from(flows_fingerprinted);
            r.etw_saved.2 += u64::from(flows_dropped);
        }
    }
    for e in b.trace_events() {
        if let TraceEvent::Restore {
            flows_restored,
            fingerprints,
            outcome: RestoreOutcome::Applied,
            ..
        } = e
        {
            r.etw_restored.0 += u64::from(flows_restored);
            r.etw_restored.1 += u64::from(fingerprints);
        }
    }
    r
}

fn us(d: Duration) -> String {
    format!("{:.1} us", d.as_secs_f64() * 1e6)
}

impl MigrationReport {
    /// True when everything the scenario proves held.
    #[must_use]
    pub fn passed(&self) -> bool {
        self.violations.is_empty()
            && self.failed_restores == 0
            && self.established_on_a == self.connections
            && self.established_on_b >= self.split.exact
            && self.split.exact + self.split.picked_up + self.split.by_rule + self.split.lost
                == self.connections
            && (self.split.lost <= self.shared_fingerprints() || self.beyond_capacity())
            && self.baseline_blocked.is_none_or(|b| b == self.connections)
            && self.window.0 == self.window.1
            && self.reported.is_none_or(|r| self.agrees_with(&r))
    }

    /// Connections whose fingerprint value another connection of the same port shares
    /// (fingerprinted connections minus the distinct values the restores armed): a shared value
    /// picks up one flow (each fingerprint admits one at most), so up to this many may be lost
    /// even within the capacity, about `n^2 / 2^33` per port of `n` fingerprints
    /// (docs/runtime-state-format.md).
    #[must_use]
    pub fn shared_fingerprints(&self) -> usize {
        self.reported.map_or(0, |r| {
            usize::try_from(self.flows_fingerprinted.saturating_sub(r.restored_fingerprints))
                .unwrap_or(usize::MAX)
        })
    }

    /// Some port had more established connections than the documented capacity, where losing
    /// the least recently active is the documented behaviour.
    #[must_use]
    pub fn beyond_capacity(&self) -> bool {
        let ports = usize::try_from(self.ports.max(1)).unwrap_or(usize::MAX);
        self.connections.div_ceil(ports) > DOCUMENTED_CAPACITY
    }

    /// The driver's counters and ETW events report the split the scenario observed.
    #[must_use]
    pub fn agrees_with(&self, r: &Reported) -> bool {
        let picked = u64::try_from(self.split.picked_up).unwrap_or(u64::MAX);
        r.etw_saved == (self.flows_carried, self.flows_fingerprinted, self.flows_dropped)
            && r.etw_restored == (r.restored_flows, r.restored_fingerprints)
            // Two connections may share a fingerprint value: the blob then holds fewer values.
            && r.restored_fingerprints <= self.flows_fingerprinted
            && r.fingerprint_pickups + r.picked_up_loose == picked
    }

    /// The report for a person.
    #[must_use]
    pub fn to_text(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "vsflow-sim live migration: {} ports x {} flows, {} restore",
            self.ports,
            self.flows_per_port,
            if self.pending { "pended" } else { "synchronous" }
        );
        let _ = writeln!(s, "\ncallback latency            p50          p99          max");
        for (name, l) in [
            ("save", self.save),
            ("restore (callback)", self.restore_callback),
            ("restore (to completion)", self.restore_complete),
            ("one port, all callbacks", self.per_port_total),
            ("the same, CPU time", self.per_port_cpu),
        ] {
            let _ =
                writeln!(s, "  {name:<24} {:>12} {:>12} {:>12}", us(l.p50), us(l.p99), us(l.max));
        }
        let _ = writeln!(
            s,
            "\nblob size (bytes)           min {}  mean {}  max {}",
            self.blob_sizes.0, self.blob_sizes.1, self.blob_sizes.2
        );
        let _ = writeln!(s, "flows on host A             {}", self.flows_on_a);
        let _ = writeln!(
            s,
            "flows carried exactly       {} (the cap keeps established TCP first)",
            self.flows_carried
        );
        let _ = writeln!(s, "  as fingerprints           {}", self.flows_fingerprinted);
        let _ = writeln!(
            s,
            "  left out by the cap       {} (flows, not established connections first)",
            self.flows_dropped
        );
        let _ = writeln!(s, "\nproof");
        let _ = writeln!(s, "  connections established on A          {}", self.established_on_a);
        let _ = writeln!(
            s,
            "  established on B after restore        {} (+ {} fingerprinted: picked up when their traffic resumes)",
            self.established_on_b, self.flows_fingerprinted
        );
        let _ = writeln!(
            s,
            "  their inbound packets permitted on B  {} of {}",
            self.inbound_permitted, self.connections
        );
        if let Some(b) = self.baseline_blocked {
            let _ = writeln!(
                s,
                "  same packets without save/restore     {b} of {} blocked (Enforce mode)",
                self.connections
            );
        }
        self.split_text(&mut s);
        let _ = writeln!(
            s,
            "  delivered in the restore window       {} of {}",
            self.window.0, self.window.1
        );
        let _ = writeln!(s, "  failed restores                       {}", self.failed_restores);
        let _ = writeln!(s, "  contract violations                   {}", self.violations.len());
        for v in &self.violations {
            let _ = writeln!(s, "    - {v}");
        }
        let _ = writeln!(s, "\nresult: {}", if self.passed() { "PASS" } else { "FAIL" });
        s
    }

    /// The split of the connections and what the driver reported, for [`Self::to_text`].
    fn split_text(&self, s: &mut String) {
        let _ = writeln!(s, "\nconnections on B (after the VM's traffic resumed)");
        let _ = writeln!(s, "  carried exactly                       {}", self.split.exact);
        let _ = writeln!(s, "  picked up by fingerprint              {}", self.split.picked_up);
        if self.split.by_rule > 0 {
            let _ = writeln!(
                s,
                "  not carried, admitted by a rule       {} (inbound SSH: the allow rule admits them anew)",
                self.split.by_rule
            );
        }
        let _ = writeln!(
            s,
            "  lost                                  {}{}",
            self.split.lost,
            if self.beyond_capacity() {
                format!(" (beyond the documented {DOCUMENTED_CAPACITY} per port)")
            } else if self.shared_fingerprints() > 0 {
                format!(
                    " (within the documented {DOCUMENTED_CAPACITY} per port; {} connections shared a fingerprint value with another)",
                    self.shared_fingerprints()
                )
            } else {
                format!(" (within the documented {DOCUMENTED_CAPACITY} per port)")
            }
        );
        if let Some(r) = &self.reported {
            let _ = writeln!(
                s,
                "  driver counters on B                  restored_flows {} restored_fingerprints {} fingerprint_pickups {} picked_up_loose {}",
                r.restored_flows, r.restored_fingerprints, r.fingerprint_pickups, r.picked_up_loose
            );
            if r.restored_flows < self.flows_carried {
                let _ = writeln!(
                    s,
                    "    ({} exact records not restored: UDP or half-open flows idle past their timeout at the save, counted `expired`)",
                    self.flows_carried - r.restored_flows
                );
            }
            let _ = writeln!(
                s,
                "  ETW                                   saved {} exact / {} fingerprinted / {} lost; restored {} exact / {} fingerprints ({})",
                r.etw_saved.0,
                r.etw_saved.1,
                r.etw_saved.2,
                r.etw_restored.0,
                r.etw_restored.1,
                if self.agrees_with(r) { "agrees" } else { "DISAGREES" }
            );
        }
    }

    /// The report as JSON.
    #[must_use]
    pub fn to_json(&self) -> serde_json::Value {
        let lat = |l: Latency| serde_json::json!({"p50_us": l.p50.as_secs_f64() * 1e6, "p99_us": l.p99.as_secs_f64() * 1e6, "max_us": l.max.as_secs_f64() * 1e6});
        serde_json::json!({
            "ports": self.ports,
            "flows_per_port": self.flows_per_port,
            "restore": if self.pending { "pending" } else { "sync" },
            "latency": {"save": lat(self.save), "restore_callback": lat(self.restore_callback), "restore_complete": lat(self.restore_complete), "per_port_total": lat(self.per_port_total), "per_port_cpu": lat(self.per_port_cpu)},
            "blob_bytes": {"min": self.blob_sizes.0, "mean": self.blob_sizes.1, "max": self.blob_sizes.2},
            "flows": {"on_a": self.flows_on_a, "carried": self.flows_carried, "fingerprinted": self.flows_fingerprinted, "dropped": self.flows_dropped},
            "connections": {"exact": self.split.exact, "picked_up_by_fingerprint": self.split.picked_up, "admitted_by_rule": self.split.by_rule, "lost": self.split.lost, "shared_fingerprint_values": self.shared_fingerprints(), "documented_capacity_per_port": DOCUMENTED_CAPACITY, "beyond_capacity": self.beyond_capacity()},
            "reported": self.reported.map(|r| serde_json::json!({
                "counters_b": {"restored_flows": r.restored_flows, "restored_fingerprints": r.restored_fingerprints, "fingerprint_pickups": r.fingerprint_pickups, "picked_up_loose": r.picked_up_loose},
                "etw_save_a": {"exact": r.etw_saved.0, "fingerprinted": r.etw_saved.1, "lost": r.etw_saved.2},
                "etw_restore_b": {"exact": r.etw_restored.0, "fingerprints": r.etw_restored.1},
                "agrees": self.agrees_with(&r),
            })),
            "proof": {"connections": self.connections, "established_on_a": self.established_on_a, "established_on_b": self.established_on_b, "inbound_permitted_on_b": self.inbound_permitted, "baseline_blocked": self.baseline_blocked},
            "failed_restores": self.failed_restores,
            "restore_window": {"delivered": self.window.0, "sent": self.window.1},
            "violations": self.violations,
            "passed": self.passed(),
        })
    }
}
