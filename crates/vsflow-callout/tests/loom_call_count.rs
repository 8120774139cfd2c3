//! Every interleaving of a processor shard's classify-call counter with a reset, by loom.
//!
//! `ports/call_count.rs` is compiled here as it is in the driver, against loom's atomics
//! instead of `core::sync::atomic` (its only imports, taken from this crate's root): loom runs
//! the shard's processor counting (under the shard's lock: one writer) against the
//! diagnostics reading and resetting the counter (`ClearCounters`, or a port leaving the map:
//! under the port's home lock, which the counting processor does not take), through every
//! interleaving of their loads and stores the memory model allows.
//!
//! The invariant: every call counted is reported exactly once, by the reset that took it or
//! by a read after it; never lost, never counted twice.
//!
//! Against the old reset (a swap of the count to zero), loom finds the double count: the
//! processor loads 1, the reset swaps 1 for 0 and reports it, the processor stores 2, and the
//! next read reports both again ("taken 1, left 2"). It also reports executions losing a call
//! ("taken 0, left 1") that C11 coherence forbids (a relaxed load reading a value older than
//! its own thread's last store: loom's model of the relaxed swap); the double count alone
//! fails the old design.

use loom::sync::Arc;
use loom::sync::atomic::{AtomicU64, Ordering};
use loom::thread;

#[path = "../src/ports/call_count.rs"]
#[allow(dead_code, reason = "the driver's file, whole")]
mod call_count;

use call_count::CallCount;

/// The counting processor counts twice while the diagnostics take (reset) the counter once:
/// what the take returned and what a read finds afterwards add up to the two calls.
#[test]
fn a_reset_racing_a_count_neither_loses_nor_repeats_a_call() {
    loom::model(|| {
        let c = Arc::new(CallCount::new());
        let shard = {
            let c = Arc::clone(&c);
            thread::spawn(move || {
                c.count();
                c.count();
            })
        };
        let taken = c.take();
        shard.join().expect("the shard's processor");
        let left = c.read();
        assert_eq!(taken + left, 2, "taken {taken}, left {left}: a call lost or counted twice");
    });
}

/// A read between two resets sees only calls counted since the first, and two resets split
/// the calls between them.
#[test]
fn two_resets_split_the_calls_between_them() {
    loom::model(|| {
        let c = Arc::new(CallCount::new());
        let shard = {
            let c = Arc::clone(&c);
            thread::spawn(move || {
                c.count();
                c.count();
                c.count();
            })
        };
        let first = c.take();
        let seen = c.read();
        let second = c.take();
        shard.join().expect("the shard's processor");
        assert!(seen >= second, "a read ({seen}) is never ahead of the next reset ({second})");
        assert_eq!(first + second + c.read(), 3, "first {first}, second {second}");
    });
}
