//! Errors, one variant per thing a user can act on. Messages never contain plaintext, keys,
//! wrapped keys or context values.

use envseal_core::KmsError;

/// Why one encrypted data key did not open.
#[derive(Debug)]
pub struct EdkAttempt {
    /// Index of the encrypted data key in the header.
    pub index: usize,
    /// Its key provider id (`aws-kms`, a raw AES key namespace, `envseal:local`, ...).
    pub provider_id: String,
    /// Its key provider info as text where it is text (the KMS key ARN, the raw key's name).
    pub key_name: String,
    /// What went wrong.
    pub error: EsdkError,
}

/// Errors of the ESDK message codec.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EsdkError {
    /// The input is not an ESDK message (first byte is neither 0x01 nor 0x02).
    #[error("not an AWS Encryption SDK message")]
    NotEsdk,
    /// A version-1 message (suites without key commitment), refused by the commitment policy.
    #[error(
        "message format version 1 (no key commitment) is refused: envseal enforces the commitment policy REQUIRE_ENCRYPT_REQUIRE_DECRYPT"
    )]
    CommitmentPolicy,
    /// A version-2 header naming a suite without key commitment or an unknown suite.
    #[error("unsupported algorithm suite 0x{id:04X}{}", name.map(|n| format!(" ({n}), refused by the commitment policy REQUIRE_ENCRYPT_REQUIRE_DECRYPT")).unwrap_or_default())]
    UnsupportedSuite {
        /// The suite id.
        id: u16,
        /// Its ESDK name, for a known suite without commitment.
        name: Option<&'static str>,
    },
    /// An unknown message format version.
    #[error("unsupported message format version {0}")]
    UnsupportedVersion(u8),
    /// A non-framed body (content type 0x01): its single tag would come after all the plaintext.
    #[error("non-framed message bodies are not supported (only framed bodies, content type 0x02)")]
    NonFramed,
    /// The header or a frame is malformed (the message says what, never the data).
    #[error("malformed message: {0}")]
    Malformed(String),
    /// The message ends before its end.
    #[error("the message is truncated")]
    Truncated,
    /// Bytes after the end of the message.
    #[error("unexpected bytes after the end of the message")]
    TrailingData,
    /// More encrypted data keys than the limit.
    #[error("the message has {count} encrypted data keys, more than the limit of {max} (--max-encrypted-data-keys)")]
    TooManyDataKeys {
        /// How many the header holds.
        count: usize,
        /// The limit.
        max: usize,
    },
    /// An invalid encryption context (the message names the key, never the value).
    #[error("invalid encryption context: {0}")]
    InvalidContext(String),
    /// The message's encryption context lacks an entry the caller required, or has another value.
    #[error("the message's encryption context does not contain the required entry {0:?}")]
    WrongContext(String),
    /// An invalid option (frame length, keyring set-up).
    #[error("{0}")]
    InvalidOptions(String),
    /// No keyring could open any of the encrypted data keys.
    #[error("no key opened the message ({})", describe(.0))]
    NoKeyOpened(Vec<EdkAttempt>),
    /// The keyring does not handle this encrypted data key (not an error of the key itself).
    #[error("no keyring for this encrypted data key")]
    NotMine,
    /// The wrapping key is not the one that wrapped this data key, or the wrapped key or the
    /// encryption context was altered.
    #[error("wrong wrapping key, or the wrapped data key or the encryption context was altered")]
    WrongKey,
    /// The data key does not match the message's key commitment: the header was altered, or a
    /// wrapped data key was replaced.
    #[error("the key commitment does not match: the header was altered or a wrapped data key was replaced")]
    CommitmentMismatch,
    /// The header authentication tag does not verify: the header was altered.
    #[error("the message header was altered (header authentication failed)")]
    HeaderTampered,
    /// A frame does not authenticate, or frames were reordered, dropped or duplicated.
    #[error("frame {sequence} was altered, reordered or dropped")]
    FrameTampered {
        /// Its sequence number (1-based).
        sequence: u32,
    },
    /// The signature does not verify.
    #[error("the message signature does not verify: the message was altered")]
    BadSignature,
    /// A signed message would have to be released before its signature is checked.
    #[error(
        "a signed message's plaintext can only be released after its signature verifies (use a staging file or a spool)"
    )]
    SignedNeedsStaging,
    /// The KMS refused or failed.
    #[error(transparent)]
    Kms(#[from] KmsError),
    /// Reading or writing failed.
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
}

fn describe(attempts: &[EdkAttempt]) -> String {
    if attempts.is_empty() {
        return "the message names no key this configuration can use".into();
    }
    attempts
        .iter()
        .map(|a| format!("#{} {} {}: {}", a.index, a.provider_id, a.key_name, a.error))
        .collect::<Vec<_>>()
        .join("; ")
}

impl EsdkError {
    pub(crate) fn malformed(what: impl Into<String>) -> Self {
        EsdkError::Malformed(what.into())
    }
}
