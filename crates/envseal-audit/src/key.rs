//! The audit key: 32 random bytes that MAC checkpoints, kept apart from the log.

use std::fmt;
use std::io::Write;
use std::path::Path;

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

    /// Writes the key file atomically with mode 0600 (temp file, fsync, rename).
    ///
    /// # Errors
    /// [`AuditError::Io`].
    pub fn save(&self, path: &Path) -> Result<(), AuditError> {
        let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
        let tmp = dir.join(format!(
            ".{}.tmp-{}",
            path.file_name().and_then(|n| n.to_str()).unwrap_or("audit.key"),
            std::process::id()
        ));
        let write = || -> std::io::Result<()> {
            let mut o = std::fs::OpenOptions::new();
            o.write(true).create_new(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut o, 0o600);
            let mut f = o.open(&tmp)?;
            let text = Zeroizing::new(hex::encode(self.bytes.as_ref()));
            f.write_all(text.as_bytes())?;
            f.write_all(b"\n")?;
            f.sync_all()?;
            std::fs::rename(&tmp, path)?;
            if let Ok(d) = std::fs::File::open(dir) {
                let _ = d.sync_all();
            }
            Ok(())
        };
        write().map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            AuditError::Io { what: format!("writing {}", path.display()), source: e }
        })
    }

    /// The key's id: the first 16 hex digits of SHA-256 of the key.
    pub fn id(&self) -> String {
        hex::encode(&Sha256::digest(self.bytes.as_ref())[..8])
    }

    pub(crate) fn bytes(&self) -> &[u8] {
        self.bytes.as_ref()
    }
}
