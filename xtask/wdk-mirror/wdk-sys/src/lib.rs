//! Mirror of wdk-sys 0.5 (KMDF): the items vsflow's driver uses, with bindgen's names and
//! signatures (wdk-real's `mirror_vs_real.py` compares them with the real bindings).
//!
//! The functions are declarations. For `x86_64-pc-windows-msvc` the WDF functions are called
//! as the real crate calls them: through the `WdfFunctions_01033` table with `WdfDriverGlobals`
//! first (`cargo xtask wdk-check` type-checks that; `cargo xtask sys` links it, with the table
//! and globals defined by crates/kmdf-stub and the kernel functions by import libraries made
//! from the repository's table of kernel exports). On the Linux host (`cargo xtask
//! driver-tests`) the crate wdf-sim, the KMDF double, defines every one of them by name, so the
//! driver's calls dispatch into the double.

#![no_std]
#![allow(non_camel_case_types, non_snake_case, non_upper_case_globals, missing_docs, clippy::all, clippy::pedantic, clippy::nursery)]

use core::ffi::c_void;

pub type NTSTATUS = i32;
pub type ULONG = u32;
pub type USHORT = u16;
pub type UCHAR = u8;
pub type BOOLEAN = u8;
pub type WCHAR = u16;
pub type PWCH = *mut WCHAR;
pub type PVOID = *mut c_void;
pub type CHAR = ::core::ffi::c_char;
pub type PCSTR = *const CHAR;
pub type LPCSTR = *const CHAR;
pub type CSHORT = ::core::ffi::c_short;
pub type CCHAR = ::core::ffi::c_char;
/// `LONG` is 32 bits on Windows (bindgen: `c_long`, which is 64 bits on the Linux host): the
/// mirror spells the Windows width so host builds keep the Windows layouts.
pub type LONG = i32;
pub type KPROCESSOR_MODE = CCHAR;
pub type EX_SPIN_LOCK = LONG;
pub type PEX_SPIN_LOCK = *mut LONG;
pub type LONGLONG = ::core::ffi::c_longlong;
pub type KIRQL = UCHAR;
pub type ULONG_PTR = ::core::ffi::c_ulonglong;
pub type SIZE_T = ULONG_PTR;
pub type POOL_FLAGS = ULONG64;
pub type KSPIN_LOCK = ULONG_PTR;
pub type PKSPIN_LOCK = *mut KSPIN_LOCK;
pub type ULONG64 = ::core::ffi::c_ulonglong;
pub type PULONG64 = *mut ULONG64;
pub type PULONG = *mut ULONG;
pub type ACCESS_MASK = ULONG;

pub const STATUS_SUCCESS: NTSTATUS = 0;
pub const STATUS_INSUFFICIENT_RESOURCES: NTSTATUS = 0xC000_009A_u32 as i32;
pub const STATUS_INVALID_DEVICE_STATE: NTSTATUS = 0xC000_0184_u32 as i32;
pub const KEY_READ: u32 = 131_097;
pub const ALL_PROCESSOR_GROUPS: u32 = 65535;
pub const STATUS_INVALID_PARAMETER: NTSTATUS = 0xC000_000D_u32 as i32;
pub const STATUS_BUFFER_TOO_SMALL: NTSTATUS = 0xC000_0023_u32 as i32;
pub const STATUS_NOT_SUPPORTED: NTSTATUS = 0xC000_00BB_u32 as i32;

#[repr(C)]
#[derive(Debug, Copy, Clone)]
pub struct _UNICODE_STRING {
    pub Length: USHORT,
    pub MaximumLength: USHORT,
    pub Buffer: PWCH,
}
pub type UNICODE_STRING = _UNICODE_STRING;
pub type PUNICODE_STRING = *mut UNICODE_STRING;
pub type PCUNICODE_STRING = *const UNICODE_STRING;

#[repr(C)]
#[derive(Debug)]
pub struct _DEVICE_OBJECT {
    pub Type: CSHORT,
    pub Size: USHORT,
}
pub type DEVICE_OBJECT = _DEVICE_OBJECT;
pub type PDEVICE_OBJECT = *mut DEVICE_OBJECT;

/// wdm.h: the driver object the I/O manager passes to `DriverEntry`, in full (the KMDF stub
/// hooks `DriverUnload`, so the image reads and writes past the leading fields).
#[repr(C)]
#[derive(Debug, Copy, Clone)]
pub struct _DRIVER_OBJECT {
    pub Type: CSHORT,
    pub Size: CSHORT,
    pub DeviceObject: PDEVICE_OBJECT,
    pub Flags: ULONG,
    pub DriverStart: PVOID,
    pub DriverSize: ULONG,
    pub DriverSection: PVOID,
    pub DriverExtension: PDRIVER_EXTENSION,
    pub DriverName: UNICODE_STRING,
    pub HardwareDatabase: PUNICODE_STRING,
    pub FastIoDispatch: PFAST_IO_DISPATCH,
    pub DriverInit: PDRIVER_INITIALIZE,
    pub DriverStartIo: PDRIVER_STARTIO,
    pub DriverUnload: PDRIVER_UNLOAD,
    pub MajorFunction: [PDRIVER_DISPATCH; 28usize],
}
pub type DRIVER_OBJECT = _DRIVER_OBJECT;
pub type PDRIVER_OBJECT = *mut DRIVER_OBJECT;
const _: () = assert!(core::mem::size_of::<_DRIVER_OBJECT>() == 336);
const _: () = assert!(core::mem::offset_of!(_DRIVER_OBJECT, DriverUnload) == 104);

