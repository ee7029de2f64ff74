//! The narrow seam to an HTTP API: one call, [`Transport::send`], so unit tests can put a fake
//! in place of the server; the real servers cover [`HttpTransport`].

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use reqwest::Client;
use reqwest::header::{CONTENT_LENGTH, HeaderMap, HeaderName, HeaderValue, RETRY_AFTER};
use zeroize::Zeroizing;

use crate::client::error_chain;

pub use reqwest::Method;

/// One request.
#[derive(Clone)]
pub struct Request {
    /// `GET`, `POST`, ...
    pub method: Method,
    /// Path and query, already encoded, appended to the transport's base URL. Zeroized on drop:
    /// a signed query may carry a base64 plaintext.
    pub target: Zeroizing<String>,
    /// Headers besides the client's defaults; mark secret values sensitive.
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// The body: build it with [`crate::secret::zeroizing_bytes`] or [`crate::secret::json_body`]
    /// when it holds a secret, so it is wiped when the last clone (hyper's included) is dropped.
    pub body: Option<Bytes>,
}

impl Request {
    /// A request without headers or body.
    pub fn new(method: Method, target: impl Into<String>) -> Self {
        Self { method, target: Zeroizing::new(target.into()), headers: Vec::new(), body: None }
    }
}

impl fmt::Debug for Request {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Neither the target (its query) nor header values nor the body: any may be secret.
        f.debug_struct("Request")
            .field("method", &self.method)
            .field("target_len", &self.target.len())
            .field("headers", &self.headers.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>())
            .field("body_len", &self.body.as_ref().map(Bytes::len))
            .finish()
    }
}

/// A response.
pub struct Response {
    /// The HTTP status.
    pub status: u16,
    /// `Retry-After` in seconds, when the server sent it in that form (the HTTP-date form is not
    /// read).
    pub retry_after: Option<Duration>,
    /// The body, zeroized on drop: decrypt answers hold plaintext.
    pub body: Zeroizing<Vec<u8>>,
}

impl Response {
    /// A response without `Retry-After` (fakes in tests).
    pub fn new(status: u16, body: impl Into<Vec<u8>>) -> Self {
        Self { status, retry_after: None, body: Zeroizing::new(body.into()) }
    }

    /// Whether the status is 2xx.
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

impl fmt::Debug for Response {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Response")
            .field("status", &self.status)
            .field("retry_after", &self.retry_after)
            .field("body_len", &self.body.len())
            .finish()
    }
}

/// Why no response came back.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum TransportError {
    /// The connection could not be made: the request was certainly not processed.
    Connect(String),
    /// The server's TLS certificate was refused: retrying will not help.
    Tls(String),
    /// The request timed out: it may have been processed.
    Timeout(String),
    /// The response was larger than the transport reads.
    TooLarge {
        /// The limit, in bytes.
        limit: usize,
    },
    /// Anything else on the way (a reset connection, a bad response): it may have been
    /// processed.
    Other(String),
}

impl TransportError {
    /// Whether another attempt may succeed (everything but a refused certificate).
    pub fn retryable(&self) -> bool {
        !matches!(self, TransportError::Tls(_))
    }

    /// Whether the server certainly did not act on the request (no connection was made).
    pub fn certainly_not_processed(&self) -> bool {
        matches!(self, TransportError::Connect(_) | TransportError::Tls(_))
    }

    /// The [`KmsError::Unavailable`] for this failure of a request to `addr`; `tls_hint` is
    /// added to certificate failures (e.g. which variable names a CA file).
    pub fn into_kms_error(self, addr: &str, tls_hint: &str) -> envseal_core::KmsError {
        let retryable = self.retryable();
        let message = match &self {
            TransportError::Connect(m) => format!("cannot connect to {addr}: {m}"),
            TransportError::Tls(m) => format!("TLS with {addr} failed{tls_hint}: {m}"),
            TransportError::Timeout(m) => format!("request to {addr} timed out: {m}"),
            TransportError::TooLarge { .. } | TransportError::Other(_) => format!("request to {addr} failed: {self}"),
        };
        envseal_core::KmsError::Unavailable { message, retryable }
    }
}

