//! Plaintext key material and secret byte buffers.
//!
//! Both types are zeroized on drop, are not `Clone`, and print as `[REDACTED]`. The only way in
//! is `expose_secret()`.
//!
//! ```compile_fail
//! // DataKey is deliberately not Clone.
//! let k = envseal_core::DataKey::generate();
//! let _copy = k.clone();
//! ```

use std::fmt;

use zeroize::{Zeroize, Zeroizing};

use crate::error::KmsError;

/// Length of a data key in bytes (AES-256).
pub const DATA_KEY_LEN: usize = 32;

/// A 256-bit plaintext data key.
pub struct DataKey(Box<Zeroizing<[u8; DATA_KEY_LEN]>>);

impl DataKey {
    /// Wraps key bytes (the caller's copy should be zeroized by the caller).
    pub fn from_bytes(bytes: [u8; DATA_KEY_LEN]) -> Self {
        let mut b = bytes;
        let k = Self(Box::new(Zeroizing::new(b)));
        b.zeroize();
        k
    }

    /// Takes the key from a secret buffer that must be exactly 32 bytes.
    ///
    /// # Errors
    /// [`KmsError::InvalidCiphertext`] when the length is wrong (what a KMS returned is not a
    /// data key).
    pub fn try_from_secret(bytes: &SecretBytes) -> Result<Self, KmsError> {
        let s = bytes.expose_secret();
        if s.len() != DATA_KEY_LEN {
            return Err(KmsError::InvalidCiphertext);
        }
        let mut k = Box::new(Zeroizing::new([0u8; DATA_KEY_LEN]));
        k.copy_from_slice(s);
        Ok(Self(k))
    }

    /// A fresh key from the OS CSPRNG.
    ///
    /// # Panics
    /// If the OS random source fails, which leaves no safe way to continue.
    pub fn generate() -> Self {
        let mut k = Box::new(Zeroizing::new([0u8; DATA_KEY_LEN]));
        crate::random::fill(&mut k[..]);
        Self(k)
    }

    /// The key bytes.
    pub fn expose_secret(&self) -> &[u8; DATA_KEY_LEN] {
        &self.0
    }
}

impl fmt::Debug for DataKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DataKey([REDACTED])")
    }
}

/// A secret byte buffer (decrypted plaintext, KMS-decrypted small secrets).
pub struct SecretBytes(Zeroizing<Vec<u8>>);

impl SecretBytes {
    /// Takes ownership of `bytes`; they are zeroized when this is dropped.
    pub fn new(bytes: Vec<u8>) -> Self {
        Self(Zeroizing::new(bytes))
    }

    /// Copies from a slice.
    pub fn copy_from(bytes: &[u8]) -> Self {
        Self::new(bytes.to_vec())
    }

    /// The bytes.
    pub fn expose_secret(&self) -> &[u8] {
        &self.0
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Hands the buffer out, still zeroizing on drop.
    pub fn into_zeroizing(self) -> Zeroizing<Vec<u8>> {
        self.0
    }
}

impl From<Zeroizing<Vec<u8>>> for SecretBytes {
    fn from(v: Zeroizing<Vec<u8>>) -> Self {
        Self(v)
    }
}

impl fmt::Debug for SecretBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretBytes([REDACTED; {} bytes])", self.0.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_is_redacted() {
        let k = DataKey::from_bytes([0x41; 32]);
        let d = format!("{k:?}");
        assert_eq!(d, "DataKey([REDACTED])");
        let s = SecretBytes::copy_from(b"hunter2");
        assert!(!format!("{s:?}").contains("hunter2"));
    }

    #[test]
    fn generate_is_random() {
        assert_ne!(DataKey::generate().expose_secret(), DataKey::generate().expose_secret());
    }

    #[test]
    fn try_from_secret_checks_length() {
        assert!(DataKey::try_from_secret(&SecretBytes::new(vec![0; 31])).is_err());
        assert!(DataKey::try_from_secret(&SecretBytes::new(vec![7; 32])).is_ok());
    }
}
