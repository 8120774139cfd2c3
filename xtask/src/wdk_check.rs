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
//! happens on Windows (`.github/workflows/windows.yml`). It also lints the kernel crates'
//! sources for types aligned beyond the 16 bytes the kernel heap (wdk-alloc) guarantees.
//!
//! `cargo xtask driver-tests`: driver/ built for the Linux host with the feature `wdf-sim`,
//! against the same mirror, whose WDF and kernel entry points crates/wdf-sim (the KMDF double)
//! defines; its tests run `DriverEntry`, IOCTLs, the work item, the timer and unload, with
//! vsflow-callout on vsflow-sim underneath. Clippy first, then the tests.

use crate::{KERNEL_TARGET, root, run};

/// The wdk crates the mirror replaces for the kernel target.
pub const MIRRORED: [&str; 4] = ["wdk", "wdk-sys", "wdk-alloc", "wdk-panic"];
/// The mirror crates the host build uses (wdk-alloc and wdk-panic are Windows-only).
const MIRRORED_HOST: [&str; 2] = ["wdk", "wdk-sys"];
/// The crates that run in the kernel.
const KERNEL_CRATES: [&str; 5] = [
    "crates/vsflow-core",
    "crates/vsflow-callout",
    "crates/vsflow-proto",
    "crates/fwps-sys",
    "driver",
];
/// wdk-alloc's `ExAllocatePool2` returns 16-byte aligned memory.
const KERNEL_HEAP_ALIGN: u64 = 16;

/// `--config patch.crates-io.<crate>.path=...` arguments that put the mirror in place of `crates`.
pub fn patches(root: &std::path::Path, crates: &[&str]) -> Vec<String> {
    let mut args = Vec::new();
    for krate in crates {
        let path = root.join("xtask/wdk-mirror").join(krate);
        args.push("--config".into());
        args.push(format!("patch.crates-io.{krate}.path={:?}", path.to_string_lossy()));
    }
    args
}

/// Runs `f` and restores `Cargo.lock` afterwards (the patches change the resolution).
pub fn keeping_lock(
    root: &std::path::Path,
    f: impl FnOnce() -> Result<(), String>,
) -> Result<(), String> {
    let lock = root.join("Cargo.lock");
    let saved = std::fs::read(&lock).map_err(|e| format!("Cargo.lock: {e}"))?;
    let result = f();
    std::fs::write(&lock, saved).map_err(|e| format!("restoring Cargo.lock: {e}"))?;
    result
}

/// `cargo xtask driver-tests`.
pub fn driver_tests() -> Result<(), String> {
    let root = root().canonicalize().map_err(|e| e.to_string())?;
    let target = root.join("target/driver-tests").to_string_lossy().into_owned();
    let base = ["-p", "vsflow-driver", "--features", "wdf-sim", "--target-dir", target.as_str()];
    keeping_lock(&root, || {
        // `--no-deps`: the driver's own lints (its dependencies have their own ci steps).
        let mut clippy: Vec<String> =
            ["clippy", "--all-targets", "--no-deps"].map(str::to_owned).to_vec();
        clippy.extend(base.map(str::to_owned));
        clippy.extend(patches(&root, &MIRRORED_HOST));
        clippy.extend(["--", "-D", "warnings"].map(str::to_owned));
        run("cargo", &clippy.iter().map(String::as_str).collect::<Vec<_>>())?;
        let mut test: Vec<String> = vec!["test".into()];
        test.extend(base.map(str::to_owned));
        test.extend(patches(&root, &MIRRORED_HOST));
        run("cargo", &test.iter().map(String::as_str).collect::<Vec<_>>())
    })?;
    println!("driver-tests: driver/ ran under the KMDF double (wdf-sim) on vsflow-sim");
    Ok(())
}

/// Every `#[repr(align(N))]` with `N` above the kernel heap's alignment, and every SIMD type
/// wider than 16 bytes, in `text` (one source file): `(line, what)`.
#[must_use]
pub fn over_aligned(text: &str) -> Vec<(usize, String)> {
    let mut found = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let code = line.split("//").next().unwrap_or("");
        let mut rest = code;
        while let Some(at) = rest.find("align(") {
            let tail = &rest[at + "align(".len()..];
            let digits: String = tail.chars().take_while(char::is_ascii_digit).collect();
            if digits.parse::<u64>().is_ok_and(|n| n > KERNEL_HEAP_ALIGN) {
                found.push((i + 1, format!("align({digits})")));
            }
            rest = tail;
        }
        for simd in ["__m256", "__m512", "u8x32", "u8x64"] {
            if code.contains(simd) {
                found.push((i + 1, simd.to_owned()));
            }
        }
    }
    found
}

/// Lints the kernel crates' sources with [`over_aligned`].
///
/// # Errors
/// Each finding, with file and line.
pub fn alignment_lint() -> Result<(), String> {
    let root = root();
    let mut findings = Vec::new();
    let mut stack: Vec<std::path::PathBuf> =
        KERNEL_CRATES.iter().map(|c| root.join(c).join("src")).collect();
    while let Some(dir) = stack.pop() {
        let entries = std::fs::read_dir(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        for entry in entries {
            let path = entry.map_err(|e| e.to_string())?.path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let text = std::fs::read_to_string(&path)
                    .map_err(|e| format!("{}: {e}", path.display()))?;
                for (line, what) in over_aligned(&text) {
                    findings.push(format!("{}:{line}: {what} exceeds the kernel heap's {KERNEL_HEAP_ALIGN}-byte alignment", path.display()));
                }
            }
        }
    }
    if findings.is_empty() { Ok(()) } else { Err(findings.join("\n")) }
}

/// Runs the check, restoring `Cargo.lock` afterwards (the patch changes the resolution).
pub fn check() -> Result<(), String> {
    alignment_lint()?;
    let root = root().canonicalize().map_err(|e| e.to_string())?;
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
    args.extend(patches(&root, &MIRRORED));
    args.extend(["--", "-D", "warnings"].map(str::to_owned));
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    keeping_lock(&root, || run("cargo", &refs)).map(|()| println!("wdk-check: driver/ type-checks and lints clean against the wdk mirror (a check, not a build)"))
}

#[cfg(test)]
mod tests {
    use super::over_aligned;

    #[test]
    fn over_aligned_finds_alignments_above_16_and_wide_simd_types() {
        let src = "#[repr(C, align(64))]\nstruct A;\n#[repr(align(16))]\nstruct B;\n// #[repr(align(128))] in a comment\nlet x: __m256 = y;\n";
        let found = over_aligned(src);
        assert_eq!(found, [(1, "align(64)".to_owned()), (6, "__m256".to_owned())]);
    }

    #[test]
    fn the_kernel_crates_have_no_over_aligned_types() {
        assert_eq!(super::alignment_lint(), Ok(()));
    }
}
