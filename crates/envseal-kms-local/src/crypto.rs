//! The keystore's cryptography (README §Cryptography): the key-encryption key, the check value,
//! key material at rest, and the wrapped blob.

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use hmac::{KeyInit, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use envseal_core::KmsError;
use envseal_core::random;

/// Keystore id length in bytes.
pub(crate) const KEYSTORE_ID_LEN: usize = 16;
/// A keystore id.
pub(crate) type KeystoreId = [u8; KEYSTORE_ID_LEN];
/// AES-256 key, key material and KEK length.
pub(crate) const KEY_LEN: usize = 32;
/// AES-GCM nonce length.
pub(crate) const NONCE_LEN: usize = 12;
/// AES-GCM tag length.
pub(crate) const TAG_LEN: usize = 16;
/// Length of the context check in a blob.
pub(crate) const CONTEXT_CHECK_LEN: usize = 16;
/// Blob magic.
pub(crate) const BLOB_MAGIC: &[u8; 3] = b"LK1";
/// Longest key id (its length is one byte in blobs and material AAD).
pub(crate) const MAX_KEY_ID_LEN: usize = 255;

/// KEK from a master key: HMAC-SHA-256(master key, LABEL_KEK || keystore id).
const LABEL_KEK: &[u8] = b"envseal-local/v1/kek";
/// Plaintext and AAD prefix of the check value.
const LABEL_CHECK: &[u8] = b"envseal-local/v1/check";
/// AAD prefix of key material at rest.
const LABEL_MATERIAL: &[u8] = b"envseal-local/v1/material";
/// Wrapping key of a version: HMAC-SHA-256(material, LABEL_WRAP).
const LABEL_WRAP: &[u8] = b"envseal-local/v1/wrap-key";
/// Context-check key of a version: HMAC-SHA-256(material, LABEL_CONTEXT).
const LABEL_CONTEXT: &[u8] = b"envseal-local/v1/context-key";

/// HMAC-SHA-256(key, parts...).
fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> Zeroizing<[u8; 32]> {
    // Invariant: HMAC accepts keys of any length.
    let mut m = <hmac::Hmac<Sha256> as KeyInit>::new_from_slice(key).expect("HMAC takes any key length");
    for p in parts {
        m.update(p);
    }
    Zeroizing::new(m.finalize().into_bytes().into())
}

fn aead_key(key: &[u8; KEY_LEN]) -> LessSafeKey {
    // Invariant: the key is 32 bytes, which AES-256-GCM accepts.
    LessSafeKey::new(UnboundKey::new(&AES_256_GCM, key).expect("32-byte AES-256-GCM key"))
}

/// AES-256-GCM with a fresh random nonce: returns `nonce || ciphertext || tag`.
fn seal(key: &[u8; KEY_LEN], aad: &[u8], plaintext: &[u8]) -> Vec<u8> {
    let nonce: [u8; NONCE_LEN] = random::array();
    let mut out = Vec::with_capacity(NONCE_LEN + plaintext.len() + TAG_LEN);
    out.extend_from_slice(&nonce);
    seal_append(key, &nonce, aad, plaintext, &mut out);
    out
}

/// Appends `ciphertext || tag` to `out`. The plaintext is copied into `out` only after room for
/// the whole result is reserved, so no reallocation leaves a plaintext copy behind.
fn seal_append(key: &[u8; KEY_LEN], nonce: &[u8; NONCE_LEN], aad: &[u8], plaintext: &[u8], out: &mut Vec<u8>) {
    out.reserve_exact(plaintext.len() + TAG_LEN);
    let start = out.len();
    out.extend_from_slice(plaintext);
    // Invariant: AES-GCM sealing only fails above 2^36 bytes; inputs here are at most 6 KiB.
    let tag = aead_key(key)
        .seal_in_place_separate_tag(Nonce::assume_unique_for_key(*nonce), Aad::from(aad), &mut out[start..])
        .expect("AES-GCM input within limits");
    out.extend_from_slice(tag.as_ref());
}

/// Opens `ciphertext || tag`; `None` when authentication fails.
fn open(key: &[u8; KEY_LEN], nonce: &[u8; NONCE_LEN], aad: &[u8], sealed: &[u8]) -> Option<Zeroizing<Vec<u8>>> {
    if sealed.len() < TAG_LEN {
        return None;
    }
    let mut buf = Zeroizing::new(sealed.to_vec());
    let len =
        aead_key(key).open_in_place(Nonce::assume_unique_for_key(*nonce), Aad::from(aad), &mut buf[..]).ok()?.len();
    buf.truncate(len);
    Some(buf)
}

/// Opens `nonce || ciphertext || tag` as made by [`seal`].
fn open_prefixed(key: &[u8; KEY_LEN], aad: &[u8], sealed: &[u8]) -> Option<Zeroizing<Vec<u8>>> {
    let (nonce, rest) = sealed.split_first_chunk::<NONCE_LEN>()?;
    open(key, nonce, aad, rest)
}

/// The key-encryption key, which protects every version's material at rest.
pub(crate) struct Kek(Zeroizing<[u8; KEY_LEN]>);

impl Kek {
    /// KEK of a master-key-file keystore, bound to the keystore id.
    pub(crate) fn from_master_key(master: &[u8; KEY_LEN], keystore_id: &KeystoreId) -> Self {
        Self(hmac_sha256(master, &[LABEL_KEK, keystore_id]))
    }

    /// The KEK bytes, for known-answer tests only.
    #[cfg(test)]
    pub(crate) fn test_bytes(&self) -> &[u8; KEY_LEN] {
        &self.0
    }

    /// KEK of a passphrase keystore (the Argon2id output).
    pub(crate) fn from_bytes(bytes: Zeroizing<[u8; KEY_LEN]>) -> Self {
        Self(bytes)
    }

    /// The check value recorded in the keystore: `nonce || AES-256-GCM(KEK, nonce, LABEL_CHECK,
    /// aad = LABEL_CHECK || keystore id || mode)`.
    pub(crate) fn make_check(&self, keystore_id: &KeystoreId, mode: &str) -> Vec<u8> {
        seal(&self.0, &check_aad(keystore_id, mode), LABEL_CHECK)
    }

    /// Whether `check` opens under this KEK (the right passphrase or master key).
    pub(crate) fn verify_check(&self, keystore_id: &KeystoreId, mode: &str, check: &[u8]) -> bool {
        open_prefixed(&self.0, &check_aad(keystore_id, mode), check)
            .is_some_and(|pt| bool::from(pt.as_slice().ct_eq(LABEL_CHECK)))
    }

    /// Encrypts a version's material for storage.
    pub(crate) fn seal_material(
        &self,
        keystore_id: &KeystoreId,
        key_id: &str,
        version: u32,
        material: &[u8; KEY_LEN],
    ) -> Vec<u8> {
        seal(&self.0, &material_aad(keystore_id, key_id, version), material)
    }

    /// Decrypts a version's stored material; `None` if it is not authentic (altered, moved to
    /// another key or version, or from another keystore).
    pub(crate) fn open_material(
        &self,
        keystore_id: &KeystoreId,
        key_id: &str,
        version: u32,
        sealed: &[u8],
    ) -> Option<Zeroizing<[u8; KEY_LEN]>> {
        let pt = open_prefixed(&self.0, &material_aad(keystore_id, key_id, version), sealed)?;
        let mut m = Zeroizing::new([0u8; KEY_LEN]);
        if pt.len() != KEY_LEN {
            return None;
        }
        m.copy_from_slice(&pt);
        Some(m)
    }
}

fn check_aad(keystore_id: &KeystoreId, mode: &str) -> Vec<u8> {
    [LABEL_CHECK, keystore_id, mode.as_bytes()].concat()
}

/// `LABEL_MATERIAL || keystore id || u8 len(key id) || key id || u32 BE version`.
fn material_aad(keystore_id: &KeystoreId, key_id: &str, version: u32) -> Vec<u8> {
    let mut aad = Vec::with_capacity(LABEL_MATERIAL.len() + KEYSTORE_ID_LEN + 1 + key_id.len() + 4);
    aad.extend_from_slice(LABEL_MATERIAL);
    aad.extend_from_slice(keystore_id);
    push_key_id_and_version(&mut aad, key_id, version);
    aad
}

fn push_key_id_and_version(out: &mut Vec<u8>, key_id: &str, version: u32) {
    debug_assert!(!key_id.is_empty() && key_id.len() <= MAX_KEY_ID_LEN);
    // Key ids are validated to at most 255 bytes on load and generated at 36.
    out.push(key_id.len() as u8);
    out.extend_from_slice(key_id.as_bytes());
    out.extend_from_slice(&version.to_be_bytes());
}

/// The keys one version's material yields: the wrapping key and the context-check key.
pub(crate) struct VersionKeys {
    wrap: Zeroizing<[u8; KEY_LEN]>,
    context: Zeroizing<[u8; KEY_LEN]>,
}

impl VersionKeys {
    pub(crate) fn derive(material: &[u8; KEY_LEN]) -> Self {
        Self { wrap: hmac_sha256(material, &[LABEL_WRAP]), context: hmac_sha256(material, &[LABEL_CONTEXT]) }
    }

    fn context_check(&self, canonical_context: &[u8]) -> [u8; CONTEXT_CHECK_LEN] {
        let full = hmac_sha256(&self.context[..], &[canonical_context]);
        let mut out = [0u8; CONTEXT_CHECK_LEN];
        out.copy_from_slice(&full[..CONTEXT_CHECK_LEN]);
        out
    }
}

/// Builds a blob (README §Wrapped blob):
/// `"LK1" || keystore id || u8 len || key id || u32 BE version || context check || nonce ||
/// AES-256-GCM(wrap key, nonce, plaintext, aad = header || canonical context)`.
pub(crate) fn wrap(
    keys: &VersionKeys,
    keystore_id: &KeystoreId,
    key_id: &str,
    version: u32,
    canonical_context: &[u8],
    plaintext: &[u8],
) -> Vec<u8> {
    let mut blob = Vec::with_capacity(
        BLOB_MAGIC.len()
            + KEYSTORE_ID_LEN
            + 1
            + key_id.len()
            + 4
            + CONTEXT_CHECK_LEN
            + NONCE_LEN
            + plaintext.len()
            + TAG_LEN,
    );
    blob.extend_from_slice(BLOB_MAGIC);
    blob.extend_from_slice(keystore_id);
    push_key_id_and_version(&mut blob, key_id, version);
    let header_len = blob.len();
    let mut aad = Vec::with_capacity(header_len + canonical_context.len());
    aad.extend_from_slice(&blob);
    aad.extend_from_slice(canonical_context);
    blob.extend_from_slice(&keys.context_check(canonical_context));
    let nonce: [u8; NONCE_LEN] = random::array();
    blob.extend_from_slice(&nonce);
    seal_append(&keys.wrap, &nonce, &aad, plaintext, &mut blob);
    blob
}

/// A blob split into its fields (nothing verified yet).
pub(crate) struct ParsedBlob<'a> {
    /// Keystore id of the keystore that made it.
    pub(crate) keystore_id: KeystoreId,
    /// Key id.
    pub(crate) key_id: &'a str,
    /// Key version.
    pub(crate) version: u32,
    header: &'a [u8],
    context_check: &'a [u8; CONTEXT_CHECK_LEN],
    nonce: &'a [u8; NONCE_LEN],
    sealed: &'a [u8],
}

