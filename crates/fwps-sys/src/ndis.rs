//! The NDIS switch types the vSwitch callbacks pass (`ntddndis.h`, `ndis.h`).

use crate::{BOOLEAN, GUID, WCHAR, assert_layout};

/// `NDIS_SWITCH_PORT_ID`.
pub type NDIS_SWITCH_PORT_ID = u32;
/// `NDIS_SWITCH_NIC_INDEX`.
pub type NDIS_SWITCH_NIC_INDEX = u16;

/// `IF_MAX_STRING_SIZE`.
pub const IF_MAX_STRING_SIZE: usize = 256;
/// `IF_MAX_PHYS_ADDRESS_LENGTH`.
pub const IF_MAX_PHYS_ADDRESS_LENGTH: usize = 32;

/// `NDIS_OBJECT_HEADER`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NDIS_OBJECT_HEADER {
    /// `Type`.
    pub Type: u8,
    /// `Revision`.
    pub Revision: u8,
    /// `Size`.
    pub Size: u16,
}

/// `NDIS_OBJECT_TYPE_DEFAULT`, the header type of the switch structures.
pub const NDIS_OBJECT_TYPE_DEFAULT: u8 = 0x80;

/// `IF_COUNTED_STRING` (`NDIS_SWITCH_NAME`, `NDIS_SWITCH_PORT_NAME`, `NDIS_VM_NAME`, ...).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct IF_COUNTED_STRING {
    /// `Length` in bytes, not counting a terminator.
    pub Length: u16,
    /// `String`: `IF_MAX_STRING_SIZE + 1` UTF-16 code units.
    pub String: [WCHAR; IF_MAX_STRING_SIZE + 1],
}

impl IF_COUNTED_STRING {
    /// An empty string.
    pub const EMPTY: Self = Self { Length: 0, String: [0; IF_MAX_STRING_SIZE + 1] };

    /// The code units `Length` covers, or `None` if `Length` is odd or too large (the value
    /// comes from the OS and is not trusted).
    #[must_use]
    pub fn units(&self) -> Option<&[WCHAR]> {
        let len = usize::from(self.Length);
        if len % 2 != 0 {
            return None;
        }
        self.String.get(..len / 2).filter(|s| s.len() <= IF_MAX_STRING_SIZE)
    }
}

/// `NDIS_SWITCH_PARAMETERS`.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct NDIS_SWITCH_PARAMETERS {
    /// `Header`.
    pub Header: NDIS_OBJECT_HEADER,
    /// `Flags`.
    pub Flags: u32,
    /// `SwitchName`.
    pub SwitchName: IF_COUNTED_STRING,
    /// `SwitchFriendlyName`.
    pub SwitchFriendlyName: IF_COUNTED_STRING,
    /// `NumSwitchPorts` (may still be 0 in callbacks).
    pub NumSwitchPorts: u32,
    /// `IsActive` (may still be 0 in callbacks).
    pub IsActive: BOOLEAN,
}

/// `NDIS_SWITCH_PORT_TYPE`.
pub type NDIS_SWITCH_PORT_TYPE = u32;
/// `NdisSwitchPortTypeGeneric`.
pub const NdisSwitchPortTypeGeneric: NDIS_SWITCH_PORT_TYPE = 0;
/// `NdisSwitchPortTypeExternal`.
pub const NdisSwitchPortTypeExternal: NDIS_SWITCH_PORT_TYPE = 1;
/// `NdisSwitchPortTypeSynthetic`.
pub const NdisSwitchPortTypeSynthetic: NDIS_SWITCH_PORT_TYPE = 2;
/// `NdisSwitchPortTypeEmulated`.
pub const NdisSwitchPortTypeEmulated: NDIS_SWITCH_PORT_TYPE = 3;
/// `NdisSwitchPortTypeInternal`.
pub const NdisSwitchPortTypeInternal: NDIS_SWITCH_PORT_TYPE = 4;

/// `NDIS_SWITCH_PORT_STATE`.
pub type NDIS_SWITCH_PORT_STATE = u32;

/// `NDIS_SWITCH_PORT_PARAMETERS_FLAG_RESTORING_PORT`: the port has saved state to restore.
pub const NDIS_SWITCH_PORT_PARAMETERS_FLAG_RESTORING_PORT: u32 = 0x2;

