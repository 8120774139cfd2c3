//! `cng.sys`: kernel-mode CNG, of which vsflow.sys imports `BCryptGenRandom` (the per-boot
//! seed, driver/src/random.rs), as a Win64 function over the KMDF double's (crates/wdf-sim:
//! the system-preferred RNG, `PASSIVE_LEVEL` only, a NULL handle with
//! `BCRYPT_USE_SYSTEM_PREFERRED_RNG`; docs/SIMULATOR-FIDELITY.md).

#![allow(non_snake_case, reason = "the CNG name")]
#![allow(clippy::missing_safety_doc, reason = "the function's contract is bcrypt.h's")]
#![allow(
    clippy::must_use_candidate,
    reason = "shims are called by the image, which ignores attributes"
)]

use wdf_sim::exports as k;
use wdk_sys::{NTSTATUS, PVOID, ULONG};

/// `BCryptGenRandom(hAlgorithm, pbBuffer, cbBuffer, dwFlags)`: the KMDF double's.
pub unsafe extern "win64" fn BCryptGenRandom(
    hAlgorithm: PVOID,
    pbBuffer: *mut u8,
    cbBuffer: ULONG,
    dwFlags: ULONG,
) -> NTSTATUS {
    // SAFETY: the image's arguments, passed on unchanged under the same contract.
    unsafe { k::BCryptGenRandom(hAlgorithm, pbBuffer, cbBuffer, dwFlags) }
}
