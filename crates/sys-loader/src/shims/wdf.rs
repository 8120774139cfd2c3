//! The framework's function table entries vsflow.sys calls: each takes `WdfDriverGlobals`
//! first (checked against the binding), swaps the driver's callbacks in its configuration and
//! attributes for trampolines ([`crate::trampoline`]), and calls the KMDF double's function of
//! the same name (crates/wdf-sim), which applies KMDF's rules.
//!
//! Structures are passed on as the image built them, unless they carry a callback: then a copy
//! with the trampoline goes to the double, `Size` unchanged, so the double still checks the
//! size the image compiled (a layout that differs from the KMDF 1.33 one fails as KMDF fails
//! it). A callback the double does not model (a PnP `EvtDriverDeviceAdd`, queue callbacks
//! other than `EvtIoDeviceControl`) is refused and reported, never silently dropped.

#![allow(
    clippy::must_use_candidate,
    reason = "shims are called by the image, which ignores attributes"
)]
#![allow(non_snake_case, reason = "the WDF names")]
#![allow(clippy::missing_safety_doc, reason = "each entry's contract is the WDF DDI's")]

use std::mem::size_of;

use wdf_sim::exports as x;
use wdk_sys::{
    _WDF_DRIVER_INIT_FLAGS, ACCESS_MASK, BOOLEAN, LONGLONG, NTSTATUS, PCUNICODE_STRING,
    PDEVICE_OBJECT, PDRIVER_OBJECT, PULONG, PVOID, PWDF_DRIVER_CONFIG, PWDF_DRIVER_GLOBALS,
    PWDF_IO_QUEUE_CONFIG, PWDF_OBJECT_ATTRIBUTES, PWDF_TIMER_CONFIG, PWDF_WORKITEM_CONFIG,
    PWDFDEVICE_INIT, ULONG, ULONG_PTR, WDF_DRIVER_CONFIG, WDF_IO_QUEUE_CONFIG,
    WDF_OBJECT_ATTRIBUTES, WDF_TIMER_CONFIG, WDF_WORKITEM_CONFIG, WDFDEVICE, WDFDRIVER, WDFKEY,
    WDFOBJECT, WDFQUEUE, WDFREQUEST, WDFTIMER, WDFWORKITEM, wdf_table,
};

use super::wdfldr::{self, check_globals};
use crate::trampoline;

const STATUS_NOT_SUPPORTED: NTSTATUS = 0xC000_00BB_u32.cast_signed();

/// A counted string as text (empty for null or malformed; the double validates it itself).
///
/// # Safety
/// `s` is null or a valid `UNICODE_STRING`.
pub unsafe fn unicode(s: PCUNICODE_STRING) -> String {
    // SAFETY: null or valid (the caller's contract).
    let Some(us) = (unsafe { s.as_ref() }) else { return String::new() };
    if us.Buffer.is_null() || us.Length % 2 != 0 {
        return String::new();
    }
    // SAFETY: `Length` bytes of UTF-16 at `Buffer`.
    let units = unsafe { std::slice::from_raw_parts(us.Buffer, usize::from(us.Length) / 2) };
    String::from_utf16_lossy(units)
}

fn refuse(call: &'static str, what: &str) -> NTSTATUS {
    wdf_sim::framework::with(|fw| {
        fw.violate(wdf_sim::Violation::BadArgument {
            call,
            what: format!("{what}: not modelled by the harness"),
        });
    });
    STATUS_NOT_SUPPORTED
}

/// The image's attributes with their callbacks on trampolines, or `None` to pass the image's
/// pointer on unchanged (null, or a size the double will refuse).
///
/// # Safety
/// `a` is null or valid.
unsafe fn attributes(a: PWDF_OBJECT_ATTRIBUTES) -> Option<WDF_OBJECT_ATTRIBUTES> {
    // SAFETY: null or valid (the caller's contract).
    let attrs = unsafe { a.as_ref() }?;
    if attrs.Size as usize != size_of::<WDF_OBJECT_ATTRIBUTES>() {
        return None;
    }
    let mut copy = *attrs;
    copy.EvtCleanupCallback =
        copy.EvtCleanupCallback.map(|f| trampoline::object_callback::host(f as usize));
    copy.EvtDestroyCallback =
        copy.EvtDestroyCallback.map(|f| trampoline::object_callback::host(f as usize));
    Some(copy)
}

fn or_original<T>(copy: &mut Option<T>, original: *mut T) -> *mut T {
    copy.as_mut().map_or(original, |c| &raw mut *c)
}

