//! Idle-flow expiry: a periodic WDF timer, parented to the control device, whose callback runs
//! `Driver::expire_idle` with a budget.
//!
//! The callback runs at `DISPATCH_LEVEL` (a DPC). That is the deliberate choice: KMDF does not
//! support a periodic timer at `PASSIVE_LEVEL` (`WdfTimerCreate` returns `STATUS_NOT_SUPPORTED`,
//! fxtimerapi.cpp), and expiry takes the switch-state spin lock, which raises to
//! `DISPATCH_LEVEL` anyway; a work item would only add latency. The budget bounds the time the
//! lock is held per tick (per port, [`BUDGET`] flows); flows left over are expired on the next
//! ticks.

use core::sync::atomic::{AtomicUsize, Ordering};

use wdk_sys::{
    NTSTATUS, WDF_NO_HANDLE, WDF_TIMER_CONFIG, WDFDEVICE, WDFOBJECT, WDFTIMER,
    call_unsafe_wdf_function_binding,
};

use crate::entry::driver;
use crate::wdf::{parented, size_of_u32};

/// Timer period.
pub const PERIOD_MS: u32 = 1_000;
/// Tolerable delay (lets the kernel coalesce the tick with other timers).
pub const TOLERABLE_DELAY_MS: u32 = 250;
/// Most flows expired per port per tick.
pub const BUDGET: usize = 64;

/// The timer (`WDFTIMER`, 0 when none).
static TIMER: AtomicUsize = AtomicUsize::new(0);

/// Creates and starts the timer.
///
/// # Errors
/// The status `WdfTimerCreate` failed with.
///
/// # Safety
/// `PASSIVE_LEVEL`, with the control device; [`stop`] runs before the driver is freed.
pub unsafe fn start(device: WDFDEVICE) -> Result<(), NTSTATUS> {
    let mut config = WDF_TIMER_CONFIG {
        Size: size_of_u32::<WDF_TIMER_CONFIG>(),
        EvtTimerFunc: Some(evt_timer),
        Period: PERIOD_MS,
        AutomaticSerialization: 0,
        TolerableDelay: TOLERABLE_DELAY_MS,
        ..WDF_TIMER_CONFIG::default()
    };
    let mut attributes = parented(device as WDFOBJECT);
    let mut timer: WDFTIMER = WDF_NO_HANDLE.cast();
    // SAFETY: valid configuration, attributes and out-pointer.
    let status = unsafe {
        call_unsafe_wdf_function_binding!(
            WdfTimerCreate,
            &raw mut config,
            &raw mut attributes,
            &raw mut timer
        )
    };
    if !wdk::nt_success(status) {
        return Err(status);
    }
    TIMER.store(timer as usize, Ordering::Release);
    // First tick one period from now (negative: relative, 100 ns units).
    let due = -(i64::from(PERIOD_MS) * 10_000);
    // SAFETY: the timer created above.
    let _was_queued = unsafe { call_unsafe_wdf_function_binding!(WdfTimerStart, timer, due) };
    Ok(())
}

/// Stops the timer and waits for a running callback (`PASSIVE_LEVEL`, unload, before the
/// driver is freed). The timer object itself goes with its parent, the control device.
pub fn stop() {
    let timer = TIMER.swap(0, Ordering::AcqRel);
    if timer != 0 {
        // SAFETY: the timer created in `start`, still alive (its parent is deleted after this);
        // PASSIVE_LEVEL, not from the timer's own callback.
        let _was_queued =
            unsafe { call_unsafe_wdf_function_binding!(WdfTimerStop, timer as WDFTIMER, 1) };
    }
}

/// `EvtTimerFunc` (`DISPATCH_LEVEL`).
extern "C" fn evt_timer(_timer: WDFTIMER) {
    if let Some(d) = driver() {
        let _expired = d.expire_idle(BUDGET);
    }
}
