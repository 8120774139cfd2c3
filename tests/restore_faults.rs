//! The restore and save callbacks with each of their driver allocations refused in turn
//! (issue 18 follow-ups, review s6 "Left open": R6-3, R6-4 and R6-5 each found one refusal of a
//! few bytes a flow that cost every carried connection of a restore).
//!
//! For representative blobs and ports (at the cap; past the cap with fingerprints from a split
//! port; a restore window larger than the blob; a dual-stack port whose lists are placed out
//! of order), allocation N of the restore (callback, work item, apply) is refused, for every
//! N until none is, on a fresh port each time. Every time:
//!
//! - the VM's restore completes, with success, exactly once (no contract violation);
//! - the port's policy is kept or tightened: its mode and rules are the reference's (the same
//!   restore without a refusal), and no probe packet is admitted that the reference blocks;
//! - what is lost is counted (flows: `untracked`, `restore_dropped` or a degraded restore,
//!   `restores_empty`; fingerprints: `untracked`);
//! - what is lost is no more than what the refused allocation was for: a refusal that is the
//!   staged table's own storage may cost the flows it would hold, a refused fingerprint set
//!   the fingerprints, a refused copy or order nothing at all (the call stack of each refusal
//!   names it: `faults::fired_backtrace`).
//!
//! The save: allocation N of a save whose encoder the idle sweep had freed (a save right after
//! another allocates nothing) refused, every N: the callback hands a blob (a VM's save never
//! fails because of vsflow), and that blob restores on a destination without admitting
//! anything the unrefused save's restore blocks; a refused fingerprint allocation may cost
//! fingerprints only. (Every refusal of the encoder's working memory sends the no-state blob
//! today: the destination keeps or closes its own policy and carries no flow.)

use fwps_sys as sys;
use vsflow_callout::{DriverConfig, RestoreMode};
use vsflow_core::{AllowRule, IpFamily, Mode, PortCounters, PortRange, Prefix, protocol};
use vsflow_proto::request::{PortRef, Request};
use vsflow_proto::response::PortInfo;
use vsflow_scenarios::enforce;
use vsflow_sim::host::{EXTERNAL_PORT, SavedBlob};
use vsflow_sim::kernel::faults::{self, Site};
use vsflow_sim::tools::traffic::{self, tcp};
use vsflow_sim::{Host, PacketFate, SimPacket, VmRestore};

const NAME: &str = "6F1C0001-5A3B-4C2D-9E8F-0000000FA017";
/// The VM's port number on the source: its addresses (`traffic::vm_addr`).
const VM: u32 = 10;

/// SSH from the clients the traffic module's allow rule names: the source's one rule.
fn ssh_rule() -> AllowRule {
    AllowRule {
        protocol: Some(protocol::TCP),
        local_ports: PortRange::single(22),
        remote: Prefix::Any,
    }
}

fn port_info(h: &Host) -> Option<PortInfo> {
    h.list_ports().into_iter().find(|p| p.name.to_string() == NAME)
}

fn port_ref(h: &Host) -> PortRef {
    port_info(h).expect("port listed").port
}

fn set_rules(h: &Host, rules: &[AllowRule]) {
    let mut space = vec![0u8; 24 * rules.len().max(1)];
    let list = vsflow_proto::request::rule_list(rules, &mut space).expect("rules encode");
    let version = rules_of(h).0;
    let req = Request::ReplaceRules { port: port_ref(h), expected_version: version, rules: list };
    assert_eq!(h.control(&req, 64).0, 0, "ReplaceRules");
}

fn rules_of(h: &Host) -> (u32, Vec<AllowRule>) {
    let (status, bytes) = h.control(&Request::GetRules { port: port_ref(h) }, 1 << 16);
    assert_eq!(status, 0, "GetRules");
    let mut rules = Vec::new();
    let version = vsflow_proto::response::decode_rules(&bytes, |r| rules.push(r)).expect("rules");
    (version, rules)
}

