//! `KernelServices` on wdk-sys.

use core::cell::UnsafeCell;
use core::ffi::c_void;
use core::fmt::{self, Write as _};
use core::sync::atomic::{AtomicUsize, Ordering};

use fwps_sys::FWPS_INCOMING_METADATA_VALUES0;
use vsflow_callout::services::{RawRundown, RawRwSpinLock};
use vsflow_callout::{
    CalloutError, ConfigValue, Frame, KernelServices, LogLevel, RawSpinLock, TraceEvent,
};
use wdk_sys::ntddk::{
    DbgPrintEx, ExAcquireRundownProtectionCacheAware, ExAcquireSpinLockExclusive,
    ExAcquireSpinLockShared, ExAllocateCacheAwareRundownProtection,
    ExFreeCacheAwareRundownProtection, ExFreePool, ExReInitializeRundownProtectionCacheAware,
    ExReleaseRundownProtectionCacheAware, ExReleaseSpinLockExclusive, ExReleaseSpinLockShared,
    ExWaitForRundownProtectionReleaseCacheAware, KeAcquireSpinLockRaiseToDpc,
    KeDelayExecutionThread, KeGetCurrentProcessorNumberEx, KeQueryInterruptTimePrecise,
    KeQueryMaximumProcessorCountEx, KeReleaseSpinLock, KeReleaseSpinLockFromDpcLevel,
    KeTryToAcquireSpinLockAtDpcLevel, MmGetPhysicalMemoryRangesEx2,
};
use wdk_sys::{
    _DPFLTR_TYPE, _MODE, _POOL_TYPE, ALL_PROCESSOR_GROUPS, EX_SPIN_LOCK, KSPIN_LOCK, LARGE_INTEGER,
    PEX_RUNDOWN_REF_CACHE_AWARE, STATUS_INSUFFICIENT_RESOURCES, WDFWORKITEM,
    call_unsafe_wdf_function_binding,
};

use crate::entry::POOL_TAG;

/// `DPFLTR_IHVNETWORK_ID` (dpfilter.h: 80): vsflow's messages show with
/// `ed nt!Kd_IHVNETWORK_Mask 0xf`.
#[allow(clippy::cast_sign_loss, reason = "a small non-negative enum constant")]
const DPFLTR_IHVNETWORK_ID: u32 = _DPFLTR_TYPE::DPFLTR_IHVNETWORK_ID as u32;

/// A `KSPIN_LOCK` (acquired with `KeAcquireSpinLockRaiseToDpc`, or at DPC level with
/// `KeTryToAcquireSpinLockAtDpcLevel` and released with `KeReleaseSpinLockFromDpcLevel`).
pub struct KernelSpinLock {
    lock: UnsafeCell<KSPIN_LOCK>,
}

// SAFETY: `KeAcquireSpinLockRaiseToDpc` / `KeReleaseSpinLock` and
// `KeTryToAcquireSpinLockAtDpcLevel` / `KeReleaseSpinLockFromDpcLevel` give mutual exclusion at
// DISPATCH_LEVEL; the lock word is only touched by them.
unsafe impl RawSpinLock for KernelSpinLock {
    fn lock(&self) -> u8 {
        // SAFETY: the lock word lives as long as `self` and was initialized to 0.
        unsafe { KeAcquireSpinLockRaiseToDpc(self.lock.get()) }
    }

    unsafe fn unlock(&self, token: u8) {
        // SAFETY: the caller holds the lock, acquired with the IRQL in `token`.
        unsafe { KeReleaseSpinLock(self.lock.get(), token) };
    }

    fn try_lock_at_dpc(&self) -> bool {
        // SAFETY: the lock word lives as long as `self` and was initialized to 0; the caller
        // runs at DISPATCH_LEVEL (the trait's contract).
        unsafe { KeTryToAcquireSpinLockAtDpcLevel(self.lock.get()) != 0 }
    }