/// `NDIS_SWITCH_PORT_PARAMETERS`.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct NDIS_SWITCH_PORT_PARAMETERS {
    /// `Header`.
    pub Header: NDIS_OBJECT_HEADER,
    /// `Flags`.
    pub Flags: u32,
    /// `PortId`.
    pub PortId: NDIS_SWITCH_PORT_ID,
    /// `PortName`: the durable identity.
    pub PortName: IF_COUNTED_STRING,
    /// `PortFriendlyName`.
    pub PortFriendlyName: IF_COUNTED_STRING,
    /// `PortType`.
    pub PortType: NDIS_SWITCH_PORT_TYPE,
    /// `IsValidationPort`.
    pub IsValidationPort: BOOLEAN,
    /// `PortState`.
    pub PortState: NDIS_SWITCH_PORT_STATE,
}

/// `NDIS_SWITCH_PORT_ARRAY` header; `NumElements` entries of `ElementSize` bytes follow at
/// `FirstElementOffset`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct NDIS_SWITCH_PORT_ARRAY {
    /// `Header`.
    pub Header: NDIS_OBJECT_HEADER,
    /// `Flags`.
    pub Flags: u32,
    /// `FirstElementOffset`.
    pub FirstElementOffset: u16,
    /// `NumElements`.
    pub NumElements: u32,
    /// `ElementSize`.
    pub ElementSize: u32,
}

/// `NDIS_SWITCH_NIC_TYPE`.
pub type NDIS_SWITCH_NIC_TYPE = u32;
/// `NDIS_SWITCH_NIC_STATE`.
pub type NDIS_SWITCH_NIC_STATE = u32;
/// `NdisSwitchNicStateUnknown`.
pub const NdisSwitchNicStateUnknown: NDIS_SWITCH_NIC_STATE = 0;
/// `NdisSwitchNicStateCreated`: created, not yet connected (traffic already flows).
pub const NdisSwitchNicStateCreated: NDIS_SWITCH_NIC_STATE = 1;
/// `NdisSwitchNicStateConnected`.
pub const NdisSwitchNicStateConnected: NDIS_SWITCH_NIC_STATE = 2;
/// `NdisSwitchNicStateDisconnected`.
pub const NdisSwitchNicStateDisconnected: NDIS_SWITCH_NIC_STATE = 3;
/// `NdisSwitchNicStateDeleted`.
pub const NdisSwitchNicStateDeleted: NDIS_SWITCH_NIC_STATE = 4;

/// `NDIS_SWITCH_NIC_PARAMETERS_REVISION_1` (NDIS 6.30).
pub const NDIS_SWITCH_NIC_PARAMETERS_REVISION_1: u8 = 1;
/// `NDIS_SIZEOF_NDIS_SWITCH_NIC_PARAMETERS_REVISION_1`:
/// `RTL_SIZEOF_THROUGH_FIELD(NDIS_SWITCH_NIC_PARAMETERS, VFAssigned)`, 2207 bytes on x64.
pub const NDIS_SIZEOF_NDIS_SWITCH_NIC_PARAMETERS_REVISION_1: usize = 2207;

/// `NDIS_SWITCH_NIC_PARAMETERS` (revision 2, NDIS 6.40+).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct NDIS_SWITCH_NIC_PARAMETERS {
    /// `Header`.
    pub Header: NDIS_OBJECT_HEADER,
    /// `Flags`.
    pub Flags: u32,
    /// `NicName`.
    pub NicName: IF_COUNTED_STRING,
    /// `NicFriendlyName`.
    pub NicFriendlyName: IF_COUNTED_STRING,
    /// `PortId`.
    pub PortId: NDIS_SWITCH_PORT_ID,
    /// `NicIndex`.
    pub NicIndex: NDIS_SWITCH_NIC_INDEX,
    /// `NicType`.
    pub NicType: NDIS_SWITCH_NIC_TYPE,
    /// `NicState`.
    pub NicState: NDIS_SWITCH_NIC_STATE,
    /// `VmName`.
    pub VmName: IF_COUNTED_STRING,
    /// `VmFriendlyName`.
    pub VmFriendlyName: IF_COUNTED_STRING,
    /// `NetCfgInstanceId`.
    pub NetCfgInstanceId: GUID,
    /// `MTU`.
    pub MTU: u32,
    /// `NumaNodeId`.
    pub NumaNodeId: u16,
    /// `PermanentMacAddress`.
    pub PermanentMacAddress: [u8; IF_MAX_PHYS_ADDRESS_LENGTH],
    /// `VMMacAddress`.
    pub VMMacAddress: [u8; IF_MAX_PHYS_ADDRESS_LENGTH],
    /// `CurrentMacAddress`.
    pub CurrentMacAddress: [u8; IF_MAX_PHYS_ADDRESS_LENGTH],
    /// `VFAssigned`.
    pub VFAssigned: BOOLEAN,
    /// `NdisReserved`.
    pub NdisReserved: [u64; 2],
}

