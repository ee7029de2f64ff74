//! [`Pkcs11Kms`]: the [`Kms`] and [`KeyManager`] over a PKCS#11 token.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use cryptoki::error::RvError;
use cryptoki::mechanism::Mechanism;
use cryptoki::mechanism::aead::GcmParams;
use cryptoki::object::ObjectHandle;
use cryptoki::session::Session;
use cryptoki::types::Ulong;
use zeroize::Zeroizing;

use envseal_core::kms::{
    Alias, Decrypted, GeneratedDataKey, KeyMetadata, KeySpec, KeyState, KeyVersionInfo, MAX_DELETION_DAYS,
    MAX_DIRECT_ENCRYPT, MIN_DELETION_DAYS, ProtectionLevel,
};
use envseal_core::{DataKey, EncryptionContext, KeyManager, Kms, KmsError, SecretBytes, WrappedKey};

use crate::blob::{self, BACKEND, IV_LEN, TAG_LEN};
use crate::objects::{self, KeyRecord, StateRecord, VersionObject, VersionRecord};
use crate::pin::{Pin, PinPrompt, PinRequest};
use crate::token::{MODULE_ENV, OpError, OpResult, Token, lock, rv};
use crate::uri::Pkcs11Uri;

const SECONDS_PER_DAY: u64 = 24 * 60 * 60;

/// How to reach the token: the module (when the URI has no `module-path`) and the PIN.
#[derive(Default)]
pub struct Pkcs11Options {
    module_path: Option<PathBuf>,
    pin: Option<Pin>,
    pin_prompt: Option<PinPrompt>,
}

impl fmt::Debug for Pkcs11Options {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pkcs11Options")
            .field("module_path", &self.module_path)
            .field("pin", &self.pin.as_ref().map(|_| "[REDACTED]"))
            .field("pin_prompt", &self.pin_prompt.is_some())
            .finish()
    }
}

impl Pkcs11Options {
    /// No module, no PIN: set them with the builder methods.
    pub fn new() -> Self {
        Self::default()
    }

    /// The module from `ENVSEAL_PKCS11_MODULE` and the PIN from `ENVSEAL_PKCS11_PIN`, where
    /// set and not empty.
    pub fn from_env() -> Self {
        Self {
            module_path: std::env::var_os(MODULE_ENV).filter(|v| !v.is_empty()).map(PathBuf::from),
            pin: Pin::from_env(),
            pin_prompt: None,
        }
    }

    /// The module to load when the URI has no `module-path`.
    pub fn module_path(mut self, path: impl Into<PathBuf>) -> Self {
        self.module_path = Some(path.into());
        self
    }

    /// The user PIN.
    pub fn pin(mut self, pin: Pin) -> Self {
        self.pin = Some(pin);
        self
    }

    /// A prompt asked for the PIN at the first login when no PIN was given (called at most
    /// once; its answer is kept, zeroizing, for re-logins).
    pub fn pin_prompt(mut self, prompt: impl Fn(&PinRequest) -> Option<Pin> + Send + Sync + 'static) -> Self {
        self.pin_prompt = Some(Arc::new(prompt));
        self
    }
}

/// A PKCS#11 token as an envseal KMS (`backend()` is `"pkcs11"`).
///
/// Cheap to clone (clones share the token sessions). Every method may be called concurrently.
#[derive(Clone)]
pub struct Pkcs11Kms {
    inner: Arc<Inner>,
}

struct Inner {
    token: Token,
    uri: Pkcs11Uri,
    /// Serializes key management in this process (read-modify-write of records and flags).
    admin: Mutex<()>,
    cache: Cache,
}

impl fmt::Debug for Pkcs11Kms {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pkcs11Kms")
            .field("backend", &BACKEND)
            .field("module", &self.inner.token.module())
            .field("token", &self.inner.token.label())
            .field("slot_id", &self.inner.token.slot_id())
            .finish()
    }
}

impl Pkcs11Kms {
    /// Opens the token a `pkcs11:` URI names, with [`Pkcs11Options::from_env`]
    /// (`ENVSEAL_PKCS11_MODULE`, `ENVSEAL_PKCS11_PIN`).
    ///
    /// Loads the module and finds the token; the login happens at the first operation (or
    /// [`Pkcs11Kms::login`]).
    ///
    /// # Errors
    /// [`KmsError::InvalidRequest`] for a malformed URI (a `pin-value` included);
    /// [`KmsError::Unavailable`] when the module cannot be loaded or no token matches.
    pub fn open(uri: &str) -> Result<Self, KmsError> {
        Self::open_with(Pkcs11Uri::parse(uri)?, Pkcs11Options::from_env())
    }

