//! AWS Signature Version 4 verification (header form, `AWS4-HMAC-SHA256`), for service `kms`.
//!
//! The canonical request is rebuilt from what the client sent, over exactly the headers it
//! lists in `SignedHeaders`, and signed with the secret of the access key it names (AWS
//! General Reference, "Create a signed AWS API request"):
//!
//! ```text
//! CanonicalRequest = METHOD \n CanonicalURI \n CanonicalQuery \n CanonicalHeaders \n
//!                    SignedHeaders \n hex(SHA256(body))
//! StringToSign     = "AWS4-HMAC-SHA256" \n X-Amz-Date \n DATE/REGION/kms/aws4_request \n
//!                    hex(SHA256(CanonicalRequest))
//! kSigning         = HMAC(HMAC(HMAC(HMAC("AWS4" + secret, DATE), REGION), "kms"), "aws4_request")
//! Signature        = hex(HMAC(kSigning, StringToSign))
//! ```

use std::sync::Arc;
use std::time::Duration;

use envseal_support::percent;

use crate::auth::{AccessKey, Credentials};
use crate::error::{Class, Fault};
use crate::mac;
use crate::request::Incoming;
use crate::wire;

const ALGORITHM: &str = "AWS4-HMAC-SHA256";

/// A verified request: who signed it and the region of its credential scope.
#[derive(Debug)]
pub(crate) struct Verified {
    pub key: Arc<AccessKey>,
    pub region: String,
}

struct AuthHeader<'a> {
    access_key: &'a str,
    date: &'a str,
    region: &'a str,
    service: &'a str,
    signed_headers: Vec<&'a str>,
    signature: &'a str,
}

fn incomplete(message: &str) -> Fault {
    Fault::new(Class::IncompleteSignature, message)
}

fn parse_auth(value: &str) -> Result<AuthHeader<'_>, Fault> {
    let rest = value
        .strip_prefix(ALGORITHM)
        .filter(|r| r.starts_with(' '))
        .ok_or_else(|| incomplete("the Authorization header must use AWS4-HMAC-SHA256"))?;
    let (mut credential, mut signed, mut signature) = (None, None, None);
    for part in rest.split(',') {
        let part = part.trim();
        match part.split_once('=') {
            Some(("Credential", v)) => credential = Some(v),
            Some(("SignedHeaders", v)) => signed = Some(v),
            Some(("Signature", v)) => signature = Some(v),
            _ => return Err(incomplete("the Authorization header has an unknown component")),
        }
    }
    let (Some(credential), Some(signed), Some(signature)) = (credential, signed, signature) else {
        return Err(incomplete("the Authorization header must contain Credential, SignedHeaders and Signature"));
    };
    let scope: Vec<&str> = credential.split('/').collect();
    let [access_key, date, region, service, terminator] = scope[..] else {
        return Err(incomplete("Credential must be ACCESS_KEY/DATE/REGION/SERVICE/aws4_request"));
    };
    if terminator != "aws4_request" || access_key.is_empty() || region.is_empty() {
        return Err(incomplete("Credential must be ACCESS_KEY/DATE/REGION/SERVICE/aws4_request"));
    }
    let signed_headers: Vec<&str> = signed.split(';').collect();
    if signed_headers.iter().any(|h| h.is_empty() || h.bytes().any(|b| b.is_ascii_uppercase()))
        || !signed_headers.windows(2).all(|w| w[0] < w[1])
    {
        return Err(incomplete("SignedHeaders must be lower-case, sorted and unique"));
    }
    if signature.len() != 64 || !signature.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(incomplete("Signature must be 64 hex digits"));
    }
    Ok(AuthHeader { access_key, date, region, service, signed_headers, signature })
}

