//! Request signing for the Alibaba Cloud OpenAPI: **V3** (`ACS3-HMAC-SHA256`, the default) and
//! **V2** (the RPC `HMAC-SHA1` signature, optional).
//!
//! No Rust SDK exists for Alibaba Cloud, so both are written here from the published
//! algorithms and checked byte for byte against the official Python SDK
//! (`alibabacloud-tea-openapi`, which `alibabacloud-kms20160120` uses): the pinned answers in
//! this module's tests were produced by it, and `tests/sdk_signature.rs` re-runs the SDK on the
//! same inputs when Python is available (see docs/backends/alibaba-kms.md §Tests).
//!
//! The functions are pure: the caller supplies the nonce and the timestamp (as the
//! `x-acs-signature-nonce` / `x-acs-date` headers, or the `SignatureNonce` / `Timestamp`
//! parameters), so a signature can be reproduced exactly.
//!
//! ```
//! use std::collections::BTreeMap;
//!
//! use envseal_kms_alibaba::AccessKeySecret;
//! use envseal_kms_alibaba::signer::{EMPTY_SHA256, sign_v3};
//!
//! let query = BTreeMap::from([("KeyId".to_owned(), "alias/app".to_owned())]);
//! let headers = [
//!     ("host", "kms.cn-hangzhou.aliyuncs.com"),
//!     ("x-acs-action", "DescribeKey"),
//!     ("x-acs-version", "2016-01-20"),
//!     ("x-acs-date", "2024-01-02T03:04:05Z"),
//!     ("x-acs-signature-nonce", "0123456789abcdef0123456789abcdef"),
//!     ("x-acs-content-sha256", EMPTY_SHA256),
//! ];
//! let secret = AccessKeySecret::new("example-secret");
//! let signed = sign_v3("POST", "/", &query, &headers, EMPTY_SHA256, "LTAIexample", &secret);
//! assert!(signed.authorization.starts_with("ACS3-HMAC-SHA256 Credential=LTAIexample,SignedHeaders=host;x-acs-action;"));
//! assert_eq!(signed.signature.len(), 64);
//! ```

use std::collections::BTreeMap;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use envseal_support::percent;
use hmac::{Hmac, KeyInit, Mac};
use sha1::Sha1;
use sha2::{Digest, Sha256};

use crate::credentials::AccessKeySecret;

/// The V3 signature algorithm name, first word of the `Authorization` header.
pub const ACS3_HMAC_SHA256: &str = "ACS3-HMAC-SHA256";

/// `SignatureMethod` of a V2 signature.
pub const V2_SIGNATURE_METHOD: &str = "HMAC-SHA1";

/// `SignatureVersion` of a V2 signature.
pub const V2_SIGNATURE_VERSION: &str = "1.0";

/// Lower-case hex SHA-256 of the empty string: the `x-acs-content-sha256` of a request without
/// a body (every KMS call envseal makes).
pub const EMPTY_SHA256: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

/// Which signature a client puts on its requests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SignatureVersion {
    /// `ACS3-HMAC-SHA256` in the `Authorization` header (the SDKs' default).
    #[default]
    V3,
    /// The RPC `HMAC-SHA1` signature in the `Signature` query parameter (older gateways and
    /// proxies that only know it).
    V2,
}

impl SignatureVersion {
    /// `v3` or `v2`.
    pub fn as_str(self) -> &'static str {
        match self {
            SignatureVersion::V3 => "v3",
            SignatureVersion::V2 => "v2",
        }
    }

    /// Parses `v3` / `v2` (also `3` / `2`, `ACS3-HMAC-SHA256` / `HMAC-SHA1`), case-insensitively.
    pub fn parse(s: &str) -> Option<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "v3" | "3" | "acs3-hmac-sha256" => Some(SignatureVersion::V3),
            "v2" | "2" | "hmac-sha1" => Some(SignatureVersion::V2),
            _ => None,
        }
    }
}

/// Percent-encoding of RFC 3986 as both signatures use it ([`envseal_support::percent`]): every
/// byte of the UTF-8 form except the unreserved `A-Z a-z 0-9 - _ . ~` becomes `%XX` (upper-case
/// hex); a space is `%20`, never `+`, and `*` is `%2A`.
pub use envseal_support::percent::encode as percent_encode;

/// `k1=v1&k2=v2...`: parameters sorted by name (byte order), names and values
/// [percent-encoded](percent_encode). Used as the V3 canonical query string, as the V2
/// canonicalized query string, and as the query string actually sent (so what is signed is
/// what travels).
pub fn canonical_query(params: &BTreeMap<String, String>) -> String {
    let mut out = String::new();
    for (k, v) in params {
        if !out.is_empty() {
            out.push('&');
        }
        percent::encode_into(k, b"", &mut out);
        out.push('=');
        // No temporary copy: a value may be a base64 plaintext (the caller wipes `out`).
        percent::encode_into(v, b"", &mut out);
    }
    out
}

