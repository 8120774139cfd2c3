//! Where cargo puts build outputs: `cargo metadata`'s `target_directory`, so `cargo xtask wine`
//! and `package` find what they built whatever `CARGO_TARGET_DIR` or `build.target-dir` say.

use std::path::PathBuf;
use std::process::Command;

use crate::root;

/// The build's target directory as cargo reports it (`cargo metadata`: respects
/// `CARGO_TARGET_DIR`, `build.target-dir` and the workspace layout).
///
/// # Errors
/// cargo cannot run or its answer has no `target_directory`.
pub fn dir() -> Result<PathBuf, String> {
    let out = Command::new("cargo")
        .args(["metadata", "--format-version", "1", "--no-deps"])
        .current_dir(root())
        .output()
        .map_err(|e| format!("cannot run cargo metadata: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "cargo metadata exited with {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    json_string_field(&String::from_utf8_lossy(&out.stdout), "target_directory")
        .map(PathBuf::from)
        .ok_or_else(|| "cargo metadata gave no target_directory".to_owned())
}

/// The value of the string field `key` in compact JSON (`"key":"value"`, with `\\` and `\"`
/// escapes), as cargo metadata prints it.
#[must_use]
pub fn json_string_field(json: &str, key: &str) -> Option<String> {
    let start = json.find(&format!("\"{key}\":\""))? + key.len() + 4;
    let mut value = String::new();
    let mut chars = json.get(start..)?.chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => return Some(value),
            '\\' => match chars.next()? {
                'n' => value.push('\n'),
                't' => value.push('\t'),
                other => value.push(other),
            },
            c => value.push(c),
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::json_string_field;

    #[test]
    fn the_target_directory_is_read_from_cargo_metadata() {
        let json = r#"{"packages":[],"target_directory":"/work/t \"x\" \\d","version":1}"#;
        assert_eq!(
            json_string_field(json, "target_directory").as_deref(),
            Some(r#"/work/t "x" \d"#)
        );
        assert_eq!(json_string_field(json, "workspace_root"), None);
    }
}
