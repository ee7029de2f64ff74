//! Configuration: server address, token, namespace, mount, CA, timeouts and retries; read
//! from the environment or from a `vault-transit://` URI.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use envseal_core::KmsError;
use envseal_core::retry::RetryPolicy;
use reqwest::Url;
use zeroize::Zeroizing;

use crate::error::invalid;
use crate::names::{is_valid_key_name, normalize_mount};

/// The Transit mount used when none is given.
pub const DEFAULT_MOUNT: &str = "transit";

/// Per-request timeout used when none is given.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// URI scheme for Transit over HTTPS: `vault-transit://HOST[:PORT]/MOUNT/KEY`.
pub const URI_SCHEME: &str = "vault-transit";

/// URI scheme for Transit over plain HTTP (dev servers and tests only):
/// `vault-transit+http://HOST[:PORT]/MOUNT/KEY`.
pub const URI_SCHEME_HTTP: &str = "vault-transit+http";

/// A Vault / OpenBao token.
///
/// Zeroized on drop, not `Clone`, and printed as `VaultToken([REDACTED])`. It is only ever
/// sent in the `X-Vault-Token` header (marked sensitive) and never appears in an error.
pub struct VaultToken(Zeroizing<String>);

impl VaultToken {
    /// Takes ownership of a token string.
    pub fn new(token: impl Into<String>) -> Self {
        Self(Zeroizing::new(token.into()))
    }

    /// The token. The only way in.
    pub fn expose_secret(&self) -> &str {
        &self.0
    }

    /// True when the token is the empty string.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for VaultToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("VaultToken([REDACTED])")
    }
}

/// The retry policy of a new [`VaultConfig`]: 4 attempts, 50 ms first backoff cap, 2 s
/// largest (full jitter, as [`RetryPolicy`] describes), sleeping with Tokio's timer.
pub fn default_retry() -> RetryPolicy {
    envseal_http::retry::policy(4, Duration::from_millis(50), Duration::from_secs(2))
}

/// How to reach a Transit engine.
///
/// Build it with [`VaultConfig::new`], [`VaultConfig::from_env`] or [`VaultConfig::from_uri`],
/// then adjust with the `with_*` methods. `Debug` never shows the token.
#[derive(Debug)]
#[non_exhaustive]
pub struct VaultConfig {
    /// Server address, `https://HOST[:PORT]` (or `http://` for dev servers), optionally with a
    /// path prefix. `/v1/...` is appended to it.
    pub addr: String,
    /// The token sent as `X-Vault-Token`.
    pub token: VaultToken,
    /// Vault Enterprise / OpenBao namespace, sent as `X-Vault-Namespace`.
    pub namespace: Option<String>,
    /// Path of the Transit mount, without slashes around it (default `transit`).
    pub mount: String,
    /// PEM file of the CA certificates to trust. When set, these are the only roots trusted
    /// (as `VAULT_CACERT` does for the Vault CLI); when unset, the platform's trust store is
    /// used.
    pub ca_cert: Option<PathBuf>,
    /// Timeout of one HTTP request (connection included), before any retry.
    pub timeout: Duration,
    /// Retries of throttling, 5xx answers and connection failures ([`default_retry`] unless
    /// set); a rotation is resent only when the server certainly did not act on it.
    pub retry: RetryPolicy,
}

impl VaultConfig {
    /// A configuration with the default mount (`transit`), no namespace, the platform's trust
    /// store, a 30 s timeout and the default retry policy ([`default_retry`]).
    pub fn new(addr: impl Into<String>, token: VaultToken) -> Self {
        Self {
            addr: addr.into(),
            token,
            namespace: None,
            mount: DEFAULT_MOUNT.to_owned(),
            ca_cert: None,
            timeout: DEFAULT_TIMEOUT,
            retry: default_retry(),
        }
    }

    /// Sets the namespace.
    pub fn with_namespace(mut self, namespace: impl Into<String>) -> Self {
        self.namespace = Some(namespace.into());
        self
    }

    /// Sets the Transit mount path (e.g. `transit`, `teams/a/transit`).
    pub fn with_mount(mut self, mount: impl Into<String>) -> Self {
        self.mount = mount.into();
        self
    }