impl fmt::Display for TransportError {
    /// The cause, without the classification (the caller says which request failed).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TransportError::Connect(m)
            | TransportError::Tls(m)
            | TransportError::Timeout(m)
            | TransportError::Other(m) => f.write_str(m),
            TransportError::TooLarge { limit } => write!(f, "response larger than {limit} bytes"),
        }
    }
}

impl std::error::Error for TransportError {}

impl From<reqwest::Error> for TransportError {
    /// Keeps the cause chain, never the URL ([`error_chain`]).
    fn from(e: reqwest::Error) -> Self {
        let (connect, timeout) = (e.is_connect(), e.is_timeout());
        let message = error_chain(e);
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
}

/// Sends requests: the real server ([`HttpTransport`]) or a fake in tests.
#[async_trait]
pub trait Transport: Send + Sync {
    /// Sends one request and reads the whole response.
    ///
    /// # Errors
    /// [`TransportError`] when no (complete) response came back.
    async fn send(&self, request: Request) -> Result<Response, TransportError>;
}

/// A shared transport (e.g. a fake a test keeps a handle on).
#[async_trait]
impl<T: Transport + ?Sized> Transport for std::sync::Arc<T> {
    async fn send(&self, request: Request) -> Result<Response, TransportError> {
        (**self).send(request).await
    }
}

/// The real transport: a reqwest client and a base URL.
pub struct HttpTransport {
    client: Client,
    base: String,
    max_response: usize,
}

impl fmt::Debug for HttpTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpTransport").field("base", &self.base).finish_non_exhaustive()
    }
}

impl HttpTransport {
    /// Sends to `base` followed by each request's target (so `base` usually ends with `/`),
    /// reading at most `max_response` bytes of each response.
    pub fn new(client: Client, base: impl Into<String>, max_response: usize) -> Self {
        Self { client, base: base.into(), max_response }
    }
}

#[async_trait]
impl Transport for HttpTransport {
    async fn send(&self, request: Request) -> Result<Response, TransportError> {
        let url = Zeroizing::new(format!("{}{}", self.base, request.target.as_str()));
        let mut headers = HeaderMap::with_capacity(request.headers.len() + 1);
        for (name, value) in request.headers {
            headers.insert(name, value);
        }
        let mut builder = self.client.request(request.method.clone(), url.as_str());
        match request.body {
            Some(body) => builder = builder.body(body),
            None if request.method == Method::POST => {
                headers.insert(CONTENT_LENGTH, HeaderValue::from_static("0"));
            }
            None => {}
        }
        let resp = builder.headers(headers).send().await?;
        let status = resp.status().as_u16();
        let retry_after = resp
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let body = read_body(resp, self.max_response).await?;
        Ok(Response { status, retry_after, body })
    }
}

