//! [`AlibabaKms`]: the [`Kms`] and [`KeyManager`] implementations over the KMS RPC API.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use envseal_core::kms::{
    Alias, Decrypted, GeneratedDataKey, KeyManager, KeyMetadata, KeySpec, KeyState, KeyVersionInfo, Kms,
    MAX_DELETION_DAYS, MAX_DIRECT_ENCRYPT, MIN_DELETION_DAYS, ProtectionLevel, WrappedKey,
};
use envseal_core::{DataKey, EncryptionContext, KmsError};
use envseal_http::client::ClientOptions;
use envseal_http::secret::{decode_secret, zeroizing_string};
use envseal_http::{HttpTransport, Idempotence, Transport};
use serde::Deserialize;
use zeroize::Zeroizing;

use crate::client::{Api, Params, unexpected};
use crate::config::AlibabaConfig;
use crate::context::context_json;
use crate::credentials::{Provider, invalid};
use crate::error::CallContext;
use crate::signer::SignatureVersion;
use crate::uri::{AlibabaKeyUri, SCHEME, arn_region, check_alias_name, check_key_ref, is_alias_ref};

/// The backend name, as recorded in [`WrappedKey::backend`] (also the URI scheme).
pub const BACKEND: &str = SCHEME;

/// `KeySpec` of every `GenerateDataKey`: a 256-bit data key.
pub const DATA_KEY_SPEC: &str = "AES_256";

/// `KeySpec` of the keys [`KeyManager::create_key`] creates (a symmetric AES-256 CMK).
pub const CREATE_KEY_SPEC: &str = "Aliyun_AES_256";

/// `KeyUsage` of the keys [`KeyManager::create_key`] creates.
pub const KEY_USAGE: &str = "ENCRYPT/DECRYPT";

/// Largest wrapped blob accepted before any request (KMS ciphertexts of a 6 KiB plaintext are
/// about 6.2 KB).
pub const MAX_BLOB_LEN: usize = 16 * 1024;

/// Largest response body read (KMS answers are a few KB; a page of a list more).
const MAX_RESPONSE: usize = 4 << 20;

/// Page size of the `List*` calls (KMS's maximum).
const PAGE_SIZE: usize = 100;
/// Pages read at most from one listing (100 000 entries).
const MAX_PAGES: usize = 1000;

/// The automatic rotation policy of a key ([`AlibabaKms::update_rotation_policy`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum RotationPolicy {
    /// No automatic rotation.
    Disabled,
    /// A new version every period (KMS accepts 7 to 365 days for software keys; HSM keys do
    /// not rotate automatically).
    Every(Duration),
}

/// An Alibaba Cloud KMS backend (`alibaba-kms`).
///
/// Cheap to clone (the HTTP connection pool and the credential cache are shared); `Send +
/// Sync`, usable as `Arc<dyn Kms>`. `Kms::key_manager()` returns itself. `Debug` shows the
/// region, endpoint, signature version and AccessKey id or role, never a secret.
#[derive(Clone)]
pub struct AlibabaKms {
    inner: Arc<Inner>,
}

struct Inner {
    api: Api,
    region: String,
}

impl fmt::Debug for AlibabaKms {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AlibabaKms")
            .field("region", &self.inner.region)
            .field("endpoint", &self.inner.api.endpoint.base)
            .field("signature_version", &self.inner.api.signature_version)
            .field("credentials", &self.inner.api.provider)
            .finish_non_exhaustive()
    }
}

impl AlibabaKms {
    /// A backend for `config`. No request is made: wrong credentials show at the first call.
    ///
    /// # Errors
    /// [`KmsError::InvalidRequest`] for an invalid region, endpoint or credentials.
    pub fn new(config: AlibabaConfig) -> Result<Self, KmsError> {
        let endpoint = config.endpoint.resolve(&config.region)?;
        // Redirects are not followed (a signed request is bound to its host); loopback
        // endpoints bypass any proxy from the environment.
        let client = ClientOptions::new(config.timeout, concat!("envseal-kms-alibaba/", env!("CARGO_PKG_VERSION")))
            .no_proxy(endpoint.loopback)
            .build()?;
        let transport = HttpTransport::new(client, format!("{}/", endpoint.base), MAX_RESPONSE);
        Self::with_transport(config, Box::new(transport))
    }

