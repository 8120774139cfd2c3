//! The seven vSwitch event callbacks and the dispatch table handed to
//! `FwpsvSwitchEventsSubscribe0`.
//!
//! Each `extern "system"` trampoline checks its pointers and calls a safe method of
//! [`crate::Driver`]. Only runtime-state restore ever returns `STATUS_PENDING`; every other
//! callback completes synchronously (filter engine reorder must never pend).
//!
//! - [`events`]: switch lifetime, port, interface, reorder and policy events.
//! - [`save`]: runtime-state save (synchronous; the driver owns the returned buffer).
//! - [`restore`]: runtime-state restore (copy, pend, decode and apply later, complete once).

pub mod events;
pub mod restore;
pub mod save;

use core::ffi::c_void;

use fwps_sys::FWPS_VSWITCH_EVENT_DISPATCH_TABLE0;

use crate::driver::Driver;
use crate::services::KernelServices;
use crate::sync::RundownGuard;

/// The dispatch table for a driver with services `S`.
#[must_use]
pub fn dispatch_table<S: KernelServices>() -> FWPS_VSWITCH_EVENT_DISPATCH_TABLE0 {
    FWPS_VSWITCH_EVENT_DISPATCH_TABLE0 {
        vSwitchLifetimeNotifyFn: Some(events::lifetime_fn::<S>),
        vSwitchPortEventNotifyFn: Some(events::port_fn::<S>),
        vSwitchInterfaceEventNotifyFn: Some(events::interface_fn::<S>),
        vSwitchFilterEngineReorderNotifyRn: Some(events::reorder_fn::<S>),
        vSwitchPolicyEventNotifyFn: Some(events::policy_fn::<S>),
        vSwitchRuntimeStateSaveNotifyFn: Some(save::save_fn::<S>),
        vSwitchRuntimeStateRestoreNotifyFn: Some(restore::restore_fn::<S>),
    }
}

/// The driver behind a `notifyContext`.
///
/// # Safety
/// `context` is null or the driver pointer given at subscription, and the driver outlives the
/// subscription.
unsafe fn driver<'a, S: KernelServices>(context: *mut c_void) -> Option<&'a Driver<S>> {
    // SAFETY: caller's contract.
    unsafe { context.cast::<Driver<S>>().as_ref() }
}

impl<S: KernelServices> Driver<S> {
    /// Counts a vSwitch callback in flight (stop waits for it); `None` once stop has begun
    /// draining (the callback then does nothing and succeeds).
    pub(crate) fn enter_callback(&self) -> Option<RundownGuard<'_, S::Rundown>> {
        RundownGuard::acquire(&self.callbacks)
    }
}

/// Reads an OS-provided counted string as a durable identity.
fn identity(s: &fwps_sys::IF_COUNTED_STRING) -> Option<vsflow_core::PortIdentity> {
    vsflow_core::PortIdentity::try_from_utf16(s.units()?).ok()
}
