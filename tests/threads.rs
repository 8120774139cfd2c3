//! Callbacks in flight, on several threads, at the IRQL Windows documents.
//!
//! - Every vSwitch callback page says `IRQL <= DISPATCH_LEVEL`: the double runs them at
//!   `DISPATCH_LEVEL`, so PASSIVE-only services (waits, fast mutexes, management calls) fail there.
//! - A pended restore's work item can run on another CPU and call `FwpsvSwitchNotifyComplete0`
//!   before the restore callback has returned `STATUS_PENDING`.
//! - Classify runs on several threads while events, restores, work items and unload run; a
//!   filter whose callout is unregistered blocks (fwpmtypes.h), so unload must delete filters
//!   (close the engine) before unregistering callouts.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use fwps_sys as sys;
use vsflow_callout::DriverConfig;
use vsflow_callout::RestoreMode;
use vsflow_scenarios::{enforce, finish, flows_of, host, open_connections, vm_port};
use vsflow_sim::host::EXTERNAL_PORT;
use vsflow_sim::host::{SavedBlob, WorkItemPause};
use vsflow_sim::kernel::irql::Irql;
use vsflow_sim::{Host, PacketFate, RestoreTicket, SimPacket, VmRestore};

#[test]
fn vswitch_callbacks_run_at_dispatch_level_as_documented() {
    let mut h = Host::new(1);
    assert_eq!(h.vswitch_callback_irql, Irql::Dispatch, "the default is the documented maximum");
    h.load_driver(enforce(RestoreMode::Pending)).expect("loads");
    let sw = h.create_switch("SW", &[]);
    vm_port(&mut h, sw, 7, "vm-a", 1, false);
    let _ = open_connections(&mut h, sw, 7, 3);
    let (blobs, _) = h.save(sw, 7);
    vm_port(&mut h, sw, 8, "vm-b", 2, true);
    let tickets = h.restore(sw, 8, &blobs);
    h.run_deferred();
    assert_eq!(h.vm_restore(&tickets), VmRestore::Succeeded);
    h.pause_restart(sw);
    assert_eq!(h.reorder(true), sys::STATUS_SUCCESS);
    assert_eq!(h.delete_port(sw, 8), sys::STATUS_SUCCESS);
    h.delete_switch(sw);
    finish(&mut h);
}

#[test]
fn a_work_item_may_complete_a_restore_before_its_callback_returns() {
    let (mut a, sa) = host(1, enforce(RestoreMode::Pending), "SW-A");
    vm_port(&mut a, sa, 7, "vm-a", 1, false);
    let _ = open_connections(&mut a, sa, 7, 6);
    let (blobs, _) = a.save(sa, 7);
    finish(&mut a);
    let mut early = 0;
    for round in 0..20u32 {
        let (mut b, sb) = host(2, enforce(RestoreMode::Pending), "SW-B");
        b.eager_work_items(true);
        vm_port(&mut b, sb, 70 + round, "vm-a", 1, true);
        let tickets = b.restore(sb, 70 + round, &blobs);
        // No run_deferred: the work item ran on its own thread.
        let t = std::time::Instant::now();
        while b.vm_restore(&tickets) == VmRestore::Pending && t.elapsed().as_secs() < 5 {
            std::thread::yield_now();
        }
        assert_eq!(b.vm_restore(&tickets), VmRestore::Succeeded, "round {round}");
        assert_eq!(flows_of(&b, "vm-a"), Some(6));
        early += b.early_completions();
        finish(&mut b);
    }
    assert!(early > 0, "the double did complete before the callback returned");
}

