//! [`AwsKms`]: the [`Kms`] and [`KeyManager`] implementations.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use aws_config::{BehaviorVersion, SdkConfig};
use envseal_core::kms::{
    Alias, Decrypted, GeneratedDataKey, KeyMetadata, KeySpec, KeyState, KeyVersionInfo, MAX_DELETION_DAYS,
    MAX_DIRECT_ENCRYPT, MIN_DELETION_DAYS, ProtectionLevel,
};
use envseal_core::{DataKey, EncryptionContext, KeyManager, Kms, KmsError, WrappedKey};

use crate::api::{ApiError, KeyDesc, KmsApi, Page};
use crate::context::to_aws_context;
use crate::error::{Op, map_error};
use crate::sdk::{Limits, SdkApi};
use crate::uri::{AwsKeyUri, KeyRefKind};
use crate::{AWS_MAX_ENCRYPT, BACKEND, UNVERSIONED};

/// Default attempts per request (first try included), in the SDK's standard retry mode.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 4;
/// Default per-attempt timeout, used when the `SdkConfig` sets none.
pub const DEFAULT_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);
/// Default whole-operation timeout (every attempt and back-off), used when the `SdkConfig` sets none.
pub const DEFAULT_OPERATION_TIMEOUT: Duration = Duration::from_secs(30);
/// Largest `CiphertextBlob` AWS accepts.
const MAX_CIPHERTEXT: usize = 6144;

/// The AWS KMS backend (`aws-kms:`).
///
/// Cheap to share (`Arc<AwsKms>` or `Arc<dyn Kms>`); every method may run concurrently. Requests
/// for a key ARN in another region than the configured one go to that region.
pub struct AwsKms {
    api: Arc<dyn KmsApi>,
    custom_key_store: Option<String>,
    max_attempts: u32,
}

/// Builds an [`AwsKms`] with non-default settings.
#[must_use]
pub struct AwsKmsBuilder {
    config: SdkConfig,
    limits: Limits,
    custom_key_store: Option<String>,
}

impl AwsKms {
    /// Builds the backend from the environment, as every AWS SDK does: credentials from the
    /// default chain (environment variables, web identity token, shared config and credentials
    /// files with profiles, SSO, `credential_process` and assume-role, then ECS and EC2 instance
    /// metadata), the region from `AWS_REGION` / `AWS_DEFAULT_REGION` / the profile / instance
    /// metadata, and endpoint overrides from `AWS_ENDPOINT_URL` / `AWS_ENDPOINT_URL_KMS`.
    ///
    /// Nothing is contacted here: missing credentials or region show up on the first request
    /// ([`KmsError::AccessDenied`] or [`KmsError::Unavailable`]).
    pub async fn from_env() -> Self {
        Self::new(&aws_config::load_defaults(BehaviorVersion::latest()).await)
    }

    /// Builds the backend from an SDK configuration, with the default retry bound
    /// ([`DEFAULT_MAX_ATTEMPTS`]) and timeouts.
    pub fn new(config: &SdkConfig) -> Self {
        Self::builder(config).build()
    }

    /// A builder starting from `config`.
    pub fn builder(config: &SdkConfig) -> AwsKmsBuilder {
        AwsKmsBuilder {
            config: config.clone(),
            limits: Limits {
                max_attempts: DEFAULT_MAX_ATTEMPTS,
                attempt_timeout: DEFAULT_ATTEMPT_TIMEOUT,
                operation_timeout: DEFAULT_OPERATION_TIMEOUT,
            },
            custom_key_store: None,
        }
    }

    /// The configured region (requests for ARNs in other regions go to those regions).
    pub fn region(&self) -> Option<String> {
        self.api.region()
    }

    #[cfg(test)]
    pub(crate) fn with_api(api: Arc<dyn KmsApi>, custom_key_store: Option<String>) -> Self {
        Self { api, custom_key_store, max_attempts: DEFAULT_MAX_ATTEMPTS }
    }

    /// Parses a key argument (with or without `aws-kms:`).
    fn key_ref(key: &str) -> Result<AwsKeyUri, KmsError> {
        AwsKeyUri::parse_key(key).map_err(|e| KmsError::InvalidRequest { message: e.to_string() })
    }

    /// The key ARN (or id) for operations that do not take aliases (EnableKey, CreateAlias's
    /// target, ...): aliases are resolved with DescribeKey.
    async fn resolve(&self, key: &str, op: Op) -> Result<String, KmsError> {
        let r = Self::key_ref(key)?;
        if !r.is_alias() {
            return Ok(r.key().to_owned());
        }
        let d = self.api.describe_key(r.key()).await.map_err(|e| map_error(op, key, e))?;
        Ok(d.arn)
    }

    /// DescribeKey plus the key's versions, aliases and tags (each best-effort: skipped when the
    /// caller lacks the permission or the key type has none).
    async fn describe_full(&self, key: &str, op: Op) -> Result<KeyMetadata, KmsError> {
        let r = Self::key_ref(key)?;
        let d = self.api.describe_key(r.key()).await.map_err(|e| map_error(op, key, e))?;
        let mut m = metadata(&d);
        let arn = d.arn.as_str();

        let rotations = collect(|marker| self.api.list_key_rotations(arn, marker)).await;
        if let Some(rotations) = optional(rotations, Op::ListKeyRotations, key)? {
            m.versions = versions(&d, rotations.into_iter().map(|r| (r.key_material_id, r.rotation_date)));
        }
        let aliases = collect(|marker| self.api.list_aliases(Some(arn), marker)).await;
        if let Some(aliases) = optional(aliases, Op::ListAliases, key)? {
            m.aliases = aliases.into_iter().map(|a| a.name).collect();
        }
        let tags = collect(|marker| self.api.list_resource_tags(arn, marker)).await;
        if let Some(tags) = optional(tags, Op::ListResourceTags, key)? {
            m.tags = tags.into_iter().collect();
        }
        Ok(m)
    }
}