/// Opaque here: the driver never reads them.
#[repr(C)]
#[derive(Debug, Copy, Clone)]
pub struct _DRIVER_EXTENSION {
    _unused: [u8; 0],
}
pub type PDRIVER_EXTENSION = *mut _DRIVER_EXTENSION;
#[repr(C)]
#[derive(Debug, Copy, Clone)]
pub struct _FAST_IO_DISPATCH {
    _unused: [u8; 0],
}
pub type PFAST_IO_DISPATCH = *mut _FAST_IO_DISPATCH;
#[repr(C)]
#[derive(Debug, Copy, Clone)]
pub struct _IRP {
    _unused: [u8; 0],
}
pub type DRIVER_INITIALIZE = Option<unsafe extern "C" fn(DriverObject: *mut _DRIVER_OBJECT, RegistryPath: PUNICODE_STRING) -> NTSTATUS>;
pub type PDRIVER_INITIALIZE = DRIVER_INITIALIZE;
pub type DRIVER_DISPATCH = Option<unsafe extern "C" fn(DeviceObject: *mut _DEVICE_OBJECT, Irp: *mut _IRP) -> NTSTATUS>;
pub type PDRIVER_DISPATCH = DRIVER_DISPATCH;
pub type DRIVER_STARTIO = Option<unsafe extern "C" fn(DeviceObject: *mut _DEVICE_OBJECT, Irp: *mut _IRP)>;
pub type PDRIVER_STARTIO = DRIVER_STARTIO;
pub type DRIVER_UNLOAD = Option<unsafe extern "C" fn(DriverObject: *mut _DRIVER_OBJECT)>;
pub type PDRIVER_UNLOAD = DRIVER_UNLOAD;

macro_rules! wdf_handle {
    ($($h:ident $inner:ident),* $(,)?) => {$(
        #[repr(C)]
        #[derive(Debug, Copy, Clone)]
        pub struct $inner {
            pub unused: i32,
        }
        pub type $h = *mut $inner;
    )*};
}
wdf_handle!(WDFDRIVER WDFDRIVER__, WDFDEVICE WDFDEVICE__, WDFQUEUE WDFQUEUE__, WDFREQUEST WDFREQUEST__, WDFWORKITEM WDFWORKITEM__, WDFKEY WDFKEY__, WDFTIMER WDFTIMER__);
pub type WDFOBJECT = *mut c_void;

#[repr(C)]
#[derive(Debug)]
pub struct WDFDEVICE_INIT {
    _opaque: [u8; 0],
}
pub type PWDFDEVICE_INIT = *mut WDFDEVICE_INIT;

pub const WDF_NO_HANDLE: *mut c_void = core::ptr::null_mut();
pub const WDF_NO_OBJECT_ATTRIBUTES: *mut WDF_OBJECT_ATTRIBUTES = core::ptr::null_mut();

/// bindgen emits C enums as modules of `c_int` constants (wdk-build:
/// `default_enum_style(EnumVariation::ModuleConsts)`), and the typedef as a re-export of `Type`.
macro_rules! module_enum {
    ($module:ident as $alias:ident { $($name:ident = $value:expr),* $(,)? }) => {
        pub mod $module {
            pub type Type = ::core::ffi::c_int;
            $(pub const $name: Type = $value;)*
        }
        pub use self::$module::Type as $alias;
    };
}

module_enum!(_WDF_DRIVER_INIT_FLAGS as WDF_DRIVER_INIT_FLAGS {
    WdfDriverInitNonPnpDriver = 1,
    WdfDriverInitNoDispatchOverride = 2,
    WdfVerifyOn = 4,
    WdfVerifierOn = 8,
    WdfDriverInitCompanion = 16,
});
module_enum!(_WDF_TRI_STATE as WDF_TRI_STATE { WdfFalse = 0, WdfTrue = 1, WdfUseDefault = 2 });
module_enum!(_WDF_IO_QUEUE_DISPATCH_TYPE as WDF_IO_QUEUE_DISPATCH_TYPE {
    WdfIoQueueDispatchInvalid = 0,
    WdfIoQueueDispatchSequential = 1,
    WdfIoQueueDispatchParallel = 2,
    WdfIoQueueDispatchManual = 3,
    WdfIoQueueDispatchMax = 4,
});
module_enum!(_WDF_EXECUTION_LEVEL as WDF_EXECUTION_LEVEL {
    WdfExecutionLevelInvalid = 0,
    WdfExecutionLevelInheritFromParent = 1,
    WdfExecutionLevelPassive = 2,
    WdfExecutionLevelDispatch = 3,
});
module_enum!(_WDF_SYNCHRONIZATION_SCOPE as WDF_SYNCHRONIZATION_SCOPE {
    WdfSynchronizationScopeInvalid = 0,
    WdfSynchronizationScopeInheritFromParent = 1,
    WdfSynchronizationScopeDevice = 2,
    WdfSynchronizationScopeQueue = 3,
    WdfSynchronizationScopeNone = 4,
});
module_enum!(_POOL_TYPE as POOL_TYPE { NonPagedPool = 0, NonPagedPoolNx = 512 });
module_enum!(_MODE as MODE { KernelMode = 0, UserMode = 1, MaximumMode = 2 });

/// `DPFLTR_TYPE` (dpfilter.h): only the component vsflow prints under.
pub mod _DPFLTR_TYPE {
    pub type Type = ::core::ffi::c_int;
    pub const DPFLTR_IHVNETWORK_ID: Type = 80;
}
pub use self::_DPFLTR_TYPE::Type as DPFLTR_TYPE;