#[test]
fn classify_on_several_threads_while_events_restores_work_items_and_unload_run() {
    let (mut h, sw) = host(3, enforce(RestoreMode::Pending), "SW");
    h.eager_work_items(true);
    let mut inbound = Vec::new();
    for id in 10..14 {
        vm_port(&mut h, sw, id, &format!("vm-{id}"), u16::try_from(id).unwrap_or(1), false);
        inbound.extend(open_connections(&mut h, sw, id, 5).into_iter().map(|p| (id, p)));
    }
    let inbound = Arc::new(inbound);
    let stop = Arc::new(AtomicBool::new(false));
    let unloading = Arc::new(AtomicBool::new(false));
    let blocked_loaded = Arc::new(AtomicUsize::new(0));
    let blocked_unloading = Arc::new(AtomicUsize::new(0));
    let sent = Arc::new(AtomicUsize::new(0));
    let threads: Vec<_> = (0..3)
        .map(|_| {
            let wire = h.wire();
            let (inbound, stop, unloading) = (inbound.clone(), stop.clone(), unloading.clone());
            let (bl, bu, sent) = (blocked_loaded.clone(), blocked_unloading.clone(), sent.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    for (id, p) in inbound.iter() {
                        let during_unload = unloading.load(Ordering::SeqCst);
                        if wire.transmit(sw, EXTERNAL_PORT, *id, p) != PacketFate::Delivered {
                            if during_unload { &bu } else { &bl }.fetch_add(1, Ordering::SeqCst);
                        }
                        sent.fetch_add(1, Ordering::SeqCst);
                    }
                }
            })
        })
        .collect();
    // Packets are flowing on every thread before the first event (a thread that panicked
    // stops the wait; its join below reports it).
    while sent.load(Ordering::SeqCst) < 3 * inbound.len()
        && !threads.iter().any(std::thread::JoinHandle::is_finished)
    {
        std::thread::yield_now();
    }
    // Events, restores and work items while packets flow.
    for round in 0..5u32 {
        let id = 100 + round;
        let (blobs, _) = h.save(sw, 10);
        vm_port(&mut h, sw, id, &format!("vm-new-{round}"), 50, true);
        let tickets = h.restore(sw, id, &blobs);
        h.pause_restart(sw);
        let _ = h.reorder(round % 2 == 0);
        h.run_deferred();
        assert_ne!(h.vm_restore(&tickets), VmRestore::Pending);
        assert_eq!(h.delete_port(sw, id), sys::STATUS_SUCCESS);
    }
    unloading.store(true, Ordering::SeqCst);
    h.unload_driver();
    stop.store(true, Ordering::SeqCst);
    for t in threads {
        t.join().expect("no classify thread panicked");
    }
    assert!(sent.load(Ordering::SeqCst) > 0);
    assert_eq!(blocked_loaded.load(Ordering::SeqCst), 0, "established traffic never blocked");
    assert_eq!(
        blocked_unloading.load(Ordering::SeqCst),
        0,
        "no packet blocked by a filter whose callout was already unregistered"
    );
    finish(&mut h);
}

#[test]
fn unload_retries_a_callout_unregistration_answered_device_busy() {
    // The driver cannot unload until every callout is unregistered: on STATUS_DEVICE_BUSY (a
    // classify in flight on another processor) it waits and retries.
    let (mut h, sw) = host(4, enforce(RestoreMode::Pending), "SW");
    vm_port(&mut h, sw, 7, "vm-a", 1, false);
    let _ = open_connections(&mut h, sw, 7, 2);
    h.busy_unregisters(5);
    finish(&mut h); // reports "registered callouts" left behind if it gave up
}

