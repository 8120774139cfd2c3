//! The guard on Unix: ownership and mode bits (netports' Linux runs use `--names-file`).

use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::Path;

use super::{Guard, Kind, OpenError};

/// Opens `path` read-only without following a symbolic link at `path` itself (`O_NOFOLLOW`;
/// a folder with `O_DIRECTORY`, a file with `O_NONBLOCK` so a FIFO there cannot block).
pub(super) fn open(path: &Path, kind: Kind) -> Result<File, OpenError> {
    let flags = libc::O_NOFOLLOW
        | libc::O_CLOEXEC
        | match kind {
            Kind::Folder => libc::O_DIRECTORY,
            Kind::File => libc::O_NONBLOCK,
        };
    match OpenOptions::new().read(true).custom_flags(flags).open(path) {
        Ok(f) => Ok(f),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Err(OpenError::Missing),
        // ELOOP (O_NOFOLLOW on a link), or ENOTDIR for a link where a folder was asked.
        Err(e) if fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink()) => {
            drop(e);
            Err(OpenError::Link)
        }
        Err(e) => Err(OpenError::Io(e)),
    }
}

/// Trusts what the effective user or root owns and nobody else can write.
#[derive(Debug, Default)]
pub struct UnixGuard;

impl Guard for UnixGuard {
    fn check(&self, opened: &File, kind: Kind) -> Result<(), String> {
        let meta = opened.metadata().map_err(|e| format!("its owner cannot be read ({e})"))?;
        match kind {
            Kind::Folder if !meta.is_dir() => return Err("it is not a folder".into()),
            Kind::File if !meta.is_file() => return Err("it is not a regular file".into()),
            _ => {}
        }
        // SAFETY: geteuid has no preconditions and cannot fail.
        let me = unsafe { libc::geteuid() };
        if meta.uid() != me && meta.uid() != 0 {
            return Err(format!(
                "it is owned by uid {}, not by you (uid {me}) or root",
                meta.uid()
            ));
        }
        let mode = meta.mode() & 0o7777;
        if mode & 0o022 != 0 {
            return Err(format!("its mode {mode:04o} lets its group or other users write it"));
        }
        Ok(())
    }

    fn create_folder(&self, dir: &Path) -> io::Result<()> {
        DirBuilder::new().mode(0o700).create(dir)
    }

    fn nonce(&self) -> io::Result<u64> {
        let mut bytes = [0u8; 8];
        fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
        Ok(u64::from_ne_bytes(bytes))
    }
}
