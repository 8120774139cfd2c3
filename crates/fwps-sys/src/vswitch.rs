//! The vSwitch event API of `fwpsk.h`: event types, the seven callback types and the dispatch
//! table handed to `FwpsvSwitchEventsSubscribe0`.

use core::ffi::c_void;

use crate::ndis::{
    NDIS_ENUM_FILTERS, NDIS_SWITCH_NIC_ARRAY, NDIS_SWITCH_NIC_PARAMETERS, NDIS_SWITCH_PARAMETERS,
    NDIS_SWITCH_PORT_ARRAY, NDIS_SWITCH_PORT_ID, NDIS_SWITCH_PORT_PARAMETERS,
    NDIS_SWITCH_PORT_PROPERTY_DELETE_PARAMETERS, NDIS_SWITCH_PORT_PROPERTY_PARAMETERS,
};
use crate::{BOOLEAN, NTSTATUS, assert_layout};

/// `FWPS_VSWITCH_EVENT_TYPE`, bound as `u32` constants.
///
/// An OS value outside the enum must not be undefined behaviour. Values follow the header
/// order (an older doc page omits `INTERFACE_CONNECT` and shifts the rest).
pub type FWPS_VSWITCH_EVENT_TYPE = u32;
/// `FWPS_VSWITCH_EVENT_VSWITCH_NONE`.
pub const FWPS_VSWITCH_EVENT_VSWITCH_NONE: FWPS_VSWITCH_EVENT_TYPE = 0;
/// `FWPS_VSWITCH_EVENT_VSWITCH_CREATE`.
pub const FWPS_VSWITCH_EVENT_VSWITCH_CREATE: FWPS_VSWITCH_EVENT_TYPE = 1;
/// `FWPS_VSWITCH_EVENT_VSWITCH_DELETE`.
pub const FWPS_VSWITCH_EVENT_VSWITCH_DELETE: FWPS_VSWITCH_EVENT_TYPE = 2;
/// `FWPS_VSWITCH_EVENT_PORT_CREATE`.
pub const FWPS_VSWITCH_EVENT_PORT_CREATE: FWPS_VSWITCH_EVENT_TYPE = 3;
/// `FWPS_VSWITCH_EVENT_PORT_DELETE`.
pub const FWPS_VSWITCH_EVENT_PORT_DELETE: FWPS_VSWITCH_EVENT_TYPE = 4;
/// `FWPS_VSWITCH_EVENT_INTERFACE_CREATE`.
pub const FWPS_VSWITCH_EVENT_INTERFACE_CREATE: FWPS_VSWITCH_EVENT_TYPE = 5;
/// `FWPS_VSWITCH_EVENT_INTERFACE_DELETE`.
pub const FWPS_VSWITCH_EVENT_INTERFACE_DELETE: FWPS_VSWITCH_EVENT_TYPE = 6;
/// `FWPS_VSWITCH_EVENT_INTERFACE_CONNECT`.
pub const FWPS_VSWITCH_EVENT_INTERFACE_CONNECT: FWPS_VSWITCH_EVENT_TYPE = 7;
/// `FWPS_VSWITCH_EVENT_INTERFACE_DISCONNECT`.
pub const FWPS_VSWITCH_EVENT_INTERFACE_DISCONNECT: FWPS_VSWITCH_EVENT_TYPE = 8;
/// `FWPS_VSWITCH_EVENT_POLICY_ADD`.
pub const FWPS_VSWITCH_EVENT_POLICY_ADD: FWPS_VSWITCH_EVENT_TYPE = 9;
/// `FWPS_VSWITCH_EVENT_POLICY_UPDATE`.
pub const FWPS_VSWITCH_EVENT_POLICY_UPDATE: FWPS_VSWITCH_EVENT_TYPE = 10;
/// `FWPS_VSWITCH_EVENT_POLICY_DELETE`.
pub const FWPS_VSWITCH_EVENT_POLICY_DELETE: FWPS_VSWITCH_EVENT_TYPE = 11;
/// `FWPS_VSWITCH_EVENT_RUNTIME_STATE_SAVE`.
pub const FWPS_VSWITCH_EVENT_RUNTIME_STATE_SAVE: FWPS_VSWITCH_EVENT_TYPE = 12;
/// `FWPS_VSWITCH_EVENT_RUNTIME_STATE_RESTORE`.
pub const FWPS_VSWITCH_EVENT_RUNTIME_STATE_RESTORE: FWPS_VSWITCH_EVENT_TYPE = 13;

/// `FWPS_VSWITCH_LIFETIME_EVENT_CALLBACK0` (no completion context: never pends).
pub type FWPS_VSWITCH_LIFETIME_EVENT_CALLBACK0 = Option<
    unsafe extern "system" fn(
        notifyContext: *mut c_void,
        eventType: FWPS_VSWITCH_EVENT_TYPE,
        vSwitch: *const NDIS_SWITCH_PARAMETERS,
        vSwitchPorts: *const NDIS_SWITCH_PORT_ARRAY,
        vSwitchInterfaces: *const NDIS_SWITCH_NIC_ARRAY,
    ) -> NTSTATUS,
>;

/// `FWPS_VSWITCH_PORT_EVENT_CALLBACK0`.
pub type FWPS_VSWITCH_PORT_EVENT_CALLBACK0 = Option<
    unsafe extern "system" fn(
        notifyContext: *mut c_void,
        completionContext: *mut c_void,
        eventType: FWPS_VSWITCH_EVENT_TYPE,
        vSwitch: *const NDIS_SWITCH_PARAMETERS,
        vSwitchPort: *const NDIS_SWITCH_PORT_PARAMETERS,
    ) -> NTSTATUS,
