//! What a manifest error says: the place (file, line, column) and the field, then the problem.

use std::fmt;
use std::path::PathBuf;

/// A place in the manifest file; line and column are 1-based, the column counts characters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Location {
    pub file: PathBuf,
    pub line: usize,
    pub column: usize,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.file.display(), self.line, self.column)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("cannot read pipeline file {}: {cause}", path.display())]
    Read {
        path: PathBuf,
        cause: std::io::Error,
    },
    /// TOML syntax and serde errors (unknown keys, wrong types); the message starts with the
    /// field path when one is known.
    #[error("{at}: {message}")]
    Syntax { at: Location, message: String },
    /// A value that parsed but is not acceptable.
    #[error("{at}: {field}: {message}")]
    Invalid {
        at: Location,
        field: String,
        message: String,
    },
    /// A whole section is missing.
    #[error("{}: {message}", path.display())]
    Missing { path: PathBuf, message: String },
}
