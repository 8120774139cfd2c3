//! Heap accounting of the driver under test, in the spirit of Driver Verifier's pool tracking.
//!
//! A global allocator records every block allocated while driver code runs, tagged with the
//! simulated host it runs on, and forgets it when it is freed (by anyone). At unload the host's
//! driver must have no block left: the "every allocation freed" contract.
//!
//! The simulator marks every call into the driver (start, stop, callbacks, classify, deferred
//! work, drop) as driver code and every exported WFP function as simulator code. The record
//! is a fixed open-addressing table (no allocation inside the allocator).

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

/// Counts the driver's heap use on top of the system allocator.
pub struct Accounting;

const SLOTS: usize = 1 << 16;
const EMPTY: usize = 0;

struct Table {
    lock: AtomicBool,
    ptrs: [AtomicUsize; SLOTS],
    hosts: [AtomicUsize; SLOTS],
    overflow: AtomicBool,
}

/// Live blocks per host (indexed by host id modulo `SLOTS`; host ids are process-unique and
/// never 65,536 apart while both alive).
static COUNTS: [AtomicUsize; SLOTS] = [const { AtomicUsize::new(0) }; SLOTS];

/// Allocations ever made per host's driver (blocks allocated or reallocated; indexed as
/// `COUNTS`): what a path allocates is the difference across it.
static MADE: [AtomicUsize; SLOTS] = [const { AtomicUsize::new(0) }; SLOTS];

fn made(host: usize) {
    if let Some(n) = MADE.get(host % SLOTS) {
        n.fetch_add(1, Ordering::Relaxed);
    }
}

/// The largest block each host's driver asked for since [`reset_largest_driver_block`] (same
/// indexing as `COUNTS`).
static LARGEST: [AtomicUsize; SLOTS] = [const { AtomicUsize::new(0) }; SLOTS];

static TABLE: Table = Table {
    lock: AtomicBool::new(false),
    ptrs: [const { AtomicUsize::new(EMPTY) }; SLOTS],
    hosts: [const { AtomicUsize::new(0) }; SLOTS],
    overflow: AtomicBool::new(false),
};

thread_local! {
    /// 0 = simulator code; otherwise 1 + the host id whose driver code is running.
    static DRIVER_HOST: Cell<usize> = const { Cell::new(0) };
}

struct Locked;
impl Locked {
    fn take() -> Self {
        while TABLE
            .lock
            .compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            std::hint::spin_loop();
        }
        Self
    }
}
impl Drop for Locked {
    fn drop(&mut self) {
        TABLE.lock.store(false, Ordering::Release);
    }
}

const fn slot_of(p: usize) -> usize {
    (p >> 4).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> (usize::BITS - 16)
}

fn record(p: usize, host: usize) {
    let _g = Locked::take();
    let mut i = slot_of(p);
    for _ in 0..SLOTS {
        if TABLE.ptrs[i].load(Ordering::Relaxed) == EMPTY {
            TABLE.ptrs[i].store(p, Ordering::Relaxed);
            TABLE.hosts[i].store(host, Ordering::Relaxed);
            COUNTS[host % SLOTS].fetch_add(1, Ordering::Relaxed);
            return;
        }
        i = (i + 1) % SLOTS;
    }
    TABLE.overflow.store(true, Ordering::Relaxed);
}

fn forget(p: usize) {
    let _g = Locked::take();
    let mut i = slot_of(p);
    for _ in 0..SLOTS {
        match TABLE.ptrs[i].load(Ordering::Relaxed) {
            EMPTY => return,
            q if q == p => break,
            _ => i = (i + 1) % SLOTS,
        }
    }
    if TABLE.ptrs[i].load(Ordering::Relaxed) != p {
        return;
    }
    COUNTS[TABLE.hosts[i].load(Ordering::Relaxed) % SLOTS].fetch_sub(1, Ordering::Relaxed);
    // Backward-shift deletion keeps every probe chain intact.
    let mut hole = i;
    let mut j = (i + 1) % SLOTS;
    loop {
        let q = TABLE.ptrs[j].load(Ordering::Relaxed);
        if q == EMPTY {
            break;
        }
        let natural = slot_of(q);
        let between =
            if hole <= j { hole < natural && natural <= j } else { hole < natural || natural <= j };
        if !between {
            TABLE.ptrs[hole].store(q, Ordering::Relaxed);
            TABLE.hosts[hole].store(TABLE.hosts[j].load(Ordering::Relaxed), Ordering::Relaxed);
            hole = j;
        }
        j = (j + 1) % SLOTS;
    }
    TABLE.ptrs[hole].store(EMPTY, Ordering::Relaxed);
}

