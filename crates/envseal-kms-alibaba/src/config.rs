//! Configuration: region, endpoint, signature version, credentials, timeouts and retries; read
//! from the environment or from an `alibaba-kms:` URI.

use std::time::Duration;

use envseal_core::KmsError;
use envseal_core::retry::RetryPolicy;
use envseal_http::client::is_loopback;
use reqwest::Url;

use crate::credentials::{CredentialSource, invalid};
use crate::signer::SignatureVersion;
use crate::uri::{AlibabaKeyUri, check_region, shorten};

/// Per-request timeout used when none is given.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// Variable naming a custom endpoint (an emulator, a proxy): `https://HOST[:PORT]`, or
/// `http://127.0.0.1:PORT` / `http://localhost:PORT` (plain HTTP is refused elsewhere).
pub const ENDPOINT_VAR: &str = "ENVSEAL_ALIBABA_KMS_ENDPOINT";
/// Variable choosing the regional endpoint's network: `public` (default) or `vpc`.
pub const NETWORK_VAR: &str = "ENVSEAL_ALIBABA_KMS_NETWORK";
/// Variable choosing the signature: `v3` (default) or `v2`.
pub const SIGNATURE_VAR: &str = "ENVSEAL_ALIBABA_KMS_SIGNATURE_VERSION";
/// Environment variable: time limit of one request in seconds (default 30).
pub const TIMEOUT_VAR: &str = "ENVSEAL_ALIBABA_KMS_TIMEOUT";
/// The Alibaba Cloud SDKs' region variable, read by [`AlibabaConfig::from_env`].
pub const REGION_VAR: &str = "ALIBABA_CLOUD_REGION_ID";

/// Where requests go.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Endpoint {
    /// `https://kms.REGION.aliyuncs.com` (public network).
    #[default]
    Regional,
    /// `https://kms-vpc.REGION.aliyuncs.com` (from inside an Alibaba Cloud VPC).
    Vpc,
    /// Any other server: `https://HOST[:PORT]` (or `HOST[:PORT]`, meaning HTTPS), or plain
    /// `http://` to a loopback address (`127.0.0.1`, `localhost`, `[::1]`) for the emulator.
    Custom(String),
}

/// An endpoint resolved to a base URL and the `host` header that is signed and sent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ResolvedEndpoint {
    /// `https://HOST[:PORT]` without a trailing slash.
    pub base: String,
    /// `HOST[:PORT]`, as sent in (and signed as) the `host` header.
    pub host: String,
    pub loopback: bool,
}

impl Endpoint {
    pub(crate) fn resolve(&self, region: &str) -> Result<ResolvedEndpoint, KmsError> {
        let url = match self {
            Endpoint::Regional => format!("https://kms.{region}.aliyuncs.com"),
            Endpoint::Vpc => format!("https://kms-vpc.{region}.aliyuncs.com"),
            Endpoint::Custom(e) => {
                let e = e.trim();
                if e.contains("://") { e.to_owned() } else { format!("https://{e}") }
            }
        };
        let parsed = Url::parse(&url)
            .map_err(|e| invalid(format!("invalid Alibaba Cloud KMS endpoint {:?}: {e}", shorten(&url))))?;
        if !parsed.username().is_empty()
            || parsed.password().is_some()
            || parsed.query().is_some()
            || parsed.fragment().is_some()
            || parsed.path() != "/"
        {
            return Err(invalid(format!(
                "the KMS endpoint {:?} must be https://HOST[:PORT], without user info, path or query",
                shorten(&url)
            )));
        }
        let Some(host) = parsed.host_str() else {
            return Err(invalid(format!("the KMS endpoint {:?} has no host", shorten(&url))));
        };
        let loopback = is_loopback(host);
        match parsed.scheme() {
            "https" => {}
            "http" if loopback => {}
            "http" => {
                return Err(invalid(format!(
                    "plain http:// is only allowed to a loopback address (an emulator on 127.0.0.1 or localhost), \
                     not {host}: use https://"
                )));
            }
            other => return Err(invalid(format!("the KMS endpoint scheme must be https, not {other}"))),
        }
        let host_header = match parsed.port() {
            Some(p) => format!("{host}:{p}"),
            None => host.to_owned(),
        };
        Ok(ResolvedEndpoint { base: format!("{}://{host_header}", parsed.scheme()), host: host_header, loopback })
    }
}