    /// Trusts only the CA certificates in this PEM file.
    pub fn with_ca_cert(mut self, path: impl Into<PathBuf>) -> Self {
        self.ca_cert = Some(path.into());
        self
    }

    /// Sets the per-request timeout.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Sets the retry policy.
    pub fn with_retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// Reads the configuration from the environment.
    ///
    /// | setting   | variable, then alternative       | required |
    /// |-----------|----------------------------------|----------|
    /// | address   | `VAULT_ADDR`, `BAO_ADDR`         | yes      |
    /// | token     | `VAULT_TOKEN`, `BAO_TOKEN`       | yes      |
    /// | namespace | `VAULT_NAMESPACE`, `BAO_NAMESPACE` | no     |
    /// | CA file   | `VAULT_CACERT`, `BAO_CACERT`     | no       |
    ///
    /// Empty variables count as unset. When both names of a pair are set they must agree:
    /// a token meant for one server is never sent to another. `~/.vault-token` is not read.
    ///
    /// # Errors
    /// [`KmsError::InvalidRequest`] when the address or token is missing, or a pair disagrees
    /// (the message names the variables, never their values for the token).
    pub fn from_env() -> Result<Self, KmsError> {
        Self::from_lookup(&|name| std::env::var(name).ok())
    }

    /// Parses a `vault-transit://HOST[:PORT]/MOUNT/KEY` URI (see [`TransitUri`]) and takes the
    /// token, namespace and CA file from the environment as [`VaultConfig::from_env`] does.
    /// Returns the configuration and the key name.
    ///
    /// The token is only sent to the server `VAULT_ADDR` (or `BAO_ADDR`) names: if either is
    /// set and names another server than the URI, this fails rather than sending the token
    /// to the server the URI names.
    ///
    /// # Errors
    /// [`KmsError::InvalidRequest`] for a malformed URI, a missing token, or a URI that names
    /// another server than `VAULT_ADDR` / `BAO_ADDR`.
    pub fn from_uri(uri: &str) -> Result<(Self, String), KmsError> {
        Self::from_uri_lookup(uri, &|name| std::env::var(name).ok())
    }

    pub(crate) fn from_lookup(env: &dyn Fn(&str) -> Option<String>) -> Result<Self, KmsError> {
        let addr = pair(env, "VAULT_ADDR", "BAO_ADDR", Compare::Address)?
            .ok_or_else(|| invalid("no Vault address: set VAULT_ADDR (or BAO_ADDR)"))?;
        let mut config = Self::new(addr, VaultToken::new(String::new()));
        config.fill_from_env(env)?;
        Ok(config)
    }