    unsafe fn unlock_from_dpc(&self) {
        // SAFETY: the caller holds the lock, acquired by `KeTryToAcquireSpinLockAtDpcLevel`.
        unsafe { KeReleaseSpinLockFromDpcLevel(self.lock.get()) };
    }
}

// SAFETY: the lock word is shared only through the kernel's spin-lock routines.
unsafe impl Sync for KernelSpinLock {}
// SAFETY: as above.
unsafe impl Send for KernelSpinLock {}

/// Cache-aware rundown protection (`EX_RUNDOWN_REF_CACHE_AWARE`, allocated nonpaged by
/// `ExAllocateCacheAwareRundownProtection`, freed on drop).
pub struct KernelRundown {
    rundown: PEX_RUNDOWN_REF_CACHE_AWARE,
}

// SAFETY: the Ex*RundownProtectionCacheAware routines give exactly the guarantee `RawRundown`
// documents; the structure is only touched through them.
unsafe impl RawRundown for KernelRundown {
    fn acquire(&self) -> bool {
        // SAFETY: allocated in `new_rundown`, freed only on drop.
        unsafe { ExAcquireRundownProtectionCacheAware(self.rundown) != 0 }
    }

    unsafe fn release(&self) {
        // SAFETY: the caller holds a reference (trait contract); the structure is live.
        unsafe { ExReleaseRundownProtectionCacheAware(self.rundown) };
    }

    fn wait_for_release(&self) {
        // SAFETY: the structure is live; PASSIVE_LEVEL is the caller's contract.
        unsafe { ExWaitForRundownProtectionReleaseCacheAware(self.rundown) };
    }

    fn reinitialize(&self) {
        // SAFETY: called after a completed wait (trait contract).
        unsafe { ExReInitializeRundownProtectionCacheAware(self.rundown) };
    }
}

impl Drop for KernelRundown {
    fn drop(&mut self) {
        // SAFETY: allocated by ExAllocateCacheAwareRundownProtection, freed once; no reference
        // can be held by a value being dropped (the owner ran it down first).
        unsafe { ExFreeCacheAwareRundownProtection(self.rundown) };
    }
}

// SAFETY: the rundown routines are safe to call concurrently from any processor.
unsafe impl Send for KernelRundown {}
// SAFETY: as above.
unsafe impl Sync for KernelRundown {}

/// A reader/writer spin lock (`EX_SPIN_LOCK`, a `LONG`, zero when free).
pub struct KernelRwLock {
    lock: UnsafeCell<EX_SPIN_LOCK>,
}

// SAFETY: the Ex*SpinLockShared/Exclusive routines give the exclusion `RawRwSpinLock`
// documents; the word is only touched by them.
unsafe impl RawRwSpinLock for KernelRwLock {
    fn lock_shared(&self) -> u8 {
        // SAFETY: the lock word lives as long as `self`; IRQL <= DISPATCH_LEVEL.
        unsafe { ExAcquireSpinLockShared(self.lock.get()) }
    }

    unsafe fn unlock_shared(&self, token: u8) {
        // SAFETY: the caller holds it shared, acquired with the IRQL in `token`.
        unsafe { ExReleaseSpinLockShared(self.lock.get(), token) };
    }

    fn lock_exclusive(&self) -> u8 {
        // SAFETY: as in `lock_shared`.
        unsafe { ExAcquireSpinLockExclusive(self.lock.get()) }
    }

    unsafe fn unlock_exclusive(&self, token: u8) {
        // SAFETY: the caller holds it exclusively, acquired with the IRQL in `token`.
        unsafe { ExReleaseSpinLockExclusive(self.lock.get(), token) };
    }
}

// SAFETY: the word is only touched by the kernel's routines.
unsafe impl Send for KernelRwLock {}
// SAFETY: as above.
unsafe impl Sync for KernelRwLock {}

