//! `DriverEntry` and `EvtDriverUnload`.

use alloc::boxed::Box;
use core::ptr;
use core::sync::atomic::{AtomicPtr, AtomicUsize, Ordering};

use vsflow_callout::{ConfigValue, Driver, KernelServices as _, SETTINGS};
use wdk_sys::ntddk::RtlGetVersion;
use wdk_sys::{
    _WDF_DRIVER_INIT_FLAGS, DRIVER_OBJECT, KEY_READ, NTSTATUS, PCUNICODE_STRING, PDRIVER_OBJECT,
    RTL_OSVERSIONINFOW, STATUS_SUCCESS, ULONG, UNICODE_STRING, WDF_DRIVER_CONFIG, WDF_NO_HANDLE,
    WDF_NO_OBJECT_ATTRIBUTES, WDF_WORKITEM_CONFIG, WDFDEVICE, WDFDRIVER, WDFKEY, WDFOBJECT,
    WDFWORKITEM, call_unsafe_wdf_function_binding,
};

use crate::services::WdkServices;
use crate::wdf::{parented, size_of_u32};
use crate::{control, etw, expiry, random};

/// The running driver (set once started, taken at unload).
static DRIVER: AtomicPtr<Driver<WdkServices>> = AtomicPtr::new(ptr::null_mut());
/// The control device (`WDFDEVICE`).
static CONTROL_DEVICE: AtomicUsize = AtomicUsize::new(0);

/// `WDF_DRIVER_CONFIG::DriverPoolTag`, `'vsfl'` (reads "vsfl" in `!poolused`).
///
/// It tags the allocations KMDF makes for this driver's WDF objects. The Rust heap (`Box`, `Vec`, the flow
/// tables) goes through wdk-alloc's `ExAllocatePool2`, tagged `'rust'`.
pub const POOL_TAG: ULONG = u32::from_le_bytes(*b"vsfl");

/// The running driver, for WDF callbacks.
pub fn driver() -> Option<&'static Driver<WdkServices>> {
    // SAFETY: the pointer is a leaked box set before any callback that reads it can run and
    // cleared in unload before the box is freed.
    unsafe { DRIVER.load(Ordering::Acquire).as_ref() }
}

/// A `UNICODE_STRING` over a static UTF-16 buffer (no terminator counted).
#[must_use]
pub fn unicode(s: &'static [u16]) -> UNICODE_STRING {
    #[allow(clippy::cast_possible_truncation, reason = "static names are short")]
    let bytes = (s.len() * 2) as u16;
    UNICODE_STRING { Length: bytes, MaximumLength: bytes, Buffer: s.as_ptr().cast_mut() }
}

/// `STATUS_OBJECT_NAME_NOT_FOUND` (ntstatus.h): `WdfRegistryQueryULong` for an absent value.
#[allow(clippy::cast_possible_wrap, reason = "an NTSTATUS bit pattern")]
const STATUS_OBJECT_NAME_NOT_FOUND: NTSTATUS = 0xC000_0034_u32 as i32;

/// Longest setting name, in UTF-16 code units (every name is ASCII).
const NAME_UNITS: usize = 32;
const _: () = {
    let mut i = 0;
    while i < SETTINGS.len() {
        assert!(SETTINGS[i].name.len() <= NAME_UNITS);
        i += 1;
    }
};