    /// Opens the token `uri` names with explicit options. The module is the URI's
    /// `module-path`, else `options`' module, else the first of
    /// [`DEFAULT_MODULES`](crate::DEFAULT_MODULES) that exists.
    ///
    /// # Errors
    /// As [`Pkcs11Kms::open`].
    pub fn open_with(uri: Pkcs11Uri, options: Pkcs11Options) -> Result<Self, KmsError> {
        let module = crate::token::resolve_module(&uri, options.module_path.as_deref())?;
        let token = Token::open(module, uri.clone(), options.pin, options.pin_prompt)?;
        Ok(Self { inner: Arc::new(Inner { token, uri, admin: Mutex::new(()), cache: Cache::default() }) })
    }

    /// The URI this instance was opened with.
    pub fn uri(&self) -> &Pkcs11Uri {
        &self.inner.uri
    }

    /// The URI's `object=`: the key to use when the caller names none.
    pub fn default_key(&self) -> Option<&str> {
        self.inner.uri.object()
    }

    /// The token's label.
    pub fn token_label(&self) -> &str {
        self.inner.token.label()
    }

    /// The module loaded.
    pub fn module_path(&self) -> &Path {
        self.inner.token.module()
    }

    /// The slot the token is in.
    pub fn slot_id(&self) -> u64 {
        self.inner.token.slot_id()
    }

    /// Logs in now (otherwise the first operation does), to report a wrong PIN early.
    ///
    /// # Errors
    /// [`KmsError::AccessDenied`] for a wrong, locked or missing PIN;
    /// [`KmsError::Unavailable`] if the token is gone.
    pub async fn login(&self) -> Result<(), KmsError> {
        self.blocking(|inner| inner.token.run(|_| Ok(()))).await
    }

    /// Creates a key with a chosen name (the `CKA_LABEL` of its objects) instead of a random
    /// UUID.
    ///
    /// # Errors
    /// [`KmsError::InvalidRequest`] for a name that is empty, longer than 255 bytes, has
    /// control characters or starts with `alias/`; [`KmsError::AlreadyExists`]; as
    /// [`KeyManager::create_key`].
    pub async fn create_named_key(&self, name: &str, spec: &KeySpec) -> Result<KeyMetadata, KmsError> {
        let name = name.to_string();
        let spec = spec.clone();
        self.admin(move |inner, s| inner.create(s, &name, &spec)).await
    }

    /// Runs `f` on Tokio's blocking pool when called inside a Tokio runtime (PKCS#11 calls
    /// block, and a network HSM can take milliseconds), else inline.
    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Inner) -> Result<T, KmsError> + Send + 'static,
    ) -> Result<T, KmsError> {
        let inner = Arc::clone(&self.inner);
        match tokio::runtime::Handle::try_current() {
            Ok(handle) => match handle.spawn_blocking(move || f(&inner)).await {
                Ok(r) => r,
                Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
                Err(_) => {
                    Err(KmsError::Unavailable { message: "the PKCS#11 call was cancelled".into(), retryable: true })
                }
            },
            Err(_) => f(&inner),
        }
    }

    /// A key-management operation: serialized in this process, expired keys purged first.
    async fn admin<T: Send + 'static>(
        &self,
        f: impl Fn(&Inner, &Session) -> OpResult<T> + Send + 'static,
    ) -> Result<T, KmsError> {
        self.blocking(move |inner| {
            let _guard = lock(&inner.admin);
            let result = inner.token.run(|s| {
                inner.purge_expired(s);
                f(inner, s)
            });
            inner.cache.clear();
            result
        })
        .await
    }
}

fn not_found(key: &str) -> OpError {
    OpError::Kms(KmsError::KeyNotFound { key: key.to_string() })
}

fn invalid(message: impl Into<String>) -> OpError {
    OpError::Kms(KmsError::InvalidRequest { message: message.into() })
}

/// The CKM_AES_GCM mechanism for `iv` and `aad`, 128-bit tag.
fn gcm<'a>(iv: &'a mut [u8; IV_LEN], aad: &'a [u8]) -> OpResult<Mechanism<'a>> {
    Ok(Mechanism::AesGcm(GcmParams::new(iv, aad, Ulong::try_from(TAG_LEN * 8)?)?))
}

/// Return codes with which tokens report an AES-GCM decryption that does not authenticate:
/// SoftHSM2 answers CKR_GENERAL_ERROR to a wrong tag or AAD, others CKR_ENCRYPTED_DATA_INVALID
/// or PKCS#11 3.0's CKR_AEAD_DECRYPT_FAILED (0x35, unnamed in cryptoki 0.12).
fn gcm_open_failed(rv: RvError) -> bool {
    matches!(
        rv,
        RvError::EncryptedDataInvalid
            | RvError::EncryptedDataLenRange
            | RvError::GeneralError
            | RvError::DataInvalid
            | RvError::DataLenRange
            | RvError::UnknownErrorCode(0x35)
    )
}

/// Errors after which a cached object handle must be looked up again.
fn stale_handle(e: &cryptoki::error::Error) -> bool {
    matches!(rv(e), Some(RvError::KeyFunctionNotPermitted | RvError::KeyHandleInvalid | RvError::ObjectHandleInvalid))
}

