//! The callout's own guarantees, through the simulator: restore idempotence and the lenient
//! restore's documented result, the restore window's merge, operator policy during the window,
//! control requests that fail changing nothing, and real threads classifying while ports come
//! and go, are saved and restored, and the driver stops.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use fwps_sys as sys;
use vsflow_callout::{RestoreMode, RestoreOutcome, TraceEvent};
use vsflow_core::policy::{AllowRule, PortRange, Prefix};
use vsflow_core::{Mode, PortCounters, protocol};
use vsflow_proto::request::{PortRef, Request, rule_list};
use vsflow_proto::response;
use vsflow_scenarios::{delivered, enforce, finish, flows_of, host, open_connections, vm_port};
use vsflow_sim::Host;

fn port_ref(h: &Host, name: &str) -> PortRef {
    h.list_ports().into_iter().find(|p| p.name.to_string() == name).expect("listed").port
}

fn port_counter(h: &Host, port: PortRef, name: &str) -> u64 {
    let (status, bytes) = h.control(&Request::GetCounters { port: Some(port) }, 1024);
    assert_eq!(status, 0);
    let mut v = [0u64; 64];
    let n = response::decode_counters(&bytes, &mut v).expect("counters");
    let i = PortCounters::NAMES.iter().position(|n| *n == name).expect("named");
    assert!(i < n);
    v[i]
}

const fn ssh_rule() -> AllowRule {
    AllowRule {
        protocol: Some(protocol::TCP),
        local_ports: PortRange::single(22),
        remote: Prefix::Any,
    }
}

/// Host A with port "vm" (20 connections) saved; host B with port "vm" created restoring.
fn saved_and_target()
-> (Host, Host, usize, Vec<vsflow_sim::host::SavedBlob>, Vec<vsflow_sim::SimPacket>) {
    let (mut a, sa) = host(1, enforce(RestoreMode::Pending), "SW-A");
    let (mut b, sb) = host(2, enforce(RestoreMode::Pending), "SW-B");
    vm_port(&mut a, sa, 10, "vm", 1, false);
    let inbound = open_connections(&mut a, sa, 10, 20);
    let (blobs, _) = a.save(sa, 10);
    finish(&mut a);
    vm_port(&mut b, sb, 77, "vm", 1, true);
    (a, b, sb, blobs, inbound)
}

// Fails on main (b408241): the second restore added the blob's counters again (restores 2,
// restored_flows 40).
#[test]
fn restoring_the_same_blob_twice_changes_nothing() {
    let (_a, mut b, sb, blobs, inbound) = saved_and_target();
    let _ = b.restore(sb, 77, &blobs);
    b.run_deferred();
    let port = port_ref(&b, "vm");
    let once = (port_counter(&b, port, "restores"), port_counter(&b, port, "restored_flows"));
    assert_eq!(once, (1, 20));
    let t = b.restore(sb, 77, &blobs);
    b.run_deferred();
    assert_eq!(b.restore_status(&t[0]), Some(0));
    let twice = (port_counter(&b, port, "restores"), port_counter(&b, port, "restored_flows"));
    assert_eq!(twice, once, "the same blob again is already applied");
    assert_eq!(flows_of(&b, "vm"), Some(20));
    assert_eq!(delivered(&mut b, sb, 77, &inbound), 20);
    finish(&mut b);
}

// Fails on main (b408241): a damaged blob failed the restore, the port kept the flows it had
// and stayed flagged restoring. (Issue 16: a degraded restore keeps the VM's own connections
// seen in the window, and closes the port rather than lowering it.)
#[test]
fn a_degraded_restore_keeps_the_vms_window_flows_closes_the_port_and_ends_the_window() {
    let (_a, mut b, sb, mut blobs, _) = saved_and_target();
    // Traffic in the restore window: the VM opens two connections.
    let _ = open_connections(&mut b, sb, 77, 2);
    assert_eq!(flows_of(&b, "vm"), Some(2));
    assert!(b.list_ports()[0].restoring);
    for (_, blob) in &mut blobs {
        blob[60] ^= 0x11;
    }
    let t = b.restore(sb, 77, &blobs);
    b.run_deferred();
    assert_eq!(b.restore_status(&t[0]), Some(0), "the migration does not fail");
    assert_eq!(flows_of(&b, "vm"), Some(2), "no flow carried, the VM's own ones kept");
    let listed = b.list_ports();
    assert!(!listed[0].restoring, "the restore window is over");
    assert_eq!(listed[0].mode, Mode::Enforce, "nothing carried: Enforce");
    assert_eq!(b.driver().stats().restores_empty, 1, "counted");
    assert!(b.trace_events().iter().any(|e| matches!(
        e,
        TraceEvent::Restore { port: 77, outcome: RestoreOutcome::Degraded(_), status: 0, .. }
    )));
    finish(&mut b);
}

