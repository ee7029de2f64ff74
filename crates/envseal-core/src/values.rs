//! Value-level sealing for structured secrets files (FORMAT.md §10): .env, JSON and YAML files
//! keep their keys and layout readable, and each value is sealed on its own.
//!
//! One data key per file. From it and the file id, HKDF-SHA-512 derives a value key, a nonce
//! key, a MAC key and a key commitment. Each value is AES-256-GCM encrypted with
//!
//! ```text
//! aad   = "envseal/v1/value" || file_id || type || path
//! nonce = HMAC-SHA-256(nonce_key, aad || plaintext)[..12]
//! text  = "ENC[v1:" type ":" base64url(nonce || ciphertext || tag) "]"
//! ```
//!
//! The synthetic nonce makes sealing deterministic for a given file, path, type and value, so an
//! unchanged value keeps its exact ciphertext across edits (no diff noise), while a nonce is
//! never reused for a different plaintext (a different plaintext gives a different nonce, except
//! with probability 2^-96 per pair). What this reveals: whether a value at a path changed between
//! two versions of the file — which the diff shows anyway.
//!
//! A MAC over every entry in document order (path, sealed or plain, type, and the stored text)
//! detects removal, addition, reordering and swapping of entries.

use base64::Engine as _;
use zeroize::Zeroizing;

use crate::aead::{AeadKey, Engine, NONCE_LEN, TAG_LEN};
use crate::container::hex_lower;
use crate::context::EncryptionContext;
use crate::datakey::{DataKey, SecretBytes};
use crate::error::FormatError;
use crate::kdf::{self, Kdf};

/// File id length.
pub const FILE_ID_LEN: usize = 32;
/// Reserved KMS-context key binding a wrapped key to its file id.
pub const CONTEXT_KEY: &str = "envseal:values";
/// Value-format version (the `v1` in `ENC[v1:...]`).
pub const VERSION: u8 = 1;
/// Most bytes in one sealed value.
pub const MAX_VALUE_LEN: usize = 1024 * 1024;

const LABEL_VALUE: &[u8] = b"envseal/v1/values/value-key";
const LABEL_NONCE: &[u8] = b"envseal/v1/values/nonce-key";
const LABEL_MAC: &[u8] = b"envseal/v1/values/mac-key";
const LABEL_COMMIT: &[u8] = b"envseal/v1/values/commitment";
const AAD_LABEL: &[u8] = b"envseal/v1/value";
const MAC_LABEL: &[u8] = b"envseal/v1/values/mac";

/// The JSON/YAML type a value had before sealing (`.env` values are always strings).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ValueType {
    /// A string.
    Str,
    /// A number (kept as its source text).
    Num,
    /// `true` or `false`.
    Bool,
    /// Null.
    Null,
}

impl ValueType {
    /// One-letter code used in the text form and the AAD: `s`, `n`, `b`, `z`.
    pub fn code(self) -> char {
        match self {
            ValueType::Str => 's',
            ValueType::Num => 'n',
            ValueType::Bool => 'b',
            ValueType::Null => 'z',
        }
    }

    fn from_code(c: char) -> Option<Self> {
        Some(match c {
            's' => ValueType::Str,
            'n' => ValueType::Num,
            'b' => ValueType::Bool,
            'z' => ValueType::Null,
            _ => return None,
        })
    }
}

/// One step of a key path.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum PathSegment {
    /// A map key (or a .env variable name).
    Key(String),
    /// A sequence index.
    Index(u64),
}

/// A key path: unambiguous when encoded (every segment typed and length-prefixed), unlike a
/// `join(path, ":")`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct KeyPath(pub Vec<PathSegment>);

impl KeyPath {
    /// A one-segment path (a .env variable or a top-level key).
    pub fn key(k: impl Into<String>) -> Self {
        KeyPath(vec![PathSegment::Key(k.into())])
    }

