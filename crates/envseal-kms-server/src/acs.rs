//! Alibaba Cloud request signatures: V3 (`ACS3-HMAC-SHA256`, Authorization header) and the RPC
//! V2 signature (`HMAC-SHA1`, `Signature` parameter).
//!
//! V3 (Alibaba Cloud "Request syntax and signature method V3"):
//!
//! ```text
//! CanonicalRequest = METHOD \n CanonicalURI \n CanonicalQuery \n CanonicalHeaders \n
//!                    SignedHeaders \n x-acs-content-sha256
//! CanonicalQuery   = sorted enc(name)=enc(value) joined by &   (query string only)
//! CanonicalHeaders = for each signed header: name:trim(value)\n  (values of a repeated
//!                    header sorted and joined by ,)
//! StringToSign     = "ACS3-HMAC-SHA256" \n hex(SHA256(CanonicalRequest))
//! Signature        = hex(HMAC-SHA256(secret, StringToSign))
//! Authorization    = ACS3-HMAC-SHA256 Credential=AK,SignedHeaders=a;b,Signature=hex
//! ```
//!
//! `host` and every `x-acs-*` header sent must be signed, and `x-acs-content-sha256` must be
//! the SHA-256 of the body.
//!
//! V2 (RPC, aliyunsdkcore rpc_signature_composer.py): every parameter of the query and the
//! form body but `Signature`, sorted by name, `enc(name)=enc(value)` joined by `&`;
//! `StringToSign = METHOD&%2F&enc(that)`; `Signature = base64(HMAC-SHA1(secret + "&",
//! StringToSign))`. `enc` is RFC 3986 percent-encoding (space `%20`, `*` `%2A`, `~` kept).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use envseal_support::percent;

use crate::auth::{AccessKey, Credentials, NonceCache};
use crate::error::{Class, Fault};
use crate::mac;
use crate::request::Incoming;
use crate::wire;

/// The V3 algorithm name.
pub(crate) const ACS3: &str = "ACS3-HMAC-SHA256";

/// Which signature a request used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Scheme {
    /// ACS3-HMAC-SHA256.
    V3,
    /// RPC HMAC-SHA1.
    V2,
}

/// A verified request.
#[derive(Debug)]
pub(crate) struct Verified {
    pub key: Arc<AccessKey>,
    pub scheme: Scheme,
}

fn incomplete(message: &str) -> Fault {
    Fault::new(Class::IncompleteSignature, message)
}

/// `SignatureDoesNotMatch` in the real service's shape: the sentence, `:` and the server's
/// string to sign, which SDKs compare with their own (the old Python SDK, aliyunsdkcore, splits
/// the message at `:` and reports `InvalidAccessKeySecret` when the strings agree).
fn mismatch(string_to_sign: &str) -> Fault {
    Fault::new(
        Class::SignatureMismatch,
        format!("Specified signature does not match our calculation. server string to sign is:{string_to_sign}"),
    )
}

fn check_time(stamp: &str, skew: Duration) -> Result<(), Fault> {
    let t = wire::parse_iso8601(stamp)
        .ok_or_else(|| Fault::new(Class::BadTimestamp, "the timestamp must be YYYY-MM-DDThh:mm:ssZ (UTC)"))?;
    if !wire::within_skew(t, skew) {
        return Err(Fault::new(
            Class::RequestExpired,
            format!("the request time is more than {} s from the server's time", skew.as_secs()),
        ));
    }
    Ok(())
}

/// Parameters from the query string and, for a form body, from the body. A name given in both
/// with different values is refused.
pub(crate) fn params(req: &Incoming) -> Result<BTreeMap<String, String>, Fault> {
    let mut out = BTreeMap::new();
    let query = wire::parse_pairs(&req.query)
        .ok_or_else(|| Fault::invalid("the query string is not valid percent-encoding"))?;
    let form = req.header("content-type").is_some_and(|c| c.starts_with("application/x-www-form-urlencoded"));
    let body = if form && !req.body.is_empty() {
        let text = std::str::from_utf8(&req.body)
            .map_err(|_| Fault::new(Class::MalformedBody, "the form body is not UTF-8"))?;
        wire::parse_pairs(text)
            .ok_or_else(|| Fault::new(Class::MalformedBody, "the form body is not valid percent-encoding"))?
    } else {
        Vec::new()
    };
    for (k, v) in query.into_iter().chain(body) {
        if let Some(old) = out.get(&k)
            && *old != v
        {
            return Err(Fault::invalid(format!("the parameter {k} is given twice with different values")));
        }
        out.insert(k, v);
    }
    Ok(out)
}

