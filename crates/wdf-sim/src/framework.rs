//! The framework's state: one loaded driver image, its WDF object tree, the I/O manager's view
//! of the control device, the clock, IRQL, the registry's `Parameters` key, the OS version, the
//! debugger output and the ETW session.
//!
//! Every rule enforced here is derived from Microsoft's documentation or the open-source KMDF
//! (microsoft/Windows-Driver-Frameworks, read, not copied); docs/SIMULATOR-FIDELITY.md
//! ("KMDF double") lists each with its source and the test that exercises it. Where the sources
//! are silent the double takes the choice worse for the driver.
//!
//! The state lives behind one process-wide mutex. It is never held while driver code runs: the
//! shims in [`crate::exports`] lock it for the duration of one DDI, and the harness in
//! [`crate::Session`] releases it around every callback it makes into the driver.

use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard, PoisonError};

use wdk_sys::{
    DEVICE_OBJECT, PFN_WDF_DRIVER_UNLOAD, PFN_WDF_IO_QUEUE_IO_DEVICE_CONTROL,
    PFN_WDF_OBJECT_CONTEXT_CLEANUP, PFN_WDF_OBJECT_CONTEXT_DESTROY, PFN_WDF_TIMER,
    PFN_WDF_WORKITEM,
};

use crate::etw::EtwSession;
use crate::pool::Pool;
use crate::violation::Violation;

/// `PASSIVE_LEVEL`.
pub const PASSIVE_LEVEL: u8 = 0;
/// `DISPATCH_LEVEL`.
pub const DISPATCH_LEVEL: u8 = 2;

/// A control device (`WdfControlDeviceInitAllocate` + `WdfDeviceCreate`).
#[derive(Debug)]
pub struct Device {
    /// `\Device\...` name.
    pub name: Option<String>,
    /// The SDDL string the init structure was allocated with.
    pub sddl: String,
    /// `DO_DEVICE_INITIALIZING` still set (cleared by `WdfControlFinishInitializing`).
    pub initializing: bool,
    /// Symbolic links created for it.
    pub links: Vec<String>,
    /// Its default queue.
    pub default_queue: Option<usize>,
    /// The WDM device object `WdfDeviceWdmGetDeviceObject` returns.
    pub wdm: Box<DEVICE_OBJECT>,
}

/// An I/O queue.
#[derive(Debug)]
pub struct Queue {
    /// `WdfIoQueueDispatch*`.
    pub dispatch: i32,
    /// `EvtIoDeviceControl`.
    pub device_control: PFN_WDF_IO_QUEUE_IO_DEVICE_CONTROL,
    /// Callbacks at `PASSIVE_LEVEL` (`ExecutionLevel` passive on the queue's attributes).
    pub passive: bool,
    /// The request presented and not completed yet (sequential dispatch presents one at a time).
    pub in_flight: Option<usize>,
}

/// A work item.
#[derive(Debug)]
pub struct WorkItem {
    /// `EvtWorkItemFunc`.
    pub func: PFN_WDF_WORKITEM,
    /// Enqueued and not started.
    pub queued: bool,
}

/// A timer.
#[derive(Debug)]
pub struct Timer {
    /// `EvtTimerFunc`.
    pub func: PFN_WDF_TIMER,
    /// `Period` in milliseconds (0: one-shot).
    pub period_ms: u32,
    /// Its callbacks run at `PASSIVE_LEVEL` (one-shot timers with `ExecutionLevel` passive).
    pub passive: bool,
    /// When it fires next (interrupt time, 100 ns), if it is in the timer queue.
    pub due: Option<u64>,
}

/// What a WDF object is.
#[derive(Debug)]
pub enum Kind {
    /// `WDFDRIVER`.
    Driver {
        /// `EvtDriverUnload`.
        unload: PFN_WDF_DRIVER_UNLOAD,
    },
    /// `WDFDEVICE` (control device).
    Device(Device),
    /// `WDFQUEUE`.
    Queue(Queue),
    /// `WDFWORKITEM`.
    WorkItem(WorkItem),
    /// `WDFTIMER`.
    Timer(Timer),
    /// `WDFKEY`.
    Key,
}