/// A driver allocation the fault plan fails ([`crate::kernel::faults`]).
fn injected_failure(size: usize) -> bool {
    let host = driver_host();
    host != 0 && crate::kernel::faults::hit_alloc(host - 1, size)
}

fn driver_host() -> usize {
    DRIVER_HOST.try_with(Cell::get).unwrap_or(0)
}

/// Notes the size of a block the running driver asks for (`host`: 1 + host id, 0 for none).
fn note_size(host: usize, size: usize) {
    if host != 0 {
        LARGEST[host % SLOTS].fetch_max(size, Ordering::Relaxed);
    }
}

/// The largest block host `host`'s driver asked for (allocated or grown to) since the last
/// [`reset_largest_driver_block`]: what a test checks to see that a buffer was never copied.
#[must_use]
pub fn largest_driver_block(host: usize) -> usize {
    LARGEST[(host + 1) % SLOTS].load(Ordering::Relaxed)
}

/// Starts [`largest_driver_block`] over for host `host`.
pub fn reset_largest_driver_block(host: usize) {
    LARGEST[(host + 1) % SLOTS].store(0, Ordering::Relaxed);
}

/// Keeps the process heap resident, as the non-paged pool the driver allocates from is.
///
/// Non-paged pool is "nonpageable system memory" that "can be accessed from any IRQL"
/// (`POOL_TYPE`, `NonPagedPool`); a page fault at `DISPATCH_LEVEL` is a bug check ("Making
/// Drivers Pageable"). The C library's allocator, by default, gives freed memory back to the
/// system (it trims the top of a heap past 128 KiB free and maps blocks of 128 KiB and more
/// one by one), so a block freed and allocated again was faulted in page by page: a Linux
/// artifact that was about 17% of a synchronous restore in `vsflow-sim bench`. Here glibc
/// keeps what it has (no trim; no per-block mappings below 32 MiB, its largest threshold on
/// 64-bit). Called by every [`crate::Host::new`]; runs once per process.
pub fn keep_heap_resident() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        #[cfg(all(target_os = "linux", target_env = "gnu"))]
        {
            // SAFETY: `mallopt` only sets glibc's allocator parameters (under its own lock);
            // `i32::MAX` is a valid trim threshold (mallopt(3): any non-negative value).
            let trim = unsafe { libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX) };
            // SAFETY: as above; 32 MiB is the largest mmap threshold glibc accepts on 64-bit
            // (mallopt(3): `DEFAULT_MMAP_THRESHOLD_MAX`).
            let mmap = unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20) };
            debug_assert!(trim == 1 && mmap == 1, "mallopt refused a parameter");
        }
    });
}

