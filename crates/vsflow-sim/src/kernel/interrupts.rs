//! Interrupts holding up a processor.
//!
//! Code at `DISPATCH_LEVEL` is not preempted by threads or DPCs, but it is by interrupts: an ISR
//! runs at DIRQL above it ("Managing Hardware Priorities": code at an IRQL is interrupted by
//! anything at a higher IRQL), and a burst of them, or a long one, keeps the interrupted code
//! (and every spin lock it holds) from going on for as long as they last. Code holding a
//! spin lock is also simply slow sometimes (a cache-missing walk of a large table). The double
//! lets a test stand for either: it *holds* one simulated processor of one host right after
//! that processor's next `KSPIN_LOCK` acquisition, until the test releases it. Whatever the
//! held code holds at that moment stays held, so a test can see who else has to wait for it
//! (`tests/stall.rs`).
//!
//! Per host (a host's own spin locks trigger it), one processor at a time.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// A host's interrupt hold: which processor is armed, and whether it is held now.
#[derive(Debug, Default)]
pub struct InterruptHold {
    /// Processor + 1 to hold after its next spin-lock acquisition (0: none).
    armed: AtomicU32,
    /// A processor is being held now.
    held: AtomicBool,
    /// The test released it.
    released: AtomicBool,
    /// Acquisitions on the armed processor to let pass before the one it is held after.
    skip: AtomicU32,
}

impl InterruptHold {
    /// Holds `processor` right after its next `KSPIN_LOCK` acquisition on this host.
    pub fn arm(&self, processor: u32) {
        self.arm_after(processor, 0);
    }

    /// Holds `processor` right after its `skip + 1`-th `KSPIN_LOCK` acquisition from now on
    /// this host: an operation whose first spin locks are not the one a test means to hold
    /// (a save takes the pending set's lock twice before its port's).
    pub fn arm_after(&self, processor: u32, skip: u32) {
        self.released.store(false, Ordering::SeqCst);
        self.skip.store(skip, Ordering::SeqCst);
        self.armed.store(processor + 1, Ordering::SeqCst);
    }

    /// Whether the armed processor is being held now.
    #[must_use]
    pub fn is_held(&self) -> bool {
        self.held.load(Ordering::SeqCst)
    }

    /// Waits up to `timeout` for the armed processor to be held; true once it is.
    #[must_use]
    pub fn wait_held(&self, timeout: Duration) -> bool {
        let t = Instant::now();
        while !self.is_held() {
            if t.elapsed() > timeout {
                return false;
            }
            std::thread::yield_now();
        }
        true
    }

    /// Lets the held processor go on (and disarms it if it was never reached).
    pub fn release(&self) {
        self.armed.store(0, Ordering::SeqCst);
        self.released.store(true, Ordering::SeqCst);
    }

    /// Called by the double's spin lock on `processor` right after an acquisition: holds the
    /// calling thread while the test keeps it held.
    #[inline]
    pub(crate) fn after_acquire(&self, processor: u32) {
        if self.armed.load(Ordering::Relaxed) == processor + 1 {
            // Counted down by the armed processor's acquisitions only (a test runs one thread
            // on it).
            if self.skip.load(Ordering::SeqCst) > 0 {
                self.skip.fetch_sub(1, Ordering::SeqCst);
                return;
            }
            self.hold(processor);
        }
    }

    /// Holds the calling thread (processor `processor`) if it is still the armed one.
    #[cold]
    #[inline(never)]
    fn hold(&self, processor: u32) {
        if self
            .armed
            .compare_exchange(processor + 1, 0, Ordering::SeqCst, Ordering::SeqCst)
            .is_err()
        {
            return;
        }
        self.held.store(true, Ordering::SeqCst);
        while !self.released.load(Ordering::SeqCst) {
            std::thread::yield_now();
        }
        self.held.store(false, Ordering::SeqCst);
    }
}