impl AwsKmsBuilder {
    /// Attempts per request, first try included (1..=10; default [`DEFAULT_MAX_ATTEMPTS`]). The
    /// SDK's standard retry mode retries throttling, transient and I/O errors with jittered
    /// exponential back-off.
    pub fn max_attempts(mut self, attempts: u32) -> Self {
        self.limits.max_attempts = attempts.clamp(1, 10);
        self
    }

    /// Per-attempt and whole-operation timeouts, used when the `SdkConfig` sets none.
    pub fn timeouts(mut self, attempt: Duration, operation: Duration) -> Self {
        self.limits.attempt_timeout = attempt;
        self.limits.operation_timeout = operation;
        self
    }

    /// An AWS CloudHSM custom key store (`cks-...`) in which [`KeyManager::create_key`] creates
    /// keys asked for with [`ProtectionLevel::Hsm`]. Without one, such requests are
    /// [`KmsError::Unsupported`].
    pub fn custom_key_store(mut self, id: impl Into<String>) -> Self {
        self.custom_key_store = Some(id.into());
        self
    }

    /// Builds the backend.
    pub fn build(self) -> AwsKms {
        AwsKms {
            api: Arc::new(SdkApi::new(&self.config, self.limits)),
            custom_key_store: self.custom_key_store,
            max_attempts: self.limits.max_attempts,
        }
    }
}

impl fmt::Debug for AwsKms {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AwsKms")
            .field("backend", &BACKEND)
            .field("region", &self.api.region())
            .field("endpoint_url_set", &self.api.endpoint_url_set())
            .field("custom_key_store", &self.custom_key_store)
            .field("max_attempts", &self.max_attempts)
            .finish()
    }
}

/// The key version recorded for a wrap: AWS's `KeyMaterialId` when the server reports one,
/// else [`UNVERSIONED`].
fn version(key_material_id: Option<String>) -> String {
    key_material_id.filter(|s| !s.is_empty()).unwrap_or_else(|| UNVERSIONED.to_owned())
}

/// AWS key state → envseal's. States that refuse cryptographic operations without being
/// scheduled for deletion (`Creating`, `PendingImport`, `Unavailable`) count as disabled.
fn key_state(aws: &str) -> KeyState {
    match aws {
        "Enabled" | "Updating" => KeyState::Enabled,
        "PendingDeletion" | "PendingReplicaDeletion" => KeyState::PendingDeletion,
        _ => KeyState::Disabled,
    }
}

/// AWS `KeyMetadata` → envseal's, with one version (the current key material).
fn metadata(d: &KeyDesc) -> KeyMetadata {
    let current = version(d.current_key_material_id.clone());
    let mut m = KeyMetadata::new(d.arn.clone(), key_state(&d.state), d.created_at, current.clone());
    m.description = d.description.clone();
    m.protection_level = if d.origin == "AWS_CLOUDHSM" { ProtectionLevel::Hsm } else { ProtectionLevel::Software };
    m.deletion_date = d.deletion_date;
    m.versions = vec![KeyVersionInfo { id: current, created_at: d.created_at }];
    m
}

/// Versions from ListKeyRotations, oldest first; the first key material has no rotation date
/// and takes the key's creation date. Entries without a `KeyMaterialId` (emulators) are
/// skipped; the current version is always listed.
fn versions(d: &KeyDesc, rotations: impl Iterator<Item = (Option<String>, Option<SystemTime>)>) -> Vec<KeyVersionInfo> {
    let mut out: Vec<KeyVersionInfo> = Vec::new();
    for (id, date) in rotations {
        let Some(id) = id.filter(|s| !s.is_empty()) else { continue };
        if !out.iter().any(|v| v.id == id) {
            out.push(KeyVersionInfo { id, created_at: date.unwrap_or(d.created_at) });
        }
    }
    let current = version(d.current_key_material_id.clone());
    if !out.iter().any(|v| v.id == current) {
        out.push(KeyVersionInfo { id: current, created_at: d.created_at.max(latest(&out)) });
    }
    out.sort_by_key(|v| v.created_at);
    out
}

fn latest(v: &[KeyVersionInfo]) -> SystemTime {
    v.iter().map(|v| v.created_at).max().unwrap_or(SystemTime::UNIX_EPOCH)
}

/// Every item of a paginated list.
async fn collect<T, F, Fut>(mut call: F) -> Result<Vec<T>, ApiError>
where
    F: FnMut(Option<String>) -> Fut,
    Fut: Future<Output = Result<Page<T>, ApiError>>,
{
    let mut items = Vec::new();
    let mut marker = None;
    // A bound against a server that never stops paginating.
    for _ in 0..10_000 {
        let page = call(marker).await?;
        items.extend(page.items);
        match page.next_marker {
            Some(m) if !m.is_empty() => marker = Some(m),
            _ => return Ok(items),
        }
    }
    Ok(items)
}

/// The result of an auxiliary call of `describe_key`: `None` when the caller may not make it
/// or the key type does not support it.
fn optional<T>(r: Result<T, ApiError>, op: Op, key: &str) -> Result<Option<T>, KmsError> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(e) => match map_error(op, key, e) {
            KmsError::AccessDenied { .. } | KmsError::Unsupported { .. } => Ok(None),
            e => Err(e),
        },
    }
}

#[async_trait]
impl Kms for AwsKms {
    fn backend(&self) -> &str {
        BACKEND
    }

    async fn generate_data_key(&self, key: &str, context: &EncryptionContext) -> Result<GeneratedDataKey, KmsError> {
        let r = Self::key_ref(key)?;
        let out = self
            .api
            .generate_data_key(r.key(), &to_aws_context(context))
            .await
            .map_err(|e| map_error(Op::GenerateDataKey, key, e))?;
        let data_key = DataKey::try_from_secret(&out.plaintext).map_err(|_| KmsError::Unavailable {
            message: format!("AWS KMS returned a data key of {} bytes instead of 32", out.plaintext.len()),
            retryable: false,
        })?;
        Ok(GeneratedDataKey {
            data_key,
            wrapped: WrappedKey {
                backend: BACKEND.to_owned(),
                key_id: out.key_id,
                key_version: version(out.key_material_id),
                blob: out.blob,
            },
        })
    }

