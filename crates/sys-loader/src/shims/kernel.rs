//! `ntoskrnl.exe`: the kernel functions vsflow.sys imports, as Win64 functions over the KMDF
//! double's kernel (crates/wdf-sim: spin locks, rundown protection, the pool, the clock, IRQL,
//! processors, `RtlGetVersion`, `DbgPrintEx`, the physical memory ranges), plus the C runtime routines and `__chkstk`
//! ([`crt`]), ETW ([`super::etw`]) and `KeBugCheckEx`.
//!
//! Each shim passes its arguments unchanged to the double's function of the same name, which
//! applies the documented rules (docs/SIMULATOR-FIDELITY.md, "KMDF double").

#![allow(
    clippy::must_use_candidate,
    reason = "shims are called by the image, which ignores attributes"
)]
#![allow(non_snake_case, reason = "the kernel's names")]
#![allow(clippy::missing_safety_doc, reason = "each shim's contract is the kernel function's")]

use std::ffi::{c_char, c_void};

use wdf_sim::exports as k;
use wdk_sys::{
    BOOLEAN, KIRQL, KPROCESSOR_MODE, NTSTATUS, PEX_RUNDOWN_REF_CACHE_AWARE, PEX_SPIN_LOCK,
    PKSPIN_LOCK, PLARGE_INTEGER, POOL_TYPE, PPROCESSOR_NUMBER, PRTL_OSVERSIONINFOW, PULONG64,
    PVOID, ULONG, ULONG64, USHORT,
};

/// A Win64 shim that hands its arguments to the double's function of the same name.
macro_rules! pass {
    ($($name:ident($($arg:ident: $ty:ty),*) $(-> $ret:ty)?;)*) => {$(
        #[doc = concat!("`", stringify!($name), "`: the KMDF double's.")]
        pub unsafe extern "win64" fn $name($($arg: $ty),*) $(-> $ret)? {
            // SAFETY: the image's arguments, passed on unchanged under the same contract.
            unsafe { k::$name($($arg),*) }
        }
    )*};
}

pass! {
    KeAcquireSpinLockRaiseToDpc(SpinLock: PKSPIN_LOCK) -> KIRQL;
    KeReleaseSpinLock(SpinLock: PKSPIN_LOCK, NewIrql: KIRQL);
    KeTryToAcquireSpinLockAtDpcLevel(SpinLock: PKSPIN_LOCK) -> BOOLEAN;
    KeReleaseSpinLockFromDpcLevel(SpinLock: PKSPIN_LOCK);
    KeQueryInterruptTimePrecise(QpcTimeStamp: PULONG64) -> ULONG64;
    RtlGetVersion(lpVersionInformation: PRTL_OSVERSIONINFOW) -> NTSTATUS;
    ExAllocatePool2(Flags: u64, NumberOfBytes: u64, Tag: ULONG) -> PVOID;
    ExFreePool(P: PVOID);
    MmGetPhysicalMemoryRangesEx2(PartitionObject: PVOID, Flags: ULONG) -> wdk_sys::PPHYSICAL_MEMORY_RANGE;
    ExAllocateCacheAwareRundownProtection(PoolType: POOL_TYPE, PoolTag: ULONG) -> PEX_RUNDOWN_REF_CACHE_AWARE;
    ExFreeCacheAwareRundownProtection(RunRefCacheAware: PEX_RUNDOWN_REF_CACHE_AWARE);
    ExAcquireRundownProtectionCacheAware(RunRefCacheAware: PEX_RUNDOWN_REF_CACHE_AWARE) -> BOOLEAN;
    ExReleaseRundownProtectionCacheAware(RunRefCacheAware: PEX_RUNDOWN_REF_CACHE_AWARE);
    ExWaitForRundownProtectionReleaseCacheAware(RunRef: PEX_RUNDOWN_REF_CACHE_AWARE);
    ExReInitializeRundownProtectionCacheAware(RunRefCacheAware: PEX_RUNDOWN_REF_CACHE_AWARE);
    ExAcquireSpinLockShared(SpinLock: PEX_SPIN_LOCK) -> KIRQL;
    ExReleaseSpinLockShared(SpinLock: PEX_SPIN_LOCK, OldIrql: KIRQL);
    ExAcquireSpinLockExclusive(SpinLock: PEX_SPIN_LOCK) -> KIRQL;
    ExReleaseSpinLockExclusive(SpinLock: PEX_SPIN_LOCK, OldIrql: KIRQL);
    KeGetCurrentProcessorNumberEx(ProcNumber: PPROCESSOR_NUMBER) -> ULONG;
    KeQueryMaximumProcessorCountEx(GroupNumber: USHORT) -> ULONG;
    KeDelayExecutionThread(WaitMode: KPROCESSOR_MODE, Alertable: BOOLEAN, Interval: PLARGE_INTEGER) -> NTSTATUS;
}

/// `DbgPrintEx(ComponentId, Level, Format, ...)`. Win64 passes a variadic call's first four
/// arguments in RCX, RDX, R8 and R9 like a fixed one's, so the one argument of the only format
/// the double models (`"%s"`) is the fourth parameter; the double reports any other format.
pub unsafe extern "win64" fn DbgPrintEx(
    ComponentId: ULONG,
    Level: ULONG,
    Format: *const c_char,
    Arg: *const c_char,
) -> ULONG {
    // SAFETY: as the other shims: the double reads the format and its one argument.
    unsafe { k::DbgPrintEx(ComponentId, Level, Format, Arg) }
}

/// `RPNC`: wdk-panic's bug-check code for a Rust panic (parameters: file, file length, line,
/// column).
pub const RUST_PANIC: u32 = u32::from_be_bytes(*b"RPNC");