pub type PFN_WDF_DRIVER_DEVICE_ADD = Option<unsafe extern "C" fn(Driver: WDFDRIVER, DeviceInit: PWDFDEVICE_INIT) -> NTSTATUS>;
pub type PFN_WDF_DRIVER_UNLOAD = Option<unsafe extern "C" fn(Driver: WDFDRIVER)>;
pub type PFN_WDF_OBJECT_CONTEXT_CLEANUP = Option<unsafe extern "C" fn(Object: WDFOBJECT)>;
pub type PFN_WDF_OBJECT_CONTEXT_DESTROY = Option<unsafe extern "C" fn(Object: WDFOBJECT)>;
pub type PFN_WDF_IO_QUEUE_IO_DEFAULT = Option<unsafe extern "C" fn(Queue: WDFQUEUE, Request: WDFREQUEST)>;
pub type PFN_WDF_IO_QUEUE_IO_READ = Option<unsafe extern "C" fn(Queue: WDFQUEUE, Request: WDFREQUEST, Length: usize)>;
pub type PFN_WDF_IO_QUEUE_IO_WRITE = Option<unsafe extern "C" fn(Queue: WDFQUEUE, Request: WDFREQUEST, Length: usize)>;
pub type PFN_WDF_IO_QUEUE_IO_DEVICE_CONTROL = Option<unsafe extern "C" fn(Queue: WDFQUEUE, Request: WDFREQUEST, OutputBufferLength: usize, InputBufferLength: usize, IoControlCode: ULONG)>;
pub type PFN_WDF_IO_QUEUE_IO_INTERNAL_DEVICE_CONTROL = PFN_WDF_IO_QUEUE_IO_DEVICE_CONTROL;
pub type PFN_WDF_IO_QUEUE_IO_STOP = Option<unsafe extern "C" fn(Queue: WDFQUEUE, Request: WDFREQUEST, ActionFlags: ULONG)>;
pub type PFN_WDF_IO_QUEUE_IO_RESUME = Option<unsafe extern "C" fn(Queue: WDFQUEUE, Request: WDFREQUEST)>;
pub type PFN_WDF_IO_QUEUE_IO_CANCELED_ON_QUEUE = Option<unsafe extern "C" fn(Queue: WDFQUEUE, Request: WDFREQUEST)>;
pub type PFN_WDF_WORKITEM = Option<unsafe extern "C" fn(WorkItem: WDFWORKITEM)>;
pub type PFN_WDF_TIMER = Option<unsafe extern "C" fn(Timer: WDFTIMER)>;

#[repr(C)]
#[derive(Debug, Default, Copy, Clone)]
pub struct _WDF_DRIVER_CONFIG {
    pub Size: ULONG,
    pub EvtDriverDeviceAdd: PFN_WDF_DRIVER_DEVICE_ADD,
    pub EvtDriverUnload: PFN_WDF_DRIVER_UNLOAD,
    pub DriverInitFlags: ULONG,
    pub DriverPoolTag: ULONG,
}
pub type WDF_DRIVER_CONFIG = _WDF_DRIVER_CONFIG;
pub type PWDF_DRIVER_CONFIG = *mut WDF_DRIVER_CONFIG;

#[repr(C)]
#[derive(Debug, Copy, Clone)]
pub struct _WDF_OBJECT_CONTEXT_TYPE_INFO {
    pub Size: ULONG,
    pub ContextName: LPCSTR,
    pub ContextSize: usize,
    pub UniqueType: PCWDF_OBJECT_CONTEXT_TYPE_INFO,
    pub EvtDriverGetUniqueContextType: PFN_GET_UNIQUE_CONTEXT_TYPE,
}
pub type PFN_GET_UNIQUE_CONTEXT_TYPE = Option<unsafe extern "C" fn() -> PCWDF_OBJECT_CONTEXT_TYPE_INFO>;
pub type WDF_OBJECT_CONTEXT_TYPE_INFO = _WDF_OBJECT_CONTEXT_TYPE_INFO;
pub type PCWDF_OBJECT_CONTEXT_TYPE_INFO = *const WDF_OBJECT_CONTEXT_TYPE_INFO;

#[repr(C)]
#[derive(Debug, Copy, Clone)]
pub struct _WDF_OBJECT_ATTRIBUTES {
    pub Size: ULONG,
    pub EvtCleanupCallback: PFN_WDF_OBJECT_CONTEXT_CLEANUP,
    pub EvtDestroyCallback: PFN_WDF_OBJECT_CONTEXT_DESTROY,
    pub ExecutionLevel: WDF_EXECUTION_LEVEL,
    pub SynchronizationScope: WDF_SYNCHRONIZATION_SCOPE,
    pub ParentObject: WDFOBJECT,
    pub ContextSizeOverride: usize,
    pub ContextTypeInfo: PCWDF_OBJECT_CONTEXT_TYPE_INFO,
}
impl Default for _WDF_OBJECT_ATTRIBUTES {
    fn default() -> Self {
        Self { Size: 0, EvtCleanupCallback: None, EvtDestroyCallback: None, ExecutionLevel: 0, SynchronizationScope: 0, ParentObject: core::ptr::null_mut(), ContextSizeOverride: 0, ContextTypeInfo: core::ptr::null() }
    }
}
pub type WDF_OBJECT_ATTRIBUTES = _WDF_OBJECT_ATTRIBUTES;
pub type PWDF_OBJECT_ATTRIBUTES = *mut WDF_OBJECT_ATTRIBUTES;

#[repr(C)]
#[derive(Copy, Clone)]
pub union _WDF_IO_QUEUE_CONFIG__bindgen_ty_1 {
    pub Parallel: _WDF_IO_QUEUE_CONFIG__bindgen_ty_1__bindgen_ty_1,
}
#[repr(C)]
#[derive(Debug, Default, Copy, Clone)]
pub struct _WDF_IO_QUEUE_CONFIG__bindgen_ty_1__bindgen_ty_1 {
    pub NumberOfPresentedRequests: ULONG,
}
impl Default for _WDF_IO_QUEUE_CONFIG__bindgen_ty_1 {
    fn default() -> Self {
        Self { Parallel: _WDF_IO_QUEUE_CONFIG__bindgen_ty_1__bindgen_ty_1::default() }
    }
}

