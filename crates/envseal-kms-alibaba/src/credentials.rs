//! Alibaba Cloud credentials: AccessKey pairs, STS tokens, and the ECS instance RAM role, found
//! in the order the Alibaba Cloud SDKs and CLI use (docs/backends/alibaba-kms.md §Credentials):
//!
//! 1. `ALIBABA_CLOUD_ACCESS_KEY_ID` / `ALIBABA_CLOUD_ACCESS_KEY_SECRET`
//!    (+ `ALIBABA_CLOUD_SECURITY_TOKEN`);
//! 2. the Alibaba Cloud CLI's `~/.aliyun/config.json` (profile `ALIBABA_CLOUD_PROFILE`, else the
//!    file's `current`; modes `AK`, `StsToken`, `EcsRamRole`), unless
//!    `ALIBABA_CLOUD_CLI_PROFILE_DISABLED=true`;
//! 3. the credentials file `ALIBABA_CLOUD_CREDENTIALS_FILE`, else `~/.alibabacloud/credentials`
//!    (Go, Java, Node SDKs), else `~/.alibabacloud/credentials.ini` (Python SDK): section
//!    `ALIBABA_CLOUD_PROFILE`, else `default`; types `access_key` and `ecs_ram_role`;
//! 4. the ECS instance RAM role from the metadata service, unless
//!    `ALIBABA_CLOUD_ECS_METADATA_DISABLED=true` (role `ALIBABA_CLOUD_ECS_METADATA`, else the
//!    one the instance reports; hardened mode always tried first, required with
//!    `ALIBABA_CLOUD_IMDSV1_DISABLED=true`).
//!
//! Secrets live in zeroizing types that print as `[REDACTED]`; no error message holds one.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use envseal_core::KmsError;
use envseal_http::TransportError;
use envseal_http::client::{ClientOptions, error_chain};
use envseal_http::transport::read_body;
use serde::Deserialize;
use zeroize::Zeroizing;

use crate::time::parse_utc;

/// The ECS metadata service (link-local to every ECS instance; plain HTTP by design).
pub const DEFAULT_METADATA_ENDPOINT: &str = "http://100.100.100.200";

/// Lifetime asked for a hardened-mode metadata token (6 h, as the SDKs ask).
pub const METADATA_TOKEN_TTL_SECONDS: u32 = 21_600;

/// Share of a temporary credential's lifetime after which it is refreshed (80%).
pub const REFRESH_FRACTION: f64 = 0.8;

const TOKEN_PATH: &str = "/latest/api/token";
const ROLE_PATH: &str = "/latest/meta-data/ram/security-credentials/";
const TOKEN_TTL_HEADER: &str = "X-aliyun-ecs-metadata-token-ttl-seconds";
const TOKEN_HEADER: &str = "X-aliyun-ecs-metadata-token";
/// Largest metadata answer read.
const MAX_METADATA_BODY: usize = 64 * 1024;

/// An AccessKey secret.
///
/// Zeroized on drop, not `Clone`, printed as `AccessKeySecret([REDACTED])`. It only ever
/// leaves this crate as an HMAC key.
pub struct AccessKeySecret(Zeroizing<String>);

impl AccessKeySecret {
    /// Takes ownership of a secret.
    pub fn new(secret: impl Into<String>) -> Self {
        Self(Zeroizing::new(secret.into()))
    }

    /// The secret. The only way in.
    pub fn expose_secret(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for AccessKeySecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AccessKeySecret([REDACTED])")
    }
}

/// An STS security token (temporary credentials, ECS role credentials).
///
/// Zeroized on drop, not `Clone`, printed as `SecurityToken([REDACTED])`. Sent only as
/// `x-acs-security-token` (V3) or the `SecurityToken` parameter (V2).
pub struct SecurityToken(Zeroizing<String>);

impl SecurityToken {
    /// Takes ownership of a token.
    pub fn new(token: impl Into<String>) -> Self {
        Self(Zeroizing::new(token.into()))
    }

    /// The token. The only way in.
    pub fn expose_secret(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for SecurityToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecurityToken([REDACTED])")
    }
}

/// An AccessKey pair, with an STS token for temporary credentials.
///
/// `Debug` shows the AccessKey id (not secret: it is sent in every request) and whether a
/// token is present, never the secret or the token.
pub struct Credentials {
    access_key_id: String,
    access_key_secret: AccessKeySecret,
    security_token: Option<SecurityToken>,
    expiration: Option<SystemTime>,
}