fn counters_of(h: &Host) -> PortCounters {
    let (status, bytes) = h.control(&Request::GetCounters { port: Some(port_ref(h)) }, 1024);
    assert_eq!(status, 0, "GetCounters");
    let mut values = [0u64; 64];
    let n = vsflow_proto::response::decode_counters(&bytes, &mut values).expect("counters");
    assert_eq!(n, PortCounters::ALL_COUNT);
    let mut it = values.into_iter();
    PortCounters::from_values(core::iter::from_fn(|| it.next()))
}

fn remote(family: IpFamily, k: u16) -> [u8; 16] {
    traffic::remote_addr(family, u32::from(k) + 256, false)
}

/// The VM's connection `k` (opened by the VM, to port 443): its SYN.
fn conn(family: IpFamily, k: u16) -> SimPacket {
    traffic::vm_syn(family, VM, 20_000 + k, remote(family, k), 443)
}

/// The peer's data packet of connection `k`.
fn peer_data(family: IpFamily, k: u16) -> SimPacket {
    conn(family, k).reply(tcp::PSH_ACK, 100)
}

/// Opens connection `k` on port `id`.
fn open(h: &mut Host, sw: usize, id: u32, family: IpFamily, k: u16) {
    h.advance(1_000);
    let (fates, _) = traffic::vm_handshake(h, sw, id, &conn(family, k));
    assert_eq!(fates, [PacketFate::Delivered; 3], "handshake {k}");
}

/// A representative restore.
struct Case {
    name: &'static str,
    /// The source's blobs of the port.
    blobs: Vec<SavedBlob>,
    /// The destination driver's configuration.
    dest: DriverConfig,
    /// Connections the VM opens in the restore window, before the restore (on the
    /// destination).
    window: Vec<(IpFamily, u16)>,
    /// Inbound packets of carried connections (a sample of them) and of window connections.
    carried: Vec<SimPacket>,
}

/// A source port with the SSH rule and `conns` connections (family, number), saved.
fn source(config: DriverConfig, conns: &[(IpFamily, u16)], spread: bool) -> Vec<SavedBlob> {
    let (mut a, sa) = loaded_source(config, conns, spread);
    let (blobs, _) = a.save(sa, VM);
    a.unload_driver();
    assert!(a.violations().is_empty(), "{:?}", a.violations());
    blobs
}

/// A host whose port `VM` has the SSH rule and `conns` connections (family, number), split
/// over the processors if `spread`; returns it and its switch.
fn loaded_source(config: DriverConfig, conns: &[(IpFamily, u16)], spread: bool) -> (Host, usize) {
    let mut a = Host::new(1);
    a.load_driver(config).expect("loads");
    let sa = a.create_switch("SW-A", &[]);
    assert_eq!(a.create_port(sa, VM, NAME, false), 0);
    assert_eq!(a.nic_event(sa, VM, 1, sys::FWPS_VSWITCH_EVENT_INTERFACE_CREATE), 0);
    assert_eq!(a.nic_event(sa, VM, 1, sys::FWPS_VSWITCH_EVENT_INTERFACE_CONNECT), 0);
    set_rules(&a, &[ssh_rule()]);
    for &(family, k) in conns {
        open(&mut a, sa, VM, family, k);
    }
    if spread {
        // Split over the processors by a sweep, each connection's next packet on its own
        // processor (the past-the-cap port's production shape, `tools::bench::spread_port`).
        use vsflow_sim::kernel::services::{PROCESSORS, set_processor};
        a.advance(10_000_000);
        let _ = a.within(|| a.driver().expire_idle(16));
        for &(family, k) in conns {
            a.advance(500);
            set_processor(u32::from(k) % PROCESSORS);
            a.transmit(sa, EXTERNAL_PORT, VM, &peer_data(family, k));
        }
        set_processor(0);
    }
    a.advance(1_000_000);
    (a, sa)
}

fn v4(range: std::ops::Range<u16>) -> Vec<(IpFamily, u16)> {
    range.map(|k| (IpFamily::V4, k)).collect()
}

