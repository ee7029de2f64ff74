//! Errors, split by what a user can do about them.
//!
//! No variant ever carries plaintext, key material, wrapped-key bytes, tokens or PINs: only
//! key ids, versions, sizes, indexes and static descriptions.

use std::io;
use std::sync::Arc;

/// Errors reported by a KMS backend (or mapped from its API errors).
#[derive(Clone, Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KmsError {
    /// No key with this id or alias exists (or the caller may not see it).
    #[error("KMS key not found: {key}")]
    KeyNotFound {
        /// The key id or alias as given.
        key: String,
    },
    /// The key exists but not this version.
    #[error("version {version} of KMS key {key} not found")]
    KeyVersionNotFound {
        /// Key id.
        key: String,
        /// Key version.
        version: String,
    },
    /// The key is disabled: enable it to use it.
    #[error("KMS key {key} is disabled")]
    KeyDisabled {
        /// Key id.
        key: String,
    },
    /// The key is scheduled for deletion: cancel the deletion to use it again.
    #[error("KMS key {key} is pending deletion")]
    KeyPendingDeletion {
        /// Key id.
        key: String,
    },
    /// The data was wrapped under a key version older than the key's minimum decryption
    /// version: rewrap it (`envseal rewrap --to-latest`) with an operator who may lower the
    /// minimum, or restore the old minimum.
    #[error("KMS key {key} version {version} is below the minimum decryption version {min}")]
    KeyVersionBelowMinimum {
        /// Key id.
        key: String,
        /// Version that wrapped the data.
        version: String,
        /// Minimum decryption version in force.
        min: String,
    },
    /// The caller is not allowed to perform this operation on this key.
    #[error("access denied by the KMS: {message}")]
    AccessDenied {
        /// The KMS's explanation (never secret).
        message: String,
    },
    /// The encryption context given does not match the one the data was wrapped with.
    #[error("wrong encryption context for this wrapped key")]
    WrongContext,
    /// The wrapped key (ciphertext blob) is malformed, was altered, or belongs to another KMS.
    #[error("invalid or tampered KMS ciphertext")]
    InvalidCiphertext,
    /// Direct encryption is limited in size: use envelope encryption for larger data.
    #[error("plaintext of {size} bytes exceeds the KMS direct-encryption limit of {limit} bytes")]
    PlaintextTooLarge {
        /// Size given.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// The KMS is rate-limiting the caller: retry with backoff.
    #[error("KMS request throttled: {message}")]
    Throttled {
        /// The KMS's explanation.
        message: String,
    },
    /// The KMS could not be reached or failed.
    #[error("KMS unavailable: {message}")]
    Unavailable {
        /// What went wrong.
        message: String,
        /// Whether retrying the same request may succeed.
        retryable: bool,
    },
    /// The request was invalid (bad argument, bad state transition).
    #[error("invalid KMS request: {message}")]
    InvalidRequest {
        /// What was wrong.
        message: String,
    },
    /// A key, alias or version with this name already exists.
    #[error("already exists: {what}")]
    AlreadyExists {
        /// What exists.
        what: String,
    },
    /// The backend does not support this operation.
    #[error("operation {operation} is not supported by the {backend} backend")]
    Unsupported {
        /// Operation name.
        operation: &'static str,
        /// Backend name.
        backend: String,
    },
}

impl KmsError {
    /// Whether the same request may succeed if retried later (throttling, transient outage).
    pub fn is_retryable(&self) -> bool {
        match self {
            KmsError::Throttled { .. } => true,
            KmsError::Unavailable { retryable, .. } => *retryable,
            _ => false,
        }
    }
}

