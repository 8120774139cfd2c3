//! Golomb-Rice coding of a set of distinct 32-bit fingerprints (format 1.1).
//!
//! The values are sorted ascending; each gap `d` (the first value itself, then
//! `value - previous - 1`) is written as `d >> k` one-bits, a zero-bit, then the low `k` bits
//! of `d`, most significant first; bits fill bytes from the most significant bit, and the last
//! byte is padded with zero-bits. With `n` uniformly distributed values and `k` near
//! `log2(2^32 / n)` this takes about `k + 2` bits per value: 2.5 bytes at 20,000 values
//! instead of 4 (the same lossless set, so the same false-match probability).
//!
//! With `k` fixed, removing a value never grows the encoding: two gaps `a` and `b` become
//! `a + b + 1`, whose quotient is at most `a >> k` + `b >> k` + 1, so the size drops by at
//! least `k` bits. The encoder relies on this to plan within the cap.

use alloc::vec::Vec;

/// Largest Rice parameter (a gap is below 2^32).
pub const MAX_K: u8 = 31;

/// Bits of the encoding of sorted, distinct `values` with parameter `k`.
#[must_use]
pub fn bits(values: &[u32], k: u8) -> u64 {
    let mut prev: Option<u32> = None;
    let mut total = 0u64;
    for &v in values {
        total += code_bits(prev, v, k);
        prev = Some(v);
    }
    total
}

/// Bits of the code word of `v` after `prev` (`None`: `v` is the first value): [`bits`] is
/// their sum.
#[inline]
#[must_use]
pub fn code_bits(prev: Option<u32>, v: u32, k: u8) -> u64 {
    u64::from(gap(prev, v) >> k) + 1 + u64::from(k)
}

/// Bytes of the encoding.
#[must_use]
pub fn bytes(values: &[u32], k: u8) -> usize {
    usize::try_from(bits(values, k).div_ceil(8)).unwrap_or(usize::MAX)
}

const fn gap(prev: Option<u32>, v: u32) -> u32 {
    match prev {
        None => v,
        Some(p) => v.wrapping_sub(p).wrapping_sub(1),
    }
}

/// The parameter giving the smallest encoding of `values`.
#[must_use]
pub fn best_k(values: &[u32]) -> u8 {
    best_k_bits(values).0
}

/// The parameter giving the smallest encoding of `values` (sorted, distinct), and that
/// encoding's size in bits ([`bits`]): the three candidates are measured in one pass over the
/// gaps.
#[must_use]
pub fn best_k_bits(values: &[u32]) -> (u8, u64) {
    let n = u64::try_from(values.len()).unwrap_or(u64::MAX);
    // Near-optimal for geometric gaps of mean m: floor(log2(m * ln 2)); check its neighbours.
    let m = ((1u64 << 32) / n.max(1)).max(1) * 11 / 16;
    #[allow(clippy::cast_possible_truncation, reason = "at most 63")]
    let guess = m.max(1).ilog2() as u8;
    let guess = guess.min(MAX_K);
    let ks = [guess, guess.saturating_sub(1), guess.saturating_add(1).min(MAX_K)];
    // bits(k) = n (1 + k) + the sum of the gaps' quotients.
    let mut q = [0u64; 3];
    let mut prev: Option<u32> = None;
    for &v in values {
        let d = gap(prev, v);
        for (s, &k) in q.iter_mut().zip(ks.iter()) {
            *s += u64::from(d >> k);
        }
        prev = Some(v);
    }
    let size = |i: usize| {
        let k = ks.get(i).copied().unwrap_or(MAX_K);
        (q.get(i).copied().unwrap_or(0) + n * (1 + u64::from(k)), k)
    };
    // The smallest size, then the smallest k: as comparing (bits, k) pairs.
    let best = size(0).min(size(1)).min(size(2));
    (best.1, best.0)
}

/// Appends the encoding of sorted, distinct `values` to `out` (its capacity reserved by the
/// caller: no allocation here).
pub fn encode(values: &[u32], k: u8, out: &mut Vec<u8>) {
    let mut w = BitWriter { out, acc: 0, n: 0 };
    // The gap is `v - next` with `next` the previous value + 1 (0 before the first: the first
    // gap is the value itself), as `gap` gives it without a branch on the first value.
    let mut next = 0u32;
    let low = (1u64 << k) - 1;
    for &v in values {
        let d = v.wrapping_sub(next);
        let q = d >> k;
        let len = q + 1 + u32::from(k);
        if len <= BitWriter::MAX_PUT {
            // The whole code word at once: q one-bits, a zero-bit, the low k bits.
            w.put((((1u64 << q) - 1) << (u32::from(k) + 1)) | (u64::from(d) & low), len);
        } else {
            let mut q = q;
            while q > 0 {
                let run = q.min(32);
                w.put((1u64 << run) - 1, run);
                q -= run;
            }
            w.put(0, 1);
            w.put(u64::from(d) & low, u32::from(k));
        }
        next = v.wrapping_add(1);
    }
    w.finish();
}

