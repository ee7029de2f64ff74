//! UTC timestamps in the one form the Alibaba Cloud APIs use: `YYYY-MM-DDThh:mm:ssZ`
//! (ISO 8601, seconds, `Z`), for `x-acs-date` / `Timestamp` and for the dates in responses
//! (`CreationDate`, `DeleteDate`, the ECS role's `Expiration`).
//!
//! Written here (days-from-civil and back, H. Hinnant's algorithms) rather than pulling a date
//! crate in for two functions.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Formats `t` (clamped to the epoch) as `YYYY-MM-DDThh:mm:ssZ`.
pub(crate) fn format_utc(t: SystemTime) -> String {
    let secs = t.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days as i64);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z", rem / 3600, rem % 3600 / 60, rem % 60)
}

/// Parses `YYYY-MM-DDThh:mm:ss[.fff]Z` (also with `+00:00` for `Z`). Dates before the epoch
/// and any other form are `None`.
pub(crate) fn parse_utc(s: &str) -> Option<SystemTime> {
    let s = s.trim();
    let b = s.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') || b[13] != b':' {
        return None;
    }
    if b[16] != b':' {
        return None;
    }
    let num = |range: std::ops::Range<usize>| -> Option<u64> {
        let part = s.get(range)?;
        if part.is_empty() || !part.bytes().all(|c| c.is_ascii_digit()) {
            return None;
        }
        part.parse().ok()
    };
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, se) = (num(11..13)?, num(14..16)?, num(17..19)?);
    let mut rest = &s[19..];
    if let Some(frac) = rest.strip_prefix('.') {
        let digits = frac.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return None;
        }
        rest = &frac[digits..];
    }
    if !matches!(rest, "Z" | "z" | "+00:00") {
        return None;
    }
    if !(1..=12).contains(&mo) || d == 0 || d > days_in_month(y, mo) || h > 23 || mi > 59 || se > 60 {
        return None;
    }
    let days = days_from_civil(y as i64, mo as u32, d as u32);
    if days < 0 {
        return None;
    }
    let secs = days as u64 * 86_400 + h * 3600 + mi * 60 + se;
    UNIX_EPOCH.checked_add(Duration::from_secs(secs))
}

fn days_in_month(y: u64, m: u64) -> u64 {
    match m {
        2 if (y.is_multiple_of(4) && !y.is_multiple_of(100)) || y.is_multiple_of(400) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date.
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (i64::from(m) + 9) % 12;
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The date of a day count since 1970-01-01.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = if z >= 0 { z } else { z - 146_096 } / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_dates() {
        assert_eq!(format_utc(UNIX_EPOCH), "1970-01-01T00:00:00Z");
        let t = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        assert_eq!(format_utc(t), "2023-11-14T22:13:20Z");
        assert_eq!(parse_utc("2023-11-14T22:13:20Z"), Some(t));
        assert_eq!(parse_utc("2023-11-14T22:13:20.123Z"), Some(t));
        assert_eq!(parse_utc("2023-11-14T22:13:20+00:00"), Some(t));
        // Leap day, end of century rules.
        let leap = parse_utc("2024-02-29T00:00:00Z").unwrap();
        assert_eq!(format_utc(leap), "2024-02-29T00:00:00Z");
        assert_eq!(format_utc(parse_utc("2000-02-29T12:00:00Z").unwrap()), "2000-02-29T12:00:00Z");
        assert_eq!(format_utc(parse_utc("2100-03-01T00:00:00Z").unwrap()), "2100-03-01T00:00:00Z");
    }

    #[test]
    fn round_trip_every_day_for_years() {
        for day in (0..200 * 366).step_by(7) {
            let t = UNIX_EPOCH + Duration::from_secs(day * 86_400 + 45_296);
            assert_eq!(parse_utc(&format_utc(t)), Some(t), "day {day}");
        }
    }

    #[test]
    fn rejects_other_forms() {
        for bad in [
            "",
            "2023-11-14",
            "2023-11-14T22:13:20",
            "2023-11-14T22:13:20+08:00",
            "2023-13-14T22:13:20Z",
            "2023-02-29T22:13:20Z",
            "2023-11-14T24:13:20Z",
            "2023-11-14T22:13:20.Z",
            "20231114T221320Z",
            "1969-12-31T23:59:59Z",
            "２023-11-14T22:13:20Z",
        ] {
            assert_eq!(parse_utc(bad), None, "{bad:?}");
        }
    }
}