/// Lower-case hex SHA-256 of `data` (V3's `HashedRequestPayload`).
pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// Everything a V3 signature is made of, for checking against another implementation.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct V3Signature {
    /// `METHOD \n URI \n CanonicalQuery \n CanonicalHeaders \n SignedHeaders \n HashedPayload`.
    pub canonical_request: String,
    /// `ACS3-HMAC-SHA256 \n hex(sha256(canonical_request))`.
    pub string_to_sign: String,
    /// Names of the signed headers, lower-case, sorted, joined with `;`.
    pub signed_headers: String,
    /// `hex(HMAC-SHA256(secret, string_to_sign))`.
    pub signature: String,
    /// The `Authorization` header value:
    /// `ACS3-HMAC-SHA256 Credential=AK,SignedHeaders=...,Signature=...`.
    pub authorization: String,
}

/// Signs a request with `ACS3-HMAC-SHA256` (V3).
///
/// `headers` are the headers to sign, every one of them (names in any case; values are
/// trimmed; a name given twice is signed as its values sorted and joined with `,`, as the SDK
/// does). Send exactly these headers. `payload_sha256` is the lower-case hex SHA-256 of the
/// body ([`EMPTY_SHA256`] without one) and must also be sent as `x-acs-content-sha256`.
pub fn sign_v3(
    method: &str,
    path: &str,
    query: &BTreeMap<String, String>,
    headers: &[(&str, &str)],
    payload_sha256: &str,
    access_key_id: &str,
    secret: &AccessKeySecret,
) -> V3Signature {
    let mut merged: BTreeMap<String, Vec<&str>> = BTreeMap::new();
    for (name, value) in headers {
        merged.entry(name.to_ascii_lowercase()).or_default().push(value.trim());
    }
    let mut canonical_headers = String::new();
    for (name, values) in &mut merged {
        values.sort_unstable();
        canonical_headers.push_str(name);
        canonical_headers.push(':');
        canonical_headers.push_str(&values.join(","));
        canonical_headers.push('\n');
    }
    let signed_headers = merged.keys().map(String::as_str).collect::<Vec<_>>().join(";");
    let uri = if path.is_empty() { "/" } else { path };
    let canonical_request =
        format!("{method}\n{uri}\n{}\n{canonical_headers}\n{signed_headers}\n{payload_sha256}", canonical_query(query));
    let string_to_sign = format!("{ACS3_HMAC_SHA256}\n{}", sha256_hex(canonical_request.as_bytes()));
    let signature = hex::encode(hmac_sha256(secret.expose_secret().as_bytes(), string_to_sign.as_bytes()));
    let authorization =
        format!("{ACS3_HMAC_SHA256} Credential={access_key_id},SignedHeaders={signed_headers},Signature={signature}");
    V3Signature { canonical_request, string_to_sign, signed_headers, signature, authorization }
}

/// Everything a V2 signature is made of.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct V2Signature {
    /// The sorted, percent-encoded parameters ([`canonical_query`]).
    pub canonicalized_query: String,
    /// `METHOD & %2F & percentEncode(canonicalized_query)`.
    pub string_to_sign: String,
    /// `base64(HMAC-SHA1(secret + "&", string_to_sign))`, the `Signature` parameter.
    pub signature: String,
}

/// Signs the parameters of an RPC request with `HMAC-SHA1` (V2).
///
/// `params` are every parameter of the request, common ones included (`Action`, `Version`,
/// `Format`, `AccessKeyId`, `SignatureMethod`, `SignatureVersion`, `SignatureNonce`,
/// `Timestamp`, `SecurityToken` for STS credentials), `Signature` excluded.
pub fn sign_v2(method: &str, params: &BTreeMap<String, String>, secret: &AccessKeySecret) -> V2Signature {
    let canonicalized_query = canonical_query(params);
    let string_to_sign = format!("{method}&%2F&{}", percent_encode(&canonicalized_query));
    let mut key = zeroize::Zeroizing::new(String::with_capacity(secret.expose_secret().len() + 1));
    key.push_str(secret.expose_secret());
    key.push('&');
    let mut mac = <Hmac<Sha1> as KeyInit>::new_from_slice(key.as_bytes()).expect("HMAC accepts keys of any length");
    mac.update(string_to_sign.as_bytes());
    let signature = B64.encode(mac.finalize().into_bytes());
    V2Signature { canonicalized_query, string_to_sign, signature }
}

/// The KMS API version every request names.
pub const API_VERSION: &str = "2016-01-20";