/// A sample of `conns`' peer packets (every `every`-th).
fn sample(conns: &[(IpFamily, u16)], every: usize) -> Vec<SimPacket> {
    conns.iter().step_by(every).map(|&(f, k)| peer_data(f, k)).collect()
}

fn cases() -> Vec<Case> {
    let pended = enforce(RestoreMode::Pending);
    let mut out = Vec::new();
    // At the cap: 4,096 connections, every one carried exactly.
    let at_cap = v4(0..4_096);
    out.push(Case {
        name: "at the cap (4,096 exact)",
        blobs: source(pended, &at_cap, false),
        dest: pended,
        window: Vec::new(),
        carried: sample(&at_cap, 97),
    });
    // Past the cap, the port split over the processors: exact records and fingerprints.
    let past: Vec<_> = v4(0..10_000);
    let big = DriverConfig { flows_per_port: 16_384, ..pended };
    out.push(Case {
        name: "past the cap, split port (exact + fingerprints)",
        blobs: source(big, &past, true),
        dest: big,
        window: Vec::new(),
        carried: sample(&past, 211),
    });
    // The same blob into a port of a smaller bound (2,048): more flows than it holds, placed
    // through the list, the most valuable kept (`stage_saved`).
    out.push(Case {
        name: "past the cap into a smaller bound (placed through the list)",
        blobs: out[1].blobs.clone(),
        dest: DriverConfig { flows_per_port: 2_048, ..pended },
        window: Vec::new(),
        carried: Vec::new(),
    });
    // A restore window larger than the blob (the carried flows merged into the port's table).
    let few = v4(0..300);
    let window = v4(30_000..31_000);
    let mut carried = sample(&few, 7);
    carried.extend(sample(&window, 50));
    out.push(Case {
        name: "a window larger than the blob",
        blobs: source(pended, &few, false),
        dest: pended,
        window,
        carried,
    });
    // A blob with fingerprints into a window larger than its exact flows (the source's cap
    // small, 8,000 bytes, so that most of its 2,000 connections travel as fingerprints): the
    // window's connections checked against the fingerprints (review s7's suggestion).
    let fp_source = v4(0..2_000);
    let fp_window = v4(30_000..31_200);
    let small_cap = DriverConfig { blob_cap: 8_000, ..pended };
    let mut carried = sample(&fp_source, 41);
    carried.extend(sample(&fp_window, 60));
    out.push(Case {
        name: "fingerprints into a larger window",
        blobs: source(small_cap, &fp_source, false),
        dest: pended,
        window: fp_window,
        carried,
    });
    // Dual stack: IPv4 and IPv6 connections opened alternately; the blob lists the IPv4 ones
    // first, so the staged list is out of age order.
    let dual: Vec<_> =
        (0..1_200u16).map(|k| (if k % 2 == 0 { IpFamily::V4 } else { IpFamily::V6 }, k)).collect();
    out.push(Case {
        name: "dual stack, lists placed out of order",
        blobs: source(pended, &dual, false),
        dest: pended,
        window: Vec::new(),
        carried: sample(&dual, 37),
    });
    out.push(Case {
        name: "at the cap, synchronous restore",
        blobs: out[0].blobs.clone(),
        dest: enforce(RestoreMode::Synchronous),
        window: Vec::new(),
        carried: sample(&at_cap, 97),
    });
    out
}

/// What a restore left.
#[derive(Debug)]
struct Outcome {
    /// Driver allocations the restore made (counted only, or up to the refused one and on).
    allocations: u64,
    refused: Option<(usize, String)>,
    vm_restore: VmRestore,
    flows: u32,
    mode: Mode,
    rules: Vec<AllowRule>,
    counters: PortCounters,
    /// Each probe: delivered.
    probes: Vec<bool>,
    violations: Vec<String>,
    /// The driver logged that the blob's rules could not be had.
    rules_lost_logged: bool,
}

