//! What `rust-toolchain.toml` lists, installed when missing.
//!
//! rustup installs a missing channel on first use, but not the components and targets of a
//! channel that is already installed: on a fresh machine with stable present, the first
//! `cargo clippy --target x86_64-pc-windows-msvc` fails. `cargo xtask ci` runs
//! [`ensure_installed`] first, so the README's test command passes on a fresh clone.

use std::process::Command;

use crate::root;

/// The `components` and `targets` arrays of a `rust-toolchain.toml`.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Wanted {
    /// `components = [...]`.
    pub components: Vec<String>,
    /// `targets = [...]`.
    pub targets: Vec<String>,
}

/// Reads the two arrays (single- or multi-line, `"` or `'` strings, `#` comments).
#[must_use]
pub fn parse(text: &str) -> Wanted {
    let mut wanted = Wanted::default();
    let mut current: Option<&mut Vec<String>> = None;
    let mut pending = String::new();
    for raw in text.lines() {
        let line = raw.split('#').next().unwrap_or("").trim();
        if current.is_none() {
            let Some((key, value)) = line.split_once('=') else { continue };
            current = match key.trim() {
                "components" => Some(&mut wanted.components),
                "targets" => Some(&mut wanted.targets),
                _ => None,
            };
            if current.is_none() {
                continue;
            }
            pending.clear();
            pending.push_str(value);
        } else {
            pending.push(' ');
            pending.push_str(line);
        }
        if pending.contains(']')
            && let Some(list) = current.take()
        {
            let inner = pending.trim().trim_start_matches('[');
            let inner = inner.split(']').next().unwrap_or("");
            list.extend(
                inner
                    .split(',')
                    .map(|s| s.trim().trim_matches(|c| c == '"' || c == '\'').to_owned())
                    .filter(|s| !s.is_empty()),
            );
        }
    }
    wanted
}

/// The names that are in `wanted` but not in `installed` (rustup prints components with
/// their host triple, `clippy-x86_64-unknown-linux-gnu`, so a prefix match counts).
#[must_use]
pub fn missing(wanted: &[String], installed: &str) -> Vec<String> {
    wanted
        .iter()
        .filter(|w| {
            !installed
                .lines()
                .map(str::trim)
                .any(|i| i == w.as_str() || i.starts_with(&format!("{w}-")))
        })
        .cloned()
        .collect()
}

fn rustup(args: &[&str]) -> Result<String, String> {
    let out = Command::new("rustup")
        .args(args)
        .current_dir(root())
        .output()
        .map_err(|e| format!("cannot run rustup: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "rustup {} exited with {}: {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Installs the components and targets `rust-toolchain.toml` lists that the active toolchain
/// lacks (`rustup component add` / `rustup target add`, run in the repository so the pinned
/// toolchain is the one changed).
///
/// # Errors
/// rustup is missing or fails.
pub fn ensure_installed() -> Result<(), String> {
    let file = root().join("rust-toolchain.toml");
    let text = std::fs::read_to_string(&file).map_err(|e| format!("{}: {e}", file.display()))?;
    for line in install_missing(&parse(&text), &mut rustup)? {
        println!("toolchain: {line}");
    }
    Ok(())
}

/// Asks `rustup` (a runner of rustup's arguments) what is installed and adds what `wanted`
/// lacks; what it did, as lines to print.
fn install_missing(
    wanted: &Wanted,
    rustup: &mut dyn FnMut(&[&str]) -> Result<String, String>,
) -> Result<Vec<String>, String> {
    let mut did = Vec::new();
    for (kind, names) in [("component", &wanted.components), ("target", &wanted.targets)] {
        let absent = missing(names, &rustup(&[kind, "list", "--installed"])?);
        if !absent.is_empty() {
            let mut args = vec![kind, "add"];
            args.extend(absent.iter().map(String::as_str));
            rustup(&args)?;
            did.push(format!("installed {kind}s {}", absent.join(", ")));
        }
    }
    if did.is_empty() {
        did.push("every component and target of rust-toolchain.toml is installed".to_owned());
    }
    Ok(did)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_toolchain_file_arrays_are_read_in_any_layout() {
        let w = parse(
            "[toolchain]\nchannel = \"stable\"\ncomponents = [\"clippy\", 'rustfmt']\ntargets = [\n  \"x86_64-pc-windows-msvc\", # kernel\n  \"x86_64-unknown-none\",\n]\nprofile = \"minimal\"\n",
        );
        assert_eq!(w.components, ["clippy", "rustfmt"]);
        assert_eq!(w.targets, ["x86_64-pc-windows-msvc", "x86_64-unknown-none"]);
        assert_eq!(parse("[toolchain]\nchannel = \"stable\"\n"), Wanted::default());
    }

    #[test]
    fn an_installed_channel_without_the_files_targets_gets_them_added() {
        // The fresh-machine case: stable with clippy and rustfmt is installed, the Windows and
        // bare-metal targets are not.
        let wanted = parse(
            "[toolchain]\nchannel = \"stable\"\ncomponents = [\"clippy\", \"rustfmt\"]\ntargets = [\"x86_64-pc-windows-msvc\", \"x86_64-pc-windows-gnu\", \"x86_64-unknown-none\"]\n",
        );
        let mut calls = Vec::new();
        let did = install_missing(&wanted, &mut |args| {
            calls.push(args.join(" "));
            Ok(match args {
                ["component", "list", "--installed"] => {
                    "cargo-x86_64-unknown-linux-gnu\nclippy-x86_64-unknown-linux-gnu\nrustfmt-x86_64-unknown-linux-gnu\n"
                }
                ["target", "list", "--installed"] => "x86_64-unknown-linux-gnu\n",
                _ => "",
            }
            .to_owned())
        })
        .unwrap();
        assert_eq!(
            calls,
            [
                "component list --installed",
                "target list --installed",
                "target add x86_64-pc-windows-msvc x86_64-pc-windows-gnu x86_64-unknown-none"
            ]
        );
        assert_eq!(
            did,
            [
                "installed targets x86_64-pc-windows-msvc, x86_64-pc-windows-gnu, x86_64-unknown-none"
            ]
        );
        // rustup failing is an error, not a skipped step.
        let err = install_missing(&wanted, &mut |_| Err("rustup: offline".to_owned()));
        assert_eq!(err, Err("rustup: offline".to_owned()));
    }

    #[test]
    fn only_what_rustup_does_not_list_is_missing() {
        let wanted = ["clippy".to_owned(), "rustfmt".to_owned()];
        assert_eq!(
            missing(&wanted, "cargo-x86_64-unknown-linux-gnu\nclippy-x86_64-unknown-linux-gnu\n"),
            ["rustfmt"]
        );
        let targets = ["x86_64-pc-windows-gnu".to_owned(), "x86_64-unknown-none".to_owned()];
        assert_eq!(
            missing(&targets, "x86_64-unknown-linux-gnu\nx86_64-unknown-none\n"),
            ["x86_64-pc-windows-gnu"]
        );
    }
}