/// Collapses runs of spaces and trims, as SigV4 canonical header values require.
fn canonical_value(v: &str) -> String {
    v.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// `CanonicalQueryString`: every name and value URI-encoded, sorted by name then value.
fn canonical_query(raw: &str) -> Result<String, Fault> {
    let mut pairs: Vec<(String, String)> = wire::parse_pairs(raw)
        .ok_or_else(|| Fault::invalid("the query string is not valid percent-encoding"))?
        .into_iter()
        .map(|(k, v)| (percent::encode(&k), percent::encode(&v)))
        .collect();
    pairs.sort();
    Ok(pairs.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("&"))
}

/// `CanonicalURI`: the path, each segment URI-encoded once more (AWS encodes twice for every
/// service but S3).
fn canonical_uri(raw_path: &str) -> String {
    if raw_path.is_empty() { "/".to_owned() } else { percent::encode_keeping(raw_path, b"/") }
}

pub(crate) fn signing_key(secret: &str, date: &str, region: &str, service: &str) -> Vec<u8> {
    let k_date = mac::hmac_sha256(format!("AWS4{secret}").as_bytes(), date.as_bytes());
    let k_region = mac::hmac_sha256(&k_date, region.as_bytes());
    let k_service = mac::hmac_sha256(&k_region, service.as_bytes());
    mac::hmac_sha256(&k_service, b"aws4_request")
}

/// Verifies the request's SigV4 signature, its date and its STS token.
pub(crate) fn verify(req: &Incoming, creds: &Credentials, skew: Duration, service: &str) -> Result<Verified, Fault> {
    let auth = req
        .header("authorization")
        .ok_or_else(|| Fault::new(Class::MissingAuth, "Missing Authentication Token (an Authorization header)"))?;
    let a = parse_auth(auth)?;
    if a.service != service {
        return Err(Fault::new(
            Class::SignatureMismatch,
            format!("Credential should be scoped to correct service: '{service}'"),
        ));
    }
    let amz_date = req
        .header("x-amz-date")
        .ok_or_else(|| incomplete("the request must carry an X-Amz-Date header (Date is not supported)"))?;
    let time = wire::parse_amz_date(amz_date).ok_or_else(|| incomplete("X-Amz-Date must be YYYYMMDDThhmmssZ"))?;
    if !amz_date.starts_with(a.date) || a.date.len() != 8 {
        return Err(Fault::new(Class::SignatureMismatch, "the credential scope date does not match X-Amz-Date"));
    }
    for required in ["host", "x-amz-date"] {
        if !a.signed_headers.contains(&required) {
            return Err(incomplete(&format!("the {required} header must be signed")));
        }
    }
    // What the action and the token are must be covered by the signature.
    for must_sign_if_present in ["x-amz-target", "x-amz-security-token"] {
        if req.header(must_sign_if_present).is_some() && !a.signed_headers.contains(&must_sign_if_present) {
            return Err(incomplete(&format!("the {must_sign_if_present} header must be signed")));
        }
    }
    let key = creds.get(
        a.access_key,
        req.header("x-amz-security-token"),
        "The security token included in the request is invalid (unknown access key).",
    )?;

    let mut canonical_headers = String::new();
    for name in &a.signed_headers {
        let values: Vec<String> =
            req.headers.get_all(*name).iter().map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned()).collect();
        if values.is_empty() {
            return Err(incomplete(&format!("the signed header {name} is missing from the request")));
        }
        let joined = values.iter().map(|v| canonical_value(v)).collect::<Vec<_>>().join(",");
        canonical_headers.push_str(&format!("{name}:{joined}\n"));
    }
    let body_hash = mac::sha256_hex(&req.body);
    if let Some(claimed) = req.header("x-amz-content-sha256")
        && claimed != "UNSIGNED-PAYLOAD"
        && !claimed.eq_ignore_ascii_case(&body_hash)
    {
        return Err(Fault::new(Class::SignatureMismatch, "X-Amz-Content-Sha256 does not match the body"));
    }
    let canonical_request = format!(
        "{}\n{}\n{}\n{}\n{}\n{}",
        req.method,
        canonical_uri(&req.path),
        canonical_query(&req.query)?,
        canonical_headers,
        a.signed_headers.join(";"),
        body_hash
    );
    let scope = format!("{}/{}/{}/aws4_request", a.date, a.region, a.service);
    let string_to_sign = format!("{ALGORITHM}\n{amz_date}\n{scope}\n{}", mac::sha256_hex(canonical_request.as_bytes()));
    let expected = hex::encode(mac::hmac_sha256(
        &signing_key(key.secret(), a.date, a.region, a.service),
        string_to_sign.as_bytes(),
    ));
    if !mac::ct_eq(&expected, &a.signature.to_ascii_lowercase()) {
        // AWS's shape: the sentence, then the canonical request and the string to sign the
        // server computed (with an STS token's value left out: messages never hold one).
        let shown = match req.header("x-amz-security-token") {
            Some(t) if !t.is_empty() => canonical_request.replace(t, "REDACTED"),
            _ => canonical_request.clone(),
        };
        let shown_sts = format!("{ALGORITHM}\n{amz_date}\n{scope}\n{}", mac::sha256_hex(canonical_request.as_bytes()));
        return Err(Fault::new(
            Class::SignatureMismatch,
            format!(
                "The request signature we calculated does not match the signature you provided. Check your AWS Secret Access Key and signing method. Consult the service documentation for details.\n\nThe Canonical String for this request should have been\n'{shown}'\n\nThe String-to-Sign should have been\n'{shown_sts}'\n"
            ),
        ));
    }
    // The date is checked after the signature, so an unsigned request learns nothing about
    // the clock; the token after both, as AWS does.
    if !wire::within_skew(time, skew) {
        return Err(Fault::new(
            Class::RequestExpired,
            format!("Signature expired: {amz_date} is more than {} s from the server's time", skew.as_secs()),
        ));
    }
    key.check_token(req.header("x-amz-security-token"))?;
    Ok(Verified { key, region: a.region.to_owned() })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// AWS's published SigV4 example (General Reference, "Signature Version 4 signing
    /// process", IAM ListUsers): the derived signing key and the final signature.
    #[test]
    fn aws_documented_example() {
        let secret = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";
        let key = signing_key(secret, "20150830", "us-east-1", "iam");
        assert_eq!(hex::encode(&key), "c4afb1cc5771d871763a393e44b703571b55cc28424d1a5e86da6ed3c154a4b9");
        let canonical = "GET\n/\nAction=ListUsers&Version=2010-05-08\ncontent-type:application/x-www-form-urlencoded; charset=utf-8\nhost:iam.amazonaws.com\nx-amz-date:20150830T123600Z\n\ncontent-type;host;x-amz-date\ne3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        assert_eq!(
            mac::sha256_hex(canonical.as_bytes()),
            "f536975d06c0309214f805bb90ccff089219ecd68b2577efef23edd43b7e1a59"
        );
        let sts = format!(
            "AWS4-HMAC-SHA256\n20150830T123600Z\n20150830/us-east-1/iam/aws4_request\n{}",
            mac::sha256_hex(canonical.as_bytes())
        );
        assert_eq!(
            hex::encode(mac::hmac_sha256(&key, sts.as_bytes())),
            "5d672d79c15b13162d9279b0855cfba6789a8edb4c82c400e06b5924a6f2b5d7"
        );
        assert_eq!(
            canonical_query("Version=2010-05-08&Action=ListUsers").unwrap(),
            "Action=ListUsers&Version=2010-05-08"
        );
    }

    #[test]
    fn authorization_header_parsing() {
        let ok = "AWS4-HMAC-SHA256 Credential=AK/20150830/us-east-1/kms/aws4_request, SignedHeaders=host;x-amz-date, Signature=5d672d79c15b13162d9279b0855cfba6789a8edb4c82c400e06b5924a6f2b5d7";
        let a = parse_auth(ok).unwrap();
        assert_eq!((a.access_key, a.date, a.region, a.service), ("AK", "20150830", "us-east-1", "kms"));
        for bad in [
            "AWS4-HMAC-SHA1 Credential=AK/20150830/us-east-1/kms/aws4_request, SignedHeaders=host, Signature=00",
            "AWS4-HMAC-SHA256 Credential=AK/20150830/us-east-1/kms, SignedHeaders=host, Signature=5d672d79c15b13162d9279b0855cfba6789a8edb4c82c400e06b5924a6f2b5d7",
            "AWS4-HMAC-SHA256 Credential=AK/20150830/us-east-1/kms/aws4_request, SignedHeaders=x-amz-date;host, Signature=5d672d79c15b13162d9279b0855cfba6789a8edb4c82c400e06b5924a6f2b5d7",
            "AWS4-HMAC-SHA256 Credential=AK/20150830/us-east-1/kms/aws4_request, SignedHeaders=host, Signature=zz",
            "AWS4-HMAC-SHA256 Credential=AK/20150830/us-east-1/kms/aws4_request, Signature=5d672d79c15b13162d9279b0855cfba6789a8edb4c82c400e06b5924a6f2b5d7",
            "",
        ] {
            assert_eq!(parse_auth(bad).err().map(|f| f.class), Some(Class::IncompleteSignature), "{bad}");
        }
    }
}