/// The probes, in order: the sample of carried connections' packets, then what must stay
/// blocked or allowed by policy: an outsider's SYN to a closed port, an outsider's mid-stream
/// segment of a connection nobody carried, an SSH SYN the rule admits.
fn probes(case: &Case) -> Vec<SimPacket> {
    let mut p = case.carried.clone();
    let outsider = traffic::remote_addr(IpFamily::V4, 99, false);
    p.push(traffic::inbound_syn(IpFamily::V4, outsider, 40_001, VM, 3389));
    let vm = traffic::vm_addr(IpFamily::V4, VM);
    p.push(SimPacket::new(IpFamily::V4, protocol::TCP, outsider, 40_002, vm, 445, tcp::ACK, 100));
    p.push(traffic::inbound_syn(
        IpFamily::V4,
        traffic::remote_addr(IpFamily::V4, 7, true),
        40_003,
        VM,
        22,
    ));
    p
}

/// Restores `case` into a new port `id` of `b`, with allocation `nth` of the restore refused
/// (`None`: counted only).
fn restore_once(b: &mut Host, sb: usize, id: u32, case: &Case, nth: Option<u64>) -> Outcome {
    assert_eq!(b.create_port(sb, id, NAME, true), 0);
    assert_eq!(b.nic_event(sb, id, 1, sys::FWPS_VSWITCH_EVENT_INTERFACE_CREATE), 0);
    for &(family, k) in &case.window {
        open(b, sb, id, family, k);
    }
    let rules_lost_logs = |b: &Host| {
        b.logs().iter().filter(|l| l.contains("no memory for the blob's allow rules")).count()
    };
    let logged_before = rules_lost_logs(b);
    faults::arm(b.id(), nth.map(|_| Site::Alloc), nth.unwrap_or(0));
    let tickets = b.restore(sb, id, &case.blobs);
    b.run_deferred();
    let allocations = faults::count(Site::Alloc);
    let refused = (faults::fired() > 0)
        .then(|| (faults::fired_size(), faults::fired_backtrace().unwrap_or_default()));
    faults::disarm();
    assert_eq!(b.nic_event(sb, id, 1, sys::FWPS_VSWITCH_EVENT_INTERFACE_CONNECT), 0);
    let info = port_info(b).expect("port listed");
    let rules = rules_of(b).1;
    let counters = counters_of(b);
    let probes = probes(case)
        .iter()
        .map(|p| b.transmit(sb, EXTERNAL_PORT, id, p) == PacketFate::Delivered)
        .collect();
    assert_eq!(b.delete_port(sb, id), 0);
    Outcome {
        allocations,
        refused,
        vm_restore: b.vm_restore(&tickets),
        flows: info.flow_count,
        mode: info.mode,
        rules,
        counters,
        probes,
        violations: b.violations().iter().map(ToString::to_string).collect(),
        rules_lost_logged: rules_lost_logs(b) > logged_before,
    }
}

/// What the refused allocation was for, from its call stack: what it may cost.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Covers {
    /// The staged table's own storage (its index or slab; `Staged::try_new`, `reserve_index`,
    /// a slab segment), or the decoded list that holds the flows on the way to it (1.0
    /// records, more flows than the bound): the flows it would hold.
    Table,
    /// The fingerprint set or its pickup state: the fingerprints.
    Fingerprints,
    /// The carried rule set (read or copied): the rules (the port gets none: fail closed).
    Rules,
    /// Anything else (a copy, an order, a report): nothing the port carries.
    Nothing,
}

fn covers(stack: &str) -> Covers {
    let has = |s: &str| stack.contains(s);
    if has("decode_fingerprints") || has("Pickup::try_new") || has("FingerprintSet::try_clone") {
        Covers::Fingerprints
    } else if has("RuleSet::try_from_slice") {
        Covers::Rules
    } else if has("FlowTable::try_new")
        || has("as vsflow_core::codec::decode::FlowSink>::reserve")
        || has("codec::decode::decode_flows")
        || has("FlowTable::reserve_index")
        || has("FlowTable::grow_slots")
        || has("FlowTable::start_building")
        || has("FlowTable::grow_buckets")
    {
        Covers::Table
    } else {
        Covers::Nothing
    }
}

