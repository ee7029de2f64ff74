//! The narrow seam to the HTTP API: one call, `send`, so unit tests can put a fake in place of
//! the server (STYLE.md §3); the real server covers the rest (tests/openbao.rs).

use std::fmt;
use std::net::IpAddr;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use envseal_core::KmsError;
use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderValue};
use reqwest::{Certificate, Client, Url};
use zeroize::Zeroizing;

use crate::config::{VaultConfig, invalid};

/// Largest response body read (Transit answers are a few KB; a LIST of many keys more).
const MAX_RESPONSE: usize = 8 << 20;

/// HTTP method of a Transit call. `List` is Vault's `LIST`, sent as `GET ...?list=true`
/// (the documented equivalent, friendlier to proxies).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Method {
    Get,
    List,
    Post,
}

/// One request: a path below `/v1/` and an optional JSON body.
///
/// The body is a [`Bytes`] owning a `Zeroizing<Vec<u8>>`: it holds plaintext for `encrypt`,
/// and is zeroized when the last clone (hyper's included) is dropped.
#[derive(Clone)]
pub(crate) struct Request {
    pub method: Method,
    pub path: String,
    pub body: Option<Bytes>,
}

impl fmt::Debug for Request {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Request")
            .field("method", &self.method)
            .field("path", &self.path)
            .field("body_len", &self.body.as_ref().map(Bytes::len))
            .finish()
    }
}

/// A response: status and body (zeroized on drop: `decrypt` answers hold plaintext).
pub(crate) struct Response {
    pub status: u16,
    pub body: Zeroizing<Vec<u8>>,
}

/// Why no response came back.
#[derive(Debug)]
pub(crate) enum TransportError {
    /// The connection could not be made: the request was certainly not processed.
    Connect(String),
    /// The server's TLS certificate was refused: retrying will not help.
    Tls(String),
    /// The request timed out: it may have been processed.
    Timeout(String),
    /// Anything else on the way (reset connection, bad response): it may have been processed.
    Other(String),
}

#[async_trait]
pub(crate) trait Transport: Send + Sync {
    async fn send(&self, request: Request) -> Result<Response, TransportError>;
}

/// The real transport: reqwest with rustls.
pub(crate) struct HttpTransport {
    client: Client,
    /// `addr` + `/v1/`.
    base: String,
    headers: HeaderMap,
}

impl HttpTransport {
    /// Builds a client for `config`. Redirects are not followed (a custom token header would
    /// follow them to any host); the CA file, when given, replaces the platform's roots.
    pub(crate) fn new(config: &VaultConfig) -> Result<Self, KmsError> {
        let url =
            Url::parse(&config.addr).map_err(|e| invalid(format!("invalid Vault address {:?}: {e}", config.addr)))?;
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
        headers.insert("x-vault-token", token);
        // Vault's own clients send it; servers may require it against SSRF.
        headers.insert("x-vault-request", HeaderValue::from_static("true"));
        if let Some(ns) = config.namespace.as_deref().filter(|n| !n.is_empty()) {
            let v = HeaderValue::from_str(ns).map_err(|_| invalid(format!("invalid Vault namespace {ns:?}")))?;
            headers.insert("x-vault-namespace", v);
        }

        let mut builder = Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(config.timeout)
            .connect_timeout(config.timeout.min(Duration::from_secs(10)))
            .pool_idle_timeout(Duration::from_secs(60))
            .user_agent(concat!("envseal-kms-vault/", env!("CARGO_PKG_VERSION")));
        if let Some(path) = &config.ca_cert {
            let pem = std::fs::read(path)
                .map_err(|e| invalid(format!("cannot read the CA certificate file {}: {e}", path.display())))?;
            let certs = Certificate::from_pem_bundle(&pem)
                .map_err(|e| invalid(format!("no valid PEM certificate in {}: {e}", path.display())))?;
            if certs.is_empty() {
                return Err(invalid(format!("no PEM certificate in {}", path.display())));
            }
            builder = builder.tls_certs_only(certs);
        }
        let host = url.host_str().unwrap_or_default();
        let loopback = host.eq_ignore_ascii_case("localhost")
            || host.trim_matches(['[', ']']).parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback());
        if loopback {
            // A proxy from HTTP(S)_PROXY has no business seeing loopback traffic (or the token).
            builder = builder.no_proxy();
        }
        let client = builder.build().map_err(|e| invalid(format!("cannot build the HTTP client: {e}")))?;
        let base = format!("{}/v1/", config.addr.trim_end_matches('/'));
        Ok(Self { client, base, headers })
    }
}

#[async_trait]
impl Transport for HttpTransport {
    async fn send(&self, request: Request) -> Result<Response, TransportError> {
        let url = match request.method {
            Method::List => format!("{}{}?list=true", self.base, request.path),
            _ => format!("{}{}", self.base, request.path),
        };
        let mut rb = match request.method {
            Method::Get | Method::List => self.client.get(&url),
            Method::Post => self.client.post(&url),
        };
        rb = rb.headers(self.headers.clone());
        if let Some(body) = request.body {
            rb = rb.header(CONTENT_TYPE, "application/json").body(body);
        }
        let mut resp = rb.send().await.map_err(classify)?;
        let status = resp.status().as_u16();
        let mut body = Zeroizing::new(Vec::with_capacity(
            resp.content_length().and_then(|n| usize::try_from(n).ok()).unwrap_or(1024).min(MAX_RESPONSE),
        ));
        while let Some(chunk) = resp.chunk().await.map_err(classify)? {
            if body.len() + chunk.len() > MAX_RESPONSE {
                return Err(TransportError::Other(format!("response larger than {MAX_RESPONSE} bytes")));
            }
            // Grow by hand so no reallocation leaves an unzeroized copy behind.
            if body.capacity() < body.len() + chunk.len() {
                let mut bigger =
                    Zeroizing::new(Vec::with_capacity((body.len() + chunk.len()).max(2 * body.capacity())));
                bigger.extend_from_slice(&body);
                body = bigger;
            }
            body.extend_from_slice(&chunk);
        }
        Ok(Response { status, body })
    }
}

/// Maps a reqwest error to a transport error, keeping its cause chain (no token: it is only in
/// a sensitive header; no body: reqwest errors do not carry it).
fn classify(e: reqwest::Error) -> TransportError {
    let (connect, timeout) = (e.is_connect(), e.is_timeout());
    let e = e.without_url();
    let mut message = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        message.push_str(": ");
        message.push_str(&s.to_string());
        source = s.source();
    }
    if message.contains("certificate") {
        TransportError::Tls(message)
    } else if connect {
        TransportError::Connect(message)
    } else if timeout {
        TransportError::Timeout(message)
    } else {
        TransportError::Other(message)
    }
}
