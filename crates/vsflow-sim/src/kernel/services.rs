//! `KernelServices` for the simulator.
//!
//! A virtual clock, a deferred-work queue the scenario drives, spin locks that detect recursive
//! acquisition, reader/writer spin locks whose waiting writer keeps new readers out,
//! cache-aware rundown protection and fast mutexes with their documented contracts, an emulated
//! IRQL per thread, and captured logs.
//!
//! Misuse is reported in [`HostShared::misuse`] and fails loudly (panics), as Driver Verifier
//! would bugcheck: releasing a rundown reference never acquired, waiting for rundown at
//! `DISPATCH_LEVEL` (`ExWaitForRundownProtectionReleaseCacheAware`: `IRQL <= APC_LEVEL`),
//! reinitializing a rundown that was not run down, acquiring a fast mutex at `DISPATCH_LEVEL`
//! or recursively (`ExAcquireFastMutex`: `IRQL <= APC_LEVEL`, not recursive), releasing a fast
//! mutex the thread does not own. Recorded without panicking (the host reports them at unload):
//! a service called at an IRQL its page forbids, a spin lock released below `DISPATCH_LEVEL`,
//! with another IRQL than its acquisition returned, or out of order (the IRQL drops below
//! `DISPATCH_LEVEL` while another spin lock is held), an `EX_SPIN_LOCK` acquired shared by a
//! thread that already owns it.

use std::cell::{Cell, RefCell};
use std::ffi::c_void;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use fwps_sys::FWPS_INCOMING_METADATA_VALUES0;
use vsflow_callout::{
    CalloutError, ConfigValue, Frame, KernelServices, LogLevel, RawRundown, RawRwSpinLock,
    RawSpinLock, TraceEvent,
};

/// A value under the service's `Parameters` key, by registry type.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RegValue {
    /// `REG_DWORD`.
    Dword(u32),
    /// `REG_SZ` (what `WdfRegistryQueryULong` refuses with `STATUS_OBJECT_TYPE_MISMATCH`).
    String(String),
}

/// State shared between a host and its driver's services.
#[derive(Debug, Default)]
pub struct HostShared {
    /// Virtual time in 100 ns ticks.
    pub clock: AtomicU64,
    /// Outstanding requests for `Driver::run_deferred`.
    pub deferred_requests: AtomicUsize,
    /// Refuse deferred-work requests (to exercise the synchronous fallback).
    pub refuse_deferred: AtomicBool,
    /// The running driver (`*const Driver<SimServices>`), for flush.
    pub driver: AtomicUsize,
    /// Captured log lines.
    pub logs: Mutex<Vec<String>>,
    /// Captured diagnostic events (what the driver writes to ETW).
    pub events: Mutex<Vec<TraceEvent>>,
    /// Recursive lock acquisitions seen.
    pub recursive_locks: AtomicUsize,
    /// The service's `Parameters` key: its values by name (compared case-insensitively, as
    /// the registry does).
    pub registry: Mutex<Vec<(String, RegValue)>>,
    /// The host's id (for work items run on their own threads).
    pub host_id: AtomicUsize,
    /// Run each requested work item at once on its own thread, as another CPU would, possibly
    /// before the requesting callback returns.
    pub eager_work_items: AtomicBool,
    /// Work-item threads not yet joined.
    pub workers: Mutex<Vec<std::thread::JoinHandle<()>>>,
    /// One work item runs at a time (a WDF work item is not reentered).
    pub work_item: Mutex<()>,
    /// Misuse of a kernel primitive (each also panics where it happened).
    pub misuse: Mutex<Vec<String>>,
    /// Interrupts holding up one of this host's processors ([`crate::kernel::interrupts`]).
    pub interrupts: crate::kernel::interrupts::InterruptHold,
    /// The host's physical memory in bytes as the driver reads it at load: 0 for
    /// [`SIM_PHYSICAL_MEMORY`], `u64::MAX` for a host whose size cannot be read.
    pub physical_memory: AtomicU64,
    /// Scheduling control for race tests: the next clock read of a work item running on its
    /// own thread stops there until the test resumes it (another CPU preempted at that
    /// instant). See `Host::pause_work_item_at_clock`.
    pub work_item_clock_pause: Mutex<Option<ClockPause>>,
}

/// A work item stopped at its next clock read: it reports `reached`, then waits for `resume`.
#[derive(Debug)]
pub struct ClockPause {
    /// Signalled when the work item has stopped.
    pub reached: std::sync::mpsc::Sender<()>,
    /// Received (or dropped) to let it go on.
    pub resume: std::sync::mpsc::Receiver<()>,
}

/// The simulated host's physical memory unless a test sets another (16 GiB).
pub const SIM_PHYSICAL_MEMORY: u64 = 16 << 30;