/// The checks of one refused allocation against the reference restore; `Err` says which.
fn check(reference: &Outcome, o: &Outcome) -> Result<(), String> {
    if o.vm_restore != VmRestore::Succeeded {
        return Err(format!("the VM's restore is {:?}", o.vm_restore));
    }
    if !o.violations.is_empty() {
        return Err(format!("contract violations: {:?}", o.violations));
    }
    // Policy kept or tightened.
    if o.mode != reference.mode {
        return Err(format!("mode {:?}, the reference has {:?}", o.mode, reference.mode));
    }
    if o.rules.iter().any(|r| !reference.rules.contains(r)) {
        return Err(format!("rules {:?}, the reference has {:?}", o.rules, reference.rules));
    }
    if o.rules.len() < reference.rules.len() && !o.rules_lost_logged {
        return Err(format!("rules {:?} lost without a word", reference.rules));
    }
    let opened: Vec<usize> = (0..o.probes.len())
        .filter(|&i| o.probes[i] && !reference.probes.get(i).copied().unwrap_or(false))
        .collect();
    if !opened.is_empty() {
        return Err(format!("probes {opened:?} admitted that the reference blocks"));
    }
    // What is lost is counted.
    let c = &o.counters;
    let r = &reference.counters;
    let degraded = c.restores_empty > r.restores_empty;
    let lost_flows = u64::from(reference.flows.saturating_sub(o.flows));
    let lost_fps = r.restored_fingerprints.saturating_sub(c.restored_fingerprints);
    let counted = c.untracked.saturating_sub(r.untracked)
        + c.restore_dropped.saturating_sub(r.restore_dropped);
    let (size, stack) = o.refused.as_ref().map_or((0, ""), |(s, t)| (*s, t.as_str()));
    let at = || {
        stack
            .lines()
            .filter(|l| l.contains("vsflow") && !l.contains("vsflow_sim::kernel"))
            .take(14)
            .collect::<Vec<_>>()
            .join("\n")
    };
    if !degraded && counted < lost_flows + lost_fps {
        return Err(format!(
            "{lost_flows} flows and {lost_fps} fingerprints lost, {counted} counted (untracked, \
             restore_dropped), not degraded; refused {size} bytes at:\n{}",
            at()
        ));
    }
    // What is lost is no more than what the refused allocation was for.
    let lost_any_flow = degraded || lost_flows > 0;
    let allowed = covers(stack);
    let lost_rules = o.rules.len() < reference.rules.len();
    let within = match allowed {
        Covers::Table => !lost_rules,
        Covers::Fingerprints => !lost_any_flow && !lost_rules,
        Covers::Rules => !lost_any_flow && lost_fps == 0,
        Covers::Nothing => !lost_any_flow && lost_fps == 0 && !lost_rules,
    };
    if !within {
        return Err(format!(
            "a refused block of {size} bytes ({allowed:?}) cost {lost_flows} of {} flows, \
             {lost_fps} fingerprints, rules lost: {lost_rules}, degraded: {degraded}; refused at:\n{}",
            reference.flows,
            at()
        ));
    }
    Ok(())
}

