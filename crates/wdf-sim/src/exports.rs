//! The WDF and kernel entry points driver/ calls, defined under the names xtask/wdk-mirror's
//! wdk-sys declares, so the driver's own calls land here. Each is a thin shim: it validates
//! what the framework validates (the source is cited on each), records the call, and updates
//! [`crate::framework::Framework`]. None of them calls back into the driver while holding the
//! framework lock (callbacks run from [`crate::Session`] or, for flushes and deletes, after the
//! lock is released).

#![allow(non_snake_case, reason = "the exported names are the WDK's")]
#![allow(clippy::missing_safety_doc, reason = "each DDI's contract is Microsoft's documented one")]
#![allow(
    clippy::not_unsafe_ptr_arg_deref,
    reason = "extern shims read the driver's pointers as KMDF does"
)]

use std::ffi::{CStr, c_char, c_void};
use std::mem::size_of;

use wdk_sys::{
    _WDF_DRIVER_INIT_FLAGS, _WDF_EXECUTION_LEVEL, _WDF_IO_QUEUE_DISPATCH_TYPE, ACCESS_MASK,
    BOOLEAN, DEVICE_OBJECT, KIRQL, KPROCESSOR_MODE, LONGLONG, NTSTATUS, PCUNICODE_STRING,
    PDEVICE_OBJECT, PDRIVER_OBJECT, PEX_RUNDOWN_REF_CACHE_AWARE, PEX_SPIN_LOCK, PKSPIN_LOCK,
    PLARGE_INTEGER, POOL_TYPE, PPROCESSOR_NUMBER, PRTL_OSVERSIONINFOW, PULONG, PULONG64, PVOID,
    PWDF_DRIVER_CONFIG, PWDF_IO_QUEUE_CONFIG, PWDF_OBJECT_ATTRIBUTES, PWDF_TIMER_CONFIG,
    PWDF_WORKITEM_CONFIG, PWDFDEVICE_INIT, RTL_OSVERSIONINFOW, ULONG, ULONG_PTR, ULONG64, USHORT,
    WDF_DRIVER_CONFIG, WDF_IO_QUEUE_CONFIG, WDF_OBJECT_ATTRIBUTES, WDF_TIMER_CONFIG,
    WDF_WORKITEM_CONFIG, WDFDEVICE, WDFDRIVER, WDFKEY, WDFOBJECT, WDFQUEUE, WDFREQUEST, WDFTIMER,
    WDFWORKITEM,
};

use crate::framework::{
    self, DISPATCH_LEVEL, Device, DeviceInit, Framework, Kind, Object, Queue, RegValue, Rundown,
    Timer, WorkItem,
};
use crate::status::{self, Status};
use crate::validate::{self, Options};
use crate::violation::Violation;

/// Reads a `UNICODE_STRING` as KMDF's `FxValidateUnicodeString` checks it (even lengths,
/// `Length <= MaximumLength`, a buffer when non-empty).
fn unicode(fw: &mut Framework, call: &'static str, s: PCUNICODE_STRING) -> Option<String> {
    // SAFETY: a non-null pointer is the driver's UNICODE_STRING (the DDI's contract).
    let Some(us) = (unsafe { s.as_ref() }) else {
        fw.violate(Violation::BadArgument { call, what: "null UNICODE_STRING".into() });
        return None;
    };
    if us.Length % 2 != 0
        || us.MaximumLength % 2 != 0
        || us.Length > us.MaximumLength
        || (us.Length > 0 && us.Buffer.is_null())
    {
        fw.violate(Violation::BadArgument {
            call,
            what: format!(
                "malformed UNICODE_STRING (Length {}, MaximumLength {})",
                us.Length, us.MaximumLength
            ),
        });
        return None;
    }
    if us.Length == 0 {
        return Some(String::new());
    }
    // SAFETY: `Length` bytes of UTF-16 at `Buffer` (checked above).
    let units = unsafe { std::slice::from_raw_parts(us.Buffer, usize::from(us.Length) / 2) };
    Some(String::from_utf16_lossy(units))
}

fn attributes<'a>(a: PWDF_OBJECT_ATTRIBUTES) -> Option<&'a WDF_OBJECT_ATTRIBUTES> {
    // SAFETY: a non-null attributes pointer is the driver's structure for the call.
    unsafe { a.as_ref() }
}

/// The attributes of a create DDI whose object needs a parent
/// (`FX_VALIDATE_OPTION_PARENT_REQUIRED`), checked in this order: present, `Size` exact,
/// `ParentObject` non-null.
fn parent_required_attributes<'a>(
    a: PWDF_OBJECT_ATTRIBUTES,
) -> Result<&'a WDF_OBJECT_ATTRIBUTES, Status> {
    let attrs = attributes(a).ok_or(status::WDF_PARENT_NOT_SPECIFIED)?;
    if attrs.Size as usize != validate::attributes_size() {
        return Err(status::INFO_LENGTH_MISMATCH);
    }
    if attrs.ParentObject.is_null() {
        return Err(status::WDF_PARENT_NOT_SPECIFIED);
    }
    Ok(attrs)
}

fn out<T>(fw: &mut Framework, call: &'static str, p: *mut T, value: T) {
    if p.is_null() {
        fw.violate(Violation::BadArgument { call, what: "null out-pointer".into() });
    } else {
        // SAFETY: a non-null out-pointer of the DDI.
        unsafe { p.write(value) };
    }
}

fn new_object(
    fw: &mut Framework,
    kind: Kind,
    parent: Option<usize>,
    a: Option<&WDF_OBJECT_ATTRIBUTES>,
) -> usize {
    let h = fw.handle();
    fw.objects.insert(
        h,
        Object {
            kind,
            parent,
            cleanup: a.and_then(|a| a.EvtCleanupCallback),
            destroy: a.and_then(|a| a.EvtDestroyCallback),
        },
    );
    h
}

// ---------------------------------------------------------------------------------------------
// Driver (fxdriverapi.cpp, WdfDriverCreate; wdfdriver.h)

/// `WdfDriverCreate`: `Size` exact, valid `DriverInitFlags`, PASSIVE_LEVEL, a valid registry
/// path, once per driver; attributes with PARENT_NOT_ALLOWED | EXECUTION_LEVEL_ALLOWED |
/// SYNCHRONIZATION_SCOPE_ALLOWED.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn WdfDriverCreate(
    DriverObject: PDRIVER_OBJECT,
    RegistryPath: PCUNICODE_STRING,
    DriverAttributes: PWDF_OBJECT_ATTRIBUTES,
    DriverConfig: PWDF_DRIVER_CONFIG,
    Driver: *mut WDFDRIVER,
) -> NTSTATUS {
    const VALID_FLAGS: i32 = _WDF_DRIVER_INIT_FLAGS::WdfDriverInitNonPnpDriver
        | _WDF_DRIVER_INIT_FLAGS::WdfDriverInitNoDispatchOverride
        | _WDF_DRIVER_INIT_FLAGS::WdfVerifyOn
        | _WDF_DRIVER_INIT_FLAGS::WdfVerifierOn
        | _WDF_DRIVER_INIT_FLAGS::WdfDriverInitCompanion;
    framework::with(|fw| {
        fw.calls.push("WdfDriverCreate");
        if DriverObject as usize != fw.driver_object {
            fw.violate(Violation::BadArgument {
                call: "WdfDriverCreate",
                what: "not the DRIVER_OBJECT given to DriverEntry".into(),
            });
        }
        // SAFETY: the driver's configuration structure (required parameter).
        let Some(config) = (unsafe { DriverConfig.as_ref() }) else {
            fw.violate(Violation::BadArgument {
                call: "WdfDriverCreate",
                what: "null DriverConfig".into(),
            });
            return status::INVALID_PARAMETER;
        };
        if config.Size as usize != size_of::<WDF_DRIVER_CONFIG>() {
            return status::INFO_LENGTH_MISMATCH;
        }
        #[allow(clippy::cast_possible_wrap, reason = "flag bits")]
        if config.DriverInitFlags as i32 & !VALID_FLAGS != 0 {
            return status::INVALID_PARAMETER;
        }
        if !fw.require_passive("WdfDriverCreate") {
            return status::INVALID_DEVICE_REQUEST;
        }
        if unicode(fw, "WdfDriverCreate", RegistryPath).is_none() {
            return status::INVALID_PARAMETER;
        }
        if fw.driver.is_some() {
            return status::DRIVER_INTERNAL_ERROR;
        }
        let a = attributes(DriverAttributes);
        if let Err(s) = validate::attributes(
            a,
            Options {
                parent_not_allowed: true,
                execution_level_allowed: true,
                synchronization_scope_allowed: true,
                parent_required: false,
            },
        ) {
            return s;
        }
        let h = new_object(fw, Kind::Driver { unload: config.EvtDriverUnload }, None, a);
        fw.driver = Some(h);
        out(fw, "WdfDriverCreate", Driver, h as WDFDRIVER);
        status::SUCCESS
    })
}