impl Credentials {
    /// Long-term credentials: an AccessKey id and secret.
    pub fn new(access_key_id: impl Into<String>, access_key_secret: AccessKeySecret) -> Self {
        Self { access_key_id: access_key_id.into(), access_key_secret, security_token: None, expiration: None }
    }

    /// Adds an STS security token (temporary credentials).
    #[must_use]
    pub fn with_security_token(mut self, token: SecurityToken) -> Self {
        self.security_token = Some(token);
        self
    }

    /// Records when temporary credentials expire.
    #[must_use]
    pub fn with_expiration(mut self, expiration: SystemTime) -> Self {
        self.expiration = Some(expiration);
        self
    }

    /// The AccessKey id.
    pub fn access_key_id(&self) -> &str {
        &self.access_key_id
    }

    /// The AccessKey secret.
    pub fn access_key_secret(&self) -> &AccessKeySecret {
        &self.access_key_secret
    }

    /// The STS token, for temporary credentials.
    pub fn security_token(&self) -> Option<&SecurityToken> {
        self.security_token.as_ref()
    }

    /// When temporary credentials expire, if known.
    pub fn expiration(&self) -> Option<SystemTime> {
        self.expiration
    }

    fn check(&self, origin: &str) -> Result<(), KmsError> {
        let header_safe = |s: &str| s.bytes().all(|b| b.is_ascii_graphic());
        if self.access_key_id.is_empty() || self.access_key_secret.expose_secret().is_empty() {
            return Err(invalid(format!("{origin}: the AccessKey id or secret is empty")));
        }
        if !header_safe(&self.access_key_id)
            || !header_safe(self.access_key_secret.expose_secret())
            || self
                .security_token
                .as_ref()
                .is_some_and(|t| t.expose_secret().is_empty() || !header_safe(t.expose_secret()))
        {
            return Err(invalid(format!(
                "{origin}: the AccessKey id, secret or security token is empty or has characters other than \
                 printable ASCII"
            )));
        }
        Ok(())
    }
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("access_key_id", &self.access_key_id)
            .field("access_key_secret", &self.access_key_secret)
            .field("security_token", &self.security_token)
            .field("expiration", &self.expiration)
            .finish()
    }
}

/// How the ECS instance RAM role's credentials are fetched.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct EcsRamRoleConfig {
    /// The role; `None` asks the metadata service which role the instance has.
    pub role_name: Option<String>,
    /// Base URL of the metadata service (default [`DEFAULT_METADATA_ENDPOINT`]; tests point it
    /// at a local server).
    pub metadata_endpoint: String,
    /// Refuse the plain (IMDSv1) mode: fail unless a hardened-mode token is obtained.
    pub disable_imds_v1: bool,
    /// Timeout of each metadata request (connection included).
    pub timeout: Duration,
}

impl Default for EcsRamRoleConfig {
    fn default() -> Self {
        Self {
            role_name: None,
            metadata_endpoint: DEFAULT_METADATA_ENDPOINT.to_owned(),
            disable_imds_v1: false,
            timeout: Duration::from_secs(1),
        }
    }
}

impl EcsRamRoleConfig {
    /// Sets the role name.
    #[must_use]
    pub fn with_role_name(mut self, role: impl Into<String>) -> Self {
        self.role_name = Some(role.into());
        self
    }

    /// Sets the metadata service's base URL (`http://HOST[:PORT]`).
    #[must_use]
    pub fn with_metadata_endpoint(mut self, endpoint: impl Into<String>) -> Self {
        self.metadata_endpoint = endpoint.into();
        self
    }
}

/// Where a client's credentials come from.
#[derive(Debug)]
#[non_exhaustive]
pub enum CredentialSource {
    /// Fixed credentials (AccessKey pair, or STS credentials until they expire).
    Static(Credentials),
    /// The ECS instance RAM role, fetched from the metadata service and refreshed at
    /// [`REFRESH_FRACTION`] of their lifetime.
    EcsRamRole(EcsRamRoleConfig),
}

