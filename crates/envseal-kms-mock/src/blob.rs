//! The mock's wrapped-blob format and its cryptography (README "Blob format").
//!
//! ```text
//! blob    = "MK1" || u8 id_len || key_id || u32 BE version || check[16] || nonce[12] || ct || tag[16]
//! K_wrap  = HMAC-SHA-256(material, "envseal-mock wrap key")
//! K_check = HMAC-SHA-256(material, "envseal-mock context check")
//! check   = HMAC-SHA-256(K_check, canonical context)[..16]
//! ct||tag = AES-256-GCM(K_wrap, nonce, plaintext, AAD = blob[..header] || canonical context)
//! ```

use std::fmt;

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use crate::rng::hmac_sha256;

/// The first three bytes of every blob.
pub(crate) const MAGIC: &[u8; 3] = b"MK1";
/// Length of the context check.
pub(crate) const CHECK_LEN: usize = 16;
/// Length of the AES-GCM nonce.
pub(crate) const NONCE_LEN: usize = 12;
/// Length of the AES-GCM tag.
pub(crate) const TAG_LEN: usize = 16;

const WRAP_LABEL: &[u8] = b"envseal-mock wrap key";
const CHECK_LABEL: &[u8] = b"envseal-mock context check";

/// The keys derived from one key version's 256-bit material. The material itself is not kept.
pub(crate) struct VersionKeys {
    wrap: LessSafeKey,
    check: Zeroizing<[u8; 32]>,
}

impl VersionKeys {
    pub(crate) fn derive(material: &[u8; 32]) -> Self {
        let wrap_key = Zeroizing::new(hmac_sha256(material, &[WRAP_LABEL]));
        // Invariant: a 32-byte key is always a valid AES-256 key.
        let unbound = UnboundKey::new(&AES_256_GCM, &wrap_key[..]).expect("32-byte AES-256 key");
        Self { wrap: LessSafeKey::new(unbound), check: Zeroizing::new(hmac_sha256(material, &[CHECK_LABEL])) }
    }

    fn context_check(&self, context: &[u8]) -> Zeroizing<[u8; 32]> {
        Zeroizing::new(hmac_sha256(&self.check[..], &[context]))
    }
}

impl fmt::Debug for VersionKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("VersionKeys([REDACTED])")
    }
}

/// Wraps `plaintext` under `keys` (version `version` of key `key_id`), bound to `context`
/// (canonical bytes).
pub(crate) fn seal(
    key_id: &str,
    version: u32,
    keys: &VersionKeys,
    nonce: [u8; NONCE_LEN],
    plaintext: &[u8],
    context: &[u8],
) -> Vec<u8> {
    // Invariant: key ids are UUIDs made by this crate (36 bytes).
    let id_len = u8::try_from(key_id.len()).expect("mock key ids are 36 bytes");
    let mut blob =
        Vec::with_capacity(MAGIC.len() + 1 + key_id.len() + 4 + CHECK_LEN + NONCE_LEN + plaintext.len() + TAG_LEN);
    blob.extend_from_slice(MAGIC);
    blob.push(id_len);
    blob.extend_from_slice(key_id.as_bytes());
    blob.extend_from_slice(&version.to_be_bytes());
    let aad = aad(&blob, context);
    blob.extend_from_slice(&keys.context_check(context)[..CHECK_LEN]);
    blob.extend_from_slice(&nonce);
    let start = blob.len();
    blob.extend_from_slice(plaintext);
    // Invariant: AES-GCM only fails for inputs beyond 2^36 bytes; wrapped plaintexts are small.
    let tag = keys
        .wrap
        .seal_in_place_separate_tag(Nonce::assume_unique_for_key(nonce), Aad::from(&aad), &mut blob[start..])
        .expect("AES-GCM seal of a small input");
    blob.extend_from_slice(tag.as_ref());
    blob
}

fn aad(header: &[u8], context: &[u8]) -> Vec<u8> {
    let mut aad = Vec::with_capacity(header.len() + context.len());
    aad.extend_from_slice(header);
    aad.extend_from_slice(context);
    aad
}

/// A parsed blob (borrowing from the input).
#[derive(Debug)]
pub(crate) struct Parsed<'a> {
    /// `"MK1" || id_len || key_id || version`: the header part of the AAD.
    header: &'a [u8],
    pub(crate) key_id: &'a str,
    pub(crate) version: u32,
    check: &'a [u8],
    nonce: [u8; NONCE_LEN],
    /// Ciphertext and tag.
    sealed: &'a [u8],
}

