//! Raw FFI for the Windows Filtering Platform kernel API that vsflow uses.
//!
//! wdk-sys 0.5 has no fwpsk/fwpmk/NDIS bindings and windows-sys links `Fwpm*` to the user-mode
//! `fwpuclnt.dll`, so these declarations are written by hand from the WDK headers (`fwpsk.h`,
//! `fwpmk.h`, `fwpstypes.h`, `fwpmtypes.h`, `fwptypes.h`, `ntddndis.h`, `ndis.h`, as mirrored in
//! microsoft/wdkmetadata). C names are kept so a reader can grep the headers; every `repr(C)`
//! type carries const assertions of size, alignment and key offsets for `x86_64` Windows.
//!
//! Linking: for the driver (Windows target, feature `link-kernel`) the functions import from
//! `fwpkclnt.sys` and `ndis.sys` (raw-dylib, verbatim). Elsewhere they are plain
//! `extern "system"` symbols, which `vsflow-sim` defines: the callout code under test calls
//! exactly the symbols the shipped driver imports.
//!
//! Layouts were derived from the headers by hand: verify on Windows (docs/WINDOWS-VERIFICATION.md
//! items 13-14: a C `sizeof`/`offsetof` build with the WDK).

#![no_std]
#![allow(
    non_camel_case_types,
    non_snake_case,
    non_upper_case_globals,
    reason = "C names from the WDK headers"
)]

pub mod functions;
pub mod fwp;
pub mod fwpm;
pub mod fwps;
pub mod layers;
pub mod ndis;
pub mod status;
pub mod vswitch;

pub use functions::*;
pub use fwp::*;
pub use fwpm::*;
pub use fwps::*;
pub use layers::*;
pub use ndis::*;
pub use status::*;
pub use vswitch::*;

use core::ffi::c_void;

/// `HANDLE`.
pub type HANDLE = *mut c_void;
/// `NTSTATUS`.
pub type NTSTATUS = i32;
/// `BOOLEAN` (one byte, 0 or 1).
pub type BOOLEAN = u8;
/// `BOOL` (four bytes).
pub type BOOL = i32;
/// `wchar_t` on Windows.
pub type WCHAR = u16;

/// `GUID`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct GUID {
    /// `Data1`.
    pub data1: u32,
    /// `Data2`.
    pub data2: u16,
    /// `Data3`.
    pub data3: u16,
    /// `Data4`.
    pub data4: [u8; 8],
}

impl GUID {
    /// A GUID from its parts, as written in the headers' `DEFINE_GUID`.
    #[must_use]
    pub const fn from_parts(data1: u32, data2: u16, data3: u16, data4: [u8; 8]) -> Self {
        Self { data1, data2, data3, data4 }
    }
}

/// Asserts size, alignment and field offsets of a `repr(C)` type for `x86_64` Windows.
#[macro_export]
macro_rules! assert_layout {
    ($t:ty, size = $size:expr, align = $align:expr $(, $field:ident = $off:expr)* $(,)?) => {
        #[cfg(target_pointer_width = "64")]
        const _: () = {
            assert!(::core::mem::size_of::<$t>() == $size);
            assert!(::core::mem::align_of::<$t>() == $align);
            $( assert!(::core::mem::offset_of!($t, $field) == $off); )*
        };
    };
}

assert_layout!(GUID, size = 16, align = 4, data2 = 4, data4 = 8);