/// How long looked-up object handles and alias targets are reused.
const CACHE_TTL: Duration = Duration::from_secs(30);
/// Most names cached (the cache is cleared when full).
const CACHE_MAX: usize = 1024;

/// Object handles and alias targets, so that a wrap or an unwrap is one cryptographic call
/// instead of a `C_FindObjects` scan, which SoftHSM2 makes linear in the token's object count
/// (README §Performance). Staleness is safe: the token refuses a handle whose key was rotated,
/// disabled or destroyed, and the caller then looks again; key management in this instance
/// clears the cache.
#[derive(Default)]
struct Cache {
    inner: Mutex<CacheMaps>,
}

#[derive(Default)]
struct CacheMaps {
    versions: HashMap<String, (Instant, Vec<VersionObject>)>,
    aliases: HashMap<String, (Instant, String)>,
}

impl Cache {
    fn versions(&self, name: &str) -> Option<Vec<VersionObject>> {
        let maps = lock(&self.inner);
        maps.versions.get(name).filter(|(at, _)| at.elapsed() < CACHE_TTL).map(|(_, v)| v.clone())
    }

    fn put_versions(&self, name: &str, versions: &[VersionObject]) {
        if versions.is_empty() {
            return;
        }
        let mut maps = lock(&self.inner);
        if maps.versions.len() >= CACHE_MAX {
            maps.versions.clear();
        }
        maps.versions.insert(name.to_string(), (Instant::now(), versions.to_vec()));
    }

    fn alias(&self, alias: &str) -> Option<String> {
        let maps = lock(&self.inner);
        maps.aliases.get(alias).filter(|(at, _)| at.elapsed() < CACHE_TTL).map(|(_, t)| t.clone())
    }

    fn put_alias(&self, alias: &str, target: &str) {
        let mut maps = lock(&self.inner);
        if maps.aliases.len() >= CACHE_MAX {
            maps.aliases.clear();
        }
        maps.aliases.insert(alias.to_string(), (Instant::now(), target.to_string()));
    }

    fn forget(&self, name: &str) {
        lock(&self.inner).versions.remove(name);
    }

    fn clear(&self) {
        let mut maps = lock(&self.inner);
        maps.versions.clear();
        maps.aliases.clear();
    }
}

/// Which operation the token refused, to explain why.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Use {
    Encrypt,
    Decrypt,
}

/// The state a key is in: its record's, except that a key whose current version the token
/// refuses to use is disabled whatever the record says (changed outside envseal, or an
/// interrupted change, which envseal always leaves on the restrictive side).
fn effective_state(record: Option<&KeyRecord>, current: &VersionObject) -> KeyState {
    match record.map(|r| r.state) {
        Some(StateRecord::PendingDeletion) => KeyState::PendingDeletion,
        Some(StateRecord::Disabled) => KeyState::Disabled,
        _ if current.encrypt && current.decrypt => KeyState::Enabled,
        _ => KeyState::Disabled,
    }
}

fn metadata(name: &str, versions: &[VersionObject], record: Option<&KeyRecord>, aliases: Vec<String>) -> KeyMetadata {
    // Callers pass at least one version (a key without version objects does not exist).
    let current = versions[versions.len() - 1];
    let mut m = KeyMetadata::new(
        name.to_string(),
        effective_state(record, &current),
        objects::time(record.map_or(0, |r| r.created)),
        current.version.to_string(),
    );
    m.protection_level = ProtectionLevel::Hsm;
    m.versions = versions
        .iter()
        .map(|v| KeyVersionInfo {
            id: v.version.to_string(),
            created_at: objects::time(record.map_or(0, |r| r.version_created(v.version))),
        })
        .collect();
    m.aliases = aliases;
    if let Some(r) = record {
        m.description = r.description.clone();
        m.tags = r.tags.clone();
        m.min_decryption_version = r.min_decryption_version.map(|v| v.to_string());
        m.deletion_date = r.deletion_date.map(objects::time);
    }
    m
}

fn validate_spec(spec: &KeySpec) -> OpResult<()> {
    if spec.description.len() > objects::MAX_DESCRIPTION_LEN {
        return Err(invalid(format!("description longer than {} bytes", objects::MAX_DESCRIPTION_LEN)));
    }
    if spec.tags.len() > objects::MAX_TAGS {
        return Err(invalid(format!("more than {} tags", objects::MAX_TAGS)));
    }
    if spec
        .tags
        .iter()
        .any(|(k, v)| k.is_empty() || k.len() > objects::MAX_TAG_KEY_LEN || v.len() > objects::MAX_TAG_VALUE_LEN)
    {
        return Err(invalid(format!(
            "tag keys must be 1..={} bytes and values at most {} bytes",
            objects::MAX_TAG_KEY_LEN,
            objects::MAX_TAG_VALUE_LEN
        )));
    }
    Ok(())
}

/// A random version-4 UUID (key names of [`KeyManager::create_key`]).
fn random_uuid() -> String {
    let mut b: [u8; 16] = envseal_core::random::array();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = hex::encode(b);
    format!("{}-{}-{}-{}-{}", &h[..8], &h[8..12], &h[12..16], &h[16..20], &h[20..])
}