    /// This path extended by one segment.
    pub fn child(&self, s: PathSegment) -> Self {
        let mut v = self.0.clone();
        v.push(s);
        KeyPath(v)
    }

    /// Canonical encoding: `u16 count || (0x00 || u32 len || utf8 | 0x01 || u64 index)*`.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&(self.0.len() as u16).to_be_bytes());
        for s in &self.0 {
            match s {
                PathSegment::Key(k) => {
                    out.push(0);
                    out.extend_from_slice(&(k.len() as u32).to_be_bytes());
                    out.extend_from_slice(k.as_bytes());
                }
                PathSegment::Index(i) => {
                    out.push(1);
                    out.extend_from_slice(&i.to_be_bytes());
                }
            }
        }
    }

    /// Dotted display form (`a.b[0].c`), for messages.
    pub fn display(&self) -> String {
        let mut s = String::new();
        for seg in &self.0 {
            match seg {
                PathSegment::Key(k) => {
                    if !s.is_empty() {
                        s.push('.');
                    }
                    s.push_str(k);
                }
                PathSegment::Index(i) => s.push_str(&format!("[{i}]")),
            }
        }
        s
    }
}

/// The keys of one sealed file, derived from its data key and file id.
pub struct ValueKeys {
    value_key: AeadKey,
    nonce_key: Zeroizing<[u8; 32]>,
    mac_key: Zeroizing<[u8; 32]>,
    commitment: [u8; 32],
    file_id: [u8; FILE_ID_LEN],
}

impl std::fmt::Debug for ValueKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ValueKeys").field("file_id", &hex_lower(&self.file_id)).finish_non_exhaustive()
    }
}

/// The KMS context of a value-level file's data key: the user context plus
/// `envseal:values` = lowercase hex file id.
///
/// # Errors
/// [`FormatError::InvalidContext`] if the context is full.
pub fn kms_context(context: &EncryptionContext, file_id: &[u8; FILE_ID_LEN]) -> Result<EncryptionContext, FormatError> {
    context.with_reserved(&[(CONTEXT_KEY, hex_lower(file_id))])
}

/// An incremental MAC over a file's entries, in document order.
pub struct MacBuilder {
    mac: hmac::Hmac<sha2::Sha256>,
    count: u64,
}

impl MacBuilder {
    /// Adds one entry: its path, whether it is sealed, its type, and the text stored in the
    /// file (the `ENC[...]` text for sealed entries, the value for plain ones).
    pub fn entry(&mut self, path: &KeyPath, sealed: bool, ty: ValueType, stored: &str) {
        use hmac::Mac;
        let mut b = Vec::with_capacity(32 + stored.len());
        path.encode_into(&mut b);
        b.push(sealed as u8);
        b.push(ty.code() as u8);
        b.extend_from_slice(&(stored.len() as u64).to_be_bytes());
        b.extend_from_slice(stored.as_bytes());
        self.mac.update(&b);
        self.count += 1;
    }

    /// The MAC, lowercase hex.
    pub fn finish(self) -> String {
        use hmac::Mac;
        let mut m = self.mac;
        m.update(&self.count.to_be_bytes());
        hex_lower(&m.finalize().into_bytes())
    }
}

impl ValueKeys {
    /// Derives the keys.
    pub fn derive(engine: Engine, data_key: &DataKey, file_id: [u8; FILE_ID_LEN]) -> Self {
        let kdf = Kdf::new(data_key, &file_id);
        Self {
            value_key: AeadKey::new(engine, &kdf.expand32(LABEL_VALUE)),
            nonce_key: kdf.expand32(LABEL_NONCE),
            mac_key: kdf.expand32(LABEL_MAC),
            commitment: *kdf.expand32(LABEL_COMMIT),
            file_id,
        }
    }

    /// The key commitment, lowercase hex (stored in the file's metadata).
    pub fn commitment_hex(&self) -> String {
        hex_lower(&self.commitment)
    }

