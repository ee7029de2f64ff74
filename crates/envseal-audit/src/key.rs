//! The audit key: 32 random bytes that MAC checkpoints, kept apart from the log.

use std::fmt;
use std::path::Path;

use envseal_support::atomic::{self, Mode};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::{AuditError, io};

/// A 256-bit HMAC key for checkpoints. Never printed; zeroized on drop.
pub struct AuditKey {
    bytes: Zeroizing<[u8; 32]>,
}

impl fmt::Debug for AuditKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuditKey").field("id", &self.id()).finish_non_exhaustive()
    }
}

impl AuditKey {
    /// A fresh key from the OS random number generator.
    pub fn generate() -> Self {
        let mut bytes = Zeroizing::new([0u8; 32]);
        getrandom::fill(bytes.as_mut()).expect("OS random number generator failed");
        Self { bytes }
    }

    /// A key from its bytes (tests, and keys kept in another secret store).
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self { bytes: Zeroizing::new(bytes) }
    }

    /// Reads a key file: 64 hex characters (surrounding whitespace ignored).
    ///
    /// # Errors
    /// [`AuditError::Io`], or [`AuditError::BadKey`] for anything but 32 bytes in hex.
    pub fn load(path: &Path) -> Result<Self, AuditError> {
        let text = Zeroizing::new(std::fs::read_to_string(path).map_err(io(format!("reading {}", path.display())))?);
        let mut bytes = Zeroizing::new([0u8; 32]);
        hex::decode_to_slice(text.trim(), bytes.as_mut())
            .map_err(|_| AuditError::BadKey(path.display().to_string()))?;
        Ok(Self { bytes })
    }

    /// Writes the key file atomically with mode 0600 ([`envseal_support::atomic`]: temp file
    /// in the same directory, fsync, rename, fsync the directory).
    ///
    /// # Errors
    /// [`AuditError::Io`].
    pub fn save(&self, path: &Path) -> Result<(), AuditError> {
        let mut text = Zeroizing::new([0u8; 65]);
        // Invariant: 32 bytes are 64 hex digits, the size of the slice given.
        hex::encode_to_slice(self.bytes.as_ref(), &mut text[..64]).expect("64 hex digits");
        text[64] = b'\n';
        atomic::write(path, text.as_ref(), Mode::Fixed(0o600))
            .map(drop)
            .map_err(io(format!("writing {}", path.display())))
    }

    /// The key's id: the first 16 hex digits of SHA-256 of the key.
    pub fn id(&self) -> String {
        hex::encode(&Sha256::digest(self.bytes.as_ref())[..8])
    }

    pub(crate) fn bytes(&self) -> &[u8] {
        self.bytes.as_ref()
    }
}