/// What a bug check reports, before the process stops.
#[must_use]
pub fn describe_bugcheck(code: u32, p1: usize, p2: usize, p3: usize, p4: usize) -> String {
    if code == RUST_PANIC && p1 != 0 && p2 <= 4096 {
        // SAFETY: wdk-panic passes the panic location's file name (a `&str` in the image's
        // read-only data) and its length.
        let file = unsafe { std::slice::from_raw_parts(p1 as *const u8, p2) };
        format!(
            "vsflow.sys bug-checked RPNC (a Rust panic) at {}:{p3}:{p4}",
            String::from_utf8_lossy(file)
        )
    } else {
        format!("vsflow.sys bug-checked {code:#010x} ({p1:#x}, {p2:#x}, {p3:#x}, {p4:#x})")
    }
}

/// `KeBugCheckEx`: the machine stops. The harness cannot unwind through the image's frames, so
/// it reports the bug check (for a Rust panic, the panic's location) and aborts the test
/// process: a failure, by name, never a silent return.
pub unsafe extern "win64" fn KeBugCheckEx(
    BugCheckCode: ULONG,
    BugCheckParameter1: usize,
    BugCheckParameter2: usize,
    BugCheckParameter3: usize,
    BugCheckParameter4: usize,
) -> ! {
    eprintln!(
        "{}",
        describe_bugcheck(
            BugCheckCode,
            BugCheckParameter1,
            BugCheckParameter2,
            BugCheckParameter3,
            BugCheckParameter4
        )
    );
    std::process::abort()
}

/// The C runtime routines ntoskrnl exports, which the compiler calls for copies, fills and
/// comparisons, and `__chkstk`.
pub mod crt {
    use super::c_void;

    /// `memcpy`: the C library's, after the C standard's precondition (the ranges must not
    /// overlap: the result is undefined), which the shim enforces.
    pub unsafe extern "win64" fn memcpy(
        dest: *mut c_void,
        src: *const c_void,
        n: usize,
    ) -> *mut c_void {
        let (d, s) = (dest as usize, src as usize);
        if n > 0 && d < s.saturating_add(n) && s < d.saturating_add(n) {
            eprintln!("vsflow.sys called memcpy({dest:p}, {src:p}, {n}) with overlapping ranges");
            std::process::abort();
        }
        // SAFETY: the image's buffers, valid for `n` bytes (memcpy's contract); not overlapping.
        unsafe { libc::memcpy(dest, src, n) }
    }

    /// `memmove`: the C library's.
    pub unsafe extern "win64" fn memmove(
        dest: *mut c_void,
        src: *const c_void,
        n: usize,
    ) -> *mut c_void {
        // SAFETY: the image's buffers, valid for `n` bytes (memmove's contract).
        unsafe { libc::memmove(dest, src, n) }
    }

    /// `memset`: the C library's.
    pub unsafe extern "win64" fn memset(dest: *mut c_void, c: i32, n: usize) -> *mut c_void {
        // SAFETY: the image's buffer, valid for `n` bytes (memset's contract).
        unsafe { libc::memset(dest, c, n) }
    }

    /// `memcmp`: the C library's.
    pub unsafe extern "win64" fn memcmp(a: *const c_void, b: *const c_void, n: usize) -> i32 {
        // SAFETY: the image's buffers, valid for `n` bytes (memcmp's contract).
        unsafe { libc::memcmp(a, b, n) }
    }

    // `__chkstk` has its own convention (x64 software conventions, "Stack allocation"): the
    // frame size in RAX, every register preserved but R10, R11 and the flags, and each page
    // from the caller's stack pointer down to the new one touched in order, so that a guard
    // page is hit page by page. The Linux thread stacks it runs on are mapped whole, so the
    // probes only fault past the end of the stack: a stack overflow, as on Windows.
    std::arch::global_asm!(
        ".text",
        ".p2align 4",
        ".globl vsflow_sys_loader_chkstk",
        "vsflow_sys_loader_chkstk:",
        // Counted for the tests (flags may change: the convention allows it).
        "lock inc qword ptr [rip + {calls}]",
        // R10: the caller's stack pointer (above the return address); R11: bytes left.
        "lea r10, [rsp + 8]",
        "mov r11, rax",
        "2:",
        "cmp r11, 0x1000",
        "jb 3f",
        "sub r10, 0x1000",
        "test byte ptr [r10], 0",
        "sub r11, 0x1000",
        "jmp 2b",
        "3:",
        "sub r10, r11",
        "test byte ptr [r10], 0",
        "ret",
        calls = sym CHKSTK_CALLS,
    );

    /// Calls of `__chkstk` so far (the image calls it for frames above a page).
    static CHKSTK_CALLS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

    /// How many times the image has called `__chkstk` in this process.
    #[must_use]
    pub fn chkstk_calls() -> u64 {
        CHKSTK_CALLS.load(std::sync::atomic::Ordering::Relaxed)
    }

    unsafe extern "C" {
        fn vsflow_sys_loader_chkstk();
    }

    /// The address of `__chkstk`.
    #[must_use]
    pub fn chkstk() -> usize {
        vsflow_sys_loader_chkstk as *const () as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rust_panic_bugcheck_names_the_panic_location_and_others_their_parameters() {
        let file = "driver/src/entry.rs";
        let rpnc = describe_bugcheck(RUST_PANIC, file.as_ptr() as usize, file.len(), 42, 7);
        assert_eq!(rpnc, "vsflow.sys bug-checked RPNC (a Rust panic) at driver/src/entry.rs:42:7");
        assert_eq!(
            describe_bugcheck(0xC4, 0x62, 1, 2, 3),
            "vsflow.sys bug-checked 0x000000c4 (0x62, 0x1, 0x2, 0x3)"
        );
    }
}
