//! Driver-wide counters that do not bounce a cache line: one line per processor, summed on
//! read.
//!
//! **Interlocked, and on no judged packet's path.** A counter is added to with `fetch_add` (an
//! x86-64 `lock xadd`): the events counted here happen at any IRQL `<= DISPATCH_LEVEL`
//! (`classifyFn` is called at `PASSIVE_LEVEL` too, and its bypass counts come before the map
//! lock raises the IRQL or after it is released), so a thread may be preempted between a load
//! and a store by another thread counting on the same processor, or move to another processor
//! after reading its number: a plain load and store would lose counts, and the counters are
//! exact (`tests/callout.rs` compares them with the engine's calls). A packet a
//! port judges counts nothing here (its port counts it under the port's lock with plain stores:
//! `ports::PortState::classify_calls`, `ports/call_count.rs`); a packet classify passes by
//! counts one event, whose counter stands for its classify call too ([`Counter`]).

use alloc::vec::Vec;
use core::sync::atomic::{AtomicU64, Ordering};

use crate::error::CalloutError;

/// The driver-wide counters, by position.
///
/// A packet classify passes by without a port judging it counts one of `TrustedPortPackets`,
/// `UnknownPortPackets` and `MalformedValues`, which each stand for that classify call as well
/// (`DriverStats::classify_calls` adds them): one interlocked add a packet, not two.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(usize)]
pub enum Counter {
    /// Classify calls not counted by an event below nor by a port in the map: those of ports
    /// that left the map (their count is folded in here as they go).
    ClassifyCalls,
    /// Packets of port 0 (trusted), a classify call each.
    TrustedPortPackets,
    /// Packets of no port vsflow judges (untracked port, no port id, later fragments passed on
    /// their first fragment's verdict), a classify call each.
    UnknownPortPackets,
    /// Calls whose values are not of the types the layer documents, a classify call each.
    MalformedValues,
    Saves,
    SavesEmpty,
    RestoresSync,
    RestoresPended,
    RestoresApplied,
    RestoresEmpty,
    RestoresFailed,
    RestoresCancelled,
    IdentityMismatches,
    RestoresUnknownPort,
    ReorderEvents,
    SettingsRefused,
    RestoresOversized,
    /// Packets of a port in the map that does not judge them (a generic port without a VM
    /// NIC): reported with `UnknownPortPackets`; the port counted the classify call.
    UnjudgedPortPackets,
}

/// Number of counters.
pub const COUNTERS: usize = Counter::UnjudgedPortPackets as usize + 1;

/// One processor's counters, alone on their cache lines.
///
/// Not `#[repr(align(128))]`: the kernel heap (wdk-alloc, `ExAllocatePool2`) only guarantees
/// 16-byte alignment and ignores a larger `Layout::align`, so an over-aligned type would be
/// misaligned (undefined behaviour). Guard padding does the job instead: 64 bytes before and
/// after each group of counters keep the counters of two processors at least 128 bytes apart
/// wherever the array starts, so they never share a 64-byte line.
#[repr(C)]
#[derive(Default)]
struct Line {
    _front: [u64; 8],
    counters: [AtomicU64; COUNTERS],
}

const _: () = assert!(core::mem::size_of::<Line>() == 64 + 8 * COUNTERS);
const _: () = assert!(core::mem::align_of::<Line>() <= 16);

/// Per-processor counters.
pub struct PerCpuCounters {
    lines: Vec<Line>,
}

impl PerCpuCounters {
    /// Counters for `processors` processors (at least one).
    ///
    /// # Errors
    /// Out of memory.
    pub fn try_new(processors: u32) -> Result<Self, CalloutError> {
        let n = (processors as usize).clamp(1, 1024);
        let mut lines = Vec::new();
        lines.try_reserve_exact(n)?;
        lines.resize_with(n, Line::default);
        Ok(Self { lines })
    }

    /// Adds `n` to counter `c` on processor `cpu`'s line.
    #[inline]
    pub fn add(&self, cpu: u32, c: Counter, n: u64) {
        let line = self.lines.get(cpu as usize % self.lines.len().max(1));
        if let Some(v) = line.and_then(|l| l.counters.get(c as usize)) {
            v.fetch_add(n, Ordering::Relaxed);
        }
    }

    /// Counter `c` summed over every processor.
    pub fn sum(&self, c: Counter) -> u64 {
        self.lines
            .iter()
            .filter_map(|l| l.counters.get(c as usize))
            .fold(0u64, |acc, v| acc.wrapping_add(v.load(Ordering::Relaxed)))
    }

    /// Sets every counter to zero (a diagnostic reset: increments racing it may survive).
    pub fn clear(&self) {
        for l in &self.lines {
            for v in &l.counters {
                v.store(0, Ordering::Relaxed);
            }
        }
    }
}
