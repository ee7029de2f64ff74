//! Governance for the local keystore: every operation of the CLI, as one principal (a
//! `--profile`), checked against the keystore's IAM file and recorded in its audit trail.
//!
//! This is a guard rail and a record for shared workstations and CI runners, not a security
//! boundary: whoever can read the keystore's key material can use it without envseal.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::SystemTime;

use async_trait::async_trait;
use envseal_audit::Event;
use envseal_core::kms::{Alias, Decrypted, GeneratedDataKey, KeyManager, KeyMetadata, KeySpec, WrappedKey};
use envseal_core::{EncryptionContext, Kms, KmsError};
use envseal_iam::{Flavor, Principal};
use serde_json::Value;

use crate::{Access, Governance};

/// The region used in the ARNs of local keys (`acs:kms:local:ACCOUNT:key/ID`).
pub const LOCAL_REGION: &str = "local";

/// Who the CLI acts as.
#[derive(Clone)]
pub struct LocalPrincipal {
    /// The IAM principal.
    pub principal: Principal,
    /// Whether it authenticated with MFA (the IAM user's MFA flag, or the session's).
    pub mfa: Option<bool>,
    /// The access key id it authenticated with.
    pub access_key_id: String,
    /// The profile name.
    pub profile: String,
}

impl fmt::Debug for LocalPrincipal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LocalPrincipal")
            .field("access_key_id", &self.access_key_id)
            .field("profile", &self.profile)
            .finish_non_exhaustive()
    }
}

/// A [`Kms`] (and its [`KeyManager`]) whose every operation is authorized for one principal and
/// recorded.
pub struct GovernedKms {
    inner: Arc<dyn Kms>,
    gov: Arc<Governance>,
    who: LocalPrincipal,
    flavor: Flavor,
}

impl fmt::Debug for GovernedKms {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GovernedKms").field("inner", &self.inner).field("who", &self.who).finish_non_exhaustive()
    }
}

fn context_map(ctx: &EncryptionContext) -> BTreeMap<String, String> {
    ctx.iter().map(|(k, v)| (k.to_owned(), v.to_owned())).collect()
}

impl GovernedKms {
    /// Wraps `inner`: `who` is checked against `gov`'s policies with `flavor` ARNs.
    pub fn new(inner: Arc<dyn Kms>, gov: Arc<Governance>, who: LocalPrincipal, flavor: Flavor) -> Self {
        Self { inner, gov, who, flavor }
    }

    fn arn(&self, key_id: Option<&str>) -> String {
        let account = self.gov.iam().account().to_owned();
        match (key_id, self.flavor) {
            (None, _) => "*".to_owned(),
            (Some(k), Flavor::Alibaba) => format!("acs:kms:{LOCAL_REGION}:{account}:key/{k}"),
            (Some(k), _) => format!("arn:aws:kms:{LOCAL_REGION}:{account}:key/{k}"),
        }
    }

    /// Key id and tags of `key` (id or alias), when the backend manages keys.
    async fn resolve(&self, key: &str) -> (String, Option<BTreeMap<String, String>>) {
        match self.inner.key_manager() {
            Some(km) => match km.describe_key(key).await {
                Ok(m) => (m.key_id, Some(m.tags)),
                Err(_) => (key.to_owned(), None),
            },
            None => (key.to_owned(), None),
        }
    }

    fn event(
        &self,
        action: &str,
        key_id: Option<&str>,
        ctx: &BTreeMap<String, String>,
        params: &[(&str, Value)],
    ) -> Event {
        let iam = self.gov.iam();
        let info = iam.principal_info(&self.who.principal, self.flavor);
        let kind = match &self.who.principal {
            Principal::Root => "Root",
            Principal::User(_) => "User",
            _ => "AssumedRole",
        };
        let mut ev = Event::new(action, "kms")
            .api("local")
            .principal(kind, &info.name, Some(&info.arn), Some(&self.who.access_key_id), info.session_name.as_deref())
            .user_agent(concat!("envseal-cli/", env!("CARGO_PKG_VERSION")));
        if let Some(k) = key_id {
            ev = ev.key_id(k);
        }
        if !ctx.is_empty() {
            ev = ev.param("EncryptionContext", serde_json::to_value(ctx).unwrap_or_default());
        }
        for (k, v) in params {
            ev = ev.param(k, v.clone());
        }
        ev
    }

