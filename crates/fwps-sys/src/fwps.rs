//! Callout types (`fwpsk.h`, `fwpstypes.h`).

use core::ffi::c_void;

use crate::fwp::{
    FWP_ACTION_TYPE, FWP_BYTE_BLOB, FWP_CONDITION_VALUE0, FWP_MATCH_TYPE, FWP_VALUE0,
};
use crate::{GUID, HANDLE, NTSTATUS, assert_layout};

/// `FWPS_INCOMING_VALUE0`.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct FWPS_INCOMING_VALUE0 {
    /// `value`.
    pub value: FWP_VALUE0,
}

/// `FWPS_INCOMING_VALUES0`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct FWPS_INCOMING_VALUES0 {
    /// `layerId`: the run-time layer id (see [`crate::layers`]).
    pub layerId: u16,
    /// `valueCount`.
    pub valueCount: u32,
    /// `incomingValue`: `valueCount` entries, indexed by the layer's `FWPS_FIELD_*` values.
    pub incomingValue: *mut FWPS_INCOMING_VALUE0,
}

/// `FWPS_DISCARD_METADATA0`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct FWPS_DISCARD_METADATA0 {
    /// `discardModule`.
    pub discardModule: u32,
    /// `discardReason`.
    pub discardReason: u32,
    /// `filterId`.
    pub filterId: u64,
}

/// `FWPS_INBOUND_FRAGMENT_METADATA0`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct FWPS_INBOUND_FRAGMENT_METADATA0 {
    /// `fragmentIdentification`.
    pub fragmentIdentification: u32,
    /// `fragmentOffset`.
    pub fragmentOffset: u16,
    /// `fragmentLength`.
    pub fragmentLength: u32,
}

/// `IP_ADDRESS_PREFIX`: `SOCKADDR_INET` (28 bytes, 4-aligned) and a prefix length.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct IP_ADDRESS_PREFIX {
    /// `Prefix` (opaque here).
    pub Prefix: [u32; 7],
    /// `PrefixLength`.
    pub PrefixLength: u8,
}

/// `FWPS_INCOMING_METADATA_VALUES0` (the Windows 8+ layout; vSwitch fields included).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct FWPS_INCOMING_METADATA_VALUES0 {
    /// `currentMetadataValues`.
    pub currentMetadataValues: u32,
    /// `flags`.
    pub flags: u32,
    /// `reserved`.
    pub reserved: u64,
    /// `discardMetadata`.
    pub discardMetadata: FWPS_DISCARD_METADATA0,
    /// `flowHandle`.
    pub flowHandle: u64,
    /// `ipHeaderSize`.
    pub ipHeaderSize: u32,
    /// `transportHeaderSize`.
    pub transportHeaderSize: u32,
    /// `processPath`.
    pub processPath: *mut FWP_BYTE_BLOB,
    /// `token`.
    pub token: u64,
    /// `processId`.
    pub processId: u64,
    /// `sourceInterfaceIndex`.
    pub sourceInterfaceIndex: u32,
    /// `destinationInterfaceIndex`.
    pub destinationInterfaceIndex: u32,
    /// `compartmentId`.
    pub compartmentId: u32,
    /// `fragmentMetadata`.
    pub fragmentMetadata: FWPS_INBOUND_FRAGMENT_METADATA0,
    /// `pathMtu`.
    pub pathMtu: u32,
    /// `completionHandle`.
    pub completionHandle: HANDLE,
    /// `transportEndpointHandle`.
    pub transportEndpointHandle: u64,
    /// `remoteScopeId` (`SCOPE_ID`, 4 bytes).
    pub remoteScopeId: u32,
    /// `controlData`.
    pub controlData: *mut c_void,
    /// `controlDataLength`.
    pub controlDataLength: u32,
    /// `packetDirection`.
    pub packetDirection: u32,
    /// `headerIncludeHeader`.
    pub headerIncludeHeader: *mut c_void,
    /// `headerIncludeHeaderLength`.
    pub headerIncludeHeaderLength: u32,
    /// `destinationPrefix`.
    pub destinationPrefix: IP_ADDRESS_PREFIX,
    /// `frameLength`.
    pub frameLength: u16,
    /// `parentEndpointHandle`.
    pub parentEndpointHandle: u64,
    /// `icmpIdAndSequence`.
    pub icmpIdAndSequence: u32,
    /// `localRedirectTargetPID`.
    pub localRedirectTargetPID: u32,
    /// `originalDestination`.
    pub originalDestination: *mut c_void,
    /// `redirectRecords`.
    pub redirectRecords: HANDLE,
    /// `currentL2MetadataValues`: which of the L2 fields below are set
    /// (`FWPS_L2_METADATA_FIELD_*`).
    pub currentL2MetadataValues: u32,
    /// `l2Flags`.
    pub l2Flags: u32,
    /// `ethernetMacHeaderSize`.
    pub ethernetMacHeaderSize: u32,
    /// `wiFiOperationMode`.
    pub wiFiOperationMode: u32,
    /// `vSwitchSourcePortId`.
    pub vSwitchSourcePortId: u32,
    /// `vSwitchSourceNicIndex`.
    pub vSwitchSourceNicIndex: u16,
    /// `vSwitchDestinationPortId`.
    pub vSwitchDestinationPortId: u32,
    /// `vSwitchPacketContext`.
    pub vSwitchPacketContext: HANDLE,
    /// `subProcessTag`.
    pub subProcessTag: *mut c_void,
    /// `reserved1`.
    pub reserved1: u64,
}