/// A resolved key for key management.
struct Resolved {
    name: String,
    versions: Vec<VersionObject>,
    record: Option<KeyRecord>,
    record_handles: Vec<ObjectHandle>,
}

impl Resolved {
    fn current(&self) -> VersionObject {
        // Resolved keys have at least one version.
        self.versions[self.versions.len() - 1]
    }

    fn state(&self) -> KeyState {
        effective_state(self.record.as_ref(), &self.current())
    }

    /// The record to modify: the stored one, or a fresh one for a key made outside envseal.
    fn record_or_new(&self) -> KeyRecord {
        self.record.clone().unwrap_or_else(|| {
            let mut r = KeyRecord::new(String::new(), Default::default(), 0);
            if self.state() == KeyState::Disabled {
                r.state = StateRecord::Disabled;
            }
            r
        })
    }

    fn ensure_enabled(&self) -> OpResult<()> {
        match self.state() {
            KeyState::Enabled => Ok(()),
            KeyState::PendingDeletion => Err(OpError::Kms(KmsError::KeyPendingDeletion { key: self.name.clone() })),
            _ => Err(OpError::Kms(KmsError::KeyDisabled { key: self.name.clone() })),
        }
    }

    fn ensure_not_pending(&self) -> OpResult<()> {
        if self.state() == KeyState::PendingDeletion {
            return Err(OpError::Kms(KmsError::KeyPendingDeletion { key: self.name.clone() }));
        }
        Ok(())
    }
}

impl Inner {
    /// The key name `key` designates: an alias's target, or `key` itself.
    fn resolve_name(&self, s: &Session, key: &str) -> OpResult<String> {
        if key.starts_with("alias/") {
            return objects::find_alias(s, key)?.map(|a| a.target).ok_or_else(|| not_found(key));
        }
        if !objects::valid_name(key) {
            return Err(not_found(key));
        }
        Ok(key.to_string())
    }

    fn resolve(&self, s: &Session, key: &str) -> OpResult<Resolved> {
        let name = self.resolve_name(s, key)?;
        let versions = objects::find_versions(s, &name)?;
        if versions.is_empty() {
            return Err(not_found(key));
        }
        let (record, record_handles) = objects::read_record(s, &name)?;
        if record.as_ref().is_some_and(|r| r.is_expired(objects::now())) {
            return Err(not_found(key));
        }
        Ok(Resolved { name, versions, record, record_handles })
    }

    /// Why the token refused to use version `version` of `name` (its CKA_ENCRYPT or
    /// CKA_DECRYPT is false), from the key record.
    fn refusal(&self, s: &Session, name: &str, version: u32, what: Use) -> OpError {
        let record = match objects::read_record(s, name) {
            Ok((Some(r), _)) => r,
            _ => return OpError::Kms(KmsError::KeyDisabled { key: name.to_string() }),
        };
        let e = if record.is_expired(objects::now()) {
            KmsError::KeyNotFound { key: name.to_string() }
        } else {
            match (record.state, record.min_decryption_version) {
                (StateRecord::PendingDeletion, _) => KmsError::KeyPendingDeletion { key: name.to_string() },
                (StateRecord::Enabled, Some(min)) if what == Use::Decrypt && version < min => {
                    KmsError::KeyVersionBelowMinimum {
                        key: name.to_string(),
                        version: version.to_string(),
                        min: min.to_string(),
                    }
                }
                _ => KmsError::KeyDisabled { key: name.to_string() },
            }
        };
        OpError::Kms(e)
    }

    /// The version objects of `name`: from the cache when `cached` and fresh enough, else
    /// from the token (and then cached). Returns whether they came from the cache.
    fn versions(&self, s: &Session, name: &str, cached: bool) -> OpResult<(Vec<VersionObject>, bool)> {
        if cached && let Some(v) = self.cache.versions(name) {
            return Ok((v, true));
        }
        let versions = objects::find_versions(s, name)?;
        self.cache.put_versions(name, &versions);
        Ok((versions, false))
    }

    /// Like [`Inner::resolve_name`], through the cache when `cached`.
    fn resolve_name_cached(&self, s: &Session, key: &str, cached: bool) -> OpResult<(String, bool)> {
        if !key.starts_with("alias/") {
            return Ok((self.resolve_name(s, key)?, false));
        }
        if cached && let Some(target) = self.cache.alias(key) {
            return Ok((target, true));
        }
        let target = self.resolve_name(s, key)?;
        self.cache.put_alias(key, &target);
        Ok((target, false))
    }