    async fn decrypt(&self, wrapped: &WrappedKey, context: &EncryptionContext) -> Result<Decrypted, KmsError> {
        // The entry's key id is outside every MAC; a damaged one is a damaged entry.
        let Ok(r) = AwsKeyUri::parse_key(&wrapped.key_id) else { return Err(KmsError::InvalidCiphertext) };
        if wrapped.blob.is_empty() || wrapped.blob.len() > MAX_CIPHERTEXT {
            return Err(KmsError::InvalidCiphertext);
        }
        // KeyId = the entry's key, so AWS refuses a blob wrapped by any other key
        // (IncorrectKeyException) instead of decrypting with whatever key the blob names.
        let out = self
            .api
            .decrypt(r.key(), &wrapped.blob, &to_aws_context(context))
            .await
            .map_err(|e| map_error(Op::Decrypt, &wrapped.key_id, e))?;
        // Encrypt reports no KeyMaterialId, so its entries say UNVERSIONED; report the same
        // for them (docs/backends/aws-kms.md §Versions).
        let key_version =
            if wrapped.key_version == UNVERSIONED { UNVERSIONED.to_owned() } else { version(out.key_material_id) };
        Ok(Decrypted { plaintext: out.plaintext, key_id: out.key_id, key_version })
    }

    async fn encrypt(&self, key: &str, plaintext: &[u8], context: &EncryptionContext) -> Result<WrappedKey, KmsError> {
        if plaintext.len() > MAX_DIRECT_ENCRYPT {
            return Err(KmsError::PlaintextTooLarge { size: plaintext.len(), limit: MAX_DIRECT_ENCRYPT });
        }
        let r = Self::key_ref(key)?;
        let out = self.api.encrypt(r.key(), plaintext, &to_aws_context(context)).await.map_err(|e| {
            let validation = e.code.as_deref() == Some("ValidationException");
            match plaintext.len() {
                // AWS's own bound for Encrypt is 1..=4096 bytes.
                n if validation && n > AWS_MAX_ENCRYPT => {
                    KmsError::PlaintextTooLarge { size: n, limit: AWS_MAX_ENCRYPT }
                }
                0 if validation => KmsError::InvalidRequest {
                    message: "AWS KMS cannot encrypt an empty plaintext (its Encrypt takes 1 to 4096 bytes)".into(),
                },
                _ => map_error(Op::Encrypt, key, e),
            }
        })?;
        Ok(WrappedKey {
            backend: BACKEND.to_owned(),
            key_id: out.key_id,
            key_version: version(out.key_material_id),
            blob: out.blob,
        })
    }

    async fn re_encrypt(
        &self,
        wrapped: &WrappedKey,
        source_context: &EncryptionContext,
        destination_key: &str,
        destination_context: &EncryptionContext,
    ) -> Result<WrappedKey, KmsError> {
        let Ok(source) = AwsKeyUri::parse_key(&wrapped.key_id) else { return Err(KmsError::InvalidCiphertext) };
        if wrapped.blob.is_empty() || wrapped.blob.len() > MAX_CIPHERTEXT {
            return Err(KmsError::InvalidCiphertext);
        }
        let destination = Self::key_ref(destination_key)?;
        if let (Some(a), Some(b)) = (source.region(), destination.region())
            && a != b
        {
            // ReEncrypt runs in one region; across regions, unwrap here and wrap there.
            let d = self.decrypt(wrapped, source_context).await?;
            return self.encrypt(destination_key, d.plaintext.expose_secret(), destination_context).await;
        }
        let out = self
            .api
            .re_encrypt(
                source.key(),
                &wrapped.blob,
                &to_aws_context(source_context),
                destination.key(),
                &to_aws_context(destination_context),
            )
            .await
            .map_err(|e| {
                // NotFound / Disabled / PendingDeletion may concern either key.
                map_error(Op::ReEncrypt, &format!("{} or {destination_key}", wrapped.key_id), e)
            })?;
        Ok(WrappedKey {
            backend: BACKEND.to_owned(),
            key_id: out.key_id,
            key_version: version(out.key_material_id),
            blob: out.blob,
        })
    }

    fn key_manager(&self) -> Option<&dyn KeyManager> {
        Some(self)
    }
}

#[async_trait]
impl KeyManager for AwsKms {
    async fn create_key(&self, spec: &KeySpec) -> Result<KeyMetadata, KmsError> {
        let store = match spec.protection_level {
            ProtectionLevel::Software => None,
            ProtectionLevel::Hsm => match &self.custom_key_store {
                Some(store) => Some(store.as_str()),
                None => {
                    return Err(KmsError::Unsupported {
                        operation: "create_key with protection level HSM (configure a CloudHSM custom key store)",
                        backend: BACKEND.to_owned(),
                    });
                }
            },
        };
        let d = self
            .api
            .create_key(&spec.description, &spec.tags, store)
            .await
            .map_err(|e| map_error(Op::CreateKey, "a new key", e))?;
        let mut m = metadata(&d);
        m.tags = spec.tags.clone();
        Ok(m)
    }

    async fn describe_key(&self, key: &str) -> Result<KeyMetadata, KmsError> {
        self.describe_full(key, Op::DescribeKey).await
    }