#[test]
#[allow(clippy::needless_collect, reason = "every thread starts before any is joined")]
fn saves_and_restores_of_different_nics_run_concurrently() {
    // "Saves for one NIC are never interleaved; saves for different NICs may run
    // concurrently": the double runs them on one thread per port (restores too: the worse
    // reading where the documents are silent).
    let (mut a, sa) = host(5, enforce(RestoreMode::Pending), "SW-A");
    let (mut b, sb) = host(6, enforce(RestoreMode::Pending), "SW-B");
    let ports: Vec<u32> = (20..28).collect();
    let mut inbound = Vec::new();
    for &id in &ports {
        vm_port(&mut a, sa, id, &format!("vm-{id}"), u16::try_from(id).unwrap_or(1), false);
        inbound.push(open_connections(&mut a, sa, id, 4));
        vm_port(&mut b, sb, id + 100, &format!("vm-{id}"), u16::try_from(id).unwrap_or(1), true);
    }
    let blobs: Vec<_> = std::thread::scope(|s| {
        let a = &a;
        let handles: Vec<_> = ports.iter().map(|&id| s.spawn(move || a.save(sa, id).0)).collect();
        handles.into_iter().map(|h| h.join().expect("save thread")).collect()
    });
    let tickets: Vec<_> = std::thread::scope(|s| {
        let handles: Vec<_> = ports
            .iter()
            .zip(&blobs)
            .map(|(&id, blob)| {
                let b = &b;
                s.spawn(move || b.restore(sb, id + 100, blob))
            })
            .collect();
        handles.into_iter().map(|h| h.join().expect("restore thread")).collect()
    });
    b.run_deferred();
    for ((&id, t), packets) in ports.iter().zip(&tickets).zip(&inbound) {
        assert_eq!(b.vm_restore(t), VmRestore::Succeeded);
        assert_eq!(flows_of(&b, &format!("vm-{id}")), Some(4));
        assert_eq!(vsflow_scenarios::delivered(&mut b, sb, id + 100, packets), 4);
    }
    finish(&mut a);
    finish(&mut b);
}

/// A restore the work item has claimed and is about to apply (the race tests below): vm-a
/// (Enforce, 6 connections) saved on host 1 (`a_config`), its blob sent to port 70 of host 2
/// (`b_config`; vm-a's port created restoring, then `before_restore` run), whose work item runs
/// on its own thread (another CPU) and stops at its next clock read, with the restore pending.
struct Claimed {
    b: Host,
    sb: usize,
    /// vm-a's peers' data segments, one per connection (mid-stream on host 2).
    data: Vec<SimPacket>,
    blobs: Vec<SavedBlob>,
    tickets: Vec<RestoreTicket>,
    pause: WorkItemPause,
}

fn claimed_restore(
    a_config: DriverConfig,
    b_config: DriverConfig,
    before_restore: impl FnOnce(&mut Host),
) -> Claimed {
    let (mut a, sa) = host(1, a_config, "SW-A");
    vm_port(&mut a, sa, 7, "vm-a", 1, false);
    let data = open_connections(&mut a, sa, 7, 6);
    let (blobs, _) = a.save(sa, 7);
    finish(&mut a);
    let (mut b, sb) = host(2, b_config, "SW-B");
    b.eager_work_items(true);
    vm_port(&mut b, sb, 70, "vm-a", 1, true);
    before_restore(&mut b);
    let pause = b.pause_work_item_at_clock();
    let tickets = b.restore(sb, 70, &blobs);
    assert!(pause.stopped(), "the work item reached its clock read");
    assert_eq!(b.vm_restore(&tickets), VmRestore::Pending);
    Claimed { b, sb, data, blobs, tickets, pause }
}

/// Waits (up to 10 s) for a restore a work item completes on its own thread.
fn settle(b: &Host, tickets: &[RestoreTicket]) {
    let t = std::time::Instant::now();
    while b.vm_restore(tickets) == VmRestore::Pending && t.elapsed().as_secs() < 10 {
        std::thread::yield_now();
    }
}