struct BitWriter<'a> {
    out: &'a mut Vec<u8>,
    /// The pending bits in its low `n` bits; the bits above them are left over from bits
    /// already written (never read again: every read takes whole bits below `n` + 32).
    acc: u64,
    n: u32,
}

impl BitWriter<'_> {
    /// Most bits one [`BitWriter::put`] takes (fewer than 32 are pending before it).
    const MAX_PUT: u32 = 32;

    /// Appends the low `count` (<= [`BitWriter::MAX_PUT`]) bits of `v`, most significant
    /// first. Bits leave in whole 32-bit words (big-endian bytes) once 32 are pending.
    #[inline]
    fn put(&mut self, v: u64, count: u32) {
        self.acc = (self.acc << count) | v;
        self.n += count;
        if self.n >= 32 {
            self.n -= 32;
            // (The bits above these 32 are written already: the truncation drops them.)
            #[allow(clippy::cast_possible_truncation, reason = "the next 32 bits")]
            let word = (self.acc >> self.n) as u32;
            self.out.extend_from_slice(&word.to_be_bytes());
        }
    }

    /// Writes the pending bits, the last byte padded with zero-bits.
    fn finish(&mut self) {
        while self.n >= 8 {
            self.n -= 8;
            #[allow(clippy::cast_possible_truncation, reason = "one byte")]
            self.out.push((self.acc >> self.n) as u8);
        }
        if self.n > 0 {
            #[allow(clippy::cast_possible_truncation, reason = "one byte")]
            self.out.push((self.acc << (8 - self.n)) as u8);
            self.n = 0;
        }
        self.acc = 0;
    }
}

/// Why an encoding was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RiceError {
    /// The bits ran out before `count` values.
    Truncated,
    /// A value passed 2^32 - 1.
    Overflow,
    /// Bytes or non-zero padding bits after the last value.
    Trailing,
    /// `k` above [`MAX_K`].
    BadParameter,
    /// Out of memory.
    OutOfMemory,
}

/// Decodes `count` values with parameter `k` from exactly `bytes`.
///
/// # Errors
/// A [`RiceError`]; never panics on any input.
pub fn decode(bytes: &[u8], k: u8, count: u32) -> Result<Vec<u32>, RiceError> {
    if k > MAX_K {
        return Err(RiceError::BadParameter);
    }
    // Each value takes at least k + 1 bits: refuse counts the bytes cannot hold before
    // reserving memory for them.
    let available = u64::try_from(bytes.len()).unwrap_or(u64::MAX).saturating_mul(8);
    if u64::from(count).saturating_mul(u64::from(k) + 1) > available {
        return Err(RiceError::Truncated);
    }
    let mut values = Vec::new();
    values
        .try_reserve_exact(usize::try_from(count).map_err(|_| RiceError::OutOfMemory)?)
        .map_err(|_| RiceError::OutOfMemory)?;
    let mut reader = BitReader { bytes, pos: 0 };
    let mut prev: Option<u32> = None;
    for _ in 0..count {
        let mut quotient = 0u64;
        loop {
            match reader.bit() {
                None => return Err(RiceError::Truncated),
                Some(true) => {
                    quotient += 1;
                    if quotient > u64::from(u32::MAX) {
                        return Err(RiceError::Overflow);
                    }
                }
                Some(false) => break,
            }
        }
        let low = reader.bits(u32::from(k)).ok_or(RiceError::Truncated)?;
        let gap = (quotient << k) | low;
        let value = prev.map_or(gap, |p| u64::from(p) + 1 + gap);
        let value = u32::try_from(value).map_err(|_| RiceError::Overflow)?;
        values.push(value);
        prev = Some(value);
    }
    // Canonical end: only zero padding in the last byte, no byte after it.
    if reader.pos.div_ceil(8) != bytes.len() {
        return Err(RiceError::Trailing);
    }
    while !reader.pos.is_multiple_of(8) {
        if reader.bit() != Some(false) {
            return Err(RiceError::Trailing);
        }
    }
    Ok(values)
}