/// Processors the simulated host reports (`KeQueryMaximumProcessorCountEx`).
pub const PROCESSORS: u32 = 8;

/// `PASSIVE_LEVEL`.
pub const PASSIVE_LEVEL: u8 = 0;
/// `APC_LEVEL`.
pub const APC_LEVEL: u8 = 1;
/// `DISPATCH_LEVEL`.
pub const DISPATCH_LEVEL: u8 = 2;

thread_local! {
    /// The emulated IRQL of this thread.
    static IRQL: Cell<u8> = const { Cell::new(PASSIVE_LEVEL) };
    /// This thread's simulated processor.
    static PROCESSOR: Cell<Option<u32>> = const { Cell::new(None) };
    /// This thread runs a work item on its own (`eager_work_items`).
    static WORK_ITEM_THREAD: Cell<bool> = const { Cell::new(false) };
    /// Rundown references this thread holds: (rundown address, count), no allocation.
    static HELD_RUNDOWNS: RefCell<[(usize, u32); 8]> = const { RefCell::new([(0, 0); 8]) };
}

static NEXT_PROCESSOR: AtomicUsize = AtomicUsize::new(0);

/// The emulated IRQL of the calling thread.
#[must_use]
pub fn current_irql() -> u8 {
    IRQL.with(Cell::get)
}

/// Sets the calling thread's emulated IRQL; returns the previous one.
#[allow(clippy::must_use_candidate, reason = "callers may only raise it")]
pub fn set_irql(irql: u8) -> u8 {
    IRQL.with(|c| c.replace(irql))
}

/// The calling thread's simulated processor: assigned round-robin on first use.
#[must_use]
pub fn current_processor() -> u32 {
    PROCESSOR.with(|p| {
        if let Some(n) = p.get() {
            return n;
        }
        let n = u32::try_from(NEXT_PROCESSOR.fetch_add(1, Ordering::Relaxed) % PROCESSORS as usize)
            .unwrap_or(0);
        p.set(Some(n));
        n
    })
}

/// Pins the calling thread to simulated processor `n` (benchmarks).
pub fn set_processor(n: u32) {
    PROCESSOR.with(|p| p.set(Some(n % PROCESSORS)));
}

#[allow(clippy::needless_pass_by_value, reason = "callers build the message for this call")]
#[cold]
#[inline(never)]
fn misuse(shared: Option<&Arc<HostShared>>, what: String) -> ! {
    let _kernel = crate::kernel::alloc::Attribution::enter(None);
    if let Some(s) = shared {
        s.misuse.lock().unwrap_or_else(PoisonError::into_inner).push(what.clone());
    }
    panic!("kernel primitive misused: {what}");
}

/// A primitive used at an IRQL its page forbids. Driver Verifier would bugcheck; the double
/// records it (the host reports it as a violation at unload) and lets the call proceed, so one
/// wrong-IRQL call fails its test instead of aborting the whole test binary (a panic cannot
/// unwind out of the `extern "system"` callback the call usually sits in).
#[cold]
#[inline(never)]
fn wrong_irql(shared: Option<&Arc<HostShared>>, what: String) {
    let _kernel = crate::kernel::alloc::Attribution::enter(None);
    if let Some(s) = shared {
        s.misuse.lock().unwrap_or_else(PoisonError::into_inner).push(what);
    }
}

/// One processor's rundown counter, alone on its cache line.
#[derive(Debug, Default)]
#[repr(align(128))]
struct RundownLine(AtomicI64);

/// `EX_RUNDOWN_REF_CACHE_AWARE`: a counter per processor and a run-down flag.
#[derive(Debug)]
pub struct SimRundown {
    lines: Box<[RundownLine]>,
    running_down: AtomicBool,
    shared: Option<Arc<HostShared>>,
}

impl SimRundown {
    fn new(shared: Option<Arc<HostShared>>) -> Self {
        Self {
            lines: (0..PROCESSORS).map(|_| RundownLine::default()).collect(),
            running_down: AtomicBool::new(false),
            shared,
        }
    }

    fn line(&self) -> &AtomicI64 {
        let i = current_processor() as usize % self.lines.len();
        &self.lines[i].0
    }
}

// SAFETY: `acquire` increments a per-processor counter and then checks the run-down flag
// (both SeqCst); `wait_for_release` sets the flag (SeqCst) and then waits for the sum of the
// counters to reach zero: an acquire that saw the flag clear is counted before the waiter
// sums, and one that saw it set backs out and fails.
unsafe impl RawRundown for SimRundown {
    fn acquire(&self) -> bool {
        if self.running_down.load(Ordering::SeqCst) {
            return false;
        }
        let line = self.line();
        line.fetch_add(1, Ordering::SeqCst);
        if self.running_down.load(Ordering::SeqCst) {
            line.fetch_sub(1, Ordering::SeqCst);
            return false;
        }
        let me = std::ptr::from_ref(self) as usize;
        HELD_RUNDOWNS.with(|h| {
            let mut h = h.borrow_mut();
            if let Some(e) = h.iter_mut().find(|e| e.0 == me) {
                e.1 += 1;
            } else if let Some(e) = h.iter_mut().find(|e| e.1 == 0) {
                *e = (me, 1);
            }
        });
        true
    }

