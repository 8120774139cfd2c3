//! Bad input to the loader is a clear error, never a crash.

#![cfg(all(target_os = "linux", target_arch = "x86_64"))]