    /// Authorizes `action` on `key_id` (None: `*`); records a denial.
    fn check(
        &self,
        action: &str,
        key_id: Option<&str>,
        tags: Option<&BTreeMap<String, String>>,
        ctx: &BTreeMap<String, String>,
        params: &[(&str, Value)],
    ) -> Result<String, KmsError> {
        let iam = self.gov.iam();
        let access = Access {
            action: format!("kms:{action}"),
            resource: self.arn(key_id),
            flavor: self.flavor,
            region: Some(LOCAL_REGION.to_owned()),
            source_ip: None,
            secure_transport: true,
            encryption_context: ctx,
            resource_tags: tags,
        };
        let d = self.gov.decide(&iam, &self.who.principal, self.who.mfa, &access);
        if d.allowed {
            return Ok(d.to_string());
        }
        let ev = self.event(action, key_id, ctx, params).decision(&d.to_string()).denied("AccessDenied");
        self.gov.record(ev).map_err(audit_error)?;
        Err(KmsError::AccessDenied {
            message: format!(
                "profile {} is not authorized to perform {} on {}: {d}",
                self.who.profile, access.action, access.resource
            ),
        })
    }

    /// Records the outcome; a record that cannot be written fails the operation.
    fn done<T>(
        &self,
        action: &str,
        key_id: Option<&str>,
        ctx: &BTreeMap<String, String>,
        params: &[(&str, Value)],
        decision: &str,
        result: Result<T, KmsError>,
    ) -> Result<T, KmsError> {
        let ev = self.event(action, key_id, ctx, params).decision(decision);
        let ev = match &result {
            Ok(_) => ev.succeeded(),
            Err(e) => ev.failed(error_code(e), ""),
        };
        self.gov.record(ev).map_err(audit_error)?;
        result
    }

    async fn keyed<T, F>(
        &self,
        action: &str,
        key: &str,
        ctx: &BTreeMap<String, String>,
        params: &[(&str, Value)],
        op: F,
    ) -> Result<T, KmsError>
    where
        F: std::future::Future<Output = Result<T, KmsError>>,
    {
        let (id, tags) = self.resolve(key).await;
        let decision = self.check(action, Some(&id), tags.as_ref(), ctx, params)?;
        let r = op.await;
        self.done(action, Some(&id), ctx, params, &decision, r)
    }

    async fn unkeyed<T, F>(&self, action: &str, params: &[(&str, Value)], op: F) -> Result<T, KmsError>
    where
        F: std::future::Future<Output = Result<T, KmsError>>,
    {
        let none = BTreeMap::new();
        let decision = self.check(action, None, None, &none, params)?;
        let r = op.await;
        self.done(action, None, &none, params, &decision, r)
    }
}

fn audit_error(e: crate::GovernanceError) -> KmsError {
    KmsError::Unavailable { message: e.to_string(), retryable: false }
}

fn error_code(e: &KmsError) -> &'static str {
    match e {
        KmsError::KeyNotFound { .. } => "KeyNotFound",
        KmsError::KeyDisabled { .. } => "KeyDisabled",
        KmsError::KeyPendingDeletion { .. } => "KeyPendingDeletion",
        KmsError::AccessDenied { .. } => "AccessDenied",
        KmsError::WrongContext => "WrongContext",
        KmsError::InvalidCiphertext => "InvalidCiphertext",
        KmsError::Throttled { .. } => "Throttled",
        KmsError::Unavailable { .. } => "Unavailable",
        _ => "Error",
    }
}

#[async_trait]
impl Kms for GovernedKms {
    fn backend(&self) -> &str {
        self.inner.backend()
    }

    async fn generate_data_key(&self, key: &str, context: &EncryptionContext) -> Result<GeneratedDataKey, KmsError> {
        let ctx = context_map(context);
        self.keyed(
            "GenerateDataKey",
            key,
            &ctx,
            &[("NumberOfBytes", Value::from(32))],
            self.inner.generate_data_key(key, context),
        )
        .await
    }

    async fn decrypt(&self, wrapped: &WrappedKey, context: &EncryptionContext) -> Result<Decrypted, KmsError> {
        // The key is the one that wrapped the blob: known once it is open. A refusal drops the
        // plaintext.
        let ctx = context_map(context);
        let params = [("CiphertextBlobBytes", Value::from(wrapped.blob.len()))];
        let r = self.inner.decrypt(wrapped, context).await;
        let key_id = match &r {
            Ok(d) => d.key_id.clone(),
            Err(_) => wrapped.key_id.clone(),
        };
        let (_, tags) = self.resolve(&key_id).await;
        let decision = self.check("Decrypt", Some(&key_id), tags.as_ref(), &ctx, &params)?;
        self.done("Decrypt", Some(&key_id), &ctx, &params, &decision, r)
    }

    async fn encrypt(&self, key: &str, plaintext: &[u8], context: &EncryptionContext) -> Result<WrappedKey, KmsError> {
        let ctx = context_map(context);
        self.keyed(
            "Encrypt",
            key,
            &ctx,
            &[("PlaintextBytes", Value::from(plaintext.len()))],
            self.inner.encrypt(key, plaintext, context),
        )
        .await
    }