// Fails on main (08e07ee): the work item removes a pended restore from the pending set (it is no
// longer "in flight") before it takes the port's lock to apply it. A save of the port in that
// gap saw neither a pended nor an in-flight restore and encoded the port as it was before its
// restore: B's default mode (Monitor) and no rules, a *valid* policy, which C then installed as
// the VM's: an Enforce VM became Monitor after two migrations and an unsolicited SYN reached it.
#[test]
fn a_save_racing_the_work_item_never_sends_the_port_as_it_was_before_its_restore() {
    // B's (and C's) DefaultMode is Monitor: what the VM's Enforce must never become.
    let Claimed { mut b, sb, tickets, pause, .. } =
        claimed_restore(enforce(RestoreMode::Pending), DriverConfig::default(), |_| {});
    // The work item (another CPU) has taken the blob, decoded it and removed it from the
    // pending set; it stops at its next clock read, before it locks the port to apply it.
    let (onward, _) = b.save(sb, 70);
    pause.resume();
    settle(&b, &tickets);
    assert_eq!(b.vm_restore(&tickets), VmRestore::Succeeded);
    finish(&mut b);

    let (mut c, sc) = host(3, DriverConfig::default(), "SW-C");
    vm_port(&mut c, sc, 9, "vm-a", 1, true);
    let t = c.restore(sc, 9, &onward);
    c.run_deferred();
    assert_eq!(c.vm_restore(&t), VmRestore::Succeeded, "C's restore never fails");
    let info = c.list_ports().into_iter().find(|p| p.name.to_string() == "vm-a").expect("port");
    assert_eq!(info.mode, vsflow_core::Mode::Enforce, "the VM enforced on A: never Monitor on C");
    let syn = vsflow_sim::tools::traffic::inbound_syn(
        vsflow_core::IpFamily::V4,
        vsflow_sim::tools::traffic::remote_addr(vsflow_core::IpFamily::V4, 99, false),
        40_000,
        7,
        3389,
    );
    assert_ne!(c.transmit(sc, EXTERNAL_PORT, 9, &syn), PacketFate::Delivered, "no rule admits it");
    finish(&mut c);
}

// Fails on main (072fa57): the save checks "still in its restore window" under the port's lock,
// but a port whose window closed on its own (no restore within RestoreWindowSeconds) is not in
// it any more when its restore arrives late: the work item takes the restore from the pending
// set, and a save in the gap before it locks the port encoded the port as it was, B's default
// mode (Monitor) and no rules, which C installed as the VM's policy.
#[test]
fn a_save_racing_a_late_restore_after_the_window_closed_never_sends_the_default_policy() {
    let Claimed { mut b, sb, tickets, pause, .. } =
        claimed_restore(enforce(RestoreMode::Pending), DriverConfig::default(), |b| {
            // No restore within RestoreWindowSeconds (60): the window closes (the timer).
            b.advance(61 * vsflow_core::TICKS_PER_SECOND);
            let _ = b.within(|| b.driver().expire_idle(16));
        });
    let (onward, _) = b.save(sb, 70);
    pause.resume();
    settle(&b, &tickets);
    assert_eq!(b.vm_restore(&tickets), VmRestore::Succeeded);
    let on_b = b.list_ports().into_iter().find(|p| p.name.to_string() == "vm-a").expect("port");
    assert_eq!(on_b.mode, vsflow_core::Mode::Enforce, "B applied the late restore");
    finish(&mut b);

    let (mut c, sc) = host(3, DriverConfig::default(), "SW-C");
    vm_port(&mut c, sc, 9, "vm-a", 1, true);
    let t = c.restore(sc, 9, &onward);
    c.run_deferred();
    assert_eq!(c.vm_restore(&t), VmRestore::Succeeded, "C's restore never fails");
    let info = c.list_ports().into_iter().find(|p| p.name.to_string() == "vm-a").expect("port");
    assert_eq!(info.mode, vsflow_core::Mode::Enforce, "the VM enforced on A: never Monitor on C");
    let syn = vsflow_sim::tools::traffic::inbound_syn(
        vsflow_core::IpFamily::V4,
        vsflow_sim::tools::traffic::remote_addr(vsflow_core::IpFamily::V4, 99, false),
        40_000,
        7,
        3389,
    );
    assert_ne!(c.transmit(sc, EXTERNAL_PORT, 9, &syn), PacketFate::Delivered, "no rule admits it");
    finish(&mut c);
}

