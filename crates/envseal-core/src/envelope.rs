//! The field envelope (FORMAT.md §5): one sealed value, compact, for a database column.
//!
//! ```text
//! envelope = 0xE5 || version (1) || suite (1) || salt (16) || commitment (32)
//!            || entry || nonce (12) || ciphertext || tag (16)
//! text     = "esf1:" || base64url-nopad(envelope)
//! ```
//!
//! `salt` identifies one data-key instance: every envelope sealed under the same cached data
//! key shares salt, commitment and entry, and differs in its nonce (a counter that cannot
//! repeat for that key). The encryption context is not stored: the caller supplies it again to
//! open. As in the container, the entry is outside the AEAD input, bound through the KMS context
//! (`envseal:field` = hex salt), so a rewrap can replace it alone.

use base64::Engine as _;

use crate::aead::{AeadKey, Engine, NONCE_LEN, TAG_LEN};
use crate::container::hex_lower;
use crate::context::EncryptionContext;
use crate::datakey::DataKey;
use crate::entries;
use crate::error::{Error, FormatError};
use crate::kdf::{self, Kdf};
use crate::kms::WrappedKey;
use crate::wire;

/// First byte of every field envelope.
pub const TAG: u8 = 0xE5;
/// Field envelope version.
pub const VERSION: u8 = 1;
/// Suite 0x01: AES-256-GCM, HKDF-SHA-512 key schedule with key commitment.
pub const SUITE_AES256GCM_HKDF_SHA512: u8 = 0x01;
/// Prefix of the text form.
pub const TEXT_PREFIX: &str = "esf1:";
/// Salt length.
pub const SALT_LEN: usize = 16;
/// Reserved KMS-context key binding a wrapped key to its field-envelope salt.
pub const CONTEXT_KEY: &str = "envseal:field";
/// Largest plaintext a field envelope accepts (16 MiB): use the container for more.
pub const MAX_PLAINTEXT: usize = 16 * 1024 * 1024;
/// Most messages one data key may seal: 2^32, NIST SP 800-38D's bound for one key (the
/// nonces here are counters, so this bounds usage, not collisions).
pub const MAX_MESSAGES_PER_KEY: u64 = 1 << 32;

const FIXED_LEN: usize = 3 + SALT_LEN;
/// Bytes before the entry: tag, version, suite, salt, commitment.
const PREFIX_LEN: usize = FIXED_LEN + 32;

/// The keys of one data-key instance, derived once and reused for many envelopes.
pub struct FieldKey {
    value_key: AeadKey,
    commitment: [u8; 32],
    salt: [u8; SALT_LEN],
    /// Encoded wrapped-key entry (empty when only opening).
    entry: Vec<u8>,
}

impl std::fmt::Debug for FieldKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FieldKey").field("salt", &hex_lower(&self.salt)).finish_non_exhaustive()
    }
}

impl FieldKey {
    /// Derives the value key and commitment from `data_key` and `salt`, and records the
    /// wrapped-key entry that sealed envelopes will carry.
    ///
    /// # Errors
    /// [`FormatError`] if the entry exceeds a bound.
    pub fn new(
        engine: Engine,
        data_key: &DataKey,
        salt: [u8; SALT_LEN],
        entry: &WrappedKey,
    ) -> Result<Self, FormatError> {
        let mut e = Vec::with_capacity(8 + entry.key_id.len() + entry.blob.len());
        entries::encode(&mut e, entry)?;
        let mut k = Self::for_opening(engine, data_key, salt);
        k.entry = e;
        Ok(k)
    }

    /// Derives the keys for opening only.
    pub fn for_opening(engine: Engine, data_key: &DataKey, salt: [u8; SALT_LEN]) -> Self {
        let kdf = Kdf::new(data_key, &salt);
        Self {
            value_key: AeadKey::new(engine, &kdf.expand32(kdf::LABEL_FIELD_VALUE)),
            commitment: *kdf.expand32(kdf::LABEL_FIELD_COMMIT),
            salt,
            entry: Vec::new(),
        }
    }

    /// The data-key instance salt (the KMS context binds it, see [`kms_context`]).
    pub fn salt(&self) -> &[u8; SALT_LEN] {
        &self.salt
    }

    /// Seals one value with nonce counter `counter` (which must never repeat for this key;
    /// the [`crate::Sealer`] guarantees that).
    ///
    /// # Errors
    /// [`FormatError::LimitExceeded`] above [`MAX_PLAINTEXT`]; [`FormatError::Malformed`] if
    /// this key was made for opening only.
    pub fn seal(&self, counter: u64, plaintext: &[u8], context: &EncryptionContext) -> Result<Vec<u8>, FormatError> {
        let ctx = context.canonical_bytes();
        let mut out = Vec::with_capacity(self.sealed_len(plaintext.len()) + FIXED_LEN + ctx.len());
        self.seal_into(counter, plaintext, &ctx, &mut out)?;
        Ok(out)
    }

