//! The guard on Unix: ownership and mode bits (netports' Linux runs use `--names-file`).

use std::fs::{self, DirBuilder};
use std::io::{self, Read};
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::Path;

use super::{Guard, Kind};

/// Trusts what the effective user or root owns and nobody else can write.
#[derive(Debug, Default)]
pub struct UnixGuard;

impl Guard for UnixGuard {
    fn check(&self, path: &Path, _: Kind) -> Result<(), String> {
        let meta = fs::metadata(path).map_err(|e| format!("its owner cannot be read ({e})"))?;
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
