//! Runtime-state restore as the extensible switch runs it.
//!
//! - `OID_SWITCH_NIC_RESTORE`: if an extension fails the request, the whole VM restore fails
//!   (the double reports it in `Host::failed_vm_restores`); the save output is
//!   `_Outptr_result_buffer_` (never NULL on success) and its size a USHORT.
//! - "Hyper-V extensible switch port and network adapter states": traffic flows once the NIC
//!   is created, before NIC connect, so while a pended restore has not completed: the double
//!   sends traffic in that window.

use fwps_sys as sys;
use vsflow_callout::RestoreMode;
use vsflow_core::FlowState;
use vsflow_scenarios::{
    delivered, enforce, finish, flow_states, flows_of, host, open_connections, vm_port,
};
use vsflow_sim::{Host, VmRestore};

const NAME: &str = "6F1C0001-5A3B-4C2D-9E8F-000000001EEF";

/// Host A with port 10 carrying `n` established connections; returns A, its switch, the
/// inbound packets of those connections, and A's saved blobs of the port.
fn source(n: u16) -> (Host, usize, Vec<vsflow_sim::SimPacket>, Vec<vsflow_sim::host::SavedBlob>) {
    let (mut a, sa) = host(1, enforce(RestoreMode::Pending), "SW-A");
    vm_port(&mut a, sa, 10, NAME, 1, false);
    let inbound = open_connections(&mut a, sa, 10, n);
    let (blobs, _) = a.save(sa, 10);
    (a, sa, inbound, blobs)
}

/// Host B with port `id` created RESTORING and its NIC created (not connected).
fn destination(restore: RestoreMode, id: u32) -> (Host, usize) {
    let (mut b, sb) = host(2, enforce(restore), "SW-B");
    assert_eq!(b.create_port(sb, id, NAME, true), sys::STATUS_SUCCESS);
    assert_eq!(
        b.nic_event(sb, id, 1, sys::FWPS_VSWITCH_EVENT_INTERFACE_CREATE),
        sys::STATUS_SUCCESS
    );
    (b, sb)
}

#[test]
fn a_save_of_a_port_vsflow_does_not_know_is_a_valid_buffer_and_restores_successfully() {
    let (mut a, sa) = host(1, enforce(RestoreMode::Pending), "SW-A");
    // Port 404 was never reported to the driver.
    let (blobs, _) = a.save(sa, 404);
    finish(&mut a); // no SaveNullOnSuccess
    for (_, blob) in &blobs {
        assert!(u16::try_from(blob.len()).is_ok(), "fits NDIS_SWITCH_NIC_SAVE_STATE");
    }
    let (mut b, sb) = destination(RestoreMode::Pending, 5);
    let tickets = b.restore(sb, 5, &blobs);
    b.run_deferred();
    assert_eq!(b.vm_restore(&tickets), VmRestore::Succeeded, "the VM's migration does not fail");
    assert!(b.failed_vm_restores().is_empty());
    finish(&mut b);
}

#[test]
fn a_zero_length_restore_record_does_not_fail_the_vm_restore() {
    for mode in [RestoreMode::Pending, RestoreMode::Synchronous] {
        let (mut b, sb) = destination(mode, 5);
        let tickets = b.restore(sb, 5, &[(Some(vsflow_callout::keys::PROVIDER), Vec::new())]);
        assert_eq!(tickets.len(), 1, "WFP hands the record to vsflow's subscription");
        b.run_deferred();
        assert_eq!(b.vm_restore(&tickets), VmRestore::Succeeded, "{mode:?}");
        assert_eq!(flows_of(&b, NAME), Some(0));
        finish(&mut b);
    }
}

#[test]
fn damaged_blobs_never_fail_the_vm_restore_by_default() {
    let (mut a, _, _, blobs) = source(5);
    finish(&mut a);
    let damage: [fn(&mut Vec<u8>); 4] = [
        |b| b.truncate(3),
        |b| b.iter_mut().for_each(|x| *x = 0xFF),
        |b| b.truncate(b.len() - 1),
        |b| b[0] ^= 0x55,
    ];
    for (k, d) in damage.iter().enumerate() {
        for mode in [RestoreMode::Pending, RestoreMode::Synchronous] {
            let (mut b, sb) = destination(mode, 5);
            let mut bad = blobs.clone();
            for (_, blob) in &mut bad {
                d(blob);
            }
            let tickets = b.restore(sb, 5, &bad);
            b.run_deferred();
            assert_eq!(b.vm_restore(&tickets), VmRestore::Succeeded, "damage {k}, {mode:?}");
            assert!(b.failed_vm_restores().is_empty());
            assert_eq!(flows_of(&b, NAME), Some(0), "an empty port");
            finish(&mut b);
        }
    }
}

