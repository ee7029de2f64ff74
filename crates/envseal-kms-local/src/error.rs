//! Errors of the local keystore, split by what a user can do about them.
//!
//! No variant carries a passphrase, a master key, key material, plaintext or wrapped bytes: only
//! paths, modes, key ids, counts and static descriptions. A JSON parse error keeps its category
//! and position, never serde's message (which can quote the offending value).

use std::io;
use std::path::PathBuf;

use envseal_core::KmsError;

/// Errors opening, creating or updating a local keystore.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LocalError {
    /// No keystore in this directory.
    #[error("no keystore at {}: run `envseal init`", dir.display())]
    NotFound {
        /// The keystore directory.
        dir: PathBuf,
    },
    /// The keystore is protected by a passphrase, and none was given (no `ENVSEAL_PASSPHRASE`,
    /// nobody to ask).
    #[error("the keystore at {} needs its passphrase", dir.display())]
    PassphraseNeeded {
        /// The keystore directory.
        dir: PathBuf,
    },
    /// [`LocalKms::init`](crate::LocalKms::init) found a keystore already there.
    #[error("a keystore already exists at {}", dir.display())]
    AlreadyExists {
        /// The keystore directory.
        dir: PathBuf,
    },
    /// The keystore directory or one of its files can be read or written by group or others.
    #[error(
        "{} is accessible by group or others (mode {:04o}): run `chmod {} {}`",
        path.display(),
        mode,
        if *is_dir { "700" } else { "600" },
        path.display()
    )]
    InsecurePermissions {
        /// The offending path.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
        /// Whether it is the directory (fix: 700) rather than a file (fix: 600).
        is_dir: bool,
    },
    /// A keystore file is a symbolic link, which the keystore refuses to follow.
    #[error("{} is a symbolic link: keystore files must be regular files", path.display())]
    Symlink {
        /// The link.
        path: PathBuf,
    },
    /// A keystore path exists but is not a regular file (or not a directory, for the keystore).
    #[error("{} is not a {}", path.display(), expected)]
    NotRegular {
        /// The path.
        path: PathBuf,
        /// `regular file` or `directory`.
        expected: &'static str,
    },
    /// The keystore is protected by another unlock mode than the one given.
    #[error("the keystore at {} is protected by a {found}, not a {given}", dir.display())]
    WrongUnlockMode {
        /// The keystore directory.
        dir: PathBuf,
        /// The mode recorded in the keystore (`passphrase` or `master key file`).
        found: &'static str,
        /// The mode given (`passphrase` or `master key file`).
        given: &'static str,
    },
    /// The passphrase does not open this keystore.
    #[error("wrong passphrase for the keystore at {}", dir.display())]
    WrongPassphrase {
        /// The keystore directory.
        dir: PathBuf,
    },
    /// The master key file does not open this keystore.
    #[error("the master key in {} does not open the keystore at {}", key_file.display(), dir.display())]
    WrongMasterKey {
        /// The keystore directory.
        dir: PathBuf,
        /// The master key file used.
        key_file: PathBuf,
    },
    /// The master key file is missing or malformed.
    #[error("master key file {}: {reason}", path.display())]
    MasterKeyFile {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: &'static str,
    },
    /// The keystore file cannot be parsed or violates the format.
    #[error("corrupt keystore file {}: {reason}", path.display())]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong (never a value from the file).
        reason: String,
    },
    /// The keystore was written by a newer envseal.
    #[error("keystore format version {found} in {} is not supported by this build: upgrade envseal", path.display())]
    UnsupportedVersion {
        /// The file.
        path: PathBuf,
        /// Version found.
        found: u32,
    },
    /// The keystore directory now holds another keystore than the one opened.
    #[error("the keystore at {} was replaced by another one: open it again", dir.display())]
    Replaced {
        /// The keystore directory.
        dir: PathBuf,
    },
    /// An option given to create the keystore is invalid.
    #[error("invalid keystore option: {0}")]
    InvalidOption(&'static str),
    /// No keystore directory could be found from the environment.
    #[error("cannot locate the keystore: set ENVSEAL_HOME (neither XDG_DATA_HOME nor HOME is set)")]
    NoHome,
    /// A file-system operation failed.
    #[error("I/O error on {}: {source}", path.display())]
    Io {
        /// The path involved.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
}

impl LocalError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: io::Error) -> Self {
        LocalError::Io { path: path.into(), source }
    }

    pub(crate) fn corrupt(path: impl Into<PathBuf>, reason: impl Into<String>) -> Self {
        LocalError::Corrupt { path: path.into(), reason: reason.into() }
    }
}

impl From<LocalError> for KmsError {
    /// Keystore problems met during a key operation (I/O, permissions, corruption) mean the
    /// keystore cannot serve the request.
    fn from(e: LocalError) -> Self {
        match e {
            LocalError::Io { ref source, .. } => {
                let retryable = matches!(source.kind(), io::ErrorKind::Interrupted | io::ErrorKind::WouldBlock);
                KmsError::Unavailable { message: e.to_string(), retryable }
            }
            other => KmsError::Unavailable { message: other.to_string(), retryable: false },
        }
    }
}