/// The driver's kernel services.
pub struct WdkServices {
    /// The work item that runs `Driver::run_deferred` (a `WDFWORKITEM`, 0 until created).
    pub work_item: AtomicUsize,
    /// Every setting as read from the `Parameters` key at `DriverEntry`.
    pub parameters: crate::entry::Parameters,
    /// Per-boot seed.
    pub seed: u64,
    /// The running Windows build (`RtlGetVersion`), if it could be read.
    pub os_build: Option<u32>,
}

/// Formats into a fixed buffer (no allocation; truncates).
struct Line {
    buf: [u8; 256],
    len: usize,
}

impl fmt::Write for Line {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for b in s.bytes() {
            // Leave room for the terminating NUL; drop what does not fit.
            if self.len + 1 < self.buf.len() && b != 0 {
                if let Some(slot) = self.buf.get_mut(self.len) {
                    *slot = b;
                }
                self.len += 1;
            }
        }
        Ok(())
    }
}

impl KernelServices for WdkServices {
    type Lock = KernelSpinLock;
    type Rundown = KernelRundown;
    type RwLock = KernelRwLock;

    fn new_lock(&self) -> KernelSpinLock {
        KernelSpinLock { lock: UnsafeCell::new(0) }
    }

    fn new_rundown(&self) -> Result<KernelRundown, CalloutError> {
        // SAFETY: IRQL <= DISPATCH_LEVEL; nonpaged pool.
        let rundown =
            unsafe { ExAllocateCacheAwareRundownProtection(_POOL_TYPE::NonPagedPoolNx, POOL_TAG) };
        if rundown.is_null() {
            return Err(CalloutError::Status(STATUS_INSUFFICIENT_RESOURCES));
        }
        Ok(KernelRundown { rundown })
    }

    fn new_rw_lock(&self) -> KernelRwLock {
        // An EX_SPIN_LOCK is initialized to zero (wdm.h).
        KernelRwLock { lock: UnsafeCell::new(0) }
    }

    fn current_processor(&self) -> u32 {
        // SAFETY: a null PROCESSOR_NUMBER is allowed; any IRQL.
        unsafe { KeGetCurrentProcessorNumberEx(core::ptr::null_mut()) }
    }

    fn processor_count(&self) -> u32 {
        #[allow(clippy::cast_possible_truncation, reason = "ALL_PROCESSOR_GROUPS is 0xFFFF")]
        // SAFETY: any IRQL.
        unsafe {
            KeQueryMaximumProcessorCountEx(ALL_PROCESSOR_GROUPS as u16)
        }
    }

    fn delay(&self, micros: u32) {
        // Relative (negative) interval in 100 ns units.
        let mut interval = LARGE_INTEGER { QuadPart: -(i64::from(micros) * 10) };
        #[allow(clippy::cast_possible_truncation, reason = "KernelMode is 0")]
        let mode = _MODE::KernelMode as i8;
        // SAFETY: PASSIVE_LEVEL (the trait's contract); a valid interval.
        let _status = unsafe { KeDelayExecutionThread(mode, 0, &raw mut interval) };
    }

    fn now(&self) -> u64 {
        let mut qpc = 0u64;
        // SAFETY: valid out-pointer; callable at any IRQL.
        unsafe { KeQueryInterruptTimePrecise(&raw mut qpc) }
    }

    fn request_deferred_work(&self) -> Result<(), CalloutError> {
        let item = self.work_item.load(Ordering::Acquire);
        if item == 0 {
            return Err(CalloutError::Status(STATUS_INSUFFICIENT_RESOURCES));
        }
        // SAFETY: the work item exists until unload flushes and deletes it; enqueueing a work
        // item already queued has no effect (the requests coalesce).
        unsafe { call_unsafe_wdf_function_binding!(WdfWorkItemEnqueue, item as WDFWORKITEM) };
        Ok(())
    }

