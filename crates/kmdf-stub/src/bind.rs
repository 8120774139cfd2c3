//! The bind information the stub hands to the WDF loader (fxldr.h), with the x64 layout
//! asserted at compile time.

#![allow(non_snake_case, reason = "the C field names of fxldr.h")]

use core::ffi::c_void;

use wdk_sys::{BOOLEAN, ULONG, WCHAR, WDFFUNC};

/// `WDF_VERSION`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WdfVersion {
    /// `Major`.
    pub Major: ULONG,
    /// `Minor`.
    pub Minor: ULONG,
    /// `Build`.
    pub Build: ULONG,
}

/// `WDF_BIND_INFO` (version 1, the leading part of version 2).
#[repr(C)]
#[derive(Debug)]
pub struct WdfBindInfo {
    /// `sizeof(WDF_BIND_INFO2)` for a version-2 bind (fxldr.h: "initalize V1.Size =
    /// sizeof(V2)").
    pub Size: ULONG,
    /// `L"KmdfLibrary"`.
    pub Component: *mut WCHAR,
    /// The framework version the driver was compiled against.
    pub Version: WdfVersion,
    /// Table entries the driver was compiled against.
    pub FuncCount: ULONG,
    /// For more than 438 entries (KMDF 1.15 and later): the address of the driver's
    /// `WdfFunctions` pointer, which the framework sets.
    pub FuncTable: *mut WDFFUNC,
    /// The loader's (diagnostics only).
    pub Module: *mut c_void,
}

/// `WDF_BIND_INFO2`: version 1 plus the addresses of the driver's globals the framework fills.
#[repr(C)]
#[derive(Debug)]
pub struct WdfBindInfo2 {
    /// `V1`.
    pub V1: WdfBindInfo,
    /// `&WdfMinimumVersionRequired`.
    pub MinimumVersionRequired: *mut ULONG,
    /// `&WdfClientVersionHigherThanFramework`.
    pub ClientVersionHigherThanFramework: *mut BOOLEAN,
    /// `&WdfFunctionCount`.
    pub FuncCountPtr: *mut ULONG,
    /// `&WdfStructureCount`.
    pub StructCountPtr: *mut ULONG,
    /// `&WdfStructures` (`WDF_STRUCT_INFO` is `size_t *`).
    pub StructTable: *mut *mut usize,
}

const _: () = {
    use core::mem::{offset_of, size_of};
    assert!(size_of::<WdfVersion>() == 12);
    assert!(offset_of!(WdfBindInfo, Component) == 8);
    assert!(offset_of!(WdfBindInfo, Version) == 16);
    assert!(offset_of!(WdfBindInfo, FuncCount) == 28);
    assert!(offset_of!(WdfBindInfo, FuncTable) == 32);
    assert!(offset_of!(WdfBindInfo, Module) == 40);
    assert!(size_of::<WdfBindInfo>() == 48);
    assert!(offset_of!(WdfBindInfo2, MinimumVersionRequired) == 48);
    assert!(offset_of!(WdfBindInfo2, StructTable) == 80);
    assert!(size_of::<WdfBindInfo2>() == 88);
};

/// `WDF_BIND_INFO.Component` of a KMDF driver, NUL-terminated.
pub const COMPONENT: [u16; 12] = {
    let name = *b"KmdfLibrary\0";
    let mut wide = [0u16; 12];
    let mut i = 0;
    while i < name.len() {
        wide[i] = name[i] as u16;
        i += 1;
    }
    wide
};

/// The framework version the driver targets (driver/Cargo.toml: KMDF 1.33).
pub const VERSION: WdfVersion = WdfVersion { Major: 1, Minor: 33, Build: 0 };

/// `WdfFunctionTableNumEntries` of KMDF 1.33 (wdffuncenum.h).
#[allow(clippy::cast_sign_loss, reason = "a positive table size")]
pub const FUNCTION_COUNT: ULONG = wdk_sys::_WDFFUNCENUM::WdfFunctionTableNumEntries as ULONG;

/// `WdfMinimumVersionRequired` (wdffuncenum.h: `KMDF_VERSION_MINOR` when no lower minimum is
/// declared, so every function and structure of 1.33 is always available).
pub const MINIMUM_VERSION_REQUIRED: ULONG = 33;

#[cfg(test)]
mod tests {
    extern crate std;
    use std::string::String;

    use super::*;

    #[test]
    fn the_component_is_kmdf_library_and_the_table_is_the_1_33_table() {
        assert_eq!(String::from_utf16_lossy(&COMPONENT[..11]), "KmdfLibrary");
        assert_eq!(COMPONENT[11], 0);
        assert_eq!(FUNCTION_COUNT, 458);
        assert_eq!(VERSION, WdfVersion { Major: 1, Minor: 33, Build: 0 });
    }
}