/// fxdriverapikm.cpp `WdfDriverOpenParametersRegistryKey`: PASSIVE_LEVEL, attributes with
/// default options; the key is a child of the driver.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn WdfDriverOpenParametersRegistryKey(
    Driver: WDFDRIVER,
    _DesiredAccess: ACCESS_MASK,
    KeyAttributes: PWDF_OBJECT_ATTRIBUTES,
    Key: *mut WDFKEY,
) -> NTSTATUS {
    framework::with(|fw| {
        fw.calls.push("WdfDriverOpenParametersRegistryKey");
        if fw.object("WdfDriverOpenParametersRegistryKey", Driver as usize, "WDFDRIVER").is_none() {
            return status::INVALID_PARAMETER;
        }
        if !fw.require_passive("WdfDriverOpenParametersRegistryKey") {
            return status::INVALID_DEVICE_REQUEST;
        }
        let a = attributes(KeyAttributes);
        if let Err(s) = validate::attributes(a, Options::default()) {
            return s;
        }
        if fw.parameters.is_none() {
            return status::OBJECT_NAME_NOT_FOUND;
        }
        let parent =
            a.map(|a| a.ParentObject as usize).filter(|p| *p != 0).or(Some(Driver as usize));
        let h = new_object(fw, Kind::Key, parent, a);
        out(fw, "WdfDriverOpenParametersRegistryKey", Key, h as WDFKEY);
        status::SUCCESS
    })
}

/// wdfregistry.h `WdfRegistryQueryULong`: `STATUS_OBJECT_NAME_NOT_FOUND` for an absent value,
/// `STATUS_OBJECT_TYPE_MISMATCH` for a value that is not `REG_DWORD` (PASSIVE_LEVEL).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn WdfRegistryQueryULong(
    Key: WDFKEY,
    ValueName: PCUNICODE_STRING,
    Value: PULONG,
) -> NTSTATUS {
    framework::with(|fw| {
        fw.calls.push("WdfRegistryQueryULong");
        if fw.object("WdfRegistryQueryULong", Key as usize, "WDFKEY").is_none() {
            return status::INVALID_PARAMETER;
        }
        if !fw.require_passive("WdfRegistryQueryULong") {
            return status::INVALID_DEVICE_REQUEST;
        }
        let Some(name) = unicode(fw, "WdfRegistryQueryULong", ValueName) else {
            return status::INVALID_PARAMETER;
        };
        let found = fw.parameters.as_ref().and_then(|p| {
            p.iter().find(|(n, _)| n.eq_ignore_ascii_case(&name)).map(|(_, v)| v.clone())
        });
        match found {
            None => status::OBJECT_NAME_NOT_FOUND,
            Some(RegValue::String(_)) => status::OBJECT_TYPE_MISMATCH,
            Some(RegValue::Dword(v)) => {
                out(fw, "WdfRegistryQueryULong", Value, v);
                status::SUCCESS
            }
        }
    })
}

/// `WdfRegistryClose`: closes and deletes the key object.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn WdfRegistryClose(Key: WDFKEY) {
    framework::with(|fw| {
        fw.calls.push("WdfRegistryClose");
        if fw.object("WdfRegistryClose", Key as usize, "WDFKEY").is_some() {
            fw.objects.remove(&(Key as usize));
        }
    });
}

// ---------------------------------------------------------------------------------------------
// Control device (wdfcontrol.h, wdfdevice.h; fxdeviceapi.cpp WdfDeviceCreate, fxdevice.cpp)

/// `WdfControlDeviceInitAllocate`: PASSIVE_LEVEL; the SDDL must be a well-formed
/// `UNICODE_STRING` (NULL result otherwise); its content is not parsed here
/// (fxdeviceinitapi.cpp, fxdeviceinit.cpp `_AllocateControlDeviceInit`).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn WdfControlDeviceInitAllocate(
    Driver: WDFDRIVER,
    SDDLString: PCUNICODE_STRING,
) -> PWDFDEVICE_INIT {
    framework::with(|fw| {
        fw.calls.push("WdfControlDeviceInitAllocate");
        if fw.object("WdfControlDeviceInitAllocate", Driver as usize, "WDFDRIVER").is_none()
            || !fw.require_passive("WdfControlDeviceInitAllocate")
        {
            return std::ptr::null_mut();
        }
        let Some(sddl) = unicode(fw, "WdfControlDeviceInitAllocate", SDDLString) else {
            return std::ptr::null_mut();
        };
        // Stored, not parsed (fxdeviceinit.cpp, _AllocateControlDeviceInit): WdfDeviceCreate
        // hands it to IoCreateDeviceSecure, which parses it.
        let h = fw.handle();
        fw.inits.insert(h, DeviceInit { sddl, name: None });
        h as PWDFDEVICE_INIT
    })
}

/// `WdfDeviceInitAssignName`: records the `\\Device\\...` name.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn WdfDeviceInitAssignName(
    DeviceInit: PWDFDEVICE_INIT,
    DeviceName: PCUNICODE_STRING,
) -> NTSTATUS {
    framework::with(|fw| {
        fw.calls.push("WdfDeviceInitAssignName");
        let Some(name) = unicode(fw, "WdfDeviceInitAssignName", DeviceName) else {
            return status::INVALID_PARAMETER;
        };
        if let Some(init) = fw.inits.get_mut(&(DeviceInit as usize)) {
            init.name = Some(name);
            status::SUCCESS
        } else {
            fw.violate(Violation::BadHandle {
                call: "WdfDeviceInitAssignName",
                handle: DeviceInit as usize,
                expected: "PWDFDEVICE_INIT",
            });
            status::INVALID_PARAMETER
        }
    })
}

/// `WdfDeviceInitFree`: frees an init structure no successful `WdfDeviceCreate` consumed.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn WdfDeviceInitFree(DeviceInit: PWDFDEVICE_INIT) {
    framework::with(|fw| {
        fw.calls.push("WdfDeviceInitFree");
        if fw.inits.remove(&(DeviceInit as usize)).is_none() {
            fw.violate(Violation::BadHandle {
                call: "WdfDeviceInitFree",
                handle: DeviceInit as usize,
                expected: "PWDFDEVICE_INIT",
            });
        }
    });
}

