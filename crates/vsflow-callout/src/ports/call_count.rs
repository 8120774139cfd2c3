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
///
/// Never reset in place: a reset writes only its own baseline, `taken` (the count it has
/// reported), and a read is the count past it. The count has one writer (the shard's
/// processor, under the shard's lock) and only ever grows, so a reset racing a count reports
/// the calls it saw once and leaves the rest for the next read: none lost, none repeated.
/// Before, a reset swapped the count to zero between a count's load and its store, and the
/// store put the old count back (those calls reported twice), or was overwritten by it (one
/// lost): the counting is a plain load and store, not an interlocked add, to keep the packet
/// path free of locked instructions.
pub struct CallCount {
    /// Calls counted since the shard was made (wrapping).
    calls: AtomicU64,
    /// What the resets have reported of `calls` (written only under the home lock).
    taken: AtomicU64,
}

impl CallCount {
    /// None counted.
    pub fn new() -> Self {
        Self { calls: AtomicU64::new(0), taken: AtomicU64::new(0) }
    }

    /// Counts a classify call; the caller holds the shard's lock (so no other writer).
    #[inline]
    pub fn count(&self) {
        self.calls.store(self.calls.load(Ordering::Relaxed).wrapping_add(1), Ordering::Relaxed);
    }

    /// Calls counted since the last [`CallCount::take`] (the caller holds the home lock).
    pub fn read(&self) -> u64 {
        self.calls.load(Ordering::Relaxed).wrapping_sub(self.taken.load(Ordering::Relaxed))
    }

    /// [`CallCount::read`], and counting from there after it (the caller holds the home lock:
    /// no other reset at once).
    pub fn take(&self) -> u64 {
        let calls = self.calls.load(Ordering::Relaxed);
        let taken = self.taken.load(Ordering::Relaxed);
        self.taken.store(calls, Ordering::Relaxed);
        calls.wrapping_sub(taken)
    }
}