    unsafe fn release(&self) {
        // A simulated thread stays on its processor, so its acquire and release use the
        // same counter: one that goes below zero was released without an acquire.
        let me = std::ptr::from_ref(self) as usize;
        let held = HELD_RUNDOWNS.with(|h| {
            let mut h = h.borrow_mut();
            h.iter_mut().find(|e| e.0 == me && e.1 > 0).map_or(0, |e| {
                e.1 -= 1;
                e.1 + 1
            })
        });
        if held == 0 || self.line().fetch_sub(1, Ordering::SeqCst) <= 0 {
            misuse(
                self.shared.as_ref(),
                "rundown released without a matching acquire on this thread".to_owned(),
            );
        }
    }

    fn wait_for_release(&self) {
        if current_irql() >= DISPATCH_LEVEL {
            wrong_irql(
                self.shared.as_ref(),
                "ExWaitForRundownProtectionReleaseCacheAware at DISPATCH_LEVEL".to_owned(),
            );
        }
        let me = std::ptr::from_ref(self) as usize;
        if HELD_RUNDOWNS.with(|h| h.borrow().iter().any(|e| e.0 == me && e.1 > 0)) {
            misuse(
                self.shared.as_ref(),
                "rundown wait by a thread holding a reference on it (deadlock)".to_owned(),
            );
        }
        self.running_down.store(true, Ordering::SeqCst);
        while self.lines.iter().map(|l| l.0.load(Ordering::SeqCst)).sum::<i64>() != 0 {
            std::thread::yield_now();
        }
    }

    fn reinitialize(&self) {
        if !self.running_down.load(Ordering::SeqCst) {
            misuse(
                self.shared.as_ref(),
                "ExReInitializeRundownProtectionCacheAware on a rundown not run down".to_owned(),
            );
        }
        self.running_down.store(false, Ordering::SeqCst);
    }
}

thread_local! {
    /// Spin locks of either kind this thread holds (for the IRQL checks on release).
    static SPIN_HELD: Cell<u32> = const { Cell::new(0) };
}

/// The checks every spin-lock release makes, then the IRQL it restores.
///
/// `KeReleaseSpinLock` ("Callers of this routine are running at IRQL = `DISPATCH_LEVEL` ... The
/// input `NewIrql` value must be the `OldIrql` returned by `KeAcquireSpinLock`"), and the same for
/// `ExReleaseSpinLockShared`/`Exclusive` ("restores the IRQL to the original value that it had
/// on entry to ExAcquireSpinLock..."): a release called below `DISPATCH_LEVEL`, or with another
/// IRQL than its acquisition returned, is misuse; so is a release that takes the IRQL below
/// `DISPATCH_LEVEL` while the thread still holds another spin lock (locks released out of
/// order: the thread would run at `PASSIVE_LEVEL` holding a spin lock).
#[inline]
fn release_irql(shared: Option<&Arc<HostShared>>, call: &str, token: u8, acquired_at: u8) {
    let now = current_irql();
    let left = SPIN_HELD.with(|h| {
        let n = h.get().saturating_sub(1);
        h.set(n);
        n
    });
    if now != DISPATCH_LEVEL || token != acquired_at || (token < DISPATCH_LEVEL && left > 0) {
        bad_release(shared, call, now, token, acquired_at, left);
    }
    set_irql(token);
}

/// Reports what [`release_irql`] found wrong (off the fast path: the checks are the double's,
/// their messages cost nothing until one fails).
#[cold]
#[inline(never)]
fn bad_release(
    shared: Option<&Arc<HostShared>>,
    call: &str,
    now: u8,
    token: u8,
    acquired_at: u8,
    left: u32,
) {
    if now != DISPATCH_LEVEL {
        wrong_irql(shared, format!("{call} at IRQL {now}: its callers run at DISPATCH_LEVEL"));
    }
    if token != acquired_at {
        wrong_irql(
            shared,
            format!("{call} restores IRQL {token}, its acquisition returned {acquired_at}"),
        );
    }
    if token < DISPATCH_LEVEL && left > 0 {
        wrong_irql(
            shared,
            format!(
                "{call} lowers the IRQL to {token} while {left} other spin lock(s) are held \
                 (released out of order)"
            ),
        );
    }
}

/// Counts a spin lock the thread now holds.
fn acquired() {
    SPIN_HELD.with(|h| h.set(h.get() + 1));
}