    async fn re_encrypt(
        &self,
        wrapped: &WrappedKey,
        source_context: &EncryptionContext,
        destination_key: &str,
        destination_context: &EncryptionContext,
    ) -> Result<WrappedKey, KmsError> {
        let ctx = context_map(source_context);
        let (source, source_tags) = self.resolve(&wrapped.key_id).await;
        let (destination, dest_tags) = self.resolve(destination_key).await;
        let params = [("DestinationKeyId", Value::from(destination.clone()))];
        let decision = self.check("ReEncrypt", Some(&source), source_tags.as_ref(), &ctx, &params)?;
        self.check("ReEncrypt", Some(&destination), dest_tags.as_ref(), &context_map(destination_context), &params)?;
        let r = self.inner.re_encrypt(wrapped, source_context, destination_key, destination_context).await;
        self.done("ReEncrypt", Some(&source), &ctx, &params, &decision, r)
    }

    fn key_manager(&self) -> Option<&dyn KeyManager> {
        self.inner.key_manager().map(|_| self as &dyn KeyManager)
    }
}

impl GovernedKms {
    fn km(&self) -> Result<&dyn KeyManager, KmsError> {
        self.inner.key_manager().ok_or_else(|| KmsError::Unsupported {
            operation: "key management",
            backend: self.inner.backend().to_owned(),
        })
    }
}

#[async_trait]
impl KeyManager for GovernedKms {
    async fn create_key(&self, spec: &KeySpec) -> Result<KeyMetadata, KmsError> {
        self.unkeyed("CreateKey", &[], async { self.km()?.create_key(spec).await }).await
    }

    async fn describe_key(&self, key: &str) -> Result<KeyMetadata, KmsError> {
        let none = BTreeMap::new();
        self.keyed("DescribeKey", key, &none, &[], async { self.km()?.describe_key(key).await }).await
    }

    async fn list_keys(&self) -> Result<Vec<KeyMetadata>, KmsError> {
        self.unkeyed("ListKeys", &[], async { self.km()?.list_keys().await }).await
    }

    async fn create_alias(&self, alias: &str, key: &str) -> Result<(), KmsError> {
        let none = BTreeMap::new();
        let p = [("AliasName", Value::from(alias))];
        self.keyed("CreateAlias", key, &none, &p, async { self.km()?.create_alias(alias, key).await }).await
    }

    async fn delete_alias(&self, alias: &str) -> Result<(), KmsError> {
        let none = BTreeMap::new();
        let p = [("AliasName", Value::from(alias))];
        self.keyed("DeleteAlias", alias, &none, &p, async { self.km()?.delete_alias(alias).await }).await
    }

    async fn list_aliases(&self) -> Result<Vec<Alias>, KmsError> {
        self.unkeyed("ListAliases", &[], async { self.km()?.list_aliases().await }).await
    }

    async fn rotate_key(&self, key: &str) -> Result<KeyMetadata, KmsError> {
        let none = BTreeMap::new();
        self.keyed("CreateKeyVersion", key, &none, &[], async { self.km()?.rotate_key(key).await }).await
    }

    async fn enable_key(&self, key: &str) -> Result<(), KmsError> {
        let none = BTreeMap::new();
        self.keyed("EnableKey", key, &none, &[], async { self.km()?.enable_key(key).await }).await
    }

    async fn disable_key(&self, key: &str) -> Result<(), KmsError> {
        let none = BTreeMap::new();
        self.keyed("DisableKey", key, &none, &[], async { self.km()?.disable_key(key).await }).await
    }

    async fn schedule_key_deletion(&self, key: &str, pending_days: u32) -> Result<KeyMetadata, KmsError> {
        let none = BTreeMap::new();
        let p = [("PendingWindowInDays", Value::from(pending_days))];
        self.keyed("ScheduleKeyDeletion", key, &none, &p, async {
            self.km()?.schedule_key_deletion(key, pending_days).await
        })
        .await
    }

    async fn cancel_key_deletion(&self, key: &str) -> Result<(), KmsError> {
        let none = BTreeMap::new();
        self.keyed("CancelKeyDeletion", key, &none, &[], async { self.km()?.cancel_key_deletion(key).await }).await
    }

    async fn set_min_decryption_version(&self, key: &str, version: &str) -> Result<(), KmsError> {
        let none = BTreeMap::new();
        let p = [("MinDecryptionVersion", Value::from(version))];
        self.keyed("UpdateMinDecryptionVersion", key, &none, &p, async {
            self.km()?.set_min_decryption_version(key, version).await
        })
        .await
    }
}

#[allow(dead_code)]
fn _now() -> SystemTime {
    SystemTime::now()
}
