//! dotenvx's `encrypted:` values: ECIES over secp256k1 as dotenvx does it (through eciesjs with
//! its default configuration, checked against `@dotenvx/primitives` 3.3):
//!
//! ```text
//! value      = "encrypted:" || base64(ephemeral public key (65 bytes, uncompressed)
//!                                     || nonce (16) || tag (16) || ciphertext)
//! shared     = uncompressed point (65 bytes) of private key × ephemeral public key
//! key        = HKDF-SHA-256(ikm = ephemeral public key || shared, no salt, no info, 32 bytes)
//! plaintext  = AES-256-GCM-open(key, nonce (16 bytes), no AAD, ciphertext, tag)
//! ```
//!
//! The private key (64 hex characters, several separated by commas) comes from `.env.keys`
//! (`DOTENV_PRIVATE_KEY`, or `DOTENV_PRIVATE_KEY_<ENVIRONMENT>` for `.env.<environment>`) or the
//! environment variable of the same name.

use aes_gcm::AesGcm;
use aes_gcm::aead::array::Array;
use aes_gcm::aead::consts::U16;
use aes_gcm::aead::{AeadInOut, KeyInit};
use aes_gcm::aes::Aes256;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use envseal_core::values::{KeyPath, ValueType};
use envseal_stores::{Document, Format};
use hkdf::Hkdf;
use k256::elliptic_curve::sec1::ToSec1Point;
use k256::{PublicKey, SecretKey};
use sha2::Sha256;
use zeroize::Zeroizing;

use crate::MigrateError;

/// The prefix of encrypted values.
pub const PREFIX: &str = "encrypted:";

const EPHEMERAL_LEN: usize = 65;
const NONCE_LEN: usize = 16;
const TAG_LEN: usize = 16;

type EciesGcm = AesGcm<Aes256, U16>;

/// dotenvx private keys (one or several).
pub struct PrivateKeys(Vec<SecretKey>);

impl std::fmt::Debug for PrivateKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PrivateKeys({} key(s))", self.0.len())
    }
}

impl PrivateKeys {
    /// Parses `hex[,hex...]`.
    ///
    /// # Errors
    /// [`MigrateError::Malformed`] for a key that is not 32 bytes of hex on the curve (never
    /// quoting it).
    pub fn parse(text: &str) -> Result<PrivateKeys, MigrateError> {
        let mut keys = Vec::new();
        for (i, part) in text.split(',').map(str::trim).filter(|p| !p.is_empty()).enumerate() {
            let bytes = Zeroizing::new(
                hex::decode(part)
                    .map_err(|_| MigrateError::Malformed(format!("dotenvx private key #{} is not hex", i + 1)))?,
            );
            let key = SecretKey::from_slice(&bytes).map_err(|_| {
                MigrateError::Malformed(format!("dotenvx private key #{} is not a secp256k1 key", i + 1))
            })?;
            keys.push(key);
        }
        if keys.is_empty() {
            return Err(MigrateError::Malformed("no dotenvx private key".into()));
        }
        Ok(PrivateKeys(keys))
    }
}

/// The name of the private key for a file name: `.env` → `DOTENV_PRIVATE_KEY`,
/// `.env.production` → `DOTENV_PRIVATE_KEY_PRODUCTION`, `.env.ci.local` →
/// `DOTENV_PRIVATE_KEY_CI_LOCAL`.
pub fn private_key_name(file_name: &str) -> String {
    match file_name.strip_prefix(".env.") {
        Some(env) if !env.is_empty() => {
            let suffix: String =
                env.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_uppercase() } else { '_' }).collect();
            format!("DOTENV_PRIVATE_KEY_{suffix}")
        }
        _ => "DOTENV_PRIVATE_KEY".to_string(),
    }
}

