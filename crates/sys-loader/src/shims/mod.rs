//! The Win64 functions vsflow.sys's imports are bound to: a file per module it imports from
//! (`ntoskrnl.exe`: [`kernel`] and [`etw`]; `WDFLDR.SYS`: [`wdfldr`], whose function table
//! holds [`wdf`]; `fwpkclnt.sys` and `ndis.sys`: [`wfp`]; `cng.sys`: [`cng`]). Each is a thin
//! shim over the double that implements the documented behaviour (docs/SIMULATOR-FIDELITY.md);
//! none returns success without the double doing the work.

pub mod cng;
pub mod etw;
pub mod kernel;
pub mod wdf;
pub mod wdfldr;
pub mod wfp;

use sys_image::Symbol;
use wdk_sys::{DRIVER_OBJECT, PDRIVER_OBJECT};

/// A Win64 unload routine stored where the mirror types the field with the host's `"C"` ABI
/// (`DRIVER_OBJECT::DriverUnload`): the image calls it as Win64 (its `"C"`), and so does the
/// harness; the host never calls it through the host type.
#[must_use]
pub fn win64_driver_unload(
    f: unsafe extern "win64" fn(PDRIVER_OBJECT),
) -> unsafe extern "C" fn(*mut DRIVER_OBJECT) {
    // SAFETY: both are function pointers (same size); the value is only ever called as Win64
    // (by the image, and by the harness through `driver_unload_of`).
    unsafe {
        std::mem::transmute::<
            unsafe extern "win64" fn(PDRIVER_OBJECT),
            unsafe extern "C" fn(*mut DRIVER_OBJECT),
        >(f)
    }
}

/// The Win64 function a `DriverUnload` field holds (written by the image or by
/// [`win64_driver_unload`]).
#[must_use]
pub fn driver_unload_of(
    f: unsafe extern "C" fn(*mut DRIVER_OBJECT),
) -> unsafe extern "win64" fn(PDRIVER_OBJECT) {
    // SAFETY: see `win64_driver_unload`: the field holds Win64 code.
    unsafe {
        std::mem::transmute::<
            unsafe extern "C" fn(*mut DRIVER_OBJECT),
            unsafe extern "win64" fn(PDRIVER_OBJECT),
        >(f)
    }
}

/// Every import the harness implements: module, name, address.
#[must_use]
pub fn table() -> Vec<(&'static str, &'static str, usize)> {
    let mut t: Vec<(&'static str, &'static str, usize)> = Vec::new();
    macro_rules! add {
        ($module:literal, $path:path, [$($name:ident),* $(,)?]) => {{
            use $path as m;
            $(t.push(($module, stringify!($name), m::$name as *const () as usize));)*
        }};
    }
    add!(
        "ntoskrnl.exe",
        kernel,
        [
            KeAcquireSpinLockRaiseToDpc,
            KeReleaseSpinLock,
            KeTryToAcquireSpinLockAtDpcLevel,
            KeReleaseSpinLockFromDpcLevel,
            KeQueryInterruptTimePrecise,
            RtlGetVersion,
            ExAllocatePool2,
            ExFreePool,
            MmGetPhysicalMemoryRangesEx2,
            ExAllocateCacheAwareRundownProtection,
            ExFreeCacheAwareRundownProtection,
            ExAcquireRundownProtectionCacheAware,
            ExReleaseRundownProtectionCacheAware,
            ExWaitForRundownProtectionReleaseCacheAware,
            ExReInitializeRundownProtectionCacheAware,
            ExAcquireSpinLockShared,
            ExReleaseSpinLockShared,
            ExAcquireSpinLockExclusive,
            ExReleaseSpinLockExclusive,
            KeGetCurrentProcessorNumberEx,
            KeQueryMaximumProcessorCountEx,
            KeDelayExecutionThread,
            DbgPrintEx,
            KeBugCheckEx,
        ]
    );
    add!("ntoskrnl.exe", kernel::crt, [memcpy, memmove, memset, memcmp]);
    t.push(("ntoskrnl.exe", "__chkstk", kernel::crt::chkstk()));
    add!("ntoskrnl.exe", etw, [EtwRegister, EtwSetInformation, EtwWriteTransfer, EtwUnregister]);
    add!("WDFLDR.SYS", wdfldr, [WdfVersionBind, WdfVersionUnbind]);
    add!(
        "fwpkclnt.sys",
        wfp,
        [
            FwpsCalloutRegister3,
            FwpsCalloutUnregisterById0,
            FwpsCalloutUnregisterByKey0,
            FwpmEngineOpen0,
            FwpmEngineClose0,
            FwpmTransactionBegin0,
            FwpmTransactionCommit0,
            FwpmTransactionAbort0,
            FwpmProviderAdd0,
            FwpmProviderDeleteByKey0,
            FwpmSubLayerAdd0,
            FwpmSubLayerDeleteByKey0,
            FwpmCalloutAdd0,
            FwpmCalloutDeleteByKey0,
            FwpmFilterAdd0,
            FwpmFilterDeleteByKey0,
            FwpmBfeStateGet0,
            FwpmBfeStateSubscribeChanges0,
            FwpmBfeStateUnsubscribeChanges0,
            FwpsvSwitchEventsSubscribe0,
            FwpsvSwitchEventsUnsubscribe0,
            FwpsvSwitchNotifyComplete0,
        ]
    );
    add!("ndis.sys", wfp, [NdisGetDataBuffer]);
    add!("cng.sys", cng, [BCryptGenRandom]);
    t
}

/// The shim for `module!symbol` (module names compare case-insensitively, as the Windows
/// loader compares them; imports by ordinal have none).
#[must_use]
pub fn resolve(module: &str, symbol: &Symbol) -> Option<usize> {
    let Symbol::Name(name) = symbol else { return None };
    table()
        .into_iter()
        .find(|(m, n, _)| m.eq_ignore_ascii_case(module) && n == name)
        .map(|(_, _, a)| a)
}

/// Clears every shim's state (a new image is being loaded).
pub fn reset() {
    crate::trampoline::reset();
    etw::reset();
    wdfldr::reset();
}
