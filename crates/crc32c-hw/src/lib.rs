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

    /// Bytes of each of the three streams [`crc32c_sse42`] runs side by side: the `crc32`
    /// instruction takes three cycles to give its result but can start one every cycle, so
    /// three independent streams keep it busy (Intel, "Fast CRC Computation for iSCSI
    /// Polynomial Using CRC32 Instruction", 2011). 512 bytes: a 45 KB blob is about 30 rounds,
    /// each combined with two table shifts.
    const STREAM: usize = 512;

    /// The reflected Castagnoli polynomial (x^32 + x^28 + ... + 1, bit-reversed).
    const POLY: u32 = 0x82F6_3B78;

    /// `a * b mod P` in the reflected representation (bit 31 is x^0): zlib's `multmodp`.
    const fn mult_mod_p(a: u32, mut b: u32) -> u32 {
        let mut m = 1u32 << 31;
        let mut p = 0u32;
        loop {
            if a & m != 0 {
                p ^= b;
                if a & (m - 1) == 0 {
                    return p;
                }
            }
            m >>= 1;
            b = if b & 1 != 0 { (b >> 1) ^ POLY } else { b >> 1 };
        }
    }

    /// `x^(8 n) mod P`: the operator that moves a CRC register past `n` zero bytes.
    const fn x_8n_mod_p(n: usize) -> u32 {
        // x^1 is bit 30 in the reflected representation; square-and-multiply over 8 n.
        let mut result = 1u32 << 31; // x^0
        let mut square = 1u32 << 30; // x^1, squared as the exponent's bits go by
        let mut e = 8 * n;
        while e != 0 {
            if e & 1 != 0 {
                result = mult_mod_p(square, result);
            }
            square = mult_mod_p(square, square);
            e >>= 1;
        }
        result
    }

    /// The CRC register moved past [`STREAM`] zero bytes, a byte of the register at a time:
    /// `SHIFT[k][b]` is `(b << 8 k) * x^(8 STREAM) mod P` (the map is linear, so the four
    /// lookups XOR to the whole register's).
    static SHIFT: [[u32; 256]; 4] = {
        let op = x_8n_mod_p(STREAM);
        let mut t = [[0u32; 256]; 4];
        let mut k = 0;
        while k < 4 {
            let mut b = 0;
            while b < 256 {
                #[allow(clippy::cast_possible_truncation, reason = "b < 256")]
                let v = (b as u32) << (8 * k);
                t[k][b] = mult_mod_p(op, v);
                b += 1;
            }
            k += 1;
        }
        t
    };

    /// `crc` moved past [`STREAM`] zero bytes.
    #[inline]
    fn shift(crc: u32) -> u32 {
        let [b0, b1, b2, b3] = crc.to_le_bytes();
        SHIFT[0][usize::from(b0)]
            ^ SHIFT[1][usize::from(b1)]
            ^ SHIFT[2][usize::from(b2)]
            ^ SHIFT[3][usize::from(b3)]
    }

    /// CRC-32C with `crc32`, eight bytes an instruction: rounds of three [`STREAM`]-byte
    /// streams side by side, combined by moving the first two past the bytes after them
    /// (the CRC register is linear: `crc(r, A B) = crc(r, A) * x^(8 |B|) + crc(0, B)`), then the
    /// rest eight bytes and a byte at a time. The instruction computes the reflected Castagnoli
    /// CRC without the initial and final inversion, which are done here.
    #[target_feature(enable = "sse4.2")]
    fn crc32c_sse42(bytes: &[u8]) -> u32 {
        #[allow(
            clippy::cast_possible_truncation,
            reason = "crc32 r64 zero-extends its 32-bit CRC into the 64-bit register"
        )]
        let low = |c: u64| c as u32;
        let (rounds, rest) = bytes.as_chunks::<{ 3 * STREAM }>();
        let mut crc = u32::MAX;
        for round in rounds {
            let (words, _) = round.as_chunks::<8>();
            let (a, bc) = words.split_at(STREAM / 8);
            let (b, c) = bc.split_at(STREAM / 8);
            let (mut ca, mut cb, mut cc) = (u64::from(crc), 0u64, 0u64);
            for ((wa, wb), wc) in a.iter().zip(b).zip(c) {
                ca = _mm_crc32_u64(ca, u64::from_le_bytes(*wa));
                cb = _mm_crc32_u64(cb, u64::from_le_bytes(*wb));
                cc = _mm_crc32_u64(cc, u64::from_le_bytes(*wc));
            }
            crc = shift(shift(low(ca)) ^ low(cb)) ^ low(cc);
        }
        let (words, tail) = rest.as_chunks::<8>();
        let mut wide = u64::from(crc);
        for word in words {
            wide = _mm_crc32_u64(wide, u64::from_le_bytes(*word));
        }
        let mut crc = low(wide);
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
