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
use envseal_core::retry::RetryPolicy;
use envseal_core::{DataKey, EncryptionContext, KmsError};
use envseal_http::client::{ClientOptions, is_loopback};
use envseal_http::secret::{decode_secret, json_body, zeroizing_string};
use envseal_http::{Failure, HttpTransport, Idempotence, Method, Request, Transport, send_with_retries};
use reqwest::Url;
use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::config::{VaultConfig, VaultToken};
use crate::error::{ApiError, NO_UPSERT_TYPE, classify, invalid, server_message};
use crate::keys::{KeyData, TransitKeyInfo};
use crate::names::{MAX_BLOB_LEN, check_key_name, ciphertext_version, normalize_mount, parse_version};

/// The backend name, as recorded in [`WrappedKey::backend`].
pub const BACKEND: &str = "vault-transit";

/// Key type of the keys [`KeyManager::create_key`] creates.
pub const KEY_TYPE: &str = "aes256-gcm96";

/// Prefix of the names [`KeyManager::create_key`] generates (`envseal-` + 32 hex digits).
pub const GENERATED_NAME_PREFIX: &str = "envseal-";

/// Largest response body read (Transit answers are a few KB; a LIST of many keys more).
const MAX_RESPONSE: usize = 8 << 20;

/// Added to TLS failures: the usual cause is a server certificate from a private CA.
const TLS_HINT: &str = " (set VAULT_CACERT to the server's CA?)";