/// `NDIS_SWITCH_NIC_ARRAY` header (same shape as the port array).
pub type NDIS_SWITCH_NIC_ARRAY = NDIS_SWITCH_PORT_ARRAY;

/// `NDIS_SWITCH_PORT_PROPERTY_TYPE`.
pub type NDIS_SWITCH_PORT_PROPERTY_TYPE = u32;

/// `NDIS_SWITCH_PORT_PROPERTY_PARAMETERS`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct NDIS_SWITCH_PORT_PROPERTY_PARAMETERS {
    /// `Header`.
    pub Header: NDIS_OBJECT_HEADER,
    /// `Flags`.
    pub Flags: u32,
    /// `PortId`.
    pub PortId: NDIS_SWITCH_PORT_ID,
    /// `PropertyType`.
    pub PropertyType: NDIS_SWITCH_PORT_PROPERTY_TYPE,
    /// `PropertyId`.
    pub PropertyId: GUID,
    /// `PropertyVersion`.
    pub PropertyVersion: u16,
    /// `SerializationVersion`.
    pub SerializationVersion: u16,
    /// `PropertyInstanceId`.
    pub PropertyInstanceId: GUID,
    /// `PropertyBufferLength`.
    pub PropertyBufferLength: u32,
    /// `PropertyBufferOffset`.
    pub PropertyBufferOffset: u32,
    /// `Reserved`.
    pub Reserved: u32,
}

/// `NDIS_SWITCH_PORT_PROPERTY_DELETE_PARAMETERS`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct NDIS_SWITCH_PORT_PROPERTY_DELETE_PARAMETERS {
    /// `Header`.
    pub Header: NDIS_OBJECT_HEADER,
    /// `Flags`.
    pub Flags: u32,
    /// `PortId`.
    pub PortId: NDIS_SWITCH_PORT_ID,
    /// `PropertyType`.
    pub PropertyType: NDIS_SWITCH_PORT_PROPERTY_TYPE,
    /// `PropertyId`.
    pub PropertyId: GUID,
    /// `PropertyInstanceId`.
    pub PropertyInstanceId: GUID,
}

/// `NDIS_ENUM_FILTERS` up to its first `NDIS_FILTER_INTERFACE` (which vsflow never reads).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct NDIS_ENUM_FILTERS {
    /// `Header`.
    pub Header: NDIS_OBJECT_HEADER,
    /// `Flags`.
    pub Flags: u32,
    /// `NumberOfFilters`.
    pub NumberOfFilters: u32,
    /// `OffsetFirstFilter`.
    pub OffsetFirstFilter: u32,
}

assert_layout!(NDIS_OBJECT_HEADER, size = 4, align = 2, Size = 2);
assert_layout!(IF_COUNTED_STRING, size = 516, align = 2, String = 2);
assert_layout!(
    NDIS_SWITCH_PARAMETERS,
    size = 1048,
    align = 4,
    Flags = 4,
    SwitchName = 8,
    SwitchFriendlyName = 524,
    NumSwitchPorts = 1040,
    IsActive = 1044,
);
assert_layout!(
    NDIS_SWITCH_PORT_PARAMETERS,
    size = 1056,
    align = 4,
    PortId = 8,
    PortName = 12,
    PortFriendlyName = 528,
    PortType = 1044,
    IsValidationPort = 1048,
    PortState = 1052,
);
assert_layout!(
    NDIS_SWITCH_PORT_ARRAY,
    size = 20,
    align = 4,
    FirstElementOffset = 8,
    NumElements = 12,
    ElementSize = 16
);
assert_layout!(
    NDIS_SWITCH_NIC_PARAMETERS,
    size = 2224,
    align = 8,
    NicName = 8,
    NicFriendlyName = 524,
    PortId = 1040,
    NicIndex = 1044,
    NicType = 1048,
    NicState = 1052,
    VmName = 1056,
    VmFriendlyName = 1572,
    NetCfgInstanceId = 2088,
    MTU = 2104,
    NumaNodeId = 2108,
    PermanentMacAddress = 2110,
    VMMacAddress = 2142,
    CurrentMacAddress = 2174,
    VFAssigned = 2206,
    NdisReserved = 2208,
);
assert_layout!(
    NDIS_SWITCH_PORT_PROPERTY_PARAMETERS,
    size = 64,
    align = 4,
    PropertyId = 16,
    PropertyVersion = 32,
    PropertyInstanceId = 36,
    PropertyBufferLength = 52,
    Reserved = 60,
);
assert_layout!(
    NDIS_SWITCH_PORT_PROPERTY_DELETE_PARAMETERS,
    size = 48,
    align = 4,
    PropertyId = 16,
    PropertyInstanceId = 32
);
assert_layout!(NDIS_ENUM_FILTERS, size = 16, align = 4, OffsetFirstFilter = 12);

