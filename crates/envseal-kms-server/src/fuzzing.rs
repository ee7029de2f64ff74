//! Entry points for the fuzz targets in `fuzz/` (hidden from the docs, not a stable API).
//!
//! The request parsers of this crate are private. These wrappers build the crate's own request
//! type from fuzzed parts and call the real functions (query and form parsing, percent
//! decoding, the Alibaba ACS3 and RPC V2 verifiers, the SigV4 verifier, and the two API
//! handlers over a caller-supplied backend), so a fuzz target exercises exactly the code the
//! server runs and nothing is parsed twice.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use envseal_support::percent;
use hyper::body::Bytes;
use hyper::header::{HeaderMap, HeaderName, HeaderValue};
use serde_json::Value;

use crate::auth::{AccessKey, Credentials, NonceCache};
use crate::error::Fault;
use crate::mac;
use crate::request::{App, Call, Incoming};
use crate::wire;
use crate::{ServerConfig, acs, alibaba, aws, backend, sigv4};

/// The access key id the harness signs with and the verifiers know.
pub const ACCESS_KEY_ID: &str = "AKFUZZ";
/// Its secret (a fixture, not a credential).
pub const SECRET: &str = "fuzz-secret";
/// Nonces a harness remembers (bounded so a long fuzz run does not grow without limit).
const NONCES: usize = 4096;

/// A request as the fuzzer describes it. Header names or values that HTTP cannot carry are
/// dropped, as hyper would have refused them before the server saw them.
#[derive(Debug, Clone, Copy)]
pub struct FuzzRequest<'a> {
    /// `GET`, `POST`, ...
    pub method: &'a str,
    /// The path as sent.
    pub path: &'a str,
    /// The query string, without `?`.
    pub query: &'a str,
    /// Header name and value pairs.
    pub headers: &'a [(&'a str, &'a str)],
    /// The body.
    pub body: &'a [u8],
}

fn incoming(r: &FuzzRequest<'_>) -> Incoming {
    let mut headers = HeaderMap::new();
    for (name, value) in r.headers {
        if let (Ok(n), Ok(v)) = (HeaderName::from_bytes(name.as_bytes()), HeaderValue::from_str(value)) {
            headers.append(n, v);
        }
    }
    Incoming {
        method: r.method.to_owned(),
        path: r.path.to_owned(),
        query: r.query.to_owned(),
        headers,
        body: Bytes::copy_from_slice(r.body),
    }
}

fn fault(f: Fault) -> String {
    format!("{:?}: {}", f.class, f.message)
}

fn credentials() -> Credentials {
    let mut c = Credentials::new();
    c.insert(AccessKey::new(ACCESS_KEY_ID, SECRET, "fuzzer"));
    c
}

/// `envseal_support::percent::decode`.
pub fn percent_decode(s: &str, plus_is_space: bool) -> Option<String> {
    percent::decode(s, plus_is_space)
}

/// `envseal_support::percent::encode` (RFC 3986, as both signature schemes use it).
pub fn percent_encode(s: &str) -> String {
    percent::encode(s)
}

/// `wire::parse_pairs`: a query string or form body into decoded pairs.
pub fn parse_pairs(s: &str) -> Option<Vec<(String, String)>> {
    wire::parse_pairs(s)
}

/// `wire::parse_amz_date` (`YYYYMMDDThhmmssZ`).
pub fn parse_amz_date(s: &str) -> Option<SystemTime> {
    wire::parse_amz_date(s)
}

/// `wire::parse_iso8601` (Alibaba timestamps).
pub fn parse_iso8601(s: &str) -> Option<SystemTime> {
    wire::parse_iso8601(s)
}

/// `backend::context_from_json`: Alibaba's `EncryptionContext` parameter (a JSON object).
///
/// # Errors
/// The fault's class and message.
pub fn context_from_json(s: &str) -> Result<envseal_core::EncryptionContext, String> {
    backend::context_from_json(s).map_err(fault)
}

/// `acs::params`: the query string and, for a form body, the body's parameters.
///
/// # Errors
/// The fault's class and message.
pub fn alibaba_params(r: &FuzzRequest<'_>) -> Result<BTreeMap<String, String>, String> {
    acs::params(&incoming(r)).map_err(fault)
}

/// `acs::params` then `acs::verify` (ACS3 Authorization header and canonical request, or
/// the RPC V2 signature parameters), with [`ACCESS_KEY_ID`] known.
///
/// # Errors
/// The fault's class and message.
pub fn acs_verify(r: &FuzzRequest<'_>) -> Result<(), String> {
    let req = incoming(r);
    let params = acs::params(&req).map_err(fault)?;
    let nonces = NonceCache::new(Duration::from_secs(60), NONCES);
    acs::verify(&req, &params, &credentials(), &nonces, Duration::from_secs(15 * 60)).map(|_| ()).map_err(fault)
}

/// `sigv4::verify` (Authorization header parsing, canonical request), with [`ACCESS_KEY_ID`]
/// known, for service `kms`.
///
/// # Errors
/// The fault's class and message.
pub fn sigv4_verify(r: &FuzzRequest<'_>) -> Result<(), String> {
    sigv4::verify(&incoming(r), &credentials(), Duration::from_secs(15 * 60), "kms").map(|_| ()).map_err(fault)
}

