//! Misuses of KMDF and the kernel that the double detects (on Windows: a bug check, a Driver
//! Verifier or KMDF Verifier break, or a leak). Statuses a DDI returns are not violations: the
//! DDI fails the way the framework fails it, and the driver must handle that.

use std::fmt;

/// A misuse by the driver under test.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Violation {
    /// A DDI called above its documented maximum IRQL.
    IrqlTooHigh {
        /// The DDI.
        call: &'static str,
        /// The IRQL it was called at.
        irql: u8,
        /// Its maximum.
        max: u8,
    },
    /// A handle that is not a live object of the expected type.
    BadHandle {
        /// The DDI.
        call: &'static str,
        /// The handle value.
        handle: usize,
        /// The expected WDF type.
        expected: &'static str,
    },
    /// A request completed twice, or completed after the driver gave it up.
    RequestCompletedTwice {
        /// The request.
        request: usize,
    },
    /// `Information` larger than the output buffer of a `METHOD_BUFFERED` request (the I/O
    /// manager would copy past the caller's buffer).
    InformationTooLarge {
        /// `Information`.
        information: u64,
        /// `OutputBufferLength`.
        output_len: usize,
    },
    /// A spin lock acquired while already held (a deadlock on Windows).
    SpinLockRecursion,
    /// A spin lock released while not held.
    SpinLockNotHeld,
    /// A call that waits for the caller's own callback (a deadlock on Windows).
    WaitForOwnCallback {
        /// The DDI.
        call: &'static str,
    },
    /// A malformed argument (UNICODE_STRING, format string, null out-pointer).
    BadArgument {
        /// The DDI.
        call: &'static str,
        /// What was wrong.
        what: String,
    },
    /// An ETW event written through a provider that is not registered.
    EtwNotRegistered,
    /// A callback returned at another IRQL than it was called at, or holding a spin lock or
    /// an `EX_SPIN_LOCK`.
    CallbackReturned {
        /// What.
        what: String,
    },
    /// Something left behind when the driver image unloads.
    LeftAtUnload {
        /// What.
        what: String,
    },
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self:?}")
    }
}