/// The retry policy of a new [`AlibabaConfig`]: 4 attempts, 100 ms first backoff cap, 5 s
/// largest (full jitter, as [`RetryPolicy`] describes), sleeping with Tokio's timer. Every
/// attempt is signed anew (fresh nonce and timestamp).
pub fn default_retry() -> RetryPolicy {
    envseal_http::retry::policy(4, Duration::from_millis(100), Duration::from_secs(5))
}

/// How to reach Alibaba Cloud KMS.
///
/// Build it with [`AlibabaConfig::new`], [`AlibabaConfig::from_env`] or
/// [`AlibabaConfig::from_uri`], then adjust with the `with_*` methods. `Debug` never shows a
/// secret.
#[derive(Debug)]
#[non_exhaustive]
pub struct AlibabaConfig {
    /// Region id, e.g. `cn-hangzhou`.
    pub region: String,
    /// Regional (default), VPC or custom endpoint.
    pub endpoint: Endpoint,
    /// V3 (default) or V2 request signatures.
    pub signature_version: SignatureVersion,
    /// Where credentials come from.
    pub credentials: CredentialSource,
    /// Timeout of one HTTP request (connection included), before any retry.
    pub timeout: Duration,
    /// Retries of throttling, 5xx answers and connection failures ([`default_retry`] unless
    /// set); a creation is resent only when the server certainly did not act on it.
    pub retry: RetryPolicy,
}

impl AlibabaConfig {
    /// A configuration for `region` with the regional endpoint, V3 signatures, a 30 s timeout
    /// and the default retry policy.
    pub fn new(region: impl Into<String>, credentials: CredentialSource) -> Self {
        Self {
            region: region.into(),
            endpoint: Endpoint::Regional,
            signature_version: SignatureVersion::V3,
            credentials,
            timeout: DEFAULT_TIMEOUT,
            retry: default_retry(),
        }
    }

    /// Sets the endpoint.
    #[must_use]
    pub fn with_endpoint(mut self, endpoint: Endpoint) -> Self {
        self.endpoint = endpoint;
        self
    }

    /// Sets the signature version.
    #[must_use]
    pub fn with_signature_version(mut self, version: SignatureVersion) -> Self {
        self.signature_version = version;
        self
    }

    /// Sets the per-request timeout.
    #[must_use]
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Sets the retry policy.
    #[must_use]
    pub fn with_retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// Reads the configuration from the environment:
    ///
    /// | setting | variable | default |
    /// |---|---|---|
    /// | region | `ALIBABA_CLOUD_REGION_ID` | required |
    /// | endpoint | `ENVSEAL_ALIBABA_KMS_ENDPOINT` | regional |
    /// | network of the regional endpoint | `ENVSEAL_ALIBABA_KMS_NETWORK` = `public` / `vpc` | `public` |
    /// | signature | `ENVSEAL_ALIBABA_KMS_SIGNATURE_VERSION` = `v3` / `v2` | `v3` |
    /// | credentials | the SDK chain, see [`CredentialSource::from_env`] | |
    ///
    /// # Errors
    /// [`KmsError::InvalidRequest`] for a missing or invalid region, an invalid setting, or
    /// no credentials (messages name variables, never secrets).
    pub fn from_env() -> Result<Self, KmsError> {
        Self::from_lookup(&|name| std::env::var(name).ok(), None)
    }

    /// Parses an `alibaba-kms:REGION/KEY` URI ([`AlibabaKeyUri`]) and takes everything else
    /// from the environment as [`AlibabaConfig::from_env`] does (the URI's region wins over
    /// `ALIBABA_CLOUD_REGION_ID`). Returns the configuration and the key reference.
    ///
    /// # Errors
    /// Those of [`AlibabaKeyUri::parse`] and [`AlibabaConfig::from_env`].
    pub fn from_uri(uri: &str) -> Result<(Self, String), KmsError> {
        Self::from_uri_lookup(uri, &|name| std::env::var(name).ok())
    }