/// `WdfDeviceCreate`: PASSIVE_LEVEL; attributes with PARENT_NOT_ALLOWED | EXECUTION_LEVEL_ALLOWED
/// | SYNCHRONIZATION_SCOPE_ALLOWED; SDDL needs a name (`STATUS_INVALID_SECURITY_DESCR`) and must
/// be in the device-object subset ([`crate::sddl`]; `STATUS_INVALID_PARAMETER`); on success the
/// init structure is consumed and `*DeviceInit` set to NULL (fxdevice.cpp).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn WdfDeviceCreate(
    DeviceInit: *mut PWDFDEVICE_INIT,
    DeviceAttributes: PWDF_OBJECT_ATTRIBUTES,
    Device: *mut WDFDEVICE,
) -> NTSTATUS {
    framework::with(|fw| {
        fw.calls.push("WdfDeviceCreate");
        // SAFETY: the DDI's required in/out pointer.
        let Some(init_ptr) = (unsafe { DeviceInit.as_mut() }) else {
            fw.violate(Violation::BadArgument {
                call: "WdfDeviceCreate",
                what: "null DeviceInit".into(),
            });
            return status::INVALID_PARAMETER;
        };
        out(fw, "WdfDeviceCreate", Device, std::ptr::null_mut());
        if !fw.require_passive("WdfDeviceCreate") {
            return status::INVALID_DEVICE_REQUEST;
        }
        let a = attributes(DeviceAttributes);
        if let Err(s) = validate::attributes(
            a,
            Options {
                parent_not_allowed: true,
                execution_level_allowed: true,
                synchronization_scope_allowed: true,
                parent_required: false,
            },
        ) {
            return s;
        }
        let Some(init) = fw.inits.get(&(*init_ptr as usize)) else {
            fw.violate(Violation::BadHandle {
                call: "WdfDeviceCreate",
                handle: *init_ptr as usize,
                expected: "PWDFDEVICE_INIT",
            });
            return status::INVALID_PARAMETER;
        };
        let Some(name) = init.name.clone() else { return status::INVALID_SECURITY_DESCR };
        // FxDevice::CreateDevice -> IoCreateDeviceSecure parses the SDDL now ("SDDL for Device
        // Objects": its subset only); a failure leaves the init structure to the driver.
        if !crate::sddl::device_object_sddl_valid(&init.sddl) {
            return status::INVALID_PARAMETER;
        }
        let taken = fw.objects.values().any(
            |o| matches!(&o.kind, Kind::Device(d) if d.name.as_deref() == Some(name.as_str())),
        );
        if taken {
            return status::OBJECT_NAME_COLLISION;
        }
        let Some(init) = fw.inits.remove(&(*init_ptr as usize)) else {
            return status::INVALID_PARAMETER;
        };
        // SAFETY: plain data; all zeroes is a valid DEVICE_OBJECT prefix for the double.
        let wdm: Box<DEVICE_OBJECT> = Box::new(unsafe { std::mem::zeroed() });
        let device = Device {
            name: Some(name),
            sddl: init.sddl,
            initializing: true,
            links: Vec::new(),
            default_queue: None,
            wdm,
        };
        let parent = fw.driver;
        let h = new_object(fw, Kind::Device(device), parent, a);
        *init_ptr = std::ptr::null_mut();
        out(fw, "WdfDeviceCreate", Device, h as WDFDEVICE);
        status::SUCCESS
    })
}

/// `WdfDeviceCreateSymbolicLink`: PASSIVE_LEVEL; a link name in use is a collision.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn WdfDeviceCreateSymbolicLink(
    Device: WDFDEVICE,
    SymbolicLinkName: PCUNICODE_STRING,
) -> NTSTATUS {
    framework::with(|fw| {
        fw.calls.push("WdfDeviceCreateSymbolicLink");
        if !fw.require_passive("WdfDeviceCreateSymbolicLink") {
            return status::INVALID_DEVICE_REQUEST;
        }
        let Some(link) = unicode(fw, "WdfDeviceCreateSymbolicLink", SymbolicLinkName) else {
            return status::INVALID_PARAMETER;
        };
        let taken = fw.objects.values().any(|o| matches!(&o.kind, Kind::Device(d) if d.links.iter().any(|l| l.eq_ignore_ascii_case(&link))));
        if taken {
            return status::OBJECT_NAME_COLLISION;
        }
        match fw.object("WdfDeviceCreateSymbolicLink", Device as usize, "WDFDEVICE") {
            Some(Object { kind: Kind::Device(d), .. }) => {
                d.links.push(link);
                status::SUCCESS
            }
            _ => status::INVALID_PARAMETER,
        }
    })
}

/// `WdfDeviceWdmGetDeviceObject`: the device's WDM `DEVICE_OBJECT`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn WdfDeviceWdmGetDeviceObject(Device: WDFDEVICE) -> PDEVICE_OBJECT {
    framework::with(|fw| {
        fw.calls.push("WdfDeviceWdmGetDeviceObject");
        match fw.object("WdfDeviceWdmGetDeviceObject", Device as usize, "WDFDEVICE") {
            Some(Object { kind: Kind::Device(d), .. }) => std::ptr::from_mut(&mut *d.wdm),
            _ => std::ptr::null_mut(),
        }
    })
}

/// `WdfControlFinishInitializing`: clears `DO_DEVICE_INITIALIZING`; until then the I/O manager
/// refuses to open the device.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn WdfControlFinishInitializing(Device: WDFDEVICE) {
    framework::with(|fw| {
        fw.calls.push("WdfControlFinishInitializing");
        if let Some(Object { kind: Kind::Device(d), .. }) =
            fw.object("WdfControlFinishInitializing", Device as usize, "WDFDEVICE")
        {
            d.initializing = false;
        }
    });
}

// ---------------------------------------------------------------------------------------------
// Queues and requests (fxioqueueapi.cpp WdfIoQueueCreate; fxrequestapi.cpp, fxrequest.cpp)

/// `WdfIoQueueCreate`: attributes with EXECUTION_LEVEL_ALLOWED | SYNCHRONIZATION_SCOPE_ALLOWED;
/// `Size` one of the known config sizes; a default queue of a control device only before
/// `WdfControlFinishInitializing` (`STATUS_INVALID_DEVICE_STATE`), one per device.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn WdfIoQueueCreate(
    Device: WDFDEVICE,
    Config: PWDF_IO_QUEUE_CONFIG,
    QueueAttributes: PWDF_OBJECT_ATTRIBUTES,
    Queue: *mut WDFQUEUE,
) -> NTSTATUS {
    framework::with(|fw| {
        fw.calls.push("WdfIoQueueCreate");
        let a = attributes(QueueAttributes);
        if let Err(s) = validate::attributes(
            a,
            Options {
                execution_level_allowed: true,
                synchronization_scope_allowed: true,
                ..Options::default()
            },
        ) {
            return s;
        }
        // SAFETY: the DDI's required configuration.
        let Some(config) = (unsafe { Config.as_ref() }) else { return status::INVALID_PARAMETER };
        if config.Size as usize != size_of::<WDF_IO_QUEUE_CONFIG>() {
            return status::INFO_LENGTH_MISMATCH;
        }
        if config.DispatchType <= _WDF_IO_QUEUE_DISPATCH_TYPE::WdfIoQueueDispatchInvalid
            || config.DispatchType >= _WDF_IO_QUEUE_DISPATCH_TYPE::WdfIoQueueDispatchMax
        {
            return status::INVALID_PARAMETER;
        }
        if config.DefaultQueue == 0 && Queue.is_null() {
            return status::INVALID_PARAMETER;
        }
        let Some(Object { kind: Kind::Device(d), .. }) =
            fw.object("WdfIoQueueCreate", Device as usize, "WDFDEVICE")
        else {
            return status::INVALID_PARAMETER;
        };
        if config.DefaultQueue != 0 && (!d.initializing || d.default_queue.is_some()) {
            return status::INVALID_DEVICE_STATE;
        }
        // PowerManaged: fxioqueue.cpp forces it FALSE for a control (legacy) device.
        let passive =
            a.is_some_and(|a| a.ExecutionLevel == _WDF_EXECUTION_LEVEL::WdfExecutionLevelPassive);
        let queue = Queue {
            dispatch: config.DispatchType,
            device_control: config.EvtIoDeviceControl,
            passive,
            in_flight: None,
        };
        let h = new_object(fw, Kind::Queue(queue), Some(Device as usize), a);
        if config.DefaultQueue != 0
            && let Some(Object { kind: Kind::Device(d), .. }) =
                fw.objects.get_mut(&(Device as usize))
        {
            d.default_queue = Some(h);
        }
        if !Queue.is_null() {
            out(fw, "WdfIoQueueCreate", Queue, h as WDFQUEUE);
        }
        status::SUCCESS
    })
}

