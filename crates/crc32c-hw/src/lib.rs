//! CRC-32C (Castagnoli, the iSCSI polynomial 0x1EDC6F41, reflected, init and xorout all ones),
//! the runtime-state blob's integrity check, computed with SSE4.2's `crc32` instruction where
//! the processor has it and with `crc`'s 16-way table otherwise.
//!
//! - [`crc32c`]: the checksum, on whichever path this processor has (chosen once, by CPUID).
//! - [`crc32c_table`]: always the table; the reference the hardware path is tested against.
//! - [`crc32c_hardware`]: always the instruction, or `None` where the processor lacks it.
//!
//! # Kernel mode
//!
//! The `crc32` instruction reads and writes general-purpose registers only: no x87/MMX, SSE or
//! AVX register is touched, so there is no extended processor state to save. Microsoft's
//! "Using Floating Point in a WDM Driver" says x64 kernel code may use the SSE registers without
//! `KeSaveExtendedProcessorState` (the compiler saves what it uses; even ISRs may), only AVX and
//! later features need the explicit save ("Using extended processor features in Windows
//! drivers"). The function compiled with `sse4.2` enabled may therefore use SSE registers
//! (allowed on x64) but never AVX (`sse4.2` does not imply it). See docs/PERFORMANCE.md and
//! docs/WINDOWS-VERIFICATION.md (the instruction inside a hypervisor that hides SSE4.2 from
//! CPUID: the table is used; "verify on Windows").
//!
//! `unsafe` is confined to this crate (vsflow-core forbids it): one block, calling the
//! `sse4.2` function after CPUID reported the feature.

#![no_std]

/// The table path: `crc`'s CRC-32C with a 16-way slicing table, no SIMD state touched.
static CASTAGNOLI: crc::Crc<u32, crc::Table<16>> =
    crc::Crc::<u32, crc::Table<16>>::new(&crc::CRC_32_ISCSI);

/// CRC-32C of `bytes`: the `crc32` instruction where CPUID reports SSE4.2, the table otherwise.
/// Both give the same value for every input (tests/property.rs).
#[must_use]
#[inline]
pub fn crc32c(bytes: &[u8]) -> u32 {
    crc32c_hardware(bytes).unwrap_or_else(|| crc32c_table(bytes))
}

/// CRC-32C of `bytes` from the table, on every processor.
#[must_use]
pub fn crc32c_table(bytes: &[u8]) -> u32 {
    CASTAGNOLI.checksum(bytes)
}

/// CRC-32C of `bytes` with SSE4.2's `crc32` instruction, or `None` where the processor (as
/// CPUID reports it) lacks SSE4.2, or on a non-x86_64 target.
#[must_use]
#[inline]
pub fn crc32c_hardware(bytes: &[u8]) -> Option<u32> {
    #[cfg(target_arch = "x86_64")]
    {
        x86_64::crc32c_if_sse42(bytes)
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = bytes;
        None
    }
}

/// Whether this processor has SSE4.2, as CPUID reports it (what [`crc32c`] chooses by).
#[must_use]
pub fn has_hardware() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        x86_64::has_sse42()
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

#[cfg(target_arch = "x86_64")]
mod x86_64 {
    //! SSE4.2 detection (CPUID, read once) and the `crc32` loop.

    use core::arch::x86_64::{__cpuid, _mm_crc32_u8, _mm_crc32_u64};
    use core::sync::atomic::{AtomicU8, Ordering};

    /// CPUID.01H:ECX bit 20: SSE4.2 (Intel SDM vol. 2A, CPUID, table 3-10).
    const CPUID_1_ECX_SSE42: u32 = 1 << 20;

    /// Not read yet / absent / present. Relaxed ordering is enough: every thread that reads
    /// CPUID computes the same value, so a race only repeats the read.
    static SSE42: AtomicU8 = AtomicU8::new(UNKNOWN);
    const UNKNOWN: u8 = 0;
    const ABSENT: u8 = 1;
    const PRESENT: u8 = 2;

    /// Whether CPUID reports SSE4.2; CPUID runs once per boot (per process in the tests).
    #[inline]
    pub fn has_sse42() -> bool {
        match SSE42.load(Ordering::Relaxed) {
            PRESENT => true,
            ABSENT => false,
            _ => read_cpuid(),
        }
    }

    #[cold]
    fn read_cpuid() -> bool {
        // Leaf 0's EAX is the highest basic leaf; every x86_64 processor has leaf 1, checked
        // anyway (a hypervisor decides what CPUID returns).
        let present =
            __cpuid(0).eax >= 1 && __cpuid(1).ecx & CPUID_1_ECX_SSE42 == CPUID_1_ECX_SSE42;
        SSE42.store(if present { PRESENT } else { ABSENT }, Ordering::Relaxed);
        present
    }

    /// The `crc32` loop where CPUID reports SSE4.2; `None` otherwise. The check is here, not
    /// left to the caller, so no safe function depends on a precondition.
    pub fn crc32c_if_sse42(bytes: &[u8]) -> Option<u32> {
        if !has_sse42() {
            return None;
        }
        // SAFETY: `crc32c_sse42` requires the `sse4.2` target feature; `has_sse42()` just
        // returned true, i.e. CPUID.01H:ECX.SSE4_2 is set on this processor (and its crc32
        // instruction touches no extended state: module docs).
        Some(unsafe { crc32c_sse42(bytes) })
    }

    /// CRC-32C with `crc32`: eight bytes an instruction, then the tail a byte at a time.
    /// The instruction computes the reflected Castagnoli CRC without the initial and final
    /// inversion, which are done here.
    #[target_feature(enable = "sse4.2")]
    fn crc32c_sse42(bytes: &[u8]) -> u32 {
        let (words, tail) = bytes.as_chunks::<8>();
        let mut crc = u64::from(u32::MAX);
        for word in words {
            crc = _mm_crc32_u64(crc, u64::from_le_bytes(*word));
        }
        #[allow(
            clippy::cast_possible_truncation,
            reason = "crc32 r64 zero-extends its 32-bit CRC into the 64-bit register"
        )]
        let mut crc = crc as u32;
        for &byte in tail {
            crc = _mm_crc32_u8(crc, byte);
        }
        !crc
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn matches_the_rfc_3720_check_values() {
        // RFC 3720 B.4 / the CRC catalogue: CRC-32C("123456789") = 0xE3069283.
        assert_eq!(super::crc32c(b"123456789"), 0xE306_9283);
        assert_eq!(super::crc32c_table(b"123456789"), 0xE306_9283);
        // 32 bytes of zeros and of 0xFF (RFC 3720 B.4).
        assert_eq!(super::crc32c(&[0u8; 32]), 0x8A91_36AA);
        assert_eq!(super::crc32c(&[0xFFu8; 32]), 0x62A8_AB43);
        assert_eq!(super::crc32c(&[]), 0);
    }
}
