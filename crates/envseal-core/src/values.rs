//! Value-level sealing for structured secrets files (FORMAT.md §10): .env, JSON and YAML files
//! keep their keys and layout readable, and each value is sealed on its own.
//!
//! One data key per file. From it and the file id, HKDF-SHA-512 derives a value key, a MAC key
//! and a key commitment. Sealing is deterministic for a given file, path and value, so an
//! unchanged value keeps its exact ciphertext across edits (no diff noise).
//!
//! Format 2 (written today) uses AES-256-GCM-SIV (RFC 8452), a nonce-misuse-resistant AEAD, with
//! a fixed nonce; the value's type is inside the ciphertext and the plaintext is padded to a
//! multiple of the file's padding (32 bytes by default), so `true` and `false` or two short
//! numbers seal to texts of the same length:
//!
//! ```text
//! aad   = "envseal/v2/value" || file_id || path
//! inner = type || value || 0x80 || 0x00*        (to a multiple of `padding` bytes)
//! text  = "ENC[v2:" base64url(AES-256-GCM-SIV(value_key, 0^96, aad, inner)) "]"
//! ```
//!
//! Format 1 (still read, and written for files that are already format 1) used AES-256-GCM
//! with a synthetic nonce `HMAC-SHA-256(nonce_key, aad || plaintext)[..12]` and showed the type
//! letter in clear: `ENC[v1:<t>:...]`.
//!
//! A MAC over every entry in document order (path, sealed or plain, type, and the stored text)
//! detects removal, addition, reordering and swapping of entries.

use base64::Engine as _;
use zeroize::Zeroizing;

use crate::aead::{AeadKey, Engine, NONCE_LEN, SivKey, TAG_LEN};
use crate::container::hex_lower;
use crate::context::EncryptionContext;
use crate::datakey::{DataKey, SecretBytes};
use crate::error::FormatError;
use crate::kdf::{self, Kdf};

/// File id length.
pub const FILE_ID_LEN: usize = 32;
/// Reserved KMS-context key binding a wrapped key to its file id.
pub const CONTEXT_KEY: &str = "envseal:values";
/// Format 1: AES-256-GCM with a synthetic nonce, type letter in clear (read, and written only
/// for files that are format 1 already).
pub const V1: u8 = 1;
/// Format 2: AES-256-GCM-SIV, type inside the ciphertext, padded values.
pub const V2: u8 = 2;
/// The format new files are sealed in.
pub const VERSION: u8 = V2;
/// Most bytes in one value's plaintext (its source text).
pub const MAX_VALUE_LEN: usize = 1024 * 1024;
/// Default padding of format 2: values are padded to a multiple of this many bytes (type byte
/// and padding marker included), so every value of up to 30 bytes has the same length.
pub const DEFAULT_PADDING: u32 = 32;
/// Largest padding a file may ask for.
pub const MAX_PADDING: u32 = 4096;

/// Labels of one format version.
struct Labels {
    value: &'static [u8],
    nonce: &'static [u8],
    mac_key: &'static [u8],
    commit: &'static [u8],
    aad: &'static [u8],
    mac: &'static [u8],
}

const LABELS_V1: Labels = Labels {
    value: b"envseal/v1/values/value-key",
    nonce: b"envseal/v1/values/nonce-key",
    mac_key: b"envseal/v1/values/mac-key",
    commit: b"envseal/v1/values/commitment",
    aad: b"envseal/v1/value",
    mac: b"envseal/v1/values/mac",
};

const LABELS_V2: Labels = Labels {
    value: b"envseal/v2/values/value-key",
    nonce: b"",
    mac_key: b"envseal/v2/values/mac-key",
    commit: b"envseal/v2/values/commitment",
    aad: b"envseal/v2/value",
    mac: b"envseal/v2/values/mac",
};

fn labels(version: u8) -> Result<&'static Labels, FormatError> {
    match version {
        V1 => Ok(&LABELS_V1),
        V2 => Ok(&LABELS_V2),
        v => Err(FormatError::UnsupportedVersion(v)),
    }
}