/// `EX_SPIN_LOCK`: shared or exclusive, the holder at `DISPATCH_LEVEL`.
///
/// As "Reader/Writer Spin Locks" documents it: a writer waits for every reader to release the
/// lock, and *while it waits no new reader acquires the lock*: a reader that comes meanwhile
/// waits until the writer has acquired and released it. `ExAcquireSpinLockShared` /
/// `ExAcquireSpinLockExclusive`: `IRQL <= DISPATCH_LEVEL`; "The caller must not already own this
/// spin lock ... Recursive acquisition of a spin lock causes deadlock": a second acquisition
/// by a thread that holds the lock (shared or exclusive, either mode) is reported. A shared
/// holder that asks for the lock exclusively is the documented upgrade deadlock (reported and
/// panics); so are releases of a hold the thread does not have.
#[derive(Debug, Default)]
pub struct SimRwLock {
    /// Bit 31: held exclusively; bits 16-30: writers waiting; bits 0-15: shared holders.
    state: std::sync::atomic::AtomicU32,
    /// The IRQL the exclusive holder's acquisition returned.
    exclusive_irql: std::sync::atomic::AtomicU8,
    shared: Option<Arc<HostShared>>,
}

const EXCLUSIVE: u32 = 1 << 31;
const WAITER: u32 = 1 << 16;
const WAITERS: u32 = 0x7FFF << 16;
const SHARED: u32 = 0xFFFF;

/// One thread's hold of a reader/writer lock: (address, shared holds, exclusive, IRQL the
/// shared acquisition returned).
type Hold = (usize, u32, bool, u8);

/// Reader/writer locks one thread can hold at once and be checked on (a ninth is not tracked:
/// its release is then reported as one without a hold).
const HELD_RW_MAX: usize = 8;

thread_local! {
    /// Reader/writer locks this thread holds: the first [`HELD_RW_LEN`] entries (no
    /// allocation; a thread holds few at a time, so the checks scan only those it holds).
    static HELD_RW: [Cell<Hold>; HELD_RW_MAX] =
        const { [const { Cell::new((0, 0, false, 0)) }; HELD_RW_MAX] };
    /// How many entries of [`HELD_RW`] are live.
    static HELD_RW_LEN: Cell<usize> = const { Cell::new(0) };
}

/// This thread's hold of the reader/writer lock at `me`: its index and record.
#[allow(
    clippy::inline_always,
    reason = "three times per lock hold on the classify path (callgrind, docs/PERFORMANCE.md)"
)]
#[inline(always)]
fn find_hold(me: usize) -> Option<(usize, Hold)> {
    let len = HELD_RW_LEN.with(Cell::get).min(HELD_RW_MAX);
    if len == 0 {
        return None;
    }
    HELD_RW.with(|h| {
        let mut i = 0;
        while let Some(c) = h.get(i).filter(|_| i < len) {
            let e = c.get();
            if e.0 == me {
                return Some((i, e));
            }
            i += 1;
        }
        None
    })
}

/// Appends a hold record for a lock this thread did not hold (a ninth lock is not tracked:
/// its release is then reported as one without a hold).
#[inline]
fn push_hold(record: Hold) {
    let len = HELD_RW_LEN.with(Cell::get);
    if len < HELD_RW_MAX {
        HELD_RW.with(|h| h.get(len).map(|c| c.set(record)));
        HELD_RW_LEN.with(|l| l.set(len + 1));
    }
}

impl SimRwLock {
    /// Writers waiting for the lock now (each keeps new readers out).
    #[must_use]
    pub fn writers_waiting(&self) -> u32 {
        (self.state.load(Ordering::SeqCst) & WAITERS) / WAITER
    }

    fn me(&self) -> usize {
        std::ptr::from_ref(self) as usize
    }

    /// What is wrong with a shared acquisition at `irql` by a thread whose hold of this lock
    /// is `found` (off the fast path: reported, not fatal).
    #[cold]
    #[inline(never)]
    fn shared_misuse(&self, irql: u8, found: Option<(usize, Hold)>) {
        if irql > DISPATCH_LEVEL {
            wrong_irql(
                self.shared.as_ref(),
                "ExAcquireSpinLockShared above DISPATCH_LEVEL".to_owned(),
            );
        }
        if found.is_some_and(|(_, e)| e.1 > 0 || e.2) {
            // Recorded, not fatal: the second shared hold goes through while no writer waits,
            // and deadlocks on Windows the moment one does.
            wrong_irql(
                self.shared.as_ref(),
                "ExAcquireSpinLockShared by a thread that already owns the lock (recursive \
                 acquisition deadlocks once a writer waits)"
                    .to_owned(),
            );
        }
    }

    /// This thread's holds of this lock: (shared holds, exclusive).
    #[inline]
    fn holds(&self) -> (u32, bool) {
        find_hold(self.me()).map_or((0, false), |(_, e)| (e.1, e.2))
    }