fn retrieve(
    call: &'static str,
    Request: WDFREQUEST,
    MinimumRequiredSize: usize,
    Buffer: *mut PVOID,
    Length: *mut usize,
    output: bool,
) -> NTSTATUS {
    framework::with(|fw| {
        fw.calls.push(call);
        fw.require_dispatch_or_below(call);
        out(fw, call, Buffer, std::ptr::null_mut());
        if !Length.is_null() {
            out(fw, call, Length, 0);
        }
        let Some(r) = fw.requests.get_mut(&(Request as usize)) else {
            fw.violate(Violation::BadHandle {
                call,
                handle: Request as usize,
                expected: "WDFREQUEST",
            });
            return status::INVALID_PARAMETER;
        };
        if r.completed.is_some() {
            fw.violate(Violation::BadHandle {
                call,
                handle: Request as usize,
                expected: "WDFREQUEST (not completed)",
            });
            return status::INVALID_PARAMETER;
        }
        let len = if output { r.output_len } else { r.input_len };
        // fxrequest.cpp GetMemoryObject: a zero-length buffer is STATUS_BUFFER_TOO_SMALL.
        if len == 0 || len < MinimumRequiredSize {
            return status::BUFFER_TOO_SMALL;
        }
        // METHOD_BUFFERED: both calls return the same system buffer.
        let p = r.buffer.as_mut_ptr().cast::<c_void>();
        out(fw, call, Buffer, p);
        if !Length.is_null() {
            out(fw, call, Length, len);
        }
        status::SUCCESS
    })
}

/// `WdfRequestRetrieveInputBuffer`: the shared system buffer and the input length.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn WdfRequestRetrieveInputBuffer(
    Request: WDFREQUEST,
    MinimumRequiredSize: usize,
    Buffer: *mut PVOID,
    Length: *mut usize,
) -> NTSTATUS {
    retrieve("WdfRequestRetrieveInputBuffer", Request, MinimumRequiredSize, Buffer, Length, false)
}

/// `WdfRequestRetrieveOutputBuffer`: the shared system buffer and the output length.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn WdfRequestRetrieveOutputBuffer(
    Request: WDFREQUEST,
    MinimumRequiredSize: usize,
    Buffer: *mut PVOID,
    Length: *mut usize,
) -> NTSTATUS {
    retrieve("WdfRequestRetrieveOutputBuffer", Request, MinimumRequiredSize, Buffer, Length, true)
}

/// `WdfRequestCompleteWithInformation`: exactly once per request; for METHOD_BUFFERED the I/O
/// manager copies `Information` bytes to the caller, so it must not exceed the output length.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn WdfRequestCompleteWithInformation(
    Request: WDFREQUEST,
    Status: NTSTATUS,
    Information: ULONG_PTR,
) {
    framework::with(|fw| {
        fw.calls.push("WdfRequestCompleteWithInformation");
        fw.require_dispatch_or_below("WdfRequestCompleteWithInformation");
        let Some(r) = fw.requests.get_mut(&(Request as usize)) else {
            fw.violate(Violation::BadHandle {
                call: "WdfRequestCompleteWithInformation",
                handle: Request as usize,
                expected: "WDFREQUEST",
            });
            return;
        };
        if r.completed.is_some() {
            fw.violate(Violation::RequestCompletedTwice { request: Request as usize });
            return;
        }
        r.completed = Some((Status, Information));
        let (queue, output_len) = (r.queue, r.output_len);
        if status::nt_success(Status) && Information > output_len as u64 {
            fw.violate(Violation::InformationTooLarge { information: Information, output_len });
        }
        if let Some(Object { kind: Kind::Queue(q), .. }) = fw.objects.get_mut(&queue)
            && q.in_flight == Some(Request as usize)
        {
            q.in_flight = None;
        }
    });
}

// ---------------------------------------------------------------------------------------------
// Work items (fxworkitemapi.cpp WdfWorkItemCreate, fxworkitem.cpp)

fn parent_device(
    fw: &mut Framework,
    call: &'static str,
    a: &WDF_OBJECT_ATTRIBUTES,
) -> Result<usize, Status> {
    let parent = a.ParentObject as usize;
    if !fw.is_live(parent) {
        fw.violate(Violation::BadHandle { call, handle: parent, expected: "a live parent object" });
        return Err(status::INVALID_PARAMETER);
    }
    // Work items and timers are parented to a device or a queue (an object under a device):
    // FxDeviceBase::_SearchForDevice, else STATUS_INVALID_DEVICE_REQUEST.
    fw.device_of(parent).map(|_| parent).ok_or(status::INVALID_DEVICE_REQUEST)
}

/// `WdfWorkItemCreate`: a parent is required (`FX_VALIDATE_OPTION_PARENT_REQUIRED`), `Size`
/// exact, `EvtWorkItemFunc` non-null, then the attributes with default options (so
/// `ExecutionLevel` must be `InheritFromParent` and the scope `InheritFromParent` or `None`).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn WdfWorkItemCreate(
    Config: PWDF_WORKITEM_CONFIG,
    Attributes: PWDF_OBJECT_ATTRIBUTES,
    WorkItem: *mut WDFWORKITEM,
) -> NTSTATUS {
    framework::with(|fw| {
        fw.calls.push("WdfWorkItemCreate");
        fw.require_dispatch_or_below("WdfWorkItemCreate");
        let attrs = match parent_required_attributes(Attributes) {
            Ok(attrs) => attrs,
            Err(s) => return s,
        };
        let a = Some(attrs);
        // SAFETY: the DDI's required configuration.
        let Some(config) = (unsafe { Config.as_ref() }) else { return status::INVALID_PARAMETER };
        if config.Size as usize != size_of::<WDF_WORKITEM_CONFIG>() {
            return status::INFO_LENGTH_MISMATCH;
        }
        if config.EvtWorkItemFunc.is_none() {
            return status::INVALID_PARAMETER;
        }
        if let Err(s) = validate::attributes(a, Options::default()) {
            return s;
        }
        let parent = match parent_device(fw, "WdfWorkItemCreate", attrs) {
            Ok(p) => p,
            Err(s) => return s,
        };
        let h = new_object(
            fw,
            Kind::WorkItem(WorkItem { func: config.EvtWorkItemFunc, queued: false }),
            Some(parent),
            a,
        );
        out(fw, "WdfWorkItemCreate", WorkItem, h as WDFWORKITEM);
        status::SUCCESS
    })
}

/// `WdfWorkItemEnqueue`: a work item already queued (not yet started) is not queued again.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn WdfWorkItemEnqueue(WorkItem: WDFWORKITEM) {
    framework::with(|fw| {
        fw.calls.push("WdfWorkItemEnqueue");
        fw.require_dispatch_or_below("WdfWorkItemEnqueue");
        if let Some(Object { kind: Kind::WorkItem(w), .. }) =
            fw.object("WdfWorkItemEnqueue", WorkItem as usize, "WDFWORKITEM")
        {
            w.queued = true;
        }
    });
}