    /// Wraps `plaintext` under the current version of `key` (README §Blob).
    ///
    /// The first attempt uses cached object handles; if the token then refuses the key (it
    /// was rotated, disabled or destroyed since), the lookup is redone once from the token.
    fn wrap(&self, s: &Session, key: &str, plaintext: &[u8], context: &[u8]) -> OpResult<WrappedKey> {
        let mut cached = true;
        loop {
            let (name, alias_cached) = self.resolve_name_cached(s, key, cached)?;
            let (versions, versions_cached) = self.versions(s, &name, cached)?;
            let retry = cached && (alias_cached || versions_cached);
            cached = false;
            let Some(&current) = versions.last() else {
                if retry {
                    continue;
                }
                return Err(not_found(key));
            };
            if !current.encrypt {
                if retry {
                    continue;
                }
                return Err(self.refusal(s, &name, current.version, Use::Encrypt));
            }
            let header = blob::header(&name, current.version);
            let aad = blob::aad(&header, context);
            // IVs come from the OS CSPRNG: 96 random bits per wrap (NIST SP 800-38D §8.2.2).
            let mut iv: [u8; IV_LEN] = envseal_core::random::array();
            let ciphertext = match s.encrypt(&gcm(&mut iv, &aad)?, current.handle, plaintext) {
                Ok(c) => c,
                Err(e) if retry && stale_handle(&e) => {
                    self.cache.forget(&name);
                    continue;
                }
                Err(e) if rv(&e) == Some(RvError::KeyFunctionNotPermitted) => {
                    return Err(self.refusal(s, &name, current.version, Use::Encrypt));
                }
                Err(e) => return Err(e.into()),
            };
            return Ok(WrappedKey {
                backend: BACKEND.into(),
                key_id: name,
                key_version: current.version.to_string(),
                blob: blob::assemble(&header, &iv, &ciphertext),
            });
        }
    }

