//! `fwpkclnt.sys` and `ndis.sys`: the WFP and NDIS functions vsflow.sys imports, as Win64
//! functions over vsflow-sim's (the WFP engine and vSwitch double), with the callbacks the
//! driver registers (`classifyFn`, `notifyFn`, `flowDeleteFn`, the BFE state callback, the seven
//! vSwitch callbacks) swapped for trampolines ([`crate::trampoline`]).

#![allow(
    clippy::must_use_candidate,
    reason = "shims are called by the image, which ignores attributes"
)]
#![allow(non_snake_case, reason = "the WFP names")]
#![allow(clippy::missing_safety_doc, reason = "each function's contract is the WDK's")]

use std::ffi::c_void;

use fwps_sys::{
    FWPM_CALLOUT0, FWPM_FILTER0, FWPM_PROVIDER0, FWPM_SERVICE_STATE,
    FWPM_SERVICE_STATE_CHANGE_CALLBACK0, FWPM_SESSION0, FWPM_SUBLAYER0, FWPS_CALLOUT3,
    FWPS_VSWITCH_EVENT_DISPATCH_TABLE0, GUID, HANDLE, NET_BUFFER, NTSTATUS, WCHAR,
};
use vsflow_sim::wfp::exports as w;

use crate::trampoline as t;

macro_rules! pass {
    ($($name:ident($($arg:ident: $ty:ty),*) $(-> $ret:ty)?;)*) => {$(
        #[doc = concat!("`", stringify!($name), "`: vsflow-sim's.")]
        pub unsafe extern "win64" fn $name($($arg: $ty),*) $(-> $ret)? {
            // SAFETY: the image's arguments, passed on unchanged under the same contract.
            unsafe { w::$name($($arg),*) }
        }
    )*};
}

pass! {
    FwpsCalloutUnregisterById0(calloutId: u32) -> NTSTATUS;
    FwpsCalloutUnregisterByKey0(calloutKey: *const GUID) -> NTSTATUS;
    FwpmEngineOpen0(serverName: *const WCHAR, authnService: u32, authIdentity: *mut c_void, session: *const FWPM_SESSION0, engineHandle: *mut HANDLE) -> NTSTATUS;
    FwpmEngineClose0(engineHandle: HANDLE) -> NTSTATUS;
    FwpmTransactionBegin0(engineHandle: HANDLE, flags: u32) -> NTSTATUS;
    FwpmTransactionCommit0(engineHandle: HANDLE) -> NTSTATUS;
    FwpmTransactionAbort0(engineHandle: HANDLE) -> NTSTATUS;
    FwpmProviderAdd0(engineHandle: HANDLE, provider: *const FWPM_PROVIDER0, sd: *mut c_void) -> NTSTATUS;
    FwpmProviderDeleteByKey0(engineHandle: HANDLE, key: *const GUID) -> NTSTATUS;
    FwpmSubLayerAdd0(engineHandle: HANDLE, subLayer: *const FWPM_SUBLAYER0, sd: *mut c_void) -> NTSTATUS;
    FwpmSubLayerDeleteByKey0(engineHandle: HANDLE, key: *const GUID) -> NTSTATUS;
    FwpmCalloutAdd0(engineHandle: HANDLE, callout: *const FWPM_CALLOUT0, sd: *mut c_void, id: *mut u32) -> NTSTATUS;
    FwpmCalloutDeleteByKey0(engineHandle: HANDLE, key: *const GUID) -> NTSTATUS;
    FwpmFilterAdd0(engineHandle: HANDLE, filter: *const FWPM_FILTER0, sd: *mut c_void, id: *mut u64) -> NTSTATUS;
    FwpmFilterDeleteByKey0(engineHandle: HANDLE, key: *const GUID) -> NTSTATUS;
    FwpmBfeStateGet0() -> FWPM_SERVICE_STATE;
    FwpmBfeStateUnsubscribeChanges0(changeHandle: HANDLE) -> NTSTATUS;
    FwpsvSwitchEventsUnsubscribe0(subscriptionId: u32, flags: u32, reserved: *mut c_void);
    FwpsvSwitchNotifyComplete0(completionContext: *mut c_void, status: NTSTATUS, flags: u32, reserved: *mut c_void);
    NdisGetDataBuffer(NetBuffer: *mut NET_BUFFER, BytesNeeded: u32, Storage: *mut c_void, AlignMultiple: u32, AlignOffset: u32) -> *mut c_void;
}

