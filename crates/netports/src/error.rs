//! Errors, the Win32 codes they come from, and the one line a user reads.

use std::fmt;

/// Win32 and Winsock error codes the APIs return (windows-sys's definitions, as `u32`).
pub mod win32 {
    use windows_sys::Win32::Foundation as f;
    use windows_sys::Win32::Networking::WinSock as ws;

    /// `ERROR_ACCESS_DENIED`.
    pub const ACCESS_DENIED: u32 = f::ERROR_ACCESS_DENIED;
    /// `ERROR_INVALID_HANDLE`.
    pub const INVALID_HANDLE: u32 = f::ERROR_INVALID_HANDLE;
    /// `ERROR_NOT_ENOUGH_MEMORY`.
    pub const NOT_ENOUGH_MEMORY: u32 = f::ERROR_NOT_ENOUGH_MEMORY;
    /// `ERROR_NOT_READY`.
    pub const NOT_READY: u32 = f::ERROR_NOT_READY;
    /// `ERROR_SHARING_VIOLATION`.
    pub const SHARING_VIOLATION: u32 = f::ERROR_SHARING_VIOLATION;
    /// `ERROR_NOT_SUPPORTED`.
    pub const NOT_SUPPORTED: u32 = f::ERROR_NOT_SUPPORTED;
    /// `ERROR_INVALID_PARAMETER`.
    pub const INVALID_PARAMETER: u32 = f::ERROR_INVALID_PARAMETER;
    /// `ERROR_FILE_NOT_FOUND` (opening a device that does not exist).
    pub const FILE_NOT_FOUND: u32 = f::ERROR_FILE_NOT_FOUND;
    /// `ERROR_NOT_FOUND`.
    pub const NOT_FOUND: u32 = f::ERROR_NOT_FOUND;
    /// `ERROR_CALL_NOT_IMPLEMENTED` (also how netports reports a missing export through
    /// code-returning traits).
    pub const CALL_NOT_IMPLEMENTED: u32 = f::ERROR_CALL_NOT_IMPLEMENTED;
    /// `WSAEOPNOTSUPP` (a socket IOCTL this Winsock does not implement).
    pub const WSAEOPNOTSUPP: u32 = ws::WSAEOPNOTSUPP.cast_unsigned();
    /// `WSAEACCES`.
    pub const WSAEACCES: u32 = ws::WSAEACCES.cast_unsigned();
    /// `WSAEADDRINUSE`.
    pub const WSAEADDRINUSE: u32 = ws::WSAEADDRINUSE.cast_unsigned();
    /// `WSAENOBUFS`: no buffer space (resources), not a conflict.
    pub const WSAENOBUFS: u32 = ws::WSAENOBUFS.cast_unsigned();
    /// `WSANO_RECOVERY`: a non-recoverable error (the catalog refused the change).
    pub const WSANO_RECOVERY: u32 = ws::WSANO_RECOVERY.cast_unsigned();
}

/// A netports failure.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Error {
    /// The function is not available on this system (not Windows, or the export is missing,
    /// as on Wine and trimmed editions).
    Unsupported {
        /// What is missing.
        what: String,
    },
    /// Not elevated.
    AccessDenied,
    /// The block overlaps a reservation, or a port in it is in use.
    Conflict,
    /// A runtime-reservation IOCTL was refused with `WSAEACCES`: the ports are excluded or
    /// reserved for another use (elevation does not change that).
    Forbidden {
        /// The IOCTL.
        function: &'static str,
    },
    /// The name provider is in the Winsock catalog already.
    AlreadyInstalled,
    /// The Winsock catalog refused the change with `WSANO_RECOVERY` (what a non-elevated
    /// install gets).
    CatalogRefused {
        /// The function.
        function: &'static str,
    },
    /// The rules changed between reading and replacing them (someone else edited them).
    RulesChanged {
        /// The version the edit was based on.
        read: u32,
    },
    /// No such reservation.
    NotFound,
    /// The Teredo client is not started.
    NotReady,
    /// No IPv6 stack (Teredo needs one).
    NoIpv6,
    /// Start 0, count 0, or a block past port 65535: rejected before calling Windows.
    InvalidRange {
        /// Why.
        why: &'static str,
    },
    /// Something named is not there (a service name, the installed provider).
    Missing(String),
    /// A file or folder other users can change, refused (the names file's guard).
    Untrusted(String),
    /// A name is known but has no port now (Teredo client stopped, reservation deleted).
    NoData,
    /// A malformed argument other than a port block (a service name, say).
    Invalid(String),
    /// The vsflow driver is not installed or not running.
    DriverNotInstalled,
    /// The driver answered with an error status.
    Driver {
        /// NTSTATUS.
        status: i32,
    },
    /// A malformed answer or input.
    Protocol(String),
    /// The command reported its answer itself; only the exit code is left to give.
    Reported(u8),
    /// The Base Filtering Engine stopped (why): every WFP handle, filter and subscription of
    /// this process went with it.
    BfeStopped(String),
    /// Any other OS error.
    Os {
        /// Win32 error code.
        code: u32,
        /// The function that failed.
        function: &'static str,
    },
}