    pub(crate) fn from_uri_lookup(uri: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<(Self, String), KmsError> {
        let parsed = TransitUri::parse(uri)?;
        if let Some(env_addr) = pair(env, "VAULT_ADDR", "BAO_ADDR", Compare::Address)?
            && !same_server(&env_addr, &parsed.addr)
        {
            return Err(invalid(format!(
                "the URI names the server {} but VAULT_ADDR/BAO_ADDR names {env_addr}; the token from the \
                 environment is only sent to that server: fix the URI or the variable",
                parsed.addr
            )));
        }
        let mut config = Self::new(parsed.addr, VaultToken::new(String::new())).with_mount(parsed.mount);
        config.fill_from_env(env)?;
        Ok((config, parsed.key))
    }

    /// Token, namespace and CA file from the environment.
    fn fill_from_env(&mut self, env: &dyn Fn(&str) -> Option<String>) -> Result<(), KmsError> {
        let token = pair(env, "VAULT_TOKEN", "BAO_TOKEN", Compare::Secret)?
            .ok_or_else(|| invalid("no Vault token: set VAULT_TOKEN (or BAO_TOKEN)"))?;
        self.token = VaultToken::new(token);
        self.namespace = pair(env, "VAULT_NAMESPACE", "BAO_NAMESPACE", Compare::Plain)?;
        self.ca_cert = pair(env, "VAULT_CACERT", "BAO_CACERT", Compare::Plain)?.map(PathBuf::from);
        Ok(())
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Compare {
    Plain,
    Address,
    Secret,
}

/// The value of `primary`, else of `alternative`; both set and different is an error.
fn pair(
    env: &dyn Fn(&str) -> Option<String>,
    primary: &str,
    alternative: &str,
    compare: Compare,
) -> Result<Option<String>, KmsError> {
    let get = |name: &str| env(name).filter(|v| !v.is_empty());
    let a = get(primary).map(Zeroizing::new);
    let b = get(alternative).map(Zeroizing::new);
    match (a, b) {
        (Some(a), Some(b)) => {
            let agree = match compare {
                Compare::Address => same_server(&a, &b),
                Compare::Plain | Compare::Secret => *a == *b,
            };
            if agree {
                return Ok(Some((*a).clone()));
            }
            Err(invalid(match compare {
                Compare::Secret => format!("{primary} and {alternative} are both set and differ: unset one"),
                _ => format!("{primary} ({}) and {alternative} ({}) are both set and differ: unset one", *a, *b),
            }))
        }
        (Some(v), None) | (None, Some(v)) => Ok(Some((*v).clone())),
        (None, None) => Ok(None),
    }
}

/// Whether two addresses name the same server (scheme, host, port with defaults applied).
fn same_server(a: &str, b: &str) -> bool {
    match (Url::parse(a), Url::parse(b)) {
        (Ok(a), Ok(b)) => {
            a.scheme() == b.scheme()
                && a.host_str() == b.host_str()
                && a.port_or_known_default() == b.port_or_known_default()
        }
        _ => a.trim_end_matches('/') == b.trim_end_matches('/'),
    }
}

/// A parsed `vault-transit://HOST[:PORT]/MOUNT/KEY` URI.
///
/// - `vault-transit://` means HTTPS; `vault-transit+http://` means plain HTTP (dev servers,
///   tests).
/// - The last path segment is the key name; the segments before it are the mount path, which
///   may be nested (`/teams/a/transit/app`); with a single segment the mount is `transit`.
/// - Without a port, the scheme's default applies (443 / 80), as in any URL: Vault's own
///   default port is 8200, so write it.
/// - User info (`user:pass@`), queries, fragments, empty segments and percent-escapes are
///   rejected: the token never travels in a URI.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct TransitUri {
    /// `https://HOST[:PORT]` or `http://HOST[:PORT]`.
    pub addr: String,
    /// Mount path, without slashes around it.
    pub mount: String,
    /// Transit key name.
    pub key: String,
}

impl TransitUri {
    /// Parses a URI.
    ///
    /// # Errors
    /// [`KmsError::InvalidRequest`] naming what is wrong.
    pub fn parse(uri: &str) -> Result<Self, KmsError> {
        let (http_scheme, rest) = if let Some(rest) = uri.strip_prefix("vault-transit://") {
            ("https", rest)
        } else if let Some(rest) = uri.strip_prefix("vault-transit+http://") {
            ("http", rest)
        } else {
            return Err(invalid(format!(
                "not a Transit URI: expected {URI_SCHEME}://HOST[:PORT]/MOUNT/KEY or {URI_SCHEME_HTTP}://..."
            )));
        };
        let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
        if authority.contains('@') {
            // Do not echo it: it may hold a password or token.
            return Err(invalid("Transit URIs must not contain user info (the token comes from VAULT_TOKEN)"));
        }
        if authority.is_empty() {
            return Err(invalid(format!("Transit URI {uri:?} has no host")));
        }
        if path.contains(['?', '#', '%']) {
            return Err(invalid(format!("Transit URI {uri:?} must not contain a query, fragment or percent-escape")));
        }
        let url = Url::parse(&format!("{http_scheme}://{authority}/"))
            .map_err(|e| invalid(format!("Transit URI {uri:?} has an invalid host or port: {e}")))?;
        if url.host_str().is_none() || url.path() != "/" {
            return Err(invalid(format!("Transit URI {uri:?} has an invalid host")));
        }
        let addr = url.as_str().trim_end_matches('/').to_owned();
        let segments: Vec<&str> = path.split('/').collect();
        if path.is_empty() || segments.iter().any(|s| s.is_empty()) {
            return Err(invalid(format!("Transit URI {uri:?} needs a path /MOUNT/KEY without empty segments")));
        }
        let (key, mount) = match segments.split_last() {
            Some((key, [])) => ((*key).to_owned(), DEFAULT_MOUNT.to_owned()),
            Some((key, mount)) => ((*key).to_owned(), mount.join("/")),
            None => unreachable!("split always yields one segment"),
        };
        if !is_valid_key_name(&key) {
            return Err(invalid(format!("{key:?} is not a valid Transit key name")));
        }
        let mount = normalize_mount(&mount)?;
        Ok(Self { addr, mount, key })
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        move |name| map.get(name).cloned()
    }

    #[test]
    fn uri_forms() {
        let u = TransitUri::parse("vault-transit://vault.example.com:8200/transit/app-key").unwrap();
        assert_eq!(
            u,
            TransitUri {
                addr: "https://vault.example.com:8200".into(),
                mount: "transit".into(),
                key: "app-key".into()
            }
        );
        let u = TransitUri::parse("vault-transit+http://127.0.0.1:8200/teams/a/transit/k.1@x").unwrap();
        assert_eq!(
            (u.addr.as_str(), u.mount.as_str(), u.key.as_str()),
            ("http://127.0.0.1:8200", "teams/a/transit", "k.1@x")
        );
        let u = TransitUri::parse("vault-transit://vault/app").unwrap();
        assert_eq!((u.addr.as_str(), u.mount.as_str(), u.key.as_str()), ("https://vault", "transit", "app"));
        let u = TransitUri::parse("vault-transit://[::1]:8200/transit/app").unwrap();
        assert_eq!(u.addr, "https://[::1]:8200");
        // Host names are case-insensitive; the URL parser lowercases them.
        assert_eq!(TransitUri::parse("vault-transit://VAULT:8200/transit/k").unwrap().addr, "https://vault:8200");
    }

    #[test]
    fn uri_rejections() {
        for bad in [
            "vault://host/transit/k",
            "https://host/transit/k",
            "vault-transit://",
            "vault-transit://host",
            "vault-transit://host/",
            "vault-transit://host/transit/",
            "vault-transit://host//k",
            "vault-transit://host/transit/k?x=1",
            "vault-transit://host/transit/k#f",
            "vault-transit://host/transit/a%2Fb",
            "vault-transit://host:99999/transit/k",
            "vault-transit://host/../k",
            "vault-transit://host/transit/../k",
            "vault-transit://host/transit/-k",
            "vault-transit://host/transit/k/",
            "vault-transit://host/tr ansit/k",
        ] {
            assert!(matches!(TransitUri::parse(bad), Err(KmsError::InvalidRequest { .. })), "{bad} accepted");
        }
        let e = TransitUri::parse("vault-transit://root:s3cr3t-tok@host/transit/k").unwrap_err();
        assert!(!e.to_string().contains("s3cr3t-tok"), "{e}");
    }

    #[test]
    fn from_env_pairs_and_precedence() {
        let c = VaultConfig::from_lookup(&env(&[("VAULT_ADDR", "https://v:8200"), ("VAULT_TOKEN", "t1")])).unwrap();
        assert_eq!(c.addr, "https://v:8200");
        assert_eq!(c.token.expose_secret(), "t1");
        assert_eq!((c.mount.as_str(), c.namespace.as_deref(), c.ca_cert.as_deref()), ("transit", None, None));

        let c = VaultConfig::from_lookup(&env(&[
            ("BAO_ADDR", "http://127.0.0.1:8200"),
            ("BAO_TOKEN", "t2"),
            ("BAO_NAMESPACE", "ns1"),
            ("BAO_CACERT", "/etc/ca.pem"),
            ("VAULT_TOKEN", ""),
        ]))
        .unwrap();
        assert_eq!((c.addr.as_str(), c.token.expose_secret()), ("http://127.0.0.1:8200", "t2"));
        assert_eq!(c.namespace.as_deref(), Some("ns1"));
        assert_eq!(c.ca_cert, Some(PathBuf::from("/etc/ca.pem")));

        // Both set and equal (modulo default port and trailing slash): fine.
        let c = VaultConfig::from_lookup(&env(&[
            ("VAULT_ADDR", "https://v"),
            ("BAO_ADDR", "https://v:443/"),
            ("VAULT_TOKEN", "t"),
            ("BAO_TOKEN", "t"),
        ]))
        .unwrap();
        assert_eq!(c.addr, "https://v");
    }

    #[test]
    fn from_env_errors_never_show_tokens() {
        let e = VaultConfig::from_lookup(&env(&[("VAULT_TOKEN", "tok-secret-1")])).unwrap_err();
        assert!(e.to_string().contains("VAULT_ADDR"));
        let e = VaultConfig::from_lookup(&env(&[("VAULT_ADDR", "https://v")])).unwrap_err();
        assert!(e.to_string().contains("VAULT_TOKEN"));
        let e = VaultConfig::from_lookup(&env(&[
            ("VAULT_ADDR", "https://v"),
            ("VAULT_TOKEN", "tok-secret-1"),
            ("BAO_TOKEN", "tok-secret-2"),
        ]))
        .unwrap_err();
        let text = format!("{e} {e:?}");
        assert!(text.contains("VAULT_TOKEN and BAO_TOKEN"), "{text}");
        assert!(!text.contains("tok-secret"), "{text}");
        let e = VaultConfig::from_lookup(&env(&[
            ("VAULT_ADDR", "https://a:8200"),
            ("BAO_ADDR", "https://b:8200"),
            ("VAULT_TOKEN", "t"),
        ]))
        .unwrap_err();
        assert!(matches!(e, KmsError::InvalidRequest { .. }));
    }

    #[test]
    fn from_uri_uses_env_credentials_and_refuses_another_server() {
        let (c, key) = VaultConfig::from_uri_lookup(
            "vault-transit+http://127.0.0.1:8200/kv/transit/app",
            &env(&[("VAULT_TOKEN", "t"), ("VAULT_NAMESPACE", "ns")]),
        )
        .unwrap();
        assert_eq!((c.addr.as_str(), c.mount.as_str(), key.as_str()), ("http://127.0.0.1:8200", "kv/transit", "app"));
        assert_eq!(c.namespace.as_deref(), Some("ns"));
        // Same server as VAULT_ADDR: fine.
        assert!(
            VaultConfig::from_uri_lookup(
                "vault-transit://v:8200/transit/app",
                &env(&[("VAULT_ADDR", "https://v:8200/"), ("VAULT_TOKEN", "t")]),
            )
            .is_ok()
        );
        // Another server: the token is not sent there.
        let e = VaultConfig::from_uri_lookup(
            "vault-transit://evil.example:8200/transit/app",
            &env(&[("VAULT_ADDR", "https://v:8200"), ("VAULT_TOKEN", "tok-secret")]),
        )
        .unwrap_err();
        assert!(e.to_string().contains("evil.example") && !e.to_string().contains("tok-secret"), "{e}");
        // Plain http against an https VAULT_ADDR is another server too.
        assert!(
            VaultConfig::from_uri_lookup(
                "vault-transit+http://v:8200/transit/app",
                &env(&[("VAULT_ADDR", "https://v:8200"), ("VAULT_TOKEN", "t")]),
            )
            .is_err()
        );
        assert!(VaultConfig::from_uri_lookup("vault-transit://v:8200/transit/app", &env(&[])).is_err());
    }

    #[test]
    fn token_debug_is_redacted() {
        let c = VaultConfig::new("https://v:8200", VaultToken::new("hvs.tok-secret-debug"));
        let text = format!("{c:?} {:?}", c.token);
        assert!(!text.contains("tok-secret-debug"), "{text}");
        assert!(text.contains("VaultToken([REDACTED])"));
    }

    #[test]
    fn backoff_is_bounded_full_jitter() {
        let p = VaultConfig::new("https://v:8200", VaultToken::new("t")).retry;
        assert_eq!(p.max_attempts, 4);
        assert_eq!(p.cap(0), Duration::from_millis(50));
        assert_eq!(p.cap(1), Duration::from_millis(100));
        assert_eq!(p.cap(5), Duration::from_millis(1600));
        assert_eq!(p.cap(6), Duration::from_secs(2));
        assert_eq!(p.cap(100), Duration::from_secs(2));
        let samples: Vec<Duration> = (0..200).map(|_| p.delay(2)).collect();
        assert!(samples.iter().all(|d| *d <= Duration::from_millis(200)));
        // Full jitter: spread over the range, not pinned at the ceiling.
        assert!(samples.iter().any(|d| *d < Duration::from_millis(100)));
        assert!(samples.iter().any(|d| *d > Duration::from_millis(100)));
        assert_eq!(RetryPolicy::none().max_attempts, 1);
    }
}