    /// Records a hold taken by this thread: shared (with the IRQL its acquisition returned)
    /// or exclusive.
    #[inline]
    fn hold(&self, exclusive: bool, irql: u8) {
        let me = self.me();
        let (i, mut e) = if let Some(found) = find_hold(me) {
            found
        } else {
            let len = HELD_RW_LEN.with(Cell::get);
            if len >= HELD_RW_MAX {
                return;
            }
            HELD_RW_LEN.with(|l| l.set(len + 1));
            (len, (me, 0, false, 0))
        };
        if exclusive {
            e.2 = true;
        } else {
            e.1 = e.1.saturating_add(1);
            e.3 = irql;
        }
        HELD_RW.with(|h| h.get(i).map(|c| c.set(e)));
    }

    /// Records the release of a hold by this thread: returns whether it had one (and for a
    /// shared hold, the IRQL its acquisition returned).
    #[inline]
    fn unhold(&self, exclusive: bool) -> Option<u8> {
        let (i, mut e) = find_hold(self.me())?;
        if exclusive {
            if !e.2 {
                return None;
            }
            e.2 = false;
        } else {
            if e.1 == 0 {
                return None;
            }
            e.1 -= 1;
        }
        if e.1 == 0 && !e.2 {
            // No hold left: the last live entry takes its place.
            let last = HELD_RW_LEN.with(Cell::get).saturating_sub(1);
            HELD_RW_LEN.with(|l| l.set(last));
            if i != last {
                HELD_RW.with(|h| {
                    if let (Some(to), Some(from)) = (h.get(i), h.get(last)) {
                        to.set(from.get());
                    }
                });
            }
        } else {
            HELD_RW.with(|h| h.get(i).map(|c| c.set(e)));
        }
        Some(e.3)
    }
}

// SAFETY: an exclusive holder sets EXCLUSIVE with a compare-exchange that sees no shared holder
// and no exclusive one; shared holders increment the count only while EXCLUSIVE and the waiting
// writers are clear (compare-exchange); releases undo their own change with release ordering.
unsafe impl RawRwSpinLock for SimRwLock {
    // The shared pair is on every packet's path: inlined, one scan of this thread's holds
    // each, the messages built only when a check fails (`shared_misuse`, `bad_release`). The
    // checks are the same as the exclusive pair's.
    #[allow(
        clippy::inline_always,
        reason = "once per packet on the classify path: out of line it costs a call and a frame (callgrind, docs/PERFORMANCE.md)"
    )]
    #[inline(always)]
    fn lock_shared(&self) -> u8 {
        let prev = current_irql();
        let found = find_hold(self.me());
        if prev > DISPATCH_LEVEL || found.is_some() {
            self.shared_misuse(prev, found);
        }
        set_irql(DISPATCH_LEVEL);
        loop {
            let s = self.state.load(Ordering::Relaxed);
            if s & (EXCLUSIVE | WAITERS) == 0
                && s & SHARED != SHARED
                && self
                    .state
                    .compare_exchange_weak(s, s + 1, Ordering::Acquire, Ordering::Relaxed)
                    .is_ok()
            {
                break;
            }
            std::hint::spin_loop();
        }
        match found {
            // The usual case: no hold of this lock yet; a new record at the end.
            None => push_hold((self.me(), 1, false, prev)),
            Some(_) => self.hold(false, prev),
        }
        acquired();
        prev
    }

    #[allow(
        clippy::inline_always,
        reason = "once per packet on the classify path: out of line it costs a call and a frame (callgrind, docs/PERFORMANCE.md)"
    )]
    #[inline(always)]
    unsafe fn unlock_shared(&self, token: u8) {
        // The usual case: this thread's last recorded hold is its only hold of this lock, shared
        // once (holds are released in reverse order). Anything else takes the general path.
        let me = self.me();
        let len = HELD_RW_LEN.with(Cell::get).min(HELD_RW_MAX);
        let last = HELD_RW.with(|h| len.checked_sub(1).and_then(|i| h.get(i)).map(Cell::get));
        let irql = match last {
            Some((lock, 1, false, irql)) if lock == me => {
                HELD_RW_LEN.with(|l| l.set(len - 1));
                Some(irql)
            }
            _ => self.unhold(false),
        };
        let Some(irql) = irql else {
            misuse(
                self.shared.as_ref(),
                "ExReleaseSpinLockShared without a shared hold on this thread".to_owned(),
            );
        };
        self.state.fetch_sub(1, Ordering::Release);
        release_irql(self.shared.as_ref(), "ExReleaseSpinLockShared", token, irql);
    }

    fn lock_exclusive(&self) -> u8 {
        if current_irql() > DISPATCH_LEVEL {
            wrong_irql(
                self.shared.as_ref(),
                "ExAcquireSpinLockExclusive above DISPATCH_LEVEL".to_owned(),
            );
        }
        let (shared, exclusive) = self.holds();
        if shared > 0 {
            misuse(self.shared.as_ref(), "ExAcquireSpinLockExclusive by a thread holding it shared (shared->exclusive upgrade deadlocks)".to_owned());
        }
        if exclusive {
            misuse(self.shared.as_ref(), "ExAcquireSpinLockExclusive recursively".to_owned());
        }
        let prev = set_irql(DISPATCH_LEVEL);
        // Waiting: from now on no new reader gets in.
        self.state.fetch_add(WAITER, Ordering::Relaxed);
        loop {
            let s = self.state.load(Ordering::Relaxed);
            if s & (EXCLUSIVE | SHARED) == 0
                && self
                    .state
                    .compare_exchange_weak(
                        s,
                        (s - WAITER) | EXCLUSIVE,
                        Ordering::Acquire,
                        Ordering::Relaxed,
                    )
                    .is_ok()
            {
                break;
            }
            std::hint::spin_loop();
        }
        self.exclusive_irql.store(prev, Ordering::Relaxed);
        self.hold(true, prev);
        acquired();
        prev
    }

    unsafe fn unlock_exclusive(&self, token: u8) {
        if self.unhold(true).is_none() {
            misuse(
                self.shared.as_ref(),
                "ExReleaseSpinLockExclusive without an exclusive hold on this thread".to_owned(),
            );
        }
        let irql = self.exclusive_irql.load(Ordering::Relaxed);
        self.state.fetch_and(!EXCLUSIVE, Ordering::Release);
        release_irql(self.shared.as_ref(), "ExReleaseSpinLockExclusive", token, irql);
    }
}

