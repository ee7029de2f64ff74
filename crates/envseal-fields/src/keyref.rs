//! The key-reference envelope (FORMAT.md §11): one sealed value that names its data key by id
//! instead of carrying it wrapped.
//!
//! ```text
//! envelope  = u8(0xE6) || key_id (8) || counter (4) || ciphertext || tag (16)
//! nonce     = u64(0) || counter                        # 12 bytes: §5.2's counter nonce, counter < 2^32
//! value_key = HKDF-SHA-512(salt = key_id, IKM = data key,
//!                          info = "envseal/v1/keyref/value-key" || canonical(scope context), L = 32)
//! aad       = envelope[0..9] || row
//! row       = 0x00                                   # no primary key
//!           | 0x01 || u16(len(pk)) || pk             # the row's primary key, canonical text
//! text      = "esk1:" || base64url-nopad(envelope)
//! ```
//!
//! The scope context (the application's base context, `table` and `column`) is bound through
//! the key: a data key belongs to one column (its key-vault entry says which, under the KMS),
//! and the value key is derived with that column's context. The row's primary key, which
//! changes with every value, is bound as associated data. Neither is stored: the opener supplies
//! them again.
//!
//! The data key itself lives, wrapped by the KMS, in a key vault ([`crate::vault`]), so a value
//! costs [`OVERHEAD`] = 29 bytes over its plaintext instead of the ~250 of a self-contained field
//! envelope (FORMAT.md §5).

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
pub const KEY_ID_LEN: usize = 8;
/// Bytes before the counter: tag byte and key id (also the first part of the associated data).
pub const HEADER_LEN: usize = 1 + KEY_ID_LEN;
/// Length of the stored nonce counter.
pub const COUNTER_LEN: usize = 4;
/// Bytes a value costs over its plaintext: tag byte, key id, counter and tag.
pub const OVERHEAD: usize = HEADER_LEN + COUNTER_LEN + TAG_LEN;
/// Prefix of the text form.
pub const TEXT_PREFIX: &str = "esk1:";
/// HKDF label of the value key.
pub const LABEL_VALUE_KEY: &[u8] = b"envseal/v1/keyref/value-key";
/// Longest primary key, in bytes (the bound of a context value, FORMAT.md §2.3).
pub const MAX_PK_LEN: usize = 1024;
/// Most values one data key may seal: the stored counter is 32 bits (NIST SP 800-38D's bound
/// for one key is the same; the nonces are counters, so this bounds usage, not collisions).
pub const MAX_MESSAGES_PER_KEY: u64 = 1 << 32;