// Fails on main (2d1d872): the work item claims a pended restore (no port delete can cancel it
// any more) and only then finds the port by its id to apply it. If the port was deleted and a
// port with the same id created in that gap (another VM's NIC), the old VM's restore landed on
// the new port: its flows (the old VM's peers admitted on the new VM) and its policy. The apply
// must check that the port is the instance the restore was received for; any other port gets a
// degraded restore (no flows, policy kept or closed), counted, and the notification succeeds.
#[test]
fn a_restore_claimed_for_a_port_deleted_and_created_again_never_lands_on_the_new_port() {
    let Claimed { mut b, sb, data, tickets, pause, .. } =
        claimed_restore(enforce(RestoreMode::Pending), enforce(RestoreMode::Pending), |_| {});
    // The work item (another CPU) has claimed the restore and stops at its next clock read,
    // before it finds the port to apply it.
    // The port goes, and another VM's port takes its id.
    assert_eq!(b.delete_port(sb, 70), sys::STATUS_SUCCESS);
    vm_port(&mut b, sb, 70, "vm-b", 2, false);
    let degraded_before = b.driver().stats().restores_empty;
    pause.resume();
    settle(&b, &tickets);
    assert_eq!(b.vm_restore(&tickets), VmRestore::Succeeded, "a migration never fails");
    assert_eq!(flows_of(&b, "vm-b"), Some(0), "none of vm-a's flows on vm-b's port");
    assert_eq!(
        vsflow_scenarios::delivered(&mut b, sb, 70, &data),
        0,
        "vm-a's peers' segments reach nothing on vm-b's port"
    );
    assert_eq!(
        b.driver().stats().restores_empty,
        degraded_before + 1,
        "counted: a degraded restore of the new port"
    );
    assert!(
        b.trace_events().iter().any(|e| matches!(
            e,
            vsflow_callout::TraceEvent::Restore {
                port: 70,
                outcome: vsflow_callout::RestoreOutcome::Degraded(
                    vsflow_callout::DegradedReason::PortReplaced
                ),
                ..
            }
        )),
        "traced as a degraded restore, port replaced"
    );
    finish(&mut b);
}

/// The same race when the port is created again for the same VM (its NIC re-created, a
/// restoring port): the stale restore leaves it as it is (its restore window stays open for
/// its own restore: R5-5 below), and the restore Hyper-V then sends for the new port, the same
/// blob, is applied in full (the stale one is not remembered as this port's: a repeat would
/// otherwise be ignored).
#[test]
fn a_port_created_again_for_the_same_vm_takes_its_own_restore_after_the_stale_one() {
    let Claimed { mut b, sb, data, blobs, tickets: stale, pause, .. } =
        claimed_restore(enforce(RestoreMode::Pending), enforce(RestoreMode::Pending), |_| {});
    assert_eq!(b.delete_port(sb, 70), sys::STATUS_SUCCESS);
    vm_port(&mut b, sb, 70, "vm-a", 1, true);
    pause.resume();
    settle(&b, &stale);
    assert_eq!(b.vm_restore(&stale), VmRestore::Succeeded);
    assert_eq!(flows_of(&b, "vm-a"), Some(0), "nothing of the stale restore");
    b.eager_work_items(false);
    let own = b.restore(sb, 70, &blobs);
    b.run_deferred();
    assert_eq!(b.vm_restore(&own), VmRestore::Succeeded);
    assert_eq!(flows_of(&b, "vm-a"), Some(6), "the port's own restore applies in full");
    assert_eq!(vsflow_scenarios::delivered(&mut b, sb, 70, &data), 6);
    finish(&mut b);
}