#[test]
fn flows_seen_in_the_restore_window_merge_with_the_restored_ones() {
    let (_a, mut b, sb, blobs, inbound) = saved_and_target();
    // Carried connections flow before the restore completes (the window is Monitor)...
    assert_eq!(delivered(&mut b, sb, 77, &inbound[..5]), 5);
    // ...and the VM opens new ones.
    let fresh = open_connections(&mut b, sb, 77, 3);
    let _ = b.restore(sb, 77, &blobs);
    b.run_deferred();
    assert_eq!(flows_of(&b, "vm"), Some(23), "20 restored + 3 seen in the window");
    assert_eq!(delivered(&mut b, sb, 77, &inbound), 20);
    assert_eq!(delivered(&mut b, sb, 77, &fresh), 3);
    assert!(!b.list_ports()[0].restoring);
    finish(&mut b);
}

#[test]
fn rules_set_during_the_restore_window_win_and_the_version_never_goes_backwards() {
    let (mut a, sa) = host(1, enforce(RestoreMode::Pending), "SW-A");
    vm_port(&mut a, sa, 10, "vm", 1, false);
    let _ = open_connections(&mut a, sa, 10, 2);
    // The source's rules went through several versions.
    for _ in 0..5 {
        assert_eq!(a.replace_rules_everywhere(&[]), 1);
    }
    let (blobs, _) = a.save(sa, 10);
    finish(&mut a);
    let (mut b, sb) = host(2, enforce(RestoreMode::Pending), "SW-B");
    vm_port(&mut b, sb, 77, "vm", 1, true);
    assert_eq!(b.replace_rules_everywhere(&[ssh_rule()]), 1);
    let before = b.list_ports()[0].rules_version;
    let _ = b.restore(sb, 77, &blobs);
    b.run_deferred();
    let port = port_ref(&b, "vm");
    let (status, bytes) = b.control(&Request::GetRules { port }, 4096);
    assert_eq!(status, 0);
    let mut rules = Vec::new();
    let version = response::decode_rules(&bytes, |r| rules.push(r)).expect("rules");
    assert_eq!(rules, vec![ssh_rule()], "the operator's rules win over the older blob's");
    assert!(version >= before, "the version never goes backwards ({before} -> {version})");
    finish(&mut b);
}

// Fails on main (b408241): the mode, rules and counters changed, then the response did not
// fit and the request reported STATUS_BUFFER_TOO_SMALL.
#[test]
fn a_control_request_that_fails_for_a_small_output_buffer_changes_nothing() {
    let (mut h, sw) = host(3, enforce(RestoreMode::Pending), "SW");
    vm_port(&mut h, sw, 5, "vm", 1, false);
    let _ = open_connections(&mut h, sw, 5, 4);
    let port = port_ref(&h, "vm");
    let before = h.list_ports();

    let (status, _) = h.control(&Request::SetPortMode { port, mode: Mode::Monitor }, 0);
    assert_eq!(status, sys::STATUS_BUFFER_TOO_SMALL);
    let mut space = [0u8; 24];
    let list = rule_list(&[ssh_rule()], &mut space).expect("rules");
    let expected_version = before[0].rules_version;
    let (status, _) = h.control(&Request::ReplaceRules { port, expected_version, rules: list }, 1);
    assert_eq!(status, sys::STATUS_BUFFER_TOO_SMALL);
    let created = port_counter(&h, port, "flows_created");
    let (status, _) = h.control(&Request::ClearCounters { port: Some(port) }, 0);
    assert_eq!(status, sys::STATUS_BUFFER_TOO_SMALL);
    let calls = h.driver().stats().classify_calls;
    let (status, _) = h.control(&Request::ClearCounters { port: None }, 0);
    assert_eq!(status, sys::STATUS_BUFFER_TOO_SMALL);

    assert_eq!(h.list_ports(), before, "mode and rules unchanged");
    assert_eq!(port_counter(&h, port, "flows_created"), created);
    assert_eq!(h.driver().stats().classify_calls, calls);
    // With room, the same requests succeed.
    assert_eq!(h.control(&Request::SetPortMode { port, mode: Mode::Monitor }, 64).0, 0);
    assert_eq!(h.list_ports()[0].mode, Mode::Monitor);
    finish(&mut h);
}

