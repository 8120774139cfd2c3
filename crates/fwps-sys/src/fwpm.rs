//! Management types (`fwpmtypes.h`): sessions, providers, sublayers, callouts, filters.

use core::ffi::c_void;

use crate::fwp::{
    FWP_ACTION_TYPE, FWP_BYTE_BLOB, FWP_CONDITION_VALUE0, FWP_MATCH_TYPE, FWP_VALUE0,
    FWPM_DISPLAY_DATA0,
};
use crate::{BOOL, GUID, WCHAR, assert_layout};

/// `FWPM_SESSION0`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct FWPM_SESSION0 {
    /// `sessionKey`.
    pub sessionKey: GUID,
    /// `displayData`.
    pub displayData: FWPM_DISPLAY_DATA0,
    /// `flags` (`FWPM_SESSION_FLAG_*`).
    pub flags: u32,
    /// `txnWaitTimeoutInMSec`.
    pub txnWaitTimeoutInMSec: u32,
    /// `processId`.
    pub processId: u32,
    /// `sid`.
    pub sid: *mut c_void,
    /// `username`.
    pub username: *mut WCHAR,
    /// `kernelMode`.
    pub kernelMode: BOOL,
}

/// `FWPM_SESSION_FLAG_DYNAMIC`: objects added in the session are deleted when it closes.
pub const FWPM_SESSION_FLAG_DYNAMIC: u32 = 0x0000_0001;

/// `FWPM_PROVIDER0`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct FWPM_PROVIDER0 {
    /// `providerKey`.
    pub providerKey: GUID,
    /// `displayData`.
    pub displayData: FWPM_DISPLAY_DATA0,
    /// `flags`.
    pub flags: u32,
    /// `providerData`.
    pub providerData: FWP_BYTE_BLOB,
    /// `serviceName`.
    pub serviceName: *mut WCHAR,
}

/// `FWPM_PROVIDER_FLAG_PERSISTENT`.
pub const FWPM_PROVIDER_FLAG_PERSISTENT: u32 = 0x0000_0001;

/// `FWPM_SUBLAYER0`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct FWPM_SUBLAYER0 {
    /// `subLayerKey`.
    pub subLayerKey: GUID,
    /// `displayData`.
    pub displayData: FWPM_DISPLAY_DATA0,
    /// `flags`.
    pub flags: u32,
    /// `providerKey`.
    pub providerKey: *mut GUID,
    /// `providerData`.
    pub providerData: FWP_BYTE_BLOB,
    /// `weight`.
    pub weight: u16,
}

/// `FWPM_CALLOUT0`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct FWPM_CALLOUT0 {
    /// `calloutKey`.
    pub calloutKey: GUID,
    /// `displayData`.
    pub displayData: FWPM_DISPLAY_DATA0,
    /// `flags`.
    pub flags: u32,
    /// `providerKey`.
    pub providerKey: *mut GUID,
    /// `providerData`.
    pub providerData: FWP_BYTE_BLOB,
    /// `applicableLayer`.
    pub applicableLayer: GUID,
    /// `calloutId`.
    pub calloutId: u32,
}

/// The union of `FWPM_ACTION0`.
#[repr(C)]
#[derive(Clone, Copy)]
pub union FWPM_ACTION0_u {
    /// `filterType`.
    pub filterType: GUID,
    /// `calloutKey`.
    pub calloutKey: GUID,
}

/// `FWPM_ACTION0`.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct FWPM_ACTION0 {
    /// `type`.
    pub r#type: FWP_ACTION_TYPE,
    /// The anonymous union.
    pub u: FWPM_ACTION0_u,
}

/// `FWPM_FILTER_CONDITION0`.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct FWPM_FILTER_CONDITION0 {
    /// `fieldKey`.
    pub fieldKey: GUID,
    /// `matchType`.
    pub matchType: FWP_MATCH_TYPE,
    /// `conditionValue`.
    pub conditionValue: FWP_CONDITION_VALUE0,
}

/// The context union of `FWPM_FILTER0`.
#[repr(C)]
#[derive(Clone, Copy)]
pub union FWPM_FILTER0_ctx {
    /// `rawContext`: handed to the callout as `FWPS_FILTER3::context`.
    pub rawContext: u64,
    /// `providerContextKey`.
    pub providerContextKey: GUID,
}