/// Splits a blob; [`KmsError::InvalidCiphertext`] if it is not shaped like one.
pub(crate) fn parse(blob: &[u8]) -> Result<ParsedBlob<'_>, KmsError> {
    let bad = || KmsError::InvalidCiphertext;
    let rest = blob.strip_prefix(BLOB_MAGIC).ok_or_else(bad)?;
    let (keystore_id, rest) = rest.split_first_chunk::<KEYSTORE_ID_LEN>().ok_or_else(bad)?;
    let (&len, rest) = rest.split_first().ok_or_else(bad)?;
    let len = usize::from(len);
    if len == 0 || rest.len() < len {
        return Err(bad());
    }
    let (key_id, rest) = rest.split_at(len);
    // Key ids are printable ASCII: anything else is not ours (and is never echoed in errors).
    if !key_id.iter().all(u8::is_ascii_graphic) {
        return Err(bad());
    }
    let key_id = std::str::from_utf8(key_id).map_err(|_| bad())?;
    let (version, rest) = rest.split_first_chunk::<4>().ok_or_else(bad)?;
    let header = &blob[..blob.len() - rest.len()];
    let (context_check, rest) = rest.split_first_chunk::<CONTEXT_CHECK_LEN>().ok_or_else(bad)?;
    let (nonce, sealed) = rest.split_first_chunk::<NONCE_LEN>().ok_or_else(bad)?;
    if sealed.len() < TAG_LEN {
        return Err(bad());
    }
    Ok(ParsedBlob {
        keystore_id: *keystore_id,
        key_id,
        version: u32::from_be_bytes(*version),
        header,
        context_check,
        nonce,
        sealed,
    })
}