/// `FWPS_L2_METADATA_FIELD_VSWITCH_SOURCE_PORT_ID`.
pub const FWPS_L2_METADATA_FIELD_VSWITCH_SOURCE_PORT_ID: u32 = 0x0000_0004;
/// `FWPS_L2_METADATA_FIELD_VSWITCH_SOURCE_NIC_INDEX`.
pub const FWPS_L2_METADATA_FIELD_VSWITCH_SOURCE_NIC_INDEX: u32 = 0x0000_0008;
/// `FWPS_L2_METADATA_FIELD_VSWITCH_PACKET_CONTEXT`.
pub const FWPS_L2_METADATA_FIELD_VSWITCH_PACKET_CONTEXT: u32 = 0x0000_0010;
/// `FWPS_L2_METADATA_FIELD_VSWITCH_DESTINATION_PORT_ID`.
pub const FWPS_L2_METADATA_FIELD_VSWITCH_DESTINATION_PORT_ID: u32 = 0x0000_0020;

/// `FWPS_FILTER_CONDITION0`.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct FWPS_FILTER_CONDITION0 {
    /// `fieldId`.
    pub fieldId: u16,
    /// `reserved`.
    pub reserved: u16,
    /// `matchType`.
    pub matchType: FWP_MATCH_TYPE,
    /// `conditionValue`.
    pub conditionValue: FWP_CONDITION_VALUE0,
}

/// `FWPS_ACTION0`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct FWPS_ACTION0 {
    /// `type`.
    pub r#type: FWP_ACTION_TYPE,
    /// `calloutId`.
    pub calloutId: u32,
}

/// `FWPS_FILTER3`.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct FWPS_FILTER3 {
    /// `filterId`.
    pub filterId: u64,
    /// `weight`.
    pub weight: FWP_VALUE0,
    /// `subLayerWeight`.
    pub subLayerWeight: u16,
    /// `flags` (`FWPS_FILTER_FLAG_*`).
    pub flags: u16,
    /// `numFilterConditions`.
    pub numFilterConditions: u32,
    /// `filterCondition`.
    pub filterCondition: *mut FWPS_FILTER_CONDITION0,
    /// `action`.
    pub action: FWPS_ACTION0,
    /// `context`: the `rawContext` of the `FWPM_FILTER0` that added the filter.
    pub context: u64,
    /// `providerContext`.
    pub providerContext: *mut c_void,
}

/// `FWPS_FILTER_FLAG_CLEAR_ACTION_RIGHT`.
pub const FWPS_FILTER_FLAG_CLEAR_ACTION_RIGHT: u16 = 0x0001;
/// `FWPS_FILTER_FLAG_PERMIT_IF_CALLOUT_UNREGISTERED`.
pub const FWPS_FILTER_FLAG_PERMIT_IF_CALLOUT_UNREGISTERED: u16 = 0x0002;

