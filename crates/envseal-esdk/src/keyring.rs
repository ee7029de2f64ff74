//! Keyrings: what wraps and unwraps the data key of a message (framework/keyring-interface.md).
//!
//! - [`KmsKeyring`] wraps with any envseal backend. With the AWS KMS backend its entries are the
//!   ESDK's own AWS KMS keyring format (provider id `aws-kms`, provider info = the key ARN,
//!   ciphertext = the KMS `CiphertextBlob`, the message's encryption context sent as the KMS
//!   encryption context), so any ESDK opens them. Other backends (local keystore, Vault,
//!   PKCS#11, Alibaba) write entries with provider id `envseal:BACKEND`, which only envseal opens
//!   and other ESDKs skip: the raw keyring formats need the wrapping key's bytes, which these
//!   backends never hand out.
//! - [`RawAesKeyring`] is the ESDK's raw AES keyring: AES-GCM under a wrapping key the caller
//!   holds, the serialized encryption context as AAD (framework/raw-aes-keyring.md).

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use aws_lc_rs::aead::{AES_128_GCM, AES_192_GCM, AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use envseal_core::{DataKey, EncryptionContext, Kms, KmsError, WrappedKey};
use zeroize::Zeroizing;

use crate::context;
use crate::error::EsdkError;
use crate::header::Edk;

/// Provider id of the ESDK's AWS KMS keyrings.
pub const AWS_KMS_PROVIDER_ID: &str = "aws-kms";
/// Prefix of the provider id of entries wrapped by other envseal backends.
pub const ENVSEAL_PROVIDER_PREFIX: &str = "envseal:";

const RAW_IV_LEN: usize = 12;
const RAW_TAG_LEN: usize = 16;

/// Wraps and unwraps data keys.
#[async_trait]
pub trait Keyring: Send + Sync + std::fmt::Debug {
    /// A description for messages (backend and key; never key material).
    fn describe(&self) -> String;

    /// Generates a data key and its first encrypted copy.
    ///
    /// # Errors
    /// KMS errors; [`EsdkError::InvalidOptions`] if this keyring cannot encrypt.
    async fn generate(&self, context: &BTreeMap<String, String>) -> Result<(DataKey, Edk), EsdkError>;

    /// Encrypts an existing data key.
    ///
    /// # Errors
    /// As [`Keyring::generate`].
    async fn wrap(&self, data_key: &DataKey, context: &BTreeMap<String, String>) -> Result<Edk, EsdkError>;

    /// Decrypts `edk`.
    ///
    /// # Errors
    /// [`EsdkError::NotMine`] if this keyring does not handle the entry (another may);
    /// [`EsdkError::WrongKey`] and KMS errors otherwise.
    async fn unwrap(&self, edk: &Edk, context: &BTreeMap<String, String>) -> Result<DataKey, EsdkError>;
}

/// A keyring over an envseal KMS backend.
#[derive(Debug)]
pub struct KmsKeyring {
    kms: Arc<dyn Kms>,
    /// Key used for encryption (id, alias or ARN).
    key: Option<String>,
    /// When set, only entries wrapped by one of these key ids are opened (the ESDK's strict
    /// mode); when not, any entry of this backend is tried (discovery).
    only: Option<Vec<String>>,
}

impl KmsKeyring {
    /// A keyring that encrypts under `key` and decrypts entries of `key` only when `key` is a
    /// full key id (for AWS, an ARN), else any entry of this backend.
    pub fn new(kms: Arc<dyn Kms>, key: impl Into<String>) -> Self {
        let key = key.into();
        let strict = is_full_key_id(kms.backend(), &key);
        KmsKeyring { kms, only: strict.then(|| vec![key.clone()]), key: Some(key) }
    }

    /// A decrypt-only keyring that tries every entry of this backend (the ESDK's discovery).
    pub fn discovery(kms: Arc<dyn Kms>) -> Self {
        KmsKeyring { kms, key: None, only: None }
    }

    fn provider_id(&self) -> String {
        provider_id_for(self.kms.backend())
    }

    fn key(&self) -> Result<&str, EsdkError> {
        self.key.as_deref().ok_or_else(|| EsdkError::InvalidOptions(format!("no key given for {}", self.kms.backend())))
    }

    fn to_edk(&self, w: &WrappedKey) -> Edk {
        let provider_info = if self.kms.backend() == AWS_KMS_PROVIDER_ID {
            w.key_id.as_bytes().to_vec()
        } else {
            encode_envseal_info(&w.key_id, &w.key_version)
        };
        Edk { provider_id: self.provider_id(), provider_info, ciphertext: w.blob.clone() }
    }
}

/// The provider id an envseal backend's entries carry.
pub fn provider_id_for(backend: &str) -> String {
    if backend == AWS_KMS_PROVIDER_ID {
        AWS_KMS_PROVIDER_ID.to_string()
    } else {
        format!("{ENVSEAL_PROVIDER_PREFIX}{backend}")
    }
}

/// Whether `key` names one key unambiguously on `backend` (not an alias): AWS key ARNs.
fn is_full_key_id(backend: &str, key: &str) -> bool {
    backend == AWS_KMS_PROVIDER_ID && key.starts_with("arn:") && key.contains(":key/")
}

/// Provider info of `envseal:*` entries: u16 length || key id || u16 length || key version.
fn encode_envseal_info(key_id: &str, version: &str) -> Vec<u8> {
    let mut v = Vec::with_capacity(4 + key_id.len() + version.len());
    for s in [key_id, version] {
        // Key ids and versions are short (backends bound them far below 64 KiB).
        v.extend_from_slice(&(s.len().min(u16::MAX as usize) as u16).to_be_bytes());
        v.extend_from_slice(&s.as_bytes()[..s.len().min(u16::MAX as usize)]);
    }
    v
}

fn decode_envseal_info(info: &[u8]) -> Option<(String, String)> {
    let mut pos = 0;
    let mut parts = Vec::with_capacity(2);
    for _ in 0..2 {
        let n = u16::from_be_bytes([*info.get(pos)?, *info.get(pos + 1)?]) as usize;
        pos += 2;
        parts.push(String::from_utf8(info.get(pos..pos + n)?.to_vec()).ok()?);
        pos += n;
    }
    (pos == info.len()).then(|| (parts.remove(0), parts.remove(0)))
}

/// The ESDK context as an envseal KMS context: the same pairs (the AWS backend sends them 1:1
/// as the KMS encryption context, as the ESDK's AWS KMS keyring does).
fn kms_context(context: &BTreeMap<String, String>) -> Result<EncryptionContext, EsdkError> {
    EncryptionContext::from_pairs(context.iter().map(|(k, v)| (k.clone(), v.clone())))
        .map_err(|e| EsdkError::InvalidContext(e.to_string()))
}

#[async_trait]
impl Keyring for KmsKeyring {
    fn describe(&self) -> String {
        format!("{}:{}", self.kms.backend(), self.key.as_deref().unwrap_or("(discovery)"))
    }

    async fn generate(&self, context: &BTreeMap<String, String>) -> Result<(DataKey, Edk), EsdkError> {
        let g = self.kms.generate_data_key(self.key()?, &kms_context(context)?).await?;
        Ok((g.data_key, self.to_edk(&g.wrapped)))
    }

    async fn wrap(&self, data_key: &DataKey, context: &BTreeMap<String, String>) -> Result<Edk, EsdkError> {
        let w = self.kms.encrypt(self.key()?, data_key.expose_secret(), &kms_context(context)?).await?;
        Ok(self.to_edk(&w))
    }

    async fn unwrap(&self, edk: &Edk, context: &BTreeMap<String, String>) -> Result<DataKey, EsdkError> {
        if edk.provider_id != self.provider_id() {
            return Err(EsdkError::NotMine);
        }
        let (key_id, key_version) = if self.kms.backend() == AWS_KMS_PROVIDER_ID {
            let arn = String::from_utf8(edk.provider_info.clone())
                .map_err(|_| EsdkError::malformed("aws-kms key provider info is not UTF-8"))?;
            (arn, String::new())
        } else {
            decode_envseal_info(&edk.provider_info).ok_or_else(|| EsdkError::malformed("envseal key provider info"))?
        };
        if let Some(only) = &self.only
            && !only.contains(&key_id)
        {
            return Err(EsdkError::NotMine);
        }
        let wrapped = WrappedKey {
            backend: self.kms.backend().to_string(),
            key_id: key_id.clone(),
            key_version,
            blob: edk.ciphertext.clone(),
        };
        let d = self.kms.decrypt(&wrapped, &kms_context(context)?).await.map_err(|e| match e {
            KmsError::InvalidCiphertext | KmsError::WrongContext => EsdkError::WrongKey,
            e => EsdkError::Kms(e),
        })?;
        // The ESDK's AWS KMS keyring requires the key that decrypted to be the entry's key.
        if self.kms.backend() == AWS_KMS_PROVIDER_ID && d.key_id != key_id {
            return Err(EsdkError::malformed("the KMS decrypted with another key than the entry names"));
        }
        Ok(DataKey::try_from_secret(&d.plaintext)?)
    }
}

/// The ESDK's raw AES keyring: a wrapping key (16, 24 or 32 bytes) the caller holds, named by a
/// namespace (the provider id) and a name.
pub struct RawAesKeyring {
    namespace: String,
    name: String,
    key: LessSafeKey,
}

impl std::fmt::Debug for RawAesKeyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RawAesKeyring").field("namespace", &self.namespace).field("name", &self.name).finish()
    }
}