/// `WdfWorkItemFlush`: PASSIVE_LEVEL; returns once the callback queued or running has finished
/// (the double runs a queued callback now). Never from the work item's own callback.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn WdfWorkItemFlush(WorkItem: WDFWORKITEM) {
    let run = framework::with(|fw| {
        fw.calls.push("WdfWorkItemFlush");
        if !fw.require_passive("WdfWorkItemFlush") {
            return None;
        }
        if fw.running_work_item == Some(WorkItem as usize) {
            fw.violate(Violation::WaitForOwnCallback { call: "WdfWorkItemFlush" });
            return None;
        }
        match fw.object("WdfWorkItemFlush", WorkItem as usize, "WDFWORKITEM") {
            Some(Object { kind: Kind::WorkItem(w), .. }) if w.queued => {
                w.queued = false;
                Some(w.func)
            }
            _ => None,
        }
    });
    if let Some(f) = run {
        crate::session::run_work_item(WorkItem as usize, f);
    }
}

// ---------------------------------------------------------------------------------------------
// Timers (fxtimerapi.cpp WdfTimerCreate/Start/Stop, fxtimer.cpp)

/// `WdfTimerCreate`: a parent is required; `Size` one of the known sizes; `Period` and
/// `TolerableDelay` at most `MAXLONG`; attributes with EXECUTION_LEVEL_ALLOWED; a periodic timer
/// at `PASSIVE_LEVEL` is `STATUS_NOT_SUPPORTED`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn WdfTimerCreate(
    Config: PWDF_TIMER_CONFIG,
    Attributes: PWDF_OBJECT_ATTRIBUTES,
    Timer: *mut WDFTIMER,
) -> NTSTATUS {
    const MAXLONG: u32 = 0x7FFF_FFFF;
    framework::with(|fw| {
        fw.calls.push("WdfTimerCreate");
        fw.require_dispatch_or_below("WdfTimerCreate");
        let attrs = match parent_required_attributes(Attributes) {
            Ok(attrs) => attrs,
            Err(s) => return s,
        };
        let a = Some(attrs);
        // SAFETY: the DDI's required configuration.
        let Some(config) = (unsafe { Config.as_ref() }) else { return status::INVALID_PARAMETER };
        if config.Size as usize != size_of::<WDF_TIMER_CONFIG>() {
            return status::INFO_LENGTH_MISMATCH;
        }
        if config.EvtTimerFunc.is_none()
            || config.Period > MAXLONG
            || config.TolerableDelay > MAXLONG
        {
            return status::INVALID_PARAMETER;
        }
        if config.TolerableDelay > 0 && config.UseHighResolutionTimer != 0 {
            return status::INVALID_PARAMETER;
        }
        if let Err(s) =
            validate::attributes(a, Options { execution_level_allowed: true, ..Options::default() })
        {
            return s;
        }
        let passive = attrs.ExecutionLevel == _WDF_EXECUTION_LEVEL::WdfExecutionLevelPassive;
        if config.Period > 0 && passive {
            return status::NOT_SUPPORTED;
        }
        let parent = match parent_device(fw, "WdfTimerCreate", attrs) {
            Ok(p) => p,
            Err(s) => return s,
        };
        let timer =
            Timer { func: config.EvtTimerFunc, period_ms: config.Period, passive, due: None };
        let h = new_object(fw, Kind::Timer(timer), Some(parent), a);
        out(fw, "WdfTimerCreate", Timer, h as WDFTIMER);
        status::SUCCESS
    })
}

/// `WdfTimerStart`: `DueTime` negative is relative (100 ns units), positive absolute; returns
/// whether the timer was already in the timer queue.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn WdfTimerStart(Timer: WDFTIMER, DueTime: LONGLONG) -> BOOLEAN {
    framework::with(|fw| {
        fw.calls.push("WdfTimerStart");
        fw.require_dispatch_or_below("WdfTimerStart");
        let now = fw.clock;
        let due = if DueTime < 0 {
            now.saturating_add(DueTime.unsigned_abs())
        } else {
            DueTime.unsigned_abs().max(now)
        };
        match fw.object("WdfTimerStart", Timer as usize, "WDFTIMER") {
            Some(Object { kind: Kind::Timer(t), .. }) => {
                BOOLEAN::from(t.due.replace(due).is_some())
            }
            _ => 0,
        }
    })
}

/// `WdfTimerStop`: `Wait` TRUE needs PASSIVE_LEVEL and must not be called from the timer's own
/// callback; returns whether the timer was in the timer queue.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn WdfTimerStop(Timer: WDFTIMER, Wait: BOOLEAN) -> BOOLEAN {
    framework::with(|fw| {
        fw.calls.push("WdfTimerStop");
        if Wait != 0 {
            fw.require_passive("WdfTimerStop(Wait)");
            if fw.running_timer == Some(Timer as usize) {
                fw.violate(Violation::WaitForOwnCallback { call: "WdfTimerStop" });
            }
        } else {
            fw.require_dispatch_or_below("WdfTimerStop");
        }
        match fw.object("WdfTimerStop", Timer as usize, "WDFTIMER") {
            Some(Object { kind: Kind::Timer(t), .. }) => BOOLEAN::from(t.due.take().is_some()),
            _ => 0,
        }
    })
}

// ---------------------------------------------------------------------------------------------
// Objects (fxobjectapi.cpp WdfObjectDelete)

/// `WdfObjectDelete`: deletes the object and its descendants, children first; work items are
/// flushed and timers stopped as they are disposed. Requests are completed, never deleted. A
/// device (or a tree holding one) only at PASSIVE_LEVEL (fxdevice.cpp `FxDevice::DeleteObject`:
/// `FxVerifierCheckIrqlLevel(PASSIVE_LEVEL)`, then `IoDeleteDevice`); above it the call is
/// reported and nothing is deleted.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn WdfObjectDelete(Object: WDFOBJECT) {
    let ok = framework::with(|fw| {
        fw.calls.push("WdfObjectDelete");
        fw.require_dispatch_or_below("WdfObjectDelete");
        if fw.requests.contains_key(&(Object as usize)) {
            fw.violate(Violation::BadHandle {
                call: "WdfObjectDelete",
                handle: Object as usize,
                expected: "a deletable object (a presented request is completed, not deleted)",
            });
            return false;
        }
        if !fw.is_live(Object as usize) {
            fw.violate(Violation::BadHandle {
                call: "WdfObjectDelete",
                handle: Object as usize,
                expected: "a live object",
            });
            return false;
        }
        // A control (legacy) device: FxDevice::DeleteObject checks PASSIVE_LEVEL (verifier)
        // and deletes the WDM device object (IoDeleteDevice: PASSIVE_LEVEL). Refused above it.
        let has_device = fw
            .subtree(Object as usize)
            .iter()
            .any(|h| fw.objects.get(h).is_some_and(|o| matches!(o.kind, Kind::Device(_))));
        if has_device && !fw.require_passive("WdfObjectDelete") {
            return false;
        }
        true
    });
    if ok {
        crate::session::delete_tree(Object as usize);
    }
}

// ---------------------------------------------------------------------------------------------
// Kernel (wdm.h, ntddk.h)

/// `KeAcquireSpinLockRaiseToDpc`: raises to DISPATCH_LEVEL; acquiring a lock the (single)
/// processor already holds never returns on Windows.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn KeAcquireSpinLockRaiseToDpc(SpinLock: PKSPIN_LOCK) -> KIRQL {
    framework::with(|fw| {
        fw.require_dispatch_or_below("KeAcquireSpinLockRaiseToDpc");
        let old = fw.irql;
        if fw.held_locks.contains(&(SpinLock as usize)) {
            fw.violate(Violation::SpinLockRecursion);
        } else {
            fw.held_locks.push(SpinLock as usize);
            fw.spin_irqls.insert(SpinLock as usize, old);
            // SAFETY: the driver's lock word.
            unsafe { SpinLock.write(1) };
        }
        fw.irql = DISPATCH_LEVEL;
        old
    })
}