/// `FWPS_CLASSIFY_OUT0`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct FWPS_CLASSIFY_OUT0 {
    /// `actionType`.
    pub actionType: FWP_ACTION_TYPE,
    /// `outContext`.
    pub outContext: u64,
    /// `filterId`.
    pub filterId: u64,
    /// `rights`: clear [`FWPS_RIGHT_ACTION_WRITE`] when blocking.
    pub rights: u32,
    /// `flags`.
    pub flags: u32,
    /// `reserved`.
    pub reserved: u32,
}

/// `FWPS_RIGHT_ACTION_WRITE`.
pub const FWPS_RIGHT_ACTION_WRITE: u32 = 0x0000_0001;
/// `FWPS_CLASSIFY_OUT_FLAG_ABSORB`.
pub const FWPS_CLASSIFY_OUT_FLAG_ABSORB: u32 = 0x0000_0001;

/// `FWPS_CALLOUT_NOTIFY_TYPE`.
pub type FWPS_CALLOUT_NOTIFY_TYPE = u32;
/// `FWPS_CALLOUT_NOTIFY_ADD_FILTER`.
pub const FWPS_CALLOUT_NOTIFY_ADD_FILTER: FWPS_CALLOUT_NOTIFY_TYPE = 0;
/// `FWPS_CALLOUT_NOTIFY_DELETE_FILTER`.
pub const FWPS_CALLOUT_NOTIFY_DELETE_FILTER: FWPS_CALLOUT_NOTIFY_TYPE = 1;
/// `FWPS_CALLOUT_NOTIFY_ADD_FILTER_POST_COMMIT`.
pub const FWPS_CALLOUT_NOTIFY_ADD_FILTER_POST_COMMIT: FWPS_CALLOUT_NOTIFY_TYPE = 2;

/// `FWPS_CALLOUT_CLASSIFY_FN3`.
pub type FWPS_CALLOUT_CLASSIFY_FN3 = Option<
    unsafe extern "system" fn(
        inFixedValues: *const FWPS_INCOMING_VALUES0,
        inMetaValues: *const FWPS_INCOMING_METADATA_VALUES0,
        layerData: *mut c_void,
        classifyContext: *const c_void,
        filter: *const FWPS_FILTER3,
        flowContext: u64,
        classifyOut: *mut FWPS_CLASSIFY_OUT0,
    ),
>;

/// `FWPS_CALLOUT_NOTIFY_FN3`.
pub type FWPS_CALLOUT_NOTIFY_FN3 = Option<
    unsafe extern "system" fn(
        notifyType: FWPS_CALLOUT_NOTIFY_TYPE,
        filterKey: *const GUID,
        filter: *mut FWPS_FILTER3,
    ) -> NTSTATUS,
>;

/// `FWPS_CALLOUT_FLOW_DELETE_NOTIFY_FN0`.
pub type FWPS_CALLOUT_FLOW_DELETE_NOTIFY_FN0 =
    Option<unsafe extern "system" fn(layerId: u16, calloutId: u32, flowContext: u64)>;

/// `FWPS_CALLOUT3`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct FWPS_CALLOUT3 {
    /// `calloutKey`.
    pub calloutKey: GUID,
    /// `flags` (`FWP_CALLOUT_FLAG_*`).
    pub flags: u32,
    /// `classifyFn`.
    pub classifyFn: FWPS_CALLOUT_CLASSIFY_FN3,
    /// `notifyFn`.
    pub notifyFn: FWPS_CALLOUT_NOTIFY_FN3,
    /// `flowDeleteFn`.
    pub flowDeleteFn: FWPS_CALLOUT_FLOW_DELETE_NOTIFY_FN0,
}