    /// [`AlibabaConfig::from_env`], then [`AlibabaKms::new`].
    ///
    /// # Errors
    /// Those of both.
    pub fn from_env() -> Result<Self, KmsError> {
        Self::new(AlibabaConfig::from_env()?)
    }

    /// [`AlibabaConfig::from_uri`], then [`AlibabaKms::new`]: a backend for the URI's region and
    /// the key reference the URI names.
    ///
    /// # Errors
    /// Those of both.
    pub fn from_uri(uri: &str) -> Result<(Self, String), KmsError> {
        let (config, key) = AlibabaConfig::from_uri(uri)?;
        Ok((Self::new(config)?, key))
    }

    pub(crate) fn with_transport(config: AlibabaConfig, transport: Box<dyn Transport>) -> Result<Self, KmsError> {
        crate::uri::check_region(&config.region)?;
        let endpoint = config.endpoint.resolve(&config.region)?;
        let provider = Provider::new(config.credentials)?;
        Ok(Self {
            inner: Arc::new(Inner {
                api: Api {
                    transport,
                    endpoint,
                    signature_version: config.signature_version,
                    provider,
                    retry: config.retry,
                },
                region: config.region,
            }),
        })
    }

    /// The region id.
    pub fn region(&self) -> &str {
        &self.inner.region
    }

    /// The endpoint's base URL (`https://kms.REGION.aliyuncs.com`, ...).
    pub fn endpoint(&self) -> &str {
        &self.inner.api.endpoint.base
    }

    /// The signature version in use.
    pub fn signature_version(&self) -> SignatureVersion {
        self.inner.api.signature_version
    }

    /// Sets a key's automatic rotation (`UpdateRotationPolicy`). Each automatic rotation adds a
    /// key version, as [`KeyManager::rotate_key`] does by hand.
    ///
    /// # Errors
    /// [`KmsError::KeyNotFound`]; [`KmsError::InvalidRequest`] for a period KMS refuses (or
    /// under one second); transport and permission errors.
    pub async fn update_rotation_policy(&self, key: &str, policy: RotationPolicy) -> Result<(), KmsError> {
        let key = self.key_ref(key)?;
        let id = self.resolve_id(&key).await?;
        let params = match policy {
            RotationPolicy::Disabled => Params::new().set("KeyId", id.as_str()).set("EnableAutomaticRotation", "false"),
            RotationPolicy::Every(period) => {
                if period < Duration::from_secs(1) {
                    return Err(invalid("the rotation period must be at least one second"));
                }
                Params::new()
                    .set("KeyId", id.as_str())
                    .set("EnableAutomaticRotation", "true")
                    .set("RotationInterval", format!("{}s", period.as_secs()))
            }
        };
        let _: Ack = self.api().call("UpdateRotationPolicy", &params, Idempotence::Idempotent, self.ctx(&id)).await?;
        Ok(())
    }

    /// The versions of a key, oldest first (the current one last among versions created in the
    /// same second), from `ListKeyVersions`.
    ///
    /// # Errors
    /// [`KmsError::KeyNotFound`]; transport and permission errors.
    pub async fn list_key_versions(&self, key: &str) -> Result<Vec<KeyVersionInfo>, KmsError> {
        let key = self.key_ref(key)?;
        let id = self.resolve_id(&key).await?;
        self.versions(&id, None).await
    }

    fn api(&self) -> &Api {
        &self.inner.api
    }