// SAFETY: every call is forwarded to `System`, which upholds the `GlobalAlloc` contract; a
// driver's `alloc` is `System`'s `alloc_zeroed` (which satisfies `alloc`'s contract too), and
// a driver's `realloc` zeroes only the bytes past the old size of the block it returns; the
// bookkeeping never touches the memory handed out.
unsafe impl GlobalAlloc for Accounting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note_size(driver_host(), layout.size());
        if injected_failure(layout.size()) {
            return std::ptr::null_mut();
        }
        let host = driver_host();
        // The driver's heap is `ExAllocatePool2(POOL_FLAG_NON_PAGED)` (wdk-alloc), which
        // zero-initializes every block ("ExAllocatePool2 function", Remarks: unless
        // `POOL_FLAG_UNINITIALIZED` is given, which wdk-alloc never does): paid here too.
        let p = if host == 0 {
            // SAFETY: the caller's layout obligations are passed on.
            unsafe { System.alloc(layout) }
        } else {
            // SAFETY: as above.
            unsafe { System.alloc_zeroed(layout) }
        };
        if host != 0 && !p.is_null() {
            made(host);
            record(p as usize, host);
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note_size(driver_host(), layout.size());
        if injected_failure(layout.size()) {
            return std::ptr::null_mut();
        }
        // SAFETY: as above.
        let p = unsafe { System.alloc_zeroed(layout) };
        let host = driver_host();
        if host != 0 && !p.is_null() {
            made(host);
            record(p as usize, host);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        forget(ptr as usize);
        // SAFETY: `ptr` came from `System` with `layout`.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note_size(driver_host(), new_size);
        if injected_failure(new_size) {
            return std::ptr::null_mut();
        }
        // SAFETY: as above.
        let q = unsafe { System.realloc(ptr, layout, new_size) };
        let host = driver_host();
        if host != 0 && !q.is_null() {
            made(host);
            // wdk-alloc has no `realloc`: Rust's default allocates a new (zeroed)
            // `ExAllocatePool2` block and copies the old bytes in, so what is added is zero.
            if let Some(added) = new_size.checked_sub(layout.size()) {
                // SAFETY: `q` is a live block of `new_size` >= `layout.size()` bytes, so the
                // offset stays inside it (or one past its end when nothing was added).
                let tail = unsafe { q.add(layout.size()) };
                // SAFETY: the `added` bytes from `tail` are the end of the live block `q`,
                // which nothing else refers to yet.
                unsafe { tail.write_bytes(0, added) };
            }
        }
        if !q.is_null() {
            let _ = forget_and_report(ptr as usize, q as usize);
        }
        q
    }
}

/// A reallocated block keeps its owner.
fn forget_and_report(old: usize, new: usize) -> bool {
    let owner = {
        let _g = Locked::take();
        let mut i = slot_of(old);
        let mut found = 0;
        for _ in 0..SLOTS {
            match TABLE.ptrs[i].load(Ordering::Relaxed) {
                EMPTY => break,
                q if q == old => {
                    found = TABLE.hosts[i].load(Ordering::Relaxed);
                    break;
                }
                _ => i = (i + 1) % SLOTS,
            }
        }
        found
    };
    if owner == 0 {
        let host = driver_host();
        if host != 0 {
            record(new, host);
        }
        return false;
    }
    forget(old);
    record(new, owner);
    true
}

/// Marks the calling thread as running host `host`'s driver code (`Some`) or simulator code
/// (`None`) until dropped.
pub struct Attribution {
    previous: usize,
}

impl Attribution {
    /// Enters driver code of `host`, or simulator code.
    #[must_use]
    pub fn enter(host: Option<usize>) -> Self {
        let previous = DRIVER_HOST.with(|d| d.replace(host.map_or(0, |h| h + 1)));
        Self { previous }
    }
}

impl Drop for Attribution {
    fn drop(&mut self) {
        DRIVER_HOST.with(|d| d.set(self.previous));
    }
}

/// Allocations (and reallocations) host `host`'s driver has made since the process started.
#[must_use]
pub fn driver_allocations(host: usize) -> usize {
    MADE.get((host + 1) % SLOTS).map_or(0, |n| n.load(Ordering::Relaxed))
}

/// Blocks allocated by host `host`'s driver and not yet freed; `None` if the record
/// overflowed (then nothing can be concluded).
#[must_use]
pub fn live_driver_blocks(host: usize) -> Option<usize> {
    if TABLE.overflow.load(Ordering::Relaxed) {
        return None;
    }
    let _g = Locked::take();
    Some(COUNTS[(host + 1) % SLOTS].load(Ordering::Relaxed))
}

