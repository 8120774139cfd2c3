//! Service names: what a lookup asks for and a registration claims.
//!
//! ASCII letters, digits, `-`, `_` and `.`, starting with a letter or digit, at most
//! [`MAX_LEN`] characters, compared without case (kept in lower case). `teredo` is built in:
//! it always means the Teredo client's current UDP port and cannot be registered.

use std::fmt;

use serde::{Deserialize, Serialize};

/// The built-in name of the Teredo client's port.
pub const TEREDO: &str = "teredo";
/// The longest name, in characters.
pub const MAX_LEN: usize = 63;

/// A valid service name, lower case.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ServiceName(String);

/// Why a string is not a service name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NameError {
    /// Empty.
    Empty,
    /// Longer than [`MAX_LEN`].
    TooLong,
    /// A character outside the allowed set (or a leading `-`, `_`, `.`).
    BadChar(char),
}

impl fmt::Display for NameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Empty => f.write_str("a service name must not be empty"),
            Self::TooLong => write!(f, "a service name has at most {MAX_LEN} characters"),
            Self::BadChar(c) => write!(
                f,
                "{c:?} is not allowed in a service name (letters, digits, '-', '_', '.', starting with a letter or digit)"
            ),
        }
    }
}

impl std::error::Error for NameError {}

impl ServiceName {
    /// Validates and lower-cases `s`.
    ///
    /// # Errors
    /// [`NameError`].
    pub fn parse(s: &str) -> Result<Self, NameError> {
        if s.is_empty() {
            return Err(NameError::Empty);
        }
        if s.chars().count() > MAX_LEN {
            return Err(NameError::TooLong);
        }
        for (i, c) in s.chars().enumerate() {
            let ok = c.is_ascii_alphanumeric() || (i > 0 && matches!(c, '-' | '_' | '.'));
            if !ok {
                return Err(NameError::BadChar(c));
            }
        }
        Ok(Self(s.to_ascii_lowercase()))
    }

    /// The name.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// True for the built-in `teredo`.
    #[must_use]
    pub fn is_teredo(&self) -> bool {
        self.0 == TEREDO
    }
}

impl fmt::Display for ServiceName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // `pad` honours width and alignment (`{:<24}`).
        f.pad(&self.0)
    }
}

impl TryFrom<String> for ServiceName {
    type Error = NameError;
    fn try_from(s: String) -> Result<Self, NameError> {
        Self::parse(&s)
    }
}

impl From<ServiceName> for String {
    fn from(n: ServiceName) -> Self {
        n.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_validated_and_compared_without_case() {
        assert_eq!(ServiceName::parse("Web-API.v2").unwrap().as_str(), "web-api.v2");
        assert!(ServiceName::parse("TEREDO").unwrap().is_teredo());
        assert_eq!(ServiceName::parse(""), Err(NameError::Empty));
        assert_eq!(ServiceName::parse("-x"), Err(NameError::BadChar('-')));
        assert_eq!(ServiceName::parse("a b"), Err(NameError::BadChar(' ')));
        assert_eq!(ServiceName::parse("é"), Err(NameError::BadChar('é')));
        assert_eq!(ServiceName::parse(&"a".repeat(63)).map(|n| n.0.len()), Ok(63));
        assert_eq!(ServiceName::parse(&"a".repeat(64)), Err(NameError::TooLong));
    }
}
