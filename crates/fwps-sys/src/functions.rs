//! The kernel exports of `fwpkclnt.sys` that vsflow calls.
//!
//! All are `NTAPI` (`extern "system"`). IRQL: registration, management and subscription at
//! `PASSIVE_LEVEL`; `FwpsvSwitchNotifyComplete0` and `FwpmBfeStateGet0` at <= `DISPATCH_LEVEL`.

use core::ffi::c_void;

use crate::fwpm::{
    FWPM_CALLOUT0, FWPM_FILTER0, FWPM_PROVIDER0, FWPM_SERVICE_STATE,
    FWPM_SERVICE_STATE_CHANGE_CALLBACK0, FWPM_SESSION0, FWPM_SUBLAYER0,
};
use crate::fwps::FWPS_CALLOUT3;
use crate::vswitch::FWPS_VSWITCH_EVENT_DISPATCH_TABLE0;
use crate::{GUID, HANDLE, NTSTATUS, WCHAR};

#[cfg_attr(
    all(windows, feature = "link-kernel"),
    link(name = "fwpkclnt.sys", kind = "raw-dylib", modifiers = "+verbatim")
)]
unsafe extern "system" {
    /// Registers a callout with the filter engine.
    pub fn FwpsCalloutRegister3(
        deviceObject: *mut c_void,
        callout: *const FWPS_CALLOUT3,
        calloutId: *mut u32,
    ) -> NTSTATUS;
    /// Unregisters a callout by run-time id; `STATUS_DEVICE_BUSY` while flow contexts remain.
    pub fn FwpsCalloutUnregisterById0(calloutId: u32) -> NTSTATUS;
    /// Unregisters a callout by key.
    pub fn FwpsCalloutUnregisterByKey0(calloutKey: *const GUID) -> NTSTATUS;

    /// Opens a session to the filter engine.
    pub fn FwpmEngineOpen0(
        serverName: *const WCHAR,
        authnService: u32,
        authIdentity: *mut c_void,
        session: *const FWPM_SESSION0,
        engineHandle: *mut HANDLE,
    ) -> NTSTATUS;
    /// Closes a session (dynamic objects of the session are deleted).
    pub fn FwpmEngineClose0(engineHandle: HANDLE) -> NTSTATUS;
    /// Begins an explicit transaction.
    pub fn FwpmTransactionBegin0(engineHandle: HANDLE, flags: u32) -> NTSTATUS;
    /// Commits the current transaction.
    pub fn FwpmTransactionCommit0(engineHandle: HANDLE) -> NTSTATUS;
    /// Aborts the current transaction.
    pub fn FwpmTransactionAbort0(engineHandle: HANDLE) -> NTSTATUS;
    /// Adds a provider.
    pub fn FwpmProviderAdd0(
        engineHandle: HANDLE,
        provider: *const FWPM_PROVIDER0,
        sd: *mut c_void,
    ) -> NTSTATUS;
    /// Deletes a provider.
    pub fn FwpmProviderDeleteByKey0(engineHandle: HANDLE, key: *const GUID) -> NTSTATUS;
    /// Adds a sublayer.
    pub fn FwpmSubLayerAdd0(
        engineHandle: HANDLE,
        subLayer: *const FWPM_SUBLAYER0,
        sd: *mut c_void,
    ) -> NTSTATUS;
    /// Deletes a sublayer.
    pub fn FwpmSubLayerDeleteByKey0(engineHandle: HANDLE, key: *const GUID) -> NTSTATUS;
    /// Adds a callout object.
    pub fn FwpmCalloutAdd0(
        engineHandle: HANDLE,
        callout: *const FWPM_CALLOUT0,
        sd: *mut c_void,
        id: *mut u32,
    ) -> NTSTATUS;
    /// Deletes a callout object.
    pub fn FwpmCalloutDeleteByKey0(engineHandle: HANDLE, key: *const GUID) -> NTSTATUS;
    /// Adds a filter.
    pub fn FwpmFilterAdd0(
        engineHandle: HANDLE,
        filter: *const FWPM_FILTER0,
        sd: *mut c_void,
        id: *mut u64,
    ) -> NTSTATUS;
    /// Deletes a filter.
    pub fn FwpmFilterDeleteByKey0(engineHandle: HANDLE, key: *const GUID) -> NTSTATUS;

    /// The base filtering engine's state.
    pub fn FwpmBfeStateGet0() -> FWPM_SERVICE_STATE;
    /// Subscribes to BFE state changes.
    pub fn FwpmBfeStateSubscribeChanges0(
        deviceObject: *mut c_void,
        callback: FWPM_SERVICE_STATE_CHANGE_CALLBACK0,
        context: *mut c_void,
        changeHandle: *mut HANDLE,
    ) -> NTSTATUS;
    /// Cancels a BFE state subscription.
    pub fn FwpmBfeStateUnsubscribeChanges0(changeHandle: HANDLE) -> NTSTATUS;

    /// Subscribes to vSwitch events; `providerGuid` routes runtime-state restores.
    pub fn FwpsvSwitchEventsSubscribe0(
        providerGuid: *const GUID,
        notifyContext: *mut c_void,
        flags: u32,
        reserved: *mut c_void,
        eventDispatchTable: *const FWPS_VSWITCH_EVENT_DISPATCH_TABLE0,
        subscriptionId: *mut u32,
    ) -> NTSTATUS;
    /// Cancels a vSwitch event subscription.
    pub fn FwpsvSwitchEventsUnsubscribe0(subscriptionId: u32, flags: u32, reserved: *mut c_void);
    /// Completes a notification for which a callback returned `STATUS_PENDING`.
    pub fn FwpsvSwitchNotifyComplete0(
        completionContext: *mut c_void,
        status: NTSTATUS,
        flags: u32,
        reserved: *mut c_void,
    );
}

#[cfg_attr(
    all(windows, feature = "link-kernel"),
    link(name = "ndis.sys", kind = "raw-dylib", modifiers = "+verbatim")
)]
unsafe extern "system" {
    /// Returns a pointer to `BytesNeeded` contiguous bytes at the start of a `NET_BUFFER`'s
    /// data: inside the buffer if contiguous, else copied into `Storage`; null if the data is
    /// shorter (`ndis.sys`).
    pub fn NdisGetDataBuffer(
        NetBuffer: *mut crate::ndis::NET_BUFFER,
        BytesNeeded: u32,
        Storage: *mut c_void,
        AlignMultiple: u32,
        AlignOffset: u32,
    ) -> *mut c_void;
}
