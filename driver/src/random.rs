//! The per-boot seed of the flow-table hash and the fingerprint salt.
//!
//! `BCryptGenRandom(NULL, buffer, 8, BCRYPT_USE_SYSTEM_PREFERRED_RNG)`: the kernel's
//! system-preferred RNG (`CTR_DRBG`, NIST SP800-90), which "is only supported at
//! `PASSIVE_LEVEL` IRQL" and needs `hAlgorithm` NULL (`BCryptGenRandom`'s page). `DriverEntry` runs at
//! `PASSIVE_LEVEL` and draws it once. The seed keys the flow hash a guest could otherwise aim
//! collisions at, and the salt of the fingerprints a migration carries: interrupt time (what
//! the driver used before) is guessable; this is not.
//!
//! wdk-sys has no `bcrypt.h` bindings, so the function is declared here from the header's
//! prototype; kernel-mode callers link `Cng.lib` (the page's requirements), whose imports name
//! `cng.sys` (xtask/src/sys/exports.rs; checked on Windows by the workflow). Should it fail,
//! the driver still loads, seeded from the interrupt time and the performance counter, and
//! logs it at error level (no migration or packet depends on the seed being random; only the
//! hash's resistance to crafted keys does).

use core::ffi::c_void;

use wdk_sys::NTSTATUS;
use wdk_sys::ntddk::KeQueryInterruptTimePrecise;

/// `BCRYPT_USE_SYSTEM_PREFERRED_RNG` (bcrypt.h).
const BCRYPT_USE_SYSTEM_PREFERRED_RNG: u32 = 0x0000_0002;

#[cfg_attr(windows, link(name = "cng"))]
unsafe extern "system" {
    /// bcrypt.h: `NTSTATUS BCryptGenRandom(BCRYPT_ALG_HANDLE hAlgorithm, PUCHAR pbBuffer,
    /// ULONG cbBuffer, ULONG dwFlags)`.
    fn BCryptGenRandom(
        h_algorithm: *mut c_void,
        pb_buffer: *mut u8,
        cb_buffer: u32,
        dw_flags: u32,
    ) -> NTSTATUS;
}

/// Where the seed came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SeedSource {
    /// The system-preferred RNG.
    SystemRng,
    /// `BCryptGenRandom` failed with this status: interrupt time and performance counter.
    Fallback(NTSTATUS),
}

/// A per-boot seed. `PASSIVE_LEVEL` (`DriverEntry`).
#[must_use]
pub fn boot_seed() -> (u64, SeedSource) {
    let mut bytes = [0u8; 8];
    // SAFETY: a NULL algorithm handle with BCRYPT_USE_SYSTEM_PREFERRED_RNG, as the page requires;
    // an 8-byte buffer that outlives the call; PASSIVE_LEVEL (the caller's contract).
    let status = unsafe {
        BCryptGenRandom(
            core::ptr::null_mut(),
            bytes.as_mut_ptr(),
            8,
            BCRYPT_USE_SYSTEM_PREFERRED_RNG,
        )
    };
    if wdk::nt_success(status) {
        return (u64::from_le_bytes(bytes), SeedSource::SystemRng);
    }
    let mut qpc = 0u64;
    // SAFETY: valid out-pointer; any IRQL.
    let t = unsafe { KeQueryInterruptTimePrecise(&raw mut qpc) };
    (vsflow_callout::seed::boot_seed(t, qpc), SeedSource::Fallback(status))
}