/// The id of a data key in the key vault: 8 random bytes, unique in the vault (its store refuses
/// a duplicate, and the writer draws another). Not secret.
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

    /// Lowercase hex (16 characters).
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// Parses 16 lowercase hex digits.
    ///
    /// # Errors
    /// [`FormatError::Malformed`] for anything else.
    pub fn from_hex(s: &str) -> Result<Self, FormatError> {
        let mut b = [0u8; KEY_ID_LEN];
        if s.len() != 2 * KEY_ID_LEN || s.bytes().any(|c| c.is_ascii_uppercase()) {
            return Err(FormatError::Malformed("key id is not 16 lowercase hex digits"));
        }
        hex::decode_to_slice(s, &mut b).map_err(|_| FormatError::Malformed("key id is not 16 lowercase hex digits"))?;
        Ok(Self(b))
    }

    /// From a byte slice of exactly 8 bytes.
    ///
    /// # Errors
    /// [`FormatError::Malformed`] for another length.
    pub fn from_slice(b: &[u8]) -> Result<Self, FormatError> {
        b.try_into().map(Self).map_err(|_| FormatError::Malformed("key id is not 8 bytes"))
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
    /// Derives the value key of `data_key` under id `id` for the scope context whose canonical
    /// encoding (FORMAT.md §2.3) is `scope` (FORMAT.md §11.3).
    pub fn derive(engine: Engine, data_key: &DataKey, id: KeyId, scope: &[u8]) -> Self {
        let h = Hkdf::<Sha512>::new(Some(&id.0), data_key.expose_secret());
        let mut key = Zeroizing::new([0u8; KEY_LEN]);
        // Invariant: 32 bytes is far below HKDF-SHA-512's output limit of 255 × 64.
        h.expand_multi_info(&[LABEL_VALUE_KEY, scope], &mut key[..]).expect("HKDF output length within limits");
        Self { aead: AeadKey::new(engine, &key), id }
    }

    /// The data-key id.
    pub fn id(&self) -> KeyId {
        self.id
    }

    /// Appends the envelope of `plaintext` for row `pk` (its canonical text; `None` when the
    /// record has no primary key) to `out`, with nonce counter `counter` (below 2^32). `out`
    /// grows by `OVERHEAD + plaintext.len()` bytes; with enough capacity, sealing allocates
    /// nothing.
    ///
    /// # Errors
    /// [`FormatError::LimitExceeded`] above 16 MiB of plaintext, a `pk` over 1024 bytes, or a
    /// counter of 2^32 or more (the key is used up).
    pub fn seal_into(
        &self,
        counter: u64,
        plaintext: &[u8],
        pk: Option<&[u8]>,
        out: &mut Vec<u8>,
    ) -> Result<(), FormatError> {
        check_plaintext_len(plaintext.len())?;
        let counter = u32::try_from(counter).map_err(|_| FormatError::LimitExceeded {
            what: "values sealed under one data key",
            value: counter,
            max: MAX_MESSAGES_PER_KEY,
        })?;
        let nonce = counter_nonce(counter);
        let tag = with_aad(&self.id, pk, |aad| {
            let start = out.len();
            out.reserve(OVERHEAD + plaintext.len());
            out.push(TAG);
            out.extend_from_slice(&self.id.0);
            out.extend_from_slice(&counter.to_be_bytes());
            let ct_start = out.len();
            out.extend_from_slice(plaintext);
            debug_assert_eq!(ct_start, start + HEADER_LEN + COUNTER_LEN);
            self.aead.seal_in_place(&nonce, aad, &mut out[ct_start..])
        })?;
        out.extend_from_slice(&tag);
        Ok(())
    }

    /// The envelope of `plaintext` (see [`ValueKey::seal_into`]).
    ///
    /// # Errors
    /// As [`ValueKey::seal_into`].
    pub fn seal(&self, counter: u64, plaintext: &[u8], pk: Option<&[u8]>) -> Result<Vec<u8>, FormatError> {
        let mut out = Vec::new();
        self.seal_into(counter, plaintext, pk, &mut out)?;
        Ok(out)
    }

    /// Opens a parsed envelope of row `pk` sealed under this key, appending the plaintext to
    /// `out`. On failure `out` is left as it was.
    ///
    /// # Errors
    /// [`FormatError::CommitmentMismatch`] if the envelope names another key id;
    /// [`FormatError::ValueTampered`] if authentication fails (altered value, another row, or a
    /// key derived for another scope); [`FormatError::LimitExceeded`] for a `pk` over 1024
    /// bytes.
    pub fn open_into(&self, env: &KeyRef<'_>, pk: Option<&[u8]>, out: &mut Vec<u8>) -> Result<(), FormatError> {
        if env.key_id != self.id {
            return Err(FormatError::CommitmentMismatch);
        }
        let start = out.len();
        let n = env.ciphertext.len();
        out.resize(start + n, 0);
        let nonce = counter_nonce(env.counter);
        let r =
            with_aad(&self.id, pk, |aad| self.aead.open_to(&nonce, aad, env.ciphertext, env.tag, &mut out[start..]))?;
        if r.is_err() {
            // Wipe whatever the engine may have left, and give the buffer back as it was.
            out[start..].iter_mut().for_each(|b| *b = 0);
            out.truncate(start);
            return Err(FormatError::ValueTampered);
        }
        Ok(())
    }
}