#[test]
fn every_save_is_traced_and_an_unknown_port_saves_a_valid_blob() {
    let (mut h, sw) = host(4, enforce(RestoreMode::Pending), "SW");
    vm_port(&mut h, sw, 5, "vm", 1, false);
    let _ = open_connections(&mut h, sw, 5, 3);
    let (blobs, _) = h.save(sw, 5);
    assert!(!blobs.is_empty() && !blobs[0].1.is_empty());
    let (unknown, _) = h.save(sw, 99);
    assert!(!unknown.is_empty() && !unknown[0].1.is_empty(), "never NULL with success");
    let saves: Vec<_> =
        h.trace_events().into_iter().filter(|e| matches!(e, TraceEvent::Save { .. })).collect();
    assert!(
        matches!(
            saves.as_slice(),
            [
                TraceEvent::Save { port: 5, flows_saved: 3, flows_dropped: 0, status: 0, .. },
                TraceEvent::Save { port: 99, flows_saved: 0, status: 0, .. }
            ]
        ),
        "{saves:?}"
    );
    assert_eq!(h.driver().stats().saves_empty, 1);
    finish(&mut h);
}

/// Real threads: two classify loops on their own ports while the main thread creates and
/// deletes ports, saves and restores, reads the flows IOCTL, and finally stops the driver
/// under them. Every classify returns, no lock is misused, and after stop nothing is judged.
#[test]
fn classify_on_several_threads_while_ports_come_and_go_and_the_driver_stops() {
    let (mut h, sw) = host(9, enforce(RestoreMode::Synchronous), "SW");
    vm_port(&mut h, sw, 5, "vm-5", 1, false);
    vm_port(&mut h, sw, 6, "vm-6", 2, false);
    let bench = vsflow_sim::tools::bench::ClassifyRig::new(&h, "SW", &[5, 6], 256);
    let stop = AtomicBool::new(false);
    let judged = AtomicU64::new(0);
    let after_stop = AtomicU64::new(0);
    let stopped = AtomicBool::new(false);
    std::thread::scope(|s| {
        for t in 0..2 {
            let (bench, stop, judged, after_stop, stopped) =
                (&bench, &stop, &judged, &after_stop, &stopped);
            s.spawn(move || {
                vsflow_sim::kernel::services::set_processor(t);
                let mut n = 0u64;
                while !stop.load(Ordering::Acquire) {
                    let was_stopped = stopped.load(Ordering::Acquire);
                    let blocked = bench.classify_round(t as usize);
                    n += 1;
                    if was_stopped {
                        after_stop.fetch_add(blocked, Ordering::Relaxed);
                    }
                }
                judged.fetch_add(n, Ordering::Relaxed);
            });
        }
        for round in 0..60u32 {
            let id = 100 + round % 7;
            vm_port(&mut h, sw, id, &format!("churn-{id}"), 3, round % 2 == 0);
            let _ = open_connections(&mut h, sw, id, 3);
            let (blobs, _) = h.save(sw, id);
            // The sweep splits port 5 into shards under the classifying threads; its save
            // merges it back (issue 18 §2).
            let _ = h.within(|| h.driver().expire_idle(64));
            let (blobs5, _) = h.save(sw, 5);
            assert!(!blobs5.is_empty());
            let _ = h.restore(sw, id, &blobs);
            let _ = vsflow_scenarios::flow_states(&h, "vm-6");
            assert_eq!(h.delete_port(sw, id), 0);
        }
        h.within(|| h.driver().stop());
        stopped.store(true, Ordering::Release);
        std::thread::sleep(std::time::Duration::from_millis(20));
        stop.store(true, Ordering::Release);
    });
    assert!(judged.load(Ordering::Relaxed) > 0);
    assert_eq!(after_stop.load(Ordering::Relaxed), 0, "a stopped driver blocks nothing");
    assert!(h.primitive_misuse().is_empty(), "{:?}", h.primitive_misuse());
    finish(&mut h);
}