/// Padding marker (ISO/IEC 7816-4): the first byte after the value in a format-2 plaintext.
const PAD_MARKER: u8 = 0x80;

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

    /// The type of a one-letter code.
    pub fn from_code(c: char) -> Option<Self> {
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

    /// The JSON pointer (RFC 6901) of the path: `/a/b/0/c`, with `~` and `/` in keys escaped
    /// as `~0` and `~1`. Unambiguous for map keys that contain dots; a .env variable `K` is
    /// `/K`. Format 2's plain-keys rule is matched against it (FORMAT.md §10.4).
    pub fn pointer(&self) -> String {
        let mut s = String::new();
        for seg in &self.0 {
            s.push('/');
            match seg {
                PathSegment::Key(k) => s.push_str(&k.replace('~', "~0").replace('/', "~1")),
                PathSegment::Index(i) => s.push_str(&i.to_string()),
            }
        }
        s
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

/// The value cipher of one format version.
enum Cipher {
    /// Format 1: AES-256-GCM with a synthetic nonce from this key.
    V1 { key: AeadKey, nonce_key: Zeroizing<[u8; 32]> },
    /// Format 2: AES-256-GCM-SIV with a fixed nonce, values padded to `padding` bytes.
    V2 { key: SivKey, padding: u32 },
}

/// The keys of one sealed file, derived from its data key and file id.
pub struct ValueKeys {
    version: u8,
    cipher: Cipher,
    mac_key: Zeroizing<[u8; 32]>,
    commitment: [u8; 32],
    file_id: [u8; FILE_ID_LEN],
}

impl std::fmt::Debug for ValueKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ValueKeys")
            .field("version", &self.version)
            .field("file_id", &hex_lower(&self.file_id))
            .finish_non_exhaustive()
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

/// Checks a padding value (FORMAT.md §10.3).
///
/// # Errors
/// [`FormatError::LimitExceeded`] above [`MAX_PADDING`].
pub fn check_padding(padding: u32) -> Result<(), FormatError> {
    if padding > MAX_PADDING {
        return Err(FormatError::LimitExceeded {
            what: "value padding",
            value: padding as u64,
            max: MAX_PADDING as u64,
        });
    }
    Ok(())
}

/// An incremental MAC over a file's entries, in document order.
pub struct MacBuilder {
    mac: hmac::Hmac<sha2::Sha256>,
    count: u64,
    /// One entry's encoding, reused.
    buf: Vec<u8>,
}

impl MacBuilder {
    /// Adds one entry: its path, whether it is sealed, its type, and the text stored in the
    /// file (the `ENC[...]` text for sealed entries, the value for plain ones).
    pub fn entry(&mut self, path: &KeyPath, sealed: bool, ty: ValueType, stored: &str) {
        use hmac::Mac;
        let b = &mut self.buf;
        b.clear();
        path.encode_into(b);
        b.push(sealed as u8);
        b.push(ty.code() as u8);
        b.extend_from_slice(&(stored.len() as u64).to_be_bytes());
        self.mac.update(b);
        self.mac.update(stored.as_bytes());
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
    /// Derives the keys of a file of format `version` ([`V1`] or [`V2`]). Format 2 pads
    /// values to a multiple of `padding` bytes (0: no padding beyond the marker); format 1
    /// ignores it.
    ///
    /// # Errors
    /// [`FormatError::UnsupportedVersion`] for another version; [`FormatError::LimitExceeded`]
    /// for a padding above [`MAX_PADDING`].
    pub fn derive(
        engine: Engine,
        data_key: &DataKey,
        file_id: [u8; FILE_ID_LEN],
        version: u8,
        padding: u32,
    ) -> Result<Self, FormatError> {
        let l = labels(version)?;
        check_padding(padding)?;
        let kdf = Kdf::new(data_key, &file_id);
        let cipher = match version {
            V1 => Cipher::V1 { key: AeadKey::new(engine, &kdf.expand32(l.value)), nonce_key: kdf.expand32(l.nonce) },
            _ => Cipher::V2 { key: SivKey::new(engine, &kdf.expand32(l.value)), padding },
        };
        Ok(Self { version, cipher, mac_key: kdf.expand32(l.mac_key), commitment: *kdf.expand32(l.commit), file_id })
    }

    /// The format version these keys seal.
    pub fn version(&self) -> u8 {
        self.version
    }

    /// The key commitment, lowercase hex (stored in the file's metadata).
    pub fn commitment_hex(&self) -> String {
        hex_lower(&self.commitment)
    }

    /// Checks a stored commitment in constant time. The stored value must be 64 lowercase hex
    /// digits (the canonical spelling).
    ///
    /// # Errors
    /// [`FormatError::CommitmentMismatch`].
    pub fn check_commitment(&self, stored_hex: &str) -> Result<(), FormatError> {
        let mut b = [0u8; 32];
        let ok = base16_decode(stored_hex, &mut b) && kdf::ct_eq(&b, &self.commitment);
        if ok { Ok(()) } else { Err(FormatError::CommitmentMismatch) }
    }

    fn aad(&self, path: &KeyPath, ty: ValueType) -> Vec<u8> {
        let l = if self.version == V1 { &LABELS_V1 } else { &LABELS_V2 };
        let mut aad = Vec::with_capacity(l.aad.len() + FILE_ID_LEN + 1 + 32);
        aad.extend_from_slice(l.aad);
        aad.extend_from_slice(&self.file_id);
        if self.version == V1 {
            aad.push(ty.code() as u8);
        }
        path.encode_into(&mut aad);
        aad
    }

    /// Seals one value to its text form: `ENC[v2:<base64url>]` (format 2) or
    /// `ENC[v1:<t>:<base64url>]` (format 1).
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
        let mut s = String::new();
        match &self.cipher {
            Cipher::V1 { key, nonce_key } => {
                let mac = kdf::hmac_sha256(&nonce_key[..], &[&aad, plaintext]);
                let mut nonce = [0u8; NONCE_LEN];
                nonce.copy_from_slice(&mac[..NONCE_LEN]);
                let mut buf = Vec::with_capacity(NONCE_LEN + plaintext.len() + TAG_LEN);
                buf.extend_from_slice(&nonce);
                buf.extend_from_slice(plaintext);
                let tag = key.seal_in_place(&nonce, &aad, &mut buf[NONCE_LEN..]);
                buf.extend_from_slice(&tag);
                s.reserve(12 + buf.len() * 4 / 3);
                s.push_str("ENC[v1:");
                s.push(ty.code());
                s.push(':');
                base64::engine::general_purpose::URL_SAFE_NO_PAD.encode_string(&buf, &mut s);
            }
            Cipher::V2 { key, padding } => {
                let mut buf = Zeroizing::new(pad(ty, plaintext, *padding));
                let tag = key.seal_in_place(&[0u8; NONCE_LEN], &aad, &mut buf);
                buf.extend_from_slice(&tag);
                s.reserve(8 + buf.len() * 4 / 3);
                s.push_str("ENC[v2:");
                base64::engine::general_purpose::URL_SAFE_NO_PAD.encode_string(&buf[..], &mut s);
            }
        }
        s.push(']');
        Ok(s)
    }

    /// Opens a sealed value's text form for `path`; returns its type and plaintext.
    ///
    /// # Errors
    /// [`FormatError::Malformed`] for text that is not a sealed value of this file's format;
    /// [`FormatError::UnsupportedVersion`]; [`FormatError::ValueTampered`] when the value was
    /// altered or moved to another path.
    pub fn open(&self, path: &KeyPath, text: &str) -> Result<(ValueType, SecretBytes), FormatError> {
        let sealed = parse_sealed(text)?;
        if sealed.version != self.version {
            return Err(FormatError::Malformed("sealed value of another format version than its file"));
        }
        let raw = sealed.raw;
        match &self.cipher {
            Cipher::V1 { key, .. } => {
                let ty = sealed.ty.ok_or(FormatError::Malformed("sealed value type"))?;
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
                key.open_to(&nonce, &aad, ct, &t, &mut out).map_err(|_| FormatError::ValueTampered)?;
                Ok((ty, SecretBytes::new(out)))
            }
            Cipher::V2 { key, .. } => {
                // The smallest inner plaintext is the type byte and the marker.
                if raw.len() < 2 + TAG_LEN {
                    return Err(FormatError::ValueTampered);
                }
                let aad = self.aad(path, ValueType::Str);
                let mut buf = Zeroizing::new(raw);
                let split = buf.len() - TAG_LEN;
                let mut t = [0u8; TAG_LEN];
                t.copy_from_slice(&buf[split..]);
                buf.truncate(split);
                key.open_in_place(&[0u8; NONCE_LEN], &aad, &mut buf, &t).map_err(|_| FormatError::ValueTampered)?;
                let (ty, len) = unpad(&buf)?;
                Ok((ty, SecretBytes::new(buf[1..1 + len].to_vec())))
            }
        }
    }

    /// Starts the whole-file MAC. `header` covers the metadata that must not change without
    /// the data key (format version, context, plain-key rule, padding).
    pub fn mac(&self, header: &[u8]) -> MacBuilder {
        use hmac::{KeyInit, Mac};
        let l = if self.version == V1 { &LABELS_V1 } else { &LABELS_V2 };
        // Invariant: HMAC accepts keys of any length.
        let mut mac = <hmac::Hmac<sha2::Sha256> as KeyInit>::new_from_slice(&self.mac_key[..]).expect("any key length");
        mac.update(l.mac);
        mac.update(&self.file_id);
        mac.update(&(header.len() as u64).to_be_bytes());
        mac.update(header);
        MacBuilder { mac, count: 0, buf: Vec::with_capacity(64) }
    }

    /// Checks a computed MAC against the stored one in constant time.
    pub fn mac_matches(computed_hex: &str, stored_hex: &str) -> bool {
        let (mut a, mut b) = ([0u8; 32], [0u8; 32]);
        base16_decode(computed_hex, &mut a) && base16_decode(stored_hex, &mut b) && kdf::ct_eq(&a, &b)
    }
}

/// Format 2's inner plaintext: type byte, value, marker, zeros to a multiple of `padding`.
fn pad(ty: ValueType, value: &[u8], padding: u32) -> Vec<u8> {
    let unpadded = 1 + value.len() + 1;
    let p = padding as usize;
    let total = if p == 0 { unpadded } else { unpadded.div_ceil(p) * p };
    let mut buf = Vec::with_capacity(total + TAG_LEN);
    buf.push(ty.code() as u8);
    buf.extend_from_slice(value);
    buf.push(PAD_MARKER);
    buf.resize(total, 0);
    buf
}

/// Splits a format-2 inner plaintext into type and value length (the value is
/// `inner[1..1 + len]`). The bytes were authenticated, so a bad layout is a writer's bug.
fn unpad(inner: &[u8]) -> Result<(ValueType, usize), FormatError> {
    let bad = FormatError::Malformed("sealed value padding");
    let end = inner.iter().rposition(|&b| b != 0).ok_or(bad.clone())?;
    if inner[end] != PAD_MARKER || end == 0 {
        return Err(bad);
    }
    let ty = ValueType::from_code(inner[0] as char).ok_or(FormatError::Malformed("sealed value type"))?;
    Ok((ty, end - 1))
}

/// Decodes 64 **lowercase** hex digits (FORMAT.md §10.4: the canonical spelling; uppercase is
/// rejected so that one commitment or MAC has one text).
fn base16_decode(s: &str, out: &mut [u8; 32]) -> bool {
    let b = s.as_bytes();
    if b.len() != 64 {
        return false;
    }
    let digit = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    };
    for i in 0..32 {
        match (digit(b[2 * i]), digit(b[2 * i + 1])) {
            (Some(h), Some(l)) => out[i] = h * 16 + l,
            _ => return false,
        }
    }
    true
}

/// True when `text` looks like a sealed value (`ENC[v...]`).
pub fn is_sealed(text: &str) -> bool {
    text.starts_with("ENC[v") && text.ends_with(']')
}

/// A sealed value's text, parsed.
struct Sealed {
    version: u8,
    /// The clear type letter (format 1 only).
    ty: Option<ValueType>,
    raw: Vec<u8>,
}

/// Parses `ENC[v2:<b64>]` or `ENC[v1:<t>:<b64>]` (FORMAT.md §10.3): canonical version digits,
/// canonical unpadded base64url, bounded before decoding.
fn parse_sealed(text: &str) -> Result<Sealed, FormatError> {
    let inner = text
        .strip_prefix("ENC[v")
        .and_then(|s| s.strip_suffix(']'))
        .ok_or(FormatError::Malformed("not a sealed value"))?;
    let (ver, rest) = inner.split_once(':').ok_or(FormatError::Malformed("sealed value"))?;
    // Canonical decimal only: `u8::from_str` also takes `+1` and `01`, which would give one
    // sealed value several spellings (found by fuzz/fuzz_targets/sealed_value.rs).
    let canonical = ver.bytes().all(|b| b.is_ascii_digit()) && (ver == "0" || !ver.starts_with('0'));
    let version = match ver.parse::<u8>() {
        Ok(v @ (V1 | V2)) if canonical => v,
        Ok(v) if canonical => return Err(FormatError::UnsupportedVersion(v)),
        _ => return Err(FormatError::Malformed("sealed value version")),
    };
    let (ty, b64) = if version == V1 {
        let (t, b64) = rest.split_once(':').ok_or(FormatError::Malformed("sealed value"))?;
        let mut chars = t.chars();
        let ty = match (chars.next(), chars.next()) {
            (Some(c), None) => ValueType::from_code(c).ok_or(FormatError::Malformed("sealed value type"))?,
            _ => return Err(FormatError::Malformed("sealed value type")),
        };
        (Some(ty), b64)
    } else {
        (None, rest)
    };
    // The largest sealed value: nonce, the largest padded plaintext, tag.
    let max_raw = NONCE_LEN + MAX_VALUE_LEN + 2 + MAX_PADDING as usize + TAG_LEN;
    if b64.len() > max_raw.div_ceil(3) * 4 {
        return Err(FormatError::LimitExceeded {
            what: "sealed value length",
            value: b64.len() as u64,
            max: max_raw.div_ceil(3) as u64 * 4,
        });
    }
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(b64)
        .map_err(|_| FormatError::Malformed("sealed value is not canonical base64url"))?;
    Ok(Sealed { version, ty, raw })
}

/// The format version of a sealed value's text (`ENC[v<N>:...]`), without decoding it.
///
/// # Errors
/// [`FormatError::Malformed`] for text that is not a sealed value;
/// [`FormatError::UnsupportedVersion`] for a version this build does not read.
pub fn sealed_version(text: &str) -> Result<u8, FormatError> {
    Ok(parse_sealed(text)?.version)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(engine: Engine) -> ValueKeys {
        ValueKeys::derive(engine, &DataKey::from_bytes([1; 32]), [2; 32], V1, 0).unwrap()
    }

    fn keys2(engine: Engine, padding: u32) -> ValueKeys {
        ValueKeys::derive(engine, &DataKey::from_bytes([1; 32]), [2; 32], V2, padding).unwrap()
    }

    #[test]
    fn format2_hides_type_and_short_lengths() {
        let mut texts = Vec::new();
        for &e in Engine::ALL {
            let k = keys2(e, DEFAULT_PADDING);
            let p = KeyPath::key("K");
            let mut lens = Vec::new();
            for (ty, v) in [
                (ValueType::Bool, &b"true"[..]),
                (ValueType::Bool, b"false"),
                (ValueType::Num, b"7"),
                (ValueType::Num, b"1234567890"),
                (ValueType::Null, b""),
                (ValueType::Str, b"ab"),
                (ValueType::Str, &[b'x'; 30]),
            ] {
                let t = k.seal(&p, ty, v).unwrap();
                assert!(t.starts_with("ENC[v2:") && t.ends_with(']'), "{t}");
                assert_eq!(t, k.seal(&p, ty, v).unwrap(), "deterministic");
                let (t2, back) = k.open(&p, &t).unwrap();
                assert_eq!((t2, back.expose_secret()), (ty, v));
                lens.push(t.len());
                texts.push(t);
            }
            assert!(lens.windows(2).all(|w| w[0] == w[1]), "{lens:?}");
            // 31 bytes do not fit one 32-byte block with type and marker.
            assert!(k.seal(&p, ValueType::Str, &[b'x'; 31]).unwrap().len() > lens[0]);
            // Same value, another type: another ciphertext (the type is authenticated inside).
            assert_ne!(k.seal(&p, ValueType::Str, b"true").unwrap(), k.seal(&p, ValueType::Bool, b"true").unwrap());
            // Bound to path and file; tampering detected.
            let a = k.seal(&p, ValueType::Str, b"hunter2").unwrap();
            assert!(matches!(k.open(&KeyPath::key("OTHER"), &a), Err(FormatError::ValueTampered)));
            let other = ValueKeys::derive(e, &DataKey::from_bytes([1; 32]), [3; 32], V2, 32).unwrap();
            assert!(matches!(other.open(&p, &a), Err(FormatError::ValueTampered)));
            let flipped = format!("{}{}", &a[..10], if &a[10..11] == "A" { "B" } else { "A" }) + &a[11..];
            assert!(matches!(k.open(&p, &flipped), Err(FormatError::ValueTampered) | Err(FormatError::Malformed(_))));
            // A format-1 value in a format-2 file, and the reverse, are refused.
            let v1 = keys(e).seal(&p, ValueType::Str, b"x").unwrap();
            assert!(matches!(k.open(&p, &v1), Err(FormatError::Malformed(_))));
            assert!(matches!(keys(e).open(&p, &a), Err(FormatError::Malformed(_))));
            assert!(matches!(k.open(&p, &a.replacen("v2", "v3", 1)), Err(FormatError::UnsupportedVersion(3))));
            // Padding 0: marker only.
            let k0 = keys2(e, 0);
            assert!(
                k0.seal(&p, ValueType::Bool, b"true").unwrap().len()
                    < k0.seal(&p, ValueType::Bool, b"false").unwrap().len()
            );
            assert_eq!(k0.open(&p, &k0.seal(&p, ValueType::Null, b"").unwrap()).unwrap().0, ValueType::Null);
        }
        // Both engines write the same bytes.
        let n = texts.len() / Engine::ALL.len();
        for w in texts.chunks(n).collect::<Vec<_>>().windows(2) {
            assert_eq!(w[0], w[1]);
        }
        assert!(
            ValueKeys::derive(Engine::default(), &DataKey::from_bytes([1; 32]), [2; 32], V2, MAX_PADDING + 1).is_err()
        );
        assert!(matches!(
            ValueKeys::derive(Engine::default(), &DataKey::from_bytes([1; 32]), [2; 32], 3, 32),
            Err(FormatError::UnsupportedVersion(3))
        ));
    }

    #[test]
    fn padding_layout() {
        assert_eq!(pad(ValueType::Bool, b"true", 32).len(), 32);
        assert_eq!(pad(ValueType::Str, &[1; 30], 32).len(), 32);
        assert_eq!(pad(ValueType::Str, &[1; 31], 32).len(), 64);
        assert_eq!(pad(ValueType::Str, b"ab", 0), b"sab\x80".to_vec());
        assert_eq!(unpad(&pad(ValueType::Num, b"12", 16)).unwrap(), (ValueType::Num, 2));
        assert_eq!(unpad(&pad(ValueType::Str, &[0x80, 0], 16)).unwrap(), (ValueType::Str, 2));
        for bad in [&b""[..], b"\0\0", b"s\0", b"\x80", b"sab\x81\0", b"qab\x80"] {
            assert!(unpad(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn commitment_and_mac_hex_must_be_lowercase() {
        let k = keys2(Engine::default(), 32);
        let c = k.commitment_hex();
        assert!(k.check_commitment(&c).is_ok());
        assert!(matches!(k.check_commitment(&c.to_uppercase()), Err(FormatError::CommitmentMismatch)));
        let m = k.mac(b"h").finish();
        assert!(ValueKeys::mac_matches(&m, &m));
        assert!(!ValueKeys::mac_matches(&m, &m.to_uppercase()));
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
            let other = ValueKeys::derive(e, &DataKey::from_bytes([1; 32]), [3; 32], V1, 0).unwrap();
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
            // `v2` is a known version, but not this file's (format 1).
            assert!(matches!(k.open(&p, &a.replacen("v1:", "v2:", 1)), Err(FormatError::Malformed(_))));
            assert!(matches!(k.open(&p, &a.replacen("v1:", "v3:", 1)), Err(FormatError::UnsupportedVersion(3))));
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
