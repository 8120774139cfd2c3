//! The kernel services the bridge needs, behind one small trait: the driver implements it with
//! wdk-sys, the simulator with std.

use core::ffi::c_void;
use core::fmt;

use fwps_sys::FWPS_INCOMING_METADATA_VALUES0;
use vsflow_core::Tick;

use crate::error::CalloutError;
use crate::trace::TraceEvent;

/// A registry value as read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConfigValue {
    /// No such value (or no `Parameters` key): the default applies.
    Absent,
    /// A `REG_DWORD`.
    Dword(u32),
    /// A value that could not be read as a `REG_DWORD` (another type): refused.
    Unreadable,
}

/// Severity of a log line.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum LogLevel {
    /// Something failed.
    Error,
    /// Something unexpected that vsflow recovered from.
    Warning,
    /// Lifecycle events.
    Info,
    /// Per-event detail.
    Trace,
}

/// The start of a frame, as [`KernelServices::read_frame`] found it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Frame<'a> {
    /// The first bytes of the frame (Ethernet header first): in NDIS's own buffer when they
    /// are contiguous there (no copy, the usual case), else copied into the caller's storage.
    pub head: &'a [u8],
    /// Length of the whole frame in bytes.
    pub frame_len: u32,
}

/// A spin lock usable at `IRQL <= DISPATCH_LEVEL` (`KeAcquireSpinLock` in the driver).
///
/// # Safety
/// Implementors guarantee mutual exclusion between [`RawSpinLock::lock`] and the matching
/// [`RawSpinLock::unlock`], and that holding the lock never blocks on anything that could wait
/// for the holder.
pub unsafe trait RawSpinLock: Send + Sync {
    /// Acquires the lock; returns a token (the previous IRQL in the driver).
    fn lock(&self) -> u8;
    /// Releases the lock acquired with `token`.
    ///
    /// # Safety
    /// The caller holds the lock, acquired by the `lock` call that returned `token`.
    unsafe fn unlock(&self, token: u8);
    /// Acquires the lock only if it is free, without waiting and without changing the IRQL
    /// (`KeTryToAcquireSpinLockAtDpcLevel`); `true` if acquired. The caller runs at
    /// `DISPATCH_LEVEL` already (it holds another spin lock).
    fn try_lock_at_dpc(&self) -> bool;
    /// Releases a lock [`RawSpinLock::try_lock_at_dpc`] acquired, leaving the IRQL as it is
    /// (`KeReleaseSpinLockFromDpcLevel`).
    ///
    /// # Safety
    /// The caller holds the lock, acquired by a successful `try_lock_at_dpc`.
    unsafe fn unlock_from_dpc(&self);
}

/// Cache-aware rundown protection (`EX_RUNDOWN_REF_CACHE_AWARE`).
///
/// Many readers acquire and release it on their own processor's counter (no shared cache line
/// on the packet path); one waiter blocks new acquisitions and waits until every acquisition
/// has been released.
///
/// # Safety
/// Implementors guarantee: after [`RawRundown::wait_for_release`] returns, every successful
/// [`RawRundown::acquire`] made before it has been released and every later `acquire` fails,
/// until [`RawRundown::reinitialize`].
pub unsafe trait RawRundown: Send + Sync {
    /// Takes a reference (`ExAcquireRundownProtectionCacheAware`); `false` once run down.
    /// Any IRQL `<= DISPATCH_LEVEL`.
    fn acquire(&self) -> bool;
    /// Drops a reference (`ExReleaseRundownProtectionCacheAware`).
    ///
    /// # Safety
    /// The caller holds a reference from a successful [`RawRundown::acquire`].
    unsafe fn release(&self);
    /// Makes every later `acquire` fail and waits for the references held to be released
    /// (`ExWaitForRundownProtectionReleaseCacheAware`). `PASSIVE_LEVEL` (or `APC_LEVEL`) only:
    /// never under a spin lock.
    fn wait_for_release(&self);
    /// Lets `acquire` succeed again after a completed wait
    /// (`ExReInitializeRundownProtectionCacheAware`).
    fn reinitialize(&self);
}

/// A reader/writer spin lock (`EX_SPIN_LOCK`).
///
/// `ExAcquireSpinLockShared` / `ExReleaseSpinLockShared`, `ExAcquireSpinLockExclusive` /
/// `ExReleaseSpinLockExclusive`. Both raise to `DISPATCH_LEVEL`; usable at
/// `IRQL <= DISPATCH_LEVEL`.
///
/// # Safety
/// Implementors guarantee that an exclusive holder excludes every other holder, and that
/// shared holders exclude only exclusive ones. A shared holder must never ask for the same lock
/// exclusively (the documented deadlock; the simulator reports it).
pub unsafe trait RawRwSpinLock: Send + Sync {
    /// Acquires it shared; returns the previous IRQL.
    fn lock_shared(&self) -> u8;
    /// Releases a shared hold.
    ///
    /// # Safety
    /// The caller holds it shared, acquired with the IRQL in `token`.
    unsafe fn unlock_shared(&self, token: u8);
    /// Acquires it exclusively; returns the previous IRQL.
    fn lock_exclusive(&self) -> u8;
    /// Releases an exclusive hold.
    ///
    /// # Safety
    /// The caller holds it exclusively, acquired with the IRQL in `token`.
    unsafe fn unlock_exclusive(&self, token: u8);
}

