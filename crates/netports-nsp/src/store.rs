//! Name registrations on disk: a small JSON file, written atomically, never silently replaced,
//! and never taken from a place another user can change.
//!
//! ```json
//! {"format":"netports-nsp-names","version":1,"names":[{"name":"web","protocol":"tcp","start":50000,"count":10}]}
//! ```
//!
//! - Its folder, and the file when it exists, are checked by the [`Guard`] before every read
//!   and every write: owned by the current user, SYSTEM or Administrators (root), and nobody
//!   else may change them. Anything else is [`StoreError::Untrusted`] and is neither read nor
//!   written (issue 19: a names file another user controls decides where every name points).
//!   Each is opened first, never through a link at its own name, the guard decides on the
//!   opened handle, and the bytes are read from the checked handle ([`guard::open`]): what is
//!   checked is what is used. A missing folder is created for its owner only.
//! - Every change takes an exclusive lock on `<file>.lock` (`File::lock`: `LockFileEx` on
//!   Windows, `flock` elsewhere), reads the current file, changes it, writes a new temporary
//!   file `<file>.<random>.tmp` opened create-new (so nothing planted in advance is written
//!   through), flushes it to disk and renames it over the file, so a crash leaves the old or
//!   the new file, never a mix, and two writers (the provider and the CLI) never lose each
//!   other's change. Readers take no lock: the rename is atomic.
//! - A missing file is an empty set. A file that cannot be read as a valid set (bad JSON,
//!   unknown version, an invalid or duplicate name) is *corrupt*: it is reported with the
//!   reason, left exactly as it is, and every change is refused until an operator moves it
//!   aside. The provider keeps answering `teredo`.
//! - Tokens of reservations are never stored (they change at reboot); only the block is.

use std::collections::BTreeMap;
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::guard::{self, Guard, Kind};
use crate::name::ServiceName;
use crate::reservation::{Reservation, Transport};

/// The `format` field.
pub const FORMAT: &str = "netports-nsp-names";
/// The `version` field this code reads and writes.
pub const VERSION: u32 = 1;
/// The most names a file may hold (a bound on what a client can make the provider store).
pub const MAX_NAMES: usize = 4096;

/// The registered names.
pub type Names = BTreeMap<ServiceName, Reservation>;

/// Why the store cannot do what was asked.
#[derive(Debug)]
pub enum StoreError {
    /// Reading, writing or locking failed.
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        error: io::Error,
    },
    /// The file exists but is not a valid set of names; it was left untouched.
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        why: String,
    },
    /// `teredo` is built in and cannot be registered or removed.
    Reserved,
    /// The name is not registered.
    NotRegistered,
    /// [`MAX_NAMES`] names are registered already.
    Full,
    /// The folder or the file can be changed by someone other than the current user, SYSTEM
    /// or Administrators (root): it is neither read nor written.
    Untrusted {
        /// The folder or file.
        path: PathBuf,
        /// Why.
        why: String,
    },
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Io { path, error } => write!(f, "{}: {error}", path.display()),
            Self::Corrupt { path, why } => write!(
                f,
                "{} is corrupt ({why}); it was left as it is: move it aside to start over",
                path.display()
            ),
            Self::Reserved => {
                f.write_str("'teredo' is built in and cannot be registered or removed")
            }
            Self::NotRegistered => f.write_str("no such name is registered"),
            Self::Full => write!(f, "{MAX_NAMES} names are registered already"),
            Self::Untrusted { path, why } => write!(
                f,
                "{}: other users can change it ({why}); the names file must live where only you, SYSTEM and Administrators can write",
                path.display()
            ),
        }
    }
}

impl std::error::Error for StoreError {}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct File1 {
    format: String,
    version: u32,
    names: Vec<Entry>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    name: ServiceName,
    protocol: Transport,
    start: u16,
    count: u16,
}

/// Reads the bytes of a names file; the error says what is wrong with them.
///
/// # Errors
/// Bad JSON, another format or version, too many names, an invalid or duplicate name, an
/// invalid block, or `teredo`.
pub fn parse(bytes: &[u8]) -> Result<Names, String> {
    let file: File1 = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
    if file.format != FORMAT {
        return Err(format!("format is {:?}, not {FORMAT:?}", file.format));
    }
    if file.version != VERSION {
        return Err(format!("version {} is not {VERSION}", file.version));
    }
    if file.names.len() > MAX_NAMES {
        return Err(format!("{} names, at most {MAX_NAMES}", file.names.len()));
    }
    let mut names = Names::new();
    for e in file.names {
        if e.name.is_teredo() {
            return Err("'teredo' is built in and cannot be registered".into());
        }
        let reservation = Reservation::new(e.protocol, e.start, e.count)
            .map_err(|err| format!("{}: {err}", e.name))?;
        let name = e.name.clone();
        if names.insert(e.name, reservation).is_some() {
            return Err(format!("{name} is registered twice"));
        }
    }
    Ok(names)
}