/// One RPC call to sign: what is fixed by the caller (nonce and time included), so the same
/// inputs always give the same request.
#[derive(Clone, Copy, Debug)]
pub struct RpcCall<'a> {
    /// The endpoint's host, with `:PORT` when not the scheme's default (the `host` header).
    pub host: &'a str,
    /// The API action, e.g. `GenerateDataKey`.
    pub action: &'a str,
    /// The action's own parameters (`KeyId`, `EncryptionContext`, ...), unencoded.
    pub params: &'a BTreeMap<String, String>,
    /// A fresh random nonce (`x-acs-signature-nonce` / `SignatureNonce`).
    pub nonce: &'a str,
    /// The current UTC time as `YYYY-MM-DDThh:mm:ssZ` (`x-acs-date` / `Timestamp`).
    pub timestamp: &'a str,
}

/// A signed RPC request, as envseal sends it: `POST https://HOST/?{query}` with an empty body
/// and these headers.
///
/// `Debug` shows the header names only (a header may hold the STS token; the query may hold a
/// base64 plaintext).
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SignedRequest {
    /// The encoded query string, without `?`.
    pub query: String,
    /// Header names (lower-case) and values, `authorization` included for V3.
    pub headers: Vec<(&'static str, String)>,
    /// The V3 signature's parts (V3 requests).
    pub v3: Option<V3Signature>,
    /// The V2 signature's parts (V2 requests).
    pub v2: Option<V2Signature>,
}

impl std::fmt::Debug for SignedRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SignedRequest")
            .field("query_len", &self.query.len())
            .field("headers", &self.headers.iter().map(|(n, _)| *n).collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

/// Builds and signs an RPC call the way the official SDK does for KMS (every parameter in the
/// query string of a `POST /`, no body):
///
/// - **V3**: the query is the action's parameters; the signed headers are `host`,
///   `x-acs-action`, `x-acs-version`, `x-acs-date`, `x-acs-signature-nonce`,
///   `x-acs-content-sha256` (of the empty body), and with an STS token `x-acs-accesskey-id` and
///   `x-acs-security-token`; `authorization` carries the signature; `accept:
///   application/json` is sent unsigned.
/// - **V2**: the query is the action's parameters plus `Action`, `Version`, `Format=json`,
///   `AccessKeyId`, `SignatureMethod=HMAC-SHA1`, `SignatureVersion=1.0`, `SignatureNonce`,
///   `Timestamp`, `SecurityToken` (STS) and finally `Signature`; `host`, `x-acs-action`,
///   `x-acs-version` and `accept` headers are sent (unsigned), as the SDK sends them.
pub fn sign_rpc_call(version: SignatureVersion, call: &RpcCall<'_>, credentials: &crate::Credentials) -> SignedRequest {
    match version {
        SignatureVersion::V3 => {
            let token = credentials.security_token().map(|t| t.expose_secret());
            let mut headers: Vec<(&'static str, String)> = vec![
                ("host", call.host.to_owned()),
                ("x-acs-action", call.action.to_owned()),
                ("x-acs-version", API_VERSION.to_owned()),
                ("x-acs-date", call.timestamp.to_owned()),
                ("x-acs-signature-nonce", call.nonce.to_owned()),
                ("x-acs-content-sha256", EMPTY_SHA256.to_owned()),
            ];
            if let Some(token) = token {
                headers.push(("x-acs-accesskey-id", credentials.access_key_id().to_owned()));
                headers.push(("x-acs-security-token", token.to_owned()));
            }
            let to_sign: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
            let sig = sign_v3(
                "POST",
                "/",
                call.params,
                &to_sign,
                EMPTY_SHA256,
                credentials.access_key_id(),
                credentials.access_key_secret(),
            );
            headers.push(("authorization", sig.authorization.clone()));
            headers.push(("accept", "application/json".to_owned()));
            SignedRequest { query: canonical_query(call.params), headers, v3: Some(sig), v2: None }
        }
        SignatureVersion::V2 => {
            let mut params = call.params.clone();
            let mut common = |k: &str, v: &str| {
                params.insert(k.to_owned(), v.to_owned());
            };
            common("Action", call.action);
            common("Version", API_VERSION);
            common("Format", "json");
            common("Timestamp", call.timestamp);
            common("SignatureNonce", call.nonce);
            common("SignatureMethod", V2_SIGNATURE_METHOD);
            common("SignatureVersion", V2_SIGNATURE_VERSION);
            common("AccessKeyId", credentials.access_key_id());
            if let Some(t) = credentials.security_token() {
                common("SecurityToken", t.expose_secret());
            }
            let sig = sign_v2("POST", &params, credentials.access_key_secret());
            params.insert("Signature".to_owned(), sig.signature.clone());
            let query = canonical_query(&params);
            // The copy held the token and any plaintext parameter.
            for v in params.values_mut() {
                zeroize::Zeroize::zeroize(v);
            }
            let headers = vec![
                ("host", call.host.to_owned()),
                ("x-acs-action", call.action.to_owned()),
                ("x-acs-version", API_VERSION.to_owned()),
                ("accept", "application/json".to_owned()),
            ];
            SignedRequest { query, headers, v3: None, v2: Some(sig) }
        }
    }
}

fn hmac_sha256(key: &[u8], data: &[u8]) -> Vec<u8> {
    // Invariant: HMAC takes keys of any length.
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(key).expect("HMAC accepts keys of any length");
    mac.update(data);
    mac.finalize().into_bytes().to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_query_sorts_bytewise() {
        let p: BTreeMap<String, String> =
            [("b", "2"), ("B", "1"), ("a", "x y"), ("Action", "")].map(|(k, v)| (k.to_owned(), v.to_owned())).into();
        assert_eq!(canonical_query(&p), "Action=&B=1&a=x%20y&b=2");
        assert_eq!(canonical_query(&BTreeMap::new()), "");
    }

    #[test]
    fn empty_sha256_constant() {
        assert_eq!(sha256_hex(b""), EMPTY_SHA256);
    }

    /// Known answers produced by the official Python SDK (tests/data/sdk_kat.json, re-checked
    /// against the SDK by tests/sdk_signature.rs): the signer is checked even without Python.
    #[test]
    fn known_answers_from_the_sdk() {
        let kat: serde_json::Value = serde_json::from_str(include_str!("../tests/data/sdk_kat.json")).unwrap();
        let s = |v: &serde_json::Value, k: &str| v[k].as_str().unwrap_or_else(|| panic!("{k}")).to_owned();
        let mut checked = 0;
        for (version, cases) in [(SignatureVersion::V3, &kat["v3"]), (SignatureVersion::V2, &kat["v2"])] {
            for case in cases.as_array().unwrap() {
                let params: BTreeMap<String, String> = serde_json::from_value(case["params"].clone()).unwrap();
                let mut creds = crate::Credentials::new(
                    s(case, "access_key_id"),
                    AccessKeySecret::new(s(case, "access_key_secret")),
                );
                if let Some(t) = case["security_token"].as_str() {
                    creds = creds.with_security_token(crate::SecurityToken::new(t));
                }
                let (host, action, nonce, timestamp) =
                    (s(case, "host"), s(case, "action"), s(case, "nonce"), s(case, "timestamp"));
                let call =
                    RpcCall { host: &host, action: &action, params: &params, nonce: &nonce, timestamp: &timestamp };
                let signed = sign_rpc_call(version, &call, &creds);
                let name = s(case, "name");
                match version {
                    SignatureVersion::V3 => {
                        let v3 = signed.v3.as_ref().unwrap();
                        assert_eq!(v3.canonical_request, s(case, "canonical_request"), "{name}");
                        assert_eq!(v3.string_to_sign, s(case, "string_to_sign"), "{name}");
                        assert_eq!(v3.authorization, s(case, "authorization"), "{name}");
                        let auth = signed.headers.iter().find(|(n, _)| *n == "authorization").unwrap();
                        assert_eq!(auth.1, s(case, "authorization"), "{name}");
                    }
                    SignatureVersion::V2 => {
                        let v2 = signed.v2.as_ref().unwrap();
                        assert_eq!(v2.string_to_sign, s(case, "string_to_sign"), "{name}");
                        assert_eq!(v2.signature, s(case, "signature"), "{name}");
                        let expected = format!("Signature={}", percent_encode(&s(case, "signature")));
                        assert!(signed.query.split('&').any(|p| p == expected), "{name}: {}", signed.query);
                    }
                }
                checked += 1;
            }
        }
        assert_eq!(checked, 5);
    }

    #[test]
    fn signed_request_debug_hides_values() {
        let params = BTreeMap::from([("Plaintext".to_owned(), "cGxhaW50ZXh0LXNlY3JldA==".to_owned())]);
        let creds = crate::Credentials::new("LTAIx", AccessKeySecret::new("sk-dbg-secret"))
            .with_security_token(crate::SecurityToken::new("tok-dbg-secret"));
        for version in [SignatureVersion::V3, SignatureVersion::V2] {
            let call = RpcCall { host: "h", action: "Encrypt", params: &params, nonce: "n", timestamp: "t" };
            let text = format!("{:?}", sign_rpc_call(version, &call, &creds));
            assert!(!text.contains("cGxhaW50") && !text.contains("tok-dbg") && !text.contains("sk-dbg"), "{text}");
        }
    }

    #[test]
    fn signature_version_names() {
        assert_eq!(SignatureVersion::parse("V3"), Some(SignatureVersion::V3));
        assert_eq!(SignatureVersion::parse("hmac-sha1"), Some(SignatureVersion::V2));
        assert_eq!(SignatureVersion::parse("v4"), None);
        assert_eq!(SignatureVersion::default().as_str(), "v3");
    }
}
