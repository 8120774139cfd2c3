//! The KMDF double's rules, each exercised by a small driver written here against the mirror's
//! wdk-sys (the same declarations driver/ uses). docs/SIMULATOR-FIDELITY.md ("KMDF double")
//! names each test beside the behaviour and its source.

#![allow(
    clippy::significant_drop_tightening,
    reason = "each test holds its Session to the end: it serializes driver images"
)]
#![allow(clippy::cast_possible_truncation, reason = "small structure sizes and constants")]
#![allow(clippy::many_single_char_names, reason = "s (session), h (handles) and friends")]

use std::sync::atomic::{AtomicUsize, Ordering};

use wdf_sim::validate::attributes_init;
use wdf_sim::{Ioctl, Session, Violation, status};
use wdk_sys::{
    _WDF_DRIVER_INIT_FLAGS, _WDF_EXECUTION_LEVEL, _WDF_IO_QUEUE_DISPATCH_TYPE, DRIVER_OBJECT,
    KSPIN_LOCK, NTSTATUS, PCUNICODE_STRING, PDRIVER_OBJECT, PFN_WDF_IO_QUEUE_IO_DEVICE_CONTROL,
    RTL_OSVERSIONINFOW, ULONG, UNICODE_STRING, WDF_DRIVER_CONFIG, WDF_IO_QUEUE_CONFIG,
    WDF_NO_OBJECT_ATTRIBUTES, WDF_OBJECT_ATTRIBUTES, WDF_TIMER_CONFIG, WDF_WORKITEM_CONFIG,
    WDFDEVICE, WDFDRIVER, WDFOBJECT, WDFQUEUE, WDFREQUEST, WDFTIMER, WDFWORKITEM,
    call_unsafe_wdf_function_binding,
};

fn size<T>() -> ULONG {
    std::mem::size_of::<T>() as ULONG
}

fn wide(s: &str) -> Vec<u16> {
    s.encode_utf16().collect()
}

fn ustr(w: &[u16]) -> UNICODE_STRING {
    let n = (w.len() * 2) as u16;
    UNICODE_STRING { Length: n, MaximumLength: n, Buffer: w.as_ptr().cast_mut() }
}

static DRIVER: AtomicUsize = AtomicUsize::new(0);
static DEVICE: AtomicUsize = AtomicUsize::new(0);
static RUNS: AtomicUsize = AtomicUsize::new(0);
static COMPLETE_TWICE: AtomicUsize = AtomicUsize::new(0);

extern "C" fn unload(_: WDFDRIVER) {
    let d = DEVICE.swap(0, Ordering::SeqCst);
    if d != 0 {
        ddi::delete(d as WDFOBJECT);
    }
}

extern "C" fn work(_: WDFWORKITEM) {
    RUNS.fetch_add(1, Ordering::SeqCst);
}

extern "C" fn tick(_: WDFTIMER) {
    RUNS.fetch_add(1, Ordering::SeqCst);
}

extern "C" fn echo(_q: WDFQUEUE, request: WDFREQUEST, out_len: usize, in_len: usize, code: ULONG) {
    let mut input: *mut std::ffi::c_void = std::ptr::null_mut();
    let mut output: *mut std::ffi::c_void = std::ptr::null_mut();
    let (mut il, mut ol) = (0usize, 0usize);
    // SAFETY: the request presented; valid out-pointers.
    let si = unsafe {
        call_unsafe_wdf_function_binding!(
            WdfRequestRetrieveInputBuffer,
            request,
            0,
            &raw mut input,
            &raw mut il
        )
    };
    // SAFETY: as above.
    let so = unsafe {
        call_unsafe_wdf_function_binding!(
            WdfRequestRetrieveOutputBuffer,
            request,
            0,
            &raw mut output,
            &raw mut ol
        )
    };
    assert_eq!((si, so), (0, 0));
    assert_eq!((il, ol), (in_len, out_len));
    // METHOD_BUFFERED: one system buffer for both directions.
    assert_eq!(input, output);
    let info = if code == 0x2222_0000 { out_len as u64 + 1 } else { in_len.min(out_len) as u64 };
    // SAFETY: completing the request this callback owns.
    unsafe {
        call_unsafe_wdf_function_binding!(WdfRequestCompleteWithInformation, request, 0, info);
    };
    if COMPLETE_TWICE.load(Ordering::SeqCst) != 0 {
        // SAFETY: deliberately the misuse under test.
        unsafe {
            call_unsafe_wdf_function_binding!(WdfRequestCompleteWithInformation, request, 0, 0);
        };
    }
}

/// A minimal non-PnP driver: `WdfDriverCreate` with an unload callback (or none).
unsafe extern "system" fn entry(driver: &mut DRIVER_OBJECT, path: PCUNICODE_STRING) -> NTSTATUS {
    let config = WDF_DRIVER_CONFIG {
        Size: size::<WDF_DRIVER_CONFIG>(),
        EvtDriverUnload: Some(unload),
        DriverInitFlags: _WDF_DRIVER_INIT_FLAGS::WdfDriverInitNonPnpDriver as ULONG,
        ..WDF_DRIVER_CONFIG::default()
    };
    let (s, d) = driver_create(driver, path, config);
    DRIVER.store(d as usize, Ordering::SeqCst);
    s
}