/// `KeTryToAcquireSpinLockAtDpcLevel`: "IRQL >= `DISPATCH_LEVEL`" (lower is reported), one
/// attempt, the IRQL unchanged; `TRUE` if it took the lock. A lock the (single) processor
/// already holds is taken: `FALSE` (reported too: the driver tried a lock it holds).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn KeTryToAcquireSpinLockAtDpcLevel(SpinLock: PKSPIN_LOCK) -> BOOLEAN {
    framework::with(|fw| {
        if fw.irql < DISPATCH_LEVEL {
            let irql = fw.irql;
            fw.violate(Violation::BadArgument {
                call: "KeTryToAcquireSpinLockAtDpcLevel",
                what: format!("called at IRQL {irql}: its callers run at DISPATCH_LEVEL"),
            });
        }
        if fw.held_locks.contains(&(SpinLock as usize)) {
            fw.violate(Violation::SpinLockRecursion);
            return 0;
        }
        fw.held_locks.push(SpinLock as usize);
        // SAFETY: the driver's lock word.
        unsafe { SpinLock.write(1) };
        1
    })
}

/// `KeReleaseSpinLockFromDpcLevel`: releases a lock taken at DPC level, the IRQL unchanged;
/// "IRQL >= `DISPATCH_LEVEL`".
#[unsafe(no_mangle)]
pub unsafe extern "C" fn KeReleaseSpinLockFromDpcLevel(SpinLock: PKSPIN_LOCK) {
    framework::with(|fw| {
        if fw.irql < DISPATCH_LEVEL {
            let irql = fw.irql;
            fw.violate(Violation::BadArgument {
                call: "KeReleaseSpinLockFromDpcLevel",
                what: format!("called at IRQL {irql}: its callers run at DISPATCH_LEVEL"),
            });
        }
        if let Some(i) = fw.held_locks.iter().position(|l| *l == SpinLock as usize) {
            fw.held_locks.remove(i);
            // SAFETY: the driver's lock word.
            unsafe { SpinLock.write(0) };
            if fw.spin_irqls.remove(&(SpinLock as usize)).is_some() {
                fw.violate(Violation::BadArgument {
                    call: "KeReleaseSpinLockFromDpcLevel",
                    what: "a lock KeAcquireSpinLockRaiseToDpc took (its IRQL is not restored)"
                        .into(),
                });
            }
        } else {
            fw.violate(Violation::SpinLockNotHeld);
        }
    });
}

/// `KeReleaseSpinLock`: releases a held lock and restores the IRQL, checked as
/// [`Framework::spin_release`] says (IRQL, `NewIrql`, release order).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn KeReleaseSpinLock(SpinLock: PKSPIN_LOCK, NewIrql: KIRQL) {
    framework::with(|fw| {
        if let Some(i) = fw.held_locks.iter().position(|l| *l == SpinLock as usize) {
            fw.held_locks.remove(i);
            // SAFETY: the driver's lock word.
            unsafe { SpinLock.write(0) };
            fw.spin_release("KeReleaseSpinLock", SpinLock as usize, NewIrql);
        } else {
            fw.violate(Violation::SpinLockNotHeld);
            fw.irql = NewIrql;
        }
    });
}

/// `KeQueryInterruptTimePrecise`: the double's clock (100 ns); the QPC value is the same count.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn KeQueryInterruptTimePrecise(QpcTimeStamp: PULONG64) -> ULONG64 {
    framework::with(|fw| {
        let t = fw.clock;
        out(fw, "KeQueryInterruptTimePrecise", QpcTimeStamp, t);
        t
    })
}

/// `DbgPrintEx(ComponentId, Level, "%s", text)`: the only format the driver uses. Declared
/// variadic by the mirror, defined here with the one argument: on x86-64 System V a variadic
/// call passes integer and pointer arguments in the same registers as a fixed one.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn DbgPrintEx(
    ComponentId: ULONG,
    Level: ULONG,
    Format: *const c_char,
    Arg: *const c_char,
) -> ULONG {
    framework::with(|fw| {
        // SAFETY: NUL-terminated format (the DDI's contract; checked non-null).
        let format = (!Format.is_null())
            .then(|| unsafe { CStr::from_ptr(Format) }.to_string_lossy().into_owned());
        if format.as_deref() != Some("%s") || Arg.is_null() {
            fw.violate(Violation::BadArgument {
                call: "DbgPrintEx",
                what: format!("format {format:?}: the double reads exactly one %s argument"),
            });
            return 0;
        }
        // SAFETY: the `%s` argument is NUL-terminated (checked non-null).
        let text = unsafe { CStr::from_ptr(Arg) }.to_string_lossy().into_owned();
        fw.debug_output.push((ComponentId, Level, text));
        0
    })
}

/// `RtlGetVersion`: `dwOSVersionInfoSize` must be the size of `RTL_OSVERSIONINFOW` (or the EX
/// form, which the driver does not use); reports Windows 10.0 with the build the test chose.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn RtlGetVersion(lpVersionInformation: PRTL_OSVERSIONINFOW) -> NTSTATUS {
    framework::with(|fw| {
        fw.calls.push("RtlGetVersion");
        // SAFETY: the caller's structure.
        let Some(info) = (unsafe { lpVersionInformation.as_mut() }) else {
            return status::INVALID_PARAMETER;
        };
        if info.dwOSVersionInfoSize as usize != size_of::<RTL_OSVERSIONINFOW>() {
            return status::INVALID_PARAMETER;
        }
        info.dwMajorVersion = 10;
        info.dwMinorVersion = 0;
        info.dwBuildNumber = fw.os_build;
        info.dwPlatformId = 2;
        status::SUCCESS
    })
}

/// `ExAllocatePool2`: the pool double ([`crate::pool`]). driver/ built for the host allocates
/// from the host heap; vsflow.sys as linked for Windows reaches this through wdk-alloc.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ExAllocatePool2(Flags: u64, NumberOfBytes: u64, Tag: ULONG) -> PVOID {
    framework::with(|fw| {
        let irql = fw.irql;
        let mut v = Vec::new();
        let size = usize::try_from(NumberOfBytes).unwrap_or(usize::MAX);
        let p = fw.pool.allocate(Flags, size, Tag, irql, &mut v);
        fw.violations.extend(v);
        p.cast()
    })
}

/// `ExFreePool`: back to the pool double; a pointer it did not hand out is reported.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ExFreePool(P: PVOID) {
    framework::with(|fw| {
        let irql = fw.irql;
        let mut v = Vec::new();
        fw.pool.free(P as usize, irql, &mut v);
        fw.violations.extend(v);
    });
}

/// Pool tag of the block `MmGetPhysicalMemoryRangesEx2` returns (the memory manager's own; the
/// caller frees it).
const MM_RANGES_TAG: u32 = u32::from_le_bytes(*b"MmPh");