/// The start of `NET_BUFFER_LIST` (`ndis/nbl.h`), up to the fields vsflow reads.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct NET_BUFFER_LIST {
    /// `Next`.
    pub Next: *mut Self,
    /// `FirstNetBuffer`.
    pub FirstNetBuffer: *mut NET_BUFFER,
}

/// `MDL` (`wdm.h`): one virtually contiguous piece of a buffer.
///
/// Its bytes start at `StartVa + ByteOffset` (`MmGetMdlVirtualAddress`) and run `ByteCount` bytes; when
/// `MdlFlags` has `MDL_MAPPED_TO_SYSTEM_VA` or `MDL_SOURCE_IS_NONPAGED_POOL`,
/// `MmGetSystemAddressForMdlSafe` returns `MappedSystemVa`, the same bytes' system address.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct MDL {
    /// `Next`: the next MDL of the chain.
    pub Next: *mut Self,
    /// `Size` (`CSHORT`).
    pub Size: i16,
    /// `MdlFlags` (`CSHORT`).
    pub MdlFlags: i16,
    /// `Process`.
    pub Process: *mut core::ffi::c_void,
    /// `MappedSystemVa`.
    pub MappedSystemVa: *mut core::ffi::c_void,
    /// `StartVa`: page-aligned start.
    pub StartVa: *mut core::ffi::c_void,
    /// `ByteCount`.
    pub ByteCount: u32,
    /// `ByteOffset`: offset of the first byte from `StartVa`.
    pub ByteOffset: u32,
}

/// `MDL_MAPPED_TO_SYSTEM_VA`.
pub const MDL_MAPPED_TO_SYSTEM_VA: i16 = 0x0001;
/// `MDL_SOURCE_IS_NONPAGED_POOL`.
pub const MDL_SOURCE_IS_NONPAGED_POOL: i16 = 0x0004;

assert_layout!(
    MDL,
    size = 48,
    align = 8,
    Size = 8,
    MdlFlags = 10,
    Process = 16,
    MappedSystemVa = 24,
    StartVa = 32,
    ByteCount = 40,
    ByteOffset = 44
);

/// The start of `NET_BUFFER` (`ndis/nbl.h`): its `NET_BUFFER_DATA` part.
///
/// The data starts `CurrentMdlOffset` bytes into `CurrentMdl` and runs `DataLength` bytes along the MDL chain;
/// `DataOffset` is the same position counted from the start of `MdlChain`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct NET_BUFFER {
    /// `Next`.
    pub Next: *mut Self,
    /// `CurrentMdl`: the MDL holding the first byte of data.
    pub CurrentMdl: *mut MDL,
    /// `CurrentMdlOffset`: offset of the first byte of data in `CurrentMdl`.
    pub CurrentMdlOffset: u32,
    /// Alignment padding before the 8-aligned `DataLength` union.
    pub Padding0: u32,
    /// `DataLength`: in the header a `ULONG` in a union with `SIZE_T stDataLength`; NDIS's
    /// accessor (`NET_BUFFER_DATA_LENGTH`) reads the `ULONG`. Read 32 bits.
    pub DataLength: u32,
    /// The upper half of the union's `SIZE_T stDataLength`: not part of the length (NDIS
    /// writes only the `ULONG`), so its value is unspecified.
    pub stDataLengthHigh: u32,
    /// `MdlChain`: the first MDL of the buffer.
    pub MdlChain: *mut MDL,
    /// `DataOffset`: offset of the first byte of data from the start of `MdlChain`.
    pub DataOffset: u32,
}

impl NET_BUFFER {
    /// `NET_BUFFER_DATA_LENGTH`: the 32-bit length of the data.
    #[must_use]
    pub const fn data_length(&self) -> u32 {
        self.DataLength
    }
}

assert_layout!(NET_BUFFER_LIST, size = 16, align = 8, FirstNetBuffer = 8);
assert_layout!(
    NET_BUFFER,
    size = 48,
    align = 8,
    CurrentMdl = 8,
    CurrentMdlOffset = 16,
    DataLength = 24,
    stDataLengthHigh = 28,
    MdlChain = 32,
    DataOffset = 40
);