#[test]
fn carried_connections_flow_after_nic_create_before_the_pended_restore_completes() {
    let (mut a, _, inbound, blobs) = source(12);
    finish(&mut a);
    let (mut b, sb) = destination(RestoreMode::Pending, 77);
    // Window 1: NIC created, restore not delivered yet.
    assert_eq!(delivered(&mut b, sb, 77, &inbound[..4]), 4, "NIC created: traffic flows");
    let tickets = b.restore(sb, 77, &blobs);
    assert_eq!(b.vm_restore(&tickets), VmRestore::Pending);
    // Window 2: the restore pends (its work item has not run).
    assert_eq!(delivered(&mut b, sb, 77, &inbound[4..]), 8, "restore pending: traffic flows");
    b.run_deferred();
    assert_eq!(b.vm_restore(&tickets), VmRestore::Succeeded);
    assert_eq!(
        b.nic_event(sb, 77, 1, sys::FWPS_VSWITCH_EVENT_INTERFACE_CONNECT),
        sys::STATUS_SUCCESS
    );
    // Flows seen in the window merge with the restored ones: one flow per connection.
    let states = flow_states(&b, NAME);
    assert_eq!(states.len(), 12, "merged, not duplicated: {states:?}");
    assert!(states.iter().all(|s| *s == FlowState::Established), "{states:?}");
    assert_eq!(delivered(&mut b, sb, 77, &inbound), 12);
    finish(&mut b);
}

#[test]
fn a_restore_failed_by_the_driver_fails_the_whole_vm_restore_and_is_reported() {
    // The opt-in policy (FailBadRestores): an unknown major version fails the restore; the double then
    // fails the VM's restore as the extensible switch does.
    let blob = std::fs::read(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("fixtures/runtime-state/v2.0-future-major.bin"),
    )
    .expect("fixture");
    let strict = vsflow_callout::DriverConfig {
        fail_bad_restores: true,
        ..enforce(RestoreMode::Synchronous)
    };
    let (mut b, sb) = host(2, strict, "SW-B");
    vm_port(&mut b, sb, 5, "6A1B2C3D-0000-4E5F-8A9B-0C1D2E3F4A5B", 1, true);
    let tickets = b.restore(sb, 5, &[(Some(vsflow_callout::keys::PROVIDER), blob)]);
    let VmRestore::Failed(status) = b.vm_restore(&tickets) else {
        panic!("strict policy: the VM's restore fails");
    };
    assert_eq!(b.failed_vm_restores(), vec![(5, status)]);
    finish(&mut b);
}

#[test]
fn a_restore_blob_longer_than_the_documented_maximum_is_refused_before_it_is_copied() {
    // docs/runtime-state-format.md: a blob is at most 65,535 bytes. A longer one (a hostile or
    // broken source) is refused before the driver copies it: no allocation of its size, not
    // pended, the port degraded (the VM's restore succeeds), counted.
    use vsflow_sim::kernel::alloc::{largest_driver_block, reset_largest_driver_block};
    for mode in [RestoreMode::Pending, RestoreMode::Synchronous] {
        let (mut b, sb) = destination(mode, 9);
        let huge = vec![0x5Au8; 200_000];
        reset_largest_driver_block(b.id());
        let tickets = b.restore(sb, 9, &[(Some(vsflow_callout::keys::PROVIDER), huge)]);
        let largest = largest_driver_block(b.id());
        assert!(largest <= 65_535, "{mode:?}: the driver allocated {largest} bytes: it copied");
        assert_eq!(tickets[0].returned, sys::STATUS_SUCCESS, "{mode:?}: refused at once");
        assert_eq!(b.vm_restore(&tickets), VmRestore::Succeeded);
        assert_eq!(b.driver().stats().restores_empty, 1, "{mode:?}: counted as degraded");
        assert_eq!(b.driver().stats().restores_oversized, 1, "{mode:?}: counted as oversized");
        assert!(
            b.trace_events().iter().any(|e| matches!(
                e,
                vsflow_callout::TraceEvent::Restore {
                    port: 9,
                    bytes: 200_000,
                    outcome: vsflow_callout::RestoreOutcome::Degraded(
                        vsflow_callout::DegradedReason::Oversized
                    ),
                    ..
                }
            )),
            "{mode:?}: traced"
        );
        finish(&mut b);
    }
}

#[test]
fn an_unknown_major_under_the_default_strict_policy_does_not_fail_the_vm() {
    // What the INF's UnknownMajorPolicy comment says: 0 (strict, the default) and 1 (lenient)
    // differ only in how the decode reports the blob; either way the VM's restore succeeds
    // (degraded) unless FailBadRestores = 1.
    let blob = std::fs::read(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("fixtures/runtime-state/v2.0-future-major.bin"),
    )
    .expect("fixture");
    for policy in
        [vsflow_core::codec::UnknownMajor::Strict, vsflow_core::codec::UnknownMajor::Lenient]
    {
        let config = vsflow_callout::DriverConfig {
            unknown_major: policy,
            ..enforce(RestoreMode::Synchronous)
        };
        let (mut b, sb) = host(2, config, "SW-B");
        vm_port(&mut b, sb, 5, "6A1B2C3D-0000-4E5F-8A9B-0C1D2E3F4A5B", 1, true);
        let tickets = b.restore(sb, 5, &[(Some(vsflow_callout::keys::PROVIDER), blob.clone())]);
        assert_eq!(b.vm_restore(&tickets), VmRestore::Succeeded, "{policy:?}");
        assert_eq!(b.driver().stats().restores_empty, 1, "{policy:?}: degraded");
        finish(&mut b);
    }
}
