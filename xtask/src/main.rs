//! `cargo xtask`: the project's task runner (the cargo-make tasks in Makefile.toml delegate
//! here, so there is one implementation of every task).
//!
//! - `cargo xtask ci`: the test command. The components and targets `rust-toolchain.toml`
//!   lists, installed when missing (`cargo xtask toolchain` alone); fmt check, clippy for the host (all targets,
//!   warnings denied), the whole workspace's tests, clippy for `x86_64-pc-windows-msvc` on
//!   every `no_std` crate and a build of each for `x86_64-unknown-none`, which has no `std`,
//!   clippy for `x86_64-pc-windows-gnu` on the user-mode crates (their Windows code), the
//!   Wine run, the INF lint, vsflow.sys linked and checked (`sys --check`, `sys
//!   --reproducible`) and run under the doubles (`sys-loader`), the package, the driver's
//!   `wdk-check`, and its `driver-tests` under the KMDF double.
//! - `cargo xtask inf-lint FILE [--source]`: the INF rules checkable without Windows.
//! - `cargo xtask package [--arch amd64|arm64]`: stamp, lint and lay out the driver package
//!   (on Windows with the WDK: also build, `InfVerif`, `Inf2Cat` and test-sign).
//! - `cargo xtask wine`: `netports.exe` built for Windows and run under Wine, each command
//!   with the exit code and output it must give.
//! - `cargo xtask live`: live traffic between two Linux network namespaces, judged by vsflow
//!   (replayed through the callout) and by conntrack (`tests/live.rs`; root; under a minute).
//! - `cargo xtask wdk-check`: type-check and lint `driver/` for the kernel target against
//!   the mirror of the wdk crates in `xtask/wdk-mirror/` (a check, not a build).
//! - `cargo xtask driver-tests`: `driver/` on the Linux host under the KMDF double
//!   (crates/wdf-sim) and vsflow-sim.
//! - `cargo xtask sys [--check] [--reproducible]`: vsflow.sys linked on Linux as a Windows
//!   kernel image (rust-lld, the WDK's linker arguments, the repository's KMDF stub and
//!   kernel-export table), and the image rules checked (see `sys`).
//! - `cargo xtask sys-loader`: that image loaded into a Linux process and run under the
//!   doubles (crates/sys-loader): the driver's scenarios through its own machine code.

mod inf;
mod live;
mod markers;
mod package;
mod sys;
mod target;
mod toolchain;
mod wdk_check;
mod wine;

use std::env;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

/// The `no_std` crates that must build for the kernel target without std.
const NO_STD_CRATES: &[&str] =
    &["crc32c-hw", "fwps-sys", "vsflow-core", "vsflow-proto", "vsflow-callout", "kmdf-stub"];
/// The user-mode crates whose Windows code (`#[cfg(windows)]`) must compile and pass clippy.
const USER_MODE_WINDOWS_CRATES: &[&str] = &["netports", "netports-nsp"];
/// The user-mode Windows target (the gnu ABI: its linker and import libraries install on Linux).
const USER_TARGET: &str = "x86_64-pc-windows-gnu";
/// The kernel target.
const KERNEL_TARGET: &str = "x86_64-pc-windows-msvc";
/// A target with no `std` at all: building for it proves a crate and its dependencies need
/// nothing but `core` and `alloc` (the Windows targets still ship a `std`).
const BARE_TARGET: &str = "x86_64-unknown-none";

fn main() -> ExitCode {
    let args: Vec<String> = env::args().skip(1).collect();
    let rest: Vec<&str> = args.iter().skip(1).map(String::as_str).collect();
    let result = match args.first().map(String::as_str) {
        Some("ci") => ci(),
        Some("markers") => markers::check(&rest.first().map_or_else(root, PathBuf::from)),
        Some("fmt") => run("cargo", &["fmt", "--all"]),
        Some("toolchain") => toolchain::ensure_installed(),
        Some("inf-lint") => inf_lint(&rest),
        Some("package") => package::package(&rest),
        Some("wdk-check") => wdk_check::check(),
        Some("driver-tests") => wdk_check::driver_tests(),
        Some("wine") => wine::smoke(),
        Some("live") => live::live(),
        Some("sys") => sys::command(&rest),
        Some("sys-loader") => sys::loader_tests(),
        _ => {
            eprintln!(
                "usage: cargo xtask <ci|markers [DIR]|fmt|toolchain|inf-lint FILE [--source]|package [--arch A]|wdk-check|driver-tests|wine|live|sys [--check] [--image FILE] [--reproducible] [--exports] [--compare A B]|sys-loader>"
            );
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e}");
            ExitCode::FAILURE
        }
    }
}

