//! Wire formats shared by both APIs: query strings and form bodies, time formats, request ids.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use envseal_support::percent;

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
