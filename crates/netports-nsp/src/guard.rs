//! Who may change the names file: the guard every [`Store`](crate::store::Store) consults.
//!
//! Every user's `netports nsp serve` answers from its names file, so anyone who can write the
//! file, replace it in its folder, or plant the temporary file a writer uses would decide where
//! a name points. The guard makes the store refuse such a file:
//! - a folder or file is trusted only if it is owned by the current user, SYSTEM or
//!   Administrators (root on Unix) and nobody else has a right that changes it or what is in
//!   it ([`sddl::check`] on Windows, the mode bits on Unix); the folder is checked before every
//!   read and every write, the file whenever it exists;
//! - what is checked is what is used: the folder and the file are opened first ([`open`]),
//!   never through a link at their own name (a symbolic link, or on Windows any reparse point
//!   such as a junction: `FILE_FLAG_OPEN_REPARSE_POINT`, then `FILE_ATTRIBUTE_REPARSE_POINT`
//!   refused), and the guard decides on the opened handle (`GetSecurityInfo` on Windows,
//!   `fstat` on Unix); the file's bytes are read from that same handle. Checking a path and
//!   then opening it again would let anyone who can replace the folder (its parent is theirs,
//!   or it is a link they own) swap it in between;
//! - the folders above the names folder are the user's choice and are not checked: someone
//!   who can replace one of them can make a write land in another folder, but never make
//!   netports read a file they can change, because the file itself is checked by its handle;
//! - on Windows the folder's handle is held without `FILE_SHARE_DELETE` while a change is
//!   written, so the folder cannot be renamed or deleted meanwhile;
//! - a missing folder is created for its owner only ([`sddl::protected_folder`]; mode 0700);
//! - the temporary file of a write is opened create-new under a name with a random part
//!   ([`Guard::nonce`]), so nothing planted there in advance is ever written through.
//!
//! The default store is per user (`%LOCALAPPDATA%\netports`, where only the user, SYSTEM and
//! Administrators can write), not `%ProgramData%`, where any user may create folders ("Users:
//! create files / append data" on its default DACL) and then owns them.
//!
//! Sources: "Security Descriptor String Format" and "ACE Strings" (SDDL), "File Security and
//! Access Rights", `GetSecurityInfo`, `ConvertSecurityDescriptorToStringSecurityDescriptorW`,
//! `CreateFileW` (`CREATE_NEW`, `FILE_FLAG_OPEN_REPARSE_POINT`, `FILE_FLAG_BACKUP_SEMANTICS`,
//! share modes), "Reparse Points", `BCryptGenRandom` (Microsoft Learn); `open(2)`
//! (`O_NOFOLLOW`: "If the trailing component ... is a symbolic link, then the open fails").

pub mod sddl;
#[cfg(unix)]
mod unix;
#[cfg(windows)]
mod windows;

use std::fmt;
use std::fs::File;
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

/// The operating system's view of who may change a folder or file.
pub trait Guard: Send + Sync + fmt::Debug {
    /// `Ok` when only the current user, SYSTEM or Administrators (root) can change the folder
    /// or file `opened` (opened by [`open`]: the decision is about that object, whatever its
    /// path names by now); otherwise why not.
    ///
    /// # Errors
    /// The reason it is not trusted (also when its security cannot be read, or it is not a
    /// folder, respectively a file).
    fn check(&self, opened: &File, kind: Kind) -> Result<(), String>;

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

/// Why [`open`] gave no handle.
#[derive(Debug)]
pub enum OpenError {
    /// Nothing is there.
    Missing,
    /// A symbolic link (or, on Windows, another reparse point such as a junction) is there:
    /// whoever made it can point it elsewhere at any moment, so it is never used.
    Link,
    /// Another error.
    Io(io::Error),
}

/// Opens the folder or file at `path` for the guard's check and for use, without following a
/// link at `path` itself (folders above it are followed).
///
/// # Errors
/// [`OpenError`].
pub fn open(path: &Path, kind: Kind) -> Result<File, OpenError> {
    #[cfg(unix)]
    return unix::open(path, kind);
    #[cfg(windows)]
    return windows::open(path, kind);
    #[cfg(not(any(unix, windows)))]
    return {
        let _ = (path, kind);
        Err(OpenError::Io(io::Error::from(io::ErrorKind::Unsupported)))
    };
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
    fn check(&self, _: &File, _: Kind) -> Result<(), String> {
        Err("this system has no way to tell who may change it".into())
    }
    fn create_folder(&self, _: &Path) -> io::Result<()> {
        Err(io::Error::from(io::ErrorKind::Unsupported))
    }
    fn nonce(&self) -> io::Result<u64> {
        Err(io::Error::from(io::ErrorKind::Unsupported))
    }
}
