//! Errors, by what the caller can do about them. No variant carries a value, plaintext, key
//! material or wrapped-key bytes: only names, key ids, sizes and static descriptions.

use envseal_core::{FormatError, KmsError};

use crate::keyref::KeyId;

/// Errors of a key vault backend.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VaultError {
    /// An entry with this id (or, for index keys, this generation) already exists.
    #[error("the key vault already holds this entry")]
    Conflict,
    /// A stored entry does not parse (a column with the wrong type or length).
    #[error("corrupt key-vault entry: {0}")]
    Corrupt(&'static str),
    /// The store failed (connection, SQL, I/O). The message comes from the database driver.
    #[error("key vault storage: {0}")]
    Storage(String),
}

/// Any error of this crate.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A format, context or KMS error from the core (wrong key, tampered value, KMS denied,
    /// throttled, unreachable, ...).
    #[error(transparent)]
    Core(#[from] envseal_core::Error),
    /// The value names a data key that is not in the key vault (the vault is another one, or the
    /// entry was deleted).
    #[error("data key {key} is not in the key vault")]
    UnknownKey {
        /// The key id the value names.
        key: KeyId,
    },
    /// The value's data key belongs to another column (or index): it was copied there.
    #[error("the value's data key belongs to {found}, not to {expected}")]
    WrongScope {
        /// `table.column` the caller opened.
        expected: String,
        /// `table.column` the key was made for.
        found: String,
    },
    /// The key vault failed.
    #[error(transparent)]
    Vault(#[from] VaultError),
    /// A schema mistake: invalid table, column or index name, index bits out of range, a base
    /// context that uses reserved keys, an index whose definition differs from the one in the
    /// key vault.
    #[error("{0}")]
    Schema(String),
    /// An opened value does not decode as the field's type (the column holds another type).
    #[error("the value of {column} does not decode as {expected}")]
    Decode {
        /// `table.column`.
        column: String,
        /// The expected type.
        expected: &'static str,
    },
    /// The database failed (the message comes from the driver: SQL errors, connection).
    #[error("database: {0}")]
    Database(String),
    /// A rotation job could not finish: rows are still under old keys after every sweep.
    #[error(
        "{remaining} row(s) are still under old keys after {sweeps} sweep(s): is a writer still using a data key cached before the job started? Run the job again later"
    )]
    Unfinished {
        /// Rows still to do.
        remaining: u64,
        /// Sweeps made.
        sweeps: u32,
    },
}

impl From<FormatError> for Error {
    fn from(e: FormatError) -> Self {
        Error::Core(e.into())
    }
}

impl From<KmsError> for Error {
    fn from(e: KmsError) -> Self {
        Error::Core(e.into())
    }
}

impl Error {
    /// Whether retrying later may succeed (KMS throttled or temporarily unavailable).
    pub fn is_retryable(&self) -> bool {
        matches!(self, Error::Core(e) if e.is_retryable())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_carry_no_secrets() {
        let id = KeyId([0xab; 8]);
        let all = [
            Error::UnknownKey { key: id },
            Error::WrongScope { expected: "users.email".into(), found: "users.ssn".into() },
            Error::Vault(VaultError::Conflict),
            Error::Schema("x".into()),
            Error::Decode { column: "users.email".into(), expected: "UTF-8 text" },
            Error::Unfinished { remaining: 3, sweeps: 2 },
            FormatError::ValueTampered.into(),
        ];
        for e in all {
            let s = e.to_string();
            assert!(!s.is_empty());
            assert!(!s.contains("hunter2"));
        }
    }
}