/// Decrypts one `encrypted:` value with the first key that opens it.
///
/// # Errors
/// [`MigrateError::Malformed`] for a value that is not dotenvx's format;
/// [`MigrateError::WrongKey`] when no key opens it (or it was altered).
pub fn decrypt_value(keys: &PrivateKeys, value: &str, name: &str) -> Result<Zeroizing<String>, MigrateError> {
    let bad = |what: &str| MigrateError::Malformed(format!("{name}: dotenvx value {what}"));
    let b64 = value.strip_prefix(PREFIX).ok_or_else(|| bad("lacks the encrypted: prefix"))?;
    let raw = B64.decode(b64.trim()).map_err(|_| bad("is not base64"))?;
    if raw.len() < EPHEMERAL_LEN + NONCE_LEN + TAG_LEN {
        return Err(bad("is too short"));
    }
    let (eph, rest) = raw.split_at(EPHEMERAL_LEN);
    let (nonce, rest) = rest.split_at(NONCE_LEN);
    let (tag, ct) = rest.split_at(TAG_LEN);
    let eph_pk = PublicKey::from_sec1_bytes(eph).map_err(|_| bad("has an invalid ephemeral key"))?;
    for sk in &keys.0 {
        let shared = (eph_pk.to_projective() * *sk.to_nonzero_scalar()).to_affine();
        let shared = shared.to_sec1_point(false);
        let mut ikm = Zeroizing::new(Vec::with_capacity(EPHEMERAL_LEN * 2));
        ikm.extend_from_slice(eph);
        ikm.extend_from_slice(shared.as_bytes());
        let mut key = Zeroizing::new([0u8; 32]);
        // Invariant: 32 bytes is within HKDF-SHA-256's 255 * 32 limit.
        Hkdf::<Sha256>::new(None, &ikm).expand(&[], &mut key[..]).expect("HKDF output length within limits");
        let cipher = EciesGcm::new(&Array::from(*key));
        let mut buf = Zeroizing::new(ct.to_vec());
        let nonce: Array<u8, U16> = Array::try_from(nonce).map_err(|_| bad("nonce"))?;
        let tag: Array<u8, U16> = Array::try_from(tag).map_err(|_| bad("tag"))?;
        if cipher.decrypt_inout_detached(&nonce, &[], (&mut buf[..]).into(), &tag).is_ok() {
            return String::from_utf8(buf.to_vec()).map(Zeroizing::new).map_err(|_| bad("decrypts to non-UTF-8"));
        }
    }
    Err(MigrateError::WrongKey(name.to_string()))
}

/// A dotenvx file, decrypted into a plaintext envseal .env document: every `encrypted:` value
/// replaced by its plaintext (quoted as needed), the `DOTENV_PUBLIC_KEY*` entries and
/// dotenvx's banner comment removed, everything else kept as written.
pub struct Imported {
    /// The document.
    pub document: Box<dyn Document>,
    /// How many values were decrypted.
    pub decrypted: usize,
    /// How many values were in clear already.
    pub plain: usize,
}

impl std::fmt::Debug for Imported {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Imported").field("decrypted", &self.decrypted).field("plain", &self.plain).finish()
    }
}