#[repr(C)]
#[derive(Copy, Clone)]
pub struct _WDF_IO_QUEUE_CONFIG {
    pub Size: ULONG,
    pub DispatchType: WDF_IO_QUEUE_DISPATCH_TYPE,
    pub PowerManaged: WDF_TRI_STATE,
    pub AllowZeroLengthRequests: BOOLEAN,
    pub DefaultQueue: BOOLEAN,
    pub EvtIoDefault: PFN_WDF_IO_QUEUE_IO_DEFAULT,
    pub EvtIoRead: PFN_WDF_IO_QUEUE_IO_READ,
    pub EvtIoWrite: PFN_WDF_IO_QUEUE_IO_WRITE,
    pub EvtIoDeviceControl: PFN_WDF_IO_QUEUE_IO_DEVICE_CONTROL,
    pub EvtIoInternalDeviceControl: PFN_WDF_IO_QUEUE_IO_INTERNAL_DEVICE_CONTROL,
    pub EvtIoStop: PFN_WDF_IO_QUEUE_IO_STOP,
    pub EvtIoResume: PFN_WDF_IO_QUEUE_IO_RESUME,
    pub EvtIoCanceledOnQueue: PFN_WDF_IO_QUEUE_IO_CANCELED_ON_QUEUE,
    pub Settings: _WDF_IO_QUEUE_CONFIG__bindgen_ty_1,
    pub Driver: WDFDRIVER,
}
impl Default for _WDF_IO_QUEUE_CONFIG {
    fn default() -> Self {
        Self {
            Size: 0,
            DispatchType: 0,
            PowerManaged: 0,
            AllowZeroLengthRequests: 0,
            DefaultQueue: 0,
            EvtIoDefault: None,
            EvtIoRead: None,
            EvtIoWrite: None,
            EvtIoDeviceControl: None,
            EvtIoInternalDeviceControl: None,
            EvtIoStop: None,
            EvtIoResume: None,
            EvtIoCanceledOnQueue: None,
            Settings: _WDF_IO_QUEUE_CONFIG__bindgen_ty_1::default(),
            Driver: core::ptr::null_mut(),
        }
    }
}
pub type WDF_IO_QUEUE_CONFIG = _WDF_IO_QUEUE_CONFIG;
pub type PWDF_IO_QUEUE_CONFIG = *mut WDF_IO_QUEUE_CONFIG;

#[repr(C)]
#[derive(Debug, Default, Copy, Clone)]
pub struct _WDF_WORKITEM_CONFIG {
    pub Size: ULONG,
    pub EvtWorkItemFunc: PFN_WDF_WORKITEM,
    pub AutomaticSerialization: BOOLEAN,
}
pub type WDF_WORKITEM_CONFIG = _WDF_WORKITEM_CONFIG;
pub type PWDF_WORKITEM_CONFIG = *mut WDF_WORKITEM_CONFIG;

/// wdftimer.h (KMDF 1.33): `UseHighResolutionTimer` is `DECLSPEC_ALIGN(8)`, which bindgen
/// renders as explicit padding.
#[repr(C)]
#[derive(Debug, Default, Copy, Clone)]
pub struct _WDF_TIMER_CONFIG {
    pub Size: ULONG,
    pub EvtTimerFunc: PFN_WDF_TIMER,
    pub Period: ULONG,
    pub AutomaticSerialization: BOOLEAN,
    pub TolerableDelay: ULONG,
    pub __bindgen_padding_0: [u8; 4usize],
    pub UseHighResolutionTimer: BOOLEAN,
}
pub type WDF_TIMER_CONFIG = _WDF_TIMER_CONFIG;
pub type PWDF_TIMER_CONFIG = *mut WDF_TIMER_CONFIG;
const _: () = assert!(core::mem::size_of::<_WDF_TIMER_CONFIG>() == 40);

#[repr(C)]
#[derive(Debug, Copy, Clone)]
pub struct _OSVERSIONINFOW {
    pub dwOSVersionInfoSize: ULONG,
    pub dwMajorVersion: ULONG,
    pub dwMinorVersion: ULONG,
    pub dwBuildNumber: ULONG,
    pub dwPlatformId: ULONG,
    pub szCSDVersion: [WCHAR; 128usize],
}
impl Default for _OSVERSIONINFOW {
    fn default() -> Self {
        Self { dwOSVersionInfoSize: 0, dwMajorVersion: 0, dwMinorVersion: 0, dwBuildNumber: 0, dwPlatformId: 0, szCSDVersion: [0; 128] }
    }
}
pub type RTL_OSVERSIONINFOW = _OSVERSIONINFOW;

#[repr(C)]
#[derive(Debug, Default, Copy, Clone)]
pub struct _PROCESSOR_NUMBER {
    pub Group: USHORT,
    pub Number: UCHAR,
    pub Reserved: UCHAR,
}
pub type PROCESSOR_NUMBER = _PROCESSOR_NUMBER;
pub type PPROCESSOR_NUMBER = *mut _PROCESSOR_NUMBER;

#[repr(C)]
#[derive(Copy, Clone)]
pub union _LARGE_INTEGER {
    pub __bindgen_anon_1: _LARGE_INTEGER__bindgen_ty_1,
    pub u: _LARGE_INTEGER__bindgen_ty_2,
    pub QuadPart: LONGLONG,
}
#[repr(C)]
#[derive(Debug, Default, Copy, Clone)]
pub struct _LARGE_INTEGER__bindgen_ty_1 {
    pub LowPart: ULONG,
    pub HighPart: LONG,
}
#[repr(C)]
#[derive(Debug, Default, Copy, Clone)]
pub struct _LARGE_INTEGER__bindgen_ty_2 {
    pub LowPart: ULONG,
    pub HighPart: LONG,
}
impl Default for _LARGE_INTEGER {
    fn default() -> Self {
        Self { QuadPart: 0 }
    }
}
pub type LARGE_INTEGER = _LARGE_INTEGER;
pub type PLARGE_INTEGER = *mut LARGE_INTEGER;
pub type PHYSICAL_ADDRESS = LARGE_INTEGER;

/// ntddk.h `PHYSICAL_MEMORY_RANGE`.
#[repr(C)]
#[derive(Copy, Clone)]
pub struct _PHYSICAL_MEMORY_RANGE {
    pub BaseAddress: PHYSICAL_ADDRESS,
    pub NumberOfBytes: LARGE_INTEGER,
}
pub type PHYSICAL_MEMORY_RANGE = _PHYSICAL_MEMORY_RANGE;
pub type PPHYSICAL_MEMORY_RANGE = *mut _PHYSICAL_MEMORY_RANGE;

