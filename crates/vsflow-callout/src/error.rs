//! The bridge's errors and their NTSTATUS values.

use core::fmt;

use fwps_sys::{
    NTSTATUS, STATUS_DATA_ERROR, STATUS_INSUFFICIENT_RESOURCES, STATUS_INVALID_DEVICE_STATE,
    STATUS_INVALID_PARAMETER, STATUS_NOT_FOUND, STATUS_REVISION_MISMATCH,
};
use vsflow_core::codec::{ApplyError, DecodeError};

/// A failure inside the bridge.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CalloutError {
    /// A core operation failed.
    Core(vsflow_core::Error),
    /// A restore blob was rejected.
    Decode(DecodeError),
    /// A decoded state could not be applied.
    Apply(ApplyError),
    /// A WFP or kernel call failed with this status.
    Status(NTSTATUS),
    /// The driver is not in a state that allows the operation.
    InvalidState,
    /// No such switch or port.
    NotFound,
}

impl CalloutError {
    /// The NTSTATUS reported to the OS.
    #[must_use]
    pub const fn to_ntstatus(self) -> NTSTATUS {
        match self {
            Self::Core(vsflow_core::Error::OutOfMemory)
            | Self::Decode(DecodeError::OutOfMemory)
            | Self::Apply(ApplyError::Core(vsflow_core::Error::OutOfMemory)) => {
                STATUS_INSUFFICIENT_RESOURCES
            }
            Self::Core(_) | Self::Apply(ApplyError::Core(_)) => STATUS_INVALID_PARAMETER,
            Self::Decode(DecodeError::UnsupportedMajor { .. }) => STATUS_REVISION_MISMATCH,
            Self::Decode(_) | Self::Apply(ApplyError::DuplicateFlow { .. }) => STATUS_DATA_ERROR,
            Self::Status(s) => s,
            Self::InvalidState => STATUS_INVALID_DEVICE_STATE,
            Self::NotFound => STATUS_NOT_FOUND,
        }
    }
}

impl From<vsflow_core::Error> for CalloutError {
    fn from(e: vsflow_core::Error) -> Self {
        Self::Core(e)
    }
}

impl From<DecodeError> for CalloutError {
    fn from(e: DecodeError) -> Self {
        Self::Decode(e)
    }
}

impl From<ApplyError> for CalloutError {
    fn from(e: ApplyError) -> Self {
        Self::Apply(e)
    }
}

impl From<hashbrown::TryReserveError> for CalloutError {
    fn from(_: hashbrown::TryReserveError) -> Self {
        Self::Core(vsflow_core::Error::OutOfMemory)
    }
}

impl From<alloc::collections::TryReserveError> for CalloutError {
    fn from(_: alloc::collections::TryReserveError) -> Self {
        Self::Core(vsflow_core::Error::OutOfMemory)
    }
}

impl fmt::Display for CalloutError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Core(e) => write!(f, "{e}"),
            Self::Decode(e) => write!(f, "runtime state rejected: {e}"),
            Self::Apply(e) => write!(f, "runtime state not applied: {e}"),
            Self::Status(s) => write!(f, "status {s:#010x}"),
            Self::InvalidState => f.write_str("driver not in a state that allows this"),
            Self::NotFound => f.write_str("no such switch or port"),
        }
    }
}
