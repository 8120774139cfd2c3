//! Protocol errors.

use core::fmt;

/// Why a request or response was rejected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProtoError {
    /// The IOCTL code is not one of vsflow's (`STATUS_INVALID_DEVICE_REQUEST`).
    UnknownIoctl(u32),
    /// The buffer is shorter than the message (`STATUS_INVALID_PARAMETER`).
    Truncated {
        /// Bytes needed.
        needed: usize,
        /// Bytes given.
        got: usize,
    },
    /// Bytes after the message (`STATUS_INVALID_PARAMETER`).
    TrailingBytes,
    /// Not `VSFP` (`STATUS_INVALID_PARAMETER`).
    BadMagic,
    /// A protocol version this side does not speak (`STATUS_REVISION_MISMATCH`).
    UnsupportedVersion(u16),
    /// Reserved flags set (`STATUS_INVALID_PARAMETER`).
    BadFlags(u16),
    /// A field outside its domain (`STATUS_INVALID_PARAMETER`).
    InvalidField(&'static str),
    /// The output buffer is too small (`STATUS_BUFFER_TOO_SMALL`).
    BufferTooSmall {
        /// Bytes needed.
        needed: usize,
    },
}

impl fmt::Display for ProtoError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::UnknownIoctl(c) => write!(f, "unknown IOCTL {c:#010x}"),
            Self::Truncated { needed, got } => {
                write!(f, "message truncated: {got} of {needed} bytes")
            }
            Self::TrailingBytes => f.write_str("unexpected bytes after the message"),
            Self::BadMagic => f.write_str("not a vsflow protocol message"),
            Self::UnsupportedVersion(v) => write!(f, "protocol version {v} not supported"),
            Self::BadFlags(x) => write!(f, "reserved flags {x:#06x} set"),
            Self::InvalidField(w) => write!(f, "invalid {w}"),
            Self::BufferTooSmall { needed } => {
                write!(f, "output buffer too small: {needed} bytes needed")
            }
        }
    }
}
