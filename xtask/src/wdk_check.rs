//! `cargo xtask wdk-check`: type-check and lint `driver/` for `x86_64-pc-windows-msvc` on a
//! host without the WDK.
//!
//! The wdk crates cannot build off Windows (wdk-build refuses, wdk-sys runs bindgen on the WDK
//! headers). `xtask/wdk-mirror/` holds a mirror of the part of their public surface that
//! `driver/` uses: same crate names, versions, paths, item names and signatures as wdk-sys
//! 0.5's bindgen output and macros, written from the WDF/WDK declarations. This command
//! injects the mirror with `--config patch.crates-io.*` (never a normal build) and runs clippy
//! on the driver, so type errors and lint failures in the glue show up here before Windows.
//! It is a check, not a build: nothing is linked, and the real build (with the real crates)
//! happens on Windows (`.github/workflows/windows.yml`).

use crate::{KERNEL_TARGET, root, run};

const MIRRORED: [&str; 4] = ["wdk", "wdk-sys", "wdk-alloc", "wdk-panic"];

/// Runs the check, restoring `Cargo.lock` afterwards (the patch changes the resolution).
pub fn check() -> Result<(), String> {
    let root = root().canonicalize().map_err(|e| e.to_string())?;
    let lock = root.join("Cargo.lock");
    let saved = std::fs::read(&lock).map_err(|e| format!("Cargo.lock: {e}"))?;
    let mut args: Vec<String> = [
        "clippy",
        "-p",
        "vsflow-driver",
        "--profile",
        "driver",
        "--target",
        KERNEL_TARGET,
        "--target-dir",
    ]
    .into_iter()
    .map(str::to_owned)
    .collect();
    args.push(root.join("target/wdk-check").to_string_lossy().into_owned());
    for krate in MIRRORED {
        let path = root.join("xtask/wdk-mirror").join(krate);
        args.push("--config".into());
        args.push(format!("patch.crates-io.{krate}.path={:?}", path.to_string_lossy()));
    }
    args.extend(["--", "-D", "warnings"].map(str::to_owned));
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let result = run("cargo", &refs);
    std::fs::write(&lock, saved).map_err(|e| format!("restoring Cargo.lock: {e}"))?;
    result.map(|()| println!("wdk-check: driver/ type-checks and lints clean against the wdk mirror (a check, not a build)"))
}
