//! Shared WFP types (`fwptypes.h`).

use core::ffi::c_void;

use crate::{WCHAR, assert_layout};

/// `FWP_DATA_TYPE` values (C enum, 4 bytes).
pub type FWP_DATA_TYPE = u32;
/// `FWP_EMPTY`.
pub const FWP_EMPTY: FWP_DATA_TYPE = 0;
/// `FWP_UINT8`.
pub const FWP_UINT8: FWP_DATA_TYPE = 1;
/// `FWP_UINT16`.
pub const FWP_UINT16: FWP_DATA_TYPE = 2;
/// `FWP_UINT32`.
pub const FWP_UINT32: FWP_DATA_TYPE = 3;
/// `FWP_UINT64`.
pub const FWP_UINT64: FWP_DATA_TYPE = 4;
/// `FWP_BYTE_ARRAY16_TYPE`.
pub const FWP_BYTE_ARRAY16_TYPE: FWP_DATA_TYPE = 11;
/// `FWP_BYTE_BLOB_TYPE`.
pub const FWP_BYTE_BLOB_TYPE: FWP_DATA_TYPE = 12;
/// `FWP_BYTE_ARRAY6_TYPE`.
pub const FWP_BYTE_ARRAY6_TYPE: FWP_DATA_TYPE = 18;

/// `FWP_BYTE_ARRAY16`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FWP_BYTE_ARRAY16 {
    /// `byteArray16`.
    pub byteArray16: [u8; 16],
}

/// `FWP_BYTE_BLOB`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct FWP_BYTE_BLOB {
    /// `size`.
    pub size: u32,
    /// `data`.
    pub data: *mut u8,
}

/// The union of `FWP_VALUE0` (every arm is at most pointer-sized).
#[repr(C)]
#[derive(Clone, Copy)]
pub union FWP_VALUE0_u {
    /// `uint8`.
    pub uint8: u8,
    /// `uint16`.
    pub uint16: u16,
    /// `uint32`.
    pub uint32: u32,
    /// `uint64` (by pointer).
    pub uint64: *mut u64,
    /// `byteArray16`.
    pub byteArray16: *mut FWP_BYTE_ARRAY16,
    /// `byteBlob`.
    pub byteBlob: *mut FWP_BYTE_BLOB,
    /// `unicodeString`.
    pub unicodeString: *mut WCHAR,
    /// Any other pointer arm (`sid`, `sd`, `tokenInformation`, ...).
    pub pointer: *mut c_void,
}

/// `FWP_VALUE0`.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct FWP_VALUE0 {
    /// `type`.
    pub r#type: FWP_DATA_TYPE,
    /// The anonymous union.
    pub u: FWP_VALUE0_u,
}

impl FWP_VALUE0 {
    /// An `FWP_EMPTY` value (automatic weight).
    pub const EMPTY: Self =
        Self { r#type: FWP_EMPTY, u: FWP_VALUE0_u { uint64: core::ptr::null_mut() } };
}

/// `FWP_ACTION_TYPE`.
pub type FWP_ACTION_TYPE = u32;
/// `FWP_ACTION_FLAG_TERMINATING`.
pub const FWP_ACTION_FLAG_TERMINATING: FWP_ACTION_TYPE = 0x1000;
/// `FWP_ACTION_FLAG_NON_TERMINATING`.
pub const FWP_ACTION_FLAG_NON_TERMINATING: FWP_ACTION_TYPE = 0x2000;
/// `FWP_ACTION_FLAG_CALLOUT`.
pub const FWP_ACTION_FLAG_CALLOUT: FWP_ACTION_TYPE = 0x4000;
/// `FWP_ACTION_BLOCK`.
pub const FWP_ACTION_BLOCK: FWP_ACTION_TYPE = 0x1 | FWP_ACTION_FLAG_TERMINATING;
/// `FWP_ACTION_PERMIT`.
pub const FWP_ACTION_PERMIT: FWP_ACTION_TYPE = 0x2 | FWP_ACTION_FLAG_TERMINATING;
/// `FWP_ACTION_CALLOUT_TERMINATING`.
pub const FWP_ACTION_CALLOUT_TERMINATING: FWP_ACTION_TYPE =
    0x3 | FWP_ACTION_FLAG_CALLOUT | FWP_ACTION_FLAG_TERMINATING;
/// `FWP_ACTION_CALLOUT_INSPECTION`.
pub const FWP_ACTION_CALLOUT_INSPECTION: FWP_ACTION_TYPE =
    0x4 | FWP_ACTION_FLAG_CALLOUT | FWP_ACTION_FLAG_NON_TERMINATING;
/// `FWP_ACTION_CALLOUT_UNKNOWN`.
pub const FWP_ACTION_CALLOUT_UNKNOWN: FWP_ACTION_TYPE = 0x5 | FWP_ACTION_FLAG_CALLOUT;
/// `FWP_ACTION_CONTINUE`.
pub const FWP_ACTION_CONTINUE: FWP_ACTION_TYPE = 0x6 | FWP_ACTION_FLAG_NON_TERMINATING;
/// `FWP_ACTION_NONE`.
pub const FWP_ACTION_NONE: FWP_ACTION_TYPE = 0x7;

/// `FWP_CONDITION_VALUE0`: same shape as `FWP_VALUE0` (extra arms are pointers too).
pub type FWP_CONDITION_VALUE0 = FWP_VALUE0;

/// `FWP_MATCH_TYPE`.
pub type FWP_MATCH_TYPE = u32;

/// `FWPM_DISPLAY_DATA0`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct FWPM_DISPLAY_DATA0 {
    /// `name`.
    pub name: *mut WCHAR,
    /// `description`.
    pub description: *mut WCHAR,
}

assert_layout!(FWP_BYTE_BLOB, size = 16, align = 8, data = 8);
assert_layout!(FWP_VALUE0, size = 16, align = 8, u = 8);
assert_layout!(FWPM_DISPLAY_DATA0, size = 16, align = 8, description = 8);