/// `WdfDriverCreate` with `config` and no object attributes, as a `DriverEntry` of this file
/// calls it; returns the status and the driver handle written.
fn driver_create(
    driver: &mut DRIVER_OBJECT,
    path: PCUNICODE_STRING,
    mut config: WDF_DRIVER_CONFIG,
) -> (NTSTATUS, WDFDRIVER) {
    let mut d: WDFDRIVER = std::ptr::null_mut();
    // SAFETY: the arguments DriverEntry received; the config and out-pointer are locals (a
    // wrong `config.Size` is what a test may put under test).
    let s = unsafe {
        call_unsafe_wdf_function_binding!(
            WdfDriverCreate,
            std::ptr::from_mut(driver) as PDRIVER_OBJECT,
            path,
            WDF_NO_OBJECT_ATTRIBUTES,
            &raw mut config,
            &raw mut d
        )
    };
    (s, d)
}

fn loaded() -> Session {
    let s = Session::new();
    RUNS.store(0, Ordering::SeqCst);
    COMPLETE_TWICE.store(0, Ordering::SeqCst);
    // SAFETY: this file's entry point.
    assert_eq!(unsafe { s.driver_entry(entry) }, 0);
    s
}

/// Safe wrappers, one DDI each, with the arguments the tests pass (valid pointers and
/// strings that outlive the call).
mod ddi {
    use super::{size, ustr};
    use wdk_sys::ntddk::{
        ExAcquireSpinLockShared, ExReleaseSpinLockShared, KeAcquireSpinLockRaiseToDpc,
        KeReleaseSpinLock, KeReleaseSpinLockFromDpcLevel, KeTryToAcquireSpinLockAtDpcLevel,
        RtlGetVersion,
    };
    use wdk_sys::{
        EX_SPIN_LOCK, KIRQL, KSPIN_LOCK, NTSTATUS, PWDFDEVICE_INIT, RTL_OSVERSIONINFOW,
        WDF_IO_QUEUE_CONFIG, WDF_NO_OBJECT_ATTRIBUTES, WDF_OBJECT_ATTRIBUTES, WDFDEVICE, WDFDRIVER,
        WDFKEY, WDFOBJECT, WDFQUEUE, WDFREQUEST, WDFWORKITEM, call_unsafe_wdf_function_binding,
    };

    pub fn init_allocate(driver: WDFDRIVER, sddl: &[u16]) -> PWDFDEVICE_INIT {
        let sddl = ustr(sddl);
        // SAFETY: a driver handle and a string valid for the call.
        unsafe {
            call_unsafe_wdf_function_binding!(WdfControlDeviceInitAllocate, driver, &raw const sddl)
        }
    }

    pub fn assign_name(init: PWDFDEVICE_INIT, name: &[u16]) -> NTSTATUS {
        let name = ustr(name);
        // SAFETY: as above.
        unsafe { call_unsafe_wdf_function_binding!(WdfDeviceInitAssignName, init, &raw const name) }
    }

    pub fn device_create(init: &mut PWDFDEVICE_INIT) -> (NTSTATUS, WDFDEVICE) {
        let mut device: WDFDEVICE = std::ptr::null_mut();
        // SAFETY: valid in/out pointers.
        let s = unsafe {
            call_unsafe_wdf_function_binding!(
                WdfDeviceCreate,
                std::ptr::from_mut(init),
                WDF_NO_OBJECT_ATTRIBUTES,
                &raw mut device
            )
        };
        (s, device)
    }

    pub fn symbolic_link(device: WDFDEVICE, link: &[u16]) -> NTSTATUS {
        let link = ustr(link);
        // SAFETY: as above.
        unsafe {
            call_unsafe_wdf_function_binding!(WdfDeviceCreateSymbolicLink, device, &raw const link)
        }
    }

    pub fn queue_create(
        device: WDFDEVICE,
        mut config: WDF_IO_QUEUE_CONFIG,
        attrs: Option<WDF_OBJECT_ATTRIBUTES>,
    ) -> NTSTATUS {
        let mut attrs = attrs;
        let a = attrs.as_mut().map_or(WDF_NO_OBJECT_ATTRIBUTES, std::ptr::from_mut);
        let mut q: WDFQUEUE = std::ptr::null_mut();
        // SAFETY: valid configuration, attributes and out-pointer.
        unsafe {
            call_unsafe_wdf_function_binding!(
                WdfIoQueueCreate,
                device,
                &raw mut config,
                a,
                &raw mut q
            )
        }
    }