/// `FWPM_FILTER0`.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct FWPM_FILTER0 {
    /// `filterKey`.
    pub filterKey: GUID,
    /// `displayData`.
    pub displayData: FWPM_DISPLAY_DATA0,
    /// `flags` (`FWPM_FILTER_FLAG_*`).
    pub flags: u32,
    /// `providerKey`.
    pub providerKey: *mut GUID,
    /// `providerData`.
    pub providerData: FWP_BYTE_BLOB,
    /// `layerKey`.
    pub layerKey: GUID,
    /// `subLayerKey`.
    pub subLayerKey: GUID,
    /// `weight`.
    pub weight: FWP_VALUE0,
    /// `numFilterConditions`.
    pub numFilterConditions: u32,
    /// `filterCondition`.
    pub filterCondition: *mut FWPM_FILTER_CONDITION0,
    /// `action`.
    pub action: FWPM_ACTION0,
    /// The context union.
    pub ctx: FWPM_FILTER0_ctx,
    /// `reserved`.
    pub reserved: *mut GUID,
    /// `filterId`.
    pub filterId: u64,
    /// `effectiveWeight`.
    pub effectiveWeight: FWP_VALUE0,
}

/// `FWPM_FILTER_FLAG_CLEAR_ACTION_RIGHT`.
pub const FWPM_FILTER_FLAG_CLEAR_ACTION_RIGHT: u32 = 0x0000_0008;
/// `FWPM_FILTER_FLAG_PERMIT_IF_CALLOUT_UNREGISTERED`.
pub const FWPM_FILTER_FLAG_PERMIT_IF_CALLOUT_UNREGISTERED: u32 = 0x0000_0010;

/// `FWPM_SERVICE_STATE`.
pub type FWPM_SERVICE_STATE = u32;
/// `FWPM_SERVICE_STOPPED`.
pub const FWPM_SERVICE_STOPPED: FWPM_SERVICE_STATE = 0;
/// `FWPM_SERVICE_START_PENDING`.
pub const FWPM_SERVICE_START_PENDING: FWPM_SERVICE_STATE = 1;
/// `FWPM_SERVICE_STOP_PENDING`.
pub const FWPM_SERVICE_STOP_PENDING: FWPM_SERVICE_STATE = 2;
/// `FWPM_SERVICE_RUNNING`.
pub const FWPM_SERVICE_RUNNING: FWPM_SERVICE_STATE = 3;

/// `FWPM_SERVICE_STATE_CHANGE_CALLBACK0`.
pub type FWPM_SERVICE_STATE_CHANGE_CALLBACK0 =
    Option<unsafe extern "system" fn(context: *mut c_void, newState: FWPM_SERVICE_STATE)>;

/// `RPC_C_AUTHN_DEFAULT`, the `authnService` for kernel engine sessions.
pub const RPC_C_AUTHN_DEFAULT: u32 = 0xFFFF_FFFF;

assert_layout!(
    FWPM_SESSION0,
    size = 72,
    align = 8,
    displayData = 16,
    flags = 32,
    processId = 40,
    sid = 48,
    kernelMode = 64
);
assert_layout!(
    FWPM_PROVIDER0,
    size = 64,
    align = 8,
    flags = 32,
    providerData = 40,
    serviceName = 56
);
assert_layout!(
    FWPM_SUBLAYER0,
    size = 72,
    align = 8,
    providerKey = 40,
    providerData = 48,
    weight = 64
);
assert_layout!(
    FWPM_CALLOUT0,
    size = 88,
    align = 8,
    providerKey = 40,
    applicableLayer = 64,
    calloutId = 80
);
assert_layout!(FWPM_ACTION0, size = 20, align = 4, u = 4);
assert_layout!(FWPM_FILTER_CONDITION0, size = 40, align = 8, matchType = 16, conditionValue = 24);
assert_layout!(
    FWPM_FILTER0,
    size = 200,
    align = 8,
    providerKey = 40,
    providerData = 48,
    layerKey = 64,
    subLayerKey = 80,
    weight = 96,
    numFilterConditions = 112,
    filterCondition = 120,
    action = 128,
    ctx = 152,
    reserved = 168,
    filterId = 176,
    effectiveWeight = 184,
);
