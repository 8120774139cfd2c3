//! The double's spin locks behave as Microsoft documents them (docs/SIMULATOR-FIDELITY.md,
//! "Threads, IRQL, faults"): a waiting writer keeps new readers out of an `EX_SPIN_LOCK`, a
//! recursive shared acquisition is reported, releases are checked for their IRQL and order,
//! and an interrupt can hold a processor (and what it holds) for as long as a test wants.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use vsflow_callout::{KernelServices, RawRwSpinLock, RawSpinLock};
use vsflow_sim::kernel::services::{
    DISPATCH_LEVEL, HostShared, PASSIVE_LEVEL, SimServices, current_irql, set_processor,
};

fn services() -> SimServices {
    SimServices { shared: Arc::new(HostShared::default()), seed: 1 }
}

fn misuse(s: &SimServices) -> Vec<String> {
    s.shared.misuse.lock().map(|m| m.clone()).unwrap_or_default()
}

/// Waits up to 5 s for `f`.
fn eventually(f: impl Fn() -> bool) -> bool {
    let t = Instant::now();
    while !f() {
        if t.elapsed() > Duration::from_secs(5) {
            return false;
        }
        std::thread::yield_now();
    }
    true
}

#[test]
fn a_waiting_writer_keeps_new_readers_out_until_it_has_come_and_gone() {
    let s = services();
    let lock = s.new_rw_lock();
    let (writer_in, reader2_in) = (AtomicBool::new(false), AtomicBool::new(false));
    let first_reader = lock.lock_shared();
    std::thread::scope(|t| {
        let writer = t.spawn(|| {
            let irql = lock.lock_exclusive();
            writer_in.store(true, Ordering::SeqCst);
            std::thread::sleep(Duration::from_millis(20));
            // The second reader came while this writer waited: it is still out.
            let reader2_before_release = reader2_in.load(Ordering::SeqCst);
            // SAFETY: held exclusively with `irql`.
            unsafe { lock.unlock_exclusive(irql) };
            reader2_before_release
        });
        assert!(eventually(|| lock.writers_waiting() == 1), "the writer waits for the reader");
        let reader2 = t.spawn(|| {
            let irql = lock.lock_shared();
            reader2_in.store(true, Ordering::SeqCst);
            // SAFETY: held shared with `irql`.
            unsafe { lock.unlock_shared(irql) };
        });
        std::thread::sleep(Duration::from_millis(50));
        assert!(
            !reader2_in.load(Ordering::SeqCst),
            "a new reader got in while a writer was waiting (the documented rule: it may not)"
        );
        assert!(!writer_in.load(Ordering::SeqCst), "the writer waits for the first reader");
        // SAFETY: held shared with `first_reader` on this thread.
        unsafe { lock.unlock_shared(first_reader) };
        assert!(!writer.join().unwrap(), "the second reader got in before the writer left");
        reader2.join().unwrap();
    });
    assert!(reader2_in.load(Ordering::SeqCst));
    assert!(misuse(&s).is_empty(), "{:?}", misuse(&s));
}

#[test]
fn a_second_shared_acquisition_by_the_owner_is_reported() {
    let s = services();
    let lock = s.new_rw_lock();
    let a = lock.lock_shared();
    let b = lock.lock_shared();
    // SAFETY: this thread's second hold, released first.
    unsafe { lock.unlock_shared(b) };
    // SAFETY: this thread's first hold.
    unsafe { lock.unlock_shared(a) };
    let m = misuse(&s);
    assert!(m.iter().any(|w| w.contains("already owns")), "{m:?}");
}

#[test]
fn spin_locks_released_out_of_order_are_reported() {
    let s = services();
    let (a, b) = (s.new_lock(), s.new_lock());
    assert_eq!(current_irql(), PASSIVE_LEVEL);
    let ta = a.lock();
    let tb = b.lock();
    assert_eq!((ta, tb), (PASSIVE_LEVEL, DISPATCH_LEVEL));
    // SAFETY: held by this thread; released first, restoring PASSIVE_LEVEL while `b` is held.
    unsafe { a.unlock(ta) };
    // SAFETY: held by this thread.
    unsafe { b.unlock(tb) };
    let m = misuse(&s);
    assert!(m.iter().any(|w| w.contains("out of order")), "{m:?}");
    assert!(m.iter().any(|w| w.contains("at IRQL 0")), "b was released at PASSIVE_LEVEL: {m:?}");
    assert_eq!(current_irql(), DISPATCH_LEVEL, "b's release restored what b's acquisition saw");
    vsflow_sim::kernel::services::set_irql(PASSIVE_LEVEL);
}