struct BitReader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl BitReader<'_> {
    fn bit(&mut self) -> Option<bool> {
        let b = self.bytes.get(self.pos / 8)?;
        let bit = (b >> (7 - (self.pos % 8))) & 1 == 1;
        self.pos += 1;
        Some(bit)
    }

    fn bits(&mut self, count: u32) -> Option<u64> {
        let mut v = 0u64;
        for _ in 0..count {
            v = (v << 1) | u64::from(self.bit()?);
        }
        Some(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    #[test]
    fn round_trips_and_sizes_match() {
        let mut x = 0x1234_5678_9abc_def0u64;
        let mut values: Vec<u32> = (0..5000)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 32) as u32
            })
            .collect();
        values.sort_unstable();
        values.dedup();
        values.push(u32::MAX);
        values.insert(0, 0);
        let k = best_k(&values);
        assert!((18..=20).contains(&k), "k {k}");
        let mut out = Vec::new();
        encode(&values, k, &mut out);
        assert_eq!(out.len(), bytes(&values, k));
        assert!(out.len() * 8 < values.len() * (usize::from(k) + 3));
        assert_eq!(decode(&out, k, u32::try_from(values.len()).unwrap()).unwrap(), values);
    }

    #[test]
    fn best_k_bits_is_the_smallest_of_the_three_candidates_measured_one_by_one() {
        let mut x = 0x0bad_cafe_1234_5678u64;
        for n in [0usize, 1, 2, 7, 100, 5_000, 12_000] {
            let mut values: Vec<u32> = (0..n)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    (x >> 32) as u32
                })
                .collect();
            values.sort_unstable();
            values.dedup();
            let count = u64::try_from(values.len()).unwrap().max(1);
            let m = ((1u64 << 32) / count).max(1) * 11 / 16;
            let guess = u8::try_from(m.max(1).ilog2()).unwrap().min(MAX_K);
            let mut want = (bits(&values, guess), guess);
            for k in [guess.saturating_sub(1), guess.saturating_add(1).min(MAX_K)] {
                want = want.min((bits(&values, k), k));
            }
            assert_eq!(best_k_bits(&values), (want.1, want.0), "n {n}");
            // And the one-put encoding writes what bits() counts, decodably.
            let mut out = Vec::new();
            encode(&values, want.1, &mut out);
            assert_eq!(out.len(), bytes(&values, want.1));
            assert_eq!(decode(&out, want.1, u32::try_from(values.len()).unwrap()).unwrap(), values);
        }
    }

    #[test]
    fn every_parameter_round_trips_code_words_on_both_sides_of_one_put() {
        // Gaps whose quotient puts a code word (q + 1 + k bits) just under, at and over the
        // most one put takes, and far over it.
        for k in 0..=MAX_K {
            let mut values = vec![0u32];
            let edge = BitWriter::MAX_PUT.saturating_sub(1 + u32::from(k));
            for q in [0, 1, 2, edge.saturating_sub(1), edge, edge + 1, edge + 40] {
                let low = (1u64 << k) - 1;
                let d = (u64::from(q) << k) | low;
                let next = u64::from(*values.last().unwrap()) + 1 + d;
                let Ok(next) = u32::try_from(next) else { break };
                values.push(next);
            }
            let mut out = Vec::new();
            encode(&values, k, &mut out);
            assert_eq!(out.len(), bytes(&values, k), "k {k}");
            let n = u32::try_from(values.len()).unwrap();
            assert_eq!(decode(&out, k, n).unwrap(), values, "k {k}");
        }
    }

    #[test]
    fn removal_never_grows_the_encoding_by_less_than_k_bits() {
        let values = vec![3u32, 10, 1 << 20, 1 << 31, u32::MAX - 1];
        for k in 0..=MAX_K {
            let all = bits(&values, k);
            for i in 0..values.len() {
                let mut fewer = values.clone();
                fewer.remove(i);
                assert!(bits(&fewer, k) + u64::from(k) <= all, "k {k} i {i}");
            }
        }
    }

    #[test]
    fn damaged_encodings_are_refused() {
        let values = vec![5u32, 6, 1000, 4_000_000_000];
        let mut out = Vec::new();
        encode(&values, 4, &mut out);
        assert_eq!(decode(&out, 4, 4).unwrap(), values);
        assert_eq!(decode(&out, 4, 6), Err(RiceError::Truncated));
        assert_eq!(decode(&out[..out.len() - 1], 4, 4), Err(RiceError::Truncated));
        let mut longer = out.clone();
        longer.push(0);
        assert_eq!(decode(&longer, 4, 4), Err(RiceError::Trailing));
        assert_eq!(decode(&out, 32, 4), Err(RiceError::BadParameter));
        // A gap that carries the sum past 2^32 - 1.
        let mut big = Vec::new();
        encode(&[u32::MAX], 31, &mut big);
        let mut two = big.clone();
        two.extend_from_slice(&big);
        assert!(decode(&two, 31, 2).is_err());
        assert_eq!(decode(&[], 0, 0).unwrap(), Vec::<u32>::new());
    }
}
