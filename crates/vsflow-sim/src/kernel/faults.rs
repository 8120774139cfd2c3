//! Fault injection in the style of microsoft/usersim: any fallible service the driver uses can
//! be made to fail at its N-th call on one host. Sites:
//!
//! - [`Site::Alloc`]: a heap allocation made by the driver's code (`ExAllocatePool2` returns
//!   NULL: the global allocator returns null for it).
//! - [`Site::WorkItem`]: `KernelServices::request_deferred_work` (`WdfWorkItemCreate` /
//!   enqueue cannot be had): `STATUS_INSUFFICIENT_RESOURCES`.
//! - [`Site::Engine`]: a WFP call that adds, opens, registers or commits (`FwpmEngineOpen0`,
//!   FwpmTransactionBegin0/Commit0, `FwpmProviderAdd0`, `FwpmSubLayerAdd0`, `FwpmCalloutAdd0`,
//!   `FwpmFilterAdd0`, `FwpsCalloutRegister3`, `FwpsvSwitchEventsSubscribe0`,
//!   FwpmBfeStateSubscribeChanges0): `STATUS_INSUFFICIENT_RESOURCES` ("other status codes: an
//!   error occurred" on each page). A failed commit rolls the transaction back.
//!
//! There is no timer service in `KernelServices`, so no timer site. One plan at a time per
//! process (the sweep runs each point in its own process); calls are counted only on the
//! armed host, so other hosts in the same process are unaffected.

use std::backtrace::Backtrace;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

/// A kind of fallible service.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Site {
    /// A heap allocation by driver code.
    Alloc,
    /// A work-item request.
    WorkItem,
    /// An engine call that adds, opens, registers or commits.
    Engine,
}

impl Site {
    /// Every site.
    pub const ALL: [Self; 3] = [Self::Alloc, Self::WorkItem, Self::Engine];

    const fn index(self) -> usize {
        match self {
            Self::Alloc => 0,
            Self::WorkItem => 1,
            Self::Engine => 2,
        }
    }

    /// The site's name.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Self::Alloc => "alloc",
            Self::WorkItem => "work-item",
            Self::Engine => "engine",
        }
    }

    /// The site named `s`.
    #[must_use]
    pub fn from_name(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|x| x.name() == s)
    }
}

/// Armed host id + 1 (0: nothing armed).
static ARMED: AtomicUsize = AtomicUsize::new(0);
/// Site index to fail, or `usize::MAX` to only count.
static SITE: AtomicUsize = AtomicUsize::new(usize::MAX);
/// The call number (1-based) to fail.
static AT: AtomicU64 = AtomicU64::new(0);
static COUNTS: [AtomicU64; 3] = [const { AtomicU64::new(0) }; 3];
static FIRED: AtomicU64 = AtomicU64::new(0);
/// Bytes the failed allocation asked for (0: none failed, or not an allocation).
static FIRED_SIZE: AtomicUsize = AtomicUsize::new(0);
/// Capture the call stack of the failed allocation ([`capture_backtraces`]).
static CAPTURE: AtomicBool = AtomicBool::new(false);
/// The call stack of the failed allocation, if captured (resolved only when read).
static FIRED_AT: Mutex<Option<Backtrace>> = Mutex::new(None);

/// Counts calls on host `host` and fails call `nth` (1-based) of `site`; `None` only counts.
pub fn arm(host: usize, site: Option<Site>, nth: u64) {
    for c in &COUNTS {
        c.store(0, Ordering::SeqCst);
    }
    FIRED.store(0, Ordering::SeqCst);
    FIRED_SIZE.store(0, Ordering::SeqCst);
    if let Ok(mut at) = FIRED_AT.lock() {
        *at = None;
    }
    AT.store(nth, Ordering::SeqCst);
    SITE.store(site.map_or(usize::MAX, Site::index), Ordering::SeqCst);
    ARMED.store(host + 1, Ordering::SeqCst);
}

/// Stops counting and failing.
pub fn disarm() {
    ARMED.store(0, Ordering::SeqCst);
}

/// Calls counted per site since [`arm`].
#[must_use]
pub fn count(site: Site) -> u64 {
    COUNTS[site.index()].load(Ordering::SeqCst)
}

/// How many calls were failed since [`arm`] (0 or 1).
#[must_use]
pub fn fired() -> u64 {
    FIRED.load(Ordering::SeqCst)
}

/// A call of `site` on host `host`: true if it must fail. Never allocates.
pub fn hit(host: usize, site: Site) -> bool {
    if ARMED.load(Ordering::Relaxed) != host + 1 {
        return false;
    }
    let n = COUNTS[site.index()].fetch_add(1, Ordering::SeqCst) + 1;
    if SITE.load(Ordering::SeqCst) == site.index() && n == AT.load(Ordering::SeqCst) {
        FIRED.fetch_add(1, Ordering::SeqCst);
        return true;
    }
    false
}

/// Whether a failed allocation records its call stack ([`fired_backtrace`]): a test that must
/// tell which allocation it refused (what the refusal may cost) turns it on.
pub fn capture_backtraces(on: bool) {
    CAPTURE.store(on, Ordering::SeqCst);
}

/// Bytes the allocation failed since [`arm`] asked for (0 if none failed).
#[must_use]
pub fn fired_size() -> usize {
    FIRED_SIZE.load(Ordering::SeqCst)
}

/// The call stack of the allocation failed since [`arm`], resolved to symbol names (with
/// [`capture_backtraces`] on; `None` otherwise or if none failed).
#[must_use]
pub fn fired_backtrace() -> Option<String> {
    FIRED_AT.lock().ok().and_then(|at| at.as_ref().map(ToString::to_string))
}

/// A driver allocation of `size` bytes on host `host`: true if it must fail. When it fails,
/// its size is kept and, if asked for, its call stack (captured as simulator code: the
/// capture's own allocations are neither counted nor failed).
pub(crate) fn hit_alloc(host: usize, size: usize) -> bool {
    if !hit(host, Site::Alloc) {
        return false;
    }
    FIRED_SIZE.store(size, Ordering::SeqCst);
    if CAPTURE.load(Ordering::SeqCst) {
        let _simulator = crate::kernel::alloc::Attribution::enter(None);
        let trace = Backtrace::force_capture();
        if let Ok(mut at) = FIRED_AT.lock() {
            *at = Some(trace);
        }
    }
    true
}

/// An engine call on the calling thread's current host: true if it must fail.
#[must_use]
pub fn engine_call() -> bool {
    crate::world::current_id().is_some_and(|h| hit(h, Site::Engine))
}