impl CredentialSource {
    /// The credential chain of the Alibaba Cloud SDKs; the first source that is configured
    /// wins: `ALIBABA_CLOUD_ACCESS_KEY_ID` / `_SECRET` (+ `ALIBABA_CLOUD_SECURITY_TOKEN`), the
    /// CLI's `~/.aliyun/config.json`, the credentials file (`ALIBABA_CLOUD_CREDENTIALS_FILE`,
    /// `~/.alibabacloud/credentials`, `~/.alibabacloud/credentials.ini`), then the ECS
    /// instance RAM role (docs/backends/alibaba-kms.md §Credentials has the details). The ECS
    /// role is the last resort; nothing is fetched until the first request.
    ///
    /// # Errors
    /// [`KmsError::InvalidRequest`] for a half-set pair of variables, an unreadable or
    /// malformed file, a profile of a mode envseal does not support (`RamRoleArn`, `OIDC`,
    /// ...), or no source at all when the ECS role is disabled. Messages name variables,
    /// files and profiles, never a secret.
    pub fn from_env() -> Result<Self, KmsError> {
        Self::from_lookup(&|name| std::env::var(name).ok())
    }

    /// A short description of the source, for messages (never a secret).
    pub fn describe(&self) -> String {
        match self {
            CredentialSource::Static(c) => format!("AccessKey {}", c.access_key_id),
            CredentialSource::EcsRamRole(c) => format!(
                "ECS RAM role {} via {}",
                c.role_name.as_deref().unwrap_or("(reported by the instance)"),
                c.metadata_endpoint
            ),
        }
    }

    pub(crate) fn from_lookup(env: &dyn Fn(&str) -> Option<String>) -> Result<Self, KmsError> {
        let get = |name: &str| env(name).filter(|v| !v.is_empty());
        let flag = |name: &str| get(name).is_some_and(|v| v.eq_ignore_ascii_case("true"));

        // 1. Environment.
        let id = get("ALIBABA_CLOUD_ACCESS_KEY_ID");
        let secret = get("ALIBABA_CLOUD_ACCESS_KEY_SECRET").map(AccessKeySecret::new);
        match (id, secret) {
            (Some(id), Some(secret)) => {
                let mut c = Credentials::new(id, secret);
                if let Some(token) = get("ALIBABA_CLOUD_SECURITY_TOKEN") {
                    c = c.with_security_token(SecurityToken::new(token));
                }
                c.check("ALIBABA_CLOUD_ACCESS_KEY_ID/SECRET")?;
                return Ok(CredentialSource::Static(c));
            }
            (Some(_), None) | (None, Some(_)) => {
                return Err(invalid(
                    "only one of ALIBABA_CLOUD_ACCESS_KEY_ID and ALIBABA_CLOUD_ACCESS_KEY_SECRET is set: set both or \
                     neither",
                ));
            }
            (None, None) => {}
        }

        let home = get("HOME").or_else(|| get("USERPROFILE")).map(PathBuf::from);
        let profile = get("ALIBABA_CLOUD_PROFILE");
        let ecs = |role: Option<String>| {
            let mut c = EcsRamRoleConfig { role_name: role, ..EcsRamRoleConfig::default() };
            if let Some(e) = get("ENVSEAL_ALIBABA_ECS_METADATA_ENDPOINT") {
                c.metadata_endpoint = e;
            }
            c.disable_imds_v1 = flag("ALIBABA_CLOUD_IMDSV1_DISABLED");
            c
        };

        // 2. The CLI's config.json.
        if !flag("ALIBABA_CLOUD_CLI_PROFILE_DISABLED")
            && let Some(home) = &home
        {
            let path = home.join(".aliyun").join("config.json");
            if let Some(found) = cli_profile(&path, profile.as_deref(), &ecs)? {
                return Ok(found);
            }
        }

        // 3. The credentials file.
        let explicit = get("ALIBABA_CLOUD_CREDENTIALS_FILE").map(PathBuf::from);
        let candidates: Vec<PathBuf> = match (&explicit, &home) {
            (Some(p), _) => vec![p.clone()],
            (None, Some(h)) => {
                vec![h.join(".alibabacloud").join("credentials"), h.join(".alibabacloud").join("credentials.ini")]
            }
            (None, None) => Vec::new(),
        };
        for path in candidates {
            if !path.is_file() {
                if explicit.is_some() {
                    return Err(invalid(format!(
                        "ALIBABA_CLOUD_CREDENTIALS_FILE names {}, which is not a readable file",
                        path.display()
                    )));
                }
                continue;
            }
            let section = profile.as_deref().unwrap_or("default");
            if let Some(found) = ini_profile(&path, section, &ecs)? {
                return Ok(found);
            }
        }

        // 4. The ECS instance RAM role.
        if flag("ALIBABA_CLOUD_ECS_METADATA_DISABLED") {
            return Err(invalid(
                "no Alibaba Cloud credentials: set ALIBABA_CLOUD_ACCESS_KEY_ID and ALIBABA_CLOUD_ACCESS_KEY_SECRET, \
                 configure a profile (~/.aliyun/config.json or ~/.alibabacloud/credentials), or run on ECS with a RAM \
                 role (ALIBABA_CLOUD_ECS_METADATA_DISABLED=true turns that off)",
            ));
        }
        Ok(CredentialSource::EcsRamRole(ecs(get("ALIBABA_CLOUD_ECS_METADATA"))))
    }
}

