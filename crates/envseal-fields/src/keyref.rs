//! The key-reference envelope (FORMAT.md §11): one sealed value that names its data key by id
//! instead of carrying it wrapped.
//!
//! ```text
//! envelope  = u8(0xE6) || key_id (16) || nonce (12) || ciphertext || tag (16)
//! aad       = envelope[0..17] || canonical(context)
//! value_key = HKDF-SHA-512(salt = key_id, IKM = data key, info = "envseal/v1/keyref/value-key", L = 32)
//! text      = "esk1:" || base64url-nopad(envelope)
//! ```
//!
//! The data key itself lives, wrapped by the KMS, in a key vault ([`crate::vault`]), so a value
//! costs [`OVERHEAD`] = 45 bytes over its plaintext instead of the ~250 of a self-contained field
//! envelope (FORMAT.md §5). The context is not stored: the opener supplies it again.

use base64::Engine as _;
use envseal_core::aead::{AeadKey, KEY_LEN, NONCE_LEN, TAG_LEN};
use envseal_core::envelope::MAX_PLAINTEXT;
use envseal_core::{DataKey, Engine, FormatError};
use hkdf::Hkdf;
use sha2::Sha512;
use zeroize::Zeroizing;

/// First byte of a key-reference envelope, version 1 (suite: AES-256-GCM, HKDF-SHA-512).
pub const TAG: u8 = 0xE6;
/// First bytes reserved for later versions of this form: a reader reports
/// [`FormatError::UnsupportedVersion`] for them.
pub const RESERVED_TAGS: std::ops::RangeInclusive<u8> = 0xE7..=0xEF;
/// Length of a data-key id.
pub const KEY_ID_LEN: usize = 16;
/// Bytes before the nonce: tag byte and key id (also the first part of the associated data).
pub const HEADER_LEN: usize = 1 + KEY_ID_LEN;
/// Bytes a value costs over its plaintext: tag byte, key id, nonce and tag.
pub const OVERHEAD: usize = HEADER_LEN + NONCE_LEN + TAG_LEN;
/// Prefix of the text form.
pub const TEXT_PREFIX: &str = "esk1:";
/// HKDF label of the value key.
pub const LABEL_VALUE_KEY: &[u8] = b"envseal/v1/keyref/value-key";
/// Most values one data key may seal (NIST SP 800-38D's bound for one key; the nonces are
/// counters, so this bounds usage, not collisions).
pub const MAX_MESSAGES_PER_KEY: u64 = 1 << 32;

/// The id of a data key in the key vault: 16 random bytes. Not secret.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyId(pub [u8; KEY_ID_LEN]);

impl KeyId {
    /// A fresh id from the OS CSPRNG.
    pub fn random() -> Self {
        Self(envseal_core::random::array())
    }

    /// The bytes.
    pub fn as_bytes(&self) -> &[u8; KEY_ID_LEN] {
        &self.0
    }

    /// Lowercase hex (32 characters).
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// Parses 32 hex digits.
    ///
    /// # Errors
    /// [`FormatError::Malformed`] for anything else.
    pub fn from_hex(s: &str) -> Result<Self, FormatError> {
        let mut b = [0u8; KEY_ID_LEN];
        if s.len() != 2 * KEY_ID_LEN || s.bytes().any(|c| c.is_ascii_uppercase()) {
            return Err(FormatError::Malformed("key id is not 32 lowercase hex digits"));
        }
        hex::decode_to_slice(s, &mut b).map_err(|_| FormatError::Malformed("key id is not 32 lowercase hex digits"))?;
        Ok(Self(b))
    }

    /// From a byte slice of exactly 16 bytes.
    ///
    /// # Errors
    /// [`FormatError::Malformed`] for another length.
    pub fn from_slice(b: &[u8]) -> Result<Self, FormatError> {
        b.try_into().map(Self).map_err(|_| FormatError::Malformed("key id is not 16 bytes"))
    }
}

impl std::fmt::Debug for KeyId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "KeyId({})", self.to_hex())
    }
}

impl std::fmt::Display for KeyId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.to_hex())
    }
}

/// The value key of one data key: seals and opens key-reference envelopes.
///
/// The caller guarantees nonce uniqueness: a counter that never repeats for this key (the
/// [`FieldCipher`](crate::FieldCipher) hands out 0, 1, 2, ... atomically and retires the key
/// long before 2^32).
pub struct ValueKey {
    aead: AeadKey,
    id: KeyId,
}