    /// The length of the envelope of a `plaintext_len`-byte value under this key.
    pub fn sealed_len(&self, plaintext_len: usize) -> usize {
        PREFIX_LEN + self.entry.len() + NONCE_LEN + plaintext_len + TAG_LEN
    }

    /// Appends the envelope of `plaintext` to `out`, given the canonical encoding
    /// ([`EncryptionContext::canonical_bytes`]) of the context. `out`'s spare capacity holds the
    /// associated data while sealing, so a buffer reused with enough capacity
    /// ([`FieldKey::sealed_len`] + 19 + `context.len()`) makes sealing allocation-free.
    ///
    /// # Errors
    /// As [`FieldKey::seal`].
    pub fn seal_into(
        &self,
        counter: u64,
        plaintext: &[u8],
        context: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), FormatError> {
        if plaintext.len() > MAX_PLAINTEXT {
            return Err(FormatError::LimitExceeded {
                what: "field plaintext",
                value: plaintext.len() as u64,
                max: MAX_PLAINTEXT as u64,
            });
        }
        if self.entry.is_empty() {
            return Err(FormatError::Malformed("field key has no wrapped-key entry"));
        }
        let begin = out.len();
        out.reserve(self.sealed_len(plaintext.len()) + FIXED_LEN + context.len());
        out.extend_from_slice(&[TAG, VERSION, SUITE_AES256GCM_HKDF_SHA512]);
        out.extend_from_slice(&self.salt);
        out.extend_from_slice(&self.commitment);
        out.extend_from_slice(&self.entry);
        let nonce = counter_nonce(counter);
        out.extend_from_slice(&nonce);
        let start = out.len();
        out.extend_from_slice(plaintext);
        // §5.3: aad = envelope[0..19] || context, built past the ciphertext and cut off after.
        let end = out.len();
        out.extend_from_slice(&[TAG, VERSION, SUITE_AES256GCM_HKDF_SHA512]);
        out.extend_from_slice(&self.salt);
        out.extend_from_slice(context);
        let (body, aad) = out.split_at_mut(end);
        let tag = self.value_key.seal_in_place(&nonce, aad, &mut body[start..]);
        out.truncate(end);
        out.extend_from_slice(&tag);
        debug_assert_eq!(out.len() - begin, self.sealed_len(plaintext.len()));
        Ok(())
    }

    /// Opens a parsed envelope whose salt matches this key.
    ///
    /// # Errors
    /// [`FormatError::CommitmentMismatch`] if the envelope was not sealed under this data key;
    /// [`FormatError::ValueTampered`] if the value fails authentication (altered, or wrong
    /// context).
    pub fn open(&self, env: &Envelope<'_>, context: &EncryptionContext) -> Result<crate::SecretBytes, FormatError> {
        let mut out = zeroize::Zeroizing::new(Vec::new());
        self.open_into(env, &context.canonical_bytes(), &mut out)?;
        Ok(crate::SecretBytes::from(out))
    }

    /// Opens a parsed envelope given the canonical encoding of the context, appending the
    /// plaintext to `out` (the caller wipes it: pass a `Zeroizing` buffer). On failure `out` is
    /// left as it was.
    ///
    /// # Errors
    /// As [`FieldKey::open`].
    pub fn open_into(&self, env: &Envelope<'_>, context: &[u8], out: &mut Vec<u8>) -> Result<(), FormatError> {
        if env.salt != &self.salt || !kdf::ct_eq(env.commitment, &self.commitment) {
            return Err(FormatError::CommitmentMismatch);
        }
        // §5.3: aad = envelope[0..19] || context; on the stack for contexts of up to 237 bytes.
        let mut stack = [0u8; 256];
        let heap;
        let aad: &[u8] = if FIXED_LEN + context.len() <= stack.len() {
            stack[..FIXED_LEN].copy_from_slice(env.fixed);
            stack[FIXED_LEN..FIXED_LEN + context.len()].copy_from_slice(context);
            &stack[..FIXED_LEN + context.len()]
        } else {
            heap = [env.fixed, context].concat();
            &heap
        };
        let start = out.len();
        out.resize(start + env.ciphertext.len(), 0);
        if self.value_key.open_to(env.nonce, aad, env.ciphertext, env.tag, &mut out[start..]).is_err() {
            out[start..].iter_mut().for_each(|b| *b = 0);
            out.truncate(start);
            return Err(FormatError::ValueTampered);
        }
        Ok(())
    }
}

