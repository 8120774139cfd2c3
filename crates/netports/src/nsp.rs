//! The Winsock name provider (netports-nsp) hosted, installed and queried by netports.
//!
//! The [`NspHost`] trait the platform implements, and the rules around it that do not depend on
//! Windows (the catalog check before installing, the error each Winsock code means).
//!
//! Who can resolve names: the provider answers while `netports nsp serve` runs (it is hosted
//! in that process, which advertises it with `WSAAdvertiseProvider`). Microsoft documents the
//! application provider type only ("`ProviderType_Service` ... not currently supported"), and
//! an advertised application provider is reached by clients of the same user and logon
//! session as the hosting process. So: the user who runs `netports nsp serve`, in that session.
//! Other users, services and other sessions do not see it.
//!
//! Commands (`netports nsp ...`, in `cli::nsp`):
//! - `serve`: host the provider in this process and advertise it until interrupted;
//! - `install` / `uninstall`: add or remove the provider in the Winsock catalog
//!   (`WSCInstallNameSpaceEx` / `WSCUnInstallNameSpace`, administrator), the catalog checked
//!   first;
//! - `register NAME tcp|udp START COUNT` / `unregister NAME` / `names`: the names file, which
//!   the serving provider reads on every lookup (no restart needed);
//! - `resolve NAME`: ask Winsock, as any application would (`WSALookupServiceBegin` / `Next`
//!   / `End` with the provider's id).
//!
//! The names file is the user's own, `%LOCALAPPDATA%\netports\nsp-names.json` on Windows
//! (the provider serves that user's session only), or `--names-file`; it is used only where
//! nobody but the user, SYSTEM and Administrators can change it (`netports_nsp::guard`).
//! Registering, removing and listing names work on any system given `--names-file`.

use std::path::PathBuf;
use std::sync::Arc;

use netports_nsp::Provider;
use netports_nsp::provider::Sources;
use netports_nsp::reservation::Reservation;

use crate::error::{Error, win32};

/// `NAPI_PROVIDER_INSTALLATION_BLOB::dwProviderType` netports installs with:
/// `ProviderType_Application` (1), the one hosting type Microsoft documents as supported.
pub const PROVIDER_TYPE_APPLICATION: u32 = 1;

/// What `resolve` found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resolved {
    /// The name as answered.
    pub name: String,
    /// The comment.
    pub comment: String,
    /// The block, from the answer's blob.
    pub reservation: Option<Reservation>,
    /// The addresses (`local -> remote` per `CSADDR_INFO`).
    pub addresses: Vec<String>,
}

/// The Windows side of `netports nsp`.
pub trait NspHost {
    /// Hosts `provider` and advertises it; calls `ready` once serving; returns when
    /// interrupted, after unadvertising.
    ///
    /// # Errors
    /// Unsupported (Wine lacks `WSAAdvertiseProvider`), or Winsock's error.
    fn serve(&mut self, provider: Arc<Provider>, ready: &mut dyn FnMut()) -> Result<(), Error>;
    /// Whether the Winsock catalog lists the provider.
    ///
    /// # Errors
    /// Unsupported, or the catalog cannot be read.
    fn installed(&mut self) -> Result<bool, Error>;
    /// Adds the provider to the catalog (no check: see [`install`]); returns a note for the
    /// user.
    ///
    /// # Errors
    /// Unsupported, or the Winsock code as [`install_error`] maps it.
    fn install(&mut self) -> Result<String, Error>;
    /// Removes the provider from the catalog (no check: see [`uninstall`]).
    ///
    /// # Errors
    /// Unsupported, or the Winsock code as [`install_error`] maps it.
    fn uninstall(&mut self) -> Result<(), Error>;
    /// Resolves `name` through Winsock.
    ///
    /// # Errors
    /// Unsupported, not found, no data, Winsock's error.
    fn resolve(&mut self, name: &str) -> Result<Resolved, Error>;
    /// What the provider answers from (Teredo port, reservation lookup).
    fn sources(&self) -> Arc<dyn Sources>;
    /// The default names file: the current user's (`%LOCALAPPDATA%\netports\nsp-names.json`
    /// on Windows), never a machine-wide folder any user could create first.
    ///
    /// # Errors
    /// The user's folder cannot be found.
    fn names_file(&self) -> Result<PathBuf, Error>;
}

/// The error a Winsock catalog function's code means.
///
/// `WSAEACCES` and `WSANO_RECOVERY` (what a non-elevated caller gets) ask for an elevated
/// prompt. Every other code (`WSAEINVAL`: "one or more arguments are invalid") is reported as
/// it is: "installed already" is decided from the catalog before installing ([`install`]),
/// never guessed from a code.
#[must_use]
pub fn install_error(code: u32, function: &'static str) -> Error {
    match code {
        win32::WSAEACCES | win32::ACCESS_DENIED => Error::AccessDenied,
        win32::WSANO_RECOVERY => Error::CatalogRefused { function },
        c => Error::Os { code: c, function },
    }
}

/// Installs the provider after checking the catalog (a second install is refused by netports,
/// not left to Winsock's code).
///
/// # Errors
/// [`Error::AlreadyInstalled`], or what [`NspHost::install`] returns.
pub fn install(host: &mut dyn NspHost) -> Result<String, Error> {
    if host.installed()? {
        return Err(Error::AlreadyInstalled);
    }
    host.install()
}

/// Uninstalls the provider after checking the catalog (a stub that reports success for
/// anything, as Wine's, cannot make a missing provider look removed).
///
/// # Errors
/// [`Error::Missing`] when it is not installed, or what [`NspHost::uninstall`] returns.
pub fn uninstall(host: &mut dyn NspHost) -> Result<(), Error> {
    if !host.installed()? {
        return Err(Error::Missing("the netports name provider is not installed".into()));
    }
    host.uninstall()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn catalog_codes_map_to_clear_errors() {
        assert_eq!(
            install_error(11_003, "WSCInstallNameSpaceEx"),
            Error::CatalogRefused { function: "WSCInstallNameSpaceEx" }
        );
        assert_eq!(install_error(10_013, "WSCInstallNameSpaceEx"), Error::AccessDenied);
        // WSAEINVAL is documented as "one or more arguments are invalid": a bug in what
        // netports passes, never to be reported as "installed already" (the catalog is
        // checked before installing).
        assert_eq!(
            install_error(10_022, "WSCInstallNameSpaceEx"),
            Error::Os { code: 10_022, function: "WSCInstallNameSpaceEx" }
        );
        assert_eq!(
            install_error(10_022, "WSCUnInstallNameSpace"),
            Error::Os { code: 10_022, function: "WSCUnInstallNameSpace" }
        );
        assert_eq!(install_error(11_003, "x").exit_code(), 4);
        assert_eq!(Error::AlreadyInstalled.exit_code(), 5);
    }
}