/// Kernel services. All methods are callable at `IRQL <= DISPATCH_LEVEL` unless noted.
pub trait KernelServices: Send + Sync + 'static {
    /// The lock type.
    type Lock: RawSpinLock;
    /// The cache-aware rundown type.
    type Rundown: RawRundown;
    /// The reader/writer spin lock type.
    type RwLock: RawRwSpinLock;

    /// A new, unlocked lock.
    fn new_lock(&self) -> Self::Lock;

    /// New rundown protection, not run down (`ExAllocateCacheAwareRundownProtection`,
    /// nonpaged; freed with `ExFreeCacheAwareRundownProtection` when dropped).
    ///
    /// # Errors
    /// Out of memory.
    fn new_rundown(&self) -> Result<Self::Rundown, CalloutError>;

    /// A new, unowned reader/writer spin lock (an `EX_SPIN_LOCK` initialized to 0).
    fn new_rw_lock(&self) -> Self::RwLock;

    /// The processor the caller runs on, `0..processor_count()`
    /// (`KeGetCurrentProcessorNumberEx`). Only a hint for spreading counters: the caller may
    /// be moved to another processor right after (at `PASSIVE_LEVEL`).
    fn current_processor(&self) -> u32;

    /// How many processors there can be (`KeQueryMaximumProcessorCountEx(ALL_PROCESSOR_GROUPS)`).
    fn processor_count(&self) -> u32;

    /// Waits about `micros` microseconds at `PASSIVE_LEVEL` (`KeDelayExecutionThread`).
    fn delay(&self, micros: u32);

    /// Monotonic time in 100 ns units (`KeQueryInterruptTime`).
    fn now(&self) -> Tick;

    /// Arranges for [`crate::Driver::run_deferred`] to be called at `PASSIVE_LEVEL` soon, on
    /// another thread of control. Requests while one is outstanding may coalesce into one call.
    ///
    /// # Errors
    /// If no work item can be queued (the caller then does the work itself).
    fn request_deferred_work(&self) -> Result<(), CalloutError>;

    /// Blocks (at `PASSIVE_LEVEL`) until no deferred work is queued or running.
    fn flush_deferred_work(&self);

    /// Writes a log line (`DbgPrintEx` in the driver: for the debugger).
    fn log(&self, level: LogLevel, args: fmt::Arguments<'_>);

    /// Emits a diagnostic event (ETW `TraceLogging` in the driver: for the field).
    fn trace(&self, event: &TraceEvent);

    /// A per-boot random value seeding the flow-table hash.
    fn hash_seed(&self) -> u64;

    /// The running Windows build number (`RtlGetVersion` in the driver), or `None` when
    /// unknown; it selects the optional callout flags ([`crate::os_version::callout_flags`]).
    fn os_build(&self) -> Option<u32> {
        None
    }

    /// The host's physical memory in bytes, read once at load (`PASSIVE_LEVEL`), or `None` if
    /// it cannot be read: the default host-wide flow-memory budget is derived from it
    /// ([`crate::config::flow_memory_budget`]).
    fn physical_memory_bytes(&self) -> Option<u64> {
        None
    }

    /// A configuration value under the service's `Parameters` key (`WdfRegistryQueryULong` in
    /// the driver). Names: [`crate::config::SETTINGS`].
    fn config_value(&self, name: &str) -> ConfigValue;

    /// The first `storage.len()` bytes (fewer if the frame is shorter) of the frame WFP passed
    /// as `layerData` at a vSwitch transport layer: `NdisGetDataBuffer` on the first
    /// `NET_BUFFER`, which points into the buffer when the bytes are contiguous and copies
    /// them into `storage` otherwise. (That the data starts at the Ethernet header is to
    /// verify on Windows, item 11.)
    ///
    /// # Safety
    /// `layer_data` and `meta` are the pointers WFP passed to the classify function, valid for
    /// the duration of the call; `storage` lives inside that call, so the returned view does
    /// not outlive the packet.
    unsafe fn read_frame<'a>(
        &self,
        layer_data: *mut c_void,
        meta: *const FWPS_INCOMING_METADATA_VALUES0,
        storage: &'a mut [u8],
    ) -> Option<Frame<'a>>;
}