impl RawAesKeyring {
    /// A raw AES keyring.
    ///
    /// # Errors
    /// [`EsdkError::InvalidOptions`] for a key that is not 16, 24 or 32 bytes, an empty
    /// namespace or name, or the reserved namespace `aws-kms`.
    pub fn new(
        namespace: impl Into<String>,
        name: impl Into<String>,
        key: Zeroizing<Vec<u8>>,
    ) -> Result<Self, EsdkError> {
        let (namespace, name) = (namespace.into(), name.into());
        if namespace.is_empty() || name.is_empty() {
            return Err(EsdkError::InvalidOptions("a raw AES key needs a namespace and a name".into()));
        }
        if namespace.starts_with(AWS_KMS_PROVIDER_ID) {
            return Err(EsdkError::InvalidOptions(format!("the namespace {namespace:?} is reserved for AWS KMS")));
        }
        let alg = match key.len() {
            16 => &AES_128_GCM,
            24 => &AES_192_GCM,
            32 => &AES_256_GCM,
            n => {
                return Err(EsdkError::InvalidOptions(format!(
                    "a raw AES wrapping key is 16, 24 or 32 bytes, not {n}"
                )));
            }
        };
        // Invariant: the length was just matched to the algorithm.
        let key = LessSafeKey::new(UnboundKey::new(alg, &key).expect("key length matches the algorithm"));
        Ok(RawAesKeyring { namespace, name, key })
    }