/// The registrations file.
#[derive(Clone, Debug)]
pub struct Store {
    path: PathBuf,
    guard: Arc<dyn Guard>,
}

impl Store {
    /// A store kept in `path`, guarded by this system's [`guard::os`] (its folder is created
    /// on the first change if missing; its parent must exist).
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self::with_guard(path, guard::os())
    }

    /// A store kept in `path`, guarded by `guard`.
    pub fn with_guard(path: impl Into<PathBuf>, guard: Arc<dyn Guard>) -> Self {
        Self { path: path.into(), guard }
    }

    /// The file.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn io(&self, error: io::Error) -> StoreError {
        StoreError::Io { path: self.path.clone(), error }
    }

    fn corrupt(&self, why: impl Into<String>) -> StoreError {
        StoreError::Corrupt { path: self.path.clone(), why: why.into() }
    }

    /// The folder holding the file (`.` for a bare file name).
    fn folder(&self) -> PathBuf {
        match self.path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        }
    }

    /// Opens `path` ([`guard::open`]) and has the guard check the opened handle; `None` when
    /// nothing is there.
    fn open_checked(&self, path: &Path, kind: Kind) -> Result<Option<File>, StoreError> {
        let untrusted = |why: String| StoreError::Untrusted { path: path.to_path_buf(), why };
        let opened = match guard::open(path, kind) {
            Ok(f) => f,
            Err(guard::OpenError::Missing) => return Ok(None),
            Err(guard::OpenError::Link) => {
                return Err(untrusted(
                    "it is a symbolic link or another reparse point (a junction), which whoever made it can point elsewhere at any moment".into(),
                ));
            }
            Err(guard::OpenError::Io(error)) => {
                return Err(StoreError::Io { path: path.to_path_buf(), error });
            }
        };
        self.guard.check(&opened, kind).map_err(untrusted)?;
        Ok(Some(opened))
    }

    /// The registered names (none when the file or its folder does not exist).
    ///
    /// # Errors
    /// [`StoreError::Untrusted`], [`StoreError::Io`], [`StoreError::Corrupt`].
    pub fn load(&self) -> Result<Names, StoreError> {
        // The folder's handle is held while the file is opened and read.
        let Some(_folder) = self.open_checked(&self.folder(), Kind::Folder)? else {
            return Ok(Names::new());
        };
        let Some(mut file) = self.open_checked(&self.path, Kind::File)? else {
            return Ok(Names::new());
        };
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes).map_err(|e| self.io(e))?;
        parse(&bytes).map_err(|why| self.corrupt(why))
    }

    /// The reservation registered for `name`.
    ///
    /// # Errors
    /// As [`Store::load`].
    pub fn get(&self, name: &ServiceName) -> Result<Option<Reservation>, StoreError> {
        Ok(self.load()?.get(name).copied())
    }

    /// Registers `name` (replacing what it stood for).
    ///
    /// # Errors
    /// [`StoreError::Reserved`] for `teredo`, [`StoreError::Full`], I/O, or a corrupt file
    /// (left untouched).
    pub fn register(&self, name: &ServiceName, r: Reservation) -> Result<(), StoreError> {
        if name.is_teredo() {
            return Err(StoreError::Reserved);
        }
        self.update(|names| {
            if !names.contains_key(name) && names.len() >= MAX_NAMES {
                return Err(StoreError::Full);
            }
            names.insert(name.clone(), r);
            Ok(())
        })
    }

    /// Removes `name`.
    ///
    /// # Errors
    /// [`StoreError::NotRegistered`], [`StoreError::Reserved`], I/O, corrupt file.
    pub fn unregister(&self, name: &ServiceName) -> Result<Reservation, StoreError> {
        if name.is_teredo() {
            return Err(StoreError::Reserved);
        }
        let mut removed = None;
        self.update(|names| {
            removed = names.remove(name);
            if removed.is_some() { Ok(()) } else { Err(StoreError::NotRegistered) }
        })?;
        removed.ok_or(StoreError::NotRegistered)
    }

    /// Check or create the folder, lock, read, change, write atomically, unlock.
    fn update(
        &self,
        change: impl FnOnce(&mut Names) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        let folder = self.folder();
        match self.guard.create_folder(&folder) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(StoreError::Io { path: folder, error: e }),
        }
        // Held (on Windows without FILE_SHARE_DELETE) until the new file is in place.
        let held = self.open_checked(&folder, Kind::Folder)?.ok_or_else(|| StoreError::Io {
            path: folder.clone(),
            error: io::Error::from(io::ErrorKind::NotFound),
        })?;
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(self.sibling("lock"))
            .map_err(|e| self.io(e))?;
        lock.lock().map_err(|e| self.io(e))?;
        let mut names = self.load()?;
        change(&mut names)?;
        let file = File1 {
            format: FORMAT.to_owned(),
            version: VERSION,
            names: names
                .into_iter()
                .map(|(name, r)| Entry {
                    name,
                    protocol: r.transport(),
                    start: r.start(),
                    count: r.count(),
                })
                .collect(),
        };
        let mut bytes = serde_json::to_vec_pretty(&file)
            .map_err(|e| self.io(io::Error::other(e.to_string())))?;
        bytes.push(b'\n');
        let nonce = self.guard.nonce().map_err(|e| self.io(e))?;
        let tmp = self.sibling(&format!("{nonce:016x}.tmp"));
        let written = self
            .write_new(&tmp, &bytes)
            .and_then(|()| fs::rename(&tmp, &self.path).map_err(|e| self.io(e)));
        if written.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        // The lock is released when `lock` closes.
        drop(lock);
        drop(held);
        written
    }

    /// Writes `bytes` to a file that must not exist yet (create-new: never through something
    /// planted there), flushed to disk.
    fn write_new(&self, path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
        let mut options = OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut out = options.open(path).map_err(|e| self.io(e))?;
        out.write_all(bytes).map_err(|e| self.io(e))?;
        out.sync_all().map_err(|e| self.io(e))
    }

    fn sibling(&self, ext: &str) -> PathBuf {
        let mut name = self.path.file_name().map(std::ffi::OsStr::to_os_string).unwrap_or_default();
        name.push(".");
        name.push(ext);
        self.path.with_file_name(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(tag: &str) -> PathBuf {
        let d =
            std::env::temp_dir().join(format!("netports-nsp-store-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        d
    }

    fn n(s: &str) -> ServiceName {
        ServiceName::parse(s).unwrap()
    }

    #[test]
    fn registrations_persist_and_survive_a_new_store() {
        let d = dir("persist");
        let s = Store::new(d.join("names.json"));
        assert!(s.load().unwrap().is_empty(), "a missing file is an empty set");
        let web = Reservation::new(Transport::Tcp, 50_000, 10).unwrap();
        s.register(&n("web"), web).unwrap();
        s.register(&n("dns"), Reservation::new(Transport::Udp, 5353, 1).unwrap()).unwrap();
        let again = Store::new(d.join("names.json"));
        assert_eq!(again.get(&n("WEB")).unwrap(), Some(web));
        assert_eq!(again.load().unwrap().len(), 2);
        assert_eq!(again.unregister(&n("web")).unwrap(), web);
        assert!(matches!(again.unregister(&n("web")), Err(StoreError::NotRegistered)));
        assert!(matches!(again.register(&n("teredo"), web), Err(StoreError::Reserved)));
        let left: Vec<_> = fs::read_dir(&d)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| std::path::Path::new(n).extension().is_some_and(|e| e == "tmp"))
            .collect();
        assert!(left.is_empty(), "no temporary file is left: {left:?}");
        let _ = fs::remove_dir_all(&d);
    }

    #[test]
    fn a_corrupt_file_is_reported_and_never_replaced() {
        let d = dir("corrupt");
        fs::create_dir_all(&d).unwrap();
        let path = d.join("names.json");
        let web = Reservation::new(Transport::Tcp, 50_000, 10).unwrap();
        for bad in [
            &b"{not json"[..],
            br#"{"format":"netports-nsp-names","version":2,"names":[]}"#,
            br#"{"format":"other","version":1,"names":[]}"#,
            br#"{"format":"netports-nsp-names","version":1,"names":[{"name":"a","protocol":"tcp","start":0,"count":1}]}"#,
            br#"{"format":"netports-nsp-names","version":1,"names":[{"name":"a b","protocol":"tcp","start":1,"count":1}]}"#,
            br#"{"format":"netports-nsp-names","version":1,"names":[{"name":"teredo","protocol":"udp","start":1,"count":1}]}"#,
            br#"{"format":"netports-nsp-names","version":1,"names":[{"name":"a","protocol":"tcp","start":1,"count":1},{"name":"A","protocol":"udp","start":2,"count":1}]}"#,
        ] {
            fs::write(&path, bad).unwrap();
            let s = Store::new(&path);
            assert!(matches!(s.load(), Err(StoreError::Corrupt { .. })), "{}", String::from_utf8_lossy(bad));
            assert!(matches!(s.register(&n("web"), web), Err(StoreError::Corrupt { .. })));
            assert!(matches!(s.unregister(&n("a")), Err(StoreError::Corrupt { .. })));
            assert_eq!(fs::read(&path).unwrap(), bad, "the corrupt file is preserved byte for byte");
        }
        let _ = fs::remove_dir_all(&d);
    }

    #[test]
    fn concurrent_writers_never_lose_a_registration() {
        let d = dir("writers");
        let path = d.join("names.json");
        std::thread::scope(|scope| {
            for t in 0..4u16 {
                let path = path.clone();
                scope.spawn(move || {
                    let s = Store::new(path);
                    for i in 0..25u16 {
                        let r = Reservation::new(Transport::Tcp, 10_000 + t * 100 + i, 1).unwrap();
                        s.register(&n(&format!("svc-{t}-{i}")), r).unwrap();
                    }
                });
            }
        });
        assert_eq!(Store::new(&path).load().unwrap().len(), 100);
        let _ = fs::remove_dir_all(&d);
    }
}