    /// Opens a blob: returns the plaintext, key name and version. Cached handles first, and
    /// once more from the token if that fails in any way.
    fn unwrap(&self, s: &Session, wrapped: &WrappedKey, context: &[u8]) -> OpResult<(Zeroizing<Vec<u8>>, String, u32)> {
        let b = blob::parse(&wrapped.blob)?;
        if !wrapped.key_version.is_empty() && objects::parse_version(&wrapped.key_version) != Some(b.version) {
            return Err(OpError::Kms(KmsError::InvalidCiphertext));
        }
        let aad = blob::aad(b.header, context);
        let mut cached = true;
        loop {
            // The entry's key id and version sit outside the blob; they must name what the
            // authenticated blob says (an alias of the same key is fine).
            let mut retry = false;
            if !wrapped.key_id.is_empty() && wrapped.key_id != b.name {
                let same = wrapped.key_id.starts_with("alias/")
                    && match self.resolve_name_cached(s, &wrapped.key_id, cached) {
                        Ok((target, alias_cached)) => {
                            retry |= alias_cached;
                            target == b.name
                        }
                        Err(OpError::Kms(KmsError::KeyNotFound { .. })) => false,
                        Err(e) => return Err(e),
                    };
                if !same {
                    if cached && retry {
                        cached = false;
                        continue;
                    }
                    return Err(OpError::Kms(KmsError::InvalidCiphertext));
                }
            }
            let (versions, versions_cached) = self.versions(s, b.name, cached)?;
            let retry = cached && (retry || versions_cached);
            cached = false;
            let Some(object) = versions.iter().find(|v| v.version == b.version) else {
                if retry {
                    continue;
                }
                if versions.is_empty() {
                    return Err(not_found(b.name));
                }
                return Err(OpError::Kms(KmsError::KeyVersionNotFound {
                    key: b.name.to_string(),
                    version: b.version.to_string(),
                }));
            };
            let mut iv = b.iv;
            match s.decrypt(&gcm(&mut iv, &aad)?, object.handle, b.ciphertext) {
                Ok(plaintext) => return Ok((Zeroizing::new(plaintext), b.name.to_string(), b.version)),
                // A cached handle may be stale (object destroyed, flags changed): look again.
                Err(_) if retry => {
                    self.cache.forget(b.name);
                    continue;
                }
                Err(e) if rv(&e) == Some(RvError::KeyFunctionNotPermitted) => {
                    return Err(self.refusal(s, b.name, b.version, Use::Decrypt));
                }
                Err(e) if rv(&e).is_some_and(gcm_open_failed) => return Err(OpError::Kms(KmsError::InvalidCiphertext)),
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Destroys every key past its deletion date (objects, aliases, records). Best effort:
    /// a key that could not be destroyed stays absent to every operation.
    fn purge_expired(&self, s: &Session) {
        let now = objects::now();
        let Ok(records) = objects::all_records(s) else { return };
        let expired: Vec<&String> = records.iter().filter(|(_, r)| r.is_expired(now)).map(|(n, _)| n).collect();
        if expired.is_empty() {
            return;
        }
        let aliases = objects::all_aliases(s).unwrap_or_default();
        for name in expired {
            for v in objects::find_versions(s, name).unwrap_or_default() {
                let _ = s.destroy_object(v.handle);
            }
            for a in aliases.iter().filter(|a| &a.target == name) {
                for &h in &a.handles {
                    let _ = s.destroy_object(h);
                }
            }
            if let Ok((_, handles)) = objects::read_record(s, name) {
                for h in handles {
                    let _ = s.destroy_object(h);
                }
            }
        }
    }

    fn aliases_of(&self, s: &Session, name: &str) -> OpResult<Vec<String>> {
        Ok(objects::all_aliases(s)?.into_iter().filter(|a| a.target == name).map(|a| a.alias).collect())
    }

    fn describe(&self, s: &Session, key: &str) -> OpResult<KeyMetadata> {
        let r = self.resolve(s, key)?;
        let aliases = self.aliases_of(s, &r.name)?;
        Ok(metadata(&r.name, &r.versions, r.record.as_ref(), aliases))
    }

    fn create(&self, s: &Session, name: &str, spec: &KeySpec) -> OpResult<KeyMetadata> {
        if !objects::valid_name(name) {
            return Err(invalid(
                "key names are 1..=255 bytes without control characters and do not start with `alias/`",
            ));
        }
        validate_spec(spec)?;
        if !objects::find_versions(s, name)?.is_empty() || objects::read_record(s, name)?.0.is_some() {
            return Err(OpError::Kms(KmsError::AlreadyExists { what: format!("key {name}") }));
        }
        let now = objects::now();
        objects::generate_version(s, name, 1, true, true)?;
        let mut record = KeyRecord::new(spec.description.clone(), spec.tags.clone(), now);
        record.versions.push(VersionRecord { version: 1, created: now });
        objects::write_record(s, name, &mut record, &[])?;
        self.describe(s, name)
    }

    /// Moves a key to `record`'s state, keeping CKA_ENCRYPT / CKA_DECRYPT in step: every
    /// version may decrypt when the key is enabled and the version is not below the minimum;
    /// only the current version may encrypt. Restrictions are applied before the record is
    /// written and relaxations after, so an interrupted change errs on the refusing side.
    fn apply(&self, s: &Session, r: &Resolved, mut record: KeyRecord, operation: &'static str) -> OpResult<()> {
        let enabled = record.state == StateRecord::Enabled;
        let current = r.current().version;
        let min = record.min_decryption_version;
        let want = |v: &VersionObject| {
            let encrypt = enabled && v.version == current;
            let decrypt = enabled && min.is_none_or(|m| v.version >= m);
            (encrypt, decrypt)
        };
        let mut after_restrict = Vec::with_capacity(r.versions.len());
        for v in &r.versions {
            let (we, wd) = want(v);
            let (e, d) = (v.encrypt && we, v.decrypt && wd);
            if (e, d) != (v.encrypt, v.decrypt) {
                objects::set_flags(s, v.handle, e, d, operation)?;
            }
            after_restrict.push((e, d));
        }
        objects::write_record(s, &r.name, &mut record, &r.record_handles)?;
        for (v, now) in r.versions.iter().zip(after_restrict) {
            let wanted = want(v);
            if wanted != now {
                objects::set_flags(s, v.handle, wanted.0, wanted.1, operation)?;
            }
        }
        Ok(())
    }

    fn rotate(&self, s: &Session, key: &str) -> OpResult<KeyMetadata> {
        let r = self.resolve(s, key)?;
        r.ensure_enabled()?;
        let old = r.current();
        let next = old.version.checked_add(1).ok_or_else(|| invalid("the key has too many versions"))?;
        let now = objects::now();
        objects::generate_version(s, &r.name, next, true, true)?;
        // Old versions only decrypt. A token that does not let CKA_ENCRYPT change still
        // rotates: envseal always encrypts under the newest version anyway.
        match objects::set_flags(s, old.handle, false, old.decrypt, "rotate_key") {
            Ok(()) | Err(OpError::Kms(KmsError::Unsupported { .. })) => {}
            Err(e) => return Err(e),
        }
        let mut record = r.record_or_new();
        record.versions.push(VersionRecord { version: next, created: now });
        objects::write_record(s, &r.name, &mut record, &r.record_handles)?;
        self.describe(s, &r.name)
    }

    fn set_state(&self, s: &Session, key: &str, state: StateRecord, operation: &'static str) -> OpResult<()> {
        let r = self.resolve(s, key)?;
        r.ensure_not_pending()?;
        let mut record = r.record_or_new();
        record.state = state;
        self.apply(s, &r, record, operation)
    }

    fn schedule_deletion(&self, s: &Session, key: &str, days: u32) -> OpResult<KeyMetadata> {
        let r = self.resolve(s, key)?;
        r.ensure_not_pending()?;
        let mut record = r.record_or_new();
        record.state = StateRecord::PendingDeletion;
        record.deletion_date = Some(objects::now() + u64::from(days) * SECONDS_PER_DAY);
        self.apply(s, &r, record, "schedule_key_deletion")?;
        self.describe(s, &r.name)
    }

    fn cancel_deletion(&self, s: &Session, key: &str) -> OpResult<()> {
        let r = self.resolve(s, key)?;
        if r.state() != KeyState::PendingDeletion {
            return Err(invalid(format!("key {} is not pending deletion", r.name)));
        }
        let mut record = r.record_or_new();
        record.state = StateRecord::Disabled;
        record.deletion_date = None;
        self.apply(s, &r, record, "cancel_key_deletion")
    }

    fn set_min_version(&self, s: &Session, key: &str, version: &str) -> OpResult<()> {
        let r = self.resolve(s, key)?;
        let v = objects::parse_version(version).filter(|v| r.versions.iter().any(|o| o.version == *v)).ok_or_else(
            || OpError::Kms(KmsError::KeyVersionNotFound { key: r.name.clone(), version: version.to_string() }),
        )?;
        r.ensure_not_pending()?;
        let mut record = r.record_or_new();
        record.min_decryption_version = Some(v);
        self.apply(s, &r, record, "set_min_decryption_version")
    }

    fn list(&self, s: &Session) -> OpResult<Vec<KeyMetadata>> {
        let now = objects::now();
        let records = objects::all_records(s)?;
        let aliases = objects::all_aliases(s)?;
        let mut out = Vec::new();
        for (name, versions) in objects::all_versions(s)? {
            let record = records.get(&name);
            if record.is_some_and(|r| r.is_expired(now)) {
                continue;
            }
            let names = aliases.iter().filter(|a| a.target == name).map(|a| a.alias.clone()).collect();
            out.push(metadata(&name, &versions, record, names));
        }
        Ok(out)
    }

    fn create_alias(&self, s: &Session, alias: &str, key: &str) -> OpResult<()> {
        if !objects::valid_alias(alias) {
            return Err(invalid(format!(
                "malformed alias {alias:?}: expected `alias/` then letters, digits, `/`, `_` or `-` (at most {} bytes)",
                objects::MAX_ALIAS_LEN
            )));
        }
        let r = self.resolve(s, key)?;
        if objects::find_alias(s, alias)?.is_some() {
            return Err(OpError::Kms(KmsError::AlreadyExists { what: format!("alias {alias}") }));
        }
        objects::create_alias(s, alias, &r.name)
    }

    fn delete_alias(&self, s: &Session, alias: &str) -> OpResult<()> {
        let a = objects::find_alias(s, alias)?.ok_or_else(|| not_found(alias))?;
        for h in a.handles {
            s.destroy_object(h)?;
        }
        Ok(())
    }

    fn list_aliases(&self, s: &Session) -> OpResult<Vec<Alias>> {
        let now = objects::now();
        let records = objects::all_records(s)?;
        let keys = objects::all_versions(s)?;
        Ok(objects::all_aliases(s)?
            .into_iter()
            .filter(|a| keys.contains_key(&a.target) && !records.get(&a.target).is_some_and(|r| r.is_expired(now)))
            .map(|a| Alias { name: a.alias, key_id: a.target })
            .collect())
    }
}

#[async_trait]
impl Kms for Pkcs11Kms {
    fn backend(&self) -> &str {
        BACKEND
    }

    /// The data key comes from the OS CSPRNG (`envseal_core::random`), like every other
    /// backend's, and is wrapped by CKM_AES_GCM inside the token.
    async fn generate_data_key(&self, key: &str, context: &EncryptionContext) -> Result<GeneratedDataKey, KmsError> {
        let (key, context) = (key.to_string(), context.canonical_bytes());
        let data_key = DataKey::generate();
        self.blocking(move |inner| {
            let wrapped = inner.token.run(|s| inner.wrap(s, &key, data_key.expose_secret(), &context))?;
            Ok(GeneratedDataKey { data_key, wrapped })
        })
        .await
    }

    async fn decrypt(&self, wrapped: &WrappedKey, context: &EncryptionContext) -> Result<Decrypted, KmsError> {
        let (wrapped, context) = (wrapped.clone(), context.canonical_bytes());
        self.blocking(move |inner| {
            let (plaintext, key_id, version) = inner.token.run(|s| inner.unwrap(s, &wrapped, &context))?;
            Ok(Decrypted { plaintext: SecretBytes::from(plaintext), key_id, key_version: version.to_string() })
        })
        .await
    }

    async fn encrypt(&self, key: &str, plaintext: &[u8], context: &EncryptionContext) -> Result<WrappedKey, KmsError> {
        if plaintext.len() > MAX_DIRECT_ENCRYPT {
            return Err(KmsError::PlaintextTooLarge { size: plaintext.len(), limit: MAX_DIRECT_ENCRYPT });
        }
        let (key, context) = (key.to_string(), context.canonical_bytes());
        let plaintext = Zeroizing::new(plaintext.to_vec());
        self.blocking(move |inner| inner.token.run(|s| inner.wrap(s, &key, &plaintext, &context))).await
    }

    /// Decrypts and encrypts again in one blocking call on one session: the plaintext exists
    /// in this process only inside that call, in a zeroizing buffer. (PKCS#11 has no
    /// AES-GCM-to-AES-GCM rewrap inside the token.)
    async fn re_encrypt(
        &self,
        wrapped: &WrappedKey,
        source_context: &EncryptionContext,
        destination_key: &str,
        destination_context: &EncryptionContext,
    ) -> Result<WrappedKey, KmsError> {
        let wrapped = wrapped.clone();
        let (source, destination) = (source_context.canonical_bytes(), destination_context.canonical_bytes());
        let key = destination_key.to_string();
        self.blocking(move |inner| {
            inner.token.run(|s| {
                let (plaintext, _, _) = inner.unwrap(s, &wrapped, &source)?;
                if plaintext.len() > MAX_DIRECT_ENCRYPT {
                    return Err(OpError::Kms(KmsError::PlaintextTooLarge {
                        size: plaintext.len(),
                        limit: MAX_DIRECT_ENCRYPT,
                    }));
                }
                inner.wrap(s, &key, &plaintext, &destination)
            })
        })
        .await
    }

    fn key_manager(&self) -> Option<&dyn KeyManager> {
        Some(self)
    }
}

#[async_trait]
impl KeyManager for Pkcs11Kms {
    /// Creates a key named by a random UUID. `Software` and `Hsm` protection are both
    /// accepted: the key lives in the token either way, and is reported as `Hsm`.
    async fn create_key(&self, spec: &KeySpec) -> Result<KeyMetadata, KmsError> {
        self.create_named_key(&random_uuid(), spec).await
    }

    async fn describe_key(&self, key: &str) -> Result<KeyMetadata, KmsError> {
        let key = key.to_string();
        self.blocking(move |inner| inner.token.run(|s| inner.describe(s, &key))).await
    }

    async fn list_keys(&self) -> Result<Vec<KeyMetadata>, KmsError> {
        self.blocking(move |inner| inner.token.run(|s| inner.list(s))).await
    }

    async fn create_alias(&self, alias: &str, key: &str) -> Result<(), KmsError> {
        let (alias, key) = (alias.to_string(), key.to_string());
        self.admin(move |inner, s| inner.create_alias(s, &alias, &key)).await
    }

    async fn delete_alias(&self, alias: &str) -> Result<(), KmsError> {
        let alias = alias.to_string();
        self.admin(move |inner, s| inner.delete_alias(s, &alias)).await
    }

    async fn list_aliases(&self) -> Result<Vec<Alias>, KmsError> {
        self.blocking(move |inner| inner.token.run(|s| inner.list_aliases(s))).await
    }

    async fn rotate_key(&self, key: &str) -> Result<KeyMetadata, KmsError> {
        let key = key.to_string();
        self.admin(move |inner, s| inner.rotate(s, &key)).await
    }

    async fn enable_key(&self, key: &str) -> Result<(), KmsError> {
        let key = key.to_string();
        self.admin(move |inner, s| inner.set_state(s, &key, StateRecord::Enabled, "enable_key")).await
    }

    async fn disable_key(&self, key: &str) -> Result<(), KmsError> {
        let key = key.to_string();
        self.admin(move |inner, s| inner.set_state(s, &key, StateRecord::Disabled, "disable_key")).await
    }

    async fn schedule_key_deletion(&self, key: &str, pending_days: u32) -> Result<KeyMetadata, KmsError> {
        if !(MIN_DELETION_DAYS..=MAX_DELETION_DAYS).contains(&pending_days) {
            return Err(KmsError::InvalidRequest {
                message: format!(
                    "pending window of {pending_days} days is outside {MIN_DELETION_DAYS}..={MAX_DELETION_DAYS}"
                ),
            });
        }
        let key = key.to_string();
        self.admin(move |inner, s| inner.schedule_deletion(s, &key, pending_days)).await
    }

    async fn cancel_key_deletion(&self, key: &str) -> Result<(), KmsError> {
        let key = key.to_string();
        self.admin(move |inner, s| inner.cancel_deletion(s, &key)).await
    }

    async fn set_min_decryption_version(&self, key: &str, version: &str) -> Result<(), KmsError> {
        let (key, version) = (key.to_string(), version.to_string());
        self.admin(move |inner, s| inner.set_min_version(s, &key, &version)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuid_shape() {
        let u = random_uuid();
        assert_eq!(u.len(), 36);
        assert_eq!(&u[14..15], "4");
        assert!(matches!(&u[19..20], "8" | "9" | "a" | "b"));
        assert!(objects::valid_name(&u));
    }

    #[test]
    fn gcm_failures_are_invalid_ciphertext() {
        assert!(gcm_open_failed(RvError::GeneralError));
        assert!(gcm_open_failed(RvError::UnknownErrorCode(0x35)));
        assert!(!gcm_open_failed(RvError::DeviceError));
        assert!(!gcm_open_failed(RvError::KeyFunctionNotPermitted));
    }

    #[test]
    fn options_debug_is_redacted() {
        let o = Pkcs11Options::new().pin(Pin::new("s3cret-pin")).module_path("/m.so");
        let d = format!("{o:?}");
        assert!(!d.contains("s3cret"), "{d}");
        assert!(d.contains("REDACTED"), "{d}");
    }
}