    pub fn open_parameters(driver: WDFDRIVER) -> (NTSTATUS, WDFKEY) {
        let mut key: WDFKEY = std::ptr::null_mut();
        // SAFETY: valid out-pointer.
        let s = unsafe {
            call_unsafe_wdf_function_binding!(
                WdfDriverOpenParametersRegistryKey,
                driver,
                0x20019,
                WDF_NO_OBJECT_ATTRIBUTES,
                &raw mut key
            )
        };
        (s, key)
    }

    pub fn query_ulong(key: WDFKEY, name: &[u16]) -> (NTSTATUS, u32) {
        let name = ustr(name);
        let mut v = 0u32;
        // SAFETY: valid string and out-pointer.
        let s = unsafe {
            call_unsafe_wdf_function_binding!(
                WdfRegistryQueryULong,
                key,
                &raw const name,
                &raw mut v
            )
        };
        (s, v)
    }

    pub fn close_key(key: WDFKEY) {
        // SAFETY: a key the test opened.
        unsafe { call_unsafe_wdf_function_binding!(WdfRegistryClose, key) };
    }

    pub fn enqueue(item: WDFWORKITEM) {
        // SAFETY: a work item the test created.
        unsafe { call_unsafe_wdf_function_binding!(WdfWorkItemEnqueue, item) };
    }

    pub fn flush(item: WDFWORKITEM) {
        // SAFETY: as above, at PASSIVE_LEVEL.
        unsafe { call_unsafe_wdf_function_binding!(WdfWorkItemFlush, item) };
    }

    pub fn complete(request: WDFREQUEST, information: u64) {
        // SAFETY: a request presented to the test's callback.
        unsafe {
            call_unsafe_wdf_function_binding!(
                WdfRequestCompleteWithInformation,
                request,
                0,
                information
            );
        };
    }

    pub fn delete(object: WDFOBJECT) {
        // SAFETY: an object the test created.
        unsafe { call_unsafe_wdf_function_binding!(WdfObjectDelete, object) };
    }

    pub fn spin_acquire(lock: &mut KSPIN_LOCK) -> KIRQL {
        // SAFETY: a valid lock word.
        unsafe { KeAcquireSpinLockRaiseToDpc(std::ptr::from_mut(lock)) }
    }

    pub fn spin_release(lock: &mut KSPIN_LOCK, irql: KIRQL) {
        // SAFETY: as above.
        unsafe { KeReleaseSpinLock(std::ptr::from_mut(lock), irql) };
    }

    pub fn spin_try_at_dpc(lock: &mut KSPIN_LOCK) -> bool {
        // SAFETY: a valid lock word.
        unsafe { KeTryToAcquireSpinLockAtDpcLevel(std::ptr::from_mut(lock)) != 0 }
    }

    pub fn spin_release_from_dpc(lock: &mut KSPIN_LOCK) {
        // SAFETY: as above.
        unsafe { KeReleaseSpinLockFromDpcLevel(std::ptr::from_mut(lock)) };
    }

    pub fn shared_acquire(lock: &mut EX_SPIN_LOCK) -> KIRQL {
        // SAFETY: a valid lock word.
        unsafe { ExAcquireSpinLockShared(std::ptr::from_mut(lock)) }
    }

    pub fn shared_release(lock: &mut EX_SPIN_LOCK, irql: KIRQL) {
        // SAFETY: as above.
        unsafe { ExReleaseSpinLockShared(std::ptr::from_mut(lock), irql) };
    }

    pub fn rtl_get_version(info: &mut RTL_OSVERSIONINFOW) -> NTSTATUS {
        // SAFETY: a valid structure.
        unsafe { RtlGetVersion(std::ptr::from_mut(info)) }
    }

    pub fn os_version_info(len: u32) -> RTL_OSVERSIONINFOW {
        let _ = size::<RTL_OSVERSIONINFOW>;
        RTL_OSVERSIONINFOW { dwOSVersionInfoSize: len, ..RTL_OSVERSIONINFOW::default() }
    }
}

fn driver() -> WDFDRIVER {
    DRIVER.load(Ordering::SeqCst) as WDFDRIVER
}

/// A control device named `name` with a default queue (`device_control` for its IOCTLs), not
/// yet finished (`WdfControlFinishInitializing`).
fn device_with_queue(
    name: &str,
    device_control: PFN_WDF_IO_QUEUE_IO_DEVICE_CONTROL,
    queue_attrs: Option<WDF_OBJECT_ATTRIBUTES>,
) -> WDFDEVICE {
    let mut init = ddi::init_allocate(driver(), &wide("D:P(A;;GA;;;SY)(A;;GA;;;BA)"));
    assert!(!init.is_null());
    assert_eq!(ddi::assign_name(init, &wide(&format!("\\Device\\{name}"))), 0);
    let (st, device) = ddi::device_create(&mut init);
    assert_eq!(st, 0);
    assert!(init.is_null(), "WdfDeviceCreate consumes the init structure");
    assert_eq!(ddi::symbolic_link(device, &wide(&format!("\\DosDevices\\{name}"))), 0);
    let config = WDF_IO_QUEUE_CONFIG { EvtIoDeviceControl: device_control, ..queue_config() };
    assert_eq!(ddi::queue_create(device, config, queue_attrs), 0);
    DEVICE.store(device as usize, Ordering::SeqCst);
    device
}