/// Errors in a sealed format: parsing, authentication, limits.
#[derive(Clone, Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FormatError {
    /// The input does not start with envseal's magic bytes.
    #[error("not an envseal sealed file (bad magic)")]
    NotSealed,
    /// The format version is not one this build reads (sealed by a newer envseal?).
    #[error("unsupported format version {0}: upgrade envseal")]
    UnsupportedVersion(u8),
    /// The algorithm suite is not one this build knows.
    #[error("unsupported algorithm suite 0x{0:04x}")]
    UnsupportedSuite(u16),
    /// The input ended inside a structure (header, key entries, envelope).
    #[error("truncated input")]
    Truncated,
    /// A field has an invalid value.
    #[error("malformed input: {0}")]
    Malformed(&'static str),
    /// A length or count field exceeds its bound.
    #[error("{what} is {value}, out of bounds (limit {max})")]
    LimitExceeded {
        /// Which field.
        what: &'static str,
        /// Value found.
        value: u64,
        /// The bound.
        max: u64,
    },
    /// An encryption context given by the caller is invalid.
    #[error("invalid encryption context: {0}")]
    InvalidContext(String),
    /// The caller's expected context is not the one the data was sealed with.
    #[error("wrong encryption context: the data was sealed with a different context")]
    WrongContext,
    /// The data key opened, but it is not the key the data was sealed under (key commitment
    /// check failed): the commitment or a wrapped-key entry was replaced.
    #[error("key commitment mismatch: the wrapped key does not belong to this data")]
    CommitmentMismatch,
    /// The header was altered (its MAC under the data key does not verify).
    #[error("header tampered: authentication failed")]
    HeaderTampered,
    /// A wrapped-key entry was altered or moved from another file.
    #[error("wrapped-key entry {index} tampered or from another file")]
    KeyEntryTampered {
        /// Entry index, from 0.
        index: usize,
    },
    /// A body chunk failed authentication (altered, reordered, or from another file).
    #[error("chunk {index} tampered: authentication failed")]
    ChunkTampered {
        /// Chunk index, from 0.
        index: u64,
    },
    /// The body ends at a chunk boundary before the final chunk.
    #[error("truncated: the body ends after {chunks} complete chunk(s), without its final chunk")]
    TruncatedBody {
        /// Number of complete chunks read.
        chunks: u64,
    },
    /// Data follows the final chunk.
    #[error("extra data after the final chunk")]
    TrailingData,
    /// The whole-file MAC of a value-level sealed file does not match: an entry was added,
    /// removed, reordered, swapped or altered.
    #[error("file MAC mismatch: entries were added, removed, reordered or altered")]
    MacMismatch,
    /// A field envelope's value failed authentication (altered, or wrong context).
    #[error("sealed value tampered or opened with the wrong context")]
    ValueTampered,
}

/// Any error from sealing or opening. Cheap to clone (an I/O error is shared), so that one
/// failure can be reported for every item it affects.
#[derive(Clone, Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A format error.
    #[error(transparent)]
    Format(#[from] FormatError),
    /// A KMS error.
    #[error(transparent)]
    Kms(#[from] KmsError),
    /// No KMS was given for the backend a wrapped-key entry names.
    #[error("no KMS configured for the {backend} backend that holds this data's key")]
    NoBackend {
        /// Backend name recorded in the entry.
        backend: String,
    },
    /// A wrapped-key entry names a key outside the keys the reader trusts for this data
    /// ([`crate::entries::Trust`]); it was not sent to any KMS.
    #[error("wrapped key {backend}:{key_id} is not among the keys allowed for this data")]
    KeyNotAllowed {
        /// Backend name recorded in the entry.
        backend: String,
        /// Key id recorded in the entry (unauthenticated).
        key_id: String,
    },
    /// None of several wrapped-key entries could be opened.
    #[error("no wrapped-key entry could be opened ({})", summarize(.0))]
    NoKeyOpened(Vec<KeyAttempt>),
    /// An I/O error on the input or output.
    #[error("I/O error: {0}")]
    Io(Arc<io::Error>),
}

impl From<io::Error> for Error {
    fn from(e: io::Error) -> Self {
        Error::Io(Arc::new(e))
    }
}

/// One failed attempt to open a wrapped-key entry.
#[derive(Clone, Debug)]
pub struct KeyAttempt {
    /// Entry index.
    pub index: usize,
    /// Backend name of the entry.
    pub backend: String,
    /// Key id of the entry.
    pub key_id: String,
    /// Why it failed.
    pub error: Error,
}

fn summarize(attempts: &[KeyAttempt]) -> String {
    attempts
        .iter()
        .map(|a| format!("entry {} {}:{}: {}", a.index, a.backend, a.key_id, a.error))
        .collect::<Vec<_>>()
        .join("; ")
}

impl Error {
    /// Whether every entry was refused because no entry names a trusted key (no KMS was asked).
    pub fn is_not_allowed(&self) -> bool {
        match self {
            Error::KeyNotAllowed { .. } => true,
            Error::NoKeyOpened(a) => !a.is_empty() && a.iter().all(|a| a.error.is_not_allowed()),
            _ => false,
        }
    }

    /// Whether retrying later may succeed (KMS throttled or temporarily unavailable).
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Kms(e) => e.is_retryable(),
            Error::NoKeyOpened(a) => a.iter().any(|a| a.error.is_retryable()),
            _ => false,
        }
    }
}

/// Result alias for this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
