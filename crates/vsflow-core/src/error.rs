//! Errors of the core that are not about blob contents (those are [`crate::codec::DecodeError`]).

use core::fmt;

/// A failure of a core operation. The driver maps each to an NTSTATUS.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Error {
    /// A fallible allocation failed (`STATUS_INSUFFICIENT_RESOURCES`).
    OutOfMemory,
    /// A configuration value is outside its documented range (`STATUS_INVALID_PARAMETER`).
    InvalidConfig(&'static str),
    /// A rule set has more rules than [`crate::policy::MAX_RULES`] (`STATUS_INVALID_PARAMETER`).
    TooManyRules,
    /// A name is longer than the vSwitch allows (`STATUS_INVALID_PARAMETER`).
    NameTooLong,
    /// The blob would exceed the configured cap even with no flows (`STATUS_BUFFER_OVERFLOW`).
    CapTooSmall,
    /// A flow table is full and holds only flows an insert may not displace (established
    /// connections): the flow is not tracked (`STATUS_INSUFFICIENT_RESOURCES`).
    TableFull,
    /// A flow table had to grow for a new flow, the host's flow-memory budget refused the
    /// step and no flow could be reclaimed: the flow is not tracked
    /// (`STATUS_INSUFFICIENT_RESOURCES`).
    OverBudget,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::OutOfMemory => f.write_str("out of memory"),
            Self::InvalidConfig(what) => write!(f, "invalid configuration: {what}"),
            Self::TooManyRules => f.write_str("too many allow rules"),
            Self::NameTooLong => f.write_str("port name longer than 256 UTF-16 code units"),
            Self::CapTooSmall => f.write_str("runtime-state cap too small for the fixed records"),
            Self::TableFull => f.write_str("flow table full of established connections"),
            Self::OverBudget => f.write_str("host flow-memory budget exhausted"),
        }
    }
}

impl From<hashbrown::TryReserveError> for Error {
    fn from(_: hashbrown::TryReserveError) -> Self {
        Self::OutOfMemory
    }
}

impl From<alloc::collections::TryReserveError> for Error {
    fn from(_: alloc::collections::TryReserveError) -> Self {
        Self::OutOfMemory
    }
}