#[test]
fn bfe_state_changes_are_traced_and_a_restart_re_adds_the_filters() {
    let (mut h, sw) = host(5, enforce(RestoreMode::Pending), "SW");
    vm_port(&mut h, sw, 7, "vm", 1, false);
    let filters = |h: &Host| {
        h.engine_objects()
            .filters
            .iter()
            .filter(|f| f.provider == Some(vsflow_callout::keys::PROVIDER))
            .count()
    };
    assert_eq!(filters(&h), 4);
    h.stop_bfe();
    assert_eq!(h.driver().phase(), vsflow_callout::Phase::WaitingForBfe);
    h.start_bfe();
    assert_eq!(h.driver().phase(), vsflow_callout::Phase::Running);
    assert_eq!(filters(&h), 4, "RUNNING re-adds every object");
    let states: Vec<u32> = h
        .trace_events()
        .into_iter()
        .filter_map(|e| match e {
            TraceEvent::BfeState { state } => Some(state),
            _ => None,
        })
        .collect();
    assert!(states.contains(&sys::FWPM_SERVICE_STOP_PENDING), "{states:?}");
    assert_eq!(states.last(), Some(&sys::FWPM_SERVICE_RUNNING), "{states:?}");
    // Traffic is judged again: connections the VM opens carry their return traffic.
    let inbound = open_connections(&mut h, sw, 7, 2);
    assert_eq!(delivered(&mut h, sw, 7, &inbound), 2);
    finish(&mut h);
}

#[test]
fn a_rejected_foreign_filter_is_traced() {
    use vsflow_callout::keys::HOOKS;
    use vsflow_sim::wfp::foreign::{ForeignAction, ForeignProcess};
    let (mut h, sw) = host(6, enforce(RestoreMode::Pending), "SW");
    vm_port(&mut h, sw, 7, "vm", 1, false);
    {
        let mut other = ForeignProcess::open(h.id());
        let sub = other.add_sublayer(0x8000);
        let hook = HOOKS[0];
        let status = other.add_filter(hook.layer, sub, ForeignAction::Callout(hook.callout), 0, 7);
        assert!(status < 0);
    }
    let rejected: Vec<_> = h
        .trace_events()
        .into_iter()
        .filter(|e| matches!(e, TraceEvent::ForeignFilterRejected { .. }))
        .collect();
    assert!(
        matches!(rejected.as_slice(), [TraceEvent::ForeignFilterRejected { layer_id, .. }] if *layer_id == HOOKS[0].layer_id),
        "{rejected:?}"
    );
    finish(&mut h);
}

// The flows IOCTL pages with a cursor (a position in the port's table): pages resume where the
// last one stopped, across holes left by expired flows, without repeating or missing a flow.
#[test]
fn the_flows_ioctl_pages_with_a_cursor_across_holes() {
    use vsflow_core::IpFamily;
    use vsflow_sim::SimPacket;
    let (mut h, sw) = host(8, enforce(RestoreMode::Pending), "SW");
    vm_port(&mut h, sw, 5, "vm", 1, false);
    // Ten UDP flows first (low table positions), then ten TCP connections.
    for k in 0..10u16 {
        let q = SimPacket::new(
            IpFamily::V4,
            protocol::UDP,
            vsflow_scenarios::vm_ip(5),
            5000 + k,
            vsflow_core::packet::v4([192, 0, 2, 53]),
            53,
            0,
            40,
        );
        let _ = vsflow_sim::tools::traffic::udp_exchange(&mut h, sw, 5, &q);
    }
    h.advance(61 * 10_000_000); // past the UDP timeout
    let _ = open_connections(&mut h, sw, 5, 10);
    let expired = h.within(|| h.driver().expire_idle(100));
    assert_eq!(expired, 10, "the UDP flows leave holes at the start of the table");
    let port = port_ref(&h, "vm");
    let mut seen = Vec::new();
    let mut start = 0;
    let mut pages = 0;
    loop {
        let (status, bytes) = h.control(&Request::GetFlows { port, start, max: 3 }, 4096);
        assert_eq!(status, 0);
        let page = response::decode_flows(&bytes, |f| seen.push(f.key)).expect("page");
        assert_eq!(page.total, 10);
        assert!(page.returned <= 3);
        pages += 1;
        start = page.next;
        if page.next == response::FLOWS_END {
            break;
        }
        assert!(pages < 10, "the cursor advances");
    }
    assert_eq!(pages, 4, "3 + 3 + 3 + 1");
    let mut unique = seen.clone();
    unique.sort_by_key(|k| format!("{k:?}"));
    unique.dedup();
    assert_eq!((seen.len(), unique.len()), (10, 10), "no flow repeated or missed");
    finish(&mut h);
}