#[repr(C)]
#[derive(Debug, Copy, Clone)]
pub struct _EX_RUNDOWN_REF_CACHE_AWARE {
    _unused: [u8; 0],
}
pub type PEX_RUNDOWN_REF_CACHE_AWARE = *mut _EX_RUNDOWN_REF_CACHE_AWARE;
pub type PRTL_OSVERSIONINFOW = *mut _OSVERSIONINFOW;

/// `ntddk.h` / `wdm.h` functions (bindgen puts them in `wdk_sys::ntddk`).
pub mod ntddk {
    use super::*;

    unsafe extern "C" {
        pub fn KeAcquireSpinLockRaiseToDpc(SpinLock: PKSPIN_LOCK) -> KIRQL;
        pub fn KeReleaseSpinLock(SpinLock: PKSPIN_LOCK, NewIrql: KIRQL);
        pub fn KeTryToAcquireSpinLockAtDpcLevel(SpinLock: PKSPIN_LOCK) -> BOOLEAN;
        pub fn KeReleaseSpinLockFromDpcLevel(SpinLock: PKSPIN_LOCK);
        pub fn KeQueryInterruptTimePrecise(QpcTimeStamp: PULONG64) -> ULONG64;
        pub fn DbgPrintEx(ComponentId: ULONG, Level: ULONG, Format: PCSTR, ...) -> ULONG;
        pub fn ExAllocatePool2(Flags: POOL_FLAGS, NumberOfBytes: SIZE_T, Tag: ULONG) -> PVOID;
        pub fn RtlGetVersion(lpVersionInformation: PRTL_OSVERSIONINFOW) -> NTSTATUS;
        pub fn ExAllocateCacheAwareRundownProtection(PoolType: POOL_TYPE, PoolTag: ULONG) -> PEX_RUNDOWN_REF_CACHE_AWARE;
        pub fn ExFreeCacheAwareRundownProtection(RunRefCacheAware: PEX_RUNDOWN_REF_CACHE_AWARE);
        pub fn ExAcquireRundownProtectionCacheAware(RunRefCacheAware: PEX_RUNDOWN_REF_CACHE_AWARE) -> BOOLEAN;
        pub fn ExReleaseRundownProtectionCacheAware(RunRefCacheAware: PEX_RUNDOWN_REF_CACHE_AWARE);
        pub fn ExWaitForRundownProtectionReleaseCacheAware(RunRef: PEX_RUNDOWN_REF_CACHE_AWARE);
        pub fn ExReInitializeRundownProtectionCacheAware(RunRefCacheAware: PEX_RUNDOWN_REF_CACHE_AWARE);
        pub fn ExAcquireSpinLockShared(SpinLock: PEX_SPIN_LOCK) -> KIRQL;
        pub fn ExReleaseSpinLockShared(SpinLock: PEX_SPIN_LOCK, OldIrql: KIRQL);
        pub fn ExAcquireSpinLockExclusive(SpinLock: PEX_SPIN_LOCK) -> KIRQL;
        pub fn ExReleaseSpinLockExclusive(SpinLock: PEX_SPIN_LOCK, OldIrql: KIRQL);
        pub fn KeGetCurrentProcessorNumberEx(ProcNumber: PPROCESSOR_NUMBER) -> ULONG;
        pub fn KeQueryMaximumProcessorCountEx(GroupNumber: USHORT) -> ULONG;
        pub fn KeDelayExecutionThread(WaitMode: KPROCESSOR_MODE, Alertable: BOOLEAN, Interval: PLARGE_INTEGER) -> NTSTATUS;
        pub fn ExFreePool(P: PVOID);
        pub fn MmGetPhysicalMemoryRangesEx2(PartitionObject: PVOID, Flags: ULONG) -> PPHYSICAL_MEMORY_RANGE;
    }
}

/// The WDF functions, as `call_unsafe_wdf_function_binding!` calls them (without the
/// `WdfDriverGlobals` argument the real macro supplies).
#[doc(hidden)]
pub mod wdf_functions {
    use super::*;

    unsafe extern "C" {
        pub fn WdfDriverCreate(DriverObject: PDRIVER_OBJECT, RegistryPath: PCUNICODE_STRING, DriverAttributes: PWDF_OBJECT_ATTRIBUTES, DriverConfig: PWDF_DRIVER_CONFIG, Driver: *mut WDFDRIVER) -> NTSTATUS;
        pub fn WdfDriverOpenParametersRegistryKey(Driver: WDFDRIVER, DesiredAccess: ACCESS_MASK, KeyAttributes: PWDF_OBJECT_ATTRIBUTES, Key: *mut WDFKEY) -> NTSTATUS;
        pub fn WdfRegistryQueryULong(Key: WDFKEY, ValueName: PCUNICODE_STRING, Value: PULONG) -> NTSTATUS;
        pub fn WdfRegistryClose(Key: WDFKEY);
        pub fn WdfControlDeviceInitAllocate(Driver: WDFDRIVER, SDDLString: PCUNICODE_STRING) -> PWDFDEVICE_INIT;
        pub fn WdfDeviceInitAssignName(DeviceInit: PWDFDEVICE_INIT, DeviceName: PCUNICODE_STRING) -> NTSTATUS;
        pub fn WdfDeviceInitFree(DeviceInit: PWDFDEVICE_INIT);
        pub fn WdfDeviceCreate(DeviceInit: *mut PWDFDEVICE_INIT, DeviceAttributes: PWDF_OBJECT_ATTRIBUTES, Device: *mut WDFDEVICE) -> NTSTATUS;
        pub fn WdfDeviceCreateSymbolicLink(Device: WDFDEVICE, SymbolicLinkName: PCUNICODE_STRING) -> NTSTATUS;
        pub fn WdfDeviceWdmGetDeviceObject(Device: WDFDEVICE) -> PDEVICE_OBJECT;
        pub fn WdfControlFinishInitializing(Device: WDFDEVICE);
        pub fn WdfIoQueueCreate(Device: WDFDEVICE, Config: PWDF_IO_QUEUE_CONFIG, QueueAttributes: PWDF_OBJECT_ATTRIBUTES, Queue: *mut WDFQUEUE) -> NTSTATUS;
        pub fn WdfRequestRetrieveInputBuffer(Request: WDFREQUEST, MinimumRequiredSize: usize, Buffer: *mut PVOID, Length: *mut usize) -> NTSTATUS;
        pub fn WdfRequestRetrieveOutputBuffer(Request: WDFREQUEST, MinimumRequiredSize: usize, Buffer: *mut PVOID, Length: *mut usize) -> NTSTATUS;
        pub fn WdfRequestCompleteWithInformation(Request: WDFREQUEST, Status: NTSTATUS, Information: ULONG_PTR);
        pub fn WdfWorkItemCreate(Config: PWDF_WORKITEM_CONFIG, Attributes: PWDF_OBJECT_ATTRIBUTES, WorkItem: *mut WDFWORKITEM) -> NTSTATUS;
        pub fn WdfWorkItemEnqueue(WorkItem: WDFWORKITEM);
        pub fn WdfWorkItemFlush(WorkItem: WDFWORKITEM);
        pub fn WdfTimerCreate(Config: PWDF_TIMER_CONFIG, Attributes: PWDF_OBJECT_ATTRIBUTES, Timer: *mut WDFTIMER) -> NTSTATUS;
        pub fn WdfTimerStart(Timer: WDFTIMER, DueTime: LONGLONG) -> BOOLEAN;
        pub fn WdfTimerStop(Timer: WDFTIMER, Wait: BOOLEAN) -> BOOLEAN;
        pub fn WdfObjectDelete(Object: WDFOBJECT);
    }
}