/// `MmGetPhysicalMemoryRangesEx2(PartitionObject, Flags)` (ntddk.h; Microsoft Learn,
/// "MmGetPhysicalMemoryRangesEx2 function"): `PASSIVE_LEVEL`; returns "a nonpaged pool block
/// which contains the physical memory ranges", address and byte-count pairs, "the last entry
/// contains zero for both", NULL on failure; the caller frees it (here with `ExFreePool`, which
/// the pool double checks; the page does not name the routine: verify on Windows). The double
/// reports its memory as two ranges (below and above 4 GiB, as a PC's firmware map has), NULL
/// for a non-NULL partition object (not modelled) or when the test set no memory.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn MmGetPhysicalMemoryRangesEx2(
    PartitionObject: PVOID,
    Flags: ULONG,
) -> wdk_sys::PPHYSICAL_MEMORY_RANGE {
    framework::with(|fw| {
        if !fw.require_passive("MmGetPhysicalMemoryRangesEx2") {
            return std::ptr::null_mut();
        }
        if !PartitionObject.is_null() || Flags != 0 || fw.physical_memory == 0 {
            return std::ptr::null_mut();
        }
        let low = fw.physical_memory.min(3 << 30);
        let ranges = [(0x1000u64, low), (4 << 30, fw.physical_memory - low), (0, 0)];
        let ranges: Vec<(u64, u64)> = ranges.into_iter().filter(|r| r.1 != 0 || r.0 == 0).collect();
        let bytes = ranges.len() * size_of::<wdk_sys::PHYSICAL_MEMORY_RANGE>();
        let mut v = Vec::new();
        let p = fw.pool.allocate(crate::pool::POOL_FLAG_NON_PAGED, bytes, MM_RANGES_TAG, 0, &mut v);
        fw.violations.extend(v);
        #[allow(
            clippy::cast_ptr_alignment,
            reason = "the pool double aligns every block to 16 bytes (MEMORY_ALLOCATION_ALIGNMENT)"
        )]
        let p = p.cast::<wdk_sys::PHYSICAL_MEMORY_RANGE>();
        if p.is_null() {
            return p;
        }
        for (i, (base, len)) in ranges.into_iter().enumerate() {
            let r = wdk_sys::PHYSICAL_MEMORY_RANGE {
                BaseAddress: wdk_sys::LARGE_INTEGER { QuadPart: base.cast_signed() },
                NumberOfBytes: wdk_sys::LARGE_INTEGER { QuadPart: len.cast_signed() },
            };
            // SAFETY: `bytes` were allocated for every entry: entry `i` is inside the block.
            let entry = unsafe { p.add(i) };
            // SAFETY: inside the block, 16-byte aligned (the pool's alignment).
            unsafe { entry.write(r) };
        }
        p
    })
}

// ---------------------------------------------------------------------------------------------
// Rundown protection (wdm.h; "Run-Down Protection" in the kernel-mode driver architecture docs)

/// `ExAllocateCacheAwareRundownProtection`: nonpaged, initialized (not run down).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ExAllocateCacheAwareRundownProtection(
    PoolType: POOL_TYPE,
    _PoolTag: ULONG,
) -> PEX_RUNDOWN_REF_CACHE_AWARE {
    framework::with(|fw| {
        fw.require_dispatch_or_below("ExAllocateCacheAwareRundownProtection");
        // Non-paged pool without the NX bit (`NonPagedPool`, 0) is executable: memory integrity
        // asks for `NonPagedPoolNx` (Driver Verifier code integrity 0x2000).
        if PoolType & wdk_sys::_POOL_TYPE::NonPagedPoolNx == 0 && PoolType & 1 == 0 {
            fw.violate(Violation::BadArgument {
                call: "ExAllocateCacheAwareRundownProtection",
                what: format!(
                    "pool type {PoolType}: executable non-paged pool (NonPagedPoolNx expected)"
                ),
            });
            return std::ptr::null_mut();
        }
        let h = fw.handle();
        fw.rundowns.insert(h, Rundown::default());
        h as PEX_RUNDOWN_REF_CACHE_AWARE
    })
}

/// `ExFreeCacheAwareRundownProtection`: only with no reference held.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ExFreeCacheAwareRundownProtection(
    RunRefCacheAware: PEX_RUNDOWN_REF_CACHE_AWARE,
) {
    framework::with(|fw| match fw.rundowns.remove(&(RunRefCacheAware as usize)) {
        None => fw.violate(Violation::BadHandle {
            call: "ExFreeCacheAwareRundownProtection",
            handle: RunRefCacheAware as usize,
            expected: "EX_RUNDOWN_REF_CACHE_AWARE",
        }),
        Some(r) if r.refs > 0 => fw.violate(Violation::BadArgument {
            call: "ExFreeCacheAwareRundownProtection",
            what: format!("{} reference(s) still held", r.refs),
        }),
        Some(_) => {}
    });
}

/// `ExAcquireRundownProtectionCacheAware`: FALSE once run down.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ExAcquireRundownProtectionCacheAware(
    RunRefCacheAware: PEX_RUNDOWN_REF_CACHE_AWARE,
) -> BOOLEAN {
    framework::with(|fw| {
        fw.require_dispatch_or_below("ExAcquireRundownProtectionCacheAware");
        match fw.rundowns.get_mut(&(RunRefCacheAware as usize)) {
            Some(r) if !r.run_down => {
                r.refs += 1;
                1
            }
            Some(_) => 0,
            None => {
                fw.violate(Violation::BadHandle {
                    call: "ExAcquireRundownProtectionCacheAware",
                    handle: RunRefCacheAware as usize,
                    expected: "EX_RUNDOWN_REF_CACHE_AWARE",
                });
                0
            }
        }
    })
}

/// `ExReleaseRundownProtectionCacheAware`: drops a reference held.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ExReleaseRundownProtectionCacheAware(
    RunRefCacheAware: PEX_RUNDOWN_REF_CACHE_AWARE,
) {
    framework::with(|fw| match fw.rundowns.get_mut(&(RunRefCacheAware as usize)) {
        Some(r) if r.refs > 0 => r.refs -= 1,
        _ => fw.violate(Violation::BadArgument {
            call: "ExReleaseRundownProtectionCacheAware",
            what: "no reference held".into(),
        }),
    });
}

/// `ExWaitForRundownProtectionReleaseCacheAware`: `IRQL < DISPATCH_LEVEL`; waits for every
/// reference. With one simulated processor a reference still held can never be released while
/// the caller waits: that is a deadlock, reported.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ExWaitForRundownProtectionReleaseCacheAware(
    RunRef: PEX_RUNDOWN_REF_CACHE_AWARE,
) {
    framework::with(|fw| {
        fw.require_passive("ExWaitForRundownProtectionReleaseCacheAware");
        match fw.rundowns.get_mut(&(RunRef as usize)) {
            Some(r) => {
                r.run_down = true;
                if r.refs > 0 {
                    let refs = r.refs;
                    fw.violate(Violation::BadArgument {
                        call: "ExWaitForRundownProtectionReleaseCacheAware",
                        what: format!(
                            "waits on {refs} reference(s) its own thread holds (deadlock)"
                        ),
                    });
                }
            }
            None => fw.violate(Violation::BadHandle {
                call: "ExWaitForRundownProtectionReleaseCacheAware",
                handle: RunRef as usize,
                expected: "EX_RUNDOWN_REF_CACHE_AWARE",
            }),
        }
    });
}

/// `ExReInitializeRundownProtectionCacheAware`: after a completed wait.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ExReInitializeRundownProtectionCacheAware(
    RunRefCacheAware: PEX_RUNDOWN_REF_CACHE_AWARE,
) {
    framework::with(|fw| match fw.rundowns.get_mut(&(RunRefCacheAware as usize)) {
        Some(r) if r.run_down && r.refs == 0 => r.run_down = false,
        _ => fw.violate(Violation::BadArgument {
            call: "ExReInitializeRundownProtectionCacheAware",
            what: "not run down (or references held)".into(),
        }),
    });
}

// ---------------------------------------------------------------------------------------------
// Reader/writer spin locks (wdm.h `EX_SPIN_LOCK`; "Reader/Writer Spin Locks")

fn rw_acquire(call: &'static str, lock: PEX_SPIN_LOCK, exclusive: bool) -> KIRQL {
    framework::with(|fw| {
        fw.require_dispatch_or_below(call);
        let old = fw.irql;
        let (shared, held_exclusive) =
            fw.rw_locks.get(&(lock as usize)).copied().unwrap_or((0, false));
        // One simulated processor: a holder is the caller. "The caller must not already own
        // this spin lock ... Recursive acquisition of a spin lock causes deadlock"
        // (ExAcquireSpinLockShared/Exclusive), in either mode: a second shared hold deadlocks
        // as soon as a writer waits between the two, an upgrade at once.
        if held_exclusive || shared > 0 {
            fw.violate(Violation::SpinLockRecursion);
        } else {
            let entry = fw.rw_locks.entry(lock as usize).or_insert((0, false));
            if exclusive {
                entry.1 = true;
            } else {
                entry.0 += 1;
            }
            fw.spin_irqls.insert(lock as usize, old);
            // SAFETY: the driver's lock word (nonzero while held).
            unsafe { lock.write(1) };
        }
        fw.irql = DISPATCH_LEVEL;
        old
    })
}