pub(crate) fn invalid(message: impl Into<String>) -> KmsError {
    KmsError::InvalidRequest { message: message.into() }
}

/// Reads a file into a zeroizing buffer (it may hold secrets).
fn read_secret_file(path: &Path) -> Result<Zeroizing<String>, KmsError> {
    let bytes = Zeroizing::new(
        std::fs::read(path).map_err(|e| invalid(format!("cannot read {}: {}", path.display(), e.kind())))?,
    );
    match std::str::from_utf8(&bytes) {
        Ok(s) => Ok(Zeroizing::new(s.to_owned())),
        Err(_) => Err(invalid(format!("{} is not UTF-8", path.display()))),
    }
}

/// An optional secret string, straight into a zeroizing buffer.
fn secret_opt<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Zeroizing<String>>, D::Error> {
    Option::<String>::deserialize(d).map(|o| o.map(Zeroizing::new))
}

#[derive(Deserialize)]
struct CliConfig {
    #[serde(default)]
    current: Option<String>,
    #[serde(default)]
    profiles: Vec<CliProfile>,
}

#[derive(Deserialize)]
struct CliProfile {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    mode: Option<String>,
    #[serde(default)]
    access_key_id: Option<String>,
    #[serde(default, deserialize_with = "secret_opt")]
    access_key_secret: Option<Zeroizing<String>>,
    #[serde(default, deserialize_with = "secret_opt")]
    sts_token: Option<Zeroizing<String>>,
    #[serde(default)]
    ram_role_name: Option<String>,
}

/// The profile of the CLI's `config.json`, `None` when the file or the profile is absent (the
/// SDKs then go on down the chain).
fn cli_profile(
    path: &Path,
    profile: Option<&str>,
    ecs: &dyn Fn(Option<String>) -> EcsRamRoleConfig,
) -> Result<Option<CredentialSource>, KmsError> {
    if !path.is_file() {
        return Ok(None);
    }
    let text = read_secret_file(path)?;
    let config: CliConfig = serde_json::from_str(&text)
        .map_err(|_| invalid(format!("{} is not a valid Alibaba Cloud CLI configuration (JSON)", path.display())))?;
    let Some(name) = profile.map(str::to_owned).or(config.current).filter(|n| !n.is_empty()) else {
        return Ok(None);
    };
    let Some(p) = config.profiles.into_iter().find(|p| p.name.as_deref() == Some(name.as_str())) else {
        return Ok(None);
    };
    let origin = format!("profile {name:?} of {}", path.display());
    let mode = p.mode.unwrap_or_default();
    let source = match mode.as_str() {
        "AK" | "StsToken" => {
            let (Some(id), Some(secret)) = (p.access_key_id, p.access_key_secret) else {
                return Err(invalid(format!("{origin}: access_key_id or access_key_secret is missing")));
            };
            let mut c = Credentials::new(id, AccessKeySecret(secret));
            if mode == "StsToken" {
                let token = p.sts_token.ok_or_else(|| invalid(format!("{origin}: mode StsToken without sts_token")))?;
                c = c.with_security_token(SecurityToken(token));
            }
            c.check(&origin)?;
            CredentialSource::Static(c)
        }
        "EcsRamRole" => CredentialSource::EcsRamRole(ecs(p.ram_role_name.filter(|r| !r.is_empty()))),
        other => {
            return Err(invalid(format!(
                "{origin}: mode {other:?} is not supported by envseal (supported: AK, StsToken, EcsRamRole); use \
                 ALIBABA_CLOUD_ACCESS_KEY_ID/SECRET/SECURITY_TOKEN with credentials obtained by the CLI, or select \
                 another profile with ALIBABA_CLOUD_PROFILE"
            )));
        }
    };
    Ok(Some(source))
}