/// The simulator's kernel services.
#[derive(Debug, Clone)]
pub struct SimServices {
    /// State shared with the host.
    pub shared: Arc<HostShared>,
    /// Hash seed handed to the driver.
    pub seed: u64,
}

/// A spin lock that fails loudly on recursive acquisition.
///
/// The holder runs at `DISPATCH_LEVEL` (`KeAcquireSpinLockRaiseToDpc`). Releases are checked as
/// `KeReleaseSpinLock` documents (IRQL, the token, release order); right after an acquisition
/// the host's [`crate::kernel::interrupts`] may hold the processor.
#[derive(Debug, Default)]
pub struct SimLock {
    held: AtomicBool,
    /// Identity of the holding thread (address of a thread-local), 0 when free.
    owner: AtomicUsize,
    /// The IRQL the holder's acquisition returned.
    irql: std::sync::atomic::AtomicU8,
    shared: Option<Arc<HostShared>>,
}

thread_local! {
    static THREAD_TAG: u8 = const { 0 };
}

fn thread_tag() -> usize {
    THREAD_TAG.with(|t| std::ptr::from_ref(t) as usize)
}

// SAFETY: `held` is taken with an acquire compare-exchange and released with a release store,
// which gives mutual exclusion; recursive acquisition is detected and reported instead of
// spinning forever.
unsafe impl RawSpinLock for SimLock {
    fn lock(&self) -> u8 {
        let me = thread_tag();
        loop {
            if self
                .held
                .compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed)
                .is_ok()
            {
                self.owner.store(me, Ordering::Relaxed);
                let prev = set_irql(DISPATCH_LEVEL);
                self.irql.store(prev, Ordering::Relaxed);
                acquired();
                if let Some(s) = &self.shared {
                    s.interrupts.after_acquire(current_processor());
                }
                return prev;
            }
            if self.owner.load(Ordering::Relaxed) == me {
                if let Some(s) = &self.shared {
                    s.recursive_locks.fetch_add(1, Ordering::SeqCst);
                }
                panic!("recursive spin lock acquisition: a deadlock at DISPATCH_LEVEL");
            }
            std::hint::spin_loop();
        }
    }

    unsafe fn unlock(&self, token: u8) {
        let irql = self.irql.load(Ordering::Relaxed);
        self.owner.store(0, Ordering::Relaxed);
        self.held.store(false, Ordering::Release);
        release_irql(self.shared.as_ref(), "KeReleaseSpinLock", token, irql);
    }

    /// `KeTryToAcquireSpinLockAtDpcLevel`: "IRQL >= `DISPATCH_LEVEL`" (the caller's; anything
    /// lower is reported), one attempt, the IRQL unchanged. A thread trying a lock it holds
    /// gets `false` (Windows would too: the lock is taken), and it is reported as the
    /// recursive acquisition it is.
    #[inline]
    fn try_lock_at_dpc(&self) -> bool {
        if current_irql() < DISPATCH_LEVEL {
            below_dispatch(self.shared.as_ref(), "KeTryToAcquireSpinLockAtDpcLevel");
        }
        if self.held.compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed).is_err() {
            if self.owner.load(Ordering::Relaxed) == thread_tag()
                && let Some(s) = &self.shared
            {
                s.recursive_locks.fetch_add(1, Ordering::SeqCst);
            }
            return false;
        }
        self.owner.store(thread_tag(), Ordering::Relaxed);
        self.irql.store(FROM_DPC, Ordering::Relaxed);
        acquired();
        if let Some(s) = &self.shared {
            s.interrupts.after_acquire(current_processor());
        }
        true
    }

    /// `KeReleaseSpinLockFromDpcLevel`: "IRQL >= `DISPATCH_LEVEL`", the IRQL unchanged; only a
    /// lock `KeTryToAcquireSpinLockAtDpcLevel` took (a `KeAcquireSpinLockRaiseToDpc` one must
    /// restore its IRQL with `KeReleaseSpinLock`).
    #[inline]
    unsafe fn unlock_from_dpc(&self) {
        let irql = self.irql.load(Ordering::Relaxed);
        self.owner.store(0, Ordering::Relaxed);
        self.held.store(false, Ordering::Release);
        SPIN_HELD.with(|h| h.set(h.get().saturating_sub(1)));
        if current_irql() < DISPATCH_LEVEL {
            below_dispatch(self.shared.as_ref(), "KeReleaseSpinLockFromDpcLevel");
        }
        if irql != FROM_DPC {
            wrong_irql(
                self.shared.as_ref(),
                "KeReleaseSpinLockFromDpcLevel of a lock KeAcquireSpinLockRaiseToDpc took (its \
                 IRQL is never restored)"
                    .to_owned(),
            );
        }
    }
}