>;

/// `FWPS_VSWITCH_INTERFACE_EVENT_CALLBACK0`.
pub type FWPS_VSWITCH_INTERFACE_EVENT_CALLBACK0 = Option<
    unsafe extern "system" fn(
        notifyContext: *mut c_void,
        completionContext: *mut c_void,
        eventType: FWPS_VSWITCH_EVENT_TYPE,
        vSwitch: *const NDIS_SWITCH_PARAMETERS,
        vSwitchNic: *const NDIS_SWITCH_NIC_PARAMETERS,
    ) -> NTSTATUS,
>;

/// `FWPS_VSWITCH_FILTER_ENGINE_REORDER_CALLBACK0`.
pub type FWPS_VSWITCH_FILTER_ENGINE_REORDER_CALLBACK0 = Option<
    unsafe extern "system" fn(
        notifyContext: *mut c_void,
        completionContext: *mut c_void,
        isInRequiredPosition: BOOLEAN,
        vSwitchExtensionLwfList: *const NDIS_ENUM_FILTERS,
    ) -> NTSTATUS,
>;

/// `FWPS_VSWITCH_POLICY_EVENT_CALLBACK0`.
pub type FWPS_VSWITCH_POLICY_EVENT_CALLBACK0 = Option<
    unsafe extern "system" fn(
        notifyContext: *mut c_void,
        completionContext: *mut c_void,
        eventType: FWPS_VSWITCH_EVENT_TYPE,
        vSwitch: *const NDIS_SWITCH_PARAMETERS,
        vSwitchPortProperty: *const NDIS_SWITCH_PORT_PROPERTY_PARAMETERS,
        vSwitchPortPropertyDelete: *const NDIS_SWITCH_PORT_PROPERTY_DELETE_PARAMETERS,
    ) -> NTSTATUS,
>;

/// `FWPS_VSWITCH_RUNTIME_STATE_SAVE_CALLBACK0`.
pub type FWPS_VSWITCH_RUNTIME_STATE_SAVE_CALLBACK0 = Option<
    unsafe extern "system" fn(
        notifyContext: *mut c_void,
        completionContext: *mut c_void,
        eventType: FWPS_VSWITCH_EVENT_TYPE,
        vSwitch: *const NDIS_SWITCH_PARAMETERS,
        portId: NDIS_SWITCH_PORT_ID,
        runtimeState: *mut *mut c_void,
        runtimeStateLength: *mut usize,
    ) -> NTSTATUS,
>;

/// `FWPS_VSWITCH_RUNTIME_STATE_RESTORE_CALLBACK0`.
pub type FWPS_VSWITCH_RUNTIME_STATE_RESTORE_CALLBACK0 = Option<
    unsafe extern "system" fn(
        notifyContext: *mut c_void,
        completionContext: *mut c_void,
        eventType: FWPS_VSWITCH_EVENT_TYPE,
        vSwitch: *const NDIS_SWITCH_PARAMETERS,
        portId: NDIS_SWITCH_PORT_ID,
        runtimeState: *mut c_void,
        runtimeStateLength: usize,
    ) -> NTSTATUS,
>;

/// `FWPS_VSWITCH_EVENT_DISPATCH_TABLE0`: seven nullable pointers, no size or version field.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct FWPS_VSWITCH_EVENT_DISPATCH_TABLE0 {
    /// `vSwitchLifetimeNotifyFn`.
    pub vSwitchLifetimeNotifyFn: FWPS_VSWITCH_LIFETIME_EVENT_CALLBACK0,
    /// `vSwitchPortEventNotifyFn`.
    pub vSwitchPortEventNotifyFn: FWPS_VSWITCH_PORT_EVENT_CALLBACK0,
    /// `vSwitchInterfaceEventNotifyFn`.
    pub vSwitchInterfaceEventNotifyFn: FWPS_VSWITCH_INTERFACE_EVENT_CALLBACK0,
    /// `vSwitchFilterEngineReorderNotifyRn` (sic).
    pub vSwitchFilterEngineReorderNotifyRn: FWPS_VSWITCH_FILTER_ENGINE_REORDER_CALLBACK0,
    /// `vSwitchPolicyEventNotifyFn`.
    pub vSwitchPolicyEventNotifyFn: FWPS_VSWITCH_POLICY_EVENT_CALLBACK0,
    /// `vSwitchRuntimeStateSaveNotifyFn`.
    pub vSwitchRuntimeStateSaveNotifyFn: FWPS_VSWITCH_RUNTIME_STATE_SAVE_CALLBACK0,
    /// `vSwitchRuntimeStateRestoreNotifyFn`.
    pub vSwitchRuntimeStateRestoreNotifyFn: FWPS_VSWITCH_RUNTIME_STATE_RESTORE_CALLBACK0,
}

assert_layout!(
    FWPS_VSWITCH_EVENT_DISPATCH_TABLE0,
    size = 56,
    align = 8,
    vSwitchPortEventNotifyFn = 8,
    vSwitchFilterEngineReorderNotifyRn = 24,
    vSwitchRuntimeStateSaveNotifyFn = 40,
    vSwitchRuntimeStateRestoreNotifyFn = 48,
);
