//! `cargo xtask sys`: vsflow.sys linked on Linux as a Windows kernel image, and checked.
//!
//! - `cargo xtask sys`: links `<target>/sys/vsflow.sys` ([`link`]): rustc for
//!   `x86_64-pc-windows-msvc`, profile `driver`, the wdk mirror, crates/kmdf-stub, import
//!   libraries made from the repository's table of kernel exports ([`exports`]), rust-lld with
//!   wdk-build's linker arguments. With `SOURCE_DATE_EPOCH` set, two builds are byte-identical.
//! - `--check`: the image rules ([`check`]), each with its Microsoft source; fails on any.
//!   `--image FILE` checks another image instead of building (the Windows workflow checks the
//!   WDK's with it).
//! - `--reproducible`: builds twice in two fresh target directories with the same
//!   `SOURCE_DATE_EPOCH` (the last commit's time if unset) and fails unless the images are
//!   byte-identical.
//! - `--exports`: prints the kernel-export table (`xtask/sys/header_versions.py` reads it).
//!
//! `cargo xtask sys-loader` ([`loader_tests`]): links the image, then runs crates/sys-loader's
//! scenarios and bad-image tests on it (the image's own machine code under the doubles), after
//! clippy on them.
//!
//! On Windows the WDK build (`cargo xtask package`) is the driver; this is the Linux image the
//! loader harness (crates/sys-loader) runs and the Windows workflow compares.

pub mod check;
pub mod exports;
pub mod link;

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::root;

/// Links vsflow.sys into `<target>/sys` and returns its path.
///
/// # Errors
/// The build failed.
pub fn build() -> Result<PathBuf, String> {
    let dir = crate::target::dir()?.join("sys");
    let image = link::build(&dir)?;
    let len = std::fs::metadata(&image).map_err(|e| e.to_string())?.len();
    println!("sys: {} ({len} bytes, x86_64-pc-windows-msvc, profile driver)", image.display());
    Ok(image)
}

/// `cargo xtask sys [--check] [--image FILE] [--reproducible] [--exports]`.
///
/// # Errors
/// A build, a rule or the reproducibility comparison failed.
pub fn command(args: &[&str]) -> Result<(), String> {
    if args.contains(&"--exports") {
        print!("{}", exports::listing());
        return Ok(());
    }
    if args.contains(&"--reproducible") {
        return reproducible();
    }
    let given = args.iter().position(|a| *a == "--image").map(|i| args.get(i + 1));
    let image = match given {
        Some(Some(path)) => PathBuf::from(path),
        Some(None) => return Err("--image needs a file".into()),
        None => build()?,
    };
    if args.contains(&"--check") || given.is_some() { check_file(&image) } else { Ok(()) }
}

/// `cargo xtask sys-loader`: the image linked, then the loader's tests run on it.
///
/// # Errors
/// The build, clippy or a test failed.
pub fn loader_tests() -> Result<(), String> {
    let image = build()?;
    let image = image.canonicalize().map_err(|e| format!("{}: {e}", image.display()))?;
    crate::run(
        "cargo",
        &[
            "clippy",
            "-p",
            "sys-loader",
            "--all-targets",
            "--features",
            "image",
            "--locked",
            "--",
            "-D",
            "warnings",
        ],
    )?;
    let status = Command::new("cargo")
        .args(["test", "-p", "sys-loader", "--features", "image", "--locked"])
        .env("VSFLOW_SYS", &image)
        .current_dir(root())
        .status()
        .map_err(|e| format!("cannot run cargo: {e}"))?;
    if !status.success() {
        return Err(format!("the loader's tests on {} failed ({status})", image.display()));
    }
    println!("sys-loader: {} ran under the doubles (scenarios and bad images)", image.display());
    Ok(())
}

/// Runs the image rules on `path` and prints the report.
///
/// # Errors
/// The file cannot be read or parsed, or a rule fails.
pub fn check_file(path: &Path) -> Result<(), String> {
    let data = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let image = sys_image::Image::parse(&data).map_err(|e| format!("{}: {e}", path.display()))?;
    let verdicts = check::rules(&image);
    print!("{}", check::report(&verdicts));
    let failed: Vec<&str> =
        verdicts.iter().filter(|v| !v.problems.is_empty()).map(|v| v.rule).collect();
    if failed.is_empty() {
        println!("sys --check: {}: {} rules hold", path.display(), verdicts.len());
        Ok(())
    } else {
        Err(format!("{}: rule(s) failed: {}", path.display(), failed.join(", ")))
    }
}

fn reproducible() -> Result<(), String> {
    let epoch = if let Ok(e) = std::env::var("SOURCE_DATE_EPOCH") {
        e
    } else {
        let out = Command::new("git")
            .args(["log", "-1", "--format=%ct"])
            .current_dir(root())
            .output()
            .map_err(|e| format!("cannot run git: {e}"))?;
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    };
    // SAFETY: xtask is single-threaded; nothing reads the environment concurrently.
    unsafe { std::env::set_var("SOURCE_DATE_EPOCH", &epoch) };
    let base = crate::target::dir()?.join("sys-reproducible");
    let mut images = Vec::new();
    for run in ["a", "b"] {
        let dir = base.join(run);
        if dir.exists() {
            std::fs::remove_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        }
        let image = link::build(&dir)?;
        images.push(std::fs::read(&image).map_err(|e| format!("{}: {e}", image.display()))?);
    }
    if images[0] == images[1] {
        println!(
            "sys --reproducible: two builds in fresh target directories with SOURCE_DATE_EPOCH={epoch} are byte-identical ({} bytes)",
            images[0].len()
        );
        Ok(())
    } else {
        let first = images[0].iter().zip(&images[1]).position(|(a, b)| a != b);
        Err(format!(
            "the two builds differ (sizes {} and {}, first difference at byte {first:?})",
            images[0].len(),
            images[1].len()
        ))
    }
}