#[test]
fn in_order_releases_are_clean_and_a_wrong_token_is_reported() {
    let s = services();
    let (a, rw) = (s.new_lock(), s.new_rw_lock());
    let ta = a.lock();
    let tr = rw.lock_exclusive();
    // SAFETY: held exclusively by this thread, released first with its own token.
    unsafe { rw.unlock_exclusive(tr) };
    // SAFETY: held by this thread, with its own token.
    unsafe { a.unlock(ta) };
    assert!(misuse(&s).is_empty(), "{:?}", misuse(&s));
    assert_eq!(current_irql(), PASSIVE_LEVEL);
    let t = a.lock();
    // SAFETY: held; released with another IRQL than the acquisition returned.
    unsafe { a.unlock(t.wrapping_add(1)) };
    assert!(misuse(&s).iter().any(|w| w.contains("acquisition returned")), "{:?}", misuse(&s));
    vsflow_sim::kernel::services::set_irql(PASSIVE_LEVEL);
}

#[test]
fn an_interrupt_holds_its_processor_with_the_spin_lock_it_just_took() {
    let s = services();
    let lock = s.new_lock();
    let other_got_it = AtomicBool::new(false);
    s.shared.interrupts.arm(5);
    std::thread::scope(|t| {
        let held = t.spawn(|| {
            set_processor(5);
            let irql = lock.lock();
            // SAFETY: held with `irql`.
            unsafe { lock.unlock(irql) };
        });
        assert!(s.shared.interrupts.wait_held(Duration::from_secs(5)));
        let other = t.spawn(|| {
            set_processor(6);
            let irql = lock.lock();
            other_got_it.store(true, Ordering::SeqCst);
            // SAFETY: held with `irql`.
            unsafe { lock.unlock(irql) };
        });
        std::thread::sleep(Duration::from_millis(30));
        assert!(!other_got_it.load(Ordering::SeqCst), "the held processor still holds the lock");
        s.shared.interrupts.release();
        held.join().unwrap();
        other.join().unwrap();
    });
    assert!(other_got_it.load(Ordering::SeqCst));
    assert!(!s.shared.interrupts.is_held());
}

/// The double keeps one record per lock a thread holds: releasing one of several (in any
/// order) leaves the others' records intact, so a recursive acquisition of a lock still held
/// is still reported and every release still finds its own hold and IRQL.
#[test]
fn holds_of_several_reader_writer_locks_are_tracked_each_on_its_own() {
    let s = services();
    let (a, b, c) = (s.new_rw_lock(), s.new_rw_lock(), s.new_rw_lock());
    // At DISPATCH_LEVEL already (a DPC): releases in any order keep the IRQL there.
    vsflow_sim::kernel::services::set_irql(DISPATCH_LEVEL);
    let ta = a.lock_shared();
    let tb = b.lock_exclusive();
    let tc = c.lock_shared();
    assert_eq!((ta, tb, tc), (DISPATCH_LEVEL, DISPATCH_LEVEL, DISPATCH_LEVEL));
    // SAFETY: `a` held shared by this thread (released before the others on purpose: the
    // double's record of `c` moves into `a`'s place).
    unsafe { a.unlock_shared(ta) };
    assert!(misuse(&s).is_empty(), "{:?}", misuse(&s));
    // `c` is still known as held: a second shared acquisition of it is reported.
    let again = c.lock_shared();
    assert!(misuse(&s).iter().any(|w| w.contains("already owns")), "{:?}", misuse(&s));
    s.shared.misuse.lock().unwrap().clear();
    // SAFETY: the second (recursive) hold of `c`, then the first, then `b`: each held.
    unsafe { c.unlock_shared(again) };
    // SAFETY: as above.
    unsafe { c.unlock_shared(tc) };
    // SAFETY: as above.
    unsafe { b.unlock_exclusive(tb) };
    assert!(misuse(&s).is_empty(), "{:?}", misuse(&s));
    assert_eq!(current_irql(), DISPATCH_LEVEL);
    // Nothing is held any more: a release now is one without a hold (the double panics, as
    // Driver Verifier would bugcheck).
    let released_twice = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        // SAFETY: deliberately wrong: `a` is not held; the double reports it.
        unsafe { a.unlock_shared(DISPATCH_LEVEL) };
    }));
    assert!(released_twice.is_err());
    assert!(misuse(&s).iter().any(|w| w.contains("without a shared hold")), "{:?}", misuse(&s));
    vsflow_sim::kernel::services::set_irql(PASSIVE_LEVEL);
}