fn control_device(queue_attrs: Option<WDF_OBJECT_ATTRIBUTES>) -> WDFDEVICE {
    device_with_queue("simtest", Some(echo), queue_attrs)
}

fn queue_config() -> WDF_IO_QUEUE_CONFIG {
    WDF_IO_QUEUE_CONFIG {
        Size: size::<WDF_IO_QUEUE_CONFIG>(),
        DispatchType: _WDF_IO_QUEUE_DISPATCH_TYPE::WdfIoQueueDispatchSequential,
        DefaultQueue: 1,
        EvtIoDeviceControl: Some(echo),
        ..WDF_IO_QUEUE_CONFIG::default()
    }
}

fn finish(device: WDFDEVICE) {
    // SAFETY: the device created above.
    unsafe { call_unsafe_wdf_function_binding!(WdfControlFinishInitializing, device) };
}

fn work_item(parent: WDFOBJECT, attrs: Option<WDF_OBJECT_ATTRIBUTES>) -> (NTSTATUS, WDFWORKITEM) {
    let mut config = WDF_WORKITEM_CONFIG {
        Size: size::<WDF_WORKITEM_CONFIG>(),
        EvtWorkItemFunc: Some(work),
        AutomaticSerialization: 0,
    };
    let mut a = attrs
        .unwrap_or_else(|| WDF_OBJECT_ATTRIBUTES { ParentObject: parent, ..attributes_init() });
    let mut item: WDFWORKITEM = std::ptr::null_mut();
    // SAFETY: valid pointers.
    let s = unsafe {
        call_unsafe_wdf_function_binding!(
            WdfWorkItemCreate,
            &raw mut config,
            &raw mut a,
            &raw mut item
        )
    };
    (s, item)
}

fn timer(parent: WDFOBJECT, period: u32, level: i32) -> (NTSTATUS, WDFTIMER) {
    let mut config = WDF_TIMER_CONFIG {
        Size: size::<WDF_TIMER_CONFIG>(),
        EvtTimerFunc: Some(tick),
        Period: period,
        ..WDF_TIMER_CONFIG::default()
    };
    let mut a =
        WDF_OBJECT_ATTRIBUTES { ParentObject: parent, ExecutionLevel: level, ..attributes_init() };
    let mut t: WDFTIMER = std::ptr::null_mut();
    // SAFETY: valid pointers.
    let s = unsafe {
        call_unsafe_wdf_function_binding!(WdfTimerCreate, &raw mut config, &raw mut a, &raw mut t)
    };
    (s, t)
}

#[test]
fn no_io_until_finish_initializing_and_no_default_queue_after_it() {
    let s = loaded();
    let device = control_device(None);
    assert_eq!(s.ioctl(0x0022_0000, b"abc", 8), Ioctl::Refused(status::NO_SUCH_DEVICE));
    finish(device);
    assert_eq!(ddi::queue_create(device, queue_config(), None), status::INVALID_DEVICE_STATE);
    assert!(matches!(s.ioctl(0x0022_0000, b"abc", 8), Ioctl::Completed { status: 0, .. }));
    s.unload().expect("unloads");
    assert_eq!(s.violations(), []);
}

#[test]
fn method_buffered_shares_one_buffer_and_copies_back_information_bytes() {
    let s = loaded();
    finish(control_device(None));
    // Input "hello", output 3: Information 3, the first 3 bytes of the shared buffer come back.
    assert_eq!(
        s.ioctl(0x0022_0000, b"hello", 3),
        Ioctl::Completed { status: 0, information: 3, output: b"hel".to_vec() }
    );
    // Information larger than the output buffer is a misuse.
    let _ = s.ioctl(0x2222_0000, b"x", 2);
    assert!(
        s.violations().contains(&Violation::InformationTooLarge { information: 3, output_len: 2 })
    );
    s.unload().expect("unloads");
}

#[test]
fn a_request_completed_twice_is_reported() {
    let s = loaded();
    finish(control_device(None));
    COMPLETE_TWICE.store(1, Ordering::SeqCst);
    let _ = s.ioctl(0x0022_0000, b"a", 1);
    assert!(s.violations().iter().any(|v| matches!(v, Violation::RequestCompletedTwice { .. })));
    s.unload().expect("unloads");
}

