//! The image's callbacks, callable by the doubles.
//!
//! Every function pointer vsflow.sys hands to KMDF or WFP (`EvtDriverUnload`,
//! `EvtIoDeviceControl`, the work item and timer callbacks, `classifyFn`, `notifyFn`, the BFE
//! and vSwitch callbacks) is Win64 code; the doubles call callbacks with the host's System V
//! convention, through the types the mirror and fwps-sys declare. Each shim that receives such
//! a pointer swaps it for a trampoline of the exact host type that calls the image's function
//! as `extern "win64"` with the same arguments. A family has a few slots (one per distinct
//! function the image registers; the same function registered twice shares its slot), reset
//! when an image is loaded.

#![allow(non_snake_case, reason = "parameter names are the C ones")]

use std::sync::atomic::{AtomicUsize, Ordering};

/// Slots per family: far more distinct functions of one kind than vsflow.sys registers (it
/// registers at most one per kind; the four callouts share their classify function).
pub const SLOTS: usize = 8;

macro_rules! family {
    ($(#[$doc:meta])* $name:ident, $abi:literal, ($($arg:ident: $ty:ty),* $(,)?) $(-> $ret:ty)?) => {
        $(#[$doc])*
        pub mod $name {
            #[allow(unused_imports, reason = "each family uses some of them")]
            use super::*;

            static TARGETS: [AtomicUsize; SLOTS] = [const { AtomicUsize::new(0) }; SLOTS];

            /// The host type the doubles call.
            pub type Host = unsafe extern $abi fn($($ty),*) $(-> $ret)?;
            /// The image's type.
            pub type Image = unsafe extern "win64" fn($($ty),*) $(-> $ret)?;

            unsafe extern $abi fn trampoline<const K: usize>($($arg: $ty),*) $(-> $ret)? {
                let target = TARGETS[K].load(Ordering::Acquire);
                // SAFETY: `host` stored the address of an image function of this signature
                // (never 0: a slot is only handed out once set).
                let function = unsafe { std::mem::transmute::<usize, Image>(target) };
                // SAFETY: the double calls the callback with the arguments its contract gives;
                // they are passed on unchanged.
                unsafe { function($($arg),*) }
            }

            const TRAMPOLINES: [Host; SLOTS] = [
                trampoline::<0>,
                trampoline::<1>,
                trampoline::<2>,
                trampoline::<3>,
                trampoline::<4>,
                trampoline::<5>,
                trampoline::<6>,
                trampoline::<7>,
            ];

            /// The host function that calls the image's function at `target`.
            ///
            /// # Panics
            /// If the image registers more than [`SLOTS`] distinct functions of this kind (a
            /// harness limit, reported by name rather than misrouted).
            #[must_use]
            pub fn host(target: usize) -> Host {
                assert_ne!(target, 0, "a null callback has no trampoline");
                for (slot, t) in TARGETS.iter().enumerate() {
                    match t.compare_exchange(0, target, Ordering::AcqRel, Ordering::Acquire) {
                        Ok(_) => return TRAMPOLINES[slot],
                        Err(current) if current == target => return TRAMPOLINES[slot],
                        Err(_) => {}
                    }
                }
                panic!(concat!("more than {} distinct ", stringify!($name), " callbacks"), SLOTS);
            }

            /// The image function a host pointer calls, if it is one of this family's.
            #[must_use]
            pub fn target_of(host: Host) -> Option<usize> {
                TRAMPOLINES
                    .iter()
                    .position(|t| std::ptr::fn_addr_eq(*t, host))
                    .map(|slot| TARGETS[slot].load(Ordering::Acquire))
                    .filter(|t| *t != 0)
            }

            /// Forgets every target (a new image is being loaded).
            pub fn reset() {
                for t in &TARGETS {
                    t.store(0, Ordering::Release);
                }
            }
        }
    };
}

use std::ffi::c_void;

use fwps_sys::{
    BOOLEAN as WFP_BOOLEAN, FWPM_SERVICE_STATE, FWPS_CALLOUT_NOTIFY_TYPE, FWPS_CLASSIFY_OUT0,
    FWPS_FILTER3, FWPS_INCOMING_METADATA_VALUES0, FWPS_INCOMING_VALUES0, FWPS_VSWITCH_EVENT_TYPE,
    GUID, NDIS_ENUM_FILTERS, NDIS_SWITCH_NIC_ARRAY, NDIS_SWITCH_NIC_PARAMETERS,
    NDIS_SWITCH_PARAMETERS, NDIS_SWITCH_PORT_ARRAY, NDIS_SWITCH_PORT_ID,
    NDIS_SWITCH_PORT_PARAMETERS, NDIS_SWITCH_PORT_PROPERTY_DELETE_PARAMETERS,
    NDIS_SWITCH_PORT_PROPERTY_PARAMETERS, NTSTATUS,
};
use wdk_sys::{ULONG, WDFDRIVER, WDFOBJECT, WDFQUEUE, WDFREQUEST, WDFTIMER, WDFWORKITEM};

family!(
    /// `EvtDriverUnload`.
    driver_unload, "C", (Driver: WDFDRIVER)
);
family!(
    /// `EvtCleanupCallback` and `EvtDestroyCallback`.
    object_callback, "C", (Object: WDFOBJECT)
);
family!(
    /// `EvtIoDeviceControl`.
    io_device_control, "C", (Queue: WDFQUEUE, Request: WDFREQUEST, OutputBufferLength: usize, InputBufferLength: usize, IoControlCode: ULONG)
);
family!(
    /// `EvtWorkItemFunc`.
    work_item, "C", (WorkItem: WDFWORKITEM)
);
family!(
    /// `EvtTimerFunc`.
    timer, "C", (Timer: WDFTIMER)
);
family!(
    /// `classifyFn` (`FWPS_CALLOUT_CLASSIFY_FN3`).
    classify, "system", (
        inFixedValues: *const FWPS_INCOMING_VALUES0,
        inMetaValues: *const FWPS_INCOMING_METADATA_VALUES0,
        layerData: *mut c_void,
        classifyContext: *const c_void,
        filter: *const FWPS_FILTER3,
        flowContext: u64,
        classifyOut: *mut FWPS_CLASSIFY_OUT0,
    )
);
family!(
    /// `notifyFn` (`FWPS_CALLOUT_NOTIFY_FN3`).
    notify, "system", (notifyType: FWPS_CALLOUT_NOTIFY_TYPE, filterKey: *const GUID, filter: *mut FWPS_FILTER3) -> NTSTATUS
);
family!(
    /// `flowDeleteFn`.
    flow_delete, "system", (layerId: u16, calloutId: u32, flowContext: u64)
);
family!(
    /// `FWPM_SERVICE_STATE_CHANGE_CALLBACK0`.
    bfe_change, "system", (context: *mut c_void, newState: FWPM_SERVICE_STATE)
);
family!(
    /// `vSwitchLifetimeNotifyFn`.
    vswitch_lifetime, "system", (
        notifyContext: *mut c_void,
        eventType: FWPS_VSWITCH_EVENT_TYPE,
        vSwitch: *const NDIS_SWITCH_PARAMETERS,
        vSwitchPorts: *const NDIS_SWITCH_PORT_ARRAY,
        vSwitchInterfaces: *const NDIS_SWITCH_NIC_ARRAY,
    ) -> NTSTATUS
);
family!(
    /// `vSwitchPortEventNotifyFn`.
    vswitch_port, "system", (
        notifyContext: *mut c_void,
        completionContext: *mut c_void,
        eventType: FWPS_VSWITCH_EVENT_TYPE,
        vSwitch: *const NDIS_SWITCH_PARAMETERS,
        vSwitchPort: *const NDIS_SWITCH_PORT_PARAMETERS,
    ) -> NTSTATUS
);
family!(
    /// `vSwitchInterfaceEventNotifyFn`.
    vswitch_interface, "system", (
        notifyContext: *mut c_void,
        completionContext: *mut c_void,
        eventType: FWPS_VSWITCH_EVENT_TYPE,
        vSwitch: *const NDIS_SWITCH_PARAMETERS,
        vSwitchNic: *const NDIS_SWITCH_NIC_PARAMETERS,
    ) -> NTSTATUS
);
family!(
    /// `vSwitchFilterEngineReorderNotifyRn`.
    vswitch_reorder, "system", (
        notifyContext: *mut c_void,
        completionContext: *mut c_void,
        isInRequiredPosition: WFP_BOOLEAN,
        vSwitchExtensionLwfList: *const NDIS_ENUM_FILTERS,
    ) -> NTSTATUS
);
family!(
    /// `vSwitchPolicyEventNotifyFn`.
    vswitch_policy, "system", (
        notifyContext: *mut c_void,
        completionContext: *mut c_void,
        eventType: FWPS_VSWITCH_EVENT_TYPE,
        vSwitch: *const NDIS_SWITCH_PARAMETERS,
        vSwitchPortProperty: *const NDIS_SWITCH_PORT_PROPERTY_PARAMETERS,
        vSwitchPortPropertyDelete: *const NDIS_SWITCH_PORT_PROPERTY_DELETE_PARAMETERS,
    ) -> NTSTATUS
);
family!(
    /// `vSwitchRuntimeStateSaveNotifyFn`.
    vswitch_save, "system", (
        notifyContext: *mut c_void,
        completionContext: *mut c_void,
        eventType: FWPS_VSWITCH_EVENT_TYPE,
        vSwitch: *const NDIS_SWITCH_PARAMETERS,
        portId: NDIS_SWITCH_PORT_ID,
        runtimeState: *mut *mut c_void,
        runtimeStateLength: *mut usize,
    ) -> NTSTATUS
);
family!(
    /// `vSwitchRuntimeStateRestoreNotifyFn`.
    vswitch_restore, "system", (
        notifyContext: *mut c_void,
        completionContext: *mut c_void,
        eventType: FWPS_VSWITCH_EVENT_TYPE,
        vSwitch: *const NDIS_SWITCH_PARAMETERS,
        portId: NDIS_SWITCH_PORT_ID,
        runtimeState: *mut c_void,
        runtimeStateLength: usize,
    ) -> NTSTATUS
);

/// Forgets every family's targets.
pub fn reset() {
    driver_unload::reset();
    object_callback::reset();
    io_device_control::reset();
    work_item::reset();
    timer::reset();
    classify::reset();
    notify::reset();
    flow_delete::reset();
    bfe_change::reset();
    vswitch_lifetime::reset();
    vswitch_port::reset();
    vswitch_interface::reset();
    vswitch_reorder::reset();
    vswitch_policy::reset();
    vswitch_save::reset();
    vswitch_restore::reset();
}

#[cfg(test)]
mod tests {
    use super::*;

    static SEEN: AtomicUsize = AtomicUsize::new(0);

    /// A Win64 function standing in for the image's: five arguments, the fifth on the stack.
    unsafe extern "win64" fn ioctl(
        q: WDFQUEUE,
        r: WDFREQUEST,
        out: usize,
        input: usize,
        code: ULONG,
    ) {
        SEEN.store(q as usize + r as usize + out + input + code as usize, Ordering::SeqCst);
    }

    #[test]
    fn a_trampoline_passes_every_argument_to_the_win64_function_and_slots_are_shared() {
        io_device_control::reset();
        let target = ioctl as *const () as usize;
        let host = io_device_control::host(target);
        assert!(std::ptr::fn_addr_eq(host, io_device_control::host(target)));
        assert_eq!(io_device_control::target_of(host), Some(target));
        // SAFETY: the trampoline calls `ioctl` with these plain values.
        unsafe { host(1 as WDFQUEUE, 20 as WDFREQUEST, 300, 4000, 50_000) };
        assert_eq!(SEEN.load(Ordering::SeqCst), 54_321);
        io_device_control::reset();
        assert_eq!(io_device_control::target_of(host), None);
    }
}