/// Runs the API handlers on requests that the harness signs itself, so that fuzzed bodies and
/// parameters reach the actions behind the signature check.
pub struct Harness {
    app: App,
    rt: tokio::runtime::Runtime,
    nonce: std::cell::Cell<u64>,
}

impl std::fmt::Debug for Harness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Harness").finish_non_exhaustive()
    }
}

impl Harness {
    /// A harness over `config`'s backend; its credentials are replaced by [`ACCESS_KEY_ID`].
    ///
    /// # Panics
    /// If a single-threaded tokio runtime cannot be built.
    pub fn new(mut config: ServerConfig) -> Self {
        config.credentials = credentials();
        // Invariant: building a current-thread runtime fails only if the OS refuses a timer
        // or I/O driver, which a fuzz run cannot recover from anyway.
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("tokio runtime");
        Self { app: App::new(config, NONCES), rt, nonce: std::cell::Cell::new(0) }
    }

    fn call(&self) -> Call<'_> {
        Call::new(&self.app, "fuzz".to_owned(), "127.0.0.1".to_owned())
    }

    /// An AWS KMS JSON 1.1 request `X-Amz-Target: target` with `body`, signed with SigV4 and
    /// handed to `aws::handle`. `None` when `target` cannot be sent as a header value.
    ///
    /// # Errors
    /// The fault's class and message.
    pub fn aws(&self, target: &str, body: &[u8]) -> Option<Result<Value, String>> {
        // SigV4 canonicalizes header values by collapsing whitespace; keep to values that are
        // their own canonical form so the signature below is the one the verifier computes.
        if target.is_empty() || !target.bytes().all(|b| b.is_ascii_graphic()) {
            return None;
        }
        let now = SystemTime::now();
        let amz_date: String = wire::iso8601(now).chars().filter(|c| *c != '-' && *c != ':').collect();
        let date = &amz_date[..8];
        let content_type = "application/x-amz-json-1.1";
        let host = "127.0.0.1";
        let canonical_request = format!(
            "POST\n/\n\ncontent-type:{content_type}\nhost:{host}\nx-amz-date:{amz_date}\nx-amz-target:{target}\n\ncontent-type;host;x-amz-date;x-amz-target\n{}",
            mac::sha256_hex(body)
        );
        let scope = format!("{date}/us-east-1/kms/aws4_request");
        let string_to_sign =
            format!("AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{}", mac::sha256_hex(canonical_request.as_bytes()));
        let signature = hex::encode(mac::hmac_sha256(
            &sigv4::signing_key(SECRET, date, "us-east-1", "kms"),
            string_to_sign.as_bytes(),
        ));
        let auth = format!(
            "AWS4-HMAC-SHA256 Credential={ACCESS_KEY_ID}/{scope}, SignedHeaders=content-type;host;x-amz-date;x-amz-target, Signature={signature}"
        );
        let headers = [
            ("authorization", auth.as_str()),
            ("content-type", content_type),
            ("host", host),
            ("x-amz-date", amz_date.as_str()),
            ("x-amz-target", target),
        ];
        let req = incoming(&FuzzRequest { method: "POST", path: "/", query: "", headers: &headers, body });
        let mut call = self.call();
        call.api = Some(crate::Api::Aws);
        Some(self.rt.block_on(aws::handle(&mut call, &req)).map_err(fault))
    }

    /// An Alibaba Cloud RPC request whose parameters are `params` (a query string), completed
    /// with the RPC V2 signature parameters (any the fuzzer gave are replaced), sent as a form
    /// body and handed to `alibaba::handle`. `None` when `params` does not decode.
    ///
    /// # Errors
    /// The fault's class and message.
    pub fn alibaba(&self, params: &str) -> Option<Result<Value, String>> {
        let mut p: BTreeMap<String, String> = wire::parse_pairs(params)?.into_iter().collect();
        let n = self.nonce.get();
        self.nonce.set(n + 1);
        p.entry("Version".to_owned()).or_insert_with(|| alibaba::VERSION.to_owned());
        for (k, v) in [
            ("AccessKeyId", ACCESS_KEY_ID.to_owned()),
            ("SignatureMethod", "HMAC-SHA1".to_owned()),
            ("SignatureVersion", "1.0".to_owned()),
            ("SignatureNonce", format!("fuzz-{n}")),
            ("Timestamp", wire::iso8601(SystemTime::now())),
        ] {
            p.insert(k.to_owned(), v);
        }
        p.remove("Signature");
        p.remove("SecurityToken");
        let signature = acs::v2_signature(SECRET, &acs::v2_string_to_sign("POST", &p));
        p.insert("Signature".to_owned(), signature);
        let body = p
            .iter()
            .map(|(k, v)| format!("{}={}", percent::encode(k), percent::encode(v)))
            .collect::<Vec<_>>()
            .join("&");
        let headers = [("content-type", "application/x-www-form-urlencoded"), ("host", "127.0.0.1")];
        let req =
            incoming(&FuzzRequest { method: "POST", path: "/", query: "", headers: &headers, body: body.as_bytes() });
        let mut call = self.call();
        call.api = Some(crate::Api::Alibaba);
        Some(self.rt.block_on(alibaba::handle(&mut call, &req)).map_err(fault))
    }
}
