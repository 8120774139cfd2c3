//! A processor shard's classify-call counter ([`super::ShardSlot`]).
//!
//! Counted by the shard's processor under the shard's lock: a plain load and store, no
//! interlocked instruction on the packet path (the lock already excludes every other writer).
//! Read, and reset for the diagnostics (`ClearCounters`) or when the port leaves the map, by
//! [`super::PortSlot::classify_calls`] under the port's home lock, which the fast path does
//! not take.
//!
//! The atomics are the parent module's (`core::sync::atomic`); `tests/loom_call_count.rs`
//! compiles this same file against loom's to check every interleaving of a count and a reset.

use super::{AtomicU64, Ordering};

/// Classify calls judged on one processor's shard.
pub struct CallCount {
    calls: AtomicU64,
}

impl CallCount {
    /// None counted.
    pub fn new() -> Self {
        Self { calls: AtomicU64::new(0) }
    }

    /// Counts a classify call; the caller holds the shard's lock (so no other writer).
    #[inline]
    pub fn count(&self) {
        self.calls.store(self.calls.load(Ordering::Relaxed).wrapping_add(1), Ordering::Relaxed);
    }

    /// Calls counted since the last [`CallCount::take`] (the caller holds the home lock).
    pub fn read(&self) -> u64 {
        self.calls.load(Ordering::Relaxed)
    }

    /// [`CallCount::read`], and counting from zero after it (the caller holds the home lock).
    pub fn take(&self) -> u64 {
        self.calls.swap(0, Ordering::Relaxed)
    }
}
