//! [`VaultKms`]: the [`Kms`] and [`KeyManager`] implementations over Transit's HTTP API.

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use bytes::Bytes;
use envseal_core::kms::{
    Alias, Decrypted, GeneratedDataKey, KeyManager, KeyMetadata, KeySpec, Kms, MAX_DIRECT_ENCRYPT, ProtectionLevel,
    WrappedKey,
};
use envseal_core::{DataKey, EncryptionContext, KmsError, SecretBytes};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::config::{RetryPolicy, VaultConfig, VaultToken};
use crate::errors::{Failure, classify, server_message};
use crate::keys::{KeyData, TransitKeyInfo};
use crate::names::{MAX_BLOB_LEN, check_key_name, ciphertext_version, normalize_mount, parse_version};
use crate::transport::{HttpTransport, Method, Request, Transport, TransportError};

/// The backend name, as recorded in [`WrappedKey::backend`].
pub const BACKEND: &str = "vault-transit";

/// Key type of the keys [`KeyManager::create_key`] creates.
pub const KEY_TYPE: &str = "aes256-gcm96";

/// Prefix of the names [`KeyManager::create_key`] generates (`envseal-` + 32 hex digits).
pub const GENERATED_NAME_PREFIX: &str = "envseal-";

/// Sent as `type` with every `encrypt`: Transit's encrypt creates a missing key ("upsert")
/// when the token may, and the key type only matters then. No key type has this name, so a
/// missing key is refused ("unknown key type") instead of created, and envseal reports
/// `KeyNotFound`; an existing key ignores the field.
pub(crate) const NO_UPSERT_TYPE: &str = "envseal-no-upsert";

/// Whether a call may be sent again after a failure that may have been processed.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Retry {
    /// Reads and cryptographic calls: running twice is harmless.
    Idempotent,
    /// Rotation: retried only when the server certainly did not act (connection refused,
    /// 429, 503), so a timeout never rotates twice.
    OnlyIfNotProcessed,
}

/// A HashiCorp Vault / OpenBao Transit backend (`vault-transit`).
///
/// Cheap to clone (the HTTP connection pool is shared); `Send + Sync`, usable as
/// `Arc<dyn Kms>`. `Kms::key_manager()` returns itself. `Debug` shows the address, mount and
/// namespace, never the token.
#[derive(Clone)]
pub struct VaultKms {
    inner: Arc<Inner>,
}

struct Inner {
    transport: Box<dyn Transport>,
    addr: String,
    mount: String,
    namespace: Option<String>,
    /// Kept only to scrub it from server messages.
    token: VaultToken,
    retry: RetryPolicy,
}

impl fmt::Debug for VaultKms {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VaultKms")
            .field("addr", &self.inner.addr)
            .field("mount", &self.inner.mount)
            .field("namespace", &self.inner.namespace)
            .finish_non_exhaustive()
    }
}

impl VaultKms {
    /// A backend for `config`. No request is made: a wrong address or token shows at the
    /// first call.
    ///
    /// # Errors
    /// [`KmsError::InvalidRequest`] for an invalid address, mount, namespace or token, or a
    /// CA file that cannot be read or holds no PEM certificate.
    pub fn new(config: VaultConfig) -> Result<Self, KmsError> {
        let transport = HttpTransport::new(&config)?;
        Self::with_transport(config, Box::new(transport))
    }

    /// [`VaultConfig::from_env`], then [`VaultKms::new`].
    ///
    /// # Errors
    /// Those of both.
    pub fn from_env() -> Result<Self, KmsError> {
        Self::new(VaultConfig::from_env()?)
    }

    /// [`VaultConfig::from_uri`], then [`VaultKms::new`]: a backend and the key name the URI
    /// names.
    ///
    /// # Errors
    /// Those of both.
    pub fn from_uri(uri: &str) -> Result<(Self, String), KmsError> {
        let (config, key) = VaultConfig::from_uri(uri)?;
        Ok((Self::new(config)?, key))
    }

