//! Small wire helpers shared by both APIs: query parsing, hashing, time formats, request ids.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_lc_rs::{digest, hmac};
use envseal_support::percent;
use subtle::ConstantTimeEq;

/// Parses `a=1&b=2` (query string or `application/x-www-form-urlencoded` body) into decoded
/// pairs, in order. `None` if any part does not decode.
pub(crate) fn parse_pairs(s: &str) -> Option<Vec<(String, String)>> {
    s.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            Some((percent::decode(k, true)?, percent::decode(v, true)?))
        })
        .collect()
}

/// Lower-case hex SHA-256.
pub(crate) fn sha256_hex(data: &[u8]) -> String {
    hex::encode(digest::digest(&digest::SHA256, data))
}

/// HMAC-SHA256.
pub(crate) fn hmac_sha256(key: &[u8], data: &[u8]) -> Vec<u8> {
    hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, key), data).as_ref().to_vec()
}

/// HMAC-SHA1 (Alibaba's RPC V2 signature only).
pub(crate) fn hmac_sha1(key: &[u8], data: &[u8]) -> Vec<u8> {
    hmac::sign(&hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, key), data).as_ref().to_vec()
}

/// Constant-time equality of two strings (signatures, tokens).
pub(crate) fn ct_eq(a: &str, b: &str) -> bool {
    a.len() == b.len() && bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

/// `YYYY-MM-DDThh:mm:ssZ` (UTC), the form Alibaba uses for dates and timestamps.
pub(crate) fn iso8601(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

/// Parses `YYYY-MM-DDThh:mm:ssZ` (fractions of a second accepted).
pub(crate) fn parse_iso8601(s: &str) -> Option<SystemTime> {
    humantime::parse_rfc3339(s).ok()
}

/// Parses SigV4's basic format `YYYYMMDDThhmmssZ`.
pub(crate) fn parse_amz_date(s: &str) -> Option<SystemTime> {
    let b = s.as_bytes();
    if b.len() != 16 || b[8] != b'T' || b[15] != b'Z' {
        return None;
    }
    let digits = |r: std::ops::Range<usize>| s.get(r).filter(|d| d.bytes().all(|c| c.is_ascii_digit()));
    let iso = format!(
        "{}-{}-{}T{}:{}:{}Z",
        digits(0..4)?,
        digits(4..6)?,
        digits(6..8)?,
        digits(9..11)?,
        digits(11..13)?,
        digits(13..15)?
    );
    parse_iso8601(&iso)
}

/// Seconds since the Unix epoch, as JSON 1.1 timestamps are sent.
pub(crate) fn epoch_seconds(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO).as_secs_f64()
}

/// Whether `t` is within `skew` of now, either way.
pub(crate) fn within_skew(t: SystemTime, skew: Duration) -> bool {
    let now = SystemTime::now();
    match t.duration_since(now) {
        Ok(ahead) => ahead <= skew,
        Err(e) => e.duration() <= skew,
    }
}

/// A random version-4 UUID, upper-case as Alibaba prints request ids (lower-case for AWS).
pub(crate) fn uuid_v4() -> String {
    let mut b: [u8; 16] = envseal_core::random::array();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = hex::encode(b);
    format!("{}-{}-{}-{}-{}", &h[0..8], &h[8..12], &h[12..16], &h[16..20], &h[20..32])
}

/// Request parameters recorded as sent (key ids, names, sizes, options); anything else is
/// left out of what hooks and the audit trail see.
const SAFE_PARAMS: &[&str] = &[
    "KeyId",
    "AliasName",
    "TargetKeyId",
    "SourceKeyId",
    "DestinationKeyId",
    "KeyVersionId",
    "NumberOfBytes",
    "KeySpec",
    "KeyUsage",
    "ProtectionLevel",
    "Origin",
    "PendingWindowInDays",
    "RotationInterval",
    "RotationPeriodInDays",
    "EnableAutomaticRotation",
    "MinDecryptionVersion",
    "EncryptionAlgorithm",
    "DryRun",
    "RoleArn",
    "RoleSessionName",
    "DurationSeconds",
    "Limit",
    "PageSize",
    "PageNumber",
];

/// Parameters whose size (not value) is recorded, as `<Name>Bytes` (base64-decoded length).
const SIZED_PARAMS: &[&str] = &["Plaintext", "CiphertextBlob", "Policy"];

/// The recordable part of a request's parameters: [`SAFE_PARAMS`] as sent, and the sizes of
/// [`SIZED_PARAMS`].
pub(crate) fn safe_params<'a>(
    params: impl IntoIterator<Item = (&'a str, &'a serde_json::Value)>,
) -> serde_json::Map<String, serde_json::Value> {
    let mut out = serde_json::Map::new();
    for (name, value) in params {
        if SAFE_PARAMS.contains(&name) {
            let v = match value {
                serde_json::Value::String(s) if s.len() > 256 => {
                    let end = (0..=256).rev().find(|&i| s.is_char_boundary(i)).unwrap_or(0);
                    serde_json::Value::String(format!("{}…", &s[..end]))
                }
                serde_json::Value::String(_) | serde_json::Value::Number(_) | serde_json::Value::Bool(_) => {
                    value.clone()
                }
                _ => continue,
            };
            out.insert(name.to_owned(), v);
        } else if SIZED_PARAMS.contains(&name)
            && let serde_json::Value::String(s) = value
        {
            let len = if name == "Policy" { s.len() } else { s.trim_end_matches('=').len() * 3 / 4 };
            out.insert(format!("{name}Bytes"), serde_json::Value::from(len));
        }
    }
    out
}

/// An encryption context as a JSON object (for hooks and the audit trail).
pub(crate) fn context_json(ctx: &envseal_core::EncryptionContext) -> serde_json::Value {
    serde_json::Value::Object(
        ctx.iter().map(|(k, v)| (k.to_owned(), serde_json::Value::String(v.to_owned()))).collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_pairs() {
        assert_eq!(
            parse_pairs("a=1&b=&c&&d=x%3Dy").unwrap(),
            vec![
                ("a".into(), "1".into()),
                ("b".into(), "".into()),
                ("c".into(), "".into()),
                ("d".into(), "x=y".into())
            ]
        );
    }

    #[test]
    fn dates() {
        let t = parse_amz_date("20150830T123600Z").unwrap();
        assert_eq!(iso8601(t), "2015-08-30T12:36:00Z");
        assert_eq!(parse_iso8601("2015-08-30T12:36:00Z"), Some(t));
        for bad in ["2015083T123600Z", "20150830 123600Z", "2015083aT123600Z", "20151330T123600Z", ""] {
            assert!(parse_amz_date(bad).is_none(), "{bad}");
        }
        assert!(within_skew(SystemTime::now() + Duration::from_secs(60), Duration::from_secs(900)));
        assert!(!within_skew(t, Duration::from_secs(900)));
    }

    #[test]
    fn uuid_shape() {
        let u = uuid_v4();
        assert_eq!(u.len(), 36);
        assert_eq!(&u[14..15], "4");
        assert_ne!(u, uuid_v4());
    }
}