/// wdf.h, wdfglobals.h, wdffuncenum.h (KMDF 1.33): the function table the KMDF stub binds.
pub type WDFFUNC = Option<unsafe extern "C" fn()>;

#[repr(C)]
#[derive(Debug, Copy, Clone)]
pub struct _WDF_DRIVER_GLOBALS {
    pub Driver: WDFDRIVER,
    pub DriverFlags: ULONG,
    pub DriverTag: ULONG,
    pub DriverName: [CHAR; 32usize],
    pub DisplaceDriverUnload: BOOLEAN,
}
pub type WDF_DRIVER_GLOBALS = _WDF_DRIVER_GLOBALS;
pub type PWDF_DRIVER_GLOBALS = *mut _WDF_DRIVER_GLOBALS;
const _: () = assert!(core::mem::size_of::<_WDF_DRIVER_GLOBALS>() == 56);

unsafe extern "C" {
    /// `WdfFunctions` (wdf.h renames it `WdfFunctions_01033`): set by `WdfVersionBind`.
    #[link_name = "WdfFunctions_01033"]
    pub static mut WdfFunctions: *const WDFFUNC;
    /// The driver's globals, set by `WdfVersionBind`; every WDF call passes it first.
    pub static mut WdfDriverGlobals: PWDF_DRIVER_GLOBALS;
    /// The number of table entries the framework provides (bind info version 2).
    pub static mut WdfFunctionCount: ULONG;
}

/// `_WDFFUNCENUM`: the table index of each function the driver calls, and the table size.
pub mod _WDFFUNCENUM {
    pub type Type = ::core::ffi::c_int;
    pub const WdfControlDeviceInitAllocateTableIndex: Type = 25;
    pub const WdfControlFinishInitializingTableIndex: Type = 27;
    pub const WdfDeviceWdmGetDeviceObjectTableIndex: Type = 31;
    pub const WdfDeviceInitFreeTableIndex: Type = 54;
    pub const WdfDeviceInitAssignNameTableIndex: Type = 67;
    pub const WdfDeviceCreateTableIndex: Type = 75;
    pub const WdfDeviceCreateSymbolicLinkTableIndex: Type = 80;
    pub const WdfDriverCreateTableIndex: Type = 116;
    pub const WdfDriverOpenParametersRegistryKeyTableIndex: Type = 119;
    pub const WdfIoQueueCreateTableIndex: Type = 152;
    pub const WdfObjectDeleteTableIndex: Type = 208;
    pub const WdfRegistryCloseTableIndex: Type = 231;
    pub const WdfRegistryQueryULongTableIndex: Type = 240;
    pub const WdfRequestCompleteWithInformationTableIndex: Type = 265;
    pub const WdfRequestRetrieveInputBufferTableIndex: Type = 269;
    pub const WdfRequestRetrieveOutputBufferTableIndex: Type = 270;
    pub const WdfTimerCreateTableIndex: Type = 318;
    pub const WdfTimerStartTableIndex: Type = 319;
    pub const WdfTimerStopTableIndex: Type = 320;
    pub const WdfWorkItemCreateTableIndex: Type = 379;
    pub const WdfWorkItemEnqueueTableIndex: Type = 380;
    pub const WdfWorkItemFlushTableIndex: Type = 382;
    pub const WdfFunctionTableNumEntries: Type = 458;
}
pub use self::_WDFFUNCENUM::Type as WDFFUNCENUM;