    fn flush_deferred_work(&self) {
        let item = self.work_item.load(Ordering::Acquire);
        if item != 0 {
            // SAFETY: PASSIVE_LEVEL (stop runs at unload); the work item exists.
            unsafe { call_unsafe_wdf_function_binding!(WdfWorkItemFlush, item as WDFWORKITEM) };
        }
    }

    fn log(&self, level: LogLevel, args: fmt::Arguments<'_>) {
        let mut line = Line { buf: [0; 256], len: 0 };
        let _ = writeln!(line, "vsflow: {args}");
        let severity = match level {
            LogLevel::Error => 0,
            LogLevel::Warning => 1,
            LogLevel::Trace => 2,
            LogLevel::Info => 3,
        };
        // SAFETY: a NUL-terminated format and a NUL-terminated argument (the buffer is zeroed
        // past `len`).
        unsafe { DbgPrintEx(DPFLTR_IHVNETWORK_ID, severity, c"%s".as_ptr(), line.buf.as_ptr()) };
    }

    fn hash_seed(&self) -> u64 {
        self.seed
    }

    /// `MmGetPhysicalMemoryRangesEx2(NULL, 0)` (ntddk.h, Windows 10 2004, `PASSIVE_LEVEL`;
    /// Microsoft Learn, "`MmGetPhysicalMemoryRangesEx2` function"): a nonpaged pool block of
    /// address and byte-count pairs ending with an entry of zeros, freed by the caller. The
    /// driver calls it once, from `DriverEntry` (`PASSIVE_LEVEL`), to derive the default
    /// flow-memory budget. NULL is the system partition (ntddk.h: `MM_SYSTEM_PARTITION_OBJECT`);
    /// that the block is freed with `ExFreePool` is to verify on Windows
    /// (docs/WINDOWS-VERIFICATION.md).
    fn physical_memory_bytes(&self) -> Option<u64> {
        // SAFETY: no partition object, no flags; PASSIVE_LEVEL (DriverEntry, the trait's
        // contract for this method).
        let ranges = unsafe { MmGetPhysicalMemoryRangesEx2(core::ptr::null_mut(), 0) };
        if ranges.is_null() {
            return None;
        }
        let mut total = 0u64;
        // The block ends with an all-zero entry; a bound on the walk all the same.
        for i in 0..4096 {
            // SAFETY: the block holds every entry up to and including the terminating one, and
            // the walk stops there: entry `i` is inside it.
            let entry = unsafe { ranges.add(i) };
            // SAFETY: as above; the pool block is aligned for the entries.
            let r = unsafe { entry.read() };
            // SAFETY: LARGE_INTEGER is a union of integers: every bit pattern is a QuadPart.
            let base = unsafe { r.BaseAddress.QuadPart };
            // SAFETY: as above.
            let bytes = unsafe { r.NumberOfBytes.QuadPart };
            if base == 0 && bytes == 0 {
                break;
            }
            total = total.saturating_add(bytes.unsigned_abs());
        }
        // SAFETY: the block MmGetPhysicalMemoryRangesEx2 returned, freed once.
        unsafe { ExFreePool(ranges.cast()) };
        (total > 0).then_some(total)
    }

    fn trace(&self, event: &TraceEvent) {
        crate::etw::write(event);
    }

    fn os_build(&self) -> Option<u32> {
        self.os_build
    }

    fn config_value(&self, name: &str) -> ConfigValue {
        self.parameters.iter().find(|(n, _)| *n == name).map_or(ConfigValue::Absent, |(_, v)| *v)
    }

    unsafe fn read_frame<'a>(
        &self,
        layer_data: *mut c_void,
        _meta: *const FWPS_INCOMING_METADATA_VALUES0,
        storage: &'a mut [u8],
    ) -> Option<Frame<'a>> {
        // SAFETY: WFP's layer data at the vSwitch layers is a NET_BUFFER_LIST valid for the
        // classify call (caller's contract).
        unsafe { vsflow_callout::frame::nbl_prefix(layer_data, storage) }
    }
}