#[test]
fn a_failed_registration_step_and_a_cancelled_restore_are_traced() {
    use vsflow_sim::kernel::faults::{Site, arm, disarm};
    // The first engine call of the driver's start fails: the step is traced, start fails
    // cleanly.
    let mut h = Host::new(21);
    arm(h.id(), Some(Site::Engine), 1);
    let loaded = h.load_driver(enforce(RestoreMode::Pending));
    disarm();
    assert!(loaded.is_err());
    let failed: Vec<_> = h
        .trace_events()
        .into_iter()
        .filter(|e| matches!(e, TraceEvent::RegistrationFailed { .. }))
        .collect();
    assert!(
        matches!(failed.as_slice(), [TraceEvent::RegistrationFailed { status, .. }] if *status < 0),
        "{failed:?}"
    );
    // A pended restore whose port is deleted before the work item runs: completed as
    // cancelled, and traced so.
    let (mut b, sb) = host(22, enforce(RestoreMode::Pending), "SW");
    vm_port(&mut b, sb, 9, "vm", 1, true);
    let t = b.restore(sb, 9, &[(Some(vsflow_callout::keys::PROVIDER), vec![1, 2, 3])]);
    assert_eq!(b.delete_port(sb, 9), 0);
    assert_eq!(b.restore_status(&t[0]), Some(sys::STATUS_CANCELLED));
    assert!(b.trace_events().iter().any(|e| matches!(
        e,
        TraceEvent::Restore { port: 9, outcome: RestoreOutcome::Cancelled, .. }
    )));
    finish(&mut b);
}

fn counted(s: &str) -> sys::IF_COUNTED_STRING {
    let units: Vec<u16> = s.encode_utf16().collect();
    let mut c = sys::IF_COUNTED_STRING::EMPTY;
    c.String[..units.len()].copy_from_slice(&units);
    c.Length = u16::try_from(2 * units.len()).unwrap();
    c
}

// The NIC's durable name (NicName), learnt from the NIC events, travels in the runtime state
// (format 1.1) beside the port's name.
#[test]
fn the_nic_name_from_nic_events_is_saved_with_the_port() {
    let (mut h, sw) = host(23, enforce(RestoreMode::Pending), "SW");
    vm_port(&mut h, sw, 5, "vm", 1, false);
    // SAFETY: plain data (integers, arrays); all zeroes is valid.
    let mut nic: sys::NDIS_SWITCH_NIC_PARAMETERS = unsafe { std::mem::zeroed() };
    nic.PortId = 5;
    nic.NicIndex = 1;
    nic.NicType = 1; // synthetic
    nic.NicState = 2; // connected
    nic.NicName = counted("Microsoft:GUEST-NIC-0001");
    // SAFETY: plain data (integers, arrays); all zeroes is valid.
    let mut switch: sys::NDIS_SWITCH_PARAMETERS = unsafe { std::mem::zeroed() };
    switch.SwitchName = counted("SW");
    let status = h.within(|| {
        h.driver().on_interface(sys::FWPS_VSWITCH_EVENT_INTERFACE_CONNECT, &switch, &nic)
    });
    assert_eq!(status, 0);
    let (blobs, _) = h.save(sw, 5);
    let cfg = vsflow_core::codec::DecodeConfig::default();
    let vsflow_core::codec::Decoded::State(state) =
        vsflow_core::codec::decode(&blobs[0].1, &cfg).expect("decodes")
    else {
        panic!("a known format");
    };
    assert_eq!(state.nic.map(|n| n.to_string()).as_deref(), Some("Microsoft:GUEST-NIC-0001"));
    finish(&mut h);
}

#[test]
fn the_driver_classify_count_keeps_the_calls_of_deleted_ports() {
    let (mut h, sw) = host(24, enforce(RestoreMode::Pending), "SW");
    vm_port(&mut h, sw, 5, "vm", 1, false);
    let _ = open_connections(&mut h, sw, 5, 4);
    let before = h.driver().stats().classify_calls;
    assert!(before >= 12, "{before}");
    assert_eq!(h.delete_port(sw, 5), 0);
    assert_eq!(h.driver().stats().classify_calls, before, "counted per port, kept at delete");
    finish(&mut h);
}