/// Reads a whole response body, at most `max` bytes, into a zeroizing buffer grown by hand so
/// that no reallocation leaves an unwiped copy behind.
///
/// # Errors
/// [`TransportError::TooLarge`] past `max`; the read error otherwise.
pub async fn read_body(mut resp: reqwest::Response, max: usize) -> Result<Zeroizing<Vec<u8>>, TransportError> {
    let hint = resp.content_length().and_then(|n| usize::try_from(n).ok()).unwrap_or(1024);
    let mut body = Zeroizing::new(Vec::with_capacity(hint.min(max)));
    while let Some(chunk) = resp.chunk().await? {
        if body.len() + chunk.len() > max {
            return Err(TransportError::TooLarge { limit: max });
        }
        if body.capacity() < body.len() + chunk.len() {
            let mut bigger = Zeroizing::new(Vec::with_capacity((body.len() + chunk.len()).max(2 * body.capacity())));
            bigger.extend_from_slice(&body);
            body = bigger;
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    use super::*;
    use crate::client::ClientOptions;

    /// A one-shot HTTP server on 127.0.0.1 answering `answer`; returns its base URL and a
    /// receiver of the raw request it got.
    async fn serve_once(answer: &'static str) -> (String, tokio::sync::oneshot::Receiver<String>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}/", listener.local_addr().unwrap());
        let (tx, rx) = tokio::sync::oneshot::channel();
        tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut buf = vec![0u8; 64 * 1024];
            let mut got = Vec::new();
            // Headers, then a body of Content-Length bytes.
            loop {
                let n = s.read(&mut buf).await.unwrap();
                got.extend_from_slice(&buf[..n]);
                let text = String::from_utf8_lossy(&got).into_owned();
                if let Some(end) = text.find("\r\n\r\n") {
                    let len = text
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().to_owned())
                        })
                        .and_then(|v| v.parse::<usize>().ok())
                        .unwrap_or(0);
                    if got.len() >= end + 4 + len {
                        break;
                    }
                }
                if n == 0 {
                    break;
                }
            }
            s.write_all(answer.as_bytes()).await.unwrap();
            let _ = tx.send(String::from_utf8_lossy(&got).into_owned());
        });
        (base, rx)
    }

    fn transport(base: String, max: usize) -> HttpTransport {
        let client = ClientOptions::new(Duration::from_secs(5), "envseal-http-test").no_proxy(true).build().unwrap();
        HttpTransport::new(client, base, max)
    }

    #[tokio::test]
    async fn sends_and_reads_with_retry_after() {
        let (base, got) =
            serve_once("HTTP/1.1 429 Too Many Requests\r\nRetry-After: 7\r\nContent-Length: 2\r\n\r\n{}").await;
        let mut req = Request::new(Method::POST, "v1/x?list=true");
        req.headers.push((HeaderName::from_static("x-test"), HeaderValue::from_static("1")));
        let resp = transport(base, 1024).send(req).await.unwrap();
        assert_eq!((resp.status, resp.retry_after, &resp.body[..]), (429, Some(Duration::from_secs(7)), &b"{}"[..]));
        assert!(!resp.is_success());
        let raw = got.await.unwrap().to_ascii_lowercase();
        assert!(raw.starts_with("post /v1/x?list=true http/1.1\r\n"), "{raw}");
        assert!(raw.contains("\r\nx-test: 1\r\n") && raw.contains("\r\ncontent-length: 0\r\n"), "{raw}");
        assert!(raw.contains("user-agent: envseal-http-test"), "{raw}");
    }

    #[tokio::test]
    async fn bodies_are_bounded() {
        let (base, _got) = serve_once("HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n0123456789").await;
        let e = transport(base, 9).send(Request::new(Method::GET, "")).await.unwrap_err();
        assert_eq!(e, TransportError::TooLarge { limit: 9 });
        assert!(e.retryable() && !e.certainly_not_processed());
    }

    #[tokio::test]
    async fn connection_refused_is_not_processed() {
        // Bind then drop: nothing listens on that port any more.
        let addr = TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap();
        let e = transport(format!("http://{addr}/"), 9).send(Request::new(Method::GET, "")).await.unwrap_err();
        assert!(matches!(e, TransportError::Connect(_)), "{e:?}");
        assert!(e.retryable() && e.certainly_not_processed());
        let k = e.into_kms_error("http://h", " (hint)");
        assert!(
            matches!(&k, envseal_core::KmsError::Unavailable { retryable: true, message } if message.starts_with("cannot connect to http://h: "))
        );
    }

    #[test]
    fn transport_errors_classify_and_describe() {
        let tls = TransportError::Tls("bad certificate".into());
        assert!(!tls.retryable() && tls.certainly_not_processed());
        let k = tls.into_kms_error("https://v", " (set X?)");
        assert!(k.to_string().contains("TLS with https://v failed (set X?): bad certificate"), "{k}");
        assert!(!k.is_retryable());
        let t = TransportError::Timeout("slow".into());
        assert!(t.retryable() && !t.certainly_not_processed());
        assert!(t.into_kms_error("a", "").is_retryable());
    }

    #[test]
    fn debug_shows_no_target_header_value_or_body() {
        let mut req = Request::new(Method::POST, "?Plaintext=c2VjcmV0");
        let mut token = HeaderValue::from_static("tok-dbg-secret");
        token.set_sensitive(true);
        req.headers.push((HeaderName::from_static("x-vault-token"), token));
        req.body = Some(Bytes::from_static(b"body-dbg-secret"));
        let text = format!("{req:?} {:?}", Response::new(200, b"resp-dbg-secret".to_vec()));
        assert!(!text.contains("c2VjcmV0") && !text.contains("dbg-secret"), "{text}");
        assert!(text.contains("x-vault-token"));
    }
}
