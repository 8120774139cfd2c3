//! The stub's copy of the service's registry path.
//!
//! `WdfVersionUnbind` takes the registry path at unload, but the `UNICODE_STRING` the I/O
//! manager passes to the entry point is only valid during that call, so the stub keeps a copy
//! in the image, with no allocation. A service key name is at most 256 characters (fxldr.h
//! `MAX_SERVICE_NAME_LENGTH`) under `\REGISTRY\MACHINE\SYSTEM\<control set>\Services\`, which
//! [`CAPACITY`] holds with room to spare.

use wdk_sys::UNICODE_STRING;

/// UTF-16 units the copy holds.
pub const CAPACITY: usize = 512;

/// A registry path the copy refuses: malformed, or longer than [`CAPACITY`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BadPath;

/// A registry path held in the image.
#[derive(Debug)]
pub struct PathBuffer {
    units: [u16; CAPACITY],
    len: usize,
}

impl PathBuffer {
    /// An empty path.
    #[must_use]
    pub const fn new() -> Self {
        Self { units: [0; CAPACITY], len: 0 }
    }

    /// Copies `path` (its `Length` bytes).
    ///
    /// # Errors
    /// `path` is not a well-formed counted string (odd length, length above the maximum, a
    /// null buffer with a length) or is longer than [`CAPACITY`]; nothing is copied.
    ///
    /// # Safety
    /// `path.Buffer` is valid for `path.Length` bytes when non-null.
    pub unsafe fn set(&mut self, path: &UNICODE_STRING) -> Result<(), BadPath> {
        let bytes = usize::from(path.Length);
        if bytes % 2 != 0 || path.Length > path.MaximumLength || bytes / 2 > CAPACITY {
            return Err(BadPath);
        }
        if bytes == 0 {
            self.len = 0;
            return Ok(());
        }
        if path.Buffer.is_null() {
            return Err(BadPath);
        }
        // SAFETY: `Length` bytes of UTF-16 at `Buffer` (the caller's contract; checked non-null).
        let source = unsafe { core::slice::from_raw_parts(path.Buffer, bytes / 2) };
        let target = self.units.get_mut(..source.len()).ok_or(BadPath)?;
        target.copy_from_slice(source);
        self.len = source.len();
        Ok(())
    }

    /// The copy as a `UNICODE_STRING` over this buffer (valid while `self` is not moved).
    #[must_use]
    pub fn unicode(&mut self) -> UNICODE_STRING {
        #[allow(clippy::cast_possible_truncation, reason = "at most CAPACITY * 2 = 1024 bytes")]
        let bytes = (self.len * 2) as u16;
        UNICODE_STRING { Length: bytes, MaximumLength: bytes, Buffer: self.units.as_mut_ptr() }
    }
}

impl Default for PathBuffer {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use std::vec::Vec;

    use super::*;

    fn counted(units: &mut [u16], length: u16, maximum: u16) -> UNICODE_STRING {
        UNICODE_STRING { Length: length, MaximumLength: maximum, Buffer: units.as_mut_ptr() }
    }

    #[test]
    fn a_service_path_is_copied_and_read_back_as_a_counted_string() {
        let mut source: Vec<u16> =
            "\\REGISTRY\\MACHINE\\SYSTEM\\ControlSet001\\Services\\vsflow".encode_utf16().collect();
        let n = u16::try_from(source.len() * 2).unwrap();
        let mut copy = PathBuffer::new();
        // SAFETY: the buffer holds `n` bytes.
        assert_eq!(unsafe { copy.set(&counted(&mut source, n, n)) }, Ok(()));
        let back = copy.unicode();
        assert_eq!(back.Length, n);
        // SAFETY: the copy's buffer holds `Length` bytes.
        let units = unsafe { core::slice::from_raw_parts(back.Buffer, source.len()) };
        assert_eq!(units, source.as_slice());
    }

    #[test]
    fn malformed_or_too_long_paths_are_refused_and_nothing_is_copied() {
        let mut long = [0x41u16; CAPACITY + 1];
        let mut copy = PathBuffer::new();
        let bytes = u16::try_from(long.len() * 2).unwrap();
        let null = UNICODE_STRING { Length: 2, MaximumLength: 2, Buffer: core::ptr::null_mut() };
        let cases = [
            (counted(&mut long, bytes, bytes), "too long"),
            (counted(&mut long, 3, 4), "odd length"),
            (counted(&mut long, 8, 4), "Length > MaximumLength"),
            (null, "null buffer"),
        ];
        for (path, what) in cases {
            // SAFETY: each buffer holds the bytes its length says (or the call refuses first).
            assert_eq!(unsafe { copy.set(&path) }, Err(BadPath), "{what}");
        }
        assert_eq!(copy.unicode().Length, 0);
    }
}