    fn seal(&self, data_key: &DataKey, context: &BTreeMap<String, String>) -> Result<Edk, EsdkError> {
        let aad = context::serialize(context)?;
        let iv: [u8; RAW_IV_LEN] = envseal_core::random::array();
        let mut buf = data_key.expose_secret().to_vec();
        let tag = self
            .key
            .seal_in_place_separate_tag(Nonce::assume_unique_for_key(iv), Aad::from(&aad), &mut buf)
            .map_err(|_| EsdkError::InvalidOptions("raw AES key wrapping failed".into()))?;
        buf.extend_from_slice(tag.as_ref());
        let mut info = self.name.as_bytes().to_vec();
        info.extend_from_slice(&((RAW_TAG_LEN * 8) as u32).to_be_bytes());
        info.extend_from_slice(&(RAW_IV_LEN as u32).to_be_bytes());
        info.extend_from_slice(&iv);
        Ok(Edk { provider_id: self.namespace.clone(), provider_info: info, ciphertext: buf })
    }
}

#[async_trait]
impl Keyring for RawAesKeyring {
    fn describe(&self) -> String {
        format!("raw AES {}/{}", self.namespace, self.name)
    }

    async fn generate(&self, context: &BTreeMap<String, String>) -> Result<(DataKey, Edk), EsdkError> {
        let dk = DataKey::generate();
        let edk = self.seal(&dk, context)?;
        Ok((dk, edk))
    }

