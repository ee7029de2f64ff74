//! Building the HTTP client, and describing its errors.

use std::net::IpAddr;
use std::path::Path;
use std::time::Duration;

use envseal_core::KmsError;
use reqwest::header::HeaderMap;
use reqwest::{Certificate, Client};

/// Longest time spent connecting, whatever the request timeout.
const MAX_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long an idle pooled connection is kept.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// How to build a client.
#[derive(Debug)]
#[non_exhaustive]
pub struct ClientOptions<'a> {
    /// Time limit of one request, connection included (the connection itself gets at most 10 s).
    pub timeout: Duration,
    /// `User-Agent`, e.g. `envseal-kms-vault/0.1.0`.
    pub user_agent: &'static str,
    /// Never use a proxy from `HTTP(S)_PROXY`: set for loopback servers (a proxy has no business
    /// seeing that traffic, or a token) and link-local metadata services.
    pub no_proxy: bool,
    /// A PEM file of CA certificates: when given, these are the only roots trusted.
    pub ca_file: Option<&'a Path>,
    /// Headers sent with every request (mark secret ones sensitive).
    pub default_headers: HeaderMap,
}

impl<'a> ClientOptions<'a> {
    /// Options with this timeout and user agent, the platform's roots, proxies allowed, no
    /// default headers.
    pub fn new(timeout: Duration, user_agent: &'static str) -> Self {
        Self { timeout, user_agent, no_proxy: false, ca_file: None, default_headers: HeaderMap::new() }
    }

    /// Sets [`ClientOptions::no_proxy`].
    #[must_use]
    pub fn no_proxy(mut self, no_proxy: bool) -> Self {
        self.no_proxy = no_proxy;
        self
    }

    /// Sets [`ClientOptions::ca_file`].
    #[must_use]
    pub fn ca_file(mut self, ca_file: Option<&'a Path>) -> Self {
        self.ca_file = ca_file;
        self
    }

    /// Sets [`ClientOptions::default_headers`].
    #[must_use]
    pub fn default_headers(mut self, headers: HeaderMap) -> Self {
        self.default_headers = headers;
        self
    }

    /// A reqwest client with rustls. Redirects are never followed: a signed request is bound to
    /// its host, and a token header must not follow a redirect to another one.
    ///
    /// # Errors
    /// [`KmsError::InvalidRequest`] for a CA file that cannot be read or holds no PEM
    /// certificate, or a client that cannot be built.
    pub fn build(self) -> Result<Client, KmsError> {
        let mut builder = Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(self.timeout)
            .connect_timeout(self.timeout.min(MAX_CONNECT_TIMEOUT))
            .pool_idle_timeout(POOL_IDLE_TIMEOUT)
            .user_agent(self.user_agent)
            .default_headers(self.default_headers);
        if let Some(path) = self.ca_file {
            let pem = std::fs::read(path)
                .map_err(|e| invalid(format!("cannot read the CA certificate file {}: {e}", path.display())))?;
            let certs = Certificate::from_pem_bundle(&pem)
                .map_err(|e| invalid(format!("no valid PEM certificate in {}: {e}", path.display())))?;
            if certs.is_empty() {
                return Err(invalid(format!("no PEM certificate in {}", path.display())));
            }
            builder = builder.tls_certs_only(certs);
        }
        if self.no_proxy {
            builder = builder.no_proxy();
        }
        builder.build().map_err(|e| invalid(format!("cannot build the HTTP client: {e}")))
    }
}

/// Whether `host` (a URL's host, IPv6 literals with or without brackets) is `localhost` or a
/// loopback address.
pub fn is_loopback(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
        || host.trim_matches(['[', ']']).parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// A reqwest error with its causes, `: `-separated, without the URL (a query may hold a
/// plaintext; a token is only ever in a sensitive header, and reqwest errors carry no body).
pub fn error_chain(e: reqwest::Error) -> String {
    let e = e.without_url();
    let mut message = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        message.push_str(": ");
        message.push_str(&s.to_string());
        source = s.source();
    }
    message
}

/// Longest server message kept in an error: enough to act on, too short to carry a body.
pub const MAX_SERVER_MESSAGE: usize = 300;

/// Cuts a server's message to [`MAX_SERVER_MESSAGE`] bytes, at a character boundary, marking
/// the cut with `…`.
pub fn bound_message(message: &mut String) {
    if message.len() > MAX_SERVER_MESSAGE {
        let mut cut = MAX_SERVER_MESSAGE;
        while !message.is_char_boundary(cut) {
            cut -= 1;
        }
        message.truncate(cut);
        message.push('…');
    }
}

fn invalid(message: String) -> KmsError {
    KmsError::InvalidRequest { message }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_bounded_on_char_boundaries() {
        let mut m = "é".repeat(400);
        bound_message(&mut m);
        assert!(m.ends_with('…') && m.len() <= MAX_SERVER_MESSAGE + '…'.len_utf8(), "{}", m.len());
        let mut short = "short".to_owned();
        bound_message(&mut short);
        assert_eq!(short, "short");
    }

    #[test]
    fn loopback_hosts() {
        for host in ["localhost", "LOCALHOST", "127.0.0.1", "127.8.9.10", "::1", "[::1]"] {
            assert!(is_loopback(host), "{host}");
        }
        for host in ["example.com", "10.0.0.1", "[::2]", "localhost.example", "", "100.100.100.200"] {
            assert!(!is_loopback(host), "{host}");
        }
    }

    #[test]
    fn ca_files_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, b"not a certificate\n").unwrap();
        let e = ClientOptions::new(Duration::from_secs(1), "t").ca_file(Some(&empty)).build().unwrap_err();
        assert!(matches!(&e, KmsError::InvalidRequest { message } if message.contains("no PEM certificate")), "{e}");
        let missing = dir.path().join("missing.pem");
        let e = ClientOptions::new(Duration::from_secs(1), "t").ca_file(Some(&missing)).build().unwrap_err();
        assert!(matches!(&e, KmsError::InvalidRequest { message } if message.contains("cannot read")), "{e}");
        assert!(ClientOptions::new(Duration::from_secs(1), "t").no_proxy(true).build().is_ok());
    }
}