    async fn list_keys(&self) -> Result<Vec<KeyMetadata>, KmsError> {
        let arns = collect(|marker| self.api.list_keys(marker)).await.map_err(|e| map_error(Op::ListKeys, "*", e))?;
        let aliases = collect(|marker| self.api.list_aliases(None, marker))
            .await
            .map_err(|e| map_error(Op::ListAliases, "*", e))?;
        let mut by_key: HashMap<String, Vec<String>> = HashMap::new();
        for a in aliases {
            if let Some(target) = a.target_key_id {
                by_key.entry(target).or_default().push(a.name);
            }
        }
        let mut out = Vec::with_capacity(arns.len());
        for arn in arns {
            // One DescribeKey per key; versions and tags are left to describe_key.
            match self.api.describe_key(&arn).await {
                Ok(d) => {
                    let mut m = metadata(&d);
                    m.aliases = by_key.remove(&d.key_id).unwrap_or_default();
                    out.push(m);
                }
                // Deleted between the two calls.
                Err(e) if e.code.as_deref() == Some("NotFoundException") => {}
                Err(e) => return Err(map_error(Op::DescribeKey, &arn, e)),
            }
        }
        Ok(out)
    }

    async fn create_alias(&self, alias: &str, key: &str) -> Result<(), KmsError> {
        let a = alias_name(alias)?;
        let target = self.resolve(key, Op::CreateAlias).await?;
        self.api.create_alias(&a, &target).await.map_err(|e| match map_error(Op::CreateAlias, key, e) {
            KmsError::AlreadyExists { .. } => KmsError::AlreadyExists { what: format!("alias {a}") },
            e => e,
        })
    }

    async fn delete_alias(&self, alias: &str) -> Result<(), KmsError> {
        let a = alias_name(alias)?;
        self.api.delete_alias(&a).await.map_err(|e| map_error(Op::DeleteAlias, alias, e))
    }

    async fn list_aliases(&self) -> Result<Vec<Alias>, KmsError> {
        let aliases = collect(|marker| self.api.list_aliases(None, marker))
            .await
            .map_err(|e| map_error(Op::ListAliases, "*", e))?;
        Ok(aliases
            .into_iter()
            .filter_map(|a| {
                // AWS-reserved aliases (alias/aws/...) have no target until first use.
                let target = a.target_key_id?;
                // The key ARN shares the alias ARN's partition, region and account.
                let key_id = match a.arn.as_deref().and_then(|arn| arn.split_once(":alias/")) {
                    Some((prefix, _)) => format!("{prefix}:key/{target}"),
                    None => target,
                };
                Some(Alias { name: a.name, key_id })
            })
            .collect())
    }

    async fn rotate_key(&self, key: &str) -> Result<KeyMetadata, KmsError> {
        let arn = self.resolve(key, Op::RotateKeyOnDemand).await?;
        self.api.rotate_key_on_demand(&arn).await.map_err(|e| map_error(Op::RotateKeyOnDemand, key, e))?;
        self.describe_full(&arn, Op::DescribeKey).await
    }

    async fn enable_key(&self, key: &str) -> Result<(), KmsError> {
        let arn = self.resolve(key, Op::EnableKey).await?;
        self.api.enable_key(&arn).await.map_err(|e| map_error(Op::EnableKey, key, e))
    }

    async fn disable_key(&self, key: &str) -> Result<(), KmsError> {
        let arn = self.resolve(key, Op::DisableKey).await?;
        self.api.disable_key(&arn).await.map_err(|e| map_error(Op::DisableKey, key, e))
    }

    async fn schedule_key_deletion(&self, key: &str, pending_days: u32) -> Result<KeyMetadata, KmsError> {
        if !(MIN_DELETION_DAYS..=MAX_DELETION_DAYS).contains(&pending_days) {
            return Err(KmsError::InvalidRequest {
                message: format!(
                    "deletion window of {pending_days} days: AWS KMS takes {MIN_DELETION_DAYS} to {MAX_DELETION_DAYS}"
                ),
            });
        }
        let arn = self.resolve(key, Op::ScheduleKeyDeletion).await?;
        // Invariant: pending_days <= 30, so the cast cannot truncate.
        self.api
            .schedule_key_deletion(&arn, pending_days as i32)
            .await
            .map_err(|e| map_error(Op::ScheduleKeyDeletion, key, e))?;
        self.describe_full(&arn, Op::DescribeKey).await
    }

    async fn cancel_key_deletion(&self, key: &str) -> Result<(), KmsError> {
        let arn = self.resolve(key, Op::CancelKeyDeletion).await?;
        self.api.cancel_key_deletion(&arn).await.map_err(|e| map_error(Op::CancelKeyDeletion, key, e))
    }

    async fn set_min_decryption_version(&self, _key: &str, _version: &str) -> Result<(), KmsError> {
        // AWS KMS keeps every key material able to decrypt for the key's lifetime.
        Err(KmsError::Unsupported { operation: "set_min_decryption_version", backend: BACKEND.to_owned() })
    }
}

