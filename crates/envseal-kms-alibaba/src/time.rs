//! UTC timestamps in the one form the Alibaba Cloud APIs use: `YYYY-MM-DDThh:mm:ssZ`
//! (ISO 8601, seconds, `Z`), for `x-acs-date` / `Timestamp` and for the dates in responses
//! (`CreationDate`, `DeleteDate`, the ECS role's `Expiration`). The calendar arithmetic is
//! humantime's.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The last instant humantime formats: 9999-12-31T23:59:59Z.
const LAST: Duration = Duration::from_secs(253_402_300_799);

/// Formats `t` (clamped to the epoch .. year 9999) as `YYYY-MM-DDThh:mm:ssZ`.
pub(crate) fn format_utc(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t.clamp(UNIX_EPOCH, UNIX_EPOCH + LAST)).to_string()
}

/// Parses `YYYY-MM-DDThh:mm:ss[.fff]Z` (also with `+00:00` for `Z`), to the second. Dates
/// before the epoch and any other form are `None`.
pub(crate) fn parse_utc(s: &str) -> Option<SystemTime> {
    let s = s.trim();
    // humantime takes `ss.Z`, a dot without digits; ISO 8601 does not.
    if s.get(19..).is_some_and(|rest| rest.starts_with('.') && !rest[1..].starts_with(|c: char| c.is_ascii_digit())) {
        return None;
    }
    let secs = humantime::parse_rfc3339(s).ok()?.duration_since(UNIX_EPOCH).ok()?.as_secs();
    UNIX_EPOCH.checked_add(Duration::from_secs(secs))
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
    fn formatting_is_clamped() {
        assert_eq!(format_utc(UNIX_EPOCH - Duration::from_secs(1)), "1970-01-01T00:00:00Z");
        assert_eq!(format_utc(UNIX_EPOCH + Duration::from_secs(300_000_000_000)), "9999-12-31T23:59:59Z");
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