/// Review s4, finding R4-3. The same race with `LoosePickup` = 1: the degraded restore of the
/// *new* port (another VM's, never migrated, `PortReplaced`) goes through `degrade`, which opens
/// the loose pickup window on it (`open_loose_window`: "no connection was carried"), so for
/// `LooseWindowSeconds` any outsider's mid-stream TCP segment to that VM is picked up, on a port
/// no migration touched (SECURITY.md edge 9 states only "becomes Enforce (fail closed)").
/// Failed on main (review4's 4410050): vm-a's peers' mid-stream segments reached vm-b.
#[test]
fn a_restore_for_a_replaced_port_opens_no_loose_window_on_the_new_port() {
    let loose =
        vsflow_callout::DriverConfig { loose_pickup: true, ..enforce(RestoreMode::Pending) };
    let Claimed { mut b, sb, data, tickets, pause, .. } = claimed_restore(loose, loose, |_| {});
    assert_eq!(b.delete_port(sb, 70), sys::STATUS_SUCCESS);
    vm_port(&mut b, sb, 70, "vm-b", 2, false);
    // Control: before the stale restore lands, vm-b (Enforce, no restore) blocks them.
    assert_eq!(vsflow_scenarios::delivered(&mut b, sb, 70, &data[..1]), 0, "control");
    pause.resume();
    settle(&b, &tickets);
    assert_eq!(b.vm_restore(&tickets), VmRestore::Succeeded, "a migration never fails");
    assert_eq!(
        vsflow_scenarios::delivered(&mut b, sb, 70, &data[1..]),
        0,
        "outsiders' mid-stream segments reach nothing on vm-b's port"
    );
    finish(&mut b);
}

/// Review s5, R5-5. A restore claimed for a port deleted since was applied to the port now
/// holding its id as a degraded restore (`PortReplaced`): `degrade` ran
/// `codec::apply_degraded` -> `Port::commit_degraded` on that port (`close_window`,
/// `pickup.clear()`, `end_window_pickups`). When that port is another VM migrating in (its own
/// port restoring, its restore not here yet), the stale restore closed *its* restore window:
/// the mid-stream segments of its carried connections, picked up tentatively in the window,
/// were judged in Enforce (blocked) until its own restore landed. Nothing of the old port
/// concerns the new one: the restore owner's decision (session 5) is that the new port is left
/// as it is (counted and traced only). Closing its window "fails closed" against nothing: the
/// window's pickups are tentative, confirmed by the VM, so keeping it open admits nothing the
/// window would not, and closing it costs the new VM's real connections.
#[test]
fn a_stale_restore_for_a_replaced_port_leaves_the_new_ports_restore_window_open() {
    let Claimed { mut b, sb, data, tickets, pause, .. } =
        claimed_restore(enforce(RestoreMode::Pending), enforce(RestoreMode::Pending), |_| {});
    assert_eq!(b.delete_port(sb, 70), sys::STATUS_SUCCESS);
    // Another VM migrating in on the reused id: its port restoring, its restore not here yet.
    vm_port(&mut b, sb, 70, "vm-b", 2, true);
    assert_eq!(
        vsflow_scenarios::delivered(&mut b, sb, 70, &data[..1]),
        1,
        "control: in vm-b's restore window a mid-stream segment is picked up tentatively"
    );
    pause.resume();
    settle(&b, &tickets);
    assert_eq!(b.vm_restore(&tickets), VmRestore::Succeeded, "a migration never fails");
    assert_eq!(
        vsflow_scenarios::delivered(&mut b, sb, 70, &data[1..]),
        5,
        "vm-b's restore window is still open after vm-a's stale restore (vm-b's own has not come)"
    );
    // vm-b's own restore then carries its connections.
    let (mut c, sc) = host(3, enforce(RestoreMode::Pending), "SW-C");
    vm_port(&mut c, sc, 9, "vm-b", 2, false);
    let data_b = open_connections(&mut c, sc, 9, 4);
    let (blobs_b, _) = c.save(sc, 9);
    finish(&mut c);
    let tickets_b = b.restore(sb, 70, &blobs_b);
    settle(&b, &tickets_b);
    assert_eq!(b.vm_restore(&tickets_b), VmRestore::Succeeded);
    assert_eq!(vsflow_scenarios::delivered(&mut b, sb, 70, &data_b), 4, "vm-b's own connections");
    finish(&mut b);
}