// A port created to receive a restore that never comes (the source host saved nothing for
// vsflow) must not stay in Monitor forever: the window closes after RestoreWindowSeconds.
#[test]
fn a_restore_window_without_a_restore_closes_after_its_deadline() {
    use vsflow_core::IpFamily;
    let (mut h, sw) = host(25, enforce(RestoreMode::Pending), "SW");
    vm_port(&mut h, sw, 5, "vm", 1, true);
    let remote = vsflow_sim::tools::traffic::remote_addr(IpFamily::V4, 1, false);
    let syn = |sport| vsflow_sim::tools::traffic::inbound_syn(IpFamily::V4, remote, sport, 5, 8080);
    let ack = |sport| syn(sport).reply(0, 0).reply(vsflow_sim::tools::traffic::tcp::ACK, 0);
    let ext = vsflow_sim::host::EXTERNAL_PORT;
    // The window enforces (issue 16): a mid-stream segment passes, a SYN does not.
    assert_eq!(h.transmit(sw, ext, 5, &ack(4000)), vsflow_sim::PacketFate::Delivered, "window");
    assert_ne!(h.transmit(sw, ext, 5, &syn(4001)), vsflow_sim::PacketFate::Delivered, "window");
    assert!(h.list_ports()[0].restoring);
    h.advance(61 * 10_000_000);
    assert_ne!(h.transmit(sw, ext, 5, &ack(4002)), vsflow_sim::PacketFate::Delivered, "enforced");
    assert!(!h.list_ports()[0].restoring);
    finish(&mut h);
}

/// Runs `f` as simulated processor `cpu` (the thread's processor number decides which
/// processor's map lock and port cache a packet uses), then goes back to processor 0.
fn on_processor<R>(cpu: u32, f: impl FnOnce() -> R) -> R {
    vsflow_sim::kernel::services::set_processor(cpu);
    let r = f();
    vsflow_sim::kernel::services::set_processor(0);
    r
}

// The per-processor port cache (crates/vsflow-callout/src/ports.rs, "The packet's port without a
// map lookup") never judges a packet by a port the map no longer holds: every processor's
// cached port goes stale with any map change, wherever it is made. A port deleted and created
// again with the same key is another port, with no flows: the old connections' packets are
// blocked (Enforce), never admitted by the old port's table; a deleted port judges nothing.
#[test]
fn a_cached_port_deleted_or_created_again_never_judges_a_packet() {
    let (mut h, sw) = host(26, enforce(RestoreMode::Pending), "SW");
    vm_port(&mut h, sw, 5, "vm", 1, false);
    let inbound = on_processor(3, || open_connections(&mut h, sw, 5, 6));
    // Cached on processors 3 (the handshakes) and 5. (The switch's external port, where these
    // packets enter, is not tracked: its ingress classify is counted as an unknown port's.)
    let unknown = |h: &Host| h.driver().stats().unknown_port_packets;
    let u = unknown(&h);
    assert_eq!(on_processor(3, || delivered(&mut h, sw, 5, &inbound)), 6);
    assert_eq!(on_processor(5, || delivered(&mut h, sw, 5, &inbound)), 6);
    let live = unknown(&h) - u;

    // Deleted from processor 0: nobody judges these packets (an unknown port is not filtered),
    // and no processor reaches the old port.
    assert_eq!(h.delete_port(sw, 5), 0);
    let u = unknown(&h);
    assert_eq!(on_processor(3, || delivered(&mut h, sw, 5, &inbound)), 6, "not judged");
    assert_eq!(on_processor(5, || delivered(&mut h, sw, 5, &inbound)), 6, "not judged");
    assert_eq!(unknown(&h) - u, live + 12, "every packet counted for an unknown port");

    // Created again with the same key: a new port without flows. Every processor judges by it.
    vm_port(&mut h, sw, 5, "vm", 1, false);
    let u = unknown(&h);
    assert_eq!(on_processor(3, || delivered(&mut h, sw, 5, &inbound)), 0, "the old port's flows");
    assert_eq!(on_processor(5, || delivered(&mut h, sw, 5, &inbound)), 0, "the old port's flows");
    assert_eq!(unknown(&h) - u, live, "judged by the new port");
    let port = port_ref(&h, "vm");
    assert!(port_counter(&h, port, "packets_blocked") >= 12, "judged by the new port");

    // Cached again on processor 3, then replaced without a delete (a create for a key the
    // driver holds replaces the port): still never the old one.
    let fresh = on_processor(3, || open_connections(&mut h, sw, 5, 2));
    assert_eq!(on_processor(3, || delivered(&mut h, sw, 5, &fresh)), 2);
    assert_eq!(h.create_port(sw, 5, "vm2", false), sys::STATUS_SUCCESS);
    assert_eq!(
        h.nic_event(sw, 5, 1, sys::FWPS_VSWITCH_EVENT_INTERFACE_CONNECT),
        sys::STATUS_SUCCESS
    );
    assert_eq!(
        on_processor(3, || delivered(&mut h, sw, 5, &fresh)),
        0,
        "the replaced port's flows"
    );
    finish(&mut h);
}