    fn ctx<'a>(&self, key: &'a str) -> CallContext<'a> {
        CallContext { key, version: None, opens_blob: false }
    }

    /// A key reference for a call: an id, alias or ARN, or a whole `alibaba-kms:REGION/KEY`
    /// URI of this client's region.
    fn key_ref(&self, key: &str) -> Result<String, KmsError> {
        let key = if key.starts_with(SCHEME) && key[SCHEME.len()..].starts_with(':') {
            let uri = AlibabaKeyUri::parse(key)?;
            if uri.region() != self.inner.region {
                return Err(invalid(format!(
                    "the key URI names region {} but this client is for region {}",
                    uri.region(),
                    self.inner.region
                )));
            }
            uri.key().to_owned()
        } else {
            check_key_ref(key)?;
            key.to_owned()
        };
        if let Some(r) = arn_region(&key)
            && r != self.inner.region
        {
            return Err(invalid(format!(
                "the key ARN names region {r} but this client is for region {}",
                self.inner.region
            )));
        }
        Ok(key)
    }

    /// The key id behind an alias (one `DescribeKey`); ids and key ARNs as they are.
    async fn resolve_id(&self, key: &str) -> Result<String, KmsError> {
        if !is_alias_ref(key) {
            return Ok(key.to_owned());
        }
        Ok(self.describe(key).await?.key_id)
    }

    async fn describe(&self, key: &str) -> Result<RawKeyMetadata, KmsError> {
        let params = Params::new().set("KeyId", key);
        let r: DescribeKeyOut = self.api().call("DescribeKey", &params, Idempotence::Idempotent, self.ctx(key)).await?;
        r.key_metadata.filter(|m| !m.key_id.is_empty()).ok_or_else(|| unexpected("DescribeKey"))
    }

    /// Full metadata: `DescribeKey`, `ListKeyVersions`, `ListAliasesByKeyId`, `ListResourceTags`.
    async fn metadata(&self, key: &str) -> Result<KeyMetadata, KmsError> {
        let raw = self.describe(key).await?;
        let id = raw.key_id.clone();
        let versions = self.versions(&id, Some(&raw.primary_key_version)).await?;
        let aliases = self
            .paged::<AliasesOut>("ListAliasesByKeyId", Some(&id))
            .await?
            .into_iter()
            .map(|a| a.alias_name)
            .collect();
        let params = Params::new().set("KeyId", id.as_str());
        let tags: TagsOut =
            self.api().call("ListResourceTags", &params, Idempotence::Idempotent, self.ctx(&id)).await?;
        let mut m = raw.into_metadata();
        if !versions.is_empty() {
            m.versions = versions;
        }
        m.aliases = aliases;
        m.tags = tags.tags.tag.into_iter().map(|t| (t.tag_key, t.tag_value)).collect();
        Ok(m)
    }

    async fn versions(&self, id: &str, primary: Option<&str>) -> Result<Vec<KeyVersionInfo>, KmsError> {
        let raw = self.paged::<KeyVersionsOut>("ListKeyVersions", Some(id)).await?;
        let mut versions: Vec<(SystemTime, bool, KeyVersionInfo)> = raw
            .into_iter()
            .map(|v| {
                let created = crate::time::parse_utc(&v.creation_date).unwrap_or(UNIX_EPOCH);
                let is_primary = primary == Some(v.key_version_id.as_str());
                (created, is_primary, KeyVersionInfo { id: v.key_version_id, created_at: created })
            })
            .collect();
        // Oldest first; within one second (the dates' resolution) the current version last.
        versions.sort_by_key(|(created, is_primary, _)| (*created, *is_primary));
        Ok(versions.into_iter().map(|(_, _, v)| v).collect())
    }

    /// Every item of a paged `List*` call (optionally for one key).
    async fn paged<P: Page>(&self, action: &'static str, key: Option<&str>) -> Result<Vec<P::Item>, KmsError> {
        let mut out = Vec::new();
        for page in 1..=MAX_PAGES {
            let params = Params::new()
                .set_opt("KeyId", key)
                .set("PageNumber", page.to_string())
                .set("PageSize", PAGE_SIZE.to_string());
            let r: P = self.api().call(action, &params, Idempotence::Idempotent, self.ctx(key.unwrap_or(""))).await?;
            let total = r.total();
            let items = r.into_items();
            let got = items.len();
            out.extend(items);
            if got == 0 || out.len() >= total || got < PAGE_SIZE {
                break;
            }
        }
        Ok(out)
    }

    /// Checks a wrapped key before it is sent (the entry is outside every MAC): ours, with a
    /// plausible key id and version and a bounded blob; returns the blob in base64.
    fn check_wrapped(&self, wrapped: &WrappedKey) -> Result<String, KmsError> {
        if wrapped.blob.is_empty()
            || wrapped.blob.len() > MAX_BLOB_LEN
            || check_key_ref(&wrapped.key_id).is_err()
            || wrapped.key_version.is_empty()
            || wrapped.key_version.len() > 128
            || !wrapped.key_version.bytes().all(|b| b.is_ascii_graphic())
        {
            return Err(KmsError::InvalidCiphertext);
        }
        Ok(B64.encode(&wrapped.blob))
    }

    fn wrapped(
        &self,
        key_id: String,
        key_version: String,
        ciphertext: &str,
        action: &str,
    ) -> Result<WrappedKey, KmsError> {
        if key_id.is_empty() || key_version.is_empty() {
            return Err(unexpected(action));
        }
        let blob = B64.decode(ciphertext.as_bytes()).map_err(|_| unexpected(action))?;
        if blob.is_empty() || blob.len() > MAX_BLOB_LEN {
            return Err(unexpected(action));
        }
        Ok(WrappedKey { backend: BACKEND.to_owned(), key_id, key_version, blob })
    }
}