/// Imports a dotenvx .env file.
///
/// # Errors
/// [`MigrateError::NotDotenvx`] if no value is encrypted; [`MigrateError::WrongKey`] naming
/// the first variable that no key opens; parse errors.
pub fn import(content: &[u8], keys: &PrivateKeys) -> Result<Imported, MigrateError> {
    let store = |e: envseal_stores::StoreError| MigrateError::Store(e.to_string());
    let text = std::str::from_utf8(content).map_err(|_| MigrateError::Malformed("not UTF-8".into()))?;
    // dotenvx's banner: `#/---[DOTENV_PUBLIC_KEY]---/` and the lines framed by `#/ ... /`.
    let kept: Vec<&str> =
        text.split_inclusive('\n').filter(|l| !(l.starts_with("#/") && l.trim_end().ends_with('/'))).collect();
    let mut doc = envseal_stores::parse(Format::Dotenv, kept.concat().as_bytes()).map_err(store)?;
    let public: Vec<KeyPath> = doc
        .entries()
        .into_iter()
        .filter(|e| e.path.display().starts_with("DOTENV_PUBLIC_KEY"))
        .map(|e| e.path)
        .collect();
    for p in &public {
        doc.remove_value(p).map_err(store)?;
    }
    let (mut decrypted, mut plain) = (0, 0);
    for (i, e) in doc.entries().into_iter().enumerate() {
        let value = doc.decode_value(&e.text).map_err(store)?;
        if !value.starts_with(PREFIX) {
            plain += 1;
            continue;
        }
        let name = e.path.display();
        let p = decrypt_value(keys, &value, &name)?;
        let stored = Zeroizing::new(doc.encode_value(&e.path, &p).map_err(store)?);
        doc.set_at(i, ValueType::Str, &stored, false).map_err(store)?;
        decrypted += 1;
    }
    if decrypted == 0 {
        return Err(MigrateError::NotDotenvx);
    }
    Ok(Imported { document: doc, decrypted, plain })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Encrypts as eciesjs does (test-only; envseal never writes dotenvx values).
    fn encrypt(pk: &PublicKey, plain: &[u8], eph_secret: [u8; 32], nonce: [u8; 16]) -> String {
        let eph = SecretKey::from_slice(&eph_secret).unwrap();
        let eph_pub = eph.public_key().to_sec1_point(false);
        let shared = (pk.to_projective() * *eph.to_nonzero_scalar()).to_affine().to_sec1_point(false);
        let mut ikm = eph_pub.as_bytes().to_vec();
        ikm.extend_from_slice(shared.as_bytes());
        let mut key = [0u8; 32];
        Hkdf::<Sha256>::new(None, &ikm).expand(&[], &mut key).unwrap();
        let mut buf = plain.to_vec();
        let tag = EciesGcm::new(&Array::from(key))
            .encrypt_inout_detached(&Array::from(nonce), &[], (&mut buf[..]).into())
            .unwrap();
        let mut out = eph_pub.as_bytes().to_vec();
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&tag);
        out.extend_from_slice(&buf);
        format!("{PREFIX}{}", B64.encode(out))
    }

    #[test]
    fn names() {
        assert_eq!(private_key_name(".env"), "DOTENV_PRIVATE_KEY");
        assert_eq!(private_key_name(".env.production"), "DOTENV_PRIVATE_KEY_PRODUCTION");
        assert_eq!(private_key_name(".env.ci.local"), "DOTENV_PRIVATE_KEY_CI_LOCAL");
        assert_eq!(private_key_name("app.env"), "DOTENV_PRIVATE_KEY");
    }

    #[test]
    fn decrypts_and_refuses_wrong_keys_and_tampering() {
        let sk_hex = "81dac4d2c42e67a2c6542d3b943a4674a05c4be5e7e5a40a689be7a3bd49a07e";
        let keys = PrivateKeys::parse(sk_hex).unwrap();
        let pk = SecretKey::from_slice(&hex::decode(sk_hex).unwrap()).unwrap().public_key();
        let v = encrypt(&pk, b"hello\nworld", [5; 32], [6; 16]);
        assert_eq!(decrypt_value(&keys, &v, "HELLO").unwrap().as_str(), "hello\nworld");
        let other = PrivateKeys::parse(&"11".repeat(32)).unwrap();
        assert!(matches!(decrypt_value(&other, &v, "HELLO"), Err(MigrateError::WrongKey(n)) if n == "HELLO"));
        // Several keys: the second opens it.
        let both = PrivateKeys::parse(&format!("{},{sk_hex}", "11".repeat(32))).unwrap();
        assert!(decrypt_value(&both, &v, "HELLO").is_ok());
        let mut raw = B64.decode(&v[PREFIX.len()..]).unwrap();
        let n = raw.len();
        raw[n - 1] ^= 1;
        let bad = format!("{PREFIX}{}", B64.encode(raw));
        assert!(matches!(decrypt_value(&keys, &bad, "HELLO"), Err(MigrateError::WrongKey(_))));
        assert!(PrivateKeys::parse("zz").is_err());
    }

    #[test]
    fn imports_a_file() {
        let sk_hex = "81dac4d2c42e67a2c6542d3b943a4674a05c4be5e7e5a40a689be7a3bd49a07e";
        let keys = PrivateKeys::parse(sk_hex).unwrap();
        let pk = SecretKey::from_slice(&hex::decode(sk_hex).unwrap()).unwrap().public_key();
        let file = format!(
            "#/-------------------[DOTENV_PUBLIC_KEY]--------------------/\n#/            public-key encryption for .env files          /\n#/----------------------------------------------------------/\nDOTENV_PUBLIC_KEY=\"{}\"\n\n# app\nHELLO=\"{}\"\nPLAIN=x\n",
            hex::encode(pk.to_sec1_point(true).as_bytes()),
            encrypt(&pk, b"it's \"quoted\"", [7; 32], [8; 16])
        );
        let imp = import(file.as_bytes(), &keys).unwrap();
        assert_eq!((imp.decrypted, imp.plain), (1, 1));
        let out = String::from_utf8(imp.document.render()).unwrap();
        assert!(!out.contains("DOTENV_PUBLIC_KEY") && !out.contains("#/"), "{out}");
        assert!(out.contains("# app\n") && out.contains("PLAIN=x\n"), "{out}");
        let e = imp.document.entries();
        assert_eq!(imp.document.decode_value(&e[0].text).unwrap(), "it's \"quoted\"");
    }
}