// One line (longer than rustfmt's 250): wdk-real's mirror_vs_real.py reads declarations by line.
#[rustfmt::skip]
pub type PFN_WDFDRIVERCREATE = Option<unsafe extern "C" fn(DriverGlobals: PWDF_DRIVER_GLOBALS, DriverObject: PDRIVER_OBJECT, RegistryPath: PCUNICODE_STRING, DriverAttributes: PWDF_OBJECT_ATTRIBUTES, DriverConfig: PWDF_DRIVER_CONFIG, Driver: *mut WDFDRIVER) -> NTSTATUS>;
pub type PFN_WDFDRIVEROPENPARAMETERSREGISTRYKEY = Option<unsafe extern "C" fn(DriverGlobals: PWDF_DRIVER_GLOBALS, Driver: WDFDRIVER, DesiredAccess: ACCESS_MASK, KeyAttributes: PWDF_OBJECT_ATTRIBUTES, Key: *mut WDFKEY) -> NTSTATUS>;
pub type PFN_WDFREGISTRYQUERYULONG = Option<unsafe extern "C" fn(DriverGlobals: PWDF_DRIVER_GLOBALS, Key: WDFKEY, ValueName: PCUNICODE_STRING, Value: PULONG) -> NTSTATUS>;
pub type PFN_WDFREGISTRYCLOSE = Option<unsafe extern "C" fn(DriverGlobals: PWDF_DRIVER_GLOBALS, Key: WDFKEY)>;
pub type PFN_WDFCONTROLDEVICEINITALLOCATE = Option<unsafe extern "C" fn(DriverGlobals: PWDF_DRIVER_GLOBALS, Driver: WDFDRIVER, SDDLString: PCUNICODE_STRING) -> PWDFDEVICE_INIT>;
pub type PFN_WDFDEVICEINITASSIGNNAME = Option<unsafe extern "C" fn(DriverGlobals: PWDF_DRIVER_GLOBALS, DeviceInit: PWDFDEVICE_INIT, DeviceName: PCUNICODE_STRING) -> NTSTATUS>;
pub type PFN_WDFDEVICEINITFREE = Option<unsafe extern "C" fn(DriverGlobals: PWDF_DRIVER_GLOBALS, DeviceInit: PWDFDEVICE_INIT)>;
pub type PFN_WDFDEVICECREATE = Option<unsafe extern "C" fn(DriverGlobals: PWDF_DRIVER_GLOBALS, DeviceInit: *mut PWDFDEVICE_INIT, DeviceAttributes: PWDF_OBJECT_ATTRIBUTES, Device: *mut WDFDEVICE) -> NTSTATUS>;
pub type PFN_WDFDEVICECREATESYMBOLICLINK = Option<unsafe extern "C" fn(DriverGlobals: PWDF_DRIVER_GLOBALS, Device: WDFDEVICE, SymbolicLinkName: PCUNICODE_STRING) -> NTSTATUS>;
pub type PFN_WDFDEVICEWDMGETDEVICEOBJECT = Option<unsafe extern "C" fn(DriverGlobals: PWDF_DRIVER_GLOBALS, Device: WDFDEVICE) -> PDEVICE_OBJECT>;
pub type PFN_WDFCONTROLFINISHINITIALIZING = Option<unsafe extern "C" fn(DriverGlobals: PWDF_DRIVER_GLOBALS, Device: WDFDEVICE)>;
pub type PFN_WDFIOQUEUECREATE = Option<unsafe extern "C" fn(DriverGlobals: PWDF_DRIVER_GLOBALS, Device: WDFDEVICE, Config: PWDF_IO_QUEUE_CONFIG, QueueAttributes: PWDF_OBJECT_ATTRIBUTES, Queue: *mut WDFQUEUE) -> NTSTATUS>;
pub type PFN_WDFREQUESTRETRIEVEINPUTBUFFER = Option<unsafe extern "C" fn(DriverGlobals: PWDF_DRIVER_GLOBALS, Request: WDFREQUEST, MinimumRequiredSize: usize, Buffer: *mut PVOID, Length: *mut usize) -> NTSTATUS>;
pub type PFN_WDFREQUESTRETRIEVEOUTPUTBUFFER = Option<unsafe extern "C" fn(DriverGlobals: PWDF_DRIVER_GLOBALS, Request: WDFREQUEST, MinimumRequiredSize: usize, Buffer: *mut PVOID, Length: *mut usize) -> NTSTATUS>;
pub type PFN_WDFREQUESTCOMPLETEWITHINFORMATION = Option<unsafe extern "C" fn(DriverGlobals: PWDF_DRIVER_GLOBALS, Request: WDFREQUEST, Status: NTSTATUS, Information: ULONG_PTR)>;
pub type PFN_WDFWORKITEMCREATE = Option<unsafe extern "C" fn(DriverGlobals: PWDF_DRIVER_GLOBALS, Config: PWDF_WORKITEM_CONFIG, Attributes: PWDF_OBJECT_ATTRIBUTES, WorkItem: *mut WDFWORKITEM) -> NTSTATUS>;
pub type PFN_WDFWORKITEMENQUEUE = Option<unsafe extern "C" fn(DriverGlobals: PWDF_DRIVER_GLOBALS, WorkItem: WDFWORKITEM)>;
pub type PFN_WDFWORKITEMFLUSH = Option<unsafe extern "C" fn(DriverGlobals: PWDF_DRIVER_GLOBALS, WorkItem: WDFWORKITEM)>;
pub type PFN_WDFTIMERCREATE = Option<unsafe extern "C" fn(DriverGlobals: PWDF_DRIVER_GLOBALS, Config: PWDF_TIMER_CONFIG, Attributes: PWDF_OBJECT_ATTRIBUTES, Timer: *mut WDFTIMER) -> NTSTATUS>;
pub type PFN_WDFTIMERSTART = Option<unsafe extern "C" fn(DriverGlobals: PWDF_DRIVER_GLOBALS, Timer: WDFTIMER, DueTime: LONGLONG) -> BOOLEAN>;
pub type PFN_WDFTIMERSTOP = Option<unsafe extern "C" fn(DriverGlobals: PWDF_DRIVER_GLOBALS, Timer: WDFTIMER, Wait: BOOLEAN) -> BOOLEAN>;
pub type PFN_WDFOBJECTDELETE = Option<unsafe extern "C" fn(DriverGlobals: PWDF_DRIVER_GLOBALS, Object: WDFOBJECT)>;

/// wdk-sys's `wdf` module: what its macro reads the table size from.
pub mod wdf {
    #[doc(hidden)]
    pub mod __private {
        /// Returns the number of functions available in the WDF function table (KMDF 1.25 and
        /// later: `WdfFunctionCount`, set when the stub binds).
        #[must_use]
        pub fn get_wdf_function_count() -> usize {
            // SAFETY: written by `WdfVersionBind` before `DriverEntry`, never afterwards.
            (unsafe { crate::WdfFunctionCount }) as usize
        }
    }
}