    /// Checks a stored commitment in constant time.
    ///
    /// # Errors
    /// [`FormatError::CommitmentMismatch`].
    pub fn check_commitment(&self, stored_hex: &str) -> Result<(), FormatError> {
        let mut b = [0u8; 32];
        let ok = stored_hex.len() == 64 && base16_decode(stored_hex, &mut b) && kdf::ct_eq(&b, &self.commitment);
        if ok { Ok(()) } else { Err(FormatError::CommitmentMismatch) }
    }

    fn aad(&self, path: &KeyPath, ty: ValueType) -> Vec<u8> {
        let mut aad = Vec::with_capacity(AAD_LABEL.len() + FILE_ID_LEN + 1 + 32);
        aad.extend_from_slice(AAD_LABEL);
        aad.extend_from_slice(&self.file_id);
        aad.push(ty.code() as u8);
        path.encode_into(&mut aad);
        aad
    }

    /// Seals one value to its text form `ENC[v1:<t>:<base64url>]`.
    ///
    /// # Errors
    /// [`FormatError::LimitExceeded`] above [`MAX_VALUE_LEN`].
    pub fn seal(&self, path: &KeyPath, ty: ValueType, plaintext: &[u8]) -> Result<String, FormatError> {
        if plaintext.len() > MAX_VALUE_LEN {
            return Err(FormatError::LimitExceeded {
                what: "value length",
                value: plaintext.len() as u64,
                max: MAX_VALUE_LEN as u64,
            });
        }
        let aad = self.aad(path, ty);
        let mac = kdf::hmac_sha256(&self.nonce_key[..], &[&aad, plaintext]);
        let mut nonce = [0u8; NONCE_LEN];
        nonce.copy_from_slice(&mac[..NONCE_LEN]);
        let mut buf = Vec::with_capacity(NONCE_LEN + plaintext.len() + TAG_LEN);
        buf.extend_from_slice(&nonce);
        buf.extend_from_slice(plaintext);
        let tag = self.value_key.seal_in_place(&nonce, &aad, &mut buf[NONCE_LEN..]);
        buf.extend_from_slice(&tag);
        let mut s = String::with_capacity(12 + buf.len() * 4 / 3);
        s.push_str("ENC[v1:");
        s.push(ty.code());
        s.push(':');
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode_string(&buf, &mut s);
        s.push(']');
        Ok(s)
    }

    /// Opens a sealed value's text form for `path`; returns its type and plaintext.
    ///
    /// # Errors
    /// [`FormatError::Malformed`] for text that is not a sealed value;
    /// [`FormatError::UnsupportedVersion`]; [`FormatError::ValueTampered`] when the value was
    /// altered or moved to another path.
    pub fn open(&self, path: &KeyPath, text: &str) -> Result<(ValueType, SecretBytes), FormatError> {
        let (ty, raw) = parse_sealed(text)?;
        if raw.len() < NONCE_LEN + TAG_LEN {
            return Err(FormatError::ValueTampered);
        }
        let aad = self.aad(path, ty);
        let mut nonce = [0u8; NONCE_LEN];
        nonce.copy_from_slice(&raw[..NONCE_LEN]);
        let body = &raw[NONCE_LEN..];
        let (ct, tag) = body.split_at(body.len() - TAG_LEN);
        let mut t = [0u8; TAG_LEN];
        t.copy_from_slice(tag);
        let mut out = vec![0u8; ct.len()];
        self.value_key.open_to(&nonce, &aad, ct, &t, &mut out).map_err(|_| FormatError::ValueTampered)?;
        Ok((ty, SecretBytes::new(out)))
    }

    /// Starts the whole-file MAC. `header` covers the metadata that must not change without
    /// the data key (format version, context, plain-key rule).
    pub fn mac(&self, header: &[u8]) -> MacBuilder {
        use hmac::{KeyInit, Mac};
        // Invariant: HMAC accepts keys of any length.
        let mut mac = <hmac::Hmac<sha2::Sha256> as KeyInit>::new_from_slice(&self.mac_key[..]).expect("any key length");
        mac.update(MAC_LABEL);
        mac.update(&self.file_id);
        mac.update(&(header.len() as u64).to_be_bytes());
        mac.update(header);
        MacBuilder { mac, count: 0 }
    }