#[test]
fn requests_are_presented_at_dispatch_unless_the_queue_is_passive() {
    // The queue's callback runs above PASSIVE_LEVEL unless its ExecutionLevel is passive: a
    // passive-only DDI from the callback is then reported.
    extern "C" fn registry_in_ioctl(
        _q: WDFQUEUE,
        request: WDFREQUEST,
        _o: usize,
        _i: usize,
        _c: ULONG,
    ) {
        let (_, key) = ddi::open_parameters(driver());
        if !key.is_null() {
            ddi::close_key(key);
        }
        ddi::complete(request, 0);
    }
    for (passive, expect_violation) in [(false, true), (true, false)] {
        let s = loaded();
        let attrs = passive.then(|| WDF_OBJECT_ATTRIBUTES {
            ExecutionLevel: _WDF_EXECUTION_LEVEL::WdfExecutionLevelPassive,
            ..attributes_init()
        });
        finish(device_with_queue("irqltest", Some(registry_in_ioctl), attrs));
        let _ = s.ioctl(0x0022_0000, b"", 0);
        let flagged = s.violations().iter().any(|v| {
            matches!(v, Violation::IrqlTooHigh { call: "WdfDriverOpenParametersRegistryKey", .. })
        });
        assert_eq!(flagged, expect_violation, "passive queue: {passive}");
        s.unload().expect("unloads");
    }
}

#[test]
fn sddl_without_a_name_is_refused_and_an_unfreed_init_is_reported() {
    let s = loaded();
    let mut init = ddi::init_allocate(driver(), &wide("D:P(A;;GA;;;SY)"));
    let (st, _) = ddi::device_create(&mut init);
    assert_eq!(st, status::INVALID_SECURITY_DESCR);
    assert!(!init.is_null(), "a failed create leaves the init structure to the driver");
    // The SDDL is stored, not parsed, at allocation (see
    // `a_malformed_sddl_fails_device_create_not_init_allocate`); this one is left unfreed too.
    assert!(!ddi::init_allocate(driver(), &wide("not sddl")).is_null());
    s.unload().expect("unloads");
    assert!(
        s.violations().iter().any(
            |v| matches!(v, Violation::LeftAtUnload { what } if what.contains("WDFDEVICE_INIT"))
        )
    );
}

#[test]
fn work_item_rules_parent_attributes_coalescing_and_flush() {
    let s = loaded();
    let device = control_device(None);
    finish(device);
    let parent = device as WDFOBJECT;
    // Zeroed attributes (ExecutionLevel/SynchronizationScope 0 = Invalid).
    let zeroed = WDF_OBJECT_ATTRIBUTES {
        Size: size::<WDF_OBJECT_ATTRIBUTES>(),
        ParentObject: parent,
        ..WDF_OBJECT_ATTRIBUTES::default()
    };
    assert_eq!(work_item(parent, Some(zeroed)).0, status::WDF_OBJECT_ATTRIBUTES_INVALID);
    // No parent; a parent that is not under a device; an explicit execution level.
    assert_eq!(work_item(parent, Some(attributes_init())).0, status::WDF_PARENT_NOT_SPECIFIED);
    assert_eq!(work_item(driver() as WDFOBJECT, None).0, status::INVALID_DEVICE_REQUEST);
    let passive = WDF_OBJECT_ATTRIBUTES {
        ParentObject: parent,
        ExecutionLevel: _WDF_EXECUTION_LEVEL::WdfExecutionLevelPassive,
        ..attributes_init()
    };
    assert_eq!(work_item(parent, Some(passive)).0, status::WDF_EXECUTION_LEVEL_INVALID);
    let (st, item) = work_item(parent, None);
    assert_eq!(st, 0);
    ddi::enqueue(item);
    ddi::enqueue(item);
    assert_eq!(s.run_work_items(), 1, "enqueueing a queued work item does not queue it again");
    // Flush at PASSIVE_LEVEL runs the queued callback before returning.
    ddi::enqueue(item);
    ddi::flush(item);
    assert_eq!(RUNS.load(Ordering::SeqCst), 2);
    assert_eq!(s.run_work_items(), 0);
    s.unload().expect("unloads");
    assert_eq!(s.violations(), []);
    assert!(s.live_objects().is_empty(), "the device's work item went with it");
}

#[test]
fn timer_rules_periodic_passive_refused_and_periodic_rearm() {
    let s = loaded();
    let device = control_device(None) as WDFOBJECT;
    finish(device.cast());
    assert_eq!(
        timer(device, 1000, _WDF_EXECUTION_LEVEL::WdfExecutionLevelPassive).0,
        status::NOT_SUPPORTED
    );
    assert_eq!(
        timer(device, 0x8000_0000, _WDF_EXECUTION_LEVEL::WdfExecutionLevelInheritFromParent).0,
        status::INVALID_PARAMETER
    );
    let (st, t) = timer(device, 100, _WDF_EXECUTION_LEVEL::WdfExecutionLevelInheritFromParent);
    assert_eq!(st, 0);
    // SAFETY: the timer created above; relative due time 100 ms.
    assert_eq!(unsafe { call_unsafe_wdf_function_binding!(WdfTimerStart, t, -1_000_000) }, 0);
    // 1 s: the first tick at 100 ms, then every 100 ms.
    assert_eq!(s.advance(10_000_000), 10);
    // SAFETY: as above; PASSIVE_LEVEL.
    assert_eq!(unsafe { call_unsafe_wdf_function_binding!(WdfTimerStop, t, 1) }, 1);
    assert_eq!(s.advance(10_000_000), 0);
    s.unload().expect("unloads");
    assert_eq!(s.violations(), []);
}