impl std::fmt::Debug for ValueKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ValueKey").field("id", &self.id).finish_non_exhaustive()
    }
}

impl ValueKey {
    /// Derives the value key of `data_key` under id `id` (FORMAT.md §11.3).
    pub fn derive(engine: Engine, data_key: &DataKey, id: KeyId) -> Self {
        let key = derive32(data_key, &id.0, LABEL_VALUE_KEY);
        Self { aead: AeadKey::new(engine, &key), id }
    }

    /// The data-key id.
    pub fn id(&self) -> KeyId {
        self.id
    }

    /// Appends the envelope of `plaintext` to `out`, with nonce counter `counter` and the
    /// canonical encoding (FORMAT.md §2.3) of the context, `context`. `out` grows by
    /// `OVERHEAD + plaintext.len()` bytes; its capacity is used as scratch space for the
    /// associated data, so a reused buffer makes sealing allocation-free.
    ///
    /// # Errors
    /// [`FormatError::LimitExceeded`] above 16 MiB of plaintext.
    pub fn seal_into(
        &self,
        counter: u64,
        plaintext: &[u8],
        context: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), FormatError> {
        check_plaintext_len(plaintext.len())?;
        let start = out.len();
        let ct_start = start + HEADER_LEN + NONCE_LEN;
        let ct_end = ct_start + plaintext.len();
        out.reserve(OVERHEAD + plaintext.len() + HEADER_LEN + context.len());
        out.push(TAG);
        out.extend_from_slice(&self.id.0);
        let nonce = counter_nonce(counter);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(plaintext);
        // Associated data, built after the ciphertext region and cut off afterwards:
        // header || context.
        out.extend_from_slice(&[TAG]);
        out.extend_from_slice(&self.id.0);
        out.extend_from_slice(context);
        let (body, aad) = out.split_at_mut(ct_end);
        let tag = self.aead.seal_in_place(&nonce, aad, &mut body[ct_start..]);
        out.truncate(ct_end);
        out.extend_from_slice(&tag);
        Ok(())
    }

    /// The envelope of `plaintext` (see [`ValueKey::seal_into`]).
    ///
    /// # Errors
    /// As [`ValueKey::seal_into`].
    pub fn seal(&self, counter: u64, plaintext: &[u8], context: &[u8]) -> Result<Vec<u8>, FormatError> {
        let mut out = Vec::new();
        self.seal_into(counter, plaintext, context, &mut out)?;
        Ok(out)
    }

    /// Opens a parsed envelope sealed under this key with the context whose canonical encoding
    /// is `context`, appending the plaintext to `out`. On failure `out` is left as it was.
    ///
    /// # Errors
    /// [`FormatError::CommitmentMismatch`] if the envelope names another key id;
    /// [`FormatError::ValueTampered`] if authentication fails (altered value, wrong context,
    /// wrong row or column).
    pub fn open_into(&self, env: &KeyRef<'_>, context: &[u8], out: &mut Vec<u8>) -> Result<(), FormatError> {
        if env.key_id != self.id {
            return Err(FormatError::CommitmentMismatch);
        }
        let start = out.len();
        let n = env.ciphertext.len();
        out.reserve(n + HEADER_LEN + context.len());
        out.resize(start + n, 0);
        out.push(TAG);
        out.extend_from_slice(&self.id.0);
        out.extend_from_slice(context);
        let (pt, aad) = out.split_at_mut(start + n);
        let r = self.aead.open_to(env.nonce, aad, env.ciphertext, env.tag, &mut pt[start..]);
        // Wipe whatever the engine may have left on failure, then drop the scratch.
        if r.is_err() {
            pt[start..].iter_mut().for_each(|b| *b = 0);
            out.truncate(start);
            return Err(FormatError::ValueTampered);
        }
        out.truncate(start + n);
        Ok(())
    }
}

/// HKDF-SHA-512 from a data key with `salt`, expanded to 32 bytes under `label`.
pub(crate) fn derive32(data_key: &DataKey, salt: &[u8], label: &[u8]) -> Zeroizing<[u8; KEY_LEN]> {
    let h = Hkdf::<Sha512>::new(Some(salt), data_key.expose_secret());
    let mut out = Zeroizing::new([0u8; KEY_LEN]);
    // Invariant: 32 bytes is far below HKDF-SHA-512's output limit of 255 × 64.
    h.expand(label, &mut out[..]).expect("HKDF output length within limits");
    out
}