/// Every value of [`SETTINGS`] as read from the key, in that order.
pub type Parameters = [(&'static str, ConfigValue); SETTINGS.len()];

/// Reads every value of the one list of settings (`vsflow_callout::SETTINGS`) from the
/// `Parameters` key with `WdfRegistryQueryULong`: absent values stay `Absent` (the defaults
/// apply), values that are not a `REG_DWORD` are `Unreadable` (refused, with an event, by
/// `DriverConfig::from_services`). No key: every value absent.
unsafe fn read_parameters(driver: WDFDRIVER) -> Parameters {
    let mut out: Parameters = SETTINGS.map(|s| (s.name, ConfigValue::Absent));
    let mut key: WDFKEY = WDF_NO_HANDLE.cast();
    // SAFETY: PASSIVE_LEVEL in DriverEntry; valid out-pointer.
    let status = unsafe {
        call_unsafe_wdf_function_binding!(
            WdfDriverOpenParametersRegistryKey,
            driver,
            KEY_READ,
            WDF_NO_OBJECT_ATTRIBUTES,
            &raw mut key
        )
    };
    if !wdk::nt_success(status) {
        return out;
    }
    for (name, slot) in &mut out {
        let mut units = [0u16; NAME_UNITS];
        let mut n = 0usize;
        for (dst, src) in units.iter_mut().zip(name.encode_utf16()) {
            *dst = src;
            n += 1;
        }
        #[allow(clippy::cast_possible_truncation, reason = "at most NAME_UNITS units")]
        let bytes = (2 * n) as u16;
        let name =
            UNICODE_STRING { Length: bytes, MaximumLength: bytes, Buffer: units.as_mut_ptr() };
        let mut value: ULONG = 0;
        // SAFETY: open key, a valid name over `units` (alive for the call), valid out-pointer.
        let status = unsafe {
            call_unsafe_wdf_function_binding!(
                WdfRegistryQueryULong,
                key,
                &raw const name,
                &raw mut value
            )
        };
        *slot = if wdk::nt_success(status) {
            ConfigValue::Dword(value)
        } else if status == STATUS_OBJECT_NAME_NOT_FOUND {
            ConfigValue::Absent
        } else {
            // STATUS_OBJECT_TYPE_MISMATCH (not a REG_DWORD), or the value could not be read.
            ConfigValue::Unreadable
        };
    }
    // SAFETY: the key opened above.
    unsafe { call_unsafe_wdf_function_binding!(WdfRegistryClose, key) };
    out
}

/// The running build (`RtlGetVersion`), `None` if it cannot be read.
fn os_build() -> Option<u32> {
    let mut info = RTL_OSVERSIONINFOW {
        dwOSVersionInfoSize: size_of_u32::<RTL_OSVERSIONINFOW>(),
        ..RTL_OSVERSIONINFOW::default()
    };
    // SAFETY: a valid structure with its size set.
    let status = unsafe { RtlGetVersion(&raw mut info) };
    wdk::nt_success(status).then_some(info.dwBuildNumber)
}

/// `DriverEntry`: a non-PnP KMDF driver with a control device.
///
/// # Safety
/// Called once by the I/O manager with valid arguments.
#[unsafe(export_name = "DriverEntry")]
pub unsafe extern "system" fn driver_entry(
    driver: &mut DRIVER_OBJECT,
    registry_path: PCUNICODE_STRING,
) -> NTSTATUS {
    // The provider first, so every later step can report; unregistered on every failure.
    etw::register();
    // SAFETY: the caller's arguments, passed on.
    let status = unsafe { create(driver, registry_path) };
    if !wdk::nt_success(status) {
        etw::unregister();
    }
    status
}

/// `DriverEntry` after the ETW provider: the WDF driver, the `Parameters` values, the control
/// device, the driver's start.
unsafe fn create(driver: &mut DRIVER_OBJECT, registry_path: PCUNICODE_STRING) -> NTSTATUS {
    let mut config = WDF_DRIVER_CONFIG {
        Size: size_of_u32::<WDF_DRIVER_CONFIG>(),
        EvtDriverUnload: Some(evt_driver_unload),
        #[allow(clippy::cast_sign_loss, reason = "a flag bit")]
        DriverInitFlags: _WDF_DRIVER_INIT_FLAGS::WdfDriverInitNonPnpDriver as ULONG,
        DriverPoolTag: POOL_TAG,
        ..WDF_DRIVER_CONFIG::default()
    };
    let mut wdf_driver: WDFDRIVER = WDF_NO_HANDLE.cast();
    // SAFETY: valid driver object and registry path from the I/O manager; valid pointers.
    let status = unsafe {
        call_unsafe_wdf_function_binding!(
            WdfDriverCreate,
            ptr::from_mut(driver) as PDRIVER_OBJECT,
            registry_path,
            WDF_NO_OBJECT_ATTRIBUTES,
            &raw mut config,
            &raw mut wdf_driver
        )
    };
    if !wdk::nt_success(status) {
        return status;
    }
    // SAFETY: PASSIVE_LEVEL; the WDF driver just created.
    let parameters = unsafe { read_parameters(wdf_driver) };
    // SAFETY: as above.
    let device = match unsafe { control::create(wdf_driver) } {
        Ok(d) => d,
        Err(status) => return status,
    };
    CONTROL_DEVICE.store(device as usize, Ordering::Release);
    let status = start(device, &parameters);
    if !wdk::nt_success(status) {
        delete_control_device();
        return status;
    }
    STATUS_SUCCESS
}

fn start(device: WDFDEVICE, parameters: &Parameters) -> NTSTATUS {
    // SAFETY: a valid control device.
    let wdm = unsafe { call_unsafe_wdf_function_binding!(WdfDeviceWdmGetDeviceObject, device) };
    let (seed, source) = random::boot_seed();
    let services = WdkServices {
        work_item: AtomicUsize::new(0),
        parameters: *parameters,
        seed,
        os_build: os_build(),
    };
    let core = match Driver::try_from_services(services, wdm.cast()) {
        Ok(d) => d,
        Err(e) => return e.to_ntstatus(),
    };
    if let random::SeedSource::Fallback(status) = source {
        core.services().log(
            vsflow_callout::LogLevel::Error,
            format_args!("BCryptGenRandom failed ({status:#x}): seeded from interrupt time"),
        );
    }
    let boxed = match vsflow_callout::alloc_util::try_box(core) {
        Ok(b) => b,
        Err(e) => return e.to_ntstatus(),
    };
    // The work item that finishes pended restores, parented to the control device.
    let mut item_config = WDF_WORKITEM_CONFIG {
        Size: size_of_u32::<WDF_WORKITEM_CONFIG>(),
        EvtWorkItemFunc: Some(evt_work_item),
        AutomaticSerialization: 0,
    };
    let mut attributes = parented(device as WDFOBJECT);
    let mut item: WDFWORKITEM = WDF_NO_HANDLE.cast();
    // SAFETY: valid configuration, attributes and out-pointer at PASSIVE_LEVEL.
    let status = unsafe {
        call_unsafe_wdf_function_binding!(
            WdfWorkItemCreate,
            &raw mut item_config,
            &raw mut attributes,
            &raw mut item
        )
    };
    if !wdk::nt_success(status) {
        return status;
    }
    boxed.services().work_item.store(item as usize, Ordering::Release);
    let raw = Box::into_raw(boxed);
    DRIVER.store(raw, Ordering::Release);
    // SAFETY: `raw` is the leaked box, valid until unload frees it.
    let core = unsafe { &*raw };
    // SAFETY: the driver stays at its address until unload stops and frees it.
    let started = unsafe { core.start() };
    if let Err(e) = started {
        DRIVER.store(ptr::null_mut(), Ordering::Release);
        // SAFETY: taken back from `Box::into_raw` above; nothing else refers to it.
        drop(unsafe { Box::from_raw(raw) });
        return e.to_ntstatus();
    }
    // SAFETY: PASSIVE_LEVEL; the control device; unload stops the timer before freeing.
    if let Err(status) = unsafe { expiry::start(device) } {
        DRIVER.store(ptr::null_mut(), Ordering::Release);
        // SAFETY: as above; `stop` unregisters from WFP before the box is freed.
        let boxed = unsafe { Box::from_raw(raw) };
        boxed.stop();
        drop(boxed);
        return status;
    }
    STATUS_SUCCESS
}

extern "C" fn evt_work_item(_item: WDFWORKITEM) {
    if let Some(d) = driver() {
        d.run_deferred();
    }
}

fn delete_control_device() {
    let device = CONTROL_DEVICE.swap(0, Ordering::AcqRel);
    if device != 0 {
        // SAFETY: the control device created in DriverEntry, deleted once.
        unsafe { call_unsafe_wdf_function_binding!(WdfObjectDelete, device as WDFOBJECT) };
    }
}

/// `EvtDriverUnload`: stop the expiry timer (waiting for a running tick), stop in the
/// documented order (unsubscribe, complete every pended notification, flush the work item,
/// unregister callouts, delete WFP objects, close the engine), free the driver, delete the
/// control device (and its work item and timer), and unregister the ETW provider last.
extern "C" fn evt_driver_unload(_driver: WDFDRIVER) {
    expiry::stop();
    let raw = DRIVER.swap(ptr::null_mut(), Ordering::AcqRel);
    if !raw.is_null() {
        // SAFETY: the box leaked in `start`; no WFP callback can reach it once `stop` returned.
        let boxed = unsafe { Box::from_raw(raw) };
        boxed.stop();
        drop(boxed);
    }
    delete_control_device();
    etw::unregister();
}
