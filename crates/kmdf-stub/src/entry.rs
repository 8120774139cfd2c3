//! `FxDriverEntry`, the image's entry point, and the stub's unload routine (kernel target).
//!
//! The symbols the driver's wdk-sys declares (`WdfFunctions_01033`, `WdfDriverGlobals`,
//! `WdfFunctionCount`) are defined here, as `WdfDriverEntry.lib` defines them, and so is
//! `FxDriverEntry`. They are defined in assembly, not as `#[no_mangle]` Rust items, because
//! rustc exports every `#[no_mangle]` item of a cdylib (rust-lang/rust#67399, the reason
//! wdk-build ignores LNK4216 for `DriverEntry`), and the WDK's stub exports none of them: the
//! image's export table stays the one the WDK build has.

#![allow(non_upper_case_globals, reason = "the C names wdk-sys links against")]
#![allow(non_snake_case, reason = "the C names of WDFLDR.SYS")]

use core::ptr;

use wdk_sys::{
    BOOLEAN, NTSTATUS, PDRIVER_OBJECT, PDRIVER_UNLOAD, PUNICODE_STRING, PWDF_DRIVER_GLOBALS,
    STATUS_INVALID_PARAMETER, ULONG, UNICODE_STRING, WDFFUNC,
};

use crate::bind::{
    COMPONENT, FUNCTION_COUNT, MINIMUM_VERSION_REQUIRED, VERSION, WdfBindInfo, WdfBindInfo2,
};
use crate::path::PathBuffer;

core::arch::global_asm!(
    // The driver's globals, zero until `WdfVersionBind` writes them (8-byte aligned data).
    ".data",
    ".p2align 3",
    ".globl WdfFunctions_01033",
    "WdfFunctions_01033:",
    ".quad 0",
    ".globl WdfDriverGlobals",
    "WdfDriverGlobals:",
    ".quad 0",
    ".globl WdfStructures",
    "WdfStructures:",
    ".quad 0",
    ".globl WdfFunctionCount",
    "WdfFunctionCount:",
    ".long 0",
    ".globl WdfStructureCount",
    "WdfStructureCount:",
    ".long 0",
    ".globl WdfClientVersionHigherThanFramework",
    "WdfClientVersionHigherThanFramework:",
    ".byte 0",
    // The image's entry point (`/ENTRY:FxDriverEntry`): a tail jump to the Rust function.
    ".text",
    ".p2align 4",
    ".globl FxDriverEntry",
    "FxDriverEntry:",
    "jmp {entry}",
    entry = sym fx_driver_entry,
);

unsafe extern "C" {
    /// The driver's function table pointer, set by `WdfVersionBind`.
    static mut WdfFunctions_01033: *const WDFFUNC;
    /// The driver's globals, set by `WdfVersionBind`.
    static mut WdfDriverGlobals: PWDF_DRIVER_GLOBALS;
    /// Table entries the framework provides (set through `FuncCountPtr`).
    static mut WdfFunctionCount: ULONG;
    /// Structures the framework provides (set through `StructCountPtr`).
    static mut WdfStructureCount: ULONG;
    /// TRUE if the driver targets a newer framework than the running one.
    static mut WdfClientVersionHigherThanFramework: BOOLEAN;
    /// The framework's structure sizes (`WDF_STRUCT_INFO`).
    static mut WdfStructures: *mut usize;
}

static mut MINIMUM_VERSION: ULONG = MINIMUM_VERSION_REQUIRED;
static COMPONENT_NAME: [u16; 12] = COMPONENT;
static mut REGISTRY_PATH: PathBuffer = PathBuffer::new();
static mut REGISTRY_PATH_STRING: UNICODE_STRING =
    UNICODE_STRING { Length: 0, MaximumLength: 0, Buffer: ptr::null_mut() };
static mut ORIGINAL_UNLOAD: PDRIVER_UNLOAD = None;

#[allow(clippy::cast_possible_truncation, reason = "88 bytes")]
static mut BIND_INFO: WdfBindInfo2 = WdfBindInfo2 {
    V1: WdfBindInfo {
        Size: size_of::<WdfBindInfo2>() as ULONG,
        Component: COMPONENT_NAME.as_ptr().cast_mut(),
        Version: VERSION,
        FuncCount: FUNCTION_COUNT,
        FuncTable: (&raw mut WdfFunctions_01033).cast(),
        Module: ptr::null_mut(),
    },
    MinimumVersionRequired: &raw mut MINIMUM_VERSION,
    ClientVersionHigherThanFramework: &raw mut WdfClientVersionHigherThanFramework,
    FuncCountPtr: &raw mut WdfFunctionCount,
    StructCountPtr: &raw mut WdfStructureCount,
    StructTable: &raw mut WdfStructures,
};