/// The `[section]` of an INI credentials file, `None` when absent.
fn ini_profile(
    path: &Path,
    section: &str,
    ecs: &dyn Fn(Option<String>) -> EcsRamRoleConfig,
) -> Result<Option<CredentialSource>, KmsError> {
    let text = read_secret_file(path)?;
    let Some(mut entries) = ini_section(&text, section) else {
        return Ok(None);
    };
    let origin = format!("section [{section}] of {}", path.display());
    let kind = entries.remove("type").map(|t| t.to_string()).unwrap_or_default();
    match kind.as_str() {
        "access_key" => {
            let (Some(id), Some(secret)) = (entries.remove("access_key_id"), entries.remove("access_key_secret"))
            else {
                return Err(invalid(format!("{origin}: access_key_id or access_key_secret is missing")));
            };
            let c = Credentials::new(id.to_string(), AccessKeySecret(secret));
            c.check(&origin)?;
            Ok(Some(CredentialSource::Static(c)))
        }
        "ecs_ram_role" => {
            let role = entries.remove("role_name").map(|r| r.to_string()).filter(|r| !r.is_empty());
            Ok(Some(CredentialSource::EcsRamRole(ecs(role))))
        }
        other => Err(invalid(format!(
            "{origin}: type {other:?} is not supported by envseal (supported: access_key, ecs_ram_role)"
        ))),
    }
}

/// The entries of one section of an INI file: `key = value` lines, `#` / `;` comment lines,
/// and (as the SDKs read it) anything after a `#` in a value dropped. Keys are lower-cased.
fn ini_section(text: &str, wanted: &str) -> Option<BTreeMap<String, Zeroizing<String>>> {
    let mut found = None;
    let mut current: Option<&str> = None;
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            current = Some(name.trim());
            if current == Some(wanted) && found.is_none() {
                found = Some(BTreeMap::new());
            }
            continue;
        }
        if current != Some(wanted) {
            continue;
        }
        let Some((k, v)) = line.split_once(['=', ':']) else { continue };
        let v = v.split('#').next().unwrap_or_default().trim();
        if let Some(map) = found.as_mut() {
            map.insert(k.trim().to_ascii_lowercase(), Zeroizing::new(v.to_owned()));
        }
    }
    found
}

/// Hands out credentials for each request.
pub(crate) enum Provider {
    Static(Arc<Credentials>),
    Ecs(Box<EcsProvider>),
}

impl fmt::Debug for Provider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Provider::Static(c) => f.debug_tuple("Static").field(&c.access_key_id).finish(),
            Provider::Ecs(e) => f.debug_tuple("EcsRamRole").field(&e.config).finish(),
        }
    }
}

impl Provider {
    pub(crate) fn new(source: CredentialSource) -> Result<Self, KmsError> {
        match source {
            CredentialSource::Static(c) => {
                c.check("the credentials given")?;
                Ok(Provider::Static(Arc::new(c)))
            }
            CredentialSource::EcsRamRole(config) => Ok(Provider::Ecs(Box::new(EcsProvider::new(config)?))),
        }
    }

    pub(crate) async fn credentials(&self) -> Result<Arc<Credentials>, KmsError> {
        match self {
            Provider::Static(c) => Ok(c.clone()),
            Provider::Ecs(e) => e.credentials().await,
        }
    }
}

struct Cached {
    credentials: Arc<Credentials>,
    refresh_at: SystemTime,
    expiration: SystemTime,
}

#[derive(Default)]
struct EcsState {
    role: Option<String>,
    cached: Option<Cached>,
}

/// The ECS instance RAM role provider: fetches, caches and refreshes role credentials.
pub(crate) struct EcsProvider {
    config: EcsRamRoleConfig,
    base: String,
    client: reqwest::Client,
    state: tokio::sync::Mutex<EcsState>,
    now: fn() -> SystemTime,
}

/// When credentials obtained at `obtained` and expiring at `expiration` are refreshed:
/// [`REFRESH_FRACTION`] of the way (at once if already expired).
pub(crate) fn refresh_time(obtained: SystemTime, expiration: SystemTime) -> SystemTime {
    match expiration.duration_since(obtained) {
        Ok(lifetime) => obtained + lifetime.mul_f64(REFRESH_FRACTION),
        Err(_) => obtained,
    }
}

