//! A hint to the processor to start loading a cache line the packet path will read soon.
//!
//! Classify reads WFP's inputs (values, metadata, the `VSWITCH_ID` blob, the
//! `NET_BUFFER_LIST` chain) that may not be in the cache, and takes interlocked operations
//! (the map and port locks) that on x86-64 wait for every load issued before them. A line the
//! packet path would otherwise first read after a lock is asked for before it, so its miss
//! overlaps the others instead of following them (docs/PERFORMANCE.md, "sixth session").

/// Asks for the cache line at `p` (into every cache level). A hint only: it never faults, on
/// any address (null, freed, unmapped), and never makes a value visible to the program, so it
/// is safe to call with any pointer; on other architectures it does nothing.
#[inline(always)]
#[allow(
    clippy::inline_always,
    reason = "one instruction on the classify path: out of line it costs a call"
)]
pub fn line<T>(p: *const T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY:
    // 1. `prefetcht0` is a hint: it does not fault on any address and loads nothing into a
    //    register (Intel SDM vol. 2B, PREFETCHh: "does not affect program behavior"), so no
    //    pointer validity is required.
    // 2. SSE, which it needs, is in every x86-64 processor's baseline (and enabled for
    //    x86_64-pc-windows-msvc and x86_64-unknown-linux-gnu).
    unsafe {
        core::arch::x86_64::_mm_prefetch::<{ core::arch::x86_64::_MM_HINT_T0 }>(p.cast());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}
