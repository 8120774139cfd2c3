//! `KernelServices` for the simulator: a virtual clock, a deferred-work queue the scenario
//! drives, spin locks that detect recursive acquisition, and captured logs.

use std::ffi::c_void;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use fwps_sys::FWPS_INCOMING_METADATA_VALUES0;
use vsflow_callout::{CalloutError, Frame, KernelServices, LogLevel, RawSpinLock, TraceEvent};

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
    /// The service's `Parameters` values.
    pub registry: Mutex<Vec<(String, u32)>>,
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
#[derive(Debug, Default)]
pub struct SimLock {
    held: AtomicBool,
    /// Identity of the holding thread (address of a thread-local), 0 when free.
    owner: AtomicUsize,
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
                return 2;
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

    unsafe fn unlock(&self, _token: u8) {
        self.owner.store(0, Ordering::Relaxed);
        self.held.store(false, Ordering::Release);
    }
}

impl SimServices {
    /// Runs queued deferred work now; returns how many runs.
    #[allow(clippy::must_use_candidate, reason = "callers run it for its effect")]
    pub fn run_deferred(&self) -> usize {
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
}

impl KernelServices for SimServices {
    type Lock = SimLock;

    fn new_lock(&self) -> SimLock {
        SimLock { shared: Some(Arc::clone(&self.shared)), ..SimLock::default() }
    }

    fn now(&self) -> u64 {
        self.shared.clock.load(Ordering::Relaxed)
    }

    fn request_deferred_work(&self) -> Result<(), CalloutError> {
        if self.shared.refuse_deferred.load(Ordering::SeqCst) {
            return Err(CalloutError::Status(fwps_sys::STATUS_INSUFFICIENT_RESOURCES));
        }
        self.shared.deferred_requests.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }

    fn flush_deferred_work(&self) {
        self.run_deferred();
    }

    fn log(&self, level: LogLevel, args: fmt::Arguments<'_>) {
        // The kernel's log buffer is not the driver's memory.
        let _kernel = crate::alloc::Attribution::enter(None);
        self.shared
            .logs
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(format!("{level:?}: {args}"));
    }

    fn trace(&self, event: &TraceEvent) {
        // ETW's buffers are not the driver's memory.
        let _kernel = crate::alloc::Attribution::enter(None);
        self.shared.events.lock().unwrap_or_else(PoisonError::into_inner).push(*event);
    }

    fn hash_seed(&self) -> u64 {
        self.seed
    }

    fn config_value(&self, name: &str) -> Option<u32> {
        let _kernel = crate::alloc::Attribution::enter(None);
        let reg = self.shared.registry.lock().unwrap_or_else(PoisonError::into_inner);
        reg.iter().find(|(n, _)| n == name).map(|(_, v)| *v)
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
