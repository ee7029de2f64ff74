//! The wrapped blob: self-describing, so decryption finds the key object that wrapped it.
//!
//! ```text
//! offset  length  field
//! 0       3       magic "P11" (50 31 31)
//! 3       1       blob format version, 0x01
//! 4       1       L = length of the key name in bytes (1..=255)
//! 5       L       key name, UTF-8 (the CKA_LABEL of the key objects; never an alias)
//! 5+L     4       key version N, u32 big-endian (>= 1): the object with CKA_ID "<name>#v<N>"
//! 9+L     12      AES-GCM IV (random, from the OS CSPRNG)
//! 21+L    n+16    CKM_AES_GCM ciphertext of the n-byte plaintext, then the 16-byte tag
//! ```
//!
//! The AES-GCM additional data is `header || EncryptionContext::canonical_bytes()`, where
//! `header` is bytes `0 .. 9+L` (magic, format version, name length, name, key version): the
//! name and version cannot be swapped, and the context is bound (FORMAT.md §2.3 encoding).

use envseal_core::KmsError;

/// Backend name, recorded in every [`WrappedKey`](envseal_core::WrappedKey) this backend makes
/// (whose blob is in this format).
pub const BACKEND: &str = "pkcs11";

/// Magic bytes at the start of every blob.
pub const MAGIC: &[u8; 3] = b"P11";
/// The blob format version this build writes and reads.
pub const FORMAT_VERSION: u8 = 1;
/// AES-GCM IV length.
pub const IV_LEN: usize = 12;
/// AES-GCM tag length.
pub const TAG_LEN: usize = 16;
/// Longest key name a blob can carry.
pub const MAX_NAME_LEN: usize = 255;

/// A parsed blob (borrowing the input).
#[derive(Debug, PartialEq, Eq)]
pub struct Blob<'a> {
    /// Key name.
    pub name: &'a str,
    /// Key version (>= 1).
    pub version: u32,
    /// IV.
    pub iv: [u8; IV_LEN],
    /// Ciphertext then tag.
    pub ciphertext: &'a [u8],
    /// Bytes `0 .. 9+L`, the authenticated header.
    pub header: &'a [u8],
}

/// The header for `name` and `version`.
pub fn header(name: &str, version: u32) -> Vec<u8> {
    debug_assert!(!name.is_empty() && name.len() <= MAX_NAME_LEN && version >= 1);
    let mut h = Vec::with_capacity(9 + name.len());
    h.extend_from_slice(MAGIC);
    h.push(FORMAT_VERSION);
    // Key names are checked to be 1..=255 bytes before any object is created or used.
    h.push(name.len() as u8);
    h.extend_from_slice(name.as_bytes());
    h.extend_from_slice(&version.to_be_bytes());
    h
}

/// The AES-GCM additional data: `header || canonical_context`.
pub fn aad(header: &[u8], canonical_context: &[u8]) -> Vec<u8> {
    let mut aad = Vec::with_capacity(header.len() + canonical_context.len());
    aad.extend_from_slice(header);
    aad.extend_from_slice(canonical_context);
    aad
}

/// `header || iv || ciphertext_and_tag`.
pub fn assemble(header: &[u8], iv: &[u8; IV_LEN], ciphertext: &[u8]) -> Vec<u8> {
    let mut blob = Vec::with_capacity(header.len() + IV_LEN + ciphertext.len());
    blob.extend_from_slice(header);
    blob.extend_from_slice(iv);
    blob.extend_from_slice(ciphertext);
    blob
}

/// Parses a blob.
///
/// # Errors
/// [`KmsError::InvalidCiphertext`] for a wrong magic or format version, a name length of 0, a
/// name that is not UTF-8, version 0, or input too short to hold the IV and a tag.
pub fn parse(blob: &[u8]) -> Result<Blob<'_>, KmsError> {
    let bad = || KmsError::InvalidCiphertext;
    if blob.len() < 5 || &blob[..3] != MAGIC || blob[3] != FORMAT_VERSION {
        return Err(bad());
    }
    let l = usize::from(blob[4]);
    if l == 0 || blob.len() < 9 + l + IV_LEN + TAG_LEN {
        return Err(bad());
    }
    let name = std::str::from_utf8(&blob[5..5 + l]).map_err(|_| bad())?;
    let version = u32::from_be_bytes([blob[5 + l], blob[6 + l], blob[7 + l], blob[8 + l]]);
    if version == 0 {
        return Err(bad());
    }
    let mut iv = [0u8; IV_LEN];
    iv.copy_from_slice(&blob[9 + l..9 + l + IV_LEN]);
    Ok(Blob { name, version, iv, ciphertext: &blob[9 + l + IV_LEN..], header: &blob[..9 + l] })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_is_as_documented() {
        let h = header("cmk", 2);
        assert_eq!(h, [b'P', b'1', b'1', 1, 3, b'c', b'm', b'k', 0, 0, 0, 2]);
        let blob = assemble(&h, &[7; 12], &[9; 48]);
        assert_eq!(blob.len(), 9 + 3 + 12 + 48);
        let p = parse(&blob).unwrap();
        assert_eq!((p.name, p.version, p.iv, p.ciphertext, p.header), ("cmk", 2, [7; 12], &[9u8; 48][..], &h[..]));
        assert_eq!(aad(&h, &[0, 0]), [&h[..], &[0, 0]].concat());
    }

    #[test]
    fn rejects_malformed() {
        let good = assemble(&header("k", 1), &[0; 12], &[0; 16]);
        assert!(parse(&good).is_ok());
        for i in 0..good.len() {
            assert!(matches!(parse(&good[..i]), Err(KmsError::InvalidCiphertext)), "truncated at {i}");
        }
        let mut b = good.clone();
        b[0] = b'X';
        assert!(parse(&b).is_err());
        let mut b = good.clone();
        b[3] = 2;
        assert!(parse(&b).is_err());
        let mut b = good.clone();
        b[4] = 0;
        assert!(parse(&b).is_err());
        let mut b = good.clone();
        b[5] = 0xff;
        assert!(parse(&b).is_err());
        let b = assemble(&[&header("k", 1)[..6], &[0, 0, 0, 0]].concat(), &[0; 12], &[0; 16]);
        assert!(parse(&b).is_err(), "version 0");
    }
}