    pub(crate) fn with_transport(config: VaultConfig, transport: Box<dyn Transport>) -> Result<Self, KmsError> {
        let mount = normalize_mount(&config.mount)?;
        let retry = RetryPolicy { max_attempts: config.retry.max_attempts.max(1), ..config.retry };
        Ok(Self {
            inner: Arc::new(Inner {
                transport,
                addr: config.addr,
                mount,
                namespace: config.namespace,
                token: config.token,
                retry,
            }),
        })
    }

    /// The Transit mount path.
    pub fn mount(&self) -> &str {
        &self.inner.mount
    }

    /// The server address.
    pub fn addr(&self) -> &str {
        &self.inner.addr
    }

    /// Describes a Transit key with every field Transit reports that envseal reads
    /// (deletion allowed, key type, derivation, minimum versions, ...).
    ///
    /// # Errors
    /// [`KmsError::KeyNotFound`]; [`KmsError::InvalidRequest`] for an invalid name;
    /// transport and permission errors.
    pub async fn read_key(&self, name: &str) -> Result<TransitKeyInfo, KmsError> {
        check_key_name(name)?;
        let data: KeyData = self.call(Method::Get, &format!("keys/{name}"), None, name, Retry::Idempotent).await?;
        data.into_info().ok_or_else(|| unexpected("keys"))
    }

    /// Creates an `aes256-gcm96` key with the given name (KeyManager's `create_key`
    /// generates one).
    ///
    /// Transit's create is silently idempotent, so this reads the key first: an existing
    /// name is [`KmsError::AlreadyExists`] (two concurrent creators of one name can both
    /// succeed; they get the same key). `spec` is checked as in `create_key`.
    ///
    /// # Errors
    /// [`KmsError::AlreadyExists`]; [`KmsError::Unsupported`] for an HSM spec or tags;
    /// [`KmsError::InvalidRequest`] for an invalid name; transport and permission errors.
    pub async fn create_named_key(&self, name: &str, spec: &KeySpec) -> Result<KeyMetadata, KmsError> {
        check_spec(spec)?;
        check_key_name(name)?;
        match self.read_key(name).await {
            Ok(_) => return Err(KmsError::AlreadyExists { what: format!("Transit key {name}") }),
            Err(KmsError::KeyNotFound { .. }) => {}
            Err(e) => return Err(e),
        }
        self.create(name).await
    }

    async fn create(&self, name: &str) -> Result<KeyMetadata, KmsError> {
        let body = json_body(&Body { key_type: Some(KEY_TYPE), ..Body::default() });
        let v: Option<KeyData> =
            self.call(Method::Post, &format!("keys/{name}"), Some(body), name, Retry::Idempotent).await?;
        // OpenBao 2.x answers with the key; older servers answer 204.
        match v {
            Some(data) => Ok(data.into_info().ok_or_else(|| unexpected("keys"))?.to_metadata()),
            None => Ok(self.read_key(name).await?.to_metadata()),
        }
    }

