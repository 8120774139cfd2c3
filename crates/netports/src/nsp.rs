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
//! - `install` / `uninstall`: add or remove the provider in both Winsock catalogs, the 64-bit
//!   one (`WSCInstallNameSpaceEx` / `WSCUnInstallNameSpace`) and the 32-bit one (the `...32`
//!   functions), administrator; each catalog is checked first, and an install that one catalog
//!   refuses is undone in the other;
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

/// A Winsock catalog.
///
/// On 64-bit Windows there are two: 64-bit processes read the native one
/// (`WSCInstallNameSpaceEx`, `WSCUnInstallNameSpace`, `WSAEnumNameSpaceProviders`), 32-bit
/// processes the WOW64 one (the `...32` functions). The provider goes into both.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Catalog {
    /// The 64-bit catalog.
    Native,
    /// The 32-bit catalog.
    Wow64,
}

impl Catalog {
    /// Both, in the order netports installs them.
    pub const BOTH: [Self; 2] = [Self::Native, Self::Wow64];

    /// `64-bit` / `32-bit`.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Self::Native => "64-bit",
            Self::Wow64 => "32-bit",
        }
    }
}

/// The Windows side of `netports nsp`.
pub trait NspHost {
    /// Hosts `provider` and advertises it; calls `ready` once serving; returns when
    /// interrupted, after unadvertising.
    ///
    /// # Errors
    /// Unsupported (Wine lacks `WSAAdvertiseProvider`), or Winsock's error.
    fn serve(&mut self, provider: Arc<Provider>, ready: &mut dyn FnMut()) -> Result<(), Error>;
    /// Whether `catalog` lists the provider.
    ///
    /// # Errors
    /// Unsupported, or the catalog cannot be read.
    fn installed(&mut self, catalog: Catalog) -> Result<bool, Error>;
    /// Adds the provider to `catalog` (no check: see [`install`]); returns a note for the
    /// user.
    ///
    /// # Errors
    /// Unsupported, or the Winsock code as [`install_error`] maps it.
    fn install(&mut self, catalog: Catalog) -> Result<String, Error>;
    /// Removes the provider from `catalog` (no check: see [`uninstall`]).
    ///
    /// # Errors
    /// Unsupported, or the Winsock code as [`install_error`] maps it.
    fn uninstall(&mut self, catalog: Catalog) -> Result<(), Error>;
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

/// What [`install`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Installed {
    /// The catalogs it was added to (the others had it already).
    pub catalogs: Vec<Catalog>,
    /// The host's notes, one per catalog added to.
    pub notes: Vec<String>,
}

/// Installs the provider in every catalog that lacks it, after checking them.
///
/// A second install is refused by netports, not left to Winsock's code. All or nothing: when one
/// catalog refuses, the catalogs changed by this call are restored.
///
/// # Errors
/// [`Error::AlreadyInstalled`] when both have it, or what [`NspHost::install`] returns.
pub fn install(host: &mut dyn NspHost) -> Result<Installed, Error> {
    let mut missing = Vec::new();
    for c in Catalog::BOTH {
        if !host.installed(c)? {
            missing.push(c);
        }
    }
    if missing.is_empty() {
        return Err(Error::AlreadyInstalled);
    }
    let mut done = Installed { catalogs: Vec::new(), notes: Vec::new() };
    for c in missing {
        match host.install(c) {
            Ok(note) => {
                done.catalogs.push(c);
                done.notes.push(note);
            }
            Err(e) => {
                for added in done.catalogs.iter().rev() {
                    let _ = host.uninstall(*added);
                }
                return Err(e);
            }
        }
    }
    Ok(done)
}

/// Uninstalls the provider from every catalog that lists it (a stub that reports success for
/// anything, as Wine's, cannot make a missing provider look removed).
///
/// # Errors
/// [`Error::Missing`] when no catalog lists it, or what [`NspHost::uninstall`] returns.
pub fn uninstall(host: &mut dyn NspHost) -> Result<Vec<Catalog>, Error> {
    let mut present = Vec::new();
    for c in Catalog::BOTH {
        if host.installed(c)? {
            present.push(c);
        }
    }
    if present.is_empty() {
        return Err(Error::Missing("the netports name provider is not installed".into()));
    }
    for c in &present {
        host.uninstall(*c)?;
    }
    Ok(present)
}

/// "Not installed", with what to do: `nsp serve` before `nsp install`.
#[must_use]
pub fn not_installed() -> Error {
    Error::Missing(
        "the netports name provider is not installed: run `netports nsp install` from an elevated prompt first".into(),
    )
}

/// The catalogs as words: `64-bit and 32-bit Winsock catalogs`, `32-bit Winsock catalog`.
#[must_use]
pub fn catalogs_text(catalogs: &[Catalog]) -> String {
    let names: Vec<&str> = catalogs.iter().map(|c| c.name()).collect();
    let plural = if catalogs.len() > 1 { "s" } else { "" };
    format!("{} Winsock catalog{plural}", names.join(" and "))
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
