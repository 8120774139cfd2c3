//! Run-time resolution of the system functions netports uses.
//!
//! `LoadLibraryExW` with `LOAD_LIBRARY_SEARCH_SYSTEM32` and `GetProcAddress`, cached. A missing
//! DLL or export is `Error::Unsupported` naming it, never a crash (Wine 8 lacks most of them).

use std::ffi::CStr;
use std::sync::OnceLock;

use windows_sys::Win32::System::LibraryLoader::{
    GetProcAddress, LOAD_LIBRARY_SEARCH_SYSTEM32, LoadLibraryExW,
};

use crate::error::Error;

/// A system DLL.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dll {
    /// `iphlpapi.dll`.
    Iphlpapi,
    /// `ws2_32.dll`.
    Ws2_32,
    /// `fwpuclnt.dll`.
    Fwpuclnt,
}

impl Dll {
    const fn file(self) -> &'static str {
        match self {
            Self::Iphlpapi => "iphlpapi.dll",
            Self::Ws2_32 => "ws2_32.dll",
            Self::Fwpuclnt => "fwpuclnt.dll",
        }
    }

    fn module(self) -> usize {
        static CELLS: [OnceLock<usize>; 3] = [OnceLock::new(), OnceLock::new(), OnceLock::new()];
        let cell = &CELLS[self as usize];
        *cell.get_or_init(|| {
            let wide: Vec<u16> = self.file().encode_utf16().chain(std::iter::once(0)).collect();
            // SAFETY: a NUL-terminated wide string; loading a system DLL by name from system32.
            let h = unsafe {
                LoadLibraryExW(wide.as_ptr(), std::ptr::null_mut(), LOAD_LIBRARY_SEARCH_SYSTEM32)
            };
            h as usize
        })
    }
}

/// The address of `name` in `dll`, or `Unsupported`.
///
/// # Errors
/// [`Error::Unsupported`] when the DLL or the export is missing.
pub fn resolve(dll: Dll, name: &'static CStr) -> Result<usize, Error> {
    let module = dll.module();
    let missing = || Error::Unsupported {
        what: format!(
            "{} is not exported by {} on this system (Wine, or a trimmed Windows edition)",
            name.to_string_lossy(),
            dll.file()
        ),
    };
    if module == 0 {
        return Err(missing());
    }
    // SAFETY: a module handle from LoadLibraryExW and a NUL-terminated name.
    let p = unsafe { GetProcAddress(module as _, name.as_ptr().cast()) };
    p.map(|f| f as usize).ok_or_else(missing)
}

/// Declares a typed, cached accessor for a system function, and its pointer type
/// (`<name>::Fn`, which `win::signatures` checks against windows-sys's declaration).
macro_rules! system_fn {
    ($(#[$doc:meta])* $vis:vis fn $name:ident = $dll:expr, $cname:literal : fn($($arg:ty),* $(,)?) $(-> $ret:ty)?;) => {
        $(#[$doc])*
        ///
        /// # Errors
        /// `Error::Unsupported` when the export is missing.
        $vis fn $name() -> Result<$name::Fn, $crate::error::Error> {
            static CELL: std::sync::OnceLock<Result<usize, $crate::error::Error>> = std::sync::OnceLock::new();
            let addr = CELL.get_or_init(|| $crate::win::dynload::resolve($dll, $cname)).clone()?;
            // SAFETY: `addr` is the export named `$cname`, whose signature is the one declared
            // here (`win::signatures` coerces windows-sys's declaration to it at compile time).
            Ok(unsafe { std::mem::transmute::<usize, $name::Fn>(addr) })
        }

        #[doc = concat!("The pointer type of `", stringify!($name), "`'s function.")]
        #[allow(non_camel_case_types, reason = "named after its accessor")]
        pub(crate) mod $name {
            #[allow(unused_imports, reason = "the parent's names, for the types below")]
            use super::*;
            /// The function as netports calls it.
            pub type Fn = unsafe extern "system" fn($($arg),*) $(-> $ret)?;
        }
    };
}
pub(crate) use system_fn;