    async fn wrap(&self, data_key: &DataKey, context: &BTreeMap<String, String>) -> Result<Edk, EsdkError> {
        self.seal(data_key, context)
    }

    async fn unwrap(&self, edk: &Edk, context: &BTreeMap<String, String>) -> Result<DataKey, EsdkError> {
        let name = self.name.as_bytes();
        if edk.provider_id != self.namespace || !edk.provider_info.starts_with(name) {
            return Err(EsdkError::NotMine);
        }
        // name || tag length in bits (4) || IV length (4) || IV
        let rest = &edk.provider_info[name.len()..];
        if rest.len() != 8 + RAW_IV_LEN {
            return Err(EsdkError::NotMine);
        }
        let tag_bits = u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]);
        let iv_len = u32::from_be_bytes([rest[4], rest[5], rest[6], rest[7]]);
        if tag_bits != (RAW_TAG_LEN * 8) as u32 || iv_len != RAW_IV_LEN as u32 {
            return Err(EsdkError::malformed("raw AES key provider info with unsupported tag or IV length"));
        }
        if edk.ciphertext.len() != envseal_core::datakey::DATA_KEY_LEN + RAW_TAG_LEN {
            return Err(EsdkError::WrongKey);
        }
        let mut iv = [0u8; RAW_IV_LEN];
        iv.copy_from_slice(&rest[8..]);
        let aad = context::serialize(context)?;
        let mut buf = Zeroizing::new(edk.ciphertext.clone());
        let plain = self
            .key
            .open_in_place(Nonce::assume_unique_for_key(iv), Aad::from(&aad), &mut buf[..])
            .map_err(|_| EsdkError::WrongKey)?;
        let mut key = [0u8; 32];
        key.copy_from_slice(plain);
        let dk = DataKey::from_bytes(key);
        zeroize::Zeroize::zeroize(&mut key);
        Ok(dk)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envseal_info_round_trips() {
        let b = encode_envseal_info("key-1", "3");
        assert_eq!(decode_envseal_info(&b), Some(("key-1".into(), "3".into())));
        assert_eq!(decode_envseal_info(&b[..b.len() - 1]), None);
        assert_eq!(provider_id_for("aws-kms"), "aws-kms");
        assert_eq!(provider_id_for("local"), "envseal:local");
    }

    #[tokio::test]
    async fn raw_aes_round_trip_and_wrong_context() {
        let k = RawAesKeyring::new("ns", "name", Zeroizing::new(vec![7u8; 32])).unwrap();
        let ctx: BTreeMap<String, String> = [("a".to_string(), "b".to_string())].into();
        let (dk, edk) = k.generate(&ctx).await.unwrap();
        assert_eq!(edk.provider_id, "ns");
        assert_eq!(edk.provider_info.len(), 4 + 8 + 12);
        assert_eq!(k.unwrap(&edk, &ctx).await.unwrap().expose_secret(), dk.expose_secret());
        assert!(matches!(k.unwrap(&edk, &BTreeMap::new()).await, Err(EsdkError::WrongKey)));
        let other = RawAesKeyring::new("ns", "other", Zeroizing::new(vec![7u8; 16])).unwrap();
        assert!(matches!(other.unwrap(&edk, &ctx).await, Err(EsdkError::NotMine)));
        assert!(RawAesKeyring::new("aws-kms", "x", Zeroizing::new(vec![0; 32])).is_err());
        assert!(RawAesKeyring::new("ns", "x", Zeroizing::new(vec![0; 20])).is_err());
    }
}