/// Whether cached credentials may still be used after a failed refresh: not within the last
/// tenth of their lifetime (at most a minute) before they expire.
fn still_usable(c: &Cached, now: SystemTime) -> bool {
    let margin = c
        .expiration
        .duration_since(c.refresh_at)
        .map(|d| (d / 2).min(Duration::from_secs(60)))
        .unwrap_or(Duration::ZERO);
    now + margin < c.expiration
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RoleCredentials {
    #[serde(default)]
    code: Option<String>,
    #[serde(default)]
    access_key_id: Option<String>,
    #[serde(default, deserialize_with = "secret_opt")]
    access_key_secret: Option<Zeroizing<String>>,
    #[serde(default, deserialize_with = "secret_opt")]
    security_token: Option<Zeroizing<String>>,
    #[serde(default)]
    expiration: Option<String>,
}

/// A failed metadata request: whether the service was reached at all, and what happened.
enum MetaError {
    Unreachable(String),
    Status(u16),
}

impl EcsProvider {
    fn new(config: EcsRamRoleConfig) -> Result<Self, KmsError> {
        let url = reqwest::Url::parse(&config.metadata_endpoint)
            .map_err(|e| invalid(format!("invalid ECS metadata endpoint {:?}: {e}", config.metadata_endpoint)))?;
        if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() || url.query().is_some() {
            return Err(invalid(format!(
                "the ECS metadata endpoint {:?} must be http://HOST[:PORT]",
                config.metadata_endpoint
            )));
        }
        if let Some(role) = &config.role_name
            && (role.is_empty() || !role.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.@".contains(&b)))
        {
            return Err(invalid(format!("invalid ECS RAM role name {role:?}")));
        }
        // The metadata service is link-local: never through a proxy (and, as every client,
        // never redirected).
        let client = ClientOptions::new(config.timeout, concat!("envseal-kms-alibaba/", env!("CARGO_PKG_VERSION")))
            .no_proxy(true)
            .build()?;
        let base = config.metadata_endpoint.trim_end_matches('/').to_owned();
        Ok(Self { config, base, client, state: tokio::sync::Mutex::new(EcsState::default()), now: SystemTime::now })
    }

    #[cfg(test)]
    pub(crate) fn with_clock(mut self, now: fn() -> SystemTime) -> Self {
        self.now = now;
        self
    }

    async fn credentials(&self) -> Result<Arc<Credentials>, KmsError> {
        // One refresh at a time; the others wait and take its result.
        let mut state = self.state.lock().await;
        let now = (self.now)();
        if let Some(c) = &state.cached
            && now < c.refresh_at
        {
            return Ok(c.credentials.clone());
        }
        match self.fetch(&mut state).await {
            Ok(fresh) => {
                let credentials = fresh.credentials.clone();
                state.cached = Some(fresh);
                Ok(credentials)
            }
            Err(e) => match &state.cached {
                // A failed refresh keeps credentials that are still valid for a while.
                Some(c) if still_usable(c, now) => Ok(c.credentials.clone()),
                _ => Err(e),
            },
        }
    }

    async fn fetch(&self, state: &mut EcsState) -> Result<Cached, KmsError> {
        let token = self.metadata_token().await?;
        let role = match (&self.config.role_name, &state.role) {
            (Some(r), _) | (None, Some(r)) => r.clone(),
            (None, None) => {
                let body =
                    self.get_with_fallback(ROLE_PATH, token.as_ref().map(|t| t.as_str())).await.map_err(|e| {
                        self.error(
                            e,
                            "cannot find the instance's RAM role (is a RAM role attached to this ECS instance?)",
                        )
                    })?;
                let role = String::from_utf8_lossy(&body).lines().next().unwrap_or_default().trim().to_owned();
                if role.is_empty() || !role.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.@".contains(&b)) {
                    return Err(KmsError::AccessDenied {
                        message: "the ECS metadata service reports no usable RAM role for this instance".into(),
                    });
                }
                state.role = Some(role.clone());
                role
            }
        };
        let body = self
            .get_with_fallback(&format!("{ROLE_PATH}{role}"), token.as_ref().map(|t| t.as_str()))
            .await
            .map_err(|e| self.error(e, &format!("cannot get the credentials of RAM role {role}")))?;
        let parsed: RoleCredentials = serde_json::from_slice(&body).map_err(|_| KmsError::AccessDenied {
            message: format!("the ECS metadata service sent malformed credentials for RAM role {role}"),
        })?;
        let bad = |what: &str| KmsError::AccessDenied {
            message: format!("the ECS metadata service sent no usable credentials for RAM role {role}: {what}"),
        };
        if parsed.code.as_deref() != Some("Success") {
            return Err(bad("Code is not Success"));
        }
        let (Some(id), Some(secret), Some(token), Some(expiration)) =
            (parsed.access_key_id, parsed.access_key_secret, parsed.security_token, parsed.expiration)
        else {
            return Err(bad("a field is missing"));
        };
        let expiration = parse_utc(&expiration).ok_or_else(|| bad("Expiration is not a UTC time"))?;
        let credentials = Credentials::new(id, AccessKeySecret(secret))
            .with_security_token(SecurityToken(token))
            .with_expiration(expiration);
        credentials.check("the ECS RAM role credentials")?;
        let now = (self.now)();
        Ok(Cached { credentials: Arc::new(credentials), refresh_at: refresh_time(now, expiration), expiration })
    }

    /// `PUT /latest/api/token` (hardened mode). Without a token the plain mode is used, unless
    /// it is disabled.
    async fn metadata_token(&self) -> Result<Option<Zeroizing<String>>, KmsError> {
        let result = self
            .client
            .put(format!("{}{TOKEN_PATH}", self.base))
            .header(TOKEN_TTL_HEADER, METADATA_TOKEN_TTL_SECONDS.to_string())
            .send()
            .await;
        let failure = match result {
            Ok(resp) if resp.status().is_success() => match read_limited(resp).await {
                Ok(body) => {
                    let token = String::from_utf8_lossy(&body).trim().to_owned();
                    if !token.is_empty() && token.bytes().all(|b| b.is_ascii_graphic()) {
                        return Ok(Some(Zeroizing::new(token)));
                    }
                    MetaError::Status(200)
                }
                Err(e) => e,
            },
            Ok(resp) => MetaError::Status(resp.status().as_u16()),
            Err(e) => MetaError::Unreachable(error_chain(e)),
        };
        if self.config.disable_imds_v1 {
            return Err(self.error(failure, "cannot get a hardened-mode metadata token (required: IMDSv1 is disabled)"));
        }
        if let MetaError::Unreachable(_) = failure {
            // Not reachable at all: the plain mode will not do better.
            return Err(self.error(failure, "cannot reach the ECS metadata service"));
        }
        Ok(None)
    }

    async fn get_with_fallback(&self, path: &str, token: Option<&str>) -> Result<Zeroizing<Vec<u8>>, MetaError> {
        match self.get(path, token).await {
            Err(MetaError::Status(_)) if token.is_some() && !self.config.disable_imds_v1 => self.get(path, None).await,
            r => r,
        }
    }

    async fn get(&self, path: &str, token: Option<&str>) -> Result<Zeroizing<Vec<u8>>, MetaError> {
        let mut rb = self.client.get(format!("{}{path}", self.base));
        if let Some(t) = token {
            let mut v = reqwest::header::HeaderValue::from_str(t).map_err(|_| MetaError::Status(0))?;
            v.set_sensitive(true);
            rb = rb.header(TOKEN_HEADER, v);
        }
        let resp = rb.send().await.map_err(|e| MetaError::Unreachable(error_chain(e)))?;
        if resp.status().as_u16() != 200 {
            return Err(MetaError::Status(resp.status().as_u16()));
        }
        read_limited(resp).await
    }

    fn error(&self, e: MetaError, what: &str) -> KmsError {
        match e {
            MetaError::Unreachable(m) => KmsError::Unavailable {
                message: format!(
                    "{what} at {}: {m} (not on ECS? set ALIBABA_CLOUD_ACCESS_KEY_ID/SECRET, or \
                     ALIBABA_CLOUD_ECS_METADATA_DISABLED=true)",
                    self.base
                ),
                retryable: true,
            },
            MetaError::Status(s) => KmsError::AccessDenied {
                message: format!("{what}: the metadata service at {} answered HTTP {s}", self.base),
            },
        }
    }
}

async fn read_limited(resp: reqwest::Response) -> Result<Zeroizing<Vec<u8>>, MetaError> {
    read_body(resp, MAX_METADATA_BODY).await.map_err(|e| match e {
        TransportError::TooLarge { .. } => MetaError::Status(200),
        other => MetaError::Unreachable(other.to_string()),
    })
}

#[cfg(test)]
mod tests;
