//! One entry of a processor's absence cache ([`super::CachedAbsence`]): "the map holds no port
//! for this key at this generation".
//!
//! Written and read under one processor's map lock held shared: two readers of that lock (a
//! thread that read its processor number before its IRQL was raised, and the processor's own)
//! may write an entry at once. The key (the switch's number and the port id) is one atomic
//! word, so writers never leave a mix of theirs; it is stored before the generation, which is
//! stored with release and read with acquire, so a reader that finds the entry at the map's
//! generation reads a key written at that generation (a writer of an older generation finished
//! before the map changed: every change takes every processor's lock exclusively).
//!
//! The atomics are the parent module's (`core::sync::atomic`); `tests/loom_absence.rs` compiles
//! this same file against loom's to check the interleavings of writers and a reader across a
//! map change.

use super::{AtomicU64, Ordering};

/// A processor's record that the map held no port for `key` at map generation `generation`
/// (0: empty; the map's generations are never 0).
pub struct Absence {
    generation: AtomicU64,
    key: AtomicU64,
}

impl Absence {
    /// An empty entry.
    pub fn new() -> Self {
        Self { generation: AtomicU64::new(0), key: AtomicU64::new(0) }
    }

    /// Remembers that the map holds no port for `key` at `generation` (the caller looked it up
    /// in the map under a shared hold at `generation`, and holds it still).
    #[inline]
    pub fn set(&self, generation: u64, key: u64) {
        self.key.store(key, Ordering::Relaxed);
        // Release: a reader that sees this generation sees this key (or a later writer's).
        self.generation.store(generation, Ordering::Release);
    }

    /// The key this entry says is absent at `generation` (the map's, under the caller's shared
    /// hold), if it holds one for it.
    #[inline]
    pub fn get(&self, generation: u64) -> Option<u64> {
        // Acquire: the key stored before this generation (`set`) is seen.
        (self.generation.load(Ordering::Acquire) == generation)
            .then(|| self.key.load(Ordering::Relaxed))
    }
}