// A switch deleted and created again under the same name is another switch: a processor's
// cached port of the old one is never used for the new one's port of the same id.
#[test]
fn a_cached_port_of_a_switch_created_again_never_judges_a_packet() {
    let (mut h, sw) = host(27, enforce(RestoreMode::Pending), "SW");
    vm_port(&mut h, sw, 5, "vm", 1, false);
    let inbound = on_processor(2, || open_connections(&mut h, sw, 5, 4));
    assert_eq!(on_processor(2, || delivered(&mut h, sw, 5, &inbound)), 4);
    h.delete_switch(sw);
    let again = h.create_switch("SW", &[]);
    vm_port(&mut h, again, 5, "vm", 1, false);
    assert_eq!(on_processor(2, || delivered(&mut h, again, 5, &inbound)), 0, "old switch's port");
    finish(&mut h);
}

// Ports whose ids share a processor's cache entry (ids 8 apart) are each judged by their own
// table, packet after packet, on several processors.
#[test]
fn ports_sharing_a_cache_entry_are_each_judged_by_their_own_table() {
    let (mut h, sw) = host(28, enforce(RestoreMode::Pending), "SW");
    vm_port(&mut h, sw, 5, "a", 1, false);
    vm_port(&mut h, sw, 13, "b", 2, false);
    vm_port(&mut h, sw, 21, "c", 3, false);
    let a = on_processor(1, || open_connections(&mut h, sw, 5, 3));
    let b = on_processor(1, || open_connections(&mut h, sw, 13, 3));
    for cpu in [1, 4] {
        for _ in 0..3 {
            // Each port admits its own connections and no other port's.
            assert_eq!(on_processor(cpu, || delivered(&mut h, sw, 5, &a)), 3);
            assert_eq!(on_processor(cpu, || delivered(&mut h, sw, 13, &b)), 3);
            assert_eq!(on_processor(cpu, || delivered(&mut h, sw, 21, &a)), 0);
            assert_eq!(on_processor(cpu, || delivered(&mut h, sw, 21, &b)), 0);
        }
    }
    finish(&mut h);
}

// Every classify call vsflow's callouts get is counted once in `classify_calls`, whether a port
// judged it or classify passed it by, and each reason a packet is passed by is counted exactly:
// port 0 (trusted), a port vsflow does not track (the switch's external port), a later fragment
// passed on its first fragment's verdict, a generic port without a VM NIC (its port counts the
// call). `ClearCounters` zeroes them all. (A packet passed by counts one per-processor event,
// which stands for its classify call too: crates/vsflow-callout/src/percpu.rs.)
#[test]
fn every_classify_call_is_counted_once_with_the_reason_it_was_passed_by() {
    use vsflow_core::IpFamily;
    use vsflow_sim::host::{EXTERNAL_PORT, SimPort};
    use vsflow_sim::tools::traffic;
    use vsflow_sim::vswitch::packet::Fragment;

    let (mut h, sw) = host(28, enforce(RestoreMode::Pending), "SW");
    vm_port(&mut h, sw, 5, "vm", 1, false);
    let generic = SimPort::new(22, "generic", sys::NdisSwitchPortTypeGeneric);
    assert_eq!(h.create_port_as(sw, generic, false), sys::STATUS_SUCCESS);
    let counts = |h: &Host| {
        let s = h.driver().stats();
        (h.classify_invocations(), s.classify_calls, s.trusted_port_packets, s.unknown_port_packets)
    };
    let remote = |k: u8| vsflow_core::packet::v4([198, 51, 100, k]);
    let (calls0, counted0, trusted0, unknown0) = counts(&h);

    // 4 connections opened by the VM (3 packets each, ingress and egress: one call at port 5,
    // judged, and one at the external port, untracked).
    let inbound = open_connections(&mut h, sw, 5, 4);
    // Their peers' data (judged at port 5 after the external port's call): 4 packets.
    assert_eq!(delivered(&mut h, sw, 5, &inbound), 4);
    // 3 unsolicited SYNs to the VM: the external port's call, then blocked at port 5.
    for k in 0..3 {
        let syn = traffic::inbound_syn(IpFamily::V4, remote(100 + k), 40_000, 5, 8080);
        assert_eq!(h.transmit(sw, EXTERNAL_PORT, 5, &syn), vsflow_sim::PacketFate::BlockedAtEgress);
    }
    // 2 packets to port 0: the external port's call, then port 0's (trusted).
    // 2 packets to the generic port without a VM NIC: the external port's call, then its own
    // (not judged).
    // 2 later fragments to the VM: the external port's call, then port 5's (passed on their
    // first fragment's verdict, counted as an unknown port's).
    for k in 0..2 {
        let p = traffic::inbound_syn(IpFamily::V4, remote(110 + k), 40_000, 9, 80);
        assert_eq!(h.transmit(sw, EXTERNAL_PORT, 0, &p), vsflow_sim::PacketFate::Delivered);
        assert_eq!(h.transmit(sw, EXTERNAL_PORT, 22, &p), vsflow_sim::PacketFate::Delivered);
        let later = traffic::inbound_syn(IpFamily::V4, remote(120 + k), 40_000, 5, 8080)
            .as_fragment(Fragment::NonFirst(185));
        assert_eq!(h.transmit(sw, EXTERNAL_PORT, 5, &later), vsflow_sim::PacketFate::Delivered);
    }

    let (calls, counted, trusted, unknown) = counts(&h);
    let transmits = 4 * 3 + 4 + 3 + 2 * 3;
    assert_eq!(calls - calls0, 2 * transmits, "the engine's calls: ingress and egress each");
    assert_eq!(counted - counted0, calls - calls0, "every call counted once");
    assert_eq!(trusted - trusted0, 2, "port 0's packets");
    // One at the external port a packet, the generic port's 2 and the later fragments' 2.
    assert_eq!(unknown - unknown0, transmits + 2 + 2, "packets of ports not judged");

    assert_eq!(h.control(&Request::ClearCounters { port: None }, 64).0, 0);
    let s = h.driver().stats();
    assert_eq!(
        (s.classify_calls, s.trusted_port_packets, s.unknown_port_packets, s.malformed_values),
        (0, 0, 0, 0),
        "ClearCounters zeroes every classify count"
    );
    finish(&mut h);
}

