//! The simulator enforces the documented contracts: each test breaks one on purpose, through
//! the same exported functions the driver calls, and checks that it is reported.

use std::ffi::c_void;
use std::ptr;

use fwps_sys as sys;
use vsflow_callout::RestoreMode;
use vsflow_scenarios::{enforce, host, vm_port};
use vsflow_sim::{Host, Violation};

fn restore_pending(h: &mut Host, sw: usize) -> usize {
    let (mut a, sa) = host(99, enforce(RestoreMode::Pending), "SRC");
    vm_port(&mut a, sa, 3, "q", 1, false);
    let (blobs, _) = a.save(sa, 3);
    a.unload_driver();
    vm_port(h, sw, 4, "q", 1, true);
    let t = h.restore(sw, 4, &blobs);
    assert_eq!(t[0].returned, sys::STATUS_PENDING);
    t[0].context
}

#[test]
fn a_second_completion_of_the_same_notification_is_reported() {
    let (mut h, sw) = host(1, enforce(RestoreMode::Pending), "SW");
    let ctx = restore_pending(&mut h, sw);
    h.run_deferred();
    assert!(h.violations().is_empty());
    h.within(|| {
        // SAFETY: deliberately repeating a completion; the simulator only records it.
        unsafe { sys::FwpsvSwitchNotifyComplete0(ctx as *mut c_void, 0, 0, ptr::null_mut()) };
    });
    assert_eq!(h.violations(), vec![Violation::UnknownCompletion { context: ctx }]);
}

#[test]
fn completing_with_status_pending_is_reported() {
    let (mut h, sw) = host(2, enforce(RestoreMode::Pending), "SW");
    let ctx = restore_pending(&mut h, sw);
    h.within(|| {
        let (context, status) = (ctx as *mut c_void, sys::STATUS_PENDING);
        // SAFETY: deliberately wrong status; the simulator only records it.
        unsafe { sys::FwpsvSwitchNotifyComplete0(context, status, 0, ptr::null_mut()) };
    });
    assert!(h.violations().contains(&Violation::CompletedWithPending));
    h.run_deferred();
}

#[test]
fn a_pended_notification_never_completed_is_reported_at_unload() {
    let (mut h, sw) = host(3, enforce(RestoreMode::Pending), "SW");
    let _ = restore_pending(&mut h, sw);
    // Pretend the driver lost it: complete the driver's entry behind its back is impossible, so
    // forge an outstanding notification the driver never saw.
    h.forge_outstanding(0xBAD0, "vSwitchPortEventNotifyFn", 4);
    h.unload_driver();
    assert!(h.violations().iter().any(|v| matches!(v, Violation::NeverCompleted { .. })));
}

#[test]
fn adding_a_filter_while_a_notification_pends_is_reported() {
    let (mut h, sw) = host(4, enforce(RestoreMode::Pending), "SW");
    let _ = restore_pending(&mut h, sw);
    h.within(|| {
        // SAFETY: deliberately misusing the engine; the simulator only records it.
        let status = unsafe {
            sys::FwpmFilterDeleteByKey0(
                1 as sys::HANDLE,
                &raw const vsflow_callout::keys::SUBLAYER_KEY,
            )
        };
        assert_ne!(status, sys::STATUS_SUCCESS);
    });
    assert!(
        h.violations()
            .iter()
            .any(|v| matches!(v, Violation::FilterChangeDuringNotification { .. }))
    );
    h.run_deferred();
}

#[test]
fn unregistering_a_callout_before_unsubscribing_is_reported() {
    let (h, _) = host(5, enforce(RestoreMode::Pending), "SW");
    h.within(|| {
        let key = vsflow_callout::keys::HOOKS[0].callout;
        // SAFETY: deliberately out of order; the simulator only records it.
        let _ = unsafe { sys::FwpsCalloutUnregisterByKey0(&raw const key) };
    });
    assert!(h.violations().contains(&Violation::UnregisterBeforeUnsubscribe));
}

#[test]
fn objects_without_a_provider_are_reported() {
    let h = Host::new(6);
    h.within(|| {
        let mut engine: sys::HANDLE = ptr::null_mut();
        let out = &raw mut engine;
        // SAFETY: valid out-pointer.
        let status =
            unsafe { sys::FwpmEngineOpen0(ptr::null(), 0, ptr::null_mut(), ptr::null(), out) };
        assert_eq!(status, 0);
        let sub = sys::FWPM_SUBLAYER0 {
            subLayerKey: sys::GUID::from_parts(9, 9, 9, [9; 8]),
            displayData: sys::FWPM_DISPLAY_DATA0 {
                name: ptr::null_mut(),
                description: ptr::null_mut(),
            },
            flags: 0,
            providerKey: ptr::null_mut(),
            providerData: sys::FWP_BYTE_BLOB { size: 0, data: ptr::null_mut() },
            weight: 1,
        };
        // SAFETY: valid engine and struct.
        assert_eq!(unsafe { sys::FwpmSubLayerAdd0(engine, &raw const sub, ptr::null_mut()) }, 0);
        // SAFETY: the session opened above.
        let _ = unsafe { sys::FwpmEngineClose0(engine) };
    });
    assert_eq!(h.violations(), vec![Violation::ObjectWithoutProvider { kind: "sublayer" }]);
}

#[test]
fn engine_calls_while_bfe_is_stopped_are_reported() {
    let h = Host::with_bfe_stopped(7);
    h.within(|| {
        let mut engine: sys::HANDLE = ptr::null_mut();
        // SAFETY: valid out-pointer.
        let status = unsafe {
            sys::FwpmEngineOpen0(ptr::null(), 0, ptr::null_mut(), ptr::null(), &raw mut engine)
        };
        assert_ne!(status, 0);
    });
    assert_eq!(h.violations(), vec![Violation::BfeNotRunning { call: "FwpmEngineOpen0" }]);
}

#[test]
fn a_heap_block_the_driver_never_frees_is_reported_at_unload() {
    let (mut h, sw) = host(8, enforce(RestoreMode::Pending), "SW");
    vm_port(&mut h, sw, 4, "q", 1, false);
    {
        // Stand in for a driver bug: a block allocated as driver code and never freed.
        let _driver_code = vsflow_sim::kernel::alloc::Attribution::enter(Some(h.id()));
        std::mem::forget(vec![0u8; 64]);
    }
    h.unload_driver();
    assert_eq!(
        h.violations(),
        vec![Violation::Leak {
            what: "1 heap blocks allocated by the driver and never freed".to_owned()
        }]
    );
}