fn rw_release(call: &'static str, lock: PEX_SPIN_LOCK, old: KIRQL, exclusive: bool) {
    framework::with(|fw| {
        let held = fw.rw_locks.get_mut(&(lock as usize));
        let ok = match held {
            Some(h) if exclusive && h.1 => {
                h.1 = false;
                true
            }
            Some(h) if !exclusive && h.0 > 0 => {
                h.0 -= 1;
                true
            }
            _ => false,
        };
        if ok {
            if fw.rw_locks.get(&(lock as usize)).is_some_and(|h| h.0 == 0 && !h.1) {
                fw.rw_locks.remove(&(lock as usize));
                // SAFETY: the driver's lock word (zero when free).
                unsafe { lock.write(0) };
            }
            fw.spin_release(call, lock as usize, old);
        } else {
            fw.violate(Violation::BadArgument { call, what: "not held that way".into() });
            fw.irql = old;
        }
    });
}

/// `ExAcquireSpinLockShared`: raises to `DISPATCH_LEVEL`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ExAcquireSpinLockShared(SpinLock: PEX_SPIN_LOCK) -> KIRQL {
    rw_acquire("ExAcquireSpinLockShared", SpinLock, false)
}

/// `ExReleaseSpinLockShared`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ExReleaseSpinLockShared(SpinLock: PEX_SPIN_LOCK, OldIrql: KIRQL) {
    rw_release("ExReleaseSpinLockShared", SpinLock, OldIrql, false);
}

/// `ExAcquireSpinLockExclusive`: raises to `DISPATCH_LEVEL`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ExAcquireSpinLockExclusive(SpinLock: PEX_SPIN_LOCK) -> KIRQL {
    rw_acquire("ExAcquireSpinLockExclusive", SpinLock, true)
}

/// `ExReleaseSpinLockExclusive`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ExReleaseSpinLockExclusive(SpinLock: PEX_SPIN_LOCK, OldIrql: KIRQL) {
    rw_release("ExReleaseSpinLockExclusive", SpinLock, OldIrql, true);
}

// ---------------------------------------------------------------------------------------------
// Randomness (bcrypt.h; BCryptGenRandom, kernel mode through Cng.lib: cng.sys)

/// `BCRYPT_RNG_USE_ENTROPY_IN_BUFFER` (ignored from Windows 8 on).
const BCRYPT_RNG_USE_ENTROPY_IN_BUFFER: ULONG = 0x1;
/// `BCRYPT_USE_SYSTEM_PREFERRED_RNG`.
const BCRYPT_USE_SYSTEM_PREFERRED_RNG: ULONG = 0x2;
/// SplitMix64's increment.
pub(crate) const SPLITMIX_GAMMA: u64 = 0x9E37_79B9_7F4A_7C15;

/// SplitMix64's output function.
pub(crate) const fn splitmix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// `BCryptGenRandom`, as its page documents it for kernel mode: with
/// `BCRYPT_USE_SYSTEM_PREFERRED_RNG` `hAlgorithm` must be NULL and the call is "only supported at
/// `PASSIVE_LEVEL` IRQL" (reported above it, and `STATUS_INVALID_PARAMETER`); a handle the
/// double never opened (it has no algorithm providers) is `STATUS_INVALID_HANDLE`; a NULL
/// buffer with a length, or an unknown flag, `STATUS_INVALID_PARAMETER`. The bytes come from a
/// SplitMix64 stream whose state a test may set (`Session::set_rng_state`).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn BCryptGenRandom(
    hAlgorithm: PVOID,
    pbBuffer: *mut u8,
    cbBuffer: ULONG,
    dwFlags: ULONG,
) -> NTSTATUS {
    framework::with(|fw| {
        fw.calls.push("BCryptGenRandom");
        if dwFlags & !(BCRYPT_RNG_USE_ENTROPY_IN_BUFFER | BCRYPT_USE_SYSTEM_PREFERRED_RNG) != 0 {
            return status::INVALID_PARAMETER;
        }
        if dwFlags & BCRYPT_USE_SYSTEM_PREFERRED_RNG == 0 {
            return status::INVALID_HANDLE;
        }
        if !hAlgorithm.is_null() {
            return status::INVALID_PARAMETER;
        }
        if !fw.require_passive("BCryptGenRandom") {
            return status::INVALID_PARAMETER;
        }
        if pbBuffer.is_null() && cbBuffer > 0 {
            return status::INVALID_PARAMETER;
        }
        if fw.rng_fails {
            return status::UNSUCCESSFUL;
        }
        if cbBuffer == 0 {
            return status::SUCCESS;
        }
        // SAFETY: the caller's buffer of `cbBuffer` bytes (the DDI's contract), checked non-null.
        let out = unsafe { std::slice::from_raw_parts_mut(pbBuffer, cbBuffer as usize) };
        for chunk in out.chunks_mut(8) {
            fw.rng_state = fw.rng_state.wrapping_add(SPLITMIX_GAMMA);
            let word = splitmix64(fw.rng_state).to_le_bytes();
            chunk.copy_from_slice(&word[..chunk.len()]);
        }
        status::SUCCESS
    })
}

// ---------------------------------------------------------------------------------------------
// Processors and waits

/// `KeGetCurrentProcessorNumberEx`: the simulated processor's index (group 0).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn KeGetCurrentProcessorNumberEx(ProcNumber: PPROCESSOR_NUMBER) -> ULONG {
    framework::with(|fw| {
        let n = fw.current_processor;
        if !ProcNumber.is_null() {
            #[allow(clippy::cast_possible_truncation, reason = "at most 64 processors in a group")]
            out(
                fw,
                "KeGetCurrentProcessorNumberEx",
                ProcNumber,
                wdk_sys::PROCESSOR_NUMBER { Group: 0, Number: n as u8, Reserved: 0 },
            );
        }
        n
    })
}

/// `KeQueryMaximumProcessorCountEx`: `ALL_PROCESSOR_GROUPS` (0xFFFF) counts every group.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn KeQueryMaximumProcessorCountEx(GroupNumber: USHORT) -> ULONG {
    framework::with(|fw| {
        if GroupNumber == 0 || u32::from(GroupNumber) == wdk_sys::ALL_PROCESSOR_GROUPS {
            fw.processors
        } else {
            0
        }
    })
}

/// `KeDelayExecutionThread`: `IRQL <= APC_LEVEL`; a negative interval is relative (100 ns).
/// The double's clock moves on by the interval instead of sleeping.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn KeDelayExecutionThread(
    _WaitMode: KPROCESSOR_MODE,
    _Alertable: BOOLEAN,
    Interval: PLARGE_INTEGER,
) -> NTSTATUS {
    framework::with(|fw| {
        fw.require_passive("KeDelayExecutionThread");
        // SAFETY: the caller's interval.
        let Some(interval) = (unsafe { Interval.as_ref() }) else {
            return status::INVALID_PARAMETER;
        };
        // SAFETY: every bit pattern of the union is a valid LONGLONG.
        let q = unsafe { interval.QuadPart };
        if q < 0 {
            fw.clock = fw.clock.saturating_add(q.unsigned_abs());
        } else {
            fw.clock = fw.clock.max(q.unsigned_abs());
        }
        status::SUCCESS
    })
}
