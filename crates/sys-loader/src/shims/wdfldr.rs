//! `WDFLDR.SYS` and the framework's side of binding: `WdfVersionBind` hands the driver's stub
//! (crates/kmdf-stub in the image) the framework's function table and the driver's globals,
//! `WdfVersionUnbind` takes them back, and the framework's unload routine (what `WdfDriverCreate`
//! puts in `DriverObject->DriverUnload`) runs the KMDF double's unload.
//!
//! What binding does, from the open-source KMDF (fxlibrarycommon.cpp
//! `FxLibraryCommonRegisterClient`, fxldr.h): the bind information must name a function table
//! (`STATUS_INVALID_PARAMETER` otherwise) of at most the framework's size, and of exactly its
//! size for a client newer than 1.31; for more than 438 entries `FuncTable` is the address of
//! the driver's `WdfFunctions` pointer, which is set to the framework's table; a version-2
//! bind information's `FuncCountPtr` receives the count ("keep the two in sync"); the driver's
//! globals are allocated and returned. The harness plays KMDF 1.33: its table has 458 entries,
//! of which the ones at the indices of the functions the mirror's wdk-sys calls
//! (`wdk_sys::wdf_table`) are the shims in [`super::wdf`], and the rest are null, so a call to
//! any other function bug-checks at its call site in the driver (the macro's `unreachable!`)
//! and the harness reports where.

#![allow(
    clippy::missing_safety_doc,
    reason = "each shim's contract is the Windows function's it stands for"
)]
#![allow(
    clippy::must_use_candidate,
    reason = "shims are called by the image, which ignores attributes"
)]
#![allow(non_snake_case, reason = "the loader's names")]

use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError};

use kmdf_stub::bind::{FUNCTION_COUNT, VERSION, WdfBindInfo, WdfBindInfo2};
use wdf_sim::Session;
use wdk_sys::{
    NTSTATUS, PDRIVER_OBJECT, PUNICODE_STRING, PWDF_DRIVER_GLOBALS, WDF_DRIVER_GLOBALS, WDFFUNC,
};

use super::wdf;

const STATUS_SUCCESS: NTSTATUS = 0;
const STATUS_INVALID_PARAMETER: NTSTATUS = 0xC000_000D_u32.cast_signed();
/// What the harness answers a driver built for another framework (the loader would refuse to
/// load it; the precise status is not documented).
const STATUS_REVISION_MISMATCH: NTSTATUS = 0xC000_0059_u32.cast_signed();
/// Table sizes up to KMDF 1.13 were copied into the driver instead of pointed to.
const COPIED_TABLE_MAX: u32 = 438;

/// The framework's function table (KMDF 1.33: 458 entries).
static TABLE: [AtomicUsize; FUNCTION_COUNT as usize] =
    [const { AtomicUsize::new(0) }; FUNCTION_COUNT as usize];

/// The binding `WdfVersionBind` made: the stub's bind information and the globals the
/// framework allocated for the driver (`Box::into_raw`, freed when unbound or reset).
#[derive(Debug)]
struct Bound {
    info: usize,
    globals: usize,
}

impl Bound {
    fn globals(&self) -> PWDF_DRIVER_GLOBALS {
        self.globals as PWDF_DRIVER_GLOBALS
    }
}

impl Drop for Bound {
    fn drop(&mut self) {
        // SAFETY: made by `Box::into_raw` in `WdfVersionBind`, freed once (here).
        drop(unsafe { Box::from_raw(self.globals()) });
    }
}

static BOUND: Mutex<Option<Bound>> = Mutex::new(None);

fn bound<R>(f: impl FnOnce(&mut Option<Bound>) -> R) -> R {
    f(&mut BOUND.lock().unwrap_or_else(PoisonError::into_inner))
}

fn violate(call: &'static str, what: String) {
    wdf_sim::framework::with(|fw| fw.violate(wdf_sim::Violation::BadArgument { call, what }));
}

fn record(call: &'static str) {
    wdf_sim::framework::with(|fw| fw.calls.push(call));
}

/// Fills the table (a new image is being loaded) and forgets any binding.
pub fn reset() {
    for e in &TABLE {
        e.store(0, Ordering::Relaxed);
    }
    for (index, shim) in wdf::entries() {
        TABLE[index].store(shim, Ordering::Release);
    }
    bound(|b| *b = None);
}

/// The globals the driver is bound with (checked by every WDF shim: KMDF finds the driver
/// through them).
pub fn check_globals(call: &'static str, globals: PWDF_DRIVER_GLOBALS) {
    let ok = bound(|b| b.as_ref().is_some_and(|b| b.globals() == globals));
    if !ok {
        violate(call, format!("WdfDriverGlobals {globals:p} is not the bound driver's"));
    }
}

/// Runs `f` on the bound driver's globals.
pub fn with_globals<R>(f: impl FnOnce(&mut WDF_DRIVER_GLOBALS) -> R) -> Option<R> {
    bound(|b| {
        b.as_mut().map(|b| {
            // SAFETY: the live globals (freed only when unbound); the lock serializes.
            f(unsafe { &mut *b.globals() })
        })
    })
}

/// Whether a binding is live.
#[must_use]
pub fn is_bound() -> bool {
    bound(|b| b.is_some())
}