/// The image's configuration (first field `Size`) copied with `patch` applied, or `None` to
/// pass the image's pointer on unchanged (null, or a size the double will refuse).
///
/// # Safety
/// `p` is null or valid.
unsafe fn config<C: Copy>(
    p: *mut C,
    size: impl Fn(&C) -> ULONG,
    patch: impl FnOnce(&mut C),
) -> Option<C> {
    // SAFETY: null or valid (the caller's contract).
    let mut copy = unsafe { p.as_ref() }.copied().filter(|c| size(c) as usize == size_of::<C>())?;
    patch(&mut copy);
    Some(copy)
}

/// `WdfDriverCreate`: the double's, with `EvtDriverUnload` on a trampoline; on success the
/// framework's side (fxdriverapi.cpp): the globals record the driver, its flags and pool tag;
/// `DisplaceDriverUnload` is set unless a non-PnP (or no-dispatch-override) driver gave no
/// `EvtDriverUnload`; and a driver that can unload gets the framework's unload routine in
/// `DriverObject->DriverUnload`.
pub unsafe extern "win64" fn WdfDriverCreate(
    g: PWDF_DRIVER_GLOBALS,
    DriverObject: PDRIVER_OBJECT,
    RegistryPath: PCUNICODE_STRING,
    DriverAttributes: PWDF_OBJECT_ATTRIBUTES,
    DriverConfig: PWDF_DRIVER_CONFIG,
    Driver: *mut WDFDRIVER,
) -> NTSTATUS {
    check_globals("WdfDriverCreate", g);
    // SAFETY: the image's attributes (or null).
    let mut attrs = unsafe { attributes(DriverAttributes) };
    // SAFETY: the image's configuration (or null).
    let config = unsafe { DriverConfig.as_ref() }.copied();
    let mut copy = config.filter(|c| c.Size as usize == size_of::<WDF_DRIVER_CONFIG>());
    if let Some(c) = copy.as_mut() {
        if c.EvtDriverDeviceAdd.is_some() {
            return refuse("WdfDriverCreate", "EvtDriverDeviceAdd (a PnP driver)");
        }
        c.EvtDriverUnload = c.EvtDriverUnload.map(|f| trampoline::driver_unload::host(f as usize));
    }
    let config_ptr = copy.as_mut().map_or(DriverConfig, |c| &raw mut *c);
    let attrs_ptr = or_original(&mut attrs, DriverAttributes);
    // SAFETY: the image's arguments, with the copies above in place of its structures.
    let status =
        unsafe { x::WdfDriverCreate(DriverObject, RegistryPath, attrs_ptr, config_ptr, Driver) };
    if status < 0 {
        return status;
    }
    let Some(c) = copy else { return status };
    // SAFETY: the double wrote the handle through the image's out-pointer (or it was null).
    let handle = unsafe { Driver.as_ref() }.copied().unwrap_or(std::ptr::null_mut());
    #[allow(clippy::cast_sign_loss, reason = "flag bits")]
    let non_pnp = (_WDF_DRIVER_INIT_FLAGS::WdfDriverInitNonPnpDriver
        | _WDF_DRIVER_INIT_FLAGS::WdfDriverInitNoDispatchOverride) as ULONG;
    let displace = c.DriverInitFlags & non_pnp == 0 || c.EvtDriverUnload.is_some();
    wdfldr::with_globals(|globals| {
        globals.Driver = handle;
        globals.DriverFlags |= c.DriverInitFlags;
        if c.DriverPoolTag != 0 {
            globals.DriverTag = c.DriverPoolTag;
        }
        globals.DisplaceDriverUnload = BOOLEAN::from(displace);
    });
    if displace {
        // SAFETY: the I/O manager's driver object (the double checked it is the one
        // `DriverEntry` got).
        if let Some(object) = unsafe { DriverObject.as_mut() } {
            object.DriverUnload = Some(super::win64_driver_unload(wdfldr::framework_driver_unload));
        }
    }
    status
}

macro_rules! pass {
    ($($name:ident($($arg:ident: $ty:ty),*) $(-> $ret:ty)?;)*) => {$(
        #[doc = concat!("`", stringify!($name), "`: the KMDF double's, after the globals check.")]
        pub unsafe extern "win64" fn $name(g: PWDF_DRIVER_GLOBALS, $($arg: $ty),*) $(-> $ret)? {
            check_globals(stringify!($name), g);
            // SAFETY: the image's arguments, passed on unchanged under the same contract.
            unsafe { x::$name($($arg),*) }
        }
    )*};
}