    pub(crate) fn from_uri_lookup(uri: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<(Self, String), KmsError> {
        let parsed = AlibabaKeyUri::parse(uri)?;
        let config = Self::from_lookup(env, Some(parsed.region()))?;
        Ok((config, parsed.key().to_owned()))
    }

    pub(crate) fn from_lookup(env: &dyn Fn(&str) -> Option<String>, region: Option<&str>) -> Result<Self, KmsError> {
        let get = |name: &str| env(name).map(|v| v.trim().to_owned()).filter(|v| !v.is_empty());
        let region = match region {
            Some(r) => r.to_owned(),
            None => get(REGION_VAR).ok_or_else(|| {
                invalid(format!("no Alibaba Cloud region: set {REGION_VAR} (e.g. cn-hangzhou) or use a URI"))
            })?,
        };
        check_region(&region)?;
        let endpoint = match (get(ENDPOINT_VAR), get(NETWORK_VAR).as_deref()) {
            (Some(e), _) => Endpoint::Custom(e),
            (None, None | Some("public")) => Endpoint::Regional,
            (None, Some("vpc")) => Endpoint::Vpc,
            (None, Some(other)) => {
                return Err(invalid(format!("{NETWORK_VAR} must be public or vpc, not {:?}", shorten(other))));
            }
        };
        let signature_version = match get(SIGNATURE_VAR) {
            None => SignatureVersion::V3,
            Some(v) => SignatureVersion::parse(&v)
                .ok_or_else(|| invalid(format!("{SIGNATURE_VAR} must be v3 or v2, not {:?}", shorten(&v))))?,
        };
        let timeout = match get(TIMEOUT_VAR) {
            None => DEFAULT_TIMEOUT,
            Some(v) => match v.parse::<f64>() {
                Ok(secs) if secs > 0.0 && secs <= 600.0 => Duration::from_secs_f64(secs),
                _ => {
                    return Err(invalid(format!(
                        "{TIMEOUT_VAR} must be seconds between 0 and 600, not {:?}",
                        shorten(&v)
                    )));
                }
            },
        };
        let credentials = CredentialSource::from_lookup(env)?;
        let config = Self::new(region, credentials)
            .with_endpoint(endpoint)
            .with_signature_version(signature_version)
            .with_timeout(timeout);
        // Refuse a bad endpoint now rather than at the first request.
        config.endpoint.resolve(&config.region)?;
        Ok(config)
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

    const CREDS: [(&str, &str); 2] =
        [("ALIBABA_CLOUD_ACCESS_KEY_ID", "LTAIexample"), ("ALIBABA_CLOUD_ACCESS_KEY_SECRET", "sk-cfg-secret")];

    #[test]
    fn endpoints() {
        let r = Endpoint::Regional.resolve("cn-hangzhou").unwrap();
        assert_eq!(
            (r.base.as_str(), r.host.as_str()),
            ("https://kms.cn-hangzhou.aliyuncs.com", "kms.cn-hangzhou.aliyuncs.com")
        );
        let r = Endpoint::Vpc.resolve("eu-central-1").unwrap();
        assert_eq!(r.host, "kms-vpc.eu-central-1.aliyuncs.com");
        let r = Endpoint::Custom("http://127.0.0.1:8443".into()).resolve("cn-hangzhou").unwrap();
        assert_eq!((r.base.as_str(), r.host.as_str(), r.loopback), ("http://127.0.0.1:8443", "127.0.0.1:8443", true));
        let r = Endpoint::Custom("http://localhost:9".into()).resolve("x1").unwrap();
        assert_eq!(r.host, "localhost:9");
        let r = Endpoint::Custom("http://[::1]:9".into()).resolve("x1").unwrap();
        assert_eq!(r.host, "[::1]:9");
        let r = Endpoint::Custom("kms-proxy.example.com:8443".into()).resolve("x1").unwrap();
        assert_eq!(r.base, "https://kms-proxy.example.com:8443");
        // The default port is not part of the host header.
        assert_eq!(Endpoint::Custom("https://h.example:443/".into()).resolve("x1").unwrap().host, "h.example");
        for bad in [
            "http://kms.example.com",
            "http://10.0.0.1:80",
            "ftp://127.0.0.1",
            "https://u:p@h.example",
            "https://h.example/path",
            "https://h.example/?a=1",
            "https://",
        ] {
            assert!(Endpoint::Custom(bad.into()).resolve("x1").is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn from_env_settings() {
        let mut pairs = CREDS.to_vec();
        assert!(AlibabaConfig::from_lookup(&env(&pairs), None).is_err(), "no region");
        pairs.push((REGION_VAR, "cn-shanghai"));
        let c = AlibabaConfig::from_lookup(&env(&pairs), None).unwrap();
        assert_eq!(
            (c.region.as_str(), &c.endpoint, c.signature_version),
            ("cn-shanghai", &Endpoint::Regional, SignatureVersion::V3)
        );
        let mut vpc = pairs.clone();
        vpc.extend([(NETWORK_VAR, "vpc"), (SIGNATURE_VAR, "v2")]);
        let c = AlibabaConfig::from_lookup(&env(&vpc), None).unwrap();
        assert_eq!((&c.endpoint, c.signature_version), (&Endpoint::Vpc, SignatureVersion::V2));
        let mut custom = pairs.clone();
        custom.push((ENDPOINT_VAR, "http://127.0.0.1:7777"));
        let c = AlibabaConfig::from_lookup(&env(&custom), None).unwrap();
        assert_eq!(c.endpoint, Endpoint::Custom("http://127.0.0.1:7777".into()));
        for (var, value) in [(NETWORK_VAR, "internal"), (SIGNATURE_VAR, "v4"), (ENDPOINT_VAR, "http://kms.example.com")]
        {
            let mut bad = pairs.clone();
            bad.push((var, value));
            let e = AlibabaConfig::from_lookup(&env(&bad), None).unwrap_err();
            assert!(matches!(e, KmsError::InvalidRequest { .. }), "{var}={value}: {e}");
            assert!(!format!("{e:?}").contains("sk-cfg-secret"));
        }
        let text = format!("{:?}", AlibabaConfig::from_lookup(&env(&pairs), None).unwrap());
        assert!(!text.contains("sk-cfg-secret") && text.contains("LTAIexample"), "{text}");
    }

    #[test]
    fn from_uri_takes_the_region_from_the_uri() {
        let mut pairs = CREDS.to_vec();
        pairs.push((REGION_VAR, "cn-shanghai"));
        let (c, key) = AlibabaConfig::from_uri_lookup("alibaba-kms:cn-hangzhou/alias/app", &env(&pairs)).unwrap();
        assert_eq!((c.region.as_str(), key.as_str()), ("cn-hangzhou", "alias/app"));
        assert!(AlibabaConfig::from_uri_lookup("alibaba-kms:alias/app", &env(&pairs)).is_err());
    }

    #[test]
    fn backoff_is_bounded_full_jitter() {
        let p = default_retry();
        assert_eq!(p.max_attempts, 4);
        assert_eq!(p.cap(0), Duration::from_millis(100));
        assert_eq!(p.cap(3), Duration::from_millis(800));
        assert_eq!(p.cap(10), Duration::from_secs(5));
        assert_eq!(p.cap(200), Duration::from_secs(5));
        let samples: Vec<Duration> = (0..200).map(|_| p.delay(2)).collect();
        assert!(samples.iter().all(|d| *d <= Duration::from_millis(400)));
        assert!(samples.iter().any(|d| *d < Duration::from_millis(200)));
        assert!(samples.iter().any(|d| *d > Duration::from_millis(200)));
        assert_eq!(RetryPolicy::none().max_attempts, 1);
    }
}
