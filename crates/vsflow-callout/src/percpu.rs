//! Driver-wide counters that do not bounce a cache line: one line per processor, summed on
//! read.

use alloc::vec::Vec;
use core::sync::atomic::{AtomicU64, Ordering};

use crate::error::CalloutError;

/// The driver-wide counters, by position (`DriverStats` field order).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(usize)]
pub enum Counter {
    ClassifyCalls,
    TrustedPortPackets,
    UnknownPortPackets,
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
}

/// Number of counters.
pub const COUNTERS: usize = 17;

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
