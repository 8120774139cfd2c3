//! A bounds-checked little-endian cursor. Every read returns `None` past the end; nothing
//! indexes untrusted bytes directly.

#[derive(Clone, Copy, Debug)]
pub struct Reader<'a> {
    /// What is left to read: every read splits its bytes off the front, one length check.
    rest: &'a [u8],
    /// The length of the whole input (the position is `len - rest.len()`).
    len: usize,
}

impl<'a> Reader<'a> {
    pub const fn new(bytes: &'a [u8]) -> Self {
        Self { rest: bytes, len: bytes.len() }
    }

    pub const fn pos(&self) -> usize {
        self.len - self.rest.len()
    }

    pub const fn remaining(&self) -> usize {
        self.rest.len()
    }

    #[inline]
    pub fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let (s, rest) = self.rest.split_at_checked(n)?;
        self.rest = rest;
        Some(s)
    }

    #[inline]
    pub fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        let (s, rest) = self.rest.split_first_chunk::<N>()?;
        self.rest = rest;
        Some(*s)
    }

    #[inline]
    pub fn u8(&mut self) -> Option<u8> {
        let (&b, rest) = self.rest.split_first()?;
        self.rest = rest;
        Some(b)
    }

    #[inline]
    pub fn u16(&mut self) -> Option<u16> {
        self.array().map(u16::from_le_bytes)
    }

    #[inline]
    pub fn u32(&mut self) -> Option<u32> {
        self.array().map(u32::from_le_bytes)
    }

    #[inline]
    pub fn u64(&mut self) -> Option<u64> {
        self.array().map(u64::from_le_bytes)
    }

    /// An unsigned LEB128 varint of at most 10 bytes whose value fits 64 bits; `None` past
    /// the end, for an overlong encoding (a final zero byte after the first) or overflow.
    #[allow(clippy::inline_always, reason = "the decode loop's fast path: up to 8 a flow")]
    #[inline(always)]
    pub fn varint(&mut self) -> Option<u64> {
        match *self.rest {
            // One byte: most ages and small counters.
            [b, ref rest @ ..] if b < 0x80 => {
                self.rest = rest;
                Some(u64::from(b))
            }
            // Two bytes (ages in seconds up to 4.5 hours): canonical if the second is not 0.
            [b0, b1, ref rest @ ..] if (1..0x80).contains(&b1) => {
                self.rest = rest;
                Some(u64::from(b0 & 0x7f) | u64::from(b1) << 7)
            }
            // The long form works on a copy of the slice (not `&mut self`): a call that took
            // the reader's address would keep it in memory through the whole decode loop, a
            // store and reload on every byte read.
            _ => {
                let (v, rest) = varint_long(self.rest)?;
                self.rest = rest;
                Some(v)
            }
        }
    }

    /// A dictionary index of `width` bytes (0, 1 or 2; 0 reads as 0), little-endian: the
    /// compact entries' widths, read without a loop.
    #[allow(clippy::inline_always, reason = "the decode loop's index reads: one a flow")]
    #[inline(always)]
    pub fn index(&mut self, width: usize) -> Option<u32> {
        match width {
            0 => Some(0),
            1 => self.u8().map(u32::from),
            2 => self.u16().map(u32::from),
            _ => self.uint(width),
        }
    }

    /// A little-endian unsigned integer of `width` bytes (0..=4; 0 reads as 0).
    #[inline]
    pub fn uint(&mut self, width: usize) -> Option<u32> {
        let b = self.take(width)?;
        let mut v = 0u32;
        for (i, x) in b.iter().enumerate().take(4) {
            v |= u32::from(*x) << (8 * i);
        }
        Some(v)
    }
}

/// [`Reader::varint`] past its two-byte fast path, from the front of `bytes`: the value and
/// what follows it.
#[cold]
#[inline(never)]
fn varint_long(bytes: &[u8]) -> Option<(u64, &[u8])> {
    let mut v = 0u64;
    let mut rest = bytes;
    for i in 0..10u32 {
        let (&b, after) = rest.split_first()?;
        rest = after;
        let low = u64::from(b & 0x7f);
        if i == 9 && b > 1 {
            return None;
        }
        v |= low << (7 * i);
        if b & 0x80 == 0 {
            if i > 0 && b == 0 {
                return None;
            }
            return Some((v, rest));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::Reader;

    #[test]
    fn reads_little_endian_and_stops_at_the_end() {
        let mut r = Reader::new(&[1, 0, 2, 0, 0, 0, 9]);
        assert_eq!(r.u16(), Some(1));
        assert_eq!(r.u32(), Some(2));
        assert_eq!(r.u16(), None);
        assert_eq!(r.u8(), Some(9));
        assert_eq!(r.u8(), None);
        assert_eq!(r.remaining(), 0);
        assert_eq!(r.take(usize::MAX), None);
    }

    #[test]
    fn varints_are_canonical_and_bounded() {
        assert_eq!(Reader::new(&[0]).varint(), Some(0));
        assert_eq!(Reader::new(&[0x7f]).varint(), Some(127));
        assert_eq!(Reader::new(&[0x80, 0x01]).varint(), Some(128));
        assert_eq!(Reader::new(&[0xff, 0x7f]).varint(), Some(16_383));
        assert_eq!(Reader::new(&[0x80, 0x80, 0x01]).varint(), Some(16_384));
        assert_eq!(Reader::new(&[0xff, 0x00]).varint(), None, "overlong");
        assert_eq!(Reader::new(&[0x80, 0x00]).varint(), None, "overlong");
        assert_eq!(Reader::new(&[0x80]).varint(), None, "truncated");
        let max = [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01];
        assert_eq!(Reader::new(&max).varint(), Some(u64::MAX));
        let over = [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02];
        assert_eq!(Reader::new(&over).varint(), None, "past 64 bits");
        assert_eq!(Reader::new(&[1, 2, 3]).uint(2), Some(0x0201));
        assert_eq!(Reader::new(&[1]).uint(0), Some(0));
        for w in 0..=4 {
            let b = [0x11, 0x22, 0x33, 0x44, 0x55];
            assert_eq!(Reader::new(&b).index(w), Reader::new(&b).uint(w), "width {w}");
            assert_eq!(Reader::new(&b[..w.saturating_sub(1)]).index(w).is_none(), w > 0);
        }
    }
}