/// Parses a blob; `None` if it is malformed (bad magic, truncated, empty or non-UTF-8 key id,
/// version 0, no room for the tag).
pub(crate) fn parse(blob: &[u8]) -> Option<Parsed<'_>> {
    let rest = blob.strip_prefix(MAGIC)?;
    let (&id_len, rest) = rest.split_first()?;
    let id_len = usize::from(id_len);
    if id_len == 0 || rest.len() < id_len + 4 + CHECK_LEN + NONCE_LEN + TAG_LEN {
        return None;
    }
    let (key_id, rest) = rest.split_at(id_len);
    let key_id = std::str::from_utf8(key_id).ok()?;
    let (version, rest) = rest.split_at(4);
    let version = u32::from_be_bytes(version.try_into().ok()?);
    if version == 0 {
        return None;
    }
    let (check, rest) = rest.split_at(CHECK_LEN);
    let (nonce, sealed) = rest.split_at(NONCE_LEN);
    let header_len = MAGIC.len() + 1 + id_len + 4;
    Some(Parsed { header: &blob[..header_len], key_id, version, check, nonce: nonce.try_into().ok()?, sealed })
}

/// Why [`open`] failed.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum OpenError {
    /// The context check does not match the context given.
    WrongContext,
    /// AES-GCM authentication failed.
    Invalid,
}

/// Checks the context (in constant time) and opens the blob.
pub(crate) fn open(p: &Parsed<'_>, keys: &VersionKeys, context: &[u8]) -> Result<Zeroizing<Vec<u8>>, OpenError> {
    let check = keys.context_check(context);
    if !bool::from(check[..CHECK_LEN].ct_eq(p.check)) {
        return Err(OpenError::WrongContext);
    }
    let aad = aad(p.header, context);
    let mut buf = Zeroizing::new(p.sealed.to_vec());
    let len = keys
        .wrap
        .open_in_place(Nonce::assume_unique_for_key(p.nonce), Aad::from(&aad), &mut buf[..])
        .map_err(|_| OpenError::Invalid)?
        .len();
    buf.truncate(len);
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "00000000-0000-4000-8000-000000000000";

    #[test]
    fn layout_is_as_documented() {
        let keys = VersionKeys::derive(&[7; 32]);
        let blob = seal(ID, 3, &keys, [9; NONCE_LEN], b"hello", b"\0\0");
        assert_eq!(&blob[..3], b"MK1");
        assert_eq!(blob[3], 36);
        assert_eq!(&blob[4..40], ID.as_bytes());
        assert_eq!(&blob[40..44], &[0, 0, 0, 3]);
        let k_check = hmac_sha256(&[7; 32], &[b"envseal-mock context check"]);
        assert_eq!(&blob[44..60], &hmac_sha256(&k_check, &[b"\0\0"])[..16]);
        assert_eq!(&blob[60..72], &[9; 12]);
        assert_eq!(blob.len(), 72 + 5 + 16);
        // An independent AES-GCM open with the documented key and AAD.
        let k_wrap = hmac_sha256(&[7; 32], &[b"envseal-mock wrap key"]);
        let k = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &k_wrap).unwrap());
        let mut aad = blob[..44].to_vec();
        aad.extend_from_slice(b"\0\0");
        let mut ct = blob[72..].to_vec();
        let pt = k.open_in_place(Nonce::assume_unique_for_key([9; 12]), Aad::from(&aad), &mut ct).unwrap();
        assert_eq!(pt, b"hello");
    }

    #[test]
    fn parse_rejects_malformed() {
        let keys = VersionKeys::derive(&[7; 32]);
        let blob = seal(ID, 1, &keys, [0; NONCE_LEN], b"", b"\0\0");
        let p = parse(&blob).unwrap();
        assert_eq!((p.key_id, p.version), (ID, 1));
        assert_eq!(&open(&p, &keys, b"\0\0").unwrap()[..], b"");
        assert_eq!(open(&p, &keys, b"\0\x01").unwrap_err(), OpenError::WrongContext);
        for n in 0..blob.len() {
            assert!(parse(&blob[..n]).is_none(), "truncated to {n}");
        }
        let mut v0 = blob.clone();
        v0[40..44].copy_from_slice(&[0; 4]);
        assert!(parse(&v0).is_none());
        let mut id0 = blob.clone();
        id0[3] = 0;
        assert!(parse(&id0).is_none());
        let mut utf = blob.clone();
        utf[4] = 0xff;
        assert!(parse(&utf).is_none());
    }
}