    /// One API call with retries; decodes the JSON `data` of a 2xx answer into `T`
    /// (`Option<_>` accepts 204).
    async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<Bytes>,
        key: &str,
        retry: Retry,
    ) -> Result<T, KmsError> {
        let body =
            self.call_raw(method, path, body, retry).await.map_err(|f| f.into_kms_error(key, &self.inner.mount))?;
        parse_data(&body)
    }

    async fn call_raw(
        &self,
        method: Method,
        path: &str,
        body: Option<Bytes>,
        retry: Retry,
    ) -> Result<Zeroizing<Vec<u8>>, Failure> {
        let request = Request { method, path: format!("{}/{path}", self.inner.mount), body };
        let policy = self.inner.retry;
        let mut attempt = 0;
        loop {
            let failure = match self.inner.transport.send(request.clone()).await {
                Ok(r) if (200..300).contains(&r.status) => return Ok(r.body),
                Ok(r) => classify(r.status, server_message(&r.body, self.inner.token.expose_secret())),
                Err(e) => transport_failure(e, &self.inner.addr),
            };
            attempt += 1;
            let may_retry = failure.retryable()
                && (retry == Retry::Idempotent || failure.certainly_not_processed())
                && attempt < policy.max_attempts;
            if !may_retry {
                return Err(failure);
            }
            tokio::time::sleep(policy.backoff(attempt - 1)).await;
        }
    }

    /// Checks a wrapped key before it is sent: a valid key name, a `vault:vN:` blob, and the
    /// same version in the entry and the blob (the entry is outside every MAC; the blob's
    /// version is what Transit authenticates). Returns the blob as text and its version.
    fn check_wrapped<'w>(&self, wrapped: &'w WrappedKey) -> Result<(&'w str, u32), KmsError> {
        if wrapped.blob.len() > MAX_BLOB_LEN || !crate::names::is_valid_key_name(&wrapped.key_id) {
            return Err(KmsError::InvalidCiphertext);
        }
        let version = ciphertext_version(&wrapped.blob).ok_or(KmsError::InvalidCiphertext)?;
        if parse_version(&wrapped.key_version) != Some(version) {
            return Err(KmsError::InvalidCiphertext);
        }
        // Invariant: ciphertext_version only accepts UTF-8.
        let text = std::str::from_utf8(&wrapped.blob).map_err(|_| KmsError::InvalidCiphertext)?;
        Ok((text, version))
    }

    /// `KeyVersionBelowMinimum` with the key's current minimum (one more read, on this
    /// error path only).
    async fn below_minimum(&self, key: &str, version: u32) -> KmsError {
        let min = match self.read_key(key).await {
            Ok(info) => info.min_decryption_version.to_string(),
            Err(_) => "unknown".to_owned(),
        };
        KmsError::KeyVersionBelowMinimum { key: key.to_owned(), version: version.to_string(), min }
    }

    /// Adds what the caller knows to a version error.
    async fn enrich(&self, e: KmsError, key: &str, version: u32) -> KmsError {
        match e {
            KmsError::KeyVersionBelowMinimum { .. } => self.below_minimum(key, version).await,
            KmsError::KeyVersionNotFound { key, .. } => {
                KmsError::KeyVersionNotFound { key, version: version.to_string() }
            }
            e => e,
        }
    }
}

/// The encryption context as Transit's `associated_data` (README §Encryption context): the
/// base64 of `EncryptionContext::canonical_bytes()` when the context is non-empty; absent
/// when it is empty. Frozen: changing it makes every stored blob undecryptable.
pub fn associated_data(context: &EncryptionContext) -> Option<String> {
    (!context.is_empty()).then(|| B64.encode(context.canonical_bytes()))
}

/// Every request body envseal sends; absent fields are left out (Transit treats `null`
/// differently from absent in places). Borrowed, so plaintext is not copied into it.
#[derive(Default, Serialize)]
struct Body<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    plaintext: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    ciphertext: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    associated_data: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    bits: Option<u32>,
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    key_type: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    min_decryption_version: Option<u32>,
}

/// A JSON request body in a buffer that is zeroized when the last reference is dropped.
fn json_body(value: &impl serde::Serialize) -> Bytes {
    let mut buf = Zeroizing::new(Vec::with_capacity(256));
    // Invariant: serializing our own request types (strings, numbers) to a Vec cannot fail.
    serde_json::to_writer(&mut *buf, value).expect("JSON serialization of a request body");
    Bytes::from_owner(ZeroizingBuf(buf))
}

/// Owner for [`Bytes::from_owner`]: zeroizes the buffer on drop.
struct ZeroizingBuf(Zeroizing<Vec<u8>>);

impl AsRef<[u8]> for ZeroizingBuf {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

#[derive(Deserialize)]
struct Envelope<T> {
    data: Option<T>,
}

/// The `data` of a 2xx answer. An empty body (204) is `null`, which only `Option<_>` accepts.
fn parse_data<T: DeserializeOwned>(body: &[u8]) -> Result<T, KmsError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return serde_json::from_slice(b"null").map_err(|_| unexpected("empty answer"));
    }
    let envelope: Envelope<T> = serde_json::from_slice(body).map_err(|_| unexpected("answer"))?;
    match envelope.data {
        Some(data) => Ok(data),
        None => serde_json::from_slice(b"null").map_err(|_| unexpected("answer without data")),
    }
}