/// Verifies the request's signature (V3 when the Authorization header says so, else V2), its
/// time, its nonce and its STS token. `params` are the decoded query and form parameters.
pub(crate) fn verify(
    req: &Incoming,
    params: &BTreeMap<String, String>,
    creds: &Credentials,
    nonces: &NonceCache,
    skew: Duration,
) -> Result<Verified, Fault> {
    match req.header("authorization") {
        Some(auth) if auth.starts_with("ACS3-") => verify_v3(req, auth, creds, nonces, skew),
        Some(_) => Err(incomplete("the Authorization header must use ACS3-HMAC-SHA256")),
        None if params.contains_key("Signature") => verify_v2(req, params, creds, nonces, skew),
        None => Err(Fault::new(
            Class::MissingAuth,
            "the request is not signed: send an ACS3-HMAC-SHA256 Authorization header or the RPC signature parameters",
        )),
    }
}

fn verify_v3(
    req: &Incoming,
    auth: &str,
    creds: &Credentials,
    nonces: &NonceCache,
    skew: Duration,
) -> Result<Verified, Fault> {
    let rest = auth
        .strip_prefix(ACS3)
        .filter(|r| r.starts_with(' '))
        .ok_or_else(|| incomplete("only ACS3-HMAC-SHA256 is supported"))?;
    let (mut credential, mut signed, mut signature) = (None, None, None);
    for part in rest.split(',') {
        match part.trim().split_once('=') {
            Some(("Credential", v)) => credential = Some(v),
            Some(("SignedHeaders", v)) => signed = Some(v),
            Some(("Signature", v)) => signature = Some(v),
            _ => return Err(incomplete("the Authorization header has an unknown component")),
        }
    }
    let (Some(ak), Some(signed), Some(signature)) = (credential, signed, signature) else {
        return Err(incomplete("the Authorization header must contain Credential, SignedHeaders and Signature"));
    };
    let signed_headers: Vec<&str> = signed.split(';').collect();
    if signed_headers.iter().any(|h| h.is_empty() || h.bytes().any(|b| b.is_ascii_uppercase()))
        || !signed_headers.windows(2).all(|w| w[0] < w[1])
    {
        return Err(incomplete("SignedHeaders must be lower-case, sorted and unique"));
    }
    if !signed_headers.contains(&"host") {
        return Err(incomplete("the host header must be signed"));
    }
    for name in req.headers.keys() {
        let n = name.as_str();
        if n.starts_with("x-acs-") && !signed_headers.contains(&n) {
            return Err(incomplete(&format!("the {n} header must be signed")));
        }
    }
    let date = req.header("x-acs-date").ok_or_else(|| incomplete("the x-acs-date header is required"))?;
    let nonce = req
        .header("x-acs-signature-nonce")
        .ok_or_else(|| incomplete("the x-acs-signature-nonce header is required"))?;
    let claimed_hash =
        req.header("x-acs-content-sha256").ok_or_else(|| incomplete("the x-acs-content-sha256 header is required"))?;
    let key = creds.get(ak, req.header("x-acs-security-token"), "Specified access key is not found.")?;

    let mut canonical_headers = String::new();
    for name in &signed_headers {
        let mut values: Vec<String> = req
            .headers
            .get_all(*name)
            .iter()
            .map(|v| String::from_utf8_lossy(v.as_bytes()).trim().to_owned())
            .collect();
        if values.is_empty() {
            return Err(incomplete(&format!("the signed header {name} is missing from the request")));
        }
        values.sort();
        canonical_headers.push_str(&format!("{name}:{}\n", values.join(",")));
    }
    let mut query = wire::parse_pairs(&req.query)
        .ok_or_else(|| Fault::invalid("the query string is not valid percent-encoding"))?
        .into_iter()
        .map(|(k, v)| (percent::encode(&k), percent::encode(&v)))
        .collect::<Vec<_>>();
    query.sort();
    let canonical_query = query.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("&");
    let canonical_request = format!(
        "{}\n{}\n{}\n{}\n{}\n{}",
        req.method,
        percent::encode_keeping(&req.decoded_path(), b"/"),
        canonical_query,
        canonical_headers,
        signed_headers.join(";"),
        claimed_hash
    );
    let string_to_sign = format!("{ACS3}\n{}", mac::sha256_hex(canonical_request.as_bytes()));
    let expected = hex::encode(mac::hmac_sha256(key.secret().as_bytes(), string_to_sign.as_bytes()));
    if !mac::ct_eq(&expected, &signature.to_ascii_lowercase()) {
        return Err(mismatch(&string_to_sign));
    }
    if !claimed_hash.eq_ignore_ascii_case(&mac::sha256_hex(&req.body)) {
        return Err(Fault::new(Class::SignatureMismatch, "x-acs-content-sha256 does not match the body"));
    }
    check_time(date, skew)?;
    if !nonces.check_and_insert(ak, nonce) {
        return Err(Fault::new(Class::NonceReused, "Specified signature nonce was used already."));
    }
    key.check_token(req.header("x-acs-security-token"))?;
    Ok(Verified { key, scheme: Scheme::V3 })
}