/// Every allocation of `case`'s restore refused in turn.
fn sweep_restore(case: &Case) -> Vec<String> {
    let mut b = Host::new(2);
    b.load_driver(case.dest).expect("loads");
    let sb = b.create_switch("SW-B", &[]);
    let mut id = 100;
    let reference = restore_once(&mut b, sb, id, case, None);
    assert_eq!(reference.vm_restore, VmRestore::Succeeded, "{}", case.name);
    assert!(reference.violations.is_empty(), "{}: {:?}", case.name, reference.violations);
    let missed: Vec<usize> = (0..case.carried.len()).filter(|&i| !reference.probes[i]).collect();
    assert!(missed.is_empty(), "{}: carried probes {missed:?} blocked: {reference:?}", case.name);
    let n = reference.probes.len();
    assert_eq!(reference.probes[n - 3..], [false, false, true], "{}: policy probes", case.name);
    let total = reference.allocations;
    assert!(total > 0, "{}: the restore allocates", case.name);
    let mut failures = Vec::new();
    let mut costs: Vec<String> = Vec::new();
    for nth in 1..=total + 2 {
        id += 1;
        let o = restore_once(&mut b, sb, id, case, Some(nth));
        if o.refused.is_none() {
            // Past the last allocation (the counts differ a little from run to run only if a
            // refusal changed the path): nothing more to refuse.
            if nth > total {
                break;
            }
            continue;
        }
        if let Err(e) = check(&reference, &o) {
            failures.push(format!("{}: allocation {nth} of {total}: {e}", case.name));
        }
        let lost = reference.flows.saturating_sub(o.flows);
        if lost > 0 {
            costs.push(format!("#{nth} {}B -{lost}", o.refused.as_ref().map_or(0, |r| r.0)));
        }
    }
    b.unload_driver();
    let v = b.violations();
    if !v.is_empty() {
        failures.push(format!("{}: at unload: {v:?}", case.name));
    }
    eprintln!(
        "{}: {total} allocations refused in turn; refusals that lost flows: {}",
        case.name,
        costs.join(", ")
    );
    failures
}

/// One fault plan per process: the sweeps take turns.
static SWEEP: std::sync::Mutex<()> = std::sync::Mutex::new(());

#[test]
fn every_allocation_of_a_restore_refused_in_turn_keeps_policy_and_costs_only_what_it_covers() {
    let _one = SWEEP.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    faults::capture_backtraces(true);
    let mut failures = Vec::new();
    for case in cases() {
        failures.extend(sweep_restore(&case));
    }
    faults::capture_backtraces(false);
    assert!(
        failures.is_empty(),
        "{} refusals broke a rule:\n{}",
        failures.len(),
        failures.iter().take(12).cloned().collect::<Vec<_>>().join("\n\n")
    );
}

// ---- The save ------------------------------------------------------------------------------

/// What a refused allocation of a save was for, from its call stack: what the destination may
/// lose for it.
fn save_covers(stack: &str) -> &'static str {
    let has = |s: &str| stack.contains(s);
    if has("FpCache") || has("fingerprint") || has("rice::") { "fingerprints" } else { "the blob" }
}