#[test]
fn kernel_rules_spin_lock_recursion_and_rtl_get_version_size() {
    let s = loaded();
    s.set_os_build(19_045);
    let mut lock: KSPIN_LOCK = 0;
    let old = ddi::spin_acquire(&mut lock);
    // The second acquisition is the misuse under test.
    let _ = ddi::spin_acquire(&mut lock);
    ddi::spin_release(&mut lock, old);
    assert!(s.violations().contains(&Violation::SpinLockRecursion));
    let mut info = ddi::os_version_info(8);
    assert_eq!(ddi::rtl_get_version(&mut info), status::INVALID_PARAMETER);
    let mut info = ddi::os_version_info(size::<RTL_OSVERSIONINFOW>());
    assert_eq!(ddi::rtl_get_version(&mut info), 0);
    assert_eq!((info.dwMajorVersion, info.dwBuildNumber), (10, 19_045));
    s.unload().expect("unloads");
}

/// `KeTryToAcquireSpinLockAtDpcLevel` and `KeReleaseSpinLockFromDpcLevel` (wdm.h: "IRQL >=
/// `DISPATCH_LEVEL`", the IRQL unchanged): taken at DPC level under another lock, a lock is
/// taken once (a second try, by its holder, is `FALSE` and reported); a call at `PASSIVE_LEVEL`
/// and a DPC-level release of a lock `KeAcquireSpinLockRaiseToDpc` took are reported.
#[test]
fn kernel_rules_spin_locks_at_dpc_level() {
    let s = loaded();
    let (mut outer, mut inner) = (0 as KSPIN_LOCK, 0 as KSPIN_LOCK);
    let old = ddi::spin_acquire(&mut outer);
    assert!(ddi::spin_try_at_dpc(&mut inner), "a free lock is taken");
    assert_eq!(s.violations(), [], "used as documented");
    assert!(!ddi::spin_try_at_dpc(&mut inner), "a taken lock is not");
    assert_eq!(s.violations(), [Violation::SpinLockRecursion], "its holder tried it again");
    ddi::spin_release_from_dpc(&mut inner);
    ddi::spin_release(&mut outer, old);
    assert_eq!(s.violations().len(), 1, "released as documented");
    // At PASSIVE_LEVEL: reported.
    assert!(ddi::spin_try_at_dpc(&mut inner));
    ddi::spin_release_from_dpc(&mut inner);
    assert_eq!(s.violations().len(), 3, "{:?}", s.violations());
    // A raised lock released at DPC level: its IRQL is never restored.
    let _ = ddi::spin_acquire(&mut outer);
    ddi::spin_release_from_dpc(&mut outer);
    assert_eq!(s.violations().len(), 4, "{:?}", s.violations());
}

#[test]
fn parameters_key_absent_values_and_types() {
    let s = loaded();
    s.set_parameter("A", 7);
    s.set_parameter_string("B", "x");
    let (st, key) = ddi::open_parameters(driver());
    assert_eq!(st, 0);
    assert_eq!(ddi::query_ulong(key, &wide("A")), (0, 7));
    assert_eq!(ddi::query_ulong(key, &wide("B")).0, status::OBJECT_TYPE_MISMATCH);
    assert_eq!(ddi::query_ulong(key, &wide("C")).0, status::OBJECT_NAME_NOT_FOUND);
    ddi::close_key(key);
    s.remove_parameters_key();
    assert_eq!(ddi::open_parameters(driver()).0, status::OBJECT_NAME_NOT_FOUND);
    s.unload().expect("unloads");
    assert_eq!(s.violations(), []);
}

#[test]
fn a_config_of_the_wrong_size_is_a_length_mismatch_and_a_driver_without_unload_cannot_stop() {
    unsafe extern "system" fn bad_size(
        driver: &mut DRIVER_OBJECT,
        path: PCUNICODE_STRING,
    ) -> NTSTATUS {
        let config = WDF_DRIVER_CONFIG { Size: 8, ..WDF_DRIVER_CONFIG::default() };
        driver_create(driver, path, config).0
    }
    unsafe extern "system" fn no_unload(
        driver: &mut DRIVER_OBJECT,
        path: PCUNICODE_STRING,
    ) -> NTSTATUS {
        let config = WDF_DRIVER_CONFIG {
            Size: size::<WDF_DRIVER_CONFIG>(),
            DriverInitFlags: 1,
            ..WDF_DRIVER_CONFIG::default()
        };
        driver_create(driver, path, config).0
    }
    let s = Session::new();
    // SAFETY: this file's entry points.
    assert_eq!(unsafe { s.driver_entry(bad_size) }, status::INFO_LENGTH_MISMATCH);
    drop(s);
    let s = Session::new();
    // SAFETY: as above.
    assert_eq!(unsafe { s.driver_entry(no_unload) }, 0);
    assert!(s.unload().is_err());
}

