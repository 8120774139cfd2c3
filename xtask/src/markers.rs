//! `markers`: no merge-conflict markers in the repository's text files.
//!
//! A merge that left `<<<<<<<`/`>>>>>>>` lines in a Markdown file once reached main (f9e04b6,
//! docs/PERFORMANCE.md): the compiler catches them in code, nothing caught them in docs. This step
//! reads every file git tracks (binary files, those with a NUL byte, skipped) and fails on a line
//! that starts with seven `<` or `>` followed by a space or the line's end, the form git writes.

use std::path::Path;
use std::process::Command;

/// The lines of `text` that look like conflict markers, as (line number from 1, line).
#[must_use]
pub fn find(text: &str) -> Vec<(usize, &str)> {
    text.lines()
        .enumerate()
        .filter(|(_, line)| is_marker(line))
        .map(|(i, line)| (i + 1, line))
        .collect()
}

fn is_marker(line: &str) -> bool {
    ["<<<<<<<", ">>>>>>>"]
        .iter()
        .any(|m| line.strip_prefix(m).is_some_and(|rest| rest.is_empty() || rest.starts_with(' ')))
}

/// Checks every tracked text file under `root`.
///
/// # Errors
/// git could not list the files, or a file holds a marker (each is printed).
pub fn check(root: &Path) -> Result<(), String> {
    let out = Command::new("git")
        .arg("-C")
        .arg(root)
        .args(["ls-files", "-z"])
        .output()
        .map_err(|e| format!("cannot run git ls-files: {e}"))?;
    if !out.status.success() {
        return Err(format!("git ls-files exited with {}", out.status));
    }
    let mut found = 0usize;
    let mut files = 0usize;
    for name in out.stdout.split(|&b| b == 0).filter(|n| !n.is_empty()) {
        let name = String::from_utf8_lossy(name);
        let Ok(bytes) = std::fs::read(root.join(name.as_ref())) else {
            continue; // listed but absent (deleted in the work tree): nothing to check
        };
        if bytes.contains(&0) {
            continue;
        }
        files += 1;
        let text = String::from_utf8_lossy(&bytes);
        for (line, text) in find(&text) {
            println!("{name}:{line}: {text}");
            found += 1;
        }
    }
    if found == 0 {
        println!("markers: {files} text files, no conflict markers");
        Ok(())
    } else {
        Err(format!("{found} conflict marker line(s)"))
    }
}

#[cfg(test)]
mod tests {
    use super::find;

    #[test]
    fn git_conflict_markers_are_found_with_their_line_numbers() {
        let text = "a\n<<<<<<< HEAD\nb\n=======\nc\n>>>>>>> main\nd\n<<<<<<<\n";
        let found: Vec<usize> = find(text).iter().map(|&(n, _)| n).collect();
        assert_eq!(found, vec![2, 6, 8]);
    }

    #[test]
    fn arrows_that_are_not_markers_are_not_found() {
        let text = "<<<<<<<< eight\n>>>>>>>x\n  <<<<<<< indented\n> quote\n=======\n";
        assert!(find(text).is_empty());
    }
}
