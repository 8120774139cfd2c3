//! The one printer every command writes through: text for a person or one JSON object per
//! line, chosen once by `--json`.

use std::io::Write;

use serde_json::Value;

use crate::error::Error;

/// Writes a command's results.
pub struct Printer<'a> {
    out: &'a mut dyn Write,
    json: bool,
}

impl std::fmt::Debug for Printer<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Printer").field("json", &self.json).finish_non_exhaustive()
    }
}

#[allow(clippy::needless_pass_by_value, reason = "used as a map_err function")]
fn io(e: std::io::Error) -> Error {
    Error::Protocol(format!("output: {e}"))
}

impl<'a> Printer<'a> {
    /// A printer writing to `out`.
    pub fn new(out: &'a mut dyn Write, json: bool) -> Self {
        Self { out, json }
    }

    /// True for `--json`.
    #[must_use]
    pub const fn json(&self) -> bool {
        self.json
    }

    /// One result: `value` as a JSON line, or the lines `text` makes.
    ///
    /// # Errors
    /// The output failed (a closed pipe).
    pub fn emit<I: IntoIterator<Item = String>>(
        &mut self,
        value: impl FnOnce() -> Value,
        text: impl FnOnce() -> I,
    ) -> Result<(), Error> {
        if self.json {
            writeln!(self.out, "{}", value()).map_err(io)?;
        } else {
            for line in text() {
                writeln!(self.out, "{line}").map_err(io)?;
            }
        }
        self.out.flush().map_err(io)
    }

    /// One result of a single text line.
    ///
    /// # Errors
    /// The output failed.
    pub fn line(
        &mut self,
        value: impl FnOnce() -> Value,
        text: impl FnOnce() -> String,
    ) -> Result<(), Error> {
        self.emit(value, || [text()])
    }

    /// An error, in the chosen format, on the output stream (JSON only: text errors go to
    /// stderr).
    pub fn error(&mut self, e: &Error) {
        if self.json {
            let _ = writeln!(
                self.out,
                "{}",
                serde_json::json!({"error": e.to_string(), "exit_code": e.exit_code()})
            );
        }
    }
}