/// Runs `f` with the associated data `TAG || key_id || row` (FORMAT.md §11.3), built on the
/// stack for primary keys up to 64 bytes.
fn with_aad<R>(id: &KeyId, pk: Option<&[u8]>, f: impl FnOnce(&[u8]) -> R) -> Result<R, FormatError> {
    const SMALL: usize = 64;
    let mut stack = [0u8; HEADER_LEN + 3 + SMALL];
    stack[0] = TAG;
    stack[1..HEADER_LEN].copy_from_slice(&id.0);
    match pk {
        None => {
            stack[HEADER_LEN] = 0;
            Ok(f(&stack[..HEADER_LEN + 1]))
        }
        Some(pk) if pk.len() > MAX_PK_LEN => Err(FormatError::LimitExceeded {
            what: "primary key length",
            value: pk.len() as u64,
            max: MAX_PK_LEN as u64,
        }),
        Some(pk) => {
            stack[HEADER_LEN] = 1;
            stack[HEADER_LEN + 1..HEADER_LEN + 3].copy_from_slice(&(pk.len() as u16).to_be_bytes());
            if pk.len() <= SMALL {
                stack[HEADER_LEN + 3..HEADER_LEN + 3 + pk.len()].copy_from_slice(pk);
                Ok(f(&stack[..HEADER_LEN + 3 + pk.len()]))
            } else {
                let mut heap = Vec::with_capacity(HEADER_LEN + 3 + pk.len());
                heap.extend_from_slice(&stack[..HEADER_LEN + 3]);
                heap.extend_from_slice(pk);
                Ok(f(&heap))
            }
        }
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

/// `u64(0) || u32(counter)`: the counter nonce of the self-contained field envelope
/// (`u32(0) || u64(counter)`, FORMAT.md §5.2) for a counter below 2^32.
fn counter_nonce(counter: u32) -> [u8; NONCE_LEN] {
    let mut n = [0u8; NONCE_LEN];
    n[8..].copy_from_slice(&counter.to_be_bytes());
    n
}

/// A parsed key-reference envelope, borrowing from its bytes.
#[derive(Debug, Clone, Copy)]
pub struct KeyRef<'a> {
    /// The data-key id.
    pub key_id: KeyId,
    /// The nonce counter.
    pub counter: u32,
    ciphertext: &'a [u8],
    tag: &'a [u8; TAG_LEN],
}

impl<'a> KeyRef<'a> {
    /// Parses the byte form (FORMAT.md §11.5 step 1).
    ///
    /// # Errors
    /// [`FormatError::NotSealed`] for an empty input or another first byte;
    /// [`FormatError::UnsupportedVersion`] for a reserved first byte; [`FormatError::Truncated`]
    /// below 29 bytes; [`FormatError::LimitExceeded`] above 16 MiB of ciphertext.
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
        let (counter, rest) = rest.split_at(COUNTER_LEN);
        let (ciphertext, tag) = rest.split_at(n);
        Ok(Self {
            key_id: KeyId::from_slice(&head[1..])?,
            counter: u32::from_be_bytes(counter.try_into().map_err(|_| FormatError::Truncated)?),
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

    fn scope(column: &str) -> Vec<u8> {
        EncryptionContext::from_pairs([("table", "users"), ("column", column)]).unwrap().canonical_bytes()
    }

    fn key() -> ValueKey {
        ValueKey::derive(Engine::default(), &DataKey::from_bytes([0x40; 32]), KeyId([0x11; 8]), &scope("email"))
    }

    #[test]
    fn round_trip_overhead_and_tamper() {
        for &engine in Engine::ALL {
            let k = ValueKey::derive(engine, &DataKey::from_bytes([0x40; 32]), KeyId([0x11; 8]), &scope("email"));
            let env = k.seal(3, b"alice@example.com", Some(b"7")).unwrap();
            assert_eq!(env.len(), OVERHEAD + 17);
            assert_eq!(OVERHEAD, 29);
            let p = KeyRef::parse(&env).unwrap();
            assert_eq!(p.key_id, KeyId([0x11; 8]));
            let mut out = b"prefix".to_vec();
            k.open_into(&p, Some(b"7"), &mut out).unwrap();
            assert_eq!(out, b"prefixalice@example.com");
            // Every single-bit flip fails.
            for i in 0..env.len() {
                let mut bad = env.clone();
                bad[i] ^= 0x01;
                let r = KeyRef::parse(&bad).and_then(|p| k.open_into(&p, Some(b"7"), &mut Vec::new()));
                assert!(r.is_err(), "flip at {i} accepted");
            }
            // Another row, no row, another column's key: refused, and `out` is left alone.
            for (pk, key) in [
                (Some(&b"8"[..]), &k),
                (None, &k),
                (Some(&b""[..]), &k),
                (
                    Some(&b"7"[..]),
                    &ValueKey::derive(engine, &DataKey::from_bytes([0x40; 32]), KeyId([0x11; 8]), &scope("phone")),
                ),
            ] {
                let mut out = b"keep".to_vec();
                assert!(matches!(key.open_into(&p, pk, &mut out), Err(FormatError::ValueTampered)));
                assert_eq!(out, b"keep");
            }
        }
    }

    #[test]
    fn counters_are_32_bits_and_make_the_nonce() {
        let k = key();
        let env = k.seal(0xfffe_fdfc, b"v", None).unwrap();
        let p = KeyRef::parse(&env).unwrap();
        assert_eq!(p.counter, 0xfffe_fdfc);
        assert_eq!(&env[HEADER_LEN..HEADER_LEN + COUNTER_LEN], &[0xff, 0xfe, 0xfd, 0xfc]);
        assert!(k.open_into(&p, None, &mut Vec::new()).is_ok());
        assert!(k.seal(u64::from(u32::MAX), b"v", None).is_ok());
        assert!(matches!(k.seal(1 << 32, b"v", None), Err(FormatError::LimitExceeded { .. })));
    }

    #[test]
    fn no_pk_and_long_pks() {
        let k = key();
        let env = k.seal(0, b"v", None).unwrap();
        let mut out = Vec::new();
        k.open_into(&KeyRef::parse(&env).unwrap(), None, &mut out).unwrap();
        assert_eq!(out, b"v");
        // Primary keys longer than the stack buffer, up to the bound.
        let long = vec![b'k'; MAX_PK_LEN];
        let env = k.seal(1, b"w", Some(&long)).unwrap();
        out.clear();
        k.open_into(&KeyRef::parse(&env).unwrap(), Some(&long), &mut out).unwrap();
        assert_eq!(out, b"w");
        assert!(matches!(k.seal(2, b"x", Some(&vec![b'k'; MAX_PK_LEN + 1])), Err(FormatError::LimitExceeded { .. })));
    }

    #[test]
    fn seal_into_appends() {
        let k = key();
        let mut buf = Vec::with_capacity(512);
        k.seal_into(0, b"a", Some(b"1"), &mut buf).unwrap();
        let first = buf.clone();
        k.seal_into(1, b"b", Some(b"2"), &mut buf).unwrap();
        assert_eq!(&buf[..first.len()], &first[..]);
        assert_eq!(buf.len(), 2 * (OVERHEAD + 1));
        let second = KeyRef::parse(&buf[first.len()..]).unwrap();
        let mut out = Vec::new();
        k.open_into(&second, Some(b"2"), &mut out).unwrap();
        assert_eq!(out, b"b");
    }

    #[test]
    fn parse_errors() {
        assert!(matches!(KeyRef::parse(&[]), Err(FormatError::NotSealed)));
        assert!(matches!(KeyRef::parse(&[0xE5; 60]), Err(FormatError::NotSealed)));
        assert!(matches!(KeyRef::parse(&[0xE7; 60]), Err(FormatError::UnsupportedVersion(0xE7))));
        assert!(matches!(KeyRef::parse(&[TAG; 28]), Err(FormatError::Truncated)));
        assert!(KeyRef::parse(&[TAG; 29]).is_ok());
        assert_eq!(key_id_of(&[TAG; 9]), Some(KeyId([TAG; 8])));
        assert_eq!(key_id_of(&[TAG; 8]), None);
        assert_eq!(key_id_of(&[0xE5; 40]), None);
    }

    #[test]
    fn wrong_key_id_is_a_commitment_mismatch() {
        let k = key();
        let other =
            ValueKey::derive(Engine::default(), &DataKey::from_bytes([0x40; 32]), KeyId([0x12; 8]), &scope("email"));
        let env = other.seal(0, b"x", None).unwrap();
        let p = KeyRef::parse(&env).unwrap();
        assert!(matches!(k.open_into(&p, None, &mut Vec::new()), Err(FormatError::CommitmentMismatch)));
    }

    #[test]
    fn text_form_and_ids() {
        let env = key().seal(0, b"v", None).unwrap();
        let t = to_text(&env);
        assert!(t.starts_with("esk1:"));
        assert_eq!(from_text(&t).unwrap(), env);
        assert!(matches!(from_text("esf1:AAAA"), Err(FormatError::NotSealed)));
        assert!(matches!(from_text("esk1:***"), Err(FormatError::Malformed(_))));
        let id = KeyId([0xab; 8]);
        assert_eq!(KeyId::from_hex(&id.to_hex()).unwrap(), id);
        assert!(KeyId::from_hex(&id.to_hex().to_uppercase()).is_err());
        assert!(KeyId::from_hex("00").is_err());
    }
}
