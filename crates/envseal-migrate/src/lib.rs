#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod dotenvx;
pub mod sops;

/// Errors of the importers. Messages name keys and paths, never values or key material.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MigrateError {
    /// The file carries no sops metadata.
    #[error("not a sops-encrypted file (no sops metadata)")]
    NotSops,
    /// The file has no `encrypted:` value.
    #[error("no dotenvx `encrypted:` value in the file")]
    NotDotenvx,
    /// The input does not parse.
    #[error("malformed input: {0}")]
    Malformed(String),
    /// A feature of the file that envseal does not implement.
    #[error("not supported: {0}")]
    Unsupported(String),
    /// No key opened the sops data key.
    #[error("no key opened the sops data key ({})", .0.join("; "))]
    NoKeyOpened(Vec<String>),
    /// A sops value does not authenticate: wrong data key, altered, or moved to another path.
    #[error("the sops value at {0} was altered or moved (it does not authenticate)")]
    ValueTampered(String),
    /// sops's MAC does not match: values added, removed, changed or reordered.
    #[error("the sops MAC does not match: the file was altered after sops wrote it")]
    MacMismatch,
    /// No dotenvx private key opens this variable's value (or it was altered).
    #[error("no dotenvx private key opens {0} (wrong key, or the value was altered)")]
    WrongKey(String),
    /// An envseal store error (rebuilding the document).
    #[error("{0}")]
    Store(String),
}
