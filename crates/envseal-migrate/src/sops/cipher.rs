//! sops's value encryption (sops `aes/cipher.go`): `ENC[AES256_GCM,data:B64,iv:B64,tag:B64,type:T]`,
//! AES-256-GCM under the file's data key with a 32-byte IV and, as additional data, the value's
//! path of mapping keys joined with `:` plus a trailing `:` (sequence indices are not part of
//! it). An empty string is stored as an empty string, unencrypted.

use aes_gcm::AesGcm;
use aes_gcm::aead::array::Array;
use aes_gcm::aead::consts::U32;
use aes_gcm::aead::{AeadInOut, KeyInit};
use aes_gcm::aes::Aes256;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use envseal_core::DataKey;
use zeroize::Zeroizing;

use crate::MigrateError;

type SopsGcm = AesGcm<Aes256, U32>;

const TAG_LEN: usize = 16;

/// The type sops recorded for a value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SopsType {
    /// `str`
    Str,
    /// `int` (and `int64`)
    Int,
    /// `float`
    Float,
    /// `bool` (sops writes `True`/`False`)
    Bool,
    /// `bytes`
    Bytes,
    /// `comment`
    Comment,
}

/// Whether `text` is a sops-encrypted value.
pub fn is_encrypted(text: &str) -> bool {
    text.starts_with("ENC[AES256_GCM,") && text.ends_with(']')
}

/// Decrypts one `ENC[...]` value with `aad` (the joined path). The plaintext is returned as
/// bytes; callers turn it into the value of its type.
///
/// # Errors
/// [`MigrateError::Malformed`] for a value that does not parse (never quoting it);
/// [`MigrateError::ValueTampered`] when authentication fails (wrong key, altered value, or a
/// value moved to another path).
pub fn decrypt(
    text: &str,
    key: &DataKey,
    aad: &str,
    where_: &str,
) -> Result<(SopsType, Zeroizing<Vec<u8>>), MigrateError> {
    let bad = |what: &str| MigrateError::Malformed(format!("{where_}: sops value {what}"));
    let inner = text
        .strip_prefix("ENC[AES256_GCM,")
        .and_then(|t| t.strip_suffix(']'))
        .ok_or_else(|| bad("is not ENC[AES256_GCM,...]"))?;
    let (mut data, mut iv, mut tag, mut ty) = (None, None, None, None);
    for part in inner.split(',') {
        let (k, v) = part.split_once(':').ok_or_else(|| bad("has a field without `:`"))?;
        let slot = match k {
            "data" => &mut data,
            "iv" => &mut iv,
            "tag" => &mut tag,
            "type" => &mut ty,
            _ => return Err(bad("has an unknown field")),
        };
        if slot.replace(v).is_some() {
            return Err(bad("repeats a field"));
        }
    }
    let (Some(data), Some(iv), Some(tag), Some(ty)) = (data, iv, tag, ty) else {
        return Err(bad("lacks a field"));
    };
    let ty = match ty {
        "str" => SopsType::Str,
        "int" | "int64" => SopsType::Int,
        "float" => SopsType::Float,
        "bool" => SopsType::Bool,
        "bytes" => SopsType::Bytes,
        "comment" => SopsType::Comment,
        _ => return Err(bad("has an unknown type")),
    };
    let mut buf = Zeroizing::new(B64.decode(data).map_err(|_| bad("data is not base64"))?);
    let iv = B64.decode(iv).map_err(|_| bad("iv is not base64"))?;
    let tag = B64.decode(tag).map_err(|_| bad("tag is not base64"))?;
    if iv.len() != 32 || tag.len() != TAG_LEN {
        return Err(bad("has an IV or tag of the wrong length"));
    }
    let cipher = SopsGcm::new(&Array::from(*key.expose_secret()));
    let nonce: Array<u8, U32> = Array::try_from(&iv[..]).map_err(|_| bad("iv length"))?;
    let tag: Array<u8, aes_gcm::aead::consts::U16> = Array::try_from(&tag[..]).map_err(|_| bad("tag length"))?;
    cipher
        .decrypt_inout_detached(&nonce, aad.as_bytes(), (&mut buf[..]).into(), &tag)
        .map_err(|_| MigrateError::ValueTampered(where_.to_string()))?;
    Ok((ty, buf))
}

/// The additional data sops binds a value to: its mapping keys joined with `:`, plus `:`.
pub fn aad(keys: &[String]) -> String {
    let mut s = keys.join(":");
    s.push(':');
    s
}

#[cfg(test)]
pub(crate) fn encrypt_for_tests(plain: &[u8], key: &DataKey, aad: &str, ty: &str) -> String {
    let cipher = SopsGcm::new(&Array::from(*key.expose_secret()));
    let iv = [9u8; 32];
    let mut buf = plain.to_vec();
    let tag = cipher.encrypt_inout_detached(&Array::from(iv), aad.as_bytes(), (&mut buf[..]).into()).unwrap();
    format!("ENC[AES256_GCM,data:{},iv:{},tag:{},type:{ty}]", B64.encode(&buf), B64.encode(iv), B64.encode(tag))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_path_binding() {
        let k = DataKey::from_bytes([3; 32]);
        let e = encrypt_for_tests(b"hunter2", &k, "db:password:", "str");
        let (ty, p) = decrypt(&e, &k, "db:password:", "db.password").unwrap();
        assert_eq!((ty, &p[..]), (SopsType::Str, &b"hunter2"[..]));
        assert!(matches!(decrypt(&e, &k, "db:other:", "x"), Err(MigrateError::ValueTampered(_))));
        assert!(matches!(
            decrypt(&e, &DataKey::from_bytes([4; 32]), "db:password:", "x"),
            Err(MigrateError::ValueTampered(_))
        ));
        assert!(matches!(decrypt("ENC[AES256_GCM,data:x]", &k, "", "x"), Err(MigrateError::Malformed(_))));
        assert_eq!(aad(&["a".into(), "b".into()]), "a:b:");
        assert_eq!(aad(&[]), ":");
    }

    /// A value the real sops 3.11 wrote (testdata/sops/app.sops.env), under the data key its age
    /// entry wraps (`age -d -i testdata/sops/age-key.txt`).
    #[test]
    fn known_answer_from_sops() {
        let k: [u8; 32] = hex::decode("67b5e440b3c52a61a9c62dc693fbee92625c05578610b5b2e89582e4a425fb72")
            .unwrap()
            .try_into()
            .unwrap();
        let k = DataKey::from_bytes(k);
        let e = "ENC[AES256_GCM,data:laIkj0DDCQ==,iv:77xWXyUY+J6CZtJKPxAdihlcj3ZZetq2X5vuLq4q+xg=,tag:OdtsxX7he/LkCVuTupIMAg==,type:str]";
        assert!(is_encrypted(e));
        let (ty, p) = decrypt(e, &k, "DB_PASSWORD:", "DB_PASSWORD").unwrap();
        assert_eq!((ty, &p[..]), (SopsType::Str, &b"hunter2"[..]));
        assert!(decrypt(e, &k, "DB_PASSWORD", "DB_PASSWORD").is_err(), "the trailing `:` is part of the AAD");
    }
}