/// A DPC-level spin lock call below `DISPATCH_LEVEL` (reported off the fast path).
#[cold]
#[inline(never)]
fn below_dispatch(shared: Option<&Arc<HostShared>>, call: &str) {
    wrong_irql(
        shared,
        format!("{call} at IRQL {}: its callers run at DISPATCH_LEVEL or above", current_irql()),
    );
}

/// What [`SimLock::irql`] holds for a lock acquired at DPC level (no IRQL saved).
const FROM_DPC: u8 = u8::MAX;

impl SimServices {
    /// Runs queued deferred work now; returns how many runs.
    #[allow(clippy::must_use_candidate, reason = "callers run it for its effect")]
    pub fn run_deferred(&self) -> usize {
        let _one = self.shared.work_item.lock().unwrap_or_else(PoisonError::into_inner);
        let mut runs = 0;
        while self.shared.deferred_requests.swap(0, Ordering::SeqCst) > 0 {
            let p = self.shared.driver.load(Ordering::SeqCst);
            if p == 0 {
                break;
            }
            // SAFETY: `driver` is set by the host to its boxed driver while it is loaded and
            // cleared before the box is dropped.
            let driver = unsafe { &*(p as *const vsflow_callout::Driver<Self>) };
            driver.run_deferred();
            runs += 1;
        }
        runs
    }

    /// Joins every work-item thread started so far.
    pub fn join_workers(&self) {
        loop {
            let batch: Vec<_> = {
                let _kernel = crate::kernel::alloc::Attribution::enter(None);
                self.shared
                    .workers
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .drain(..)
                    .collect()
            };
            if batch.is_empty() {
                return;
            }
            for w in batch {
                let _ = w.join();
            }
        }
    }

    /// A clock read by a work item on its own thread: stops there if a test asked for it
    /// (`Host::pause_work_item_at_clock`).
    #[cold]
    #[inline(never)]
    fn work_item_clock_read(&self) {
        let pause = {
            let _kernel = crate::kernel::alloc::Attribution::enter(None);
            self.shared.work_item_clock_pause.lock().unwrap_or_else(PoisonError::into_inner).take()
        };
        if let Some(p) = pause {
            let _kernel = crate::kernel::alloc::Attribution::enter(None);
            let _ = p.reached.send(());
            let _ = p.resume.recv_timeout(std::time::Duration::from_secs(30));
        }
    }

    /// Starts the work item on its own thread at `PASSIVE_LEVEL` and gives it a moment to run
    /// (so its completion can come before the requesting callback returns).
    fn start_worker(&self) {
        let _kernel = crate::kernel::alloc::Attribution::enter(None);
        let me = self.clone();
        let done = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&done);
        let handle = std::thread::spawn(move || {
            let id = me.shared.host_id.load(Ordering::SeqCst);
            let _cur = crate::world::CurrentHost::enter(id);
            let _drv = crate::kernel::alloc::Attribution::enter(Some(id));
            WORK_ITEM_THREAD.with(|w| w.set(true));
            me.run_deferred();
            flag.store(true, Ordering::SeqCst);
        });
        self.shared.workers.lock().unwrap_or_else(PoisonError::into_inner).push(handle);
        let t = std::time::Instant::now();
        while !done.load(Ordering::SeqCst) && t.elapsed() < std::time::Duration::from_millis(20) {
            std::thread::yield_now();
        }
    }
}