/// HTTP method of a Transit call. `List` is Vault's `LIST`, sent as `GET ...?list=true`
/// (the documented equivalent, friendlier to proxies).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Call {
    Get,
    List,
    Post,
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
        let transport = http_transport(&config)?;
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
        Ok(Self {
            inner: Arc::new(Inner {
                transport,
                addr: config.addr,
                mount,
                namespace: config.namespace,
                token: config.token,
                retry: config.retry,
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
        let data: KeyData = self.call(Call::Get, &format!("keys/{name}"), None, name, Idempotence::Idempotent).await?;
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
            self.call(Call::Post, &format!("keys/{name}"), Some(body), name, Idempotence::Idempotent).await?;
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
        call: Call,
        path: &str,
        body: Option<Bytes>,
        key: &str,
        idempotence: Idempotence,
    ) -> Result<T, KmsError> {
        let body = self
            .call_raw(call, path, body, idempotence)
            .await
            .map_err(|f| f.into_kms_error(&self.inner.addr, TLS_HINT, |e| e.into_kms_error(key, &self.inner.mount)))?;
        parse_data(&body)
    }

    async fn call_raw(
        &self,
        call: Call,
        path: &str,
        body: Option<Bytes>,
        idempotence: Idempotence,
    ) -> Result<Zeroizing<Vec<u8>>, Failure<ApiError>> {
        let mount = &self.inner.mount;
        let (method, target) = match call {
            Call::Get => (Method::GET, format!("{mount}/{path}")),
            Call::List => (Method::GET, format!("{mount}/{path}?list=true")),
            Call::Post => (Method::POST, format!("{mount}/{path}")),
        };
        let mut request = Request::new(method, target);
        if let Some(body) = body {
            request.headers.push((CONTENT_TYPE, HeaderValue::from_static("application/json")));
            request.body = Some(body);
        }
        send_with_retries(&self.inner.retry, idempotence, || async {
            let r = self.inner.transport.send(request.clone()).await?;
            if r.is_success() {
                return Ok(r.body);
            }
            Err(Failure::api(classify(r.status, server_message(&r.body, self.inner.token.expose_secret())), &r))
        })
        .await
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

/// The real transport for `config`: reqwest with rustls, the token and namespace as default
/// headers (the token marked sensitive). Redirects are not followed (the token header would
/// follow them to any host); the CA file, when given, replaces the platform's roots; loopback
/// servers are reached without any proxy from the environment.
fn http_transport(config: &VaultConfig) -> Result<HttpTransport, KmsError> {
    let url = Url::parse(&config.addr).map_err(|e| invalid(format!("invalid Vault address {:?}: {e}", config.addr)))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(invalid(format!("Vault address {:?} must be http:// or https://HOST[:PORT]", config.addr)));
    }
    if !url.username().is_empty() || url.password().is_some() || url.query().is_some() || url.fragment().is_some() {
        return Err(invalid("the Vault address must not contain user info, a query or a fragment"));
    }
    if config.token.is_empty() {
        return Err(invalid("the Vault token is empty"));
    }
    let mut token = HeaderValue::from_str(config.token.expose_secret())
        .map_err(|_| invalid("the Vault token contains characters not allowed in an HTTP header"))?;
    token.set_sensitive(true);
    let mut headers = HeaderMap::new();
    headers.insert(HeaderName::from_static("x-vault-token"), token);
    // Vault's own clients send it; servers may require it against SSRF.
    headers.insert(HeaderName::from_static("x-vault-request"), HeaderValue::from_static("true"));
    if let Some(ns) = config.namespace.as_deref().filter(|n| !n.is_empty()) {
        let v = HeaderValue::from_str(ns).map_err(|_| invalid(format!("invalid Vault namespace {ns:?}")))?;
        headers.insert(HeaderName::from_static("x-vault-namespace"), v);
    }
    let client = ClientOptions::new(config.timeout, concat!("envseal-kms-vault/", env!("CARGO_PKG_VERSION")))
        .no_proxy(is_loopback(url.host_str().unwrap_or_default()))
        .ca_file(config.ca_cert.as_deref())
        .default_headers(headers)
        .build()?;
    let base = format!("{}/v1/", config.addr.trim_end_matches('/'));
    Ok(HttpTransport::new(client, base, MAX_RESPONSE))
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

/// A Transit answer: what a call returns is in `data` (the other members, such as `request_id`
/// and `lease_duration`, are not read).
#[derive(Deserialize)]
struct ApiResponse<T> {
    data: Option<T>,
}

/// The `data` of a 2xx answer. An empty body (204) is `null`, which only `Option<_>` accepts.
fn parse_data<T: DeserializeOwned>(body: &[u8]) -> Result<T, KmsError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return serde_json::from_slice(b"null").map_err(|_| unexpected("empty answer"));
    }
    let response: ApiResponse<T> = serde_json::from_slice(body).map_err(|_| unexpected("answer"))?;
    match response.data {
        Some(data) => Ok(data),
        None => serde_json::from_slice(b"null").map_err(|_| unexpected("answer without data")),
    }
}

fn unexpected(what: &str) -> KmsError {
    KmsError::Unavailable { message: format!("unexpected {what} from the Transit API"), retryable: false }
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
        let d: DataKeyData = self
            .call(Call::Post, &format!("datakey/plaintext/{key}"), Some(body), key, Idempotence::Idempotent)
            .await?;
        let plaintext = decode_secret(&d.plaintext).ok_or_else(|| unexpected("plaintext encoding"))?;
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
            match self.call(Call::Post, &format!("decrypt/{key}"), Some(body), key, Idempotence::Idempotent).await {
                Ok(d) => d,
                Err(e) => return Err(self.enrich(e, key, version).await),
            };
        Ok(Decrypted {
            plaintext: decode_secret(&d.plaintext).ok_or_else(|| unexpected("plaintext encoding"))?,
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
            self.call(Call::Post, &format!("encrypt/{key}"), Some(body), key, Idempotence::Idempotent).await?;
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
                .call::<CiphertextData>(Call::Post, &format!("rewrap/{key}"), Some(body), key, Idempotence::Idempotent)
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
        let names = match self.call::<ListData>(Call::List, "keys", None, "", Idempotence::Idempotent).await {
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
            self.call(Call::Post, &format!("keys/{key}/rotate"), None, key, Idempotence::NotIdempotent).await?;
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
                Call::Post,
                &format!("keys/{key}/config"),
                Some(body),
                key,
                Idempotence::Idempotent,
            )
            .await
        {
            Ok(_) => Ok(()),
            Err(KmsError::KeyVersionNotFound { .. }) => Err(not_found()),
            Err(e) => Err(e),
        }
    }
}