    /// Checks a computed MAC against the stored one in constant time.
    pub fn mac_matches(computed_hex: &str, stored_hex: &str) -> bool {
        let (mut a, mut b) = ([0u8; 32], [0u8; 32]);
        computed_hex.len() == 64
            && stored_hex.len() == 64
            && base16_decode(computed_hex, &mut a)
            && base16_decode(stored_hex, &mut b)
            && kdf::ct_eq(&a, &b)
    }
}

fn base16_decode(s: &str, out: &mut [u8; 32]) -> bool {
    let b = s.as_bytes();
    if b.len() != 64 {
        return false;
    }
    for i in 0..32 {
        let hi = (b[2 * i] as char).to_digit(16);
        let lo = (b[2 * i + 1] as char).to_digit(16);
        match (hi, lo) {
            (Some(h), Some(l)) => out[i] = (h * 16 + l) as u8,
            _ => return false,
        }
    }
    true
}

/// True when `text` looks like a sealed value (`ENC[v...]`).
pub fn is_sealed(text: &str) -> bool {
    text.starts_with("ENC[v") && text.ends_with(']')
}

/// Splits `ENC[v1:<t>:<b64>]` into type and raw bytes.
fn parse_sealed(text: &str) -> Result<(ValueType, Vec<u8>), FormatError> {
    let inner = text
        .strip_prefix("ENC[v")
        .and_then(|s| s.strip_suffix(']'))
        .ok_or(FormatError::Malformed("not a sealed value"))?;
    let (ver, rest) = inner.split_once(':').ok_or(FormatError::Malformed("sealed value"))?;
    // Canonical decimal only: `u8::from_str` also takes `+1` and `01`, which would give one
    // sealed value several spellings (found by fuzz/fuzz_targets/sealed_value.rs).
    let canonical = ver.bytes().all(|b| b.is_ascii_digit()) && (ver == "0" || !ver.starts_with('0'));
    match ver.parse::<u8>() {
        Ok(VERSION) if canonical => {}
        Ok(v) if canonical => return Err(FormatError::UnsupportedVersion(v)),
        _ => return Err(FormatError::Malformed("sealed value version")),
    }
    let (t, b64) = rest.split_once(':').ok_or(FormatError::Malformed("sealed value"))?;
    let mut chars = t.chars();
    let ty = match (chars.next(), chars.next()) {
        (Some(c), None) => ValueType::from_code(c).ok_or(FormatError::Malformed("sealed value type"))?,
        _ => return Err(FormatError::Malformed("sealed value type")),
    };
    if b64.len() > (MAX_VALUE_LEN + 64) * 4 / 3 {
        return Err(FormatError::LimitExceeded {
            what: "sealed value length",
            value: b64.len() as u64,
            max: MAX_VALUE_LEN as u64,
        });
    }
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(b64)
        .map_err(|_| FormatError::Malformed("sealed value is not base64url"))?;
    Ok((ty, raw))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(engine: Engine) -> ValueKeys {
        ValueKeys::derive(engine, &DataKey::from_bytes([1; 32]), [2; 32])
    }

    #[test]
    fn seal_open_deterministic_and_bound_to_path() {
        for &e in Engine::ALL {
            let k = keys(e);
            let p = KeyPath::key("DB_PASSWORD");
            let a = k.seal(&p, ValueType::Str, b"hunter2").unwrap();
            assert_eq!(a, k.seal(&p, ValueType::Str, b"hunter2").unwrap(), "deterministic");
            assert_ne!(a, k.seal(&p, ValueType::Str, b"hunter3").unwrap());
            assert_ne!(a, k.seal(&KeyPath::key("OTHER"), ValueType::Str, b"hunter2").unwrap());
            assert!(a.starts_with("ENC[v1:s:") && a.ends_with(']'));
            let (t, v) = k.open(&p, &a).unwrap();
            assert_eq!((t, v.expose_secret()), (ValueType::Str, &b"hunter2"[..]));
            // Moved to another key: rejected.
            assert!(matches!(k.open(&KeyPath::key("OTHER"), &a), Err(FormatError::ValueTampered)));
            // Type changed: rejected.
            let n = a.replacen(":s:", ":n:", 1);
            assert!(matches!(k.open(&p, &n), Err(FormatError::ValueTampered)));
            // Other file (file id): rejected.
            let other = ValueKeys::derive(e, &DataKey::from_bytes([1; 32]), [3; 32]);
            assert!(matches!(other.open(&p, &a), Err(FormatError::ValueTampered)));
            // Version.
            assert!(matches!(k.open(&p, &a.replacen("v1", "v9", 1)), Err(FormatError::UnsupportedVersion(9))));
        }
    }

    /// Regression (fuzz target `sealed_value`, fuzz/regressions/sealed_value/): the version
    /// must be written canonically; `v+1` and `v01` opened like `v1`.
    #[test]
    fn non_canonical_version_is_rejected() {
        for &e in Engine::ALL {
            let k = keys(e);
            let p = KeyPath::key("K");
            let a = k.seal(&p, ValueType::Bool, b"true").unwrap();
            assert!(k.open(&p, &a).is_ok());
            for bad in ["ENC[v+1:", "ENC[v01:", "ENC[v 1:", "ENC[v1 :"] {
                let b = a.replacen("ENC[v1:", bad, 1);
                assert!(matches!(k.open(&p, &b), Err(FormatError::Malformed(_))), "{bad} accepted");
            }
            assert!(matches!(k.open(&p, &a.replacen("v1:", "v2:", 1)), Err(FormatError::UnsupportedVersion(2))));
            assert!(matches!(k.open(&p, &a.replacen("v1:", "v0:", 1)), Err(FormatError::UnsupportedVersion(0))));
        }
    }

    #[test]
    fn paths_do_not_collide() {
        let k = keys(Engine::default());
        let a = KeyPath(vec![PathSegment::Key("a:b".into())]);
        let b = KeyPath(vec![PathSegment::Key("a".into()), PathSegment::Key("b".into())]);
        let c = KeyPath(vec![PathSegment::Key("a".into()), PathSegment::Index(0)]);
        let d = KeyPath(vec![PathSegment::Key("a".into()), PathSegment::Key("0".into())]);
        let s = k.seal(&a, ValueType::Str, b"v").unwrap();
        assert!(k.open(&b, &s).is_err());
        let s = k.seal(&c, ValueType::Str, b"v").unwrap();
        assert!(k.open(&d, &s).is_err());
    }

    #[test]
    fn mac_detects_changes() {
        let k = keys(Engine::default());
        let mac = |entries: &[(&str, &str)]| {
            let mut m = k.mac(b"hdr");
            for (p, v) in entries {
                m.entry(&KeyPath::key(*p), true, ValueType::Str, v);
            }
            m.finish()
        };
        let base = mac(&[("A", "1"), ("B", "2")]);
        assert!(ValueKeys::mac_matches(&base, &mac(&[("A", "1"), ("B", "2")])));
        for other in [
            mac(&[("B", "2"), ("A", "1")]),
            mac(&[("A", "1")]),
            mac(&[("A", "2"), ("B", "1")]),
            mac(&[("A", "1"), ("B", "2"), ("C", "3")]),
        ] {
            assert!(!ValueKeys::mac_matches(&base, &other));
        }
        assert!(k.check_commitment(&k.commitment_hex()).is_ok());
        assert!(keys(Engine::default()).check_commitment(&"0".repeat(64)).is_err());
    }
}
