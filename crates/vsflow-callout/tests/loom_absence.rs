//! The interleavings of a processor's absence-cache entry with a map change, by loom.
//!
//! `ports/absence.rs` is compiled here as it is in the driver, against loom's atomics instead
//! of `core::sync::atomic` (its only imports, taken from this crate's root). The map's
//! per-processor reader/writer lock is a loom `RwLock` around the map's generation: readers
//! (packets of one processor, possibly two at once) write and read the entry under it shared;
//! a map change takes it exclusively and moves to a new generation.
//!
//! The invariant: a reader that finds the entry at the generation it holds reads a key written
//! at that generation (so a port id the map at that generation does not hold), never one
//! written before the map changed. With the generation stored relaxed instead of with release,
//! loom finds the reader that sees the new generation and the old key.

use loom::sync::atomic::{AtomicU64, Ordering};
use loom::sync::{Arc, RwLock};
use loom::thread;

#[path = "../src/ports/absence.rs"]
#[allow(dead_code, reason = "the driver's file, whole")]
mod absence;

use absence::Absence;

/// The key a writer at generation `g` stores (what it found absent at `g`).
fn key_at(g: u64) -> u64 {
    0x1_0000_0000 | g
}

/// An entry written at generation 1; then, in any order, a map change (generation 2), a packet
/// that looks its port up and writes the entry at the generation it holds, and a packet that
/// reads the entry: whatever it reads at its generation was written at that generation.
#[test]
fn an_absence_read_at_the_maps_generation_was_written_at_it() {
    loom::model(|| {
        let map = Arc::new(RwLock::new(1u64));
        let entry = Arc::new(Absence::new());
        entry.set(1, key_at(1));
        let change = {
            let map = Arc::clone(&map);
            thread::spawn(move || {
                let mut g = map.write().expect("the map lock");
                *g += 1;
            })
        };
        let writer = {
            let (map, entry) = (Arc::clone(&map), Arc::clone(&entry));
            thread::spawn(move || {
                let held = map.read().expect("the map lock");
                entry.set(*held, key_at(*held));
                drop(held);
            })
        };
        // The entry is read under the map lock, as the packet path reads it.
        let held = map.read().expect("the map lock");
        let g = *held;
        let read = entry.get(g);
        drop(held);
        if let Some(key) = read {
            assert_eq!(key, key_at(g), "generation {g}: a key of another generation");
        }
        change.join().expect("the map change");
        writer.join().expect("the writer");
    });
}

/// Two packets of one processor write the entry at once (each found its own port id absent):
/// a reader at that generation reads one of the two keys, whole.
#[test]
fn two_writers_at_once_leave_one_of_their_keys() {
    loom::model(|| {
        let entry = Arc::new(Absence::new());
        let writers: Vec<_> = [7u64, 9]
            .into_iter()
            .map(|port| {
                let entry = Arc::clone(&entry);
                thread::spawn(move || entry.set(5, 3 << 32 | port))
            })
            .collect();
        if let Some(key) = entry.get(5) {
            assert!(
                key == 3 << 32 | 7 || key == 3 << 32 | 9,
                "a key no writer wrote whole: {key:#x}"
            );
        }
        for w in writers {
            w.join().expect("a writer");
        }
        assert!(matches!(entry.get(5), Some(k) if k == 3 << 32 | 7 || k == 3 << 32 | 9));
        assert_eq!(entry.get(4), None, "nothing at another generation");
    });
}
