//! The errors of the value-level stores.

use envseal_core::FormatError;

/// Errors of the value-level stores.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The input could not be parsed in its format (the message never quotes values).
    #[error("cannot parse {format} input: {message}")]
    Parse {
        /// Format name.
        format: &'static str,
        /// What is wrong, and where.
        message: String,
    },
    /// The file already carries envseal metadata.
    #[error("the file is already sealed")]
    AlreadySealed,
    /// The file carries no envseal metadata.
    #[error("the file is not sealed (no envseal metadata)")]
    NotSealed,
    /// The envseal metadata is present but invalid.
    #[error("invalid envseal metadata: {0}")]
    Metadata(String),
    /// No value at this key path.
    #[error("no value at {0}")]
    NoSuchKey(String),
    /// The key path cannot be used here (e.g. the reserved `envseal` key).
    #[error("invalid key path: {0}")]
    InvalidPath(String),
    /// A value that should be sealed is in clear in a sealed file.
    #[error("value at {0} is not sealed, but the file's rules say it must be")]
    UnsealedValue(String),
    /// The plain-keys rule is not a valid regular expression.
    #[error("invalid plain-keys regular expression: {0}")]
    BadRegex(String),
    /// Sealing or opening failed.
    #[error(transparent)]
    Core(#[from] envseal_core::Error),
}

impl From<FormatError> for StoreError {
    fn from(e: FormatError) -> Self {
        StoreError::Core(e.into())
    }
}