fn unexpected(what: &str) -> KmsError {
    KmsError::Unavailable { message: format!("unexpected {what} from the Transit API"), retryable: false }
}

fn transport_failure(e: TransportError, addr: &str) -> Failure {
    match e {
        TransportError::Connect(m) => Failure::Unavailable {
            message: format!("cannot connect to {addr}: {m}"),
            retryable: true,
            processed: false,
        },
        TransportError::Tls(m) => Failure::Unavailable {
            message: format!("TLS with {addr} failed (set VAULT_CACERT to the server's CA?): {m}"),
            retryable: false,
            processed: false,
        },
        TransportError::Timeout(m) => Failure::Unavailable {
            message: format!("request to {addr} timed out: {m}"),
            retryable: true,
            processed: true,
        },
        TransportError::Other(m) => {
            Failure::Unavailable { message: format!("request to {addr} failed: {m}"), retryable: true, processed: true }
        }
    }
}

fn check_spec(spec: &KeySpec) -> Result<(), KmsError> {
    if spec.protection_level == ProtectionLevel::Hsm {
        return Err(unsupported("create_key with HSM protection"));
    }
    if !spec.tags.is_empty() {
        // Tags drive access policies elsewhere; silently dropping them would be a surprise.
        return Err(unsupported("create_key with tags"));
    }
    Ok(())
}

fn unsupported(operation: &'static str) -> KmsError {
    KmsError::Unsupported { operation, backend: BACKEND.to_owned() }
}

/// Decodes base64 plaintext from a response into a zeroizing buffer (no reallocation).
fn decode_secret(b64: &str) -> Result<Zeroizing<Vec<u8>>, KmsError> {
    let mut out = Zeroizing::new(vec![0u8; b64.len() / 4 * 3 + 3]);
    let n = B64.decode_slice(b64.as_bytes(), &mut out[..]).map_err(|_| unexpected("plaintext encoding"))?;
    out.truncate(n);
    Ok(out)
}

#[derive(Deserialize)]
struct CiphertextData {
    ciphertext: String,
}

#[derive(Deserialize)]
struct PlaintextData {
    #[serde(deserialize_with = "zeroizing_string")]
    plaintext: Zeroizing<String>,
}

#[derive(Deserialize)]
struct DataKeyData {
    ciphertext: String,
    #[serde(deserialize_with = "zeroizing_string")]
    plaintext: Zeroizing<String>,
}

fn zeroizing_string<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Zeroizing<String>, D::Error> {
    String::deserialize(d).map(Zeroizing::new)
}

#[derive(Deserialize)]
struct ListData {
    #[serde(default)]
    keys: Vec<String>,
}

impl VaultKms {
    fn wrapped(&self, key: &str, ciphertext: String) -> Result<WrappedKey, KmsError> {
        let version = ciphertext_version(ciphertext.as_bytes()).ok_or_else(|| unexpected("ciphertext"))?;
        Ok(WrappedKey {
            backend: BACKEND.to_owned(),
            key_id: key.to_owned(),
            key_version: version.to_string(),
            blob: ciphertext.into_bytes(),
        })
    }
}

#[async_trait]
impl Kms for VaultKms {
    fn backend(&self) -> &str {
        BACKEND
    }

    /// `POST {mount}/datakey/plaintext/{key}` with `bits: 256` and the context as
    /// `associated_data`.
    async fn generate_data_key(&self, key: &str, context: &EncryptionContext) -> Result<GeneratedDataKey, KmsError> {
        check_key_name(key)?;
        let ad = associated_data(context);
        let body = json_body(&Body { bits: Some(256), associated_data: ad.as_deref(), ..Body::default() });
        let d: DataKeyData =
            self.call(Method::Post, &format!("datakey/plaintext/{key}"), Some(body), key, Retry::Idempotent).await?;
        let plaintext = SecretBytes::from(decode_secret(&d.plaintext)?);
        let data_key = DataKey::try_from_secret(&plaintext).map_err(|_| unexpected("data key length"))?;
        Ok(GeneratedDataKey { data_key, wrapped: self.wrapped(key, d.ciphertext)? })
    }