impl Kind {
    /// The WDF type name.
    #[must_use]
    pub const fn name(&self) -> &'static str {
        match self {
            Self::Driver { .. } => "WDFDRIVER",
            Self::Device(_) => "WDFDEVICE",
            Self::Queue(_) => "WDFQUEUE",
            Self::WorkItem(_) => "WDFWORKITEM",
            Self::Timer(_) => "WDFTIMER",
            Self::Key => "WDFKEY",
        }
    }
}

/// A WDF object.
#[derive(Debug)]
pub struct Object {
    /// What it is.
    pub kind: Kind,
    /// Its parent (lifetime: deleted with it).
    pub parent: Option<usize>,
    /// `EvtCleanupCallback`.
    pub cleanup: PFN_WDF_OBJECT_CONTEXT_CLEANUP,
    /// `EvtDestroyCallback`.
    pub destroy: PFN_WDF_OBJECT_CONTEXT_DESTROY,
}

/// A `WDFDEVICE_INIT` from `WdfControlDeviceInitAllocate`.
#[derive(Debug)]
pub struct DeviceInit {
    /// The SDDL string.
    pub sddl: String,
    /// `WdfDeviceInitAssignName`.
    pub name: Option<String>,
}

/// A request presented to the driver.
#[derive(Debug)]
pub struct Request {
    /// The queue that presented it.
    pub queue: usize,
    /// `IoControlCode`.
    pub code: u32,
    /// METHOD_BUFFERED: one system buffer of `max(input, output)` bytes, holding the input.
    pub buffer: Vec<u8>,
    /// `InputBufferLength`.
    pub input_len: usize,
    /// `OutputBufferLength`.
    pub output_len: usize,
    /// `(status, information)` once completed.
    pub completed: Option<(i32, u64)>,
}

/// Cache-aware rundown protection from `ExAllocateCacheAwareRundownProtection`.
#[derive(Debug, Default)]
pub struct Rundown {
    /// References held.
    pub refs: u32,
    /// `ExWaitForRundownProtectionReleaseCacheAware` has run: acquisitions fail.
    pub run_down: bool,
}

/// A registry value under the service's `Parameters` key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RegValue {
    /// `REG_DWORD`.
    Dword(u32),
    /// `REG_SZ`.
    String(String),
}

