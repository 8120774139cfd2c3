//! The Winsock error codes a namespace provider reports (windows-sys's values), and the
//! provider's error type.

use std::fmt;

use windows_sys::Win32::Networking::WinSock as ws;

/// `WSA_INVALID_HANDLE`: a lookup handle that is unknown, ended or run down.
pub const WSA_INVALID_HANDLE: i32 = ws::WSA_INVALID_HANDLE;
/// `WSA_NOT_ENOUGH_MEMORY`: also reported when a session or lookup limit is reached.
pub const WSA_NOT_ENOUGH_MEMORY: i32 = ws::WSA_NOT_ENOUGH_MEMORY;
/// `WSAEFAULT`: the results buffer is too small (the needed size is reported with it).
pub const WSAEFAULT: i32 = ws::WSAEFAULT;
/// `WSAEINVAL`: a malformed argument.
pub const WSAEINVAL: i32 = ws::WSAEINVAL;
/// `WSAEOPNOTSUPP`: behaviour the provider does not offer.
pub const WSAEOPNOTSUPP: i32 = ws::WSAEOPNOTSUPP;
/// `WSAEINVALIDPROVIDER`: a call meant for another provider.
pub const WSAEINVALIDPROVIDER: i32 = ws::WSAEINVALIDPROVIDER;
/// `WSASERVICE_NOT_FOUND`: the name is not known to this provider.
pub const WSASERVICE_NOT_FOUND: i32 = ws::WSASERVICE_NOT_FOUND;
/// `WSA_E_NO_MORE`: every result of the lookup has been returned.
pub const WSA_E_NO_MORE: i32 = ws::WSA_E_NO_MORE;
/// `WSA_E_CANCELLED`: `LookupServiceEnd` (or the session's rundown) ran during the call.
pub const WSA_E_CANCELLED: i32 = ws::WSA_E_CANCELLED;
/// `WSANO_RECOVERY`: an internal failure (a panic caught at the boundary, an I/O error).
pub const WSANO_RECOVERY: i32 = ws::WSANO_RECOVERY;
/// `WSANO_DATA`: the name is known but has no data now (Teredo client stopped, reservation
/// deleted).
pub const WSANO_DATA: i32 = ws::WSANO_DATA;
/// `SOCKET_ERROR`: what an `INT` entry point returns on failure (the code goes to
/// `WSASetLastError`).
pub const SOCKET_ERROR: i32 = ws::SOCKET_ERROR;

/// Why a provider call failed; [`WsaError::code`] is what Winsock receives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WsaError {
    /// The lookup handle is unknown, ended, run down, or belongs to another session.
    InvalidHandle,
    /// The client session is unknown or has been run down.
    InvalidSession,
    /// A session or lookup limit is reached.
    NoMemory,
    /// The results buffer is too small; `needed` bytes are required.
    Fault {
        /// The size to pass on the next call.
        needed: usize,
    },
    /// A malformed argument.
    Invalid,
    /// The call is for another provider or namespace.
    InvalidProvider,
    /// The name is not known.
    NotFound,
    /// The name is known but has no data now.
    NoData,
    /// No more results.
    NoMore,
    /// The lookup was ended while the call ran.
    Cancelled,
    /// Not offered by this provider.
    NotSupported,
    /// An internal failure.
    Internal,
}

impl WsaError {
    /// The Winsock error code.
    #[must_use]
    pub const fn code(self) -> i32 {
        match self {
            Self::InvalidHandle => WSA_INVALID_HANDLE,
            Self::NoMemory => WSA_NOT_ENOUGH_MEMORY,
            Self::Fault { .. } => WSAEFAULT,
            Self::Invalid | Self::InvalidSession => WSAEINVAL,
            Self::InvalidProvider => WSAEINVALIDPROVIDER,
            Self::NotFound => WSASERVICE_NOT_FOUND,
            Self::NoData => WSANO_DATA,
            Self::NoMore => WSA_E_NO_MORE,
            Self::Cancelled => WSA_E_CANCELLED,
            Self::NotSupported => WSAEOPNOTSUPP,
            Self::Internal => WSANO_RECOVERY,
        }
    }
}

impl fmt::Display for WsaError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::InvalidHandle => f.write_str("invalid lookup handle"),
            Self::InvalidSession => f.write_str("unknown client session"),
            Self::NoMemory => f.write_str("out of memory or over a session/lookup limit"),
            Self::Fault { needed } => write!(f, "buffer too small: {needed} bytes needed"),
            Self::Invalid => f.write_str("invalid argument"),
            Self::InvalidProvider => f.write_str("not this provider or namespace"),
            Self::NotFound => f.write_str("service name not found"),
            Self::NoData => f.write_str("the name is known but has no port now"),
            Self::NoMore => f.write_str("no more results"),
            Self::Cancelled => f.write_str("the lookup was ended during the call"),
            Self::NotSupported => f.write_str("not supported by this provider"),
            Self::Internal => f.write_str("internal failure"),
        }
    }
}

impl std::error::Error for WsaError {}