pass! {
    WdfRegistryQueryULong(Key: WDFKEY, ValueName: PCUNICODE_STRING, Value: PULONG) -> NTSTATUS;
    WdfRegistryClose(Key: WDFKEY);
    WdfControlDeviceInitAllocate(Driver: WDFDRIVER, SDDLString: PCUNICODE_STRING) -> PWDFDEVICE_INIT;
    WdfDeviceInitAssignName(DeviceInit: PWDFDEVICE_INIT, DeviceName: PCUNICODE_STRING) -> NTSTATUS;
    WdfDeviceInitFree(DeviceInit: PWDFDEVICE_INIT);
    WdfDeviceCreateSymbolicLink(Device: WDFDEVICE, SymbolicLinkName: PCUNICODE_STRING) -> NTSTATUS;
    WdfDeviceWdmGetDeviceObject(Device: WDFDEVICE) -> PDEVICE_OBJECT;
    WdfControlFinishInitializing(Device: WDFDEVICE);
    WdfRequestRetrieveInputBuffer(Request: WDFREQUEST, MinimumRequiredSize: usize, Buffer: *mut PVOID, Length: *mut usize) -> NTSTATUS;
    WdfRequestRetrieveOutputBuffer(Request: WDFREQUEST, MinimumRequiredSize: usize, Buffer: *mut PVOID, Length: *mut usize) -> NTSTATUS;
    WdfRequestCompleteWithInformation(Request: WDFREQUEST, Status: NTSTATUS, Information: ULONG_PTR);
    WdfWorkItemEnqueue(WorkItem: WDFWORKITEM);
    WdfWorkItemFlush(WorkItem: WDFWORKITEM);
    WdfTimerStart(Timer: WDFTIMER, DueTime: LONGLONG) -> BOOLEAN;
    WdfTimerStop(Timer: WDFTIMER, Wait: BOOLEAN) -> BOOLEAN;
    WdfObjectDelete(Object: WDFOBJECT);
}

/// `WdfDriverOpenParametersRegistryKey`: attributes' callbacks on trampolines.
pub unsafe extern "win64" fn WdfDriverOpenParametersRegistryKey(
    g: PWDF_DRIVER_GLOBALS,
    Driver: WDFDRIVER,
    DesiredAccess: ACCESS_MASK,
    KeyAttributes: PWDF_OBJECT_ATTRIBUTES,
    Key: *mut WDFKEY,
) -> NTSTATUS {
    check_globals("WdfDriverOpenParametersRegistryKey", g);
    // SAFETY: the image's attributes (or null).
    let mut attrs = unsafe { attributes(KeyAttributes) };
    let a = or_original(&mut attrs, KeyAttributes);
    // SAFETY: the image's arguments, attributes copied.
    unsafe { x::WdfDriverOpenParametersRegistryKey(Driver, DesiredAccess, a, Key) }
}

/// `WdfDeviceCreate`: attributes' callbacks on trampolines.
pub unsafe extern "win64" fn WdfDeviceCreate(
    g: PWDF_DRIVER_GLOBALS,
    DeviceInit: *mut PWDFDEVICE_INIT,
    DeviceAttributes: PWDF_OBJECT_ATTRIBUTES,
    Device: *mut WDFDEVICE,
) -> NTSTATUS {
    check_globals("WdfDeviceCreate", g);
    // SAFETY: the image's attributes (or null).
    let mut attrs = unsafe { attributes(DeviceAttributes) };
    let a = or_original(&mut attrs, DeviceAttributes);
    // SAFETY: the image's arguments, attributes copied.
    unsafe { x::WdfDeviceCreate(DeviceInit, a, Device) }
}