/// The V2 string to sign over `params` (which must not contain `Signature`).
pub(crate) fn v2_string_to_sign(method: &str, params: &BTreeMap<String, String>) -> String {
    // BTreeMap iterates in key order: the sort the composer does.
    let canonical = params
        .iter()
        .map(|(k, v)| format!("{}={}", percent::encode(k), percent::encode(v)))
        .collect::<Vec<_>>()
        .join("&");
    format!("{method}&%2F&{}", percent::encode(&canonical))
}

/// `base64(HMAC-SHA1(secret + "&", string_to_sign))`.
pub(crate) fn v2_signature(secret: &str, string_to_sign: &str) -> String {
    STANDARD.encode(mac::hmac_sha1(format!("{secret}&").as_bytes(), string_to_sign.as_bytes()))
}

fn verify_v2(
    req: &Incoming,
    params: &BTreeMap<String, String>,
    creds: &Credentials,
    nonces: &NonceCache,
    skew: Duration,
) -> Result<Verified, Fault> {
    let get = |name: &str| params.get(name).map(String::as_str);
    let need = |name: &str| get(name).ok_or_else(|| incomplete(&format!("the {name} parameter is required")));
    let ak =
        get("AccessKeyId").ok_or_else(|| Fault::new(Class::MissingAuth, "the AccessKeyId parameter is required"))?;
    let signature = need("Signature")?;
    if need("SignatureMethod")? != "HMAC-SHA1" {
        return Err(incomplete("SignatureMethod must be HMAC-SHA1"));
    }
    if need("SignatureVersion")? != "1.0" {
        return Err(incomplete("SignatureVersion must be 1.0"));
    }
    let nonce = need("SignatureNonce")?;
    let timestamp =
        get("Timestamp").ok_or_else(|| Fault::new(Class::BadTimestamp, "the Timestamp parameter is required"))?;
    let key = creds.get(ak, get("SecurityToken"), "Specified access key is not found.")?;
    let mut signed = params.clone();
    signed.remove("Signature");
    let string_to_sign = v2_string_to_sign(&req.method, &signed);
    let expected = v2_signature(key.secret(), &string_to_sign);
    if !mac::ct_eq(&expected, signature) {
        // The string to sign holds every parameter: never echo an STS token or a plaintext
        // (the SDK then cannot match it and reports a plain SignatureDoesNotMatch).
        const SECRET_PARAMS: [&str; 2] = ["SecurityToken", "Plaintext"];
        let shown = if SECRET_PARAMS.iter().any(|p| signed.contains_key(*p)) {
            for p in SECRET_PARAMS {
                if let Some(v) = signed.get_mut(p) {
                    *v = "REDACTED".into();
                }
            }
            v2_string_to_sign(&req.method, &signed)
        } else {
            string_to_sign
        };
        return Err(mismatch(&shown));
    }
    check_time(timestamp, skew)?;
    if !nonces.check_and_insert(ak, nonce) {
        return Err(Fault::new(Class::NonceReused, "Specified signature nonce was used already."));
    }
    key.check_token(get("SecurityToken"))?;
    Ok(Verified { key, scheme: Scheme::V2 })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The worked example of Alibaba Cloud's RPC signature documentation (ECS
    /// DescribeRegions, AccessKey secret `testsecret`).
    #[test]
    fn v2_documented_example() {
        let params: BTreeMap<String, String> = [
            ("AccessKeyId", "testid"),
            ("Action", "DescribeRegions"),
            ("Format", "XML"),
            ("SignatureMethod", "HMAC-SHA1"),
            ("SignatureNonce", "3ee8c1b8-83d3-44af-a94f-4e0ad82fd6cf"),
            ("SignatureVersion", "1.0"),
            ("Timestamp", "2016-02-23T12:46:24Z"),
            ("Version", "2014-05-26"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        let sts = v2_string_to_sign("GET", &params);
        assert_eq!(
            sts,
            "GET&%2F&AccessKeyId%3Dtestid%26Action%3DDescribeRegions%26Format%3DXML%26SignatureMethod%3DHMAC-SHA1%26SignatureNonce%3D3ee8c1b8-83d3-44af-a94f-4e0ad82fd6cf%26SignatureVersion%3D1.0%26Timestamp%3D2016-02-23T12%253A46%253A24Z%26Version%3D2014-05-26"
        );
        assert_eq!(v2_signature("testsecret", &sts), "OLeaidS1JvxuMvnyHOwuJ+uX5qY=");
    }
}