// A processor that passed a port's packets by because the map held no such port (its absence
// cache: crates/vsflow-callout/src/ports.rs, `CachedAbsence`) judges them as soon as the port
// is created, and passes them by again once it is deleted: the absence goes stale with any map
// change, as a cached port does. An absence is a switch's: the same port id on another switch
// is judged by that switch's port.
#[test]
fn a_port_cached_as_absent_is_judged_once_created() {
    use vsflow_core::IpFamily;
    use vsflow_sim::PacketFate;
    use vsflow_sim::host::EXTERNAL_PORT;
    use vsflow_sim::tools::traffic;

    let (mut h, sw) = host(29, enforce(RestoreMode::Pending), "SW");
    let other = h.create_switch("SW2", &[]);
    vm_port(&mut h, other, 14, "vm-b", 2, false);
    let syn = |k: u8| {
        traffic::inbound_syn(
            IpFamily::V4,
            vsflow_core::packet::v4([198, 51, 100, k]),
            40_000,
            14,
            8080,
        )
    };
    let unknown = |h: &Host| h.driver().stats().unknown_port_packets;

    // Port 14 of "SW" does not exist: passed by (its call and the external port's counted).
    let u = unknown(&h);
    for k in 0..3 {
        assert_eq!(
            on_processor(3, || h.transmit(sw, EXTERNAL_PORT, 14, &syn(k))),
            PacketFate::Delivered
        );
    }
    assert_eq!(unknown(&h) - u, 6, "passed by as a port the map does not hold");
    // Port 14 of "SW2" is judged on the same processor: an unsolicited SYN is blocked.
    assert_eq!(
        on_processor(3, || h.transmit(other, EXTERNAL_PORT, 14, &syn(9))),
        PacketFate::BlockedAtEgress,
        "another switch's port of the same id"
    );

    // Created: judged at once on the processor that cached its absence.
    vm_port(&mut h, sw, 14, "vm-a", 1, false);
    for k in 0..3 {
        assert_eq!(
            on_processor(3, || h.transmit(sw, EXTERNAL_PORT, 14, &syn(k))),
            PacketFate::BlockedAtEgress,
            "judged by the new port"
        );
    }
    // Deleted: passed by again.
    assert_eq!(h.delete_port(sw, 14), 0);
    assert_eq!(
        on_processor(3, || h.transmit(sw, EXTERNAL_PORT, 14, &syn(4))),
        PacketFate::Delivered
    );
    finish(&mut h);
}