/// `WdfIoQueueCreate`: `EvtIoDeviceControl` on a trampoline; any other queue callback is
/// refused (the double models none).
pub unsafe extern "win64" fn WdfIoQueueCreate(
    g: PWDF_DRIVER_GLOBALS,
    Device: WDFDEVICE,
    Config: PWDF_IO_QUEUE_CONFIG,
    QueueAttributes: PWDF_OBJECT_ATTRIBUTES,
    Queue: *mut WDFQUEUE,
) -> NTSTATUS {
    check_globals("WdfIoQueueCreate", g);
    // SAFETY: the image's attributes (or null).
    let mut attrs = unsafe { attributes(QueueAttributes) };
    // SAFETY: the image's configuration (or null).
    let mut copy = unsafe { Config.as_ref() }
        .copied()
        .filter(|c| c.Size as usize == size_of::<WDF_IO_QUEUE_CONFIG>());
    if let Some(c) = copy.as_mut() {
        let others = c.EvtIoDefault.is_some()
            || c.EvtIoRead.is_some()
            || c.EvtIoWrite.is_some()
            || c.EvtIoInternalDeviceControl.is_some()
            || c.EvtIoStop.is_some()
            || c.EvtIoResume.is_some()
            || c.EvtIoCanceledOnQueue.is_some();
        if others {
            return refuse("WdfIoQueueCreate", "a queue callback other than EvtIoDeviceControl");
        }
        c.EvtIoDeviceControl =
            c.EvtIoDeviceControl.map(|f| trampoline::io_device_control::host(f as usize));
    }
    let config = copy.as_mut().map_or(Config, |c| &raw mut *c);
    let a = or_original(&mut attrs, QueueAttributes);
    // SAFETY: the image's arguments, with the copies above.
    unsafe { x::WdfIoQueueCreate(Device, config, a, Queue) }
}

/// `WdfWorkItemCreate`: `EvtWorkItemFunc` on a trampoline.
pub unsafe extern "win64" fn WdfWorkItemCreate(
    g: PWDF_DRIVER_GLOBALS,
    Config: PWDF_WORKITEM_CONFIG,
    Attributes: PWDF_OBJECT_ATTRIBUTES,
    WorkItem: *mut WDFWORKITEM,
) -> NTSTATUS {
    check_globals("WdfWorkItemCreate", g);
    // SAFETY: the image's attributes (or null).
    let mut attrs = unsafe { attributes(Attributes) };
    // SAFETY: the image's configuration (or null).
    let mut copy = unsafe {
        config(
            Config,
            |c: &WDF_WORKITEM_CONFIG| c.Size,
            |c| {
                c.EvtWorkItemFunc =
                    c.EvtWorkItemFunc.map(|f| trampoline::work_item::host(f as usize));
            },
        )
    };
    let (config, a) = (or_original(&mut copy, Config), or_original(&mut attrs, Attributes));
    // SAFETY: the image's arguments, with the copies above.
    unsafe { x::WdfWorkItemCreate(config, a, WorkItem) }
}

/// `WdfTimerCreate`: `EvtTimerFunc` on a trampoline.
pub unsafe extern "win64" fn WdfTimerCreate(
    g: PWDF_DRIVER_GLOBALS,
    Config: PWDF_TIMER_CONFIG,
    Attributes: PWDF_OBJECT_ATTRIBUTES,
    Timer: *mut WDFTIMER,
) -> NTSTATUS {
    check_globals("WdfTimerCreate", g);
    // SAFETY: the image's attributes (or null).
    let mut attrs = unsafe { attributes(Attributes) };
    // SAFETY: the image's configuration (or null).
    let mut copy = unsafe {
        config(
            Config,
            |c: &WDF_TIMER_CONFIG| c.Size,
            |c| {
                c.EvtTimerFunc = c.EvtTimerFunc.map(|f| trampoline::timer::host(f as usize));
            },
        )
    };
    let (config, a) = (or_original(&mut copy, Config), or_original(&mut attrs, Attributes));
    // SAFETY: the image's arguments, with the copies above.
    unsafe { x::WdfTimerCreate(config, a, Timer) }
}

/// The table entries the harness implements: (index from the mirror's `wdf_table`, shim).
#[must_use]
pub fn entries() -> Vec<(usize, usize)> {
    macro_rules! entry {
        ($($name:ident),* $(,)?) => { vec![$((wdf_table::$name::INDEX, $name as *const () as usize)),*] };
    }
    entry!(
        WdfDriverCreate,
        WdfDriverOpenParametersRegistryKey,
        WdfRegistryQueryULong,
        WdfRegistryClose,
        WdfControlDeviceInitAllocate,
        WdfDeviceInitAssignName,
        WdfDeviceInitFree,
        WdfDeviceCreate,
        WdfDeviceCreateSymbolicLink,
        WdfDeviceWdmGetDeviceObject,
        WdfControlFinishInitializing,
        WdfIoQueueCreate,
        WdfRequestRetrieveInputBuffer,
        WdfRequestRetrieveOutputBuffer,
        WdfRequestCompleteWithInformation,
        WdfWorkItemCreate,
        WdfWorkItemEnqueue,
        WdfWorkItemFlush,
        WdfTimerCreate,
        WdfTimerStart,
        WdfTimerStop,
        WdfObjectDelete,
    )
}