    /// `POST {mount}/decrypt/{key_id}` with the context as `associated_data`, after checking
    /// that the blob is a `vault:vN:` ciphertext whose `N` is the entry's version.
    async fn decrypt(&self, wrapped: &WrappedKey, context: &EncryptionContext) -> Result<Decrypted, KmsError> {
        let (ciphertext, version) = self.check_wrapped(wrapped)?;
        let key = wrapped.key_id.as_str();
        let ad = associated_data(context);
        let body = json_body(&Body { ciphertext: Some(ciphertext), associated_data: ad.as_deref(), ..Body::default() });
        let d: PlaintextData =
            match self.call(Method::Post, &format!("decrypt/{key}"), Some(body), key, Retry::Idempotent).await {
                Ok(d) => d,
                Err(e) => return Err(self.enrich(e, key, version).await),
            };
        Ok(Decrypted {
            plaintext: SecretBytes::from(decode_secret(&d.plaintext)?),
            key_id: key.to_owned(),
            key_version: version.to_string(),
        })
    }

    /// `POST {mount}/encrypt/{key}` (at most 6 KiB) with the context as `associated_data`;
    /// never creates a missing key (see the README).
    async fn encrypt(&self, key: &str, plaintext: &[u8], context: &EncryptionContext) -> Result<WrappedKey, KmsError> {
        if plaintext.len() > MAX_DIRECT_ENCRYPT {
            return Err(KmsError::PlaintextTooLarge { size: plaintext.len(), limit: MAX_DIRECT_ENCRYPT });
        }
        check_key_name(key)?;
        let mut b64 = Zeroizing::new(String::with_capacity(plaintext.len().div_ceil(3) * 4));
        B64.encode_string(plaintext, &mut b64);
        let ad = associated_data(context);
        let body = json_body(&Body {
            plaintext: Some(b64.as_str()),
            associated_data: ad.as_deref(),
            key_type: Some(NO_UPSERT_TYPE),
            ..Body::default()
        });
        drop(b64);
        let d: CiphertextData =
            self.call(Method::Post, &format!("encrypt/{key}"), Some(body), key, Retry::Idempotent).await?;
        self.wrapped(key, d.ciphertext)
    }

    /// Server-side `POST {mount}/rewrap/{key}` (the plaintext never leaves Transit) when the
    /// destination key is the source key and both contexts are empty; otherwise decrypt here
    /// and encrypt again. Transit's rewrap takes no `associated_data` (nor a destination key),
    /// so it cannot open a blob bound to a non-empty context, nor change the context or key.
    async fn re_encrypt(
        &self,
        wrapped: &WrappedKey,
        source_context: &EncryptionContext,
        destination_key: &str,
        destination_context: &EncryptionContext,
    ) -> Result<WrappedKey, KmsError> {
        if destination_key == wrapped.key_id && source_context.is_empty() && destination_context.is_empty() {
            let (ciphertext, version) = self.check_wrapped(wrapped)?;
            let key = wrapped.key_id.as_str();
            let body = json_body(&Body { ciphertext: Some(ciphertext), ..Body::default() });
            return match self
                .call::<CiphertextData>(Method::Post, &format!("rewrap/{key}"), Some(body), key, Retry::Idempotent)
                .await
            {
                Ok(d) => self.wrapped(key, d.ciphertext),
                Err(e) => Err(self.enrich(e, key, version).await),
            };
        }
        let d = self.decrypt(wrapped, source_context).await?;
        self.encrypt(destination_key, d.plaintext.expose_secret(), destination_context).await
    }

    fn key_manager(&self) -> Option<&dyn KeyManager> {
        Some(self)
    }
}

#[async_trait]
impl KeyManager for VaultKms {
    /// `POST {mount}/keys/envseal-<32 hex>` with `type: aes256-gcm96`. Transit stores no
    /// description: `spec.description` is dropped. HSM protection and tags are
    /// `Unsupported`.
    async fn create_key(&self, spec: &KeySpec) -> Result<KeyMetadata, KmsError> {
        check_spec(spec)?;
        let name = format!("{GENERATED_NAME_PREFIX}{}", hex::encode(envseal_core::random::array::<16>()));
        self.create(&name).await
    }