/// `FwpsCalloutRegister3`: the callout with its three functions on trampolines.
pub unsafe extern "win64" fn FwpsCalloutRegister3(
    deviceObject: *mut c_void,
    callout: *const FWPS_CALLOUT3,
    calloutId: *mut u32,
) -> NTSTATUS {
    // SAFETY: the image's callout (or null).
    let mut copy = unsafe { callout.as_ref() }.copied();
    if let Some(c) = copy.as_mut() {
        c.classifyFn = c.classifyFn.map(|f| t::classify::host(f as usize));
        c.notifyFn = c.notifyFn.map(|f| t::notify::host(f as usize));
        c.flowDeleteFn = c.flowDeleteFn.map(|f| t::flow_delete::host(f as usize));
    }
    let c = copy.as_ref().map_or(callout, |c| &raw const *c);
    // SAFETY: the image's arguments with the copy above.
    unsafe { w::FwpsCalloutRegister3(deviceObject, c, calloutId) }
}

/// `FwpmBfeStateSubscribeChanges0`: the callback on a trampoline.
pub unsafe extern "win64" fn FwpmBfeStateSubscribeChanges0(
    deviceObject: *mut c_void,
    callback: FWPM_SERVICE_STATE_CHANGE_CALLBACK0,
    context: *mut c_void,
    changeHandle: *mut HANDLE,
) -> NTSTATUS {
    let callback = callback.map(|f| t::bfe_change::host(f as usize));
    // SAFETY: the image's arguments with the trampoline.
    unsafe { w::FwpmBfeStateSubscribeChanges0(deviceObject, callback, context, changeHandle) }
}

/// `FwpsvSwitchEventsSubscribe0`: each of the seven callbacks on a trampoline.
pub unsafe extern "win64" fn FwpsvSwitchEventsSubscribe0(
    providerGuid: *const GUID,
    notifyContext: *mut c_void,
    flags: u32,
    reserved: *mut c_void,
    eventDispatchTable: *const FWPS_VSWITCH_EVENT_DISPATCH_TABLE0,
    subscriptionId: *mut u32,
) -> NTSTATUS {
    // SAFETY: the image's table (or null).
    let mut copy = unsafe { eventDispatchTable.as_ref() }.copied();
    if let Some(d) = copy.as_mut() {
        d.vSwitchLifetimeNotifyFn =
            d.vSwitchLifetimeNotifyFn.map(|f| t::vswitch_lifetime::host(f as usize));
        d.vSwitchPortEventNotifyFn =
            d.vSwitchPortEventNotifyFn.map(|f| t::vswitch_port::host(f as usize));
        d.vSwitchInterfaceEventNotifyFn =
            d.vSwitchInterfaceEventNotifyFn.map(|f| t::vswitch_interface::host(f as usize));
        d.vSwitchFilterEngineReorderNotifyRn =
            d.vSwitchFilterEngineReorderNotifyRn.map(|f| t::vswitch_reorder::host(f as usize));
        d.vSwitchPolicyEventNotifyFn =
            d.vSwitchPolicyEventNotifyFn.map(|f| t::vswitch_policy::host(f as usize));
        d.vSwitchRuntimeStateSaveNotifyFn =
            d.vSwitchRuntimeStateSaveNotifyFn.map(|f| t::vswitch_save::host(f as usize));
        d.vSwitchRuntimeStateRestoreNotifyFn =
            d.vSwitchRuntimeStateRestoreNotifyFn.map(|f| t::vswitch_restore::host(f as usize));
    }
    let table = copy.as_ref().map_or(eventDispatchTable, |d| &raw const *d);
    // SAFETY: the image's arguments with the copy above.
    unsafe {
        w::FwpsvSwitchEventsSubscribe0(
            providerGuid,
            notifyContext,
            flags,
            reserved,
            table,
            subscriptionId,
        )
    }
}