/// The framework and the kernel around it.
#[derive(Debug)]
pub struct Framework {
    /// Live WDF objects by handle.
    pub objects: BTreeMap<usize, Object>,
    /// Outstanding `WDFDEVICE_INIT` allocations by pointer value.
    pub inits: BTreeMap<usize, DeviceInit>,
    /// Requests by handle (kept after completion for the harness to read the result).
    pub requests: BTreeMap<usize, Request>,
    /// The `WDFDRIVER`, once created.
    pub driver: Option<usize>,
    /// The WDM driver object handed to `DriverEntry`.
    pub driver_object: usize,
    /// Current IRQL of the (single) simulated processor.
    pub irql: u8,
    /// Interrupt time, 100 ns units.
    pub clock: u64,
    /// The `Parameters` key (`None`: the key does not exist).
    pub parameters: Option<Vec<(String, RegValue)>>,
    /// `RTL_OSVERSIONINFOW::dwBuildNumber` `RtlGetVersion` reports.
    pub os_build: u32,
    /// `DbgPrintEx` output: component, level, text.
    pub debug_output: Vec<(u32, u32, String)>,
    /// The ETW session: providers and events.
    pub etw: EtwSession,
    /// Misuses detected.
    pub violations: Vec<Violation>,
    /// Every DDI called, in order.
    pub calls: Vec<&'static str>,
    /// The work item whose callback is running.
    pub running_work_item: Option<usize>,
    /// The timer whose callback is running.
    pub running_timer: Option<usize>,
    /// Spin locks held (addresses of their `KSPIN_LOCK`s).
    pub held_locks: Vec<usize>,
    /// Reader/writer spin locks (`EX_SPIN_LOCK`) held: address to (shared holders, exclusive).
    pub rw_locks: BTreeMap<usize, (u32, bool)>,
    /// Spin locks of either kind held: address to the IRQL their acquisition returned.
    pub spin_irqls: BTreeMap<usize, u8>,
    /// Rundown protections by address.
    pub rundowns: BTreeMap<usize, Rundown>,
    /// The kernel pool (`ExAllocatePool2`).
    pub pool: Pool,
    /// `KeQueryMaximumProcessorCountEx(ALL_PROCESSOR_GROUPS)`.
    pub processors: u32,
    /// `KeGetCurrentProcessorNumberEx`.
    pub current_processor: u32,
    /// The system-preferred RNG `BCryptGenRandom` draws from (a SplitMix64 stream; tests set
    /// its state to know what the driver got).
    pub rng_state: u64,
    /// `BCryptGenRandom` fails (`STATUS_UNSUCCESSFUL`): a test's choice, to exercise the
    /// driver's fallback.
    pub rng_fails: bool,
    /// The host's physical memory in bytes (`MmGetPhysicalMemoryRangesEx2`'s ranges add up to
    /// it); 0: the call fails (returns NULL).
    pub physical_memory: u64,
    next_handle: usize,
}

impl Default for Framework {
    fn default() -> Self {
        Self {
            objects: BTreeMap::new(),
            inits: BTreeMap::new(),
            requests: BTreeMap::new(),
            driver: None,
            driver_object: 0,
            irql: PASSIVE_LEVEL,
            clock: 0,
            parameters: Some(Vec::new()),
            // Windows 11 24H2 (26100); tests choose other builds with `set_os_build`.
            os_build: 26_100,
            debug_output: Vec::new(),
            etw: EtwSession::default(),
            violations: Vec::new(),
            calls: Vec::new(),
            running_work_item: None,
            running_timer: None,
            held_locks: Vec::new(),
            rw_locks: BTreeMap::new(),
            spin_irqls: BTreeMap::new(),
            rundowns: BTreeMap::new(),
            pool: Pool::default(),
            processors: 4,
            current_processor: 0,
            rng_state: 0x5EED_0000_0000_0001,
            rng_fails: false,
            physical_memory: 8 << 30,
            next_handle: 0x5F00_0000,
        }
    }
}

impl Framework {
    /// A fresh handle value (never dereferenced by the driver; never 0).
    pub fn handle(&mut self) -> usize {
        self.next_handle += 0x40;
        self.next_handle
    }

    /// Records a misuse.
    pub fn violate(&mut self, v: Violation) {
        self.violations.push(v);
    }

    /// Checks that `call` runs at `PASSIVE_LEVEL` (its documented maximum IRQL).
    pub fn require_passive(&mut self, call: &'static str) -> bool {
        if self.irql == PASSIVE_LEVEL {
            true
        } else {
            let irql = self.irql;
            self.violate(Violation::IrqlTooHigh { call, irql, max: PASSIVE_LEVEL });
            false
        }
    }

    /// Checks that `call` runs at `IRQL <= DISPATCH_LEVEL`.
    pub fn require_dispatch_or_below(&mut self, call: &'static str) {
        if self.irql > DISPATCH_LEVEL {
            let irql = self.irql;
            self.violate(Violation::IrqlTooHigh { call, irql, max: DISPATCH_LEVEL });
        }
    }

