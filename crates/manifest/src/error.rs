//! Manifest errors. Each one names the file and, when it is about the content, the line, column
//! and field path, formatted like `hello.yaml:7:23: containers[0].ports[1].containerPort: must be 1-65535`
//! so editors and terminals can jump to it.

use std::fmt;
use std::io;
use std::path::PathBuf;

use thiserror::Error;

/// A position in a manifest file: 1-based line and column (columns count characters).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Location {
    /// The manifest file, as given by the caller.
    pub file: PathBuf,
    /// 1-based line.
    pub line: usize,
    /// 1-based column, in characters.
    pub column: usize,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.file.display(), self.line, self.column)
    }
}

/// One problem with a manifest.
#[derive(Debug, Error)]
pub enum ManifestError {
    /// The manifest file could not be read (including when it is not UTF-8).
    #[error("{}: cannot read manifest: {source}", path.display())]
    Read {
        /// The file that could not be read.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// The manifest is larger than [`crate::MAX_MANIFEST_BYTES`].
    #[error("{}: manifest is larger than the {limit}-byte limit", file.display())]
    TooLarge {
        /// The manifest file.
        file: PathBuf,
        /// The limit that was exceeded, in bytes.
        limit: usize,
    },
    /// The YAML itself is malformed, or uses something manifests refuse (aliases, deep nesting,
    /// several documents, duplicate keys).
    #[error("{location}: {message}")]
    Syntax {
        /// Where the problem is.
        location: Location,
        /// What is wrong.
        message: String,
    },
    /// A field is unknown, missing, of the wrong type, or breaks a validation rule.
    #[error("{location}: {}", with_path(path, message))]
    Invalid {
        /// Where the offending value (or unknown key) starts.
        location: Location,
        /// The field path, like `containers[0].ports[1].containerPort`; empty for the whole document.
        path: String,
        /// What is wrong.
        message: String,
    },
}

fn with_path(path: &str, message: &str) -> String {
    if path.is_empty() { message.to_owned() } else { format!("{path}: {message}") }
}

impl ManifestError {
    /// Where the error is in the file, when it is about the file's content.
    pub fn location(&self) -> Option<&Location> {
        match self {
            ManifestError::Syntax { location, .. } | ManifestError::Invalid { location, .. } => Some(location),
            ManifestError::Read { .. } | ManifestError::TooLarge { .. } => None,
        }
    }
}

/// Every problem found in a manifest, in source order; never empty when returned as an error.
#[derive(Debug, Error)]
pub struct ManifestErrors(pub Vec<ManifestError>);

impl ManifestErrors {
    /// The individual errors.
    pub fn errors(&self) -> &[ManifestError] {
        &self.0
    }
}

impl From<ManifestError> for ManifestErrors {
    fn from(error: ManifestError) -> Self {
        ManifestErrors(vec![error])
    }
}

/// One error per line, so all of them show up in a terminal.
impl fmt::Display for ManifestErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, error) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{error}")?;
        }
        Ok(())
    }
}
