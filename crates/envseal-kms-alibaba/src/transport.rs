//! The narrow seam to the HTTP API: one call, `send`, so unit tests can put a fake in place of
//! the server (STYLE.md §3); tests/http_api.rs drives the real transport against a local
//! server.

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use envseal_core::KmsError;
use reqwest::Client;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use zeroize::Zeroizing;

use crate::config::ResolvedEndpoint;
use crate::credentials::{describe_reqwest, invalid};

/// Largest response body read (KMS answers are a few KB; a page of a list more).
const MAX_RESPONSE: usize = 4 << 20;

/// One signed request: always `POST /?QUERY` with an empty body, as the official SDK sends
/// KMS calls. The query may hold a base64 plaintext (Encrypt), so it is zeroized on drop.
pub(crate) struct Request {
    /// The query string, already encoded (the canonical query that was signed).
    pub query: Zeroizing<String>,
    /// Headers, lower-case names; values marked sensitive where they hold a secret.
    pub headers: Vec<(&'static str, HeaderValue)>,
}

impl fmt::Debug for Request {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Request")
            .field("query_len", &self.query.len())
            .field("headers", &self.headers.iter().map(|(n, _)| *n).collect::<Vec<_>>())
            .finish()
    }
}

/// A response: status and body (zeroized on drop: Decrypt answers hold plaintext).
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
    /// Anything else on the way: it may have been processed.
    Other(String),
}

#[async_trait]
pub(crate) trait Transport: Send + Sync {
    async fn send(&self, request: Request) -> Result<Response, TransportError>;
}

/// The real transport: reqwest with rustls.
pub(crate) struct HttpTransport {
    client: Client,
    /// `https://HOST[:PORT]/`.
    url: String,
}

impl HttpTransport {
    /// A client for `endpoint`. Redirects are not followed (a signed request is bound to its
    /// host); loopback endpoints bypass any proxy from the environment.
    pub(crate) fn new(endpoint: &ResolvedEndpoint, timeout: Duration) -> Result<Self, KmsError> {
        let mut builder = Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(10)))
            .pool_idle_timeout(Duration::from_secs(60))
            .user_agent(concat!("envseal-kms-alibaba/", env!("CARGO_PKG_VERSION")));
        if endpoint.loopback {
            builder = builder.no_proxy();
        }
        let client = builder.build().map_err(|e| invalid(format!("cannot build the HTTP client: {e}")))?;
        Ok(Self { client, url: format!("{}/", endpoint.base) })
    }
}

#[async_trait]
impl Transport for HttpTransport {
    async fn send(&self, request: Request) -> Result<Response, TransportError> {
        let url = Zeroizing::new(format!("{}?{}", self.url, request.query.as_str()));
        let mut headers = HeaderMap::with_capacity(request.headers.len());
        for (name, value) in request.headers {
            headers.insert(HeaderName::from_static(name), value);
        }
        let mut resp = self
            .client
            .post(url.as_str())
            .headers(headers)
            .header(reqwest::header::CONTENT_LENGTH, "0")
            .send()
            .await
            .map_err(classify)?;
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

/// Maps a reqwest error to a transport error, keeping its cause chain but not the URL (its
/// query may hold a plaintext).
fn classify(e: reqwest::Error) -> TransportError {
    let (connect, timeout) = (e.is_connect(), e.is_timeout());
    let message = describe_reqwest(e);
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
