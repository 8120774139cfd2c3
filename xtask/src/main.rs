//! `cargo xtask`: the project's task runner (the cargo-make tasks delegate here, so there is
//! one implementation of every task).
//!
//! - `cargo xtask ci`: the test command. fmt check, clippy for the host (all targets,
//!   warnings denied), the whole workspace's tests, and clippy for x86_64-pc-windows-msvc on
//!   every `no_std` crate, and a build of each for `x86_64-unknown-none`, which has no `std`.

use std::env;
use std::process::{Command, ExitCode};

/// The `no_std` crates that must build for the kernel target without std.
const NO_STD_CRATES: &[&str] = &["fwps-sys", "vsflow-core", "vsflow-proto", "vsflow-callout"];
/// The kernel target.
const KERNEL_TARGET: &str = "x86_64-pc-windows-msvc";
/// A target with no `std` at all: building for it proves a crate and its dependencies need
/// nothing but `core` and `alloc` (the Windows targets still ship a `std`).
const BARE_TARGET: &str = "x86_64-unknown-none";

fn main() -> ExitCode {
    let args: Vec<String> = env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("ci") => ci(),
        Some("fmt") => run("cargo", &["fmt", "--all"]),
        _ => {
            eprintln!("usage: cargo xtask <ci|fmt>");
            eprintln!("  ci   fmt check, clippy (host + {KERNEL_TARGET}), workspace tests");
            eprintln!("  fmt  format the workspace");
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

fn ci() -> Result<(), String> {
    step("rustfmt --check", || run("cargo", &["fmt", "--all", "--", "--check"]))?;
    step("clippy (host, all targets)", || {
        run(
            "cargo",
            &["clippy", "--workspace", "--all-targets", "--locked", "--", "-D", "warnings"],
        )
    })?;
    step("tests (workspace)", || run("cargo", &["test", "--workspace", "--locked"]))?;
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
    }
    for krate in NO_STD_CRATES {
        step(&format!("check {krate} for {BARE_TARGET} (proves no std)"), || {
            run("cargo", &["check", "-p", krate, "--target", BARE_TARGET, "--locked"])
        })?;
    }
    println!("xtask ci: all steps passed");
    Ok(())
}

fn step(name: &str, f: impl FnOnce() -> Result<(), String>) -> Result<(), String> {
    println!("==> {name}");
    f().map_err(|e| format!("step '{name}' failed: {e}"))
}

fn run(program: &str, args: &[&str]) -> Result<(), String> {
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
