//! Codec errors. Each says precisely what is wrong and where, for `vsflow-sim blob inspect`
//! and the driver's trace log.

use core::fmt;

use crate::error::Error;

/// Why a blob was rejected. Nothing was changed when one is returned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DecodeError {
    /// Shorter than the smallest possible blob.
    TooShort {
        /// Bytes given.
        len: usize,
    },
    /// Longer than the configured maximum.
    TooLong {
        /// Bytes given.
        len: usize,
        /// Maximum accepted.
        max: usize,
    },
    /// The first four bytes are not `VSFL`.
    BadMagic {
        /// The bytes found.
        found: [u8; 4],
    },
    /// The header's total length disagrees with the bytes given (truncated or padded).
    LengthMismatch {
        /// Length the header declares.
        declared: u32,
        /// Bytes given.
        actual: usize,
    },
    /// The CRC-32C trailer does not match the contents.
    BadChecksum {
        /// CRC stored in the blob.
        stored: u32,
        /// CRC of the contents.
        computed: u32,
    },
    /// The format major version is not one this build reads (strict mode).
    UnsupportedMajor {
        /// Major version found.
        major: u16,
        /// Minor version found.
        minor: u16,
    },
    /// Header flags this build does not define are set.
    UnknownFlags {
        /// The flags.
        flags: u16,
    },
    /// The declared header length is below 1.0's or runs past the blob.
    BadHeaderLength {
        /// Declared length.
        len: u16,
    },
    /// The blob was saved by another provider.
    ProviderMismatch,
    /// The port identity is longer than 256 code units or runs past the blob.
    BadIdentity {
        /// Declared code units.
        units: u16,
    },
    /// A record header or payload runs past the end of the records area.
    RecordOverrun {
        /// Index of the record.
        index: u32,
        /// Its byte offset.
        offset: usize,
    },
    /// Bytes remain after the declared number of records.
    TrailingBytes {
        /// Offset of the first unexpected byte.
        offset: usize,
    },
    /// A known record type appears twice.
    DuplicateRecord {
        /// The record type.
        kind: u16,
    },
    /// A required record type is absent.
    MissingRecord {
        /// The record type.
        kind: u16,
    },
    /// A known record's payload has the wrong size for its contents.
    BadRecordLength {
        /// The record type.
        kind: u16,
        /// Its payload length.
        len: u32,
    },
    /// An entry length is smaller than this version's entries.
    BadEntryLength {
        /// The record type.
        kind: u16,
        /// The declared entry length.
        len: u16,
    },
    /// More rules than allowed.
    TooManyRules {
        /// Rules declared.
        count: u16,
    },
    /// A field holds a value outside its domain.
    InvalidField {
        /// The record type.
        kind: u16,
        /// Entry index within the record (0 for single-value records).
        entry: u32,
        /// The field's name.
        field: &'static str,
        /// The value found (widened).
        value: u64,
    },
    /// Save information disagrees with the header flags.
    InconsistentSaveInfo,
    /// Out of memory while building the decoded state.
    OutOfMemory,
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::TooShort { len } => write!(f, "blob is {len} bytes, shorter than any valid blob"),
            Self::TooLong { len, max } => {
                write!(f, "blob is {len} bytes, over the {max}-byte maximum")
            }
            Self::BadMagic { found } => write!(f, "bad magic {found:02x?}, expected \"VSFL\""),
            Self::LengthMismatch { declared, actual } => write!(
                f,
                "header declares {declared} bytes but {actual} were given (truncated or padded)"
            ),
            Self::BadChecksum { stored, computed } => write!(
                f,
                "CRC-32C mismatch: stored {stored:#010x}, computed {computed:#010x} (blob damaged)"
            ),
            Self::UnsupportedMajor { major, minor } => {
                write!(f, "format {major}.{minor} is not readable by this build (reads 1.x)")
            }
            Self::UnknownFlags { flags } => write!(f, "unknown header flags {flags:#06x}"),
            Self::BadHeaderLength { len } => write!(f, "bad header length {len}"),
            Self::ProviderMismatch => f.write_str("blob was saved by another provider GUID"),
            Self::BadIdentity { units } => write!(f, "bad port identity length {units} code units"),
            Self::RecordOverrun { index, offset } => {
                write!(f, "record {index} at offset {offset} runs past the end")
            }
            Self::TrailingBytes { offset } => {
                write!(f, "unexpected bytes after the last record at offset {offset}")
            }
            Self::DuplicateRecord { kind } => write!(f, "record type {kind} appears twice"),
            Self::MissingRecord { kind } => write!(f, "required record type {kind} is missing"),
            Self::BadRecordLength { kind, len } => {
                write!(
                    f,
                    "record type {kind} has a {len}-byte payload that does not fit its contents"
                )
            }
            Self::BadEntryLength { kind, len } => {
                write!(
                    f,
                    "record type {kind} declares {len}-byte entries, shorter than this version's"
                )
            }
            Self::TooManyRules { count } => write!(f, "{count} allow rules, over the limit of 256"),
            Self::InvalidField { kind, entry, field, value } => {
                write!(f, "record type {kind}, entry {entry}: invalid {field} value {value}")
            }
            Self::InconsistentSaveInfo => {
                f.write_str("save information disagrees with header flags")
            }
            Self::OutOfMemory => f.write_str("out of memory"),
        }
    }
}

/// Why [`crate::codec::apply`] failed. The port was not changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ApplyError {
    /// Two saved flows have the same key. No longer returned by the apply (since faults s7 a
    /// key carried twice restores neither record and the rest: `codec::Staged::finish`); kept
    /// for callers that match on it.
    DuplicateFlow {
        /// Index of the second occurrence in the state's flow list.
        index: usize,
    },
    /// A core operation failed (out of memory, too many rules).
    Core(Error),
}

impl From<Error> for ApplyError {
    fn from(e: Error) -> Self {
        Self::Core(e)
    }
}

impl fmt::Display for ApplyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::DuplicateFlow { index } => {
                write!(f, "saved flow {index} duplicates an earlier flow")
            }
            Self::Core(e) => write!(f, "{e}"),
        }
    }
}