    /// What every spin-lock release checks, after the lock at `lock` was taken out of
    /// `held_locks` / `rw_locks`; then restores `new_irql`.
    ///
    /// `KeReleaseSpinLock`: "Callers of this routine are running at IRQL = `DISPATCH_LEVEL`"; "The
    /// input `NewIrql` value must be the `OldIrql` returned by `KeAcquireSpinLock`" (and
    /// `ExReleaseSpinLockShared`/`Exclusive`: "restores the IRQL to the original value that it
    /// had on entry"). A release that takes the IRQL below `DISPATCH_LEVEL` while another spin
    /// lock is held (locks released out of order) leaves the processor at a lower IRQL holding a
    /// spin lock: reported too.
    pub fn spin_release(&mut self, call: &'static str, lock: usize, new_irql: u8) {
        if self.irql != DISPATCH_LEVEL {
            let irql = self.irql;
            self.violate(Violation::BadArgument {
                call,
                what: format!("called at IRQL {irql}: its callers run at DISPATCH_LEVEL"),
            });
        }
        if let Some(acquired) = self.spin_irqls.remove(&lock)
            && acquired != new_irql
        {
            self.violate(Violation::BadArgument {
                call,
                what: format!("NewIrql {new_irql}, but its acquisition returned {acquired}"),
            });
        }
        let others = self.held_locks.len() + self.rw_locks.len();
        if new_irql < DISPATCH_LEVEL && others > 0 {
            self.violate(Violation::BadArgument {
                call,
                what: format!(
                    "lowers the IRQL to {new_irql} while {others} other spin lock(s) are held \
                     (released out of order)"
                ),
            });
        }
        self.irql = new_irql;
    }

    /// The object behind `handle`, if it is live and of the kind `expected` names.
    pub fn object(
        &mut self,
        call: &'static str,
        handle: usize,
        expected: &'static str,
    ) -> Option<&mut Object> {
        let ok = self.objects.get(&handle).is_some_and(|o| o.kind.name() == expected);
        if !ok {
            self.violate(Violation::BadHandle { call, handle, expected });
            return None;
        }
        self.objects.get_mut(&handle)
    }

    /// Whether `handle` is a live object (any kind).
    #[must_use]
    pub fn is_live(&self, handle: usize) -> bool {
        self.objects.contains_key(&handle)
    }

    /// The device `handle` belongs to (itself, or its nearest device ancestor).
    #[must_use]
    pub fn device_of(&self, handle: usize) -> Option<usize> {
        let mut cur = Some(handle);
        while let Some(h) = cur {
            let o = self.objects.get(&h)?;
            if matches!(o.kind, Kind::Device(_)) {
                return Some(h);
            }
            cur = o.parent;
        }
        None
    }

    /// `handle` and all its descendants, children first (KMDF disposes children before their
    /// parent).
    #[must_use]
    pub fn subtree(&self, handle: usize) -> Vec<usize> {
        let mut out = Vec::new();
        self.collect(handle, &mut out);
        out
    }

    fn collect(&self, handle: usize, out: &mut Vec<usize>) {
        let children: Vec<usize> = self
            .objects
            .iter()
            .filter(|(_, o)| o.parent == Some(handle))
            .map(|(h, _)| *h)
            .collect();
        for c in children {
            self.collect(c, out);
        }
        out.push(handle);
    }
}

static FRAMEWORK: Mutex<Option<Framework>> = Mutex::new(None);

/// Runs `f` on the framework state.
///
/// # Panics
/// With no [`crate::Session`]: a DDI called outside one is a test bug and fails loudly.
pub fn with<R>(f: impl FnOnce(&mut Framework) -> R) -> R {
    let mut guard = lock();
    let fw = guard.as_mut().expect("a WDF or kernel function was called with no wdf_sim::Session");
    let r = f(fw);
    drop(guard);
    r
}

/// Locks the state.
pub fn lock() -> MutexGuard<'static, Option<Framework>> {
    FRAMEWORK.lock().unwrap_or_else(PoisonError::into_inner)
}