fn counter_nonce(counter: u64) -> [u8; NONCE_LEN] {
    let mut n = [0u8; NONCE_LEN];
    n[4..].copy_from_slice(&counter.to_be_bytes());
    n
}

/// The KMS encryption context of a field data key: the user context plus
/// `envseal:field` = lowercase hex of the salt.
///
/// # Errors
/// [`FormatError::InvalidContext`] if the context is full.
pub fn kms_context(context: &EncryptionContext, salt: &[u8; SALT_LEN]) -> Result<EncryptionContext, FormatError> {
    context.with_reserved(&[(CONTEXT_KEY, hex_lower(salt))])
}

/// A parsed field envelope, borrowing from its bytes.
#[derive(Debug, Clone, Copy)]
pub struct Envelope<'a> {
    fixed: &'a [u8],
    /// The data-key instance salt.
    pub salt: &'a [u8; SALT_LEN],
    /// The key commitment.
    pub commitment: &'a [u8; 32],
    /// The encoded wrapped-key entry (the bytes, for cache keys).
    pub entry_bytes: &'a [u8],
    nonce: &'a [u8; NONCE_LEN],
    ciphertext: &'a [u8],
    tag: &'a [u8; TAG_LEN],
}

impl<'a> Envelope<'a> {
    /// Parses the byte form.
    ///
    /// # Errors
    /// [`FormatError::NotSealed`], [`FormatError::UnsupportedVersion`],
    /// [`FormatError::UnsupportedSuite`], [`FormatError::Truncated`], limits.
    pub fn parse(bytes: &'a [u8]) -> Result<Self, FormatError> {
        let mut r = wire::Reader::new(bytes);
        if r.u8().map_err(|_| FormatError::NotSealed)? != TAG {
            return Err(FormatError::NotSealed);
        }
        let version = r.u8()?;
        if version != VERSION {
            return Err(FormatError::UnsupportedVersion(version));
        }
        let suite = r.u8()?;
        if suite != SUITE_AES256GCM_HKDF_SHA512 {
            return Err(FormatError::UnsupportedSuite(suite as u16));
        }
        let salt: &[u8; SALT_LEN] = r.take(SALT_LEN)?.try_into().map_err(|_| FormatError::Truncated)?;
        let commitment: &[u8; 32] = r.take(32)?.try_into().map_err(|_| FormatError::Truncated)?;
        let entry_start = r.position();
        // Checked here without allocating; `entry()` builds the owned form when needed.
        entries::check(&mut r)?;
        let entry_bytes = &bytes[entry_start..r.position()];
        let nonce: &[u8; NONCE_LEN] = r.take(NONCE_LEN)?.try_into().map_err(|_| FormatError::Truncated)?;
        let rest = r.remaining();
        if rest.len() < TAG_LEN {
            return Err(FormatError::Truncated);
        }
        if rest.len() - TAG_LEN > MAX_PLAINTEXT {
            return Err(FormatError::LimitExceeded {
                what: "field ciphertext",
                value: (rest.len() - TAG_LEN) as u64,
                max: MAX_PLAINTEXT as u64,
            });
        }
        let (ciphertext, tag) = rest.split_at(rest.len() - TAG_LEN);
        Ok(Self {
            fixed: &bytes[..FIXED_LEN],
            salt,
            commitment,
            entry_bytes,
            nonce,
            ciphertext,
            tag: tag.try_into().map_err(|_| FormatError::Truncated)?,
        })
    }

    /// The wrapped-key entry.
    ///
    /// # Errors
    /// Never for an envelope from [`Envelope::parse`] (it was validated there).
    pub fn entry(&self) -> Result<WrappedKey, FormatError> {
        entries::decode(&mut wire::Reader::new(self.entry_bytes))
    }

    /// Length of the plaintext.
    pub fn plaintext_len(&self) -> usize {
        self.ciphertext.len()
    }

    /// The envelope with its entry replaced (for rewrap): every other byte is unchanged.
    ///
    /// # Errors
    /// [`FormatError`] if the entry exceeds a bound.
    pub fn with_entry(&self, entry: &WrappedKey) -> Result<Vec<u8>, FormatError> {
        let mut out =
            Vec::with_capacity(PREFIX_LEN + entry.blob.len() + 64 + self.ciphertext.len() + NONCE_LEN + TAG_LEN);
        out.extend_from_slice(self.fixed);
        out.extend_from_slice(self.commitment);
        entries::encode(&mut out, entry)?;
        out.extend_from_slice(self.nonce);
        out.extend_from_slice(self.ciphertext);
        out.extend_from_slice(self.tag);
        Ok(out)
    }
}

