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
//! - `--compare A B`: the import and export tables of two images, which must name the same
//!   functions of the same modules (module names compare case-insensitively). The Windows
//!   workflow compares the WDK's image with the one linked here.
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

/// `cargo xtask sys [--check] [--image FILE] [--reproducible] [--exports] [--compare A B]`.
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
    if let Some(i) = args.iter().position(|a| *a == "--compare") {
        let (Some(a), Some(b)) = (args.get(i + 1), args.get(i + 2)) else {
            return Err("--compare needs two images".into());
        };
        return compare(Path::new(a), Path::new(b));
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

/// The imports (`module!name`, module in lower case) and exports of the image at `path`.
fn tables(path: &Path) -> Result<(Vec<String>, Vec<String>), String> {
    let data = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let image = sys_image::Image::parse(&data).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut imports: Vec<String> = image
        .imports
        .iter()
        .map(|i| format!("{}!{}", i.module.to_ascii_lowercase(), i.symbol))
        .collect();
    imports.sort();
    let mut exports: Vec<String> = image.exports.iter().map(|e| e.name.clone()).collect();
    exports.sort();
    Ok((imports, exports))
}

/// Differences between two sorted lists: (only in `a`, only in `b`).
#[must_use]
pub fn differences(a: &[String], b: &[String]) -> (Vec<String>, Vec<String>) {
    let only_a = a.iter().filter(|x| !b.contains(x)).cloned().collect();
    let only_b = b.iter().filter(|x| !a.contains(x)).cloned().collect();
    (only_a, only_b)
}

/// `--compare A B`.
fn compare(a: &Path, b: &Path) -> Result<(), String> {
    let (imports_a, exports_a) = tables(a)?;
    let (imports_b, exports_b) = tables(b)?;
    let mut problems = Vec::new();
    for (what, x, y) in [("import", &imports_a, &imports_b), ("export", &exports_a, &exports_b)] {
        let (only_a, only_b) = differences(x, y);
        for n in only_a {
            problems.push(format!("{what} {n} only in {}", a.display()));
        }
        for n in only_b {
            problems.push(format!("{what} {n} only in {}", b.display()));
        }
    }
    if problems.is_empty() {
        println!(
            "sys --compare: {} and {} import the same {} functions and export the same {} names",
            a.display(),
            b.display(),
            imports_a.len(),
            exports_a.len()
        );
        Ok(())
    } else {
        Err(problems.join("\n"))
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

#[cfg(test)]
mod tests {
    use super::differences;

    #[test]
    fn differences_name_what_each_side_has_alone() {
        let a = ["ntoskrnl.exe!A".to_owned(), "ntoskrnl.exe!B".to_owned()];
        let b = ["ntoskrnl.exe!B".to_owned(), "wdfldr.sys!C".to_owned()];
        assert_eq!(
            differences(&a, &b),
            (vec!["ntoskrnl.exe!A".to_owned()], vec!["wdfldr.sys!C".to_owned()])
        );
    }
}
