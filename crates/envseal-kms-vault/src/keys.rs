//! `GET {mount}/keys/{name}`: what Transit says about a key, and its mapping onto
//! [`KeyMetadata`].

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use envseal_core::kms::{KeyMetadata, KeyState, KeyVersionInfo};
use serde::Deserialize;

/// A Transit key, as `GET {mount}/keys/{name}` describes it (the fields envseal reads).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct TransitKeyInfo {
    /// Key name.
    pub name: String,
    /// Key type (`aes256-gcm96`, ...). envseal needs an AEAD type for its context mapping.
    pub key_type: String,
    /// Newest version (used for new encryptions).
    pub latest_version: u32,
    /// Oldest version allowed to decrypt (Transit's default is 1).
    pub min_decryption_version: u32,
    /// Oldest version allowed to encrypt (0: the latest).
    pub min_encryption_version: u32,
    /// Versions below this were trimmed and are gone (0: none trimmed).
    pub min_available_version: u32,
    /// Whether the key may be deleted (`DELETE {mount}/keys/{name}`).
    pub deletion_allowed: bool,
    /// Whether this is a derived key (envseal does not use those: see the README).
    pub derived: bool,
    /// Whether the key may be exported.
    pub exportable: bool,
    /// Whether the key type can encrypt.
    pub supports_encryption: bool,
    /// The versions Transit lists with their creation times, oldest first. Transit lists
    /// only the versions at or above the minimum decryption version.
    pub versions: Vec<KeyVersionInfo>,
}

#[derive(Deserialize)]
pub(crate) struct KeyData {
    name: String,
    #[serde(rename = "type")]
    key_type: String,
    #[serde(default)]
    latest_version: u32,
    #[serde(default)]
    min_decryption_version: u32,
    #[serde(default)]
    min_encryption_version: u32,
    #[serde(default)]
    min_available_version: u32,
    #[serde(default)]
    deletion_allowed: bool,
    #[serde(default)]
    derived: bool,
    #[serde(default)]
    exportable: bool,
    #[serde(default)]
    supports_encryption: bool,
    /// Version → creation time: Unix seconds for symmetric keys, an object with an RFC 3339
    /// `creation_time` for asymmetric ones.
    #[serde(default)]
    keys: BTreeMap<String, serde_json::Value>,
}

impl KeyData {
    /// Checks and converts; `None` if Transit sent something this code does not understand.
    pub(crate) fn into_info(self) -> Option<TransitKeyInfo> {
        let mut versions = Vec::with_capacity(self.keys.len());
        for (version, created) in &self.keys {
            let n: u32 = crate::names::parse_version(version)?;
            let created_at = match created {
                serde_json::Value::Number(secs) => UNIX_EPOCH.checked_add(Duration::from_secs(secs.as_u64()?))?,
                serde_json::Value::Object(o) => parse_rfc3339(o.get("creation_time")?.as_str()?)?,
                _ => return None,
            };
            versions.push((n, created_at));
        }
        versions.sort_by_key(|(n, _)| *n);
        if self.latest_version == 0 {
            return None;
        }
        Some(TransitKeyInfo {
            name: self.name,
            key_type: self.key_type,
            latest_version: self.latest_version,
            min_decryption_version: self.min_decryption_version,
            min_encryption_version: self.min_encryption_version,
            min_available_version: self.min_available_version,
            deletion_allowed: self.deletion_allowed,
            derived: self.derived,
            exportable: self.exportable,
            supports_encryption: self.supports_encryption,
            versions: versions
                .into_iter()
                .map(|(n, created_at)| KeyVersionInfo { id: n.to_string(), created_at })
                .collect(),
        })
    }
}

impl TransitKeyInfo {
    /// The [`KeyMetadata`] envseal shows: always `Enabled` and `Software` (Transit has neither
    /// states nor HSM keys); `created_at` is the creation time of the oldest version listed;
    /// `min_decryption_version` is set only when above 1 (1 is Transit's "no minimum"); no
    /// description, aliases, tags or deletion date (Transit stores none).
    pub fn to_metadata(&self) -> KeyMetadata {
        let created_at = self.versions.iter().map(|v| v.created_at).min().unwrap_or(UNIX_EPOCH);
        let mut m = KeyMetadata::new(self.name.clone(), KeyState::Enabled, created_at, self.latest_version.to_string());
        m.versions = self.versions.clone();
        m.min_decryption_version = (self.min_decryption_version > 1).then(|| self.min_decryption_version.to_string());
        m
    }
}