fn check_plaintext_len(n: usize) -> Result<(), FormatError> {
    if n > MAX_PLAINTEXT {
        return Err(FormatError::LimitExceeded { what: "field plaintext", value: n as u64, max: MAX_PLAINTEXT as u64 });
    }
    Ok(())
}

/// `u32(0) || u64(counter)`, as in the self-contained field envelope (FORMAT.md §5.2).
fn counter_nonce(counter: u64) -> [u8; NONCE_LEN] {
    let mut n = [0u8; NONCE_LEN];
    n[4..].copy_from_slice(&counter.to_be_bytes());
    n
}

/// A parsed key-reference envelope, borrowing from its bytes.
#[derive(Debug, Clone, Copy)]
pub struct KeyRef<'a> {
    /// The data-key id.
    pub key_id: KeyId,
    nonce: &'a [u8; NONCE_LEN],
    ciphertext: &'a [u8],
    tag: &'a [u8; TAG_LEN],
}

impl<'a> KeyRef<'a> {
    /// Parses the byte form (FORMAT.md §11.5 step 1).
    ///
    /// # Errors
    /// [`FormatError::NotSealed`] for an empty input or another first byte;
    /// [`FormatError::UnsupportedVersion`] for a reserved first byte; [`FormatError::Truncated`]
    /// below 45 bytes; [`FormatError::LimitExceeded`] above 16 MiB of ciphertext.
    pub fn parse(bytes: &'a [u8]) -> Result<Self, FormatError> {
        match bytes.first() {
            Some(&TAG) => {}
            Some(b) if RESERVED_TAGS.contains(b) => return Err(FormatError::UnsupportedVersion(*b)),
            _ => return Err(FormatError::NotSealed),
        }
        if bytes.len() < OVERHEAD {
            return Err(FormatError::Truncated);
        }
        let n = bytes.len() - OVERHEAD;
        check_plaintext_len(n).map_err(|_| FormatError::LimitExceeded {
            what: "field ciphertext",
            value: n as u64,
            max: MAX_PLAINTEXT as u64,
        })?;
        let (head, rest) = bytes.split_at(HEADER_LEN);
        let (nonce, rest) = rest.split_at(NONCE_LEN);
        let (ciphertext, tag) = rest.split_at(n);
        Ok(Self {
            key_id: KeyId::from_slice(&head[1..])?,
            nonce: nonce.try_into().map_err(|_| FormatError::Truncated)?,
            ciphertext,
            tag: tag.try_into().map_err(|_| FormatError::Truncated)?,
        })
    }

    /// Length of the plaintext.
    pub fn plaintext_len(&self) -> usize {
        self.ciphertext.len()
    }
}

/// The key id of an envelope's bytes without parsing the rest, if it is a key-reference
/// envelope (used by rotation jobs to classify rows cheaply).
pub fn key_id_of(bytes: &[u8]) -> Option<KeyId> {
    match bytes {
        [TAG, rest @ ..] if rest.len() >= KEY_ID_LEN => KeyId::from_slice(&rest[..KEY_ID_LEN]).ok(),
        _ => None,
    }
}

/// Text form: `esk1:` + base64url without padding.
pub fn to_text(envelope: &[u8]) -> String {
    let mut s = String::with_capacity(TEXT_PREFIX.len() + envelope.len().div_ceil(3) * 4);
    s.push_str(TEXT_PREFIX);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode_string(envelope, &mut s);
    s
}