unsafe extern "system" {
    /// The driver's `DriverEntry` (driver/src/entry.rs).
    fn DriverEntry(DriverObject: PDRIVER_OBJECT, RegistryPath: PUNICODE_STRING) -> NTSTATUS;
    /// WDFLDR.SYS: binds the driver to the framework (fxldr.h).
    fn WdfVersionBind(
        DriverObject: PDRIVER_OBJECT,
        RegistryPath: PUNICODE_STRING,
        BindInfo: *mut WdfBindInfo,
        ComponentGlobals: *mut PWDF_DRIVER_GLOBALS,
    ) -> NTSTATUS;
    /// WDFLDR.SYS: releases the binding (fxldr.h).
    fn WdfVersionUnbind(
        RegistryPath: PUNICODE_STRING,
        BindInfo: *mut WdfBindInfo,
        ComponentGlobals: PWDF_DRIVER_GLOBALS,
    ) -> NTSTATUS;
}

const fn nt_success(status: NTSTATUS) -> bool {
    status >= 0
}

/// `FxDriverEntry`, the image's entry point.
///
/// # Safety
/// Called once by the I/O manager with the driver object and the service's registry path.
unsafe extern "system" fn fx_driver_entry(
    DriverObject: PDRIVER_OBJECT,
    RegistryPath: PUNICODE_STRING,
) -> NTSTATUS {
    // SAFETY: the I/O manager's registry path, valid for this call (or null).
    let Some(path) = (unsafe { RegistryPath.as_ref() }) else { return STATUS_INVALID_PARAMETER };
    // The entry point runs once, before any other code of the image: nothing else refers to
    // the copy.
    let copy = &raw mut REGISTRY_PATH;
    // SAFETY: as just said.
    let copy = unsafe { &mut *copy };
    // SAFETY: the caller's string is valid for its length.
    if unsafe { copy.set(path) }.is_err() {
        return STATUS_INVALID_PARAMETER;
    }
    let path_string = &raw mut REGISTRY_PATH_STRING;
    // SAFETY: as above; the copy lives in the image until it unloads.
    unsafe { path_string.write(copy.unicode()) };
    let bind_info = (&raw mut BIND_INFO).cast::<WdfBindInfo>();
    let globals = &raw mut WdfDriverGlobals;
    // SAFETY: the bind information and the globals' address live in the image; the loader
    // writes `WdfFunctions_01033`, `WdfDriverGlobals` and the counts before it returns.
    let status = unsafe { WdfVersionBind(DriverObject, path_string, bind_info, globals) };
    if !nt_success(status) {
        return status;
    }
    // SAFETY: the caller's arguments, passed on; the framework is bound.
    let status = unsafe { DriverEntry(DriverObject, RegistryPath) };
    if !nt_success(status) {
        unbind();
        return status;
    }
    // SAFETY: written by `WdfVersionBind` above; read once here, before any other code runs.
    let globals = unsafe { globals.read() };
    // SAFETY: set by `WdfVersionBind`, valid until unbound.
    let displace = unsafe { globals.as_ref() }.is_some_and(|g| g.DisplaceDriverUnload != 0);
    if displace {
        // SAFETY: the I/O manager's driver object, valid while the image is loaded; the entry
        // point is the only code running.
        let object = unsafe { &mut *DriverObject };
        let original = &raw mut ORIGINAL_UNLOAD;
        // SAFETY: written only here, before the routine that reads it is installed.
        unsafe { original.write(object.DriverUnload) };
        object.DriverUnload = Some(driver_unload);
    }
    status
}

/// The stub's unload routine: the framework's (saved at entry), then unbinding.
unsafe extern "C" fn driver_unload(DriverObject: PDRIVER_OBJECT) {
    // Written once in `FxDriverEntry`, before this routine could be installed.
    let original = &raw const ORIGINAL_UNLOAD;
    // SAFETY: as just said.
    let original = unsafe { original.read() };
    if let Some(original) = original {
        // SAFETY: the routine the driver object held, with the same driver object.
        unsafe { original(DriverObject) };
    }
    unbind();
}

fn unbind() {
    let globals = &raw const WdfDriverGlobals;
    // SAFETY: written by `WdfVersionBind`; the I/O manager runs entry and unload one at a time.
    let globals = unsafe { globals.read() };
    let path = &raw mut REGISTRY_PATH_STRING;
    let bind_info = (&raw mut BIND_INFO).cast::<WdfBindInfo>();
    // SAFETY: the registry path copy and bind information live in the image; the globals are
    // the ones `WdfVersionBind` returned. The status is not actionable at unload.
    let _status = unsafe { WdfVersionUnbind(path, bind_info, globals) };
}