/// Every allocation of a save of the port `conns` fill (the port kept saving: its encoder and
/// buffer warm) refused in turn; each blob restored on a destination.
fn sweep_save(
    name: &str,
    source_config: DriverConfig,
    conns: &[(IpFamily, u16)],
    spread: bool,
) -> Vec<String> {
    let (mut a, sa) = loaded_source(source_config, conns, spread);
    // A save the port's encoder was freed before (a minute after its last save, by the idle
    // sweep the driver's timer runs each second): what it allocates is what is refused. (A
    // save right after another allocates nothing: the encoder and the buffer are kept.)
    let first_save = |a: &mut Host| {
        for _ in 0..61 {
            a.advance(10_000_000);
            let _ = a.within(|| a.driver().expire_idle(16));
        }
    };
    let _ = a.save(sa, VM);
    first_save(&mut a);
    faults::arm(a.id(), None, 0);
    let (reference_blobs, _) = a.save(sa, VM);
    let total = faults::count(Site::Alloc);
    faults::disarm();
    let case = |blobs: Vec<SavedBlob>| Case {
        name: "save",
        blobs,
        dest: source_config,
        window: Vec::new(),
        carried: sample(conns, 97),
    };
    let mut b = Host::new(3);
    b.load_driver(source_config).expect("loads");
    let sb = b.create_switch("SW-B", &[]);
    let mut id = 100;
    let reference = restore_once(&mut b, sb, id, &case(reference_blobs), None);
    assert_eq!(reference.vm_restore, VmRestore::Succeeded, "{name}");
    let mut failures = Vec::new();
    let mut costs = Vec::new();
    for nth in 1..=total + 2 {
        first_save(&mut a);
        faults::arm(a.id(), Some(Site::Alloc), nth);
        let (blobs, _) = a.save(sa, VM);
        let refused = (faults::fired() > 0)
            .then(|| (faults::fired_size(), faults::fired_backtrace().unwrap_or_default()));
        faults::disarm();
        let Some((size, stack)) = refused else {
            if nth > total {
                break;
            }
            continue;
        };
        let violations = a.violations();
        if !violations.is_empty() || blobs.iter().all(|(_, b)| b.is_empty()) {
            failures.push(format!("{name}: save allocation {nth}: no blob or {violations:?}"));
            continue;
        }
        id += 1;
        let o = restore_once(&mut b, sb, id, &case(blobs), None);
        let lost = reference.flows.saturating_sub(o.flows);
        let lost_fps = reference
            .counters
            .restored_fingerprints
            .saturating_sub(o.counters.restored_fingerprints);
        let covers = save_covers(&stack);
        let opened: Vec<usize> = (0..o.probes.len())
            .filter(|&i| o.probes[i] && !reference.probes.get(i).copied().unwrap_or(false))
            .collect();
        let mut wrong = Vec::new();
        if o.vm_restore != VmRestore::Succeeded || !o.violations.is_empty() {
            wrong.push(format!("restore {:?} {:?}", o.vm_restore, o.violations));
        }
        if o.mode != reference.mode || o.rules.iter().any(|r| !reference.rules.contains(r)) {
            wrong.push(format!("policy {:?} {:?}", o.mode, o.rules));
        }
        if !opened.is_empty() {
            wrong.push(format!("probes {opened:?} admitted that the reference blocks"));
        }
        if covers == "fingerprints" && (lost > 0 || o.rules.len() < reference.rules.len()) {
            wrong.push(format!("{lost} flows lost for a refusal of the fingerprints"));
        }
        if !wrong.is_empty() {
            let at = stack
                .lines()
                .filter(|l| l.contains("vsflow") && !l.contains("vsflow_sim::kernel"))
                .take(14)
                .collect::<Vec<_>>()
                .join("\n");
            failures.push(format!(
                "{name}: save allocation {nth} of {total} ({size} B, {covers}): {}; lost {lost} \
                 flows, {lost_fps} fingerprints; refused at:\n{at}",
                wrong.join("; ")
            ));
        }
        if lost > 0 || lost_fps > 0 {
            costs.push(format!("#{nth} {size}B ({covers}) -{lost} flows -{lost_fps} fps"));
            if std::env::var_os("VSFLOW_SWEEP_STACKS").is_some() {
                eprintln!("save #{nth} {size} B refused at:\n{stack}");
            }
        }
    }
    b.unload_driver();
    a.unload_driver();
    for h in [&a, &b] {
        let v = h.violations();
        if !v.is_empty() {
            failures.push(format!("{name}: at unload: {v:?}"));
        }
    }
    eprintln!("save, {name}: {total} allocations refused in turn; losses: {}", costs.join(", "));
    failures
}

#[test]
fn every_allocation_of_a_save_refused_in_turn_never_fails_it_nor_opens_the_destination() {
    let _one = SWEEP.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    faults::capture_backtraces(true);
    let pended = enforce(RestoreMode::Pending);
    let mut failures = sweep_save("at the cap", pended, &v4(0..4_096), false);
    let big = DriverConfig { flows_per_port: 16_384, ..pended };
    failures.extend(sweep_save("past the cap, split port", big, &v4(0..10_000), true));
    faults::capture_backtraces(false);
    assert!(
        failures.is_empty(),
        "{} refusals broke a rule:\n{}",
        failures.len(),
        failures.iter().take(12).cloned().collect::<Vec<_>>().join("\n\n")
    );
}