/// An alias argument: `alias/NAME` (optionally `aws-kms:alias/NAME`), not AWS-reserved.
fn alias_name(alias: &str) -> Result<String, KmsError> {
    let r = AwsKeyUri::parse_key(alias).map_err(|e| KmsError::InvalidRequest { message: e.to_string() })?;
    if r.kind() != KeyRefKind::AliasName {
        return Err(KmsError::InvalidRequest { message: "an alias must be written alias/NAME".into() });
    }
    if r.key().starts_with("alias/aws/") {
        return Err(KmsError::InvalidRequest { message: "aliases under alias/aws/ are reserved for AWS".into() });
    }
    Ok(r.key().to_owned())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use aws_config::Region;
    use aws_sdk_kms::config::{Credentials, SharedCredentialsProvider};

    use super::*;
    use crate::api::{AliasOut, RotationOut};
    use crate::fake::{ACCOUNT_PREFIX, FIXTURE_DATA_KEY, FakeApi, KEY_ID, arn};

    fn kms() -> (Arc<FakeApi>, AwsKms) {
        let fake = Arc::new(FakeApi::default());
        (fake.clone(), AwsKms::with_api(fake, None))
    }

    fn ctx(pairs: &[(&str, &str)]) -> EncryptionContext {
        EncryptionContext::from_pairs(pairs.iter().copied()).unwrap()
    }

    fn block_on<F: Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(f)
    }

    #[test]
    fn backend_and_key_manager() {
        let (_, k) = kms();
        assert_eq!(k.backend(), "aws-kms");
        assert!(k.key_manager().is_some());
    }

    #[test]
    fn generate_sends_the_context_1_to_1_and_records_the_arn() {
        block_on(async {
            let (fake, k) = kms();
            let c = ctx(&[("app", "billing"), ("tenant", "t-1")]);
            let g = k.generate_data_key("aws-kms:alias/app", &c).await.unwrap();
            assert_eq!(g.data_key.expose_secret(), &FIXTURE_DATA_KEY);
            assert_eq!(g.wrapped.backend, "aws-kms");
            assert_eq!(g.wrapped.key_id, arn(KEY_ID));
            assert_eq!(g.wrapped.key_version, UNVERSIONED);
            let call = &fake.calls()[0];
            // The scheme is stripped; the context goes over unchanged.
            assert_eq!((call.op, call.key.as_str()), ("GenerateDataKey", "alias/app"));
            assert_eq!(call.context.as_ref().unwrap(), &to_aws_context(&c));
            assert_eq!(call.context.as_ref().unwrap().get("tenant").map(String::as_str), Some("t-1"));
        });
    }

    #[test]
    fn invalid_references_make_no_call() {
        block_on(async {
            let (fake, k) = kms();
            let c = EncryptionContext::new();
            for bad in ["", "aws-kms:", "not a key", "arn:aws:s3:::bucket"] {
                let e = k.generate_data_key(bad, &c).await.unwrap_err();
                assert!(matches!(e, KmsError::InvalidRequest { .. }), "{bad}: {e:?}");
            }
            // A damaged key id in an entry is a damaged entry.
            let w = WrappedKey {
                backend: BACKEND.into(),
                key_id: "x".into(),
                key_version: UNVERSIONED.into(),
                blob: vec![1],
            };
            assert!(matches!(k.decrypt(&w, &c).await, Err(KmsError::InvalidCiphertext)));
            let w = WrappedKey { key_id: arn(KEY_ID), blob: Vec::new(), ..w };
            assert!(matches!(k.decrypt(&w, &c).await, Err(KmsError::InvalidCiphertext)));
            let w = WrappedKey { blob: vec![0; 6145], ..w };
            assert!(matches!(k.decrypt(&w, &c).await, Err(KmsError::InvalidCiphertext)));
            assert!(fake.calls().is_empty());
        });
    }

    #[test]
    fn decrypt_passes_the_entry_key_and_checks_it() {
        block_on(async {
            let (fake, k) = kms();
            let c = ctx(&[("a", "1")]);
            let g = k.generate_data_key(KEY_ID, &c).await.unwrap();
            let d = k.decrypt(&g.wrapped, &c).await.unwrap();
            assert_eq!(d.plaintext.expose_secret(), &FIXTURE_DATA_KEY);
            assert_eq!((d.key_id.as_str(), d.key_version.as_str()), (g.wrapped.key_id.as_str(), UNVERSIONED));
            let call = fake.calls().pop().unwrap();
            assert_eq!((call.op, call.key), ("Decrypt", arn(KEY_ID)));
            // Another key named in the entry: AWS says IncorrectKey.
            let other = WrappedKey { key_id: arn("9999aaaa-12ab-34cd-56ef-1234567890ab"), ..g.wrapped.clone() };
            assert!(matches!(k.decrypt(&other, &c).await, Err(KmsError::InvalidCiphertext)));
            // Wrong context.
            assert!(matches!(k.decrypt(&g.wrapped, &ctx(&[("a", "2")])).await, Err(KmsError::InvalidCiphertext)));
        });
    }

    #[test]
    fn key_material_id_is_the_version() {
        block_on(async {
            let (fake, k) = kms();
            let c = EncryptionContext::new();
            fake.set_material(Some("mat-1"));
            let g = k.generate_data_key(KEY_ID, &c).await.unwrap();
            assert_eq!(g.wrapped.key_version, "mat-1");
            assert_eq!(k.decrypt(&g.wrapped, &c).await.unwrap().key_version, "mat-1");
            // Encrypt reports no material id: the entry says UNVERSIONED, and decrypt agrees
            // even though Decrypt reports one.
            let w = k.encrypt(KEY_ID, b"secret", &c).await.unwrap();
            assert_eq!(w.key_version, UNVERSIONED);
            assert_eq!(k.decrypt(&w, &c).await.unwrap().key_version, UNVERSIONED);
            // ReEncrypt reports the destination's material: a rewrap gains a version.
            let r = k.re_encrypt(&w, &c, KEY_ID, &c).await.unwrap();
            assert_eq!(r.key_version, "mat-1");
            // After a rotation, old entries report the material that wrapped them... as AWS says.
            fake.set_material(Some("mat-2"));
            assert_eq!(k.decrypt(&g.wrapped, &c).await.unwrap().key_version, "mat-2");
        });
    }

    #[test]
    fn encrypt_limits() {
        block_on(async {
            let (fake, k) = kms();
            let c = EncryptionContext::new();
            let e = k.encrypt(KEY_ID, &[1; 6145], &c).await.unwrap_err();
            assert!(matches!(e, KmsError::PlaintextTooLarge { size: 6145, limit: 6144 }));
            assert!(fake.calls().is_empty(), "checked before any request");
            // AWS's own 4096-byte bound, reported by the server.
            let too_long = ApiError::service(
                "ValidationException",
                "1 validation error detected: Value at 'plaintext' failed to satisfy constraint: Member must have length less than or equal to 4096",
                400,
            );
            fake.fail("Encrypt", too_long);
            let e = k.encrypt(KEY_ID, &[1; 4097], &c).await.unwrap_err();
            assert!(matches!(e, KmsError::PlaintextTooLarge { size: 4097, limit: 4096 }), "{e:?}");
            let e = k.encrypt(KEY_ID, &[], &c).await.unwrap_err();
            assert!(matches!(&e, KmsError::InvalidRequest { message } if message.contains("empty")), "{e:?}");
            let e = k.encrypt(KEY_ID, &[1; 10], &c).await.unwrap_err();
            assert!(matches!(e, KmsError::InvalidRequest { .. }), "{e:?}");
        });
    }

    #[test]
    fn errors_from_the_wire_name_the_key_as_given() {
        block_on(async {
            let (fake, k) = kms();
            let c = EncryptionContext::new();
            fake.fail("GenerateDataKey", ApiError::service("DisabledException", "disabled", 400));
            let e = k.generate_data_key("alias/app", &c).await.unwrap_err();
            assert!(matches!(&e, KmsError::KeyDisabled { key } if key == "alias/app"), "{e:?}");
            fake.fail("GenerateDataKey", ApiError::service("NotFoundException", "Alias is not found.", 400));
            let e = k.generate_data_key("alias/nope", &c).await.unwrap_err();
            assert!(matches!(&e, KmsError::KeyNotFound { key } if key == "alias/nope"), "{e:?}");
            fake.fail(
                "Decrypt",
                ApiError::service("KMSInvalidStateException", &format!("{} is pending deletion.", arn(KEY_ID)), 400),
            );
            let w = WrappedKey { backend: BACKEND.into(), key_id: arn(KEY_ID), key_version: "v".into(), blob: vec![1] };
            let e = k.decrypt(&w, &c).await.unwrap_err();
            assert!(matches!(&e, KmsError::KeyPendingDeletion { key } if *key == arn(KEY_ID)), "{e:?}");
            fake.fail("Encrypt", ApiError::service("ThrottlingException", "Rate exceeded", 400));
            let e = k.encrypt(KEY_ID, b"x", &c).await.unwrap_err();
            assert!(matches!(e, KmsError::Throttled { .. }) && e.is_retryable());
            fake.fail("Decrypt", ApiError::service("AccessDeniedException", "not authorized", 400));
            assert!(matches!(k.decrypt(&w, &c).await, Err(KmsError::AccessDenied { .. })));
            fake.fail("Decrypt", ApiError::service("KMSInternalException", "", 500));
            assert!(k.decrypt(&w, &c).await.unwrap_err().is_retryable());
        });
    }

    #[test]
    fn re_encrypt_is_server_side_within_a_region() {
        block_on(async {
            let (fake, k) = kms();
            let (c1, c2) = (ctx(&[("s", "1")]), ctx(&[("s", "2")]));
            let w = k.encrypt(KEY_ID, b"top secret", &c1).await.unwrap();
            let r = k.re_encrypt(&w, &c1, "alias/other", &c2).await.unwrap();
            assert_eq!(fake.ops(), ["Encrypt", "ReEncrypt"]);
            let call = &fake.calls()[1];
            assert_eq!((call.key.as_str(), call.extra.as_str()), (arn(KEY_ID).as_str(), "alias/other"));
            assert_eq!(k.decrypt(&r, &c2).await.unwrap().plaintext.expose_secret(), b"top secret");
            // Wrong source context.
            assert!(matches!(k.re_encrypt(&w, &c2, KEY_ID, &c2).await, Err(KmsError::InvalidCiphertext)));
        });
    }

    #[test]
    fn re_encrypt_across_regions_unwraps_and_wraps() {
        block_on(async {
            let (fake, k) = kms();
            let c = EncryptionContext::new();
            let w = k.encrypt(&arn(KEY_ID), b"s", &c).await.unwrap();
            let other = format!("arn:aws:kms:eu-west-1:111122223333:key/{KEY_ID}");
            // The fake stores eu-west-1 ARNs as given.
            let r = k.re_encrypt(&w, &c, &other, &c).await.unwrap();
            assert_eq!(fake.ops(), ["Encrypt", "Decrypt", "Encrypt"]);
            assert_eq!(r.key_id, other);
        });
    }

    #[test]
    fn create_key_protection_levels() {
        block_on(async {
            let (fake, k) = kms();
            let hsm = KeySpec { protection_level: ProtectionLevel::Hsm, ..KeySpec::default() };
            let e = k.create_key(&hsm).await.unwrap_err();
            assert!(matches!(e, KmsError::Unsupported { backend, .. } if backend == "aws-kms"));
            assert!(fake.calls().is_empty());
            let tags = BTreeMap::from([("team".to_owned(), "pay".to_owned())]);
            let spec = KeySpec { description: "d".into(), tags: tags.clone(), ..KeySpec::default() };
            let m = k.create_key(&spec).await.unwrap();
            assert_eq!(
                (m.state, m.protection_level, m.tags.clone()),
                (KeyState::Enabled, ProtectionLevel::Software, tags)
            );
            assert_eq!(m.key_id, arn("0000aaaa-12ab-34cd-56ef-1234567890ab"));
            assert_eq!(m.versions.len(), 1);
            assert_eq!(m.versions[0].id, m.current_version);
            assert!(fake.calls()[0].extra.ends_with("|None"));

            let fake = Arc::new(FakeApi::default());
            let k = AwsKms::with_api(fake.clone(), Some("cks-1234567890abcdef0".into()));
            let m = k.create_key(&hsm).await.unwrap();
            assert_eq!(m.protection_level, ProtectionLevel::Hsm);
            assert!(fake.calls()[0].extra.ends_with("|Some(\"cks-1234567890abcdef0\")"));
        });
    }

    #[test]
    fn describe_gathers_versions_aliases_and_tags() {
        block_on(async {
            let (fake, k) = kms();
            let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
            fake.set_material(Some("m2"));
            fake.set_lists(
                Vec::new(),
                vec![AliasOut { name: "alias/app".into(), arn: None, target_key_id: Some(KEY_ID.into()) }],
                vec![
                    RotationOut {
                        key_material_id: Some("m2".into()),
                        rotation_date: Some(t0 + Duration::from_secs(60)),
                    },
                    RotationOut { key_material_id: Some("m1".into()), rotation_date: None },
                ],
            );
            fake.set_tags(vec![("team".into(), "pay".into()), ("env".into(), "prod".into())]);
            let m = k.describe_key("alias/app").await.unwrap();
            assert_eq!(m.key_id, arn(KEY_ID));
            assert_eq!(m.current_version, "m2");
            let ids: Vec<&str> = m.versions.iter().map(|v| v.id.as_str()).collect();
            assert_eq!(ids, ["m1", "m2"]);
            assert_eq!(m.versions[0].created_at, t0);
            assert_eq!(m.aliases, ["alias/app"]);
            assert_eq!(m.tags.get("env").map(String::as_str), Some("prod"));
            assert_eq!(m.min_decryption_version, None);
            // Paginated: one item per page.
            assert_eq!(fake.ops().iter().filter(|o| **o == "ListResourceTags").count(), 2);

            // Without permission for the extras, describe still works.
            fake.fail("ListKeyRotations", ApiError::service("AccessDeniedException", "no", 400));
            fake.fail("ListResourceTags", ApiError::service("UnsupportedOperationException", "no", 400));
            let m = k.describe_key(KEY_ID).await.unwrap();
            assert_eq!(m.versions.len(), 1);
            assert!(m.tags.is_empty());
            // Other failures are errors.
            fake.fail("ListAliases", ApiError::service("KMSInternalException", "", 500));
            assert!(k.describe_key(KEY_ID).await.unwrap_err().is_retryable());
        });
    }

    #[test]
    fn lists() {
        block_on(async {
            let (fake, k) = kms();
            let other = "5678abcd-12ab-34cd-56ef-1234567890ab";
            fake.set_lists(
                vec![arn(KEY_ID), arn(other)],
                vec![
                    AliasOut {
                        name: "alias/app".into(),
                        arn: Some(format!("{ACCOUNT_PREFIX}:alias/app")),
                        target_key_id: Some(KEY_ID.into()),
                    },
                    AliasOut { name: "alias/aws/s3".into(), arn: None, target_key_id: None },
                ],
                Vec::new(),
            );
            let keys = k.list_keys().await.unwrap();
            assert_eq!(keys.len(), 2);
            assert_eq!(keys[0].aliases, ["alias/app"]);
            assert!(keys[1].aliases.is_empty());
            let aliases = k.list_aliases().await.unwrap();
            assert_eq!(aliases, [Alias { name: "alias/app".into(), key_id: arn(KEY_ID) }]);
        });
    }

    #[test]
    fn lifecycle_calls() {
        block_on(async {
            let (fake, k) = kms();
            k.create_alias("aws-kms:alias/app", "alias/current").await.unwrap();
            // The target alias is resolved to the key ARN first.
            assert_eq!(fake.ops(), ["DescribeKey", "CreateAlias"]);
            assert_eq!(fake.calls()[1].key, arn(KEY_ID));
            for bad in ["app", "alias/aws/s3", KEY_ID] {
                assert!(matches!(k.create_alias(bad, KEY_ID).await, Err(KmsError::InvalidRequest { .. })), "{bad}");
            }
            fake.fail("CreateAlias", ApiError::service("AlreadyExistsException", "exists", 400));
            let e = k.create_alias("alias/app", KEY_ID).await.unwrap_err();
            assert!(matches!(&e, KmsError::AlreadyExists { what } if what == "alias alias/app"), "{e:?}");
            fake.fail("DeleteAlias", ApiError::service("NotFoundException", "Alias is not found.", 400));
            let e = k.delete_alias("alias/gone").await.unwrap_err();
            assert!(matches!(&e, KmsError::KeyNotFound { key } if key == "alias/gone"));

            for days in [0, 6, 31, 365] {
                let e = k.schedule_key_deletion(KEY_ID, days).await.unwrap_err();
                assert!(matches!(e, KmsError::InvalidRequest { .. }), "{days}");
            }
            let n = fake.calls().len();
            let m = k.schedule_key_deletion(KEY_ID, 7).await.unwrap();
            assert_eq!(m.key_id, arn(KEY_ID));
            assert_eq!(fake.calls()[n].op, "ScheduleKeyDeletion");
            assert_eq!(fake.calls()[n].extra, "7");
            k.cancel_key_deletion(KEY_ID).await.unwrap();
            k.enable_key(KEY_ID).await.unwrap();
            k.disable_key(KEY_ID).await.unwrap();
            fake.fail(
                "CancelKeyDeletion",
                ApiError::service("KMSInvalidStateException", "x is not pending deletion", 400),
            );
            assert!(matches!(k.cancel_key_deletion(KEY_ID).await, Err(KmsError::InvalidRequest { .. })));

            k.rotate_key(KEY_ID).await.unwrap();
            assert!(fake.ops().contains(&"RotateKeyOnDemand"));
            fake.fail("RotateKeyOnDemand", ApiError::service("UnsupportedOperationException", "not for this key", 400));
            let e = k.rotate_key(KEY_ID).await.unwrap_err();
            assert!(matches!(e, KmsError::Unsupported { operation: "rotate_key", .. }));

            let e = k.set_min_decryption_version(KEY_ID, "1").await.unwrap_err();
            assert!(matches!(e, KmsError::Unsupported { operation: "set_min_decryption_version", .. }));
        });
    }

    #[test]
    fn key_states() {
        assert_eq!(key_state("Enabled"), KeyState::Enabled);
        assert_eq!(key_state("Updating"), KeyState::Enabled);
        assert_eq!(key_state("Disabled"), KeyState::Disabled);
        assert_eq!(key_state("PendingImport"), KeyState::Disabled);
        assert_eq!(key_state("Unavailable"), KeyState::Disabled);
        assert_eq!(key_state("PendingDeletion"), KeyState::PendingDeletion);
        assert_eq!(key_state("PendingReplicaDeletion"), KeyState::PendingDeletion);
    }

    /// Every value and error `Debug`/`Display` shows no data key, plaintext or credential.
    #[test]
    fn debug_never_leaks_secrets() {
        block_on(async {
            let (fake, k) = kms();
            let c = ctx(&[("a", "1")]);
            let secret = b"very-secret-small-value-0123456789";
            let mut texts = Vec::new();
            let g = k.generate_data_key(KEY_ID, &c).await.unwrap();
            texts.push(format!("{g:?} {:?} {:?}", g.data_key, g.wrapped));
            let d = k.decrypt(&g.wrapped, &c).await.unwrap();
            texts.push(format!("{d:?}"));
            let w = k.encrypt(KEY_ID, secret, &c).await.unwrap();
            let d = k.decrypt(&w, &c).await.unwrap();
            texts.push(format!("{w:?} {d:?}"));
            fake.fail("Decrypt", ApiError::service("InvalidCiphertextException", "", 400));
            let e = k.decrypt(&w, &c).await.unwrap_err();
            texts.push(format!("{e} {e:?}"));
            let e = k.encrypt(KEY_ID, &[0xA7; 7000], &c).await.unwrap_err();
            texts.push(format!("{e} {e:?}"));
            texts.push(format!("{k:?}"));

            // The real SDK-backed backend with recognizable static credentials.
            let sdk = SdkConfig::builder()
                .region(Region::new("eu-central-1"))
                .endpoint_url("http://127.0.0.1:9")
                .credentials_provider(SharedCredentialsProvider::new(Credentials::new(
                    "AKIDLEAKCHECK0000001",
                    "leak-check-secret-access-key",
                    Some("leak-check-session-token".into()),
                    None,
                    "test",
                )))
                .behavior_version(BehaviorVersion::latest())
                .build();
            let real = AwsKms::builder(&sdk).max_attempts(2).custom_key_store("cks-1").build();
            texts.push(format!("{real:?}"));
            assert!(texts.last().unwrap().contains("eu-central-1"));

            let key_forms = [
                hex(&FIXTURE_DATA_KEY),
                hex(&FIXTURE_DATA_KEY).to_uppercase(),
                format!("{:?}", FIXTURE_DATA_KEY.to_vec()),
                format!("{:?}", &FIXTURE_DATA_KEY[..4]).trim_end_matches(']').to_owned(),
                String::from_utf8_lossy(secret).into_owned(),
                format!("{:?}", secret.to_vec()),
                "AKIDLEAKCHECK".into(),
                "leak-check-secret".into(),
                "leak-check-session".into(),
            ];
            for t in &texts {
                for f in &key_forms {
                    assert!(!t.contains(f.as_str()), "{f:?} found in {t}");
                }
            }
        });
    }

    fn hex(b: &[u8]) -> String {
        b.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Against a closed port, the real client fails fast and retryably (no server needed).
    #[test]
    fn unreachable_endpoint_is_retryable_unavailable() {
        block_on(async {
            // A port that was free a moment ago: nothing listens there.
            let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
            let sdk = SdkConfig::builder()
                .region(Region::new("us-east-1"))
                .endpoint_url(format!("http://127.0.0.1:{port}"))
                .credentials_provider(SharedCredentialsProvider::new(Credentials::new("a", "b", None, None, "t")))
                .behavior_version(BehaviorVersion::latest())
                .build();
            let k = AwsKms::builder(&sdk).max_attempts(1).build();
            let e = k.generate_data_key(KEY_ID, &EncryptionContext::new()).await.unwrap_err();
            assert!(matches!(e, KmsError::Unavailable { retryable: true, .. }), "{e:?}");
        });
    }

    /// A server that accepts and never answers: the attempt timeout fires, reported as
    /// retryable Unavailable.
    #[test]
    fn silent_server_times_out() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        std::thread::spawn(move || {
            let mut held = Vec::new();
            for s in listener.incoming().flatten() {
                held.push(s);
            }
        });
        block_on(async {
            let sdk = SdkConfig::builder()
                .region(Region::new("us-east-1"))
                .endpoint_url(format!("http://127.0.0.1:{port}"))
                .credentials_provider(SharedCredentialsProvider::new(Credentials::new("a", "b", None, None, "t")))
                .behavior_version(BehaviorVersion::latest())
                .build();
            let k = AwsKms::builder(&sdk)
                .max_attempts(2)
                .timeouts(Duration::from_millis(200), Duration::from_secs(3))
                .build();
            let started = std::time::Instant::now();
            let e = k.generate_data_key(KEY_ID, &EncryptionContext::new()).await.unwrap_err();
            assert!(
                matches!(&e, KmsError::Unavailable { retryable: true, message } if message.contains("timed out")),
                "{e:?}"
            );
            assert!(started.elapsed() < Duration::from_secs(3), "{:?}", started.elapsed());
        });
    }

    /// Without credentials the error says so, as AccessDenied, before anything is sent.
    #[test]
    fn missing_credentials_are_access_denied() {
        block_on(async {
            let sdk = SdkConfig::builder()
                .region(Region::new("us-east-1"))
                .endpoint_url("http://127.0.0.1:9")
                .behavior_version(BehaviorVersion::latest())
                .build();
            let k = AwsKms::builder(&sdk).max_attempts(1).build();
            let e = k.generate_data_key(KEY_ID, &EncryptionContext::new()).await.unwrap_err();
            assert!(matches!(e, KmsError::AccessDenied { .. }), "{e:?}");
        });
    }
}