#[test]
fn leftovers_at_unload_are_reported() {
    extern "C" fn never_complete(_q: WDFQUEUE, _r: WDFREQUEST, _o: usize, _i: usize, _c: ULONG) {}
    let s = loaded();
    finish(device_with_queue("pending", Some(never_complete), None));
    assert_eq!(s.ioctl(0x0022_0000, b"a", 1), Ioctl::Pending);
    // Sequential dispatch: the next request waits for the first to complete.
    assert_eq!(s.ioctl(0x0022_0000, b"b", 1), Ioctl::Refused(status::INVALID_DEVICE_STATE));
    wdf_sim::etw::register("Test.Provider", [0; 16]);
    s.unload().expect("unloads");
    let v = s.violations();
    assert!(
        v.iter().any(
            |v| matches!(v, Violation::LeftAtUnload { what } if what.contains("Test.Provider"))
        ),
        "{v:?}"
    );
    assert!(
        v.iter().any(
            |v| matches!(v, Violation::LeftAtUnload { what } if what.contains("never completed"))
        ),
        "{v:?}"
    );
}

#[test]
fn a_second_shared_acquisition_of_an_ex_spin_lock_by_its_owner_is_reported() {
    // ExAcquireSpinLockShared: "The caller must not already own this spin lock ... Recursive
    // acquisition of a spin lock causes deadlock" (it does as soon as a writer waits).
    let s = loaded();
    let mut lock: wdk_sys::EX_SPIN_LOCK = 0;
    let first = ddi::shared_acquire(&mut lock);
    // The second shared acquisition is the misuse under test.
    let second = ddi::shared_acquire(&mut lock);
    ddi::shared_release(&mut lock, second);
    ddi::shared_release(&mut lock, first);
    assert!(s.violations().contains(&Violation::SpinLockRecursion), "{:?}", s.violations());
    s.unload().expect("unloads");
}

#[test]
fn spin_locks_released_out_of_order_or_with_another_irql_are_reported() {
    // KeReleaseSpinLock: "Callers of this routine are running at IRQL = DISPATCH_LEVEL"; "The
    // input NewIrql value must be the OldIrql returned by KeAcquireSpinLock".
    let s = loaded();
    let (mut a, mut b): (KSPIN_LOCK, KSPIN_LOCK) = (0, 0);
    let old_a = ddi::spin_acquire(&mut a);
    let old_b = ddi::spin_acquire(&mut b);
    assert_eq!((old_a, old_b), (0, 2));
    // Out of order: `a` first restores PASSIVE_LEVEL while `b` is still held.
    ddi::spin_release(&mut a, old_a);
    ddi::spin_release(&mut b, old_b);
    let v = s.violations();
    assert!(
        v.iter().any(|v| matches!(v, Violation::BadArgument { call: "KeReleaseSpinLock", .. })),
        "out-of-order release not reported: {v:?}"
    );
    s.unload().expect("unloads");
    drop(s);
    // In order, but with another IRQL than the acquisition returned.
    let s = loaded();
    let mut c: KSPIN_LOCK = 0;
    let old = ddi::spin_acquire(&mut c);
    ddi::spin_release(&mut c, old + 1);
    assert!(
        s.violations()
            .iter()
            .any(|v| matches!(v, Violation::BadArgument { call: "KeReleaseSpinLock", .. })),
        "{:?}",
        s.violations()
    );
    s.unload().expect("unloads");
    drop(s);
    // In order, each with its own IRQL: clean.
    let s = loaded();
    let (mut a, mut b): (KSPIN_LOCK, KSPIN_LOCK) = (0, 0);
    let old_a = ddi::spin_acquire(&mut a);
    let old_b = ddi::spin_acquire(&mut b);
    ddi::spin_release(&mut b, old_b);
    ddi::spin_release(&mut a, old_a);
    s.unload().expect("unloads");
    assert_eq!(s.violations(), []);
}

#[test]
fn deleting_the_control_device_at_dispatch_level_is_refused() {
    // fxdevice.cpp, FxDevice::DeleteObject for a control (legacy) device: verifier check for
    // PASSIVE_LEVEL, then IoDeleteDevice (PASSIVE_LEVEL only).
    let s = loaded();
    let device = control_device(None);
    finish(device);
    let mut lock: KSPIN_LOCK = 0;
    let old = ddi::spin_acquire(&mut lock);
    ddi::delete(device as WDFOBJECT);
    ddi::spin_release(&mut lock, old);
    assert!(
        s.violations().iter().any(|v| matches!(
            v,
            Violation::IrqlTooHigh { call: "WdfObjectDelete", irql: 2, max: 0 }
        )),
        "{:?}",
        s.violations()
    );
    assert_eq!(
        s.control_device().map(|d| d.0),
        Some("\\Device\\simtest".to_owned()),
        "not deleted"
    );
    s.unload().expect("unloads");
}