impl ParsedBlob<'_> {
    /// Checks the context (constant time), then opens the ciphertext.
    ///
    /// # Errors
    /// [`KmsError::WrongContext`] when the context check fails, [`KmsError::InvalidCiphertext`]
    /// when the AEAD does.
    pub(crate) fn open(&self, keys: &VersionKeys, canonical_context: &[u8]) -> Result<Zeroizing<Vec<u8>>, KmsError> {
        let expected = keys.context_check(canonical_context);
        if !bool::from(expected.ct_eq(self.context_check)) {
            return Err(KmsError::WrongContext);
        }
        let aad = [self.header, canonical_context].concat();
        open(&keys.wrap, self.nonce, &aad, self.sealed).ok_or(KmsError::InvalidCiphertext)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> VersionKeys {
        VersionKeys::derive(&[7u8; 32])
    }

    #[test]
    fn blob_roundtrip_and_layout() {
        let id = [9u8; 16];
        let blob = wrap(&keys(), &id, "k1", 3, b"ctx", b"secret");
        assert_eq!(&blob[..3], b"LK1");
        assert_eq!(&blob[3..19], &id);
        assert_eq!(blob[19], 2);
        assert_eq!(&blob[20..22], b"k1");
        assert_eq!(&blob[22..26], &[0, 0, 0, 3]);
        assert_eq!(blob.len(), 26 + 16 + 12 + 6 + 16);
        let p = parse(&blob).unwrap();
        assert_eq!((p.keystore_id, p.key_id, p.version), (id, "k1", 3));
        assert_eq!(&p.open(&keys(), b"ctx").unwrap()[..], b"secret");
        assert!(matches!(p.open(&keys(), b"other"), Err(KmsError::WrongContext)));
        assert!(matches!(p.open(&VersionKeys::derive(&[8u8; 32]), b"ctx"), Err(KmsError::WrongContext)));
    }

    #[test]
    fn every_byte_is_authenticated() {
        let id = [1u8; 16];
        let blob = wrap(&keys(), &id, "key", 1, b"c", b"pt");
        for i in 0..blob.len() {
            let mut t = blob.clone();
            t[i] ^= 0x01;
            let ok = parse(&t).and_then(|p| {
                if p.keystore_id != id || p.key_id != "key" || p.version != 1 {
                    return Err(KmsError::InvalidCiphertext);
                }
                p.open(&keys(), b"c")
            });
            assert!(ok.is_err(), "flip at byte {i} went unnoticed");
        }
        for n in 0..blob.len() {
            assert!(parse(&blob[..n]).and_then(|p| p.open(&keys(), b"c")).is_err(), "truncation at {n}");
        }
    }

    #[test]
    fn check_value_and_material() {
        let id = [2u8; 16];
        let kek = Kek::from_master_key(&[3u8; 32], &id);
        let check = kek.make_check(&id, "master-key-file");
        assert!(kek.verify_check(&id, "master-key-file", &check));
        assert!(!kek.verify_check(&id, "passphrase", &check));
        assert!(!Kek::from_master_key(&[4u8; 32], &id).verify_check(&id, "master-key-file", &check));
        assert!(!kek.verify_check(&id, "master-key-file", &check[..10]));

        let sealed = kek.seal_material(&id, "k", 1, &[5u8; 32]);
        assert_eq!(sealed.len(), NONCE_LEN + 32 + TAG_LEN);
        assert_eq!(*kek.open_material(&id, "k", 1, &sealed).unwrap(), [5u8; 32]);
        assert!(kek.open_material(&id, "k", 2, &sealed).is_none());
        assert!(kek.open_material(&id, "j", 1, &sealed).is_none());
        assert!(kek.open_material(&[0u8; 16], "k", 1, &sealed).is_none());
    }
}