/// Whether `ptr` starts a block host `host`'s driver allocated and has not freed.
///
/// What a later reader of the block needs (WFP copying a saved blob); Driver Verifier's special
/// pool bugchecks a read of a freed one.
#[must_use]
pub fn is_live_driver_block(host: usize, ptr: *const u8) -> bool {
    let p = ptr as usize;
    if p == EMPTY {
        return false;
    }
    let _g = Locked::take();
    let mut i = slot_of(p);
    for _ in 0..SLOTS {
        match TABLE.ptrs[i].load(Ordering::Relaxed) {
            EMPTY => return false,
            q if q == p => return TABLE.hosts[i].load(Ordering::Relaxed) == host + 1,
            _ => i = (i + 1) % SLOTS,
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use std::alloc::{GlobalAlloc, Layout};

    use super::{Accounting, Attribution};

    /// Minor page faults of the calling thread so far (`getrusage(RUSAGE_THREAD)`).
    fn minor_faults() -> i64 {
        let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
        // SAFETY: `usage` is a writable `rusage`; RUSAGE_THREAD is valid on Linux.
        let rc = unsafe { libc::getrusage(libc::RUSAGE_THREAD, usage.as_mut_ptr()) };
        assert_eq!(rc, 0, "getrusage failed");
        // SAFETY: getrusage returned 0, so it filled `usage` (and it was zeroed before).
        let usage = unsafe { usage.assume_init() };
        usage.ru_minflt
    }

    /// `ExAllocatePool2` zero-initializes unless `POOL_FLAG_UNINITIALIZED` (wdk-alloc never
    /// passes it): a driver block is zeroed even where a freed one held other bytes, and the
    /// part a reallocation adds is zeroed too (wdk-alloc's realloc is a new `ExAllocatePool2`
    /// block, the old bytes copied in).
    #[test]
    fn a_driver_allocation_is_zeroed_like_exallocatepool2s() {
        let layout = Layout::from_size_align(8192, 16).unwrap();
        let _driver = Attribution::enter(Some(7_000));
        for _ in 0..4 {
            // SAFETY: a layout of non-zero size.
            let p = unsafe { Accounting.alloc(layout) };
            assert!(!p.is_null());
            // SAFETY: `p` is a live block of `layout.size()` bytes, used only through this
            // slice until it is reallocated below.
            let block = unsafe { std::slice::from_raw_parts_mut(p, layout.size()) };
            assert!(block.iter().all(|&b| b == 0), "a driver block was not zeroed");
            block.fill(0xA5);
            // SAFETY: `p` came from this allocator with `layout`; the new size is non-zero.
            let q = unsafe { Accounting.realloc(p, layout, 3 * 8192) };
            assert!(!q.is_null());
            // SAFETY: `q` is a live block of 3 * 8192 bytes, used only through this slice
            // until it is freed below.
            let grown = unsafe { std::slice::from_raw_parts_mut(q, 3 * 8192) };
            assert!(grown[..8192].iter().all(|&b| b == 0xA5), "realloc kept the bytes");
            assert!(grown[8192..].iter().all(|&b| b == 0), "realloc's new part not zeroed");
            grown.fill(0x5A);
            let grown_layout = Layout::from_size_align(3 * 8192, 16).unwrap();
            // SAFETY: `q` came from this allocator with `grown_layout` and is freed once.
            unsafe { Accounting.dealloc(q, grown_layout) };
        }
    }

    /// Non-paged pool is resident: a driver block freed and allocated again takes no page
    /// fault (on Windows a fault at `DISPATCH_LEVEL` would be a bug check). The simulator's
    /// heap (glibc's) gave freed memory back to the system by default, so a table freed with
    /// a port and allocated again by the next restore was faulted in page by page.
    #[test]
    fn a_driver_block_freed_and_allocated_again_takes_no_page_fault() {
        let _host = crate::Host::new(1);
        let layout = Layout::from_size_align(1 << 20, 16).unwrap();
        let mut blocks = [std::ptr::null_mut::<u8>(); 8];
        let mut faults = 0;
        let _driver = Attribution::enter(Some(7_001));
        for round in 0..4 {
            let before = minor_faults();
            for slot in &mut blocks {
                // SAFETY: a layout of non-zero size.
                let p = unsafe { Accounting.alloc(layout) };
                assert!(!p.is_null());
                // SAFETY: `p` is a live block of `layout.size()` bytes; every page touched.
                unsafe { p.write_bytes(0x5A, layout.size()) };
                *slot = p;
            }
            for p in blocks {
                // SAFETY: `p` came from this allocator with `layout` and is freed once.
                unsafe { Accounting.dealloc(p, layout) };
            }
            if round >= 2 {
                faults += minor_faults() - before;
            }
        }
        // 8 MiB a round is 2,048 pages: with the heap given back they all fault again.
        assert!(faults < 64, "{faults} page faults reusing 8 MiB of freed driver blocks");
    }
}