/// Each WDF function the driver calls, by name: its `PFN_*` type and its table index (what
/// the real crate's proc macro derives from the name).
#[doc(hidden)]
pub mod wdf_table {
    macro_rules! entries {
        ($($name:ident $pfn:ident $index:ident),* $(,)?) => {$(
            pub mod $name {
                pub type Pfn = crate::$pfn;
                pub const INDEX: usize = crate::_WDFFUNCENUM::$index as usize;
            }
        )*};
    }
    entries!(
        WdfDriverCreate PFN_WDFDRIVERCREATE WdfDriverCreateTableIndex,
        WdfDriverOpenParametersRegistryKey PFN_WDFDRIVEROPENPARAMETERSREGISTRYKEY WdfDriverOpenParametersRegistryKeyTableIndex,
        WdfRegistryQueryULong PFN_WDFREGISTRYQUERYULONG WdfRegistryQueryULongTableIndex,
        WdfRegistryClose PFN_WDFREGISTRYCLOSE WdfRegistryCloseTableIndex,
        WdfControlDeviceInitAllocate PFN_WDFCONTROLDEVICEINITALLOCATE WdfControlDeviceInitAllocateTableIndex,
        WdfDeviceInitAssignName PFN_WDFDEVICEINITASSIGNNAME WdfDeviceInitAssignNameTableIndex,
        WdfDeviceInitFree PFN_WDFDEVICEINITFREE WdfDeviceInitFreeTableIndex,
        WdfDeviceCreate PFN_WDFDEVICECREATE WdfDeviceCreateTableIndex,
        WdfDeviceCreateSymbolicLink PFN_WDFDEVICECREATESYMBOLICLINK WdfDeviceCreateSymbolicLinkTableIndex,
        WdfDeviceWdmGetDeviceObject PFN_WDFDEVICEWDMGETDEVICEOBJECT WdfDeviceWdmGetDeviceObjectTableIndex,
        WdfControlFinishInitializing PFN_WDFCONTROLFINISHINITIALIZING WdfControlFinishInitializingTableIndex,
        WdfIoQueueCreate PFN_WDFIOQUEUECREATE WdfIoQueueCreateTableIndex,
        WdfRequestRetrieveInputBuffer PFN_WDFREQUESTRETRIEVEINPUTBUFFER WdfRequestRetrieveInputBufferTableIndex,
        WdfRequestRetrieveOutputBuffer PFN_WDFREQUESTRETRIEVEOUTPUTBUFFER WdfRequestRetrieveOutputBufferTableIndex,
        WdfRequestCompleteWithInformation PFN_WDFREQUESTCOMPLETEWITHINFORMATION WdfRequestCompleteWithInformationTableIndex,
        WdfWorkItemCreate PFN_WDFWORKITEMCREATE WdfWorkItemCreateTableIndex,
        WdfWorkItemEnqueue PFN_WDFWORKITEMENQUEUE WdfWorkItemEnqueueTableIndex,
        WdfWorkItemFlush PFN_WDFWORKITEMFLUSH WdfWorkItemFlushTableIndex,
        WdfTimerCreate PFN_WDFTIMERCREATE WdfTimerCreateTableIndex,
        WdfTimerStart PFN_WDFTIMERSTART WdfTimerStartTableIndex,
        WdfTimerStop PFN_WDFTIMERSTOP WdfTimerStopTableIndex,
        WdfObjectDelete PFN_WDFOBJECTDELETE WdfObjectDeleteTableIndex,
    );
}

/// Mirrors wdk-sys's `call_unsafe_wdf_function_binding!` for the kernel target: the function
/// pointer at the name's index of `WdfFunctions` (a slice of `WdfFunctionCount` entries, so an
/// index past the framework's table panics instead of reading past it), called with
/// `WdfDriverGlobals` first, as the inline functions of the WDF headers do.
#[cfg(target_os = "windows")]
#[macro_export]
macro_rules! call_unsafe_wdf_function_binding {
    ($name:ident $(, $arg:expr)* $(,)?) => {{
        let table: &[$crate::WDFFUNC] = ::core::slice::from_raw_parts($crate::WdfFunctions, $crate::wdf::__private::get_wdf_function_count());
        let function = ::core::mem::transmute::<$crate::WDFFUNC, $crate::wdf_table::$name::Pfn>(table[$crate::wdf_table::$name::INDEX]);
        match function {
            Some(function) => function($crate::WdfDriverGlobals, $($arg),*),
            None => ::core::unreachable!("WDF function table entry is null"),
        }
    }};
}

/// On the Linux host (`cargo xtask driver-tests`): calls the WDF function by name, without the
/// `WdfDriverGlobals` argument; crates/wdf-sim defines each one.
#[cfg(not(target_os = "windows"))]
#[macro_export]
macro_rules! call_unsafe_wdf_function_binding {
    ($name:ident $(, $arg:expr)* $(,)?) => {
        $crate::wdf_functions::$name($($arg),*)
    };
}

// wdk-sys defines these for every kernel image it links (lib.rs): `_fltused` because LLVM
// references it whenever floating point types appear, the C++ frame handlers because
// `panic = "abort"` builds still reference them from unwind tables.
#[cfg(target_os = "windows")]
#[unsafe(no_mangle)]
pub static _fltused: () = ();

#[cfg(all(target_os = "windows", panic = "abort"))]
#[unsafe(no_mangle)]
pub const extern "system" fn __CxxFrameHandler3() -> i32 {
    0
}

#[cfg(all(target_os = "windows", panic = "abort"))]
#[unsafe(no_mangle)]
pub const extern "system" fn __CxxFrameHandler4() -> i32 {
    1
}

#[cfg(all(target_os = "windows", panic = "abort"))]
#[unsafe(no_mangle)]
pub const extern "system" fn __GSHandlerCheck_EH4() -> i32 {
    2
}