/// `WdfVersionBind(DriverObject, RegistryPath, BindInfo, ComponentGlobals)`.
pub unsafe extern "win64" fn WdfVersionBind(
    _DriverObject: PDRIVER_OBJECT,
    RegistryPath: PUNICODE_STRING,
    BindInfo: *mut WdfBindInfo,
    ComponentGlobals: *mut PWDF_DRIVER_GLOBALS,
) -> NTSTATUS {
    record("WdfVersionBind");
    // SAFETY: the stub's bind information (or null).
    let Some(info) = (unsafe { BindInfo.as_mut() }) else { return STATUS_INVALID_PARAMETER };
    if ComponentGlobals.is_null() || info.FuncTable.is_null() || RegistryPath.is_null() {
        return STATUS_INVALID_PARAMETER;
    }
    if info.Version.Major != VERSION.Major
        || info.Version.Minor > VERSION.Minor
        || info.FuncCount > FUNCTION_COUNT
        || (info.FuncCount > COPIED_TABLE_MAX && info.FuncCount != FUNCTION_COUNT)
    {
        return STATUS_REVISION_MISMATCH;
    }
    if info.FuncCount <= COPIED_TABLE_MAX {
        // The older protocol copies the table; KMDF 1.33's stub never uses it.
        violate("WdfVersionBind", format!("a {}-entry table (KMDF 1.13 or older)", info.FuncCount));
        return STATUS_REVISION_MISMATCH;
    }
    if info.Size as usize == size_of::<WdfBindInfo2>() {
        let v2 = BindInfo.cast::<WdfBindInfo2>();
        // SAFETY: `Size` says the structure is the version-2 one.
        let v2 = unsafe { &*v2 };
        // The stub's globals, valid for the image's lifetime (or null).
        // SAFETY: as just said.
        let minimum = unsafe { v2.MinimumVersionRequired.as_ref() };
        if minimum.is_some_and(|m| *m > VERSION.Minor) {
            return STATUS_REVISION_MISMATCH;
        }
        // SAFETY: as above.
        if let Some(higher) = unsafe { v2.ClientVersionHigherThanFramework.as_mut() } {
            *higher = 0;
        }
        // SAFETY: as above.
        if let Some(count) = unsafe { v2.FuncCountPtr.as_mut() } {
            *count = info.FuncCount;
        }
    } else if info.Size as usize != size_of::<WdfBindInfo>() {
        violate("WdfVersionBind", format!("bind information of {} bytes", info.Size));
        return STATUS_INVALID_PARAMETER;
    }
    // SAFETY: the address of the driver's `WdfFunctions_01033` (FuncCount > 438).
    unsafe { info.FuncTable.cast::<*const WDFFUNC>().write(TABLE.as_ptr().cast()) };
    let mut globals = Box::new(WDF_DRIVER_GLOBALS {
        Driver: std::ptr::null_mut(),
        DriverFlags: 0,
        DriverTag: u32::from_le_bytes(*b"FxDr"),
        DriverName: [0; 32],
        DisplaceDriverUnload: 0,
    });
    // SAFETY: the I/O manager's registry path, valid for the call.
    let path = unsafe { wdf::unicode(RegistryPath.cast_const()) };
    let service = path.rsplit('\\').next().unwrap_or_default();
    for (slot, byte) in globals.DriverName.iter_mut().take(31).zip(service.bytes()) {
        *slot = byte.cast_signed();
    }
    let pointer: PWDF_DRIVER_GLOBALS = Box::into_raw(globals);
    bound(|b| *b = Some(Bound { info: BindInfo as usize, globals: pointer as usize }));
    // SAFETY: the stub's out-pointer (checked non-null).
    unsafe { ComponentGlobals.write(pointer) };
    STATUS_SUCCESS
}

/// `WdfVersionUnbind(RegistryPath, BindInfo, ComponentGlobals)`: the binding `WdfVersionBind`
/// made, released; another one is reported.
pub unsafe extern "win64" fn WdfVersionUnbind(
    _RegistryPath: PUNICODE_STRING,
    BindInfo: *mut WdfBindInfo,
    ComponentGlobals: PWDF_DRIVER_GLOBALS,
) -> NTSTATUS {
    record("WdfVersionUnbind");
    let released = bound(|b| match b.take() {
        Some(x) if x.info == BindInfo as usize && x.globals() == ComponentGlobals => Ok(()),
        Some(x) => {
            *b = Some(x);
            Err("bind information or globals not the ones bound")
        }
        None => Err("nothing bound"),
    });
    match released {
        Ok(()) => STATUS_SUCCESS,
        Err(what) => {
            violate("WdfVersionUnbind", what.into());
            STATUS_INVALID_PARAMETER
        }
    }
}

thread_local! {
    /// The session the harness is driving, while it calls into the image.
    static SESSION: Cell<*const Session> = const { Cell::new(std::ptr::null()) };
    /// What the framework's unload routine saw.
    static UNLOADED: Cell<Option<Result<(), &'static str>>> = const { Cell::new(None) };
}

/// Runs `f` with `session` reachable from the shims that need it (the framework's unload).
pub fn with_session<R>(session: &Session, f: impl FnOnce() -> R) -> R {
    let previous = SESSION.with(|s| s.replace(std::ptr::from_ref(session)));
    let r = f();
    SESSION.with(|s| s.set(previous));
    r
}

/// What the framework's unload routine returned, once it ran.
#[must_use]
pub fn take_unload_result() -> Option<Result<(), &'static str>> {
    UNLOADED.with(Cell::take)
}

/// The framework's unload routine, which `WdfDriverCreate` puts in `DriverObject->DriverUnload`
/// for a non-PnP driver with `EvtDriverUnload` (the stub then displaces it and calls it first):
/// the KMDF double's unload (`EvtDriverUnload`, then the object tree deleted and what is left
/// reported).
pub unsafe extern "win64" fn framework_driver_unload(_DriverObject: PDRIVER_OBJECT) {
    let session = SESSION.with(Cell::get);
    // SAFETY: set by `with_session` for the duration of the harness's call into the image.
    let result = unsafe { session.as_ref() }.map_or(Err("no session"), Session::unload);
    UNLOADED.with(|u| u.set(Some(result)));
}
