//! The base filtering engine stopping and starting again under a running driver
//! (`FwpmBfeStateSubscribeChanges0` remarks; `WFPSampler`'s BFE subscription): `STOP_PENDING` is the
//! time to close the engine handle; BFE's stop deletes dynamic sessions' objects and
//! invalidates handles; RUNNING again is the time to add everything back.

use vsflow_callout::{Phase, RestoreMode};
use vsflow_core::IpFamily;
use vsflow_scenarios::{delivered, enforce, finish, host, open_connections, vm_port};
use vsflow_sim::host::EXTERNAL_PORT;
use vsflow_sim::tools::traffic::{inbound_syn, remote_addr};
use vsflow_sim::{Host, PacketFate, VmRestore};

fn vsflow_filters(h: &Host) -> usize {
    let key = Some(vsflow_callout::keys::PROVIDER);
    h.engine_objects().filters.iter().filter(|f| f.provider == key).count()
}

#[test]
fn after_bfe_restarts_vsflows_filters_are_back_and_enforcement_resumes() {
    let (mut h, sw) = host(1, enforce(RestoreMode::Pending), "SW");
    vm_port(&mut h, sw, 7, "vm-a", 1, false);
    let inbound = open_connections(&mut h, sw, 7, 4);
    let filters = vsflow_filters(&h);
    assert!(filters > 0);
    h.stop_bfe();
    assert_eq!(vsflow_filters(&h), 0, "dynamic objects go with BFE");
    assert!(
        h.violations().is_empty(),
        "the handle was closed at STOP_PENDING: {:?}",
        h.violations()
    );
    h.start_bfe();
    assert_eq!(vsflow_filters(&h), filters, "RUNNING: every object added again");
    let unsolicited = inbound_syn(IpFamily::V4, remote_addr(IpFamily::V4, 4, false), 5000, 7, 3389);
    assert_eq!(h.transmit(sw, EXTERNAL_PORT, 7, &unsolicited), PacketFate::BlockedAtEgress);
    assert_eq!(delivered(&mut h, sw, 7, &inbound), 4, "port state survives BFE");
    finish(&mut h);
}

#[test]
fn bfe_stopping_twice_and_the_driver_unloading_while_it_is_stopped_leave_nothing() {
    let (mut h, sw) = host(1, enforce(RestoreMode::Pending), "SW");
    vm_port(&mut h, sw, 7, "vm-a", 1, false);
    h.stop_bfe();
    h.start_bfe();
    h.stop_bfe();
    finish(&mut h); // unload with BFE stopped: no stale handle used, nothing left
}

#[test]
fn bfe_restart_finishes_pended_restores_before_adding_filters_again() {
    // "Using Virtual Switch Filtering": a callout must not add or delete WFP filters before it
    // completes a pended vSwitch notification. A restore pended when BFE stops is finished
    // before vsflow adds its filters back on RUNNING.
    let (mut a, sa) = host(3, enforce(RestoreMode::Pending), "SW-A");
    vm_port(&mut a, sa, 7, "vm-a", 1, false);
    let inbound = open_connections(&mut a, sa, 7, 4);
    let (blobs, _) = a.save(sa, 7);
    finish(&mut a);
    let (mut b, sb) = host(4, enforce(RestoreMode::Pending), "SW-B");
    vm_port(&mut b, sb, 7, "vm-a", 1, true);
    let filters = vsflow_filters(&b);
    let tickets = b.restore(sb, 7, &blobs);
    assert_eq!(b.vm_restore(&tickets), VmRestore::Pending, "pended, the work item not run");
    b.stop_bfe();
    b.start_bfe();
    assert!(b.violations().is_empty(), "{:?}", b.violations());
    assert_eq!(b.vm_restore(&tickets), VmRestore::Succeeded);
    assert_eq!(vsflow_filters(&b), filters, "RUNNING: every object added again");
    assert_eq!(delivered(&mut b, sb, 7, &inbound), 4, "the restore was applied");
    finish(&mut b);
}

#[test]
fn a_bfe_stop_that_begins_while_the_driver_registers_is_acted_on() {
    // BFE's state notifications come whenever the service changes state. A STOP_PENDING that
    // arrives while the driver adds its objects again (after a restart) must not be lost: the
    // driver would believe it runs on an engine that is gone (no filters: fail open) and never
    // register again.
    let (mut h, sw) = host(5, enforce(RestoreMode::Pending), "SW");
    vm_port(&mut h, sw, 7, "vm-a", 1, false);
    let inbound = open_connections(&mut h, sw, 7, 4);
    let filters = vsflow_filters(&h);
    h.stop_bfe();
    h.stop_bfe_after("FwpmTransactionCommit0");
    h.start_bfe();
    h.finish_bfe_stop();
    assert_eq!(vsflow_filters(&h), 0);
    assert_eq!(
        h.driver().phase(),
        Phase::WaitingForBfe,
        "the STOP_PENDING seen during registration was acted on"
    );
    h.start_bfe();
    assert_eq!(vsflow_filters(&h), filters, "RUNNING again: every object added back");
    let unsolicited = inbound_syn(IpFamily::V4, remote_addr(IpFamily::V4, 4, false), 5000, 7, 3389);
    assert_eq!(h.transmit(sw, EXTERNAL_PORT, 7, &unsolicited), PacketFate::BlockedAtEgress);
    assert_eq!(delivered(&mut h, sw, 7, &inbound), 4);
    finish(&mut h);
}