/// Text form: `esf1:` + base64url without padding.
pub fn to_text(envelope: &[u8]) -> String {
    let mut s = String::with_capacity(TEXT_PREFIX.len() + envelope.len().div_ceil(3) * 4);
    s.push_str(TEXT_PREFIX);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode_string(envelope, &mut s);
    s
}

/// Parses the text form back to bytes (canonical base64url only).
///
/// # Errors
/// [`FormatError::NotSealed`] without the prefix; [`FormatError::Malformed`] for bad base64.
pub fn from_text(text: &str) -> Result<Vec<u8>, Error> {
    let b64 = text.strip_prefix(TEXT_PREFIX).ok_or(FormatError::NotSealed)?;
    // FORMAT.md §5.6: at most (16 MiB + 16 KiB) / 3 × 4 characters after the prefix, which
    // covers the largest plaintext with every entry bound.
    const MAX_TEXT: usize = (MAX_PLAINTEXT + 16 * 1024) / 3 * 4;
    if b64.len() > MAX_TEXT {
        return Err(FormatError::LimitExceeded {
            what: "field text length",
            value: b64.len() as u64,
            max: MAX_TEXT as u64,
        }
        .into());
    }
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(b64)
        .map_err(|_| FormatError::Malformed("field envelope text is not base64url").into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry() -> WrappedKey {
        WrappedKey { backend: "mock".into(), key_id: "key-1".into(), key_version: "1".into(), blob: vec![0xAA; 60] }
    }

    #[test]
    fn seal_open_round_trip_and_tamper() {
        for &engine in Engine::ALL {
            let dk = DataKey::from_bytes([3; 32]);
            let k = FieldKey::new(engine, &dk, [4; 16], &entry()).unwrap();
            let ctx = EncryptionContext::from_pairs([("table", "users")]).unwrap();
            let env = k.seal(0, b"4111 1111 1111 1111", &ctx).unwrap();
            let p = Envelope::parse(&env).unwrap();
            assert_eq!(p.entry().unwrap(), entry());
            assert_eq!(k.open(&p, &ctx).unwrap().expose_secret(), b"4111 1111 1111 1111");
            // Wrong context.
            let other = EncryptionContext::from_pairs([("table", "orders")]).unwrap();
            assert!(matches!(k.open(&p, &other), Err(FormatError::ValueTampered)));
            // Every byte flip outside the entry is rejected (entry flips change the KMS side).
            let entry_range = PREFIX_LEN..PREFIX_LEN + p.entry_bytes.len();
            for i in 0..env.len() {
                let mut bad = env.clone();
                bad[i] ^= 0x01;
                let res = Envelope::parse(&bad).map_err(Error::from).and_then(|p| Ok(k.open(&p, &ctx)?));
                if entry_range.contains(&i) {
                    continue;
                }
                assert!(res.is_err(), "flip at {i} accepted");
            }
            // Nonce counter changes the output.
            assert_ne!(k.seal(1, b"x", &ctx).unwrap(), k.seal(2, b"x", &ctx).unwrap());
        }
    }

    #[test]
    fn text_form() {
        let dk = DataKey::from_bytes([3; 32]);
        let k = FieldKey::new(Engine::default(), &dk, [4; 16], &entry()).unwrap();
        let env = k.seal(0, b"v", &EncryptionContext::new()).unwrap();
        let t = to_text(&env);
        assert!(t.starts_with("esf1:"));
        assert!(t[5..].bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_'));
        assert_eq!(from_text(&t).unwrap(), env);
        assert!(from_text("esf1:***").is_err());
        assert!(from_text("nope").is_err());
    }

    #[test]
    fn rewrap_replaces_only_the_entry() {
        let dk = DataKey::from_bytes([3; 32]);
        let k = FieldKey::new(Engine::default(), &dk, [4; 16], &entry()).unwrap();
        let ctx = EncryptionContext::new();
        let env = k.seal(5, b"secret", &ctx).unwrap();
        let mut e2 = entry();
        e2.key_version = "2".into();
        e2.blob = vec![0xBB; 90];
        let re = Envelope::parse(&env).unwrap().with_entry(&e2).unwrap();
        let p = Envelope::parse(&re).unwrap();
        assert_eq!(p.entry().unwrap(), e2);
        assert_eq!(k.open(&p, &ctx).unwrap().expose_secret(), b"secret");
    }
}
