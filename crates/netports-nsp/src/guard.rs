//! Who may change the names file: the guard every [`Store`](crate::store::Store) consults.
//!
//! Every user's `netports nsp serve` answers from its names file, so anyone who can write the
//! file, replace it in its folder, or plant the temporary file a writer uses would decide where
//! a name points. The guard makes the store refuse such a file:
//! - a folder or file is trusted only if it is owned by the current user, SYSTEM or
//!   Administrators (root on Unix) and nobody else has a right that changes it or what is in
//!   it ([`sddl::check`] on Windows, the mode bits on Unix); the folder is checked before every
//!   read and every write, the file whenever it exists;
//! - a missing folder is created for its owner only ([`sddl::protected_folder`]; mode 0700);
//! - the temporary file of a write is opened create-new under a name with a random part
//!   ([`Guard::nonce`]), so nothing planted there in advance is ever written through.
//!
//! The default store is per user (`%LOCALAPPDATA%\netports`, where only the user, SYSTEM and
//! Administrators can write), not `%ProgramData%`, where any user may create folders ("Users:
//! create files / append data" on its default DACL) and then owns them.
//!
//! Sources: "Security Descriptor String Format" and "ACE Strings" (SDDL), "File Security and
//! Access Rights", `GetNamedSecurityInfoW`, `ConvertSecurityDescriptorToStringSecurityDescriptorW`,
//! `CreateFileW` (`CREATE_NEW`), `BCryptGenRandom` (Microsoft Learn).

pub mod sddl;
#[cfg(unix)]
mod unix;
#[cfg(windows)]
mod windows;

use std::fmt;
use std::io;
use std::path::Path;
use std::sync::Arc;

/// What is checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// The folder holding the names file.
    Folder,
    /// The names file itself.
    File,
}

/// The operating system's view of who may change a path.
pub trait Guard: Send + Sync + fmt::Debug {
    /// `Ok` when only the current user, SYSTEM or Administrators (root) can change `path`;
    /// otherwise why not.
    ///
    /// # Errors
    /// The reason the path is not trusted (also when its security cannot be read).
    fn check(&self, path: &Path, kind: Kind) -> Result<(), String>;

    /// Creates the folder `dir` (its parent exists) so that only the current user, SYSTEM and
    /// Administrators can change it.
    ///
    /// # Errors
    /// The OS error (`AlreadyExists` when something is there: it is then checked).
    fn create_folder(&self, dir: &Path) -> io::Result<()>;

    /// An unpredictable 64-bit value (the random part of a temporary file's name).
    ///
    /// # Errors
    /// The system's random number generator failed.
    fn nonce(&self) -> io::Result<u64>;
}

/// The guard of this operating system.
#[must_use]
pub fn os() -> Arc<dyn Guard> {
    #[cfg(unix)]
    return Arc::new(unix::UnixGuard);
    #[cfg(windows)]
    return Arc::new(windows::WindowsGuard::default());
    #[cfg(not(any(unix, windows)))]
    return Arc::new(Refuse);
}

/// A guard for systems without one: trusts nothing.
#[derive(Debug, Default)]
pub struct Refuse;

impl Guard for Refuse {
    fn check(&self, _: &Path, _: Kind) -> Result<(), String> {
        Err("this system has no way to tell who may change it".into())
    }
    fn create_folder(&self, _: &Path) -> io::Result<()> {
        Err(io::Error::from(io::ErrorKind::Unsupported))
    }
    fn nonce(&self) -> io::Result<u64> {
        Err(io::Error::from(io::ErrorKind::Unsupported))
    }
}