fn inf_lint(args: &[&str]) -> Result<(), String> {
    let stage = if args.contains(&"--source") { inf::Stage::Source } else { inf::Stage::Stamped };
    let file = args
        .iter()
        .find(|a| !a.starts_with("--"))
        .ok_or("usage: cargo xtask inf-lint FILE [--source]")?;
    let text = std::fs::read_to_string(file).map_err(|e| format!("{file}: {e}"))?;
    let findings = inf::lint(&text, stage);
    for f in &findings {
        println!("{file}: {f}");
    }
    if findings.is_empty() {
        println!("{file}: clean");
        Ok(())
    } else {
        Err(format!("{file}: {} finding(s)", findings.len()))
    }
}

fn ci() -> Result<(), String> {
    step("toolchain (rust-toolchain.toml components and targets)", toolchain::ensure_installed)?;
    step("no merge-conflict markers in tracked files", || markers::check(&root()))?;
    step("rustfmt --check", || run("cargo", &["fmt", "--all", "--", "--check"]))?;
    step("clippy (host, all targets)", || {
        run(
            "cargo",
            &["clippy", "--workspace", "--all-targets", "--locked", "--", "-D", "warnings"],
        )
    })?;
    step("tests (workspace)", || run("cargo", &["test", "--workspace", "--locked"]))?;
    step("live traffic (Linux kernel and conntrack judge vsflow; tests/live.rs)", live::live)?;
    for krate in NO_STD_CRATES {
        step(&format!("clippy {krate} for {KERNEL_TARGET} (no_std)"), || {
            run(
                "cargo",
                &[
                    "clippy",
                    "-p",
                    krate,
                    "--target",
                    KERNEL_TARGET,
                    "--locked",
                    "--",
                    "-D",
                    "warnings",
                ],
            )
        })?;
        step(&format!("check {krate} for {BARE_TARGET} (proves no std)"), || {
            run("cargo", &["check", "-p", krate, "--target", BARE_TARGET, "--locked"])
        })?;
    }
    for krate in USER_MODE_WINDOWS_CRATES {
        step(&format!("clippy {krate} for {USER_TARGET} (all targets)"), || {
            run(
                "cargo",
                &[
                    "clippy",
                    "-p",
                    krate,
                    "--all-targets",
                    "--target",
                    USER_TARGET,
                    "--locked",
                    "--",
                    "-D",
                    "warnings",
                ],
            )
        })?;
    }
    step("wine: netports.exe (x86_64-pc-windows-gnu) under Wine", wine::smoke)?;
    step("inf-lint inf/vsflow.inx", || inf_lint(&["inf/vsflow.inx", "--source"]))?;
    step("sys: vsflow.sys linked for x86_64-pc-windows-msvc, image rules", || {
        sys::command(&["--check"])
    })?;
    step("sys: two builds byte-identical (SOURCE_DATE_EPOCH)", || {
        sys::command(&["--reproducible"])
    })?;
    step(
        "sys-loader: vsflow.sys run under the doubles (scenarios, bad images)",
        sys::loader_tests,
    )?;
    step("package (stamp + lint, vsflow.sys beside the INF)", || package::package(&[]))?;
    step("wdk-check (driver/ against the wdk mirror)", wdk_check::check)?;
    step("driver-tests (driver/ under the KMDF double)", wdk_check::driver_tests)?;
    println!("xtask ci: all steps passed");
    Ok(())
}

fn step(name: &str, f: impl FnOnce() -> Result<(), String>) -> Result<(), String> {
    println!("==> {name}");
    f().map_err(|e| format!("step '{name}' failed: {e}"))
}

/// The repository root.
#[must_use]
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Runs a program, failing on a non-zero exit.
///
/// # Errors
/// The program could not start or exited non-zero.
pub fn run(program: &str, args: &[&str]) -> Result<(), String> {
    let status = Command::new(program)
        .args(args)
        .status()
        .map_err(|e| format!("cannot run {program}: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{program} {} exited with {status}", args.join(" ")))
    }
}