/// Parses the text form back to bytes (canonical base64url only, bounded before decoding).
///
/// # Errors
/// [`FormatError::NotSealed`] without the prefix; [`FormatError::LimitExceeded`] for a payload
/// longer than a 16 MiB value needs; [`FormatError::Malformed`] for bad base64.
pub fn from_text(text: &str) -> Result<Vec<u8>, FormatError> {
    let b64 = text.strip_prefix(TEXT_PREFIX).ok_or(FormatError::NotSealed)?;
    const MAX_TEXT: usize = (MAX_PLAINTEXT + OVERHEAD).div_ceil(3) * 4;
    if b64.len() > MAX_TEXT {
        return Err(FormatError::LimitExceeded {
            what: "field text length",
            value: b64.len() as u64,
            max: MAX_TEXT as u64,
        });
    }
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(b64)
        .map_err(|_| FormatError::Malformed("field envelope text is not base64url"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use envseal_core::EncryptionContext;

    fn key() -> ValueKey {
        ValueKey::derive(Engine::default(), &DataKey::from_bytes([0x40; 32]), KeyId([0x11; 16]))
    }

    #[test]
    fn round_trip_overhead_and_tamper() {
        let ctx = EncryptionContext::from_pairs([("table", "users"), ("column", "email"), ("pk", "7")]).unwrap();
        let c = ctx.canonical_bytes();
        for &engine in Engine::ALL {
            let k = ValueKey::derive(engine, &DataKey::from_bytes([0x40; 32]), KeyId([0x11; 16]));
            let env = k.seal(3, b"alice@example.com", &c).unwrap();
            assert_eq!(env.len(), OVERHEAD + 17);
            assert_eq!(OVERHEAD, 45);
            let p = KeyRef::parse(&env).unwrap();
            assert_eq!(p.key_id, KeyId([0x11; 16]));
            let mut out = b"prefix".to_vec();
            k.open_into(&p, &c, &mut out).unwrap();
            assert_eq!(out, b"prefixalice@example.com");
            // Every single-bit flip fails.
            for i in 0..env.len() {
                let mut bad = env.clone();
                bad[i] ^= 0x01;
                let r = KeyRef::parse(&bad).and_then(|p| k.open_into(&p, &c, &mut Vec::new()));
                assert!(r.is_err(), "flip at {i} accepted");
            }
            // Another row.
            let other = EncryptionContext::from_pairs([("table", "users"), ("column", "email"), ("pk", "8")]).unwrap();
            let mut out = Vec::new();
            assert!(matches!(k.open_into(&p, &other.canonical_bytes(), &mut out), Err(FormatError::ValueTampered)));
            assert!(out.is_empty());
        }
    }

    #[test]
    fn seal_into_reuses_the_buffer_and_appends() {
        let k = key();
        let mut buf = Vec::with_capacity(512);
        k.seal_into(0, b"a", b"\x00\x00", &mut buf).unwrap();
        let first = buf.clone();
        k.seal_into(1, b"b", b"\x00\x00", &mut buf).unwrap();
        assert_eq!(&buf[..first.len()], &first[..]);
        assert_eq!(buf.len(), 2 * (OVERHEAD + 1));
        let second = KeyRef::parse(&buf[first.len()..]).unwrap();
        let mut out = Vec::new();
        k.open_into(&second, b"\x00\x00", &mut out).unwrap();
        assert_eq!(out, b"b");
    }

    #[test]
    fn parse_errors() {
        assert!(matches!(KeyRef::parse(&[]), Err(FormatError::NotSealed)));
        assert!(matches!(KeyRef::parse(&[0xE5; 60]), Err(FormatError::NotSealed)));
        assert!(matches!(KeyRef::parse(&[0xE7; 60]), Err(FormatError::UnsupportedVersion(0xE7))));
        assert!(matches!(KeyRef::parse(&[TAG; 44]), Err(FormatError::Truncated)));
        assert!(KeyRef::parse(&[TAG; 45]).is_ok());
        assert_eq!(key_id_of(&[TAG; 17]), Some(KeyId([TAG; 16])));
        assert_eq!(key_id_of(&[TAG; 16]), None);
        assert_eq!(key_id_of(&[0xE5; 40]), None);
    }

    #[test]
    fn wrong_key_id_is_a_commitment_mismatch() {
        let k = key();
        let other = ValueKey::derive(Engine::default(), &DataKey::from_bytes([0x40; 32]), KeyId([0x12; 16]));
        let env = other.seal(0, b"x", b"\x00\x00").unwrap();
        let p = KeyRef::parse(&env).unwrap();
        assert!(matches!(k.open_into(&p, b"\x00\x00", &mut Vec::new()), Err(FormatError::CommitmentMismatch)));
    }

    #[test]
    fn text_form_and_ids() {
        let env = key().seal(0, b"v", b"\x00\x00").unwrap();
        let t = to_text(&env);
        assert!(t.starts_with("esk1:"));
        assert_eq!(from_text(&t).unwrap(), env);
        assert!(matches!(from_text("esf1:AAAA"), Err(FormatError::NotSealed)));
        assert!(matches!(from_text("esk1:***"), Err(FormatError::Malformed(_))));
        let id = KeyId::random();
        assert_eq!(KeyId::from_hex(&id.to_hex()).unwrap(), id);
        assert!(
            KeyId::from_hex(&id.to_hex().to_uppercase()).is_err() || id.to_hex().bytes().all(|c| c.is_ascii_digit())
        );
        assert!(KeyId::from_hex("00").is_err());
    }
}