impl KernelServices for SimServices {
    type Lock = SimLock;
    type Rundown = SimRundown;
    type RwLock = SimRwLock;

    fn new_lock(&self) -> SimLock {
        SimLock { shared: Some(Arc::clone(&self.shared)), ..SimLock::default() }
    }

    fn new_rundown(&self) -> Result<SimRundown, CalloutError> {
        Ok(SimRundown::new(Some(Arc::clone(&self.shared))))
    }

    fn new_rw_lock(&self) -> SimRwLock {
        SimRwLock { shared: Some(Arc::clone(&self.shared)), ..SimRwLock::default() }
    }

    fn current_processor(&self) -> u32 {
        current_processor()
    }

    fn processor_count(&self) -> u32 {
        PROCESSORS
    }

    fn delay(&self, micros: u32) {
        if current_irql() > APC_LEVEL {
            wrong_irql(Some(&self.shared), "KeDelayExecutionThread above APC_LEVEL".to_owned());
        }
        std::thread::sleep(std::time::Duration::from_micros(u64::from(micros)));
    }

    fn now(&self) -> u64 {
        if WORK_ITEM_THREAD.with(Cell::get) {
            self.work_item_clock_read();
        }
        self.shared.clock.load(Ordering::Relaxed)
    }

    fn request_deferred_work(&self) -> Result<(), CalloutError> {
        if self.shared.refuse_deferred.load(Ordering::SeqCst)
            || crate::kernel::faults::hit(
                self.shared.host_id.load(Ordering::SeqCst),
                crate::kernel::faults::Site::WorkItem,
            )
        {
            return Err(CalloutError::Status(fwps_sys::STATUS_INSUFFICIENT_RESOURCES));
        }
        self.shared.deferred_requests.fetch_add(1, Ordering::SeqCst);
        if self.shared.eager_work_items.load(Ordering::SeqCst) {
            self.start_worker();
        }
        Ok(())
    }

    fn flush_deferred_work(&self) {
        // Waiting for a work item is PASSIVE_LEVEL only.
        if crate::kernel::irql::current() != crate::kernel::irql::Irql::Passive {
            crate::world::with_current(|h| {
                h.violate(crate::contract::Violation::WrongIrql { call: "flush_deferred_work" });
            });
            return;
        }
        self.join_workers();
        self.run_deferred();
    }

    fn log(&self, level: LogLevel, args: fmt::Arguments<'_>) {
        // The kernel's log buffer is not the driver's memory.
        let _kernel = crate::kernel::alloc::Attribution::enter(None);
        self.shared
            .logs
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(format!("{level:?}: {args}"));
    }

    fn trace(&self, event: &TraceEvent) {
        // ETW's buffers are not the driver's memory.
        let _kernel = crate::kernel::alloc::Attribution::enter(None);
        self.shared.events.lock().unwrap_or_else(PoisonError::into_inner).push(*event);
    }

    fn hash_seed(&self) -> u64 {
        self.seed
    }

    fn physical_memory_bytes(&self) -> Option<u64> {
        match self.shared.physical_memory.load(Ordering::Relaxed) {
            0 => Some(SIM_PHYSICAL_MEMORY),
            u64::MAX => None,
            bytes => Some(bytes),
        }
    }

    /// The registry double: what `WdfRegistryQueryULong` returns for the value (wdfregistry.h:
    /// `STATUS_OBJECT_NAME_NOT_FOUND` when absent, `STATUS_OBJECT_TYPE_MISMATCH` for a value
    /// that is not a `REG_DWORD`; value names are case-insensitive).
    fn config_value(&self, name: &str) -> ConfigValue {
        let _kernel = crate::kernel::alloc::Attribution::enter(None);
        let reg = self.shared.registry.lock().unwrap_or_else(PoisonError::into_inner);
        match reg.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v) {
            None => ConfigValue::Absent,
            Some(RegValue::Dword(v)) => ConfigValue::Dword(*v),
            Some(RegValue::String(_)) => ConfigValue::Unreadable,
        }
    }

    unsafe fn read_frame<'a>(
        &self,
        layer_data: *mut c_void,
        _meta: *const FWPS_INCOMING_METADATA_VALUES0,
        storage: &'a mut [u8],
    ) -> Option<Frame<'a>> {
        // The driver's own code path: NET_BUFFER_LIST -> NdisGetDataBuffer (the simulator's).
        // SAFETY: the simulator passes the classify input's NET_BUFFER_LIST, alive for the call.
        unsafe { vsflow_callout::frame::nbl_prefix(layer_data, storage) }
    }
}