impl Error {
    /// Maps a Win32 (or Winsock) error of a reservation, Teredo or socket function.
    ///
    /// `ERROR_NOT_READY` and `ERROR_NOT_SUPPORTED` mean "Teredo client not started" and "no
    /// IPv6 stack" only for the Teredo functions, which document them so; elsewhere
    /// `ERROR_NOT_SUPPORTED` is plain "unsupported".
    #[must_use]
    pub fn from_win32(code: u32, function: &'static str) -> Self {
        let teredo = function.contains("Teredo");
        match code {
            win32::ACCESS_DENIED | win32::WSAEACCES => Self::AccessDenied,
            win32::SHARING_VIOLATION => Self::Conflict,
            win32::NOT_FOUND => Self::NotFound,
            win32::NOT_READY if teredo => Self::NotReady,
            win32::NOT_SUPPORTED if teredo => Self::NoIpv6,
            win32::NOT_SUPPORTED | win32::CALL_NOT_IMPLEMENTED | win32::WSAEOPNOTSUPP => {
                Self::Unsupported {
                    what: format!(
                        "{function} is not available on this system (Wine, or a trimmed Windows edition)"
                    ),
                }
            }
            _ => Self::Os { code, function },
        }
    }

    /// The process exit code for this error (documented in the CLI help and README).
    #[must_use]
    pub const fn exit_code(&self) -> u8 {
        match self {
            Self::Unsupported { .. } | Self::NoIpv6 => 3,
            Self::AccessDenied | Self::CatalogRefused { .. } | Self::Untrusted(_) => 4,
            Self::Conflict
            | Self::Forbidden { .. }
            | Self::AlreadyInstalled
            | Self::RulesChanged { .. } => 5,
            Self::NotFound | Self::NotReady | Self::NoData | Self::Missing(_) => 6,
            Self::DriverNotInstalled => 7,
            Self::InvalidRange { .. } | Self::Invalid(_) => 2,
            Self::Driver { .. } | Self::Protocol(_) | Self::Os { .. } | Self::BfeStopped(_) => 1,
            Self::Reported(code) => *code,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Unsupported { what } => f.write_str(what),
            Self::AccessDenied => f.write_str("access denied: run from an elevated prompt (Run as administrator), or give the program a requireAdministrator manifest"),
            Self::Conflict => f.write_str("conflict: the block overlaps an existing reservation or a port in it is in use; choose another block (see `netports list` and `netports why-blocked PORT`)"),
            Self::NotFound => f.write_str("not found: no reservation with exactly this start and count (see `netports list`)"),
            Self::NotReady => f.write_str("the Teredo client is not started (it starts with IPv6 connectivity needs; `netsh interface teredo show state`)"),
            Self::NoIpv6 => f.write_str("no IPv6 stack on this host: Teredo is unavailable"),
            Self::Forbidden { function } => write!(f, "{function} was refused (WSAEACCES): the ports are excluded or reserved for another use (see `netports list` and `netports why-blocked PORT`); running elevated does not change that"),
            Self::AlreadyInstalled => f.write_str("the netports name provider is installed already (`netports nsp uninstall` first)"),
            Self::CatalogRefused { function } => write!(f, "{function}: the Winsock catalog refused the change (WSANO_RECOVERY): changing the catalog needs an elevated prompt (Run as administrator)"),
            Self::RulesChanged { read } => write!(f, "the port's rules changed since they were read (version {read}): someone else edited them; nothing was replaced, run the command again"),
            Self::InvalidRange { why } => write!(f, "invalid port block: {why}"),
            Self::Invalid(why) | Self::Missing(why) | Self::Untrusted(why) => f.write_str(why),
            Self::NoData => f.write_str("the name is known but has no port now (the Teredo client is stopped, or the reservation was deleted)"),
            Self::DriverNotInstalled => f.write_str("the vsflow driver is not installed or not running (`sc query vsflow`; install with docs/INSTALL.md)"),
            Self::Driver { status } => write!(f, "the driver refused the request: NTSTATUS {status:#010x}"),
            Self::Protocol(why) => write!(f, "unexpected answer: {why}"),
            Self::Os { code, function } => match wfp_error(*code) {
                Some((name, meaning)) => {
                    write!(f, "{function} failed with {code:#010x} ({name}: {meaning})")
                }
                None if *code >= 0x8000_0000 => write!(f, "{function} failed with {code:#010x}"),
                None => write!(f, "{function} failed with Windows error {code}"),
            },
            Self::Reported(code) => write!(f, "exit code {code}"),
            Self::BfeStopped(why) => write!(f, "the Base Filtering Engine (BFE) stopped ({why}): Windows dropped netports' WFP filters and subscriptions with it; run the command again once BFE runs (`sc query bfe`)"),
        }
    }
}