/// Parses `YYYY-MM-DDTHH:MM:SS[.fraction](Z|±HH:MM)`, the form Vault writes: humantime reads
/// the UTC date and time, the offset is applied here (humantime reads UTC only).
fn parse_rfc3339(s: &str) -> Option<SystemTime> {
    // humantime takes `SS.Z`, a dot without digits; RFC 3339 does not.
    if s.get(19..).is_some_and(|rest| rest.starts_with('.') && !rest[1..].starts_with(|c: char| c.is_ascii_digit())) {
        return None;
    }
    let b = s.as_bytes();
    let n = b.len();
    let offset = (n >= 25 && matches!(b[n - 6], b'+' | b'-') && b[n - 3] == b':').then(|| {
        let two =
            |r: std::ops::Range<usize>| s.get(r).filter(|d| d.bytes().all(|c| c.is_ascii_digit()))?.parse::<u64>().ok();
        Some((b[n - 6] == b'-', two(n - 5..n - 3)? * 3600 + two(n - 2..n)? * 60))
    });
    match offset {
        None => humantime::parse_rfc3339(s).ok(),
        Some(None) => None,
        Some(Some((west, secs))) => {
            let utc = humantime::parse_rfc3339(&format!("{}Z", &s[..n - 6])).ok()?;
            // Local time west of UTC (`-HH:MM`) is behind it: add the offset to get UTC.
            if west { utc.checked_add(Duration::from_secs(secs)) } else { utc.checked_sub(Duration::from_secs(secs)) }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(t: SystemTime) -> u64 {
        t.duration_since(UNIX_EPOCH).unwrap().as_secs()
    }

    #[test]
    fn rfc3339() {
        assert_eq!(secs(parse_rfc3339("1970-01-01T00:00:00Z").unwrap()), 0);
        assert_eq!(secs(parse_rfc3339("2024-02-29T12:34:56Z").unwrap()), 1_709_210_096);
        assert_eq!(secs(parse_rfc3339("2024-02-29T14:34:56.123456789+02:00").unwrap()), 1_709_210_096);
        assert_eq!(secs(parse_rfc3339("2024-02-29T10:04:56-02:30").unwrap()), 1_709_210_096);
        let t = parse_rfc3339("2024-02-29T12:34:56.5Z").unwrap();
        assert_eq!(t.duration_since(UNIX_EPOCH).unwrap().subsec_millis(), 500);
        for bad in [
            "",
            "2024-02-29",
            "2024-13-01T00:00:00Z",
            "2024-02-29T12:34:56",
            "2024-02-29T12:34:56.Z",
            "2024-02-29T12:34:56+0x:00",
            "x",
        ] {
            assert_eq!(parse_rfc3339(bad), None, "{bad}");
        }
    }

    #[test]
    fn key_data_from_openbao() {
        // As OpenBao 2.7 answers GET transit/keys/k1 after one rotation.
        let json = r#"{"allow_plaintext_backup":false,"auto_rotate_period":0,"deletion_allowed":false,
            "derived":false,"exportable":false,"imported_key":false,"keys":{"1":1795870371,"2":1795870380},
            "latest_version":2,"min_available_version":0,"min_decryption_version":1,
            "min_encryption_version":0,"name":"k1","soft_deleted":false,"supports_decryption":true,
            "supports_derivation":true,"supports_encryption":true,"supports_signing":false,"type":"aes256-gcm96"}"#;
        let info = serde_json::from_str::<KeyData>(json).unwrap().into_info().unwrap();
        assert_eq!((info.name.as_str(), info.key_type.as_str(), info.latest_version), ("k1", "aes256-gcm96", 2));
        assert_eq!(info.versions.iter().map(|v| v.id.as_str()).collect::<Vec<_>>(), ["1", "2"]);
        assert_eq!(secs(info.versions[0].created_at), 1_795_870_371);
        let m = info.to_metadata();
        assert_eq!((m.key_id.as_str(), m.current_version.as_str()), ("k1", "2"));
        assert_eq!(m.state, KeyState::Enabled);
        assert_eq!(m.min_decryption_version, None);
        assert_eq!(secs(m.created_at), 1_795_870_371);

        let json = r#"{"name":"k2","type":"ecdsa-p256","latest_version":3,"min_decryption_version":2,
            "keys":{"3":{"creation_time":"2024-02-29T12:34:56Z"},"2":{"creation_time":"2024-01-01T00:00:00Z"}}}"#;
        let info = serde_json::from_str::<KeyData>(json).unwrap().into_info().unwrap();
        assert_eq!(info.versions.iter().map(|v| v.id.as_str()).collect::<Vec<_>>(), ["2", "3"]);
        assert_eq!(info.to_metadata().min_decryption_version.as_deref(), Some("2"));

        for bad in [
            r#"{"name":"k","type":"t","latest_version":1,"keys":{"0":1}}"#,
            r#"{"name":"k","type":"t","latest_version":1,"keys":{"1":"x"}}"#,
            r#"{"name":"k","type":"t","latest_version":0,"keys":{}}"#,
        ] {
            assert!(serde_json::from_str::<KeyData>(bad).unwrap().into_info().is_none(), "{bad}");
        }
    }
}