fn unsupported(operation: &'static str) -> KmsError {
    KmsError::Unsupported { operation, backend: BACKEND.to_owned() }
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DataKeyOut {
    #[serde(default)]
    key_id: String,
    #[serde(default)]
    key_version_id: String,
    #[serde(deserialize_with = "zeroizing_string")]
    plaintext: Zeroizing<String>,
    ciphertext_blob: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DecryptOut {
    #[serde(default)]
    key_id: String,
    #[serde(default)]
    key_version_id: String,
    #[serde(deserialize_with = "zeroizing_string")]
    plaintext: Zeroizing<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct CipherOut {
    #[serde(default)]
    key_id: String,
    #[serde(default)]
    key_version_id: String,
    ciphertext_blob: String,
}

/// An answer whose only field is the request id.
#[derive(Deserialize)]
struct Ack {}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DescribeKeyOut {
    #[serde(default)]
    key_metadata: Option<RawKeyMetadata>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
struct RawKeyMetadata {
    key_id: String,
    key_state: String,
    description: String,
    creation_date: String,
    delete_date: String,
    protection_level: String,
    primary_key_version: String,
}

impl RawKeyMetadata {
    fn into_metadata(self) -> KeyMetadata {
        let state = match self.key_state.as_str() {
            "Enabled" => KeyState::Enabled,
            "PendingDeletion" => KeyState::PendingDeletion,
            // Disabled, PendingImport (no material yet) and anything new: not usable.
            _ => KeyState::Disabled,
        };
        let created_at = crate::time::parse_utc(&self.creation_date).unwrap_or(UNIX_EPOCH);
        let mut m = KeyMetadata::new(self.key_id, state, created_at, self.primary_key_version.clone());
        m.description = self.description;
        m.protection_level = if self.protection_level.eq_ignore_ascii_case("HSM") {
            ProtectionLevel::Hsm
        } else {
            ProtectionLevel::Software
        };
        if state == KeyState::PendingDeletion {
            m.deletion_date = crate::time::parse_utc(&self.delete_date);
        }
        if !self.primary_key_version.is_empty() {
            m.versions = vec![KeyVersionInfo { id: self.primary_key_version, created_at }];
        }
        m
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct CreateKeyOut {
    #[serde(default)]
    key_metadata: Option<RawKeyMetadata>,
}

/// A page of a `List*` answer.
trait Page: serde::de::DeserializeOwned {
    type Item;
    fn total(&self) -> usize;
    fn into_items(self) -> Vec<Self::Item>;
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
struct KeysOut {
    keys: KeyList,
    total_count: usize,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
struct KeyList {
    key: Vec<KeyItem>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
struct KeyItem {
    key_id: String,
}

impl Page for KeysOut {
    type Item = KeyItem;
    fn total(&self) -> usize {
        self.total_count
    }
    fn into_items(self) -> Vec<KeyItem> {
        self.keys.key
    }
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
struct AliasesOut {
    aliases: AliasList,
    total_count: usize,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
struct AliasList {
    alias: Vec<AliasItem>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
struct AliasItem {
    alias_name: String,
    key_id: String,
}

impl Page for AliasesOut {
    type Item = AliasItem;
    fn total(&self) -> usize {
        self.total_count
    }
    fn into_items(self) -> Vec<AliasItem> {
        self.aliases.alias
    }
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
struct KeyVersionsOut {
    key_versions: KeyVersionList,
    total_count: usize,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
struct KeyVersionList {
    key_version: Vec<KeyVersionItem>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
struct KeyVersionItem {
    key_version_id: String,
    creation_date: String,
}

impl Page for KeyVersionsOut {
    type Item = KeyVersionItem;
    fn total(&self) -> usize {
        self.total_count
    }
    fn into_items(self) -> Vec<KeyVersionItem> {
        self.key_versions.key_version
    }
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
struct TagsOut {
    tags: TagList,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
struct TagList {
    tag: Vec<TagItem>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
struct TagItem {
    tag_key: String,
    tag_value: String,
}

#[derive(serde::Serialize)]
struct TagIn<'a> {
    #[serde(rename = "TagKey")]
    key: &'a str,
    #[serde(rename = "TagValue")]
    value: &'a str,
}

#[async_trait]
impl Kms for AlibabaKms {
    fn backend(&self) -> &str {
        BACKEND
    }

    /// `GenerateDataKey` with `KeySpec=AES_256` and the context as `EncryptionContext`; the
    /// entry records the `KeyId` and `KeyVersionId` KMS returns.
    async fn generate_data_key(&self, key: &str, context: &EncryptionContext) -> Result<GeneratedDataKey, KmsError> {
        let key = self.key_ref(key)?;
        let params = Params::new()
            .set("KeyId", key.as_str())
            .set("KeySpec", DATA_KEY_SPEC)
            .set_opt("EncryptionContext", context_json(context));
        let out: DataKeyOut =
            self.api().call("GenerateDataKey", &params, Idempotence::Idempotent, self.ctx(&key)).await?;
        let plaintext = decode_secret(&out.plaintext).ok_or_else(|| unexpected("GenerateDataKey"))?;
        let data_key = DataKey::try_from_secret(&plaintext).map_err(|_| unexpected("GenerateDataKey (key length)"))?;
        let wrapped = self.wrapped(out.key_id, out.key_version_id, &out.ciphertext_blob, "GenerateDataKey")?;
        Ok(GeneratedDataKey { data_key, wrapped })
    }

    /// `Decrypt` with the blob and the context; the `KeyId` and `KeyVersionId` KMS reads from
    /// the blob must be the entry's, else `InvalidCiphertext` (the entry was altered).
    async fn decrypt(&self, wrapped: &WrappedKey, context: &EncryptionContext) -> Result<Decrypted, KmsError> {
        let blob = self.check_wrapped(wrapped)?;
        let params = Params::new().set("CiphertextBlob", blob).set_opt("EncryptionContext", context_json(context));
        let ctx = CallContext { key: &wrapped.key_id, version: Some(&wrapped.key_version), opens_blob: true };
        let out: DecryptOut = self.api().call("Decrypt", &params, Idempotence::Idempotent, ctx).await?;
        let plaintext = decode_secret(&out.plaintext).ok_or_else(|| unexpected("Decrypt"))?;
        if out.key_id != wrapped.key_id || out.key_version_id != wrapped.key_version {
            return Err(KmsError::InvalidCiphertext);
        }
        Ok(Decrypted { plaintext, key_id: out.key_id, key_version: out.key_version_id })
    }

    /// `Encrypt` of at most 6 KiB, sent base64-encoded as `Plaintext`.
    async fn encrypt(&self, key: &str, plaintext: &[u8], context: &EncryptionContext) -> Result<WrappedKey, KmsError> {
        if plaintext.len() > MAX_DIRECT_ENCRYPT {
            return Err(KmsError::PlaintextTooLarge { size: plaintext.len(), limit: MAX_DIRECT_ENCRYPT });
        }
        let key = self.key_ref(key)?;
        let mut b64 = String::with_capacity(plaintext.len().div_ceil(3) * 4);
        B64.encode_string(plaintext, &mut b64);
        let params = Params::new()
            .set("KeyId", key.as_str())
            .set("Plaintext", b64)
            .set_opt("EncryptionContext", context_json(context));
        let out: CipherOut = self.api().call("Encrypt", &params, Idempotence::Idempotent, self.ctx(&key)).await?;
        self.wrapped(out.key_id, out.key_version_id, &out.ciphertext_blob, "Encrypt")
    }

    /// `ReEncrypt` on the server: the plaintext never leaves KMS. The new entry records the
    /// destination `KeyId` and `KeyVersionId` KMS returns.
    async fn re_encrypt(
        &self,
        wrapped: &WrappedKey,
        source_context: &EncryptionContext,
        destination_key: &str,
        destination_context: &EncryptionContext,
    ) -> Result<WrappedKey, KmsError> {
        let blob = self.check_wrapped(wrapped)?;
        let destination = self.key_ref(destination_key)?;
        let params = Params::new()
            .set("CiphertextBlob", blob)
            .set_opt("SourceEncryptionContext", context_json(source_context))
            .set("DestinationKeyId", destination.as_str())
            .set_opt("DestinationEncryptionContext", context_json(destination_context));
        let ctx = CallContext { key: &destination, version: None, opens_blob: true };
        let out: CipherOut = self.api().call("ReEncrypt", &params, Idempotence::Idempotent, ctx).await?;
        self.wrapped(out.key_id, out.key_version_id, &out.ciphertext_blob, "ReEncrypt")
    }

    fn key_manager(&self) -> Option<&dyn KeyManager> {
        Some(self)
    }
}

#[async_trait]
impl KeyManager for AlibabaKms {
    /// `CreateKey` (`KeySpec=Aliyun_AES_256`, `KeyUsage=ENCRYPT/DECRYPT`, the protection level,
    /// description and tags); retried only when KMS certainly did not act.
    async fn create_key(&self, spec: &KeySpec) -> Result<KeyMetadata, KmsError> {
        let tags = if spec.tags.is_empty() {
            None
        } else {
            let list: Vec<TagIn<'_>> = spec.tags.iter().map(|(k, v)| TagIn { key: k, value: v }).collect();
            // Invariant: a list of string pairs always serializes.
            Some(serde_json::to_string(&list).expect("JSON of tags"))
        };
        let params = Params::new()
            .set("KeySpec", CREATE_KEY_SPEC)
            .set("KeyUsage", KEY_USAGE)
            .set("ProtectionLevel", spec.protection_level.as_str())
            .set_opt("Description", (!spec.description.is_empty()).then(|| spec.description.clone()))
            .set_opt("Tags", tags);
        let out: CreateKeyOut =
            self.api().call("CreateKey", &params, Idempotence::NotIdempotent, self.ctx("(new key)")).await?;
        let raw = out.key_metadata.filter(|m| !m.key_id.is_empty()).ok_or_else(|| unexpected("CreateKey"))?;
        let mut m = raw.into_metadata();
        m.tags = spec.tags.clone();
        if m.description.is_empty() {
            m.description = spec.description.clone();
        }
        Ok(m)
    }

    /// `DescribeKey`, then `ListKeyVersions`, `ListAliasesByKeyId` and `ListResourceTags`.
    async fn describe_key(&self, key: &str) -> Result<KeyMetadata, KmsError> {
        let key = self.key_ref(key)?;
        self.metadata(&key).await
    }

    /// `ListKeys` (every page), then [`KeyManager::describe_key`] of each (keys deleted in
    /// between are skipped).
    async fn list_keys(&self) -> Result<Vec<KeyMetadata>, KmsError> {
        let ids = self.paged::<KeysOut>("ListKeys", None).await?;
        let mut out = Vec::with_capacity(ids.len());
        for k in ids {
            if check_key_ref(&k.key_id).is_err() {
                continue;
            }
            match self.metadata(&k.key_id).await {
                Ok(m) => out.push(m),
                Err(KmsError::KeyNotFound { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }

    /// `CreateAlias` (the alias must be `alias/NAME`); an alias given as the target is resolved
    /// to its key first.
    async fn create_alias(&self, alias: &str, key: &str) -> Result<(), KmsError> {
        check_alias_name(alias)?;
        let key = self.key_ref(key)?;
        let id = self.resolve_id(&key).await?;
        let params = Params::new().set("AliasName", alias).set("KeyId", id.as_str());
        match self.api().call::<Ack>("CreateAlias", &params, Idempotence::NotIdempotent, self.ctx(&id)).await {
            Ok(_) => Ok(()),
            Err(KmsError::AlreadyExists { .. }) => Err(KmsError::AlreadyExists { what: format!("alias {alias}") }),
            Err(e) => Err(e),
        }
    }

    /// `DeleteAlias`; an unknown alias is `KeyNotFound`.
    async fn delete_alias(&self, alias: &str) -> Result<(), KmsError> {
        check_alias_name(alias)?;
        let params = Params::new().set("AliasName", alias);
        let _: Ack = self.api().call("DeleteAlias", &params, Idempotence::Idempotent, self.ctx(alias)).await?;
        Ok(())
    }

    /// `ListAliases` (every page).
    async fn list_aliases(&self) -> Result<Vec<Alias>, KmsError> {
        let items = self.paged::<AliasesOut>("ListAliases", None).await?;
        Ok(items.into_iter().map(|a| Alias { name: a.alias_name, key_id: a.key_id }).collect())
    }

    /// `CreateKeyVersion` (retried only when KMS certainly did not act), then the metadata.
    async fn rotate_key(&self, key: &str) -> Result<KeyMetadata, KmsError> {
        let key = self.key_ref(key)?;
        let id = self.resolve_id(&key).await?;
        let params = Params::new().set("KeyId", id.as_str());
        let _: serde_json::Value =
            self.api().call("CreateKeyVersion", &params, Idempotence::NotIdempotent, self.ctx(&id)).await?;
        self.metadata(&id).await
    }

    /// `EnableKey`.
    async fn enable_key(&self, key: &str) -> Result<(), KmsError> {
        let key = self.key_ref(key)?;
        let id = self.resolve_id(&key).await?;
        let params = Params::new().set("KeyId", id.as_str());
        let _: Ack = self.api().call("EnableKey", &params, Idempotence::Idempotent, self.ctx(&id)).await?;
        Ok(())
    }

    /// `DisableKey`.
    async fn disable_key(&self, key: &str) -> Result<(), KmsError> {
        let key = self.key_ref(key)?;
        let id = self.resolve_id(&key).await?;
        let params = Params::new().set("KeyId", id.as_str());
        let _: Ack = self.api().call("DisableKey", &params, Idempotence::Idempotent, self.ctx(&id)).await?;
        Ok(())
    }

    /// `ScheduleKeyDeletion` with `PendingWindowInDays` (7 to 30, checked first), then the
    /// metadata.
    async fn schedule_key_deletion(&self, key: &str, pending_days: u32) -> Result<KeyMetadata, KmsError> {
        if !(MIN_DELETION_DAYS..=MAX_DELETION_DAYS).contains(&pending_days) {
            return Err(invalid(format!(
                "the deletion window must be {MIN_DELETION_DAYS} to {MAX_DELETION_DAYS} days, not {pending_days}"
            )));
        }
        let key = self.key_ref(key)?;
        let id = self.resolve_id(&key).await?;
        let params = Params::new().set("KeyId", id.as_str()).set("PendingWindowInDays", pending_days.to_string());
        let _: Ack = self.api().call("ScheduleKeyDeletion", &params, Idempotence::Idempotent, self.ctx(&id)).await?;
        self.metadata(&id).await
    }

    /// `CancelKeyDeletion` (the key comes back disabled).
    async fn cancel_key_deletion(&self, key: &str) -> Result<(), KmsError> {
        let key = self.key_ref(key)?;
        let id = self.resolve_id(&key).await?;
        let params = Params::new().set("KeyId", id.as_str());
        let _: Ack = self.api().call("CancelKeyDeletion", &params, Idempotence::Idempotent, self.ctx(&id)).await?;
        Ok(())
    }

    /// Alibaba Cloud KMS has no minimum decryption version: `Unsupported`.
    async fn set_min_decryption_version(&self, _key: &str, _version: &str) -> Result<(), KmsError> {
        Err(unsupported("set_min_decryption_version"))
    }
}
