//! The message header and bounds-checked little-endian reading and writing.

use crate::error::ProtoError;

/// `"VSFP"` little-endian.
pub const MAGIC: u32 = u32::from_le_bytes(*b"VSFP");
/// The protocol version this build speaks (and writes).
///
/// 2: [`crate::Request::ReplaceRules`] carries the rule-set version the caller read, and the
/// driver refuses the replace when the rules changed since (no lost update). Version 1
/// requests are still understood, except a version 1 `ReplaceRules`, which cannot say what it
/// read and is refused with `STATUS_REVISION_MISMATCH`.
pub const PROTOCOL_VERSION: u16 = 2;
/// The oldest protocol version this build still reads.
pub const OLDEST_PROTOCOL_VERSION: u16 = 1;
/// Header size.
pub const HEADER_LEN: usize = 8;

/// The 8 bytes every request and response starts with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// Protocol version.
    pub version: u16,
    /// Flags (none defined: must be 0).
    pub flags: u16,
}

impl Header {
    /// This build's header.
    pub const CURRENT: Self = Self { version: PROTOCOL_VERSION, flags: 0 };

    /// Reads and checks a header.
    ///
    /// # Errors
    /// Truncated, bad magic, unsupported version, reserved flags.
    pub fn read(r: &mut Reader<'_>) -> Result<Self, ProtoError> {
        if r.u32()? != MAGIC {
            return Err(ProtoError::BadMagic);
        }
        let version = r.u16()?;
        let flags = r.u16()?;
        if !(OLDEST_PROTOCOL_VERSION..=PROTOCOL_VERSION).contains(&version) {
            return Err(ProtoError::UnsupportedVersion(version));
        }
        if flags != 0 {
            return Err(ProtoError::BadFlags(flags));
        }
        Ok(Self { version, flags })
    }

    /// Writes this header.
    pub fn write(&self, w: &mut Writer<'_>) {
        w.u32(MAGIC);
        w.u16(self.version);
        w.u16(self.flags);
    }
}

/// Reads a message; every read is bounds-checked.
#[derive(Debug)]
pub struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    /// Reads `bytes` from the start.
    #[must_use]
    pub const fn new(bytes: &'a [u8]) -> Self {
        Self { bytes, pos: 0 }
    }

    /// Takes `n` bytes.
    ///
    /// # Errors
    /// [`ProtoError::Truncated`].
    pub fn take(&mut self, n: usize) -> Result<&'a [u8], ProtoError> {
        let end = self
            .pos
            .checked_add(n)
            .ok_or(ProtoError::Truncated { needed: usize::MAX, got: self.bytes.len() })?;
        let s = self
            .bytes
            .get(self.pos..end)
            .ok_or(ProtoError::Truncated { needed: end, got: self.bytes.len() })?;
        self.pos = end;
        Ok(s)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], ProtoError> {
        let s = self.take(N)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }

    /// A `u8`.
    ///
    /// # Errors
    /// [`ProtoError::Truncated`].
    pub fn u8(&mut self) -> Result<u8, ProtoError> {
        Ok(self.array::<1>()?[0])
    }

    /// A little-endian `u16`.
    ///
    /// # Errors
    /// [`ProtoError::Truncated`].
    pub fn u16(&mut self) -> Result<u16, ProtoError> {
        self.array().map(u16::from_le_bytes)
    }

    /// A little-endian `u32`.
    ///
    /// # Errors
    /// [`ProtoError::Truncated`].
    pub fn u32(&mut self) -> Result<u32, ProtoError> {
        self.array().map(u32::from_le_bytes)
    }

    /// A little-endian `u64`.
    ///
    /// # Errors
    /// [`ProtoError::Truncated`].
    pub fn u64(&mut self) -> Result<u64, ProtoError> {
        self.array().map(u64::from_le_bytes)
    }

    /// 16 bytes.
    ///
    /// # Errors
    /// [`ProtoError::Truncated`].
    pub fn bytes16(&mut self) -> Result<[u8; 16], ProtoError> {
        self.array()
    }

    /// Succeeds only if every byte was read.
    ///
    /// # Errors
    /// [`ProtoError::TrailingBytes`].
    pub const fn finish(&self) -> Result<(), ProtoError> {
        if self.pos == self.bytes.len() { Ok(()) } else { Err(ProtoError::TrailingBytes) }
    }
}

/// Writes a message into a buffer the caller sized beforehand (writes past the end are
/// dropped and reported by [`Writer::overflowed`]).
#[derive(Debug)]
pub struct Writer<'a> {
    out: &'a mut [u8],
    pos: usize,
    overflow: bool,
}

impl<'a> Writer<'a> {
    /// Writes into `out` from the start.
    pub const fn new(out: &'a mut [u8]) -> Self {
        Self { out, pos: 0, overflow: false }
    }

    /// Appends bytes.
    pub fn bytes(&mut self, b: &[u8]) {
        match self.out.get_mut(self.pos..self.pos + b.len()) {
            Some(dst) => {
                dst.copy_from_slice(b);
                self.pos += b.len();
            }
            None => self.overflow = true,
        }
    }

    /// Appends a `u8`.
    pub fn u8(&mut self, v: u8) {
        self.bytes(&[v]);
    }

    /// Appends a little-endian `u16`.
    pub fn u16(&mut self, v: u16) {
        self.bytes(&v.to_le_bytes());
    }

    /// Appends a little-endian `u32`.
    pub fn u32(&mut self, v: u32) {
        self.bytes(&v.to_le_bytes());
    }

    /// Appends a little-endian `u64`.
    pub fn u64(&mut self, v: u64) {
        self.bytes(&v.to_le_bytes());
    }

    /// Bytes written.
    #[must_use]
    pub const fn len(&self) -> usize {
        self.pos
    }

    /// True if nothing was written.
    #[must_use]
    pub const fn is_empty(&self) -> bool {
        self.pos == 0
    }

    /// True if a write did not fit.
    #[must_use]
    pub const fn overflowed(&self) -> bool {
        self.overflow
    }
}

/// Checks that `out` can hold `needed` bytes.
///
/// # Errors
/// [`ProtoError::BufferTooSmall`] with the size needed.
pub const fn ensure(out: &[u8], needed: usize) -> Result<(), ProtoError> {
    if out.len() < needed { Err(ProtoError::BufferTooSmall { needed }) } else { Ok(()) }
}

/// `u32` from a `usize` count, saturating.
#[must_use]
pub fn count32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}