impl std::error::Error for Error {}

/// The name and meaning (WFP Error Codes) of the `FWP_E_*` codes netports can meet.
#[must_use]
pub fn wfp_error(code: u32) -> Option<(&'static str, &'static str)> {
    use windows_sys::Win32::Foundation as f;
    let table: [(i32, &str, &str); 24] = [
        (f::FWP_E_FILTER_NOT_FOUND, "FWP_E_FILTER_NOT_FOUND", "the filter does not exist"),
        (f::FWP_E_LAYER_NOT_FOUND, "FWP_E_LAYER_NOT_FOUND", "the layer does not exist"),
        (f::FWP_E_PROVIDER_NOT_FOUND, "FWP_E_PROVIDER_NOT_FOUND", "the provider does not exist"),
        (f::FWP_E_SUBLAYER_NOT_FOUND, "FWP_E_SUBLAYER_NOT_FOUND", "the sub-layer does not exist"),
        (f::FWP_E_NOT_FOUND, "FWP_E_NOT_FOUND", "the object does not exist"),
        (
            f::FWP_E_ALREADY_EXISTS,
            "FWP_E_ALREADY_EXISTS",
            "an object with that GUID or LUID already exists",
        ),
        (
            f::FWP_E_IN_USE,
            "FWP_E_IN_USE",
            "the object is referenced by other objects, so it cannot be deleted",
        ),
        (
            f::FWP_E_DYNAMIC_SESSION_IN_PROGRESS,
            "FWP_E_DYNAMIC_SESSION_IN_PROGRESS",
            "the call is not allowed from within a dynamic session",
        ),
        (f::FWP_E_WRONG_SESSION, "FWP_E_WRONG_SESSION", "the call was made from the wrong session"),
        (
            f::FWP_E_NO_TXN_IN_PROGRESS,
            "FWP_E_NO_TXN_IN_PROGRESS",
            "the call must be made from within an explicit transaction",
        ),
        (
            f::FWP_E_TXN_IN_PROGRESS,
            "FWP_E_TXN_IN_PROGRESS",
            "the call is not allowed from within an explicit transaction",
        ),
        (
            f::FWP_E_TXN_ABORTED,
            "FWP_E_TXN_ABORTED",
            "the explicit transaction has been forcibly cancelled",
        ),
        (f::FWP_E_SESSION_ABORTED, "FWP_E_SESSION_ABORTED", "the session has been cancelled"),
        (
            f::FWP_E_INCOMPATIBLE_TXN,
            "FWP_E_INCOMPATIBLE_TXN",
            "the call is not allowed from within a read-only transaction",
        ),
        (
            f::FWP_E_TIMEOUT,
            "FWP_E_TIMEOUT",
            "the call timed out while waiting to acquire the transaction lock",
        ),
        (
            f::FWP_E_LIFETIME_MISMATCH,
            "FWP_E_LIFETIME_MISMATCH",
            "the call tried to associate two objects with incompatible lifetimes",
        ),
        (
            f::FWP_E_BUILTIN_OBJECT,
            "FWP_E_BUILTIN_OBJECT",
            "the object is built in, so it cannot be deleted",
        ),
        (f::FWP_E_NULL_POINTER, "FWP_E_NULL_POINTER", "a required pointer is null"),
        (f::FWP_E_INVALID_ENUMERATOR, "FWP_E_INVALID_ENUMERATOR", "an enumerator is not valid"),
        (
            f::FWP_E_INVALID_FLAGS,
            "FWP_E_INVALID_FLAGS",
            "the flags field contains an invalid value",
        ),
        (
            f::FWP_E_TYPE_MISMATCH,
            "FWP_E_TYPE_MISMATCH",
            "the data type does not match the expected type",
        ),
        (f::FWP_E_INVALID_PARAMETER, "FWP_E_INVALID_PARAMETER", "the parameter is incorrect"),
        (
            f::FWP_E_INCOMPATIBLE_LAYER,
            "FWP_E_INCOMPATIBLE_LAYER",
            "the operation is not supported by the specified layer",
        ),
        (
            f::FWP_E_DUPLICATE_CONDITION,
            "FWP_E_DUPLICATE_CONDITION",
            "a filter condition contains a duplicate",
        ),
    ];
    table
        .iter()
        .find(|(c, _, _)| c.cast_unsigned() == code)
        .map(|(_, name, meaning)| (*name, *meaning))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documented_codes_map_to_typed_errors_with_advice() {
        assert_eq!(Error::from_win32(5, "x"), Error::AccessDenied);
        assert_eq!(Error::from_win32(32, "x"), Error::Conflict);
        assert_eq!(Error::from_win32(1168, "x"), Error::NotFound);
        assert_eq!(Error::from_win32(21, "GetTeredoPort"), Error::NotReady);
        assert_eq!(Error::from_win32(50, "GetTeredoPort"), Error::NoIpv6);
        assert!(matches!(Error::from_win32(50, "WSAIoctl"), Error::Unsupported { .. }));
        assert_eq!(Error::from_win32(21, "f"), Error::Os { code: 21, function: "f" });
        assert!(matches!(
            Error::from_win32(10_045, "SIO_ACQUIRE_PORT_RESERVATION"),
            Error::Unsupported { .. }
        ));
        assert_eq!(Error::from_win32(10_013, "bind"), Error::AccessDenied);
        assert_eq!(Error::from_win32(1234, "f"), Error::Os { code: 1234, function: "f" });
        assert!(Error::AccessDenied.to_string().contains("elevated"));
        assert!(Error::DriverNotInstalled.to_string().contains("sc query vsflow"));
        assert_eq!(Error::AccessDenied.exit_code(), 4);
        assert_eq!(Error::Unsupported { what: "x".into() }.exit_code(), 3);
        assert_eq!(Error::NoIpv6.exit_code(), 3, "no IPv6 stack: not available on this system");
        let forbidden = Error::Forbidden { function: "SIO_ACQUIRE_PORT_RESERVATION" };
        assert!(
            !forbidden.to_string().contains("run from an elevated"),
            "WSAEACCES on a reservation is not about elevation"
        );
        assert_eq!(forbidden.exit_code(), 5);
        assert_eq!(Error::CatalogRefused { function: "WSCInstallNameSpaceEx" }.exit_code(), 4);
        assert!(
            Error::CatalogRefused { function: "WSCInstallNameSpaceEx" }
                .to_string()
                .contains("WSANO_RECOVERY")
        );
    }
}