    /// `GET {mount}/keys/{key}`.
    async fn describe_key(&self, key: &str) -> Result<KeyMetadata, KmsError> {
        Ok(self.read_key(key).await?.to_metadata())
    }

    /// `LIST {mount}/keys`, then one `GET` per key (keys deleted in between are skipped).
    async fn list_keys(&self) -> Result<Vec<KeyMetadata>, KmsError> {
        let names = match self.call::<ListData>(Method::List, "keys", None, "", Retry::Idempotent).await {
            Ok(l) => l.keys,
            // Transit answers 404 when there are no keys.
            Err(KmsError::KeyNotFound { .. }) => Vec::new(),
            Err(e) => return Err(e),
        };
        let mut out = Vec::with_capacity(names.len());
        for name in names {
            if !crate::names::is_valid_key_name(&name) {
                continue;
            }
            match self.read_key(&name).await {
                Ok(info) => out.push(info.to_metadata()),
                Err(KmsError::KeyNotFound { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }

    /// Transit has no aliases: `Unsupported`.
    async fn create_alias(&self, _alias: &str, _key: &str) -> Result<(), KmsError> {
        Err(unsupported("create_alias"))
    }

    /// Transit has no aliases: `Unsupported`.
    async fn delete_alias(&self, _alias: &str) -> Result<(), KmsError> {
        Err(unsupported("delete_alias"))
    }

    /// Transit has no aliases: `Unsupported`.
    async fn list_aliases(&self) -> Result<Vec<Alias>, KmsError> {
        Err(unsupported("list_aliases"))
    }

    /// `POST {mount}/keys/{key}/rotate`; retried only when the server certainly did not act.
    async fn rotate_key(&self, key: &str) -> Result<KeyMetadata, KmsError> {
        check_key_name(key)?;
        let v: Option<KeyData> =
            self.call(Method::Post, &format!("keys/{key}/rotate"), None, key, Retry::OnlyIfNotProcessed).await?;
        match v.and_then(KeyData::into_info) {
            Some(info) => Ok(info.to_metadata()),
            None => self.describe_key(key).await,
        }
    }

    /// Transit keys have no enabled/disabled state: `Unsupported`.
    async fn enable_key(&self, _key: &str) -> Result<(), KmsError> {
        Err(unsupported("enable_key"))
    }

    /// Transit keys have no enabled/disabled state: `Unsupported`.
    async fn disable_key(&self, _key: &str) -> Result<(), KmsError> {
        Err(unsupported("disable_key"))
    }

    /// Transit deletes at once (`DELETE`, after `deletion_allowed`), it cannot schedule:
    /// `Unsupported`.
    async fn schedule_key_deletion(&self, _key: &str, _pending_days: u32) -> Result<KeyMetadata, KmsError> {
        Err(unsupported("schedule_key_deletion"))
    }

    /// Transit cannot schedule deletion: `Unsupported`.
    async fn cancel_key_deletion(&self, _key: &str) -> Result<(), KmsError> {
        Err(unsupported("cancel_key_deletion"))
    }

    /// `POST {mount}/keys/{key}/config` with `min_decryption_version`. The version must be
    /// canonical decimal from 1 and not above the latest (else `KeyVersionNotFound`).
    /// Transit keeps older versions archived, so the minimum can be lowered again.
    async fn set_min_decryption_version(&self, key: &str, version: &str) -> Result<(), KmsError> {
        check_key_name(key)?;
        let not_found = || KmsError::KeyVersionNotFound { key: key.to_owned(), version: version.to_owned() };
        let n = parse_version(version).ok_or_else(not_found)?;
        let body = json_body(&Body { min_decryption_version: Some(n), ..Body::default() });
        match self
            .call::<Option<serde_json::Value>>(
                Method::Post,
                &format!("keys/{key}/config"),
                Some(body),
                key,
                Retry::Idempotent,
            )
            .await
        {
            Ok(_) => Ok(()),
            Err(KmsError::KeyVersionNotFound { .. }) => Err(not_found()),
            Err(e) => Err(e),
        }
    }
}