#[test]
fn a_malformed_sddl_fails_device_create_not_init_allocate() {
    // fxdeviceinitapi.cpp: WdfControlDeviceInitAllocate only validates the UNICODE_STRING and
    // stores a copy (WDFDEVICE_INIT::_AllocateControlDeviceInit); the SDDL is parsed when the
    // device object is created (fxdevice.cpp FxDevice::CreateDevice -> IoCreateDeviceSecure),
    // so WdfDeviceCreate fails and leaves the init structure to the driver.
    let s = loaded();
    let mut init = ddi::init_allocate(driver(), &wide("not sddl"));
    assert!(!init.is_null(), "the string is stored, not parsed, at allocation");
    assert_eq!(ddi::assign_name(init, &wide("\\Device\\badsddl")), 0);
    let (st, device) = ddi::device_create(&mut init);
    assert!(st < 0, "WdfDeviceCreate fails on the SDDL: {st:#x}");
    assert!(device.is_null());
    assert!(!init.is_null(), "a failed create leaves the init structure to the driver");
    // SAFETY: the init structure the failed create left to this driver.
    unsafe { call_unsafe_wdf_function_binding!(WdfDeviceInitFree, init) };
    s.unload().expect("unloads");
    assert_eq!(s.violations(), []);
}

#[test]
fn bcrypt_gen_random_needs_a_null_handle_the_system_rng_flag_and_passive_level() {
    // BCryptGenRandom: with BCRYPT_USE_SYSTEM_PREFERRED_RNG "The hAlgorithm parameter must be
    // NULL" and it "is only supported at PASSIVE_LEVEL IRQL"; STATUS_INVALID_HANDLE for a bad
    // handle, STATUS_INVALID_PARAMETER for bad parameters.
    use wdf_sim::exports::BCryptGenRandom;
    let s = loaded();
    s.set_rng_state(7);
    let mut buf = [0u8; 12];
    let draw = |h: usize, b: &mut [u8], flags: u32| {
        // SAFETY: a buffer of `b.len()` bytes; the handle value is what is under test.
        unsafe { BCryptGenRandom(h as *mut _, b.as_mut_ptr(), b.len() as u32, flags) }
    };
    assert_eq!(draw(0, &mut buf, 2), 0);
    assert_eq!(buf[..8], Session::next_random(7).to_le_bytes(), "the RNG's stream");
    assert_ne!(buf[8..], [0; 4], "a partial last word is filled too");
    assert_eq!(draw(0x1234, &mut buf, 2), status::INVALID_PARAMETER, "handle with the flag");
    assert_eq!(draw(0, &mut buf, 0), status::INVALID_HANDLE, "no handle, no flag");
    assert_eq!(draw(0, &mut buf, 2 | 0x100), status::INVALID_PARAMETER, "unknown flag");
    assert_eq!(s.violations(), []);
    let mut lock: KSPIN_LOCK = 0;
    let old = ddi::spin_acquire(&mut lock);
    assert_eq!(draw(0, &mut buf, 2), status::INVALID_PARAMETER, "at DISPATCH_LEVEL");
    ddi::spin_release(&mut lock, old);
    assert!(
        s.violations().iter().any(|v| matches!(
            v,
            Violation::IrqlTooHigh { call: "BCryptGenRandom", irql: 2, max: 0 }
        ))
    );
    s.unload().expect("unloads");
}

#[test]
fn pool_blocks_never_freed_and_executable_pool_are_reported() {
    let s = loaded();
    // SAFETY: a DDI call with plain arguments.
    let kept = unsafe { wdk_sys::ntddk::ExAllocatePool2(0x40, 24, u32::from_le_bytes(*b"rust")) };
    assert!(!kept.is_null());
    assert_eq!(s.pool_live().len(), 1);
    // SAFETY: as above.
    let freed = unsafe { wdk_sys::ntddk::ExAllocatePool2(0x40, 8, u32::from_le_bytes(*b"vsfl")) };
    // SAFETY: the block just allocated, freed once.
    unsafe { wdk_sys::ntddk::ExFreePool(freed) };
    // SAFETY: as above (POOL_FLAG_NON_PAGED_EXECUTE).
    assert!(unsafe { wdk_sys::ntddk::ExAllocatePool2(0x80, 8, 1) }.is_null());
    // SAFETY: as above (`NonPagedPool`, executable).
    let rundown = unsafe {
        wdk_sys::ntddk::ExAllocateCacheAwareRundownProtection(wdk_sys::_POOL_TYPE::NonPagedPool, 1)
    };
    assert!(rundown.is_null());
    s.unload().expect("unloads");
    let v = s.violations();
    assert_eq!(
        v.iter().filter(|v| matches!(v, Violation::BadArgument { .. })).count(),
        2,
        "executable pool twice: {v:?}"
    );
    assert!(
        v.iter().any(|v| matches!(v, Violation::LeftAtUnload { what }
            if what == "pool tag 'rust': 1 block(s), 24 bytes never freed after unload")),
        "{v:?}"
    );
}
