//! The four vSwitch transport layers.
//!
//! Management GUIDs, run-time ids, and the field indexes of their incoming values
//! (`FWPS_FIELDS_*_VSWITCH_TRANSPORT_V4/V6` in `fwpsk.h`; the five transport fields have the
//! same index in all four layers).

use crate::GUID;

/// `FWPS_LAYER_INGRESS_VSWITCH_ETHERNET`.
pub const FWPS_LAYER_INGRESS_VSWITCH_ETHERNET: u16 = 72;
/// `FWPS_LAYER_EGRESS_VSWITCH_ETHERNET`.
pub const FWPS_LAYER_EGRESS_VSWITCH_ETHERNET: u16 = 73;
/// `FWPS_LAYER_INGRESS_VSWITCH_TRANSPORT_V4`.
pub const FWPS_LAYER_INGRESS_VSWITCH_TRANSPORT_V4: u16 = 74;
/// `FWPS_LAYER_INGRESS_VSWITCH_TRANSPORT_V6`.
pub const FWPS_LAYER_INGRESS_VSWITCH_TRANSPORT_V6: u16 = 75;
/// `FWPS_LAYER_EGRESS_VSWITCH_TRANSPORT_V4`.
pub const FWPS_LAYER_EGRESS_VSWITCH_TRANSPORT_V4: u16 = 76;
/// `FWPS_LAYER_EGRESS_VSWITCH_TRANSPORT_V6`.
pub const FWPS_LAYER_EGRESS_VSWITCH_TRANSPORT_V6: u16 = 77;

/// `FWPM_LAYER_INGRESS_VSWITCH_TRANSPORT_V4` {b2696ff6-774f-4554-9f7d-3da3945f8e85}.
pub const FWPM_LAYER_INGRESS_VSWITCH_TRANSPORT_V4: GUID =
    GUID::from_parts(0xb269_6ff6, 0x774f, 0x4554, [0x9f, 0x7d, 0x3d, 0xa3, 0x94, 0x5f, 0x8e, 0x85]);
/// `FWPM_LAYER_INGRESS_VSWITCH_TRANSPORT_V6` {5ee314fc-7d8a-47f4-b7e3-291a36da4e12}.
pub const FWPM_LAYER_INGRESS_VSWITCH_TRANSPORT_V6: GUID =
    GUID::from_parts(0x5ee3_14fc, 0x7d8a, 0x47f4, [0xb7, 0xe3, 0x29, 0x1a, 0x36, 0xda, 0x4e, 0x12]);
/// `FWPM_LAYER_EGRESS_VSWITCH_TRANSPORT_V4` {b92350b6-91f0-46b6-bdc4-871dfd4a7c98}.
pub const FWPM_LAYER_EGRESS_VSWITCH_TRANSPORT_V4: GUID =
    GUID::from_parts(0xb923_50b6, 0x91f0, 0x46b6, [0xbd, 0xc4, 0x87, 0x1d, 0xfd, 0x4a, 0x7c, 0x98]);
/// `FWPM_LAYER_EGRESS_VSWITCH_TRANSPORT_V6` {1b2def23-1881-40bd-82f4-4254e63141cb}.
pub const FWPM_LAYER_EGRESS_VSWITCH_TRANSPORT_V6: GUID =
    GUID::from_parts(0x1b2d_ef23, 0x1881, 0x40bd, [0x82, 0xf4, 0x42, 0x54, 0xe6, 0x31, 0x41, 0xcb]);

/// `FWPS_FIELD_*_VSWITCH_TRANSPORT_V{4,6}_IP_SOURCE_ADDRESS` (`UINT32` host order for V4,
/// `BYTE_ARRAY16` for V6).
pub const FIELD_IP_SOURCE_ADDRESS: usize = 0;
/// `..._IP_DESTINATION_ADDRESS`.
pub const FIELD_IP_DESTINATION_ADDRESS: usize = 1;
/// `..._IP_PROTOCOL` (UINT8).
pub const FIELD_IP_PROTOCOL: usize = 2;
/// `..._IP_SOURCE_PORT` (UINT16; ICMP type for ICMP).
pub const FIELD_IP_SOURCE_PORT: usize = 3;
/// `..._IP_DESTINATION_PORT` (UINT16; ICMP code for ICMP).
pub const FIELD_IP_DESTINATION_PORT: usize = 4;
/// `..._VLAN_ID`.
pub const FIELD_VLAN_ID: usize = 5;
/// `..._VSWITCH_TENANT_NETWORK_ID`.
pub const FIELD_VSWITCH_TENANT_NETWORK_ID: usize = 6;
/// `..._VSWITCH_ID`.
pub const FIELD_VSWITCH_ID: usize = 7;

/// Number of incoming values at the ingress transport layers (Windows 10 RS2+).
pub const INGRESS_TRANSPORT_FIELD_COUNT: u32 = 14;
/// Number of incoming values at the egress transport layers (Windows 10 RS2+).
pub const EGRESS_TRANSPORT_FIELD_COUNT: u32 = 17;