/// `FWP_CALLOUT_FLAG_CONDITIONAL_ON_FLOW`.
pub const FWP_CALLOUT_FLAG_CONDITIONAL_ON_FLOW: u32 = 0x0000_0001;
/// `FWP_CALLOUT_FLAG_ALLOW_OFFLOAD`.
pub const FWP_CALLOUT_FLAG_ALLOW_OFFLOAD: u32 = 0x0000_0002;
/// `FWP_CALLOUT_FLAG_ENABLE_COMMIT_ADD_NOTIFY`.
pub const FWP_CALLOUT_FLAG_ENABLE_COMMIT_ADD_NOTIFY: u32 = 0x0000_0004;
/// `FWP_CALLOUT_FLAG_ALLOW_MID_STREAM_INSPECTION`.
pub const FWP_CALLOUT_FLAG_ALLOW_MID_STREAM_INSPECTION: u32 = 0x0000_0008;
/// `FWP_CALLOUT_FLAG_ALLOW_RECLASSIFY`.
pub const FWP_CALLOUT_FLAG_ALLOW_RECLASSIFY: u32 = 0x0000_0010;
/// `FWP_CALLOUT_FLAG_ALLOW_RSC`: without it, receive segment coalescing is disabled for all
/// traffic the callout's filters match.
pub const FWP_CALLOUT_FLAG_ALLOW_RSC: u32 = 0x0000_0040;
/// `FWP_CALLOUT_FLAG_ALLOW_L2_BATCH_CLASSIFY`.
pub const FWP_CALLOUT_FLAG_ALLOW_L2_BATCH_CLASSIFY: u32 = 0x0000_0080;
/// `FWP_CALLOUT_FLAG_ALLOW_USO`.
pub const FWP_CALLOUT_FLAG_ALLOW_USO: u32 = 0x0000_0100;
/// `FWP_CALLOUT_FLAG_ALLOW_URO`.
pub const FWP_CALLOUT_FLAG_ALLOW_URO: u32 = 0x0000_0200;

assert_layout!(FWPS_INCOMING_VALUE0, size = 16, align = 8);
assert_layout!(FWPS_INCOMING_VALUES0, size = 16, align = 8, valueCount = 4, incomingValue = 8);
assert_layout!(FWPS_DISCARD_METADATA0, size = 16, align = 8, filterId = 8);
assert_layout!(FWPS_INBOUND_FRAGMENT_METADATA0, size = 12, align = 4, fragmentLength = 8);
assert_layout!(IP_ADDRESS_PREFIX, size = 32, align = 4, PrefixLength = 28);
assert_layout!(
    FWPS_INCOMING_METADATA_VALUES0,
    size = 280,
    align = 8,
    discardMetadata = 16,
    flowHandle = 32,
    processPath = 48,
    compartmentId = 80,
    fragmentMetadata = 84,
    pathMtu = 96,
    completionHandle = 104,
    remoteScopeId = 120,
    controlData = 128,
    packetDirection = 140,
    headerIncludeHeader = 144,
    destinationPrefix = 156,
    frameLength = 188,
    parentEndpointHandle = 192,
    originalDestination = 208,
    redirectRecords = 216,
    currentL2MetadataValues = 224,
    vSwitchSourcePortId = 240,
    vSwitchSourceNicIndex = 244,
    vSwitchDestinationPortId = 248,
    vSwitchPacketContext = 256,
    subProcessTag = 264,
    reserved1 = 272,
);
assert_layout!(FWPS_FILTER_CONDITION0, size = 24, align = 8, conditionValue = 8);
assert_layout!(FWPS_ACTION0, size = 8, align = 4, calloutId = 4);
assert_layout!(
    FWPS_FILTER3,
    size = 64,
    align = 8,
    weight = 8,
    subLayerWeight = 24,
    numFilterConditions = 28,
    filterCondition = 32,
    action = 40,
    context = 48,
    providerContext = 56,
);
assert_layout!(
    FWPS_CLASSIFY_OUT0,
    size = 40,
    align = 8,
    outContext = 8,
    filterId = 16,
    rights = 24,
    flags = 28
);
assert_layout!(
    FWPS_CALLOUT3,
    size = 48,
    align = 8,
    flags = 16,
    classifyFn = 24,
    notifyFn = 32,
    flowDeleteFn = 40
);
