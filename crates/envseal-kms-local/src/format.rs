//! `keystore.json`, field by field (README §On-disk format), and its validation on load.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde::{Deserialize, Serialize};

use envseal_core::kms::{KeyMetadata, KeyState, KeyVersionInfo, ProtectionLevel};

use crate::crypto::{KEY_LEN, KEYSTORE_ID_LEN, KeystoreId, MAX_KEY_ID_LEN, NONCE_LEN, TAG_LEN};
use crate::error::LocalError;
use crate::unlock::{ARGON2_VERSION, Argon2Params, SALT_LEN, UnlockMode};

/// The format version this build reads and writes.
pub(crate) const FORMAT_VERSION: u32 = 1;
/// Prefix of every alias.
pub(crate) const ALIAS_PREFIX: &str = "alias/";
/// Longest alias, in bytes.
const MAX_ALIAS_LEN: usize = 256;
/// Longest description, in bytes.
pub(crate) const MAX_DESCRIPTION_LEN: usize = 8192;
/// Most tags on one key.
pub(crate) const MAX_TAGS: usize = 50;
/// Longest tag key, in bytes.
pub(crate) const MAX_TAG_KEY_LEN: usize = 128;
/// Longest tag value, in bytes.
pub(crate) const MAX_TAG_VALUE_LEN: usize = 256;
/// Length of the stored check value: nonce, check label, tag.
const CHECK_LEN: usize = NONCE_LEN + 22 + TAG_LEN;
/// Length of stored material: nonce, 32 bytes, tag.
const MATERIAL_LEN: usize = NONCE_LEN + KEY_LEN + TAG_LEN;

/// The whole keystore file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct KeystoreFile {
    /// Format version: 1.
    pub(crate) format: u32,
    /// 16 random bytes, lowercase hex.
    pub(crate) keystore_id: String,
    /// Unlock mode and its parameters.
    pub(crate) unlock: UnlockRecord,
    /// Base64 of `nonce || AES-256-GCM(KEK, check label)`.
    pub(crate) check: String,
    /// The keys, in creation order.
    pub(crate) keys: Vec<KeyRecord>,
}

/// The unlock record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "mode", rename_all = "kebab-case", deny_unknown_fields)]
pub(crate) enum UnlockRecord {
    /// KEK = HMAC-SHA-256(master key, label || keystore id).
    MasterKeyFile,
    /// KEK = Argon2id(passphrase, salt, params).
    Passphrase {
        /// Always `argon2id`.
        kdf: String,
        /// Argon2 version, 19 (0x13).
        version: u32,
        /// Base64 of the 16-byte salt.
        salt: String,
        /// Memory in KiB.
        m_cost_kib: u32,
        /// Passes.
        t_cost: u32,
        /// Lanes.
        p_cost: u32,
    },
}

impl UnlockRecord {
    pub(crate) fn mode(&self) -> UnlockMode {
        match self {
            UnlockRecord::MasterKeyFile => UnlockMode::MasterKeyFile,
            UnlockRecord::Passphrase { .. } => UnlockMode::Passphrase,
        }
    }

    pub(crate) fn passphrase(salt: &[u8], params: &Argon2Params) -> Self {
        UnlockRecord::Passphrase {
            kdf: "argon2id".into(),
            version: ARGON2_VERSION,
            salt: B64.encode(salt),
            m_cost_kib: params.m_cost_kib,
            t_cost: params.t_cost,
            p_cost: params.p_cost,
        }
    }
}

/// Key state as stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum StateRecord {
    /// Usable.
    Enabled,
    /// Refuses cryptographic operations.
    Disabled,
    /// Refuses cryptographic operations; purged after `deletion_date`.
    PendingDeletion,
}

impl From<StateRecord> for KeyState {
    fn from(s: StateRecord) -> Self {
        match s {
            StateRecord::Enabled => KeyState::Enabled,
            StateRecord::Disabled => KeyState::Disabled,
            StateRecord::PendingDeletion => KeyState::PendingDeletion,
        }
    }
}

/// Protection level as stored: software only.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum ProtectionRecord {
    /// Key material encrypted under the KEK in this file.
    #[serde(rename = "SOFTWARE")]
    Software,
}

/// One key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct KeyRecord {
    /// Canonical key id (UUID-style, 36 characters).
    pub(crate) id: String,
    /// Free text.
    pub(crate) description: String,
    /// Lifecycle state.
    pub(crate) state: StateRecord,
    /// `SOFTWARE`.
    pub(crate) protection_level: ProtectionRecord,
    /// Creation time, unix seconds.
    pub(crate) created: u64,
    /// When the key is purged (unix seconds), set exactly when pending deletion.
    pub(crate) deletion_date: Option<u64>,
    /// Aliases pointing at this key, sorted.
    pub(crate) aliases: Vec<String>,
    /// Tags.
    pub(crate) tags: BTreeMap<String, String>,
    /// Oldest version allowed to decrypt (decimal string), if set.
    pub(crate) min_decryption_version: Option<String>,
    /// Automatic rotation period in seconds: a new version is made once the newest is this
    /// old (when the key is next used, or by `envseal kms serve`'s timer).
    pub(crate) rotation_interval_secs: Option<u64>,
    /// Next automatic rotation, unix seconds: the newest version's creation plus the period
    /// (kept for readers of the file; the code derives it from the versions).
    pub(crate) next_rotation: Option<u64>,
    /// Versions, oldest first; version `n` is at index `n - 1`.
    pub(crate) versions: Vec<VersionRecord>,
}

/// One version of a key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct VersionRecord {
    /// Decimal ordinal from `"1"`.
    pub(crate) id: String,
    /// Creation time, unix seconds.
    pub(crate) created: u64,
    /// Base64 of `nonce || AES-256-GCM(KEK, nonce, material, aad)`.
    pub(crate) material: String,
}

/// Only the version field, read first so a newer file gets a clear error.
#[derive(Deserialize)]
struct FormatProbe {
    format: u32,
}

pub(crate) fn now_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

fn to_time(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(secs)
}

/// Describes a JSON error by category and position only: serde's messages can quote values.
fn json_reason(e: &serde_json::Error) -> String {
    let what = match e.classify() {
        serde_json::error::Category::Io => "I/O error",
        serde_json::error::Category::Syntax => "invalid JSON",
        serde_json::error::Category::Data => "unexpected field, type or value",
        serde_json::error::Category::Eof => "unexpected end of file",
    };
    format!("{what} at line {} column {}", e.line(), e.column())
}

/// Parses a keystore file and checks every invariant the code relies on.
pub(crate) fn parse(path: &Path, bytes: &[u8]) -> Result<(KeystoreFile, KeystoreId), LocalError> {
    let probe: FormatProbe = serde_json::from_slice(bytes).map_err(|e| LocalError::corrupt(path, json_reason(&e)))?;
    if probe.format != FORMAT_VERSION {
        return Err(LocalError::UnsupportedVersion { path: path.to_path_buf(), found: probe.format });
    }
    let file: KeystoreFile = serde_json::from_slice(bytes).map_err(|e| LocalError::corrupt(path, json_reason(&e)))?;
    let id = file.validate().map_err(|reason| LocalError::corrupt(path, reason))?;
    Ok((file, id))
}

/// Serializes a keystore file (pretty, with a final newline).
pub(crate) fn to_bytes(file: &KeystoreFile) -> Vec<u8> {
    // Invariant: these types (strings, integers, maps with string keys) always serialize.
    let mut out = serde_json::to_vec_pretty(file).expect("keystore serializes");
    out.push(b'\n');
    out
}

pub(crate) fn decode_b64(s: &str) -> Option<Vec<u8>> {
    B64.decode(s).ok()
}

pub(crate) fn encode_b64(bytes: &[u8]) -> String {
    B64.encode(bytes)
}

/// Parses a canonical decimal version (`1`, `2`, ... no sign, no leading zero).
pub(crate) fn parse_version(s: &str) -> Option<u32> {
    if s.is_empty() || s.starts_with('0') || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok().filter(|&v| v >= 1)
}

/// Whether `alias` is well formed: `alias/` then 1+ of `[A-Za-z0-9/_-]`, at most 256 bytes.
pub(crate) fn valid_alias(alias: &str) -> bool {
    alias.len() <= MAX_ALIAS_LEN
        && alias.strip_prefix(ALIAS_PREFIX).is_some_and(|rest| {
            !rest.is_empty() && rest.bytes().all(|b| b.is_ascii_alphanumeric() || b"/_-".contains(&b))
        })
}

/// Whether `id` can be a key id: 1..=255 printable ASCII bytes, not an alias.
fn valid_key_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_KEY_ID_LEN
        && !id.starts_with(ALIAS_PREFIX)
        && id.bytes().all(|b| b.is_ascii_graphic())
}

/// A fresh key id: 16 random bytes as a version-4 UUID string.
pub(crate) fn new_key_id() -> String {
    let mut b: [u8; 16] = envseal_core::random::array();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = hex::encode(b);
    format!("{}-{}-{}-{}-{}", &h[..8], &h[8..12], &h[12..16], &h[16..20], &h[20..])
}

impl KeystoreFile {
    fn validate(&self) -> Result<KeystoreId, String> {
        let mut id = [0u8; KEYSTORE_ID_LEN];
        if self.keystore_id.len() != 2 * KEYSTORE_ID_LEN
            || self.keystore_id.bytes().any(|b| b.is_ascii_uppercase())
            || hex::decode_to_slice(&self.keystore_id, &mut id).is_err()
        {
            return Err("keystore_id is not 32 lowercase hex digits".into());
        }
        if decode_b64(&self.check).is_none_or(|c| c.len() != CHECK_LEN) {
            return Err("check is not a valid check value".into());
        }
        if let UnlockRecord::Passphrase { kdf, version, salt, m_cost_kib, t_cost, p_cost } = &self.unlock {
            if kdf != "argon2id" || *version != ARGON2_VERSION {
                return Err("unlock.kdf must be argon2id version 19".into());
            }
            if decode_b64(salt).is_none_or(|s| s.len() != SALT_LEN) {
                return Err(format!("unlock.salt must be {SALT_LEN} bytes of base64"));
            }
            let params = Argon2Params { m_cost_kib: *m_cost_kib, t_cost: *t_cost, p_cost: *p_cost };
            if params.validate().is_err() {
                return Err("unlock Argon2 parameters out of range".into());
            }
        }
        let mut ids = HashSet::new();
        let mut aliases = HashSet::new();
        for (i, k) in self.keys.iter().enumerate() {
            if !valid_key_id(&k.id) {
                return Err(format!("keys[{i}].id is not a valid key id"));
            }
            if !ids.insert(k.id.as_str()) {
                return Err(format!("key {} appears twice", k.id));
            }
            if (k.state == StateRecord::PendingDeletion) != k.deletion_date.is_some() {
                return Err(format!("key {}: deletion_date must be set exactly when PendingDeletion", k.id));
            }
            for a in &k.aliases {
                if !valid_alias(a) {
                    return Err(format!("key {}: malformed alias", k.id));
                }
                if !aliases.insert(a.as_str()) {
                    return Err(format!("alias {a} is used twice"));
                }
            }
            if k.versions.is_empty() || k.versions.len() > u32::MAX as usize {
                return Err(format!("key {}: no versions", k.id));
            }
            for (n, v) in k.versions.iter().enumerate() {
                if parse_version(&v.id) != Some(n as u32 + 1) {
                    return Err(format!("key {}: versions must be numbered 1, 2, ... in order", k.id));
                }
                if decode_b64(&v.material).is_none_or(|m| m.len() != MATERIAL_LEN) {
                    return Err(format!("key {} version {}: malformed material", k.id, v.id));
                }
            }
            if let Some(min) = &k.min_decryption_version
                && parse_version(min).is_none_or(|m| m as usize > k.versions.len())
            {
                return Err(format!("key {}: min_decryption_version is not an existing version", k.id));
            }
        }
        Ok(id)
    }

    /// Removes keys whose deletion date has passed; true if any was removed.
    pub(crate) fn purge(&mut self, now: u64) -> bool {
        let before = self.keys.len();
        self.keys.retain(|k| !k.is_expired(now));
        self.keys.len() != before
    }

    /// Index of the key named by `key` (id or alias), ignoring keys already past deletion.
    pub(crate) fn find(&self, key: &str, now: u64) -> Option<usize> {
        let hit = if key.starts_with(ALIAS_PREFIX) {
            self.keys.iter().position(|k| k.aliases.iter().any(|a| a == key))
        } else {
            self.keys.iter().position(|k| k.id == key)
        };
        hit.filter(|&i| !self.keys[i].is_expired(now))
    }

    /// The key holding `alias`, if any (expired keys included: their aliases are still taken
    /// until the purge, which runs first in every mutation).
    pub(crate) fn alias_owner(&self, alias: &str) -> Option<usize> {
        self.keys.iter().position(|k| k.aliases.iter().any(|a| a == alias))
    }
}

impl KeyRecord {
    pub(crate) fn is_expired(&self, now: u64) -> bool {
        self.state == StateRecord::PendingDeletion && self.deletion_date.is_some_and(|d| d <= now)
    }

    /// Current (newest) version number.
    pub(crate) fn current_version(&self) -> u32 {
        // Invariant: validated non-empty and at most u32::MAX versions.
        self.versions.len() as u32
    }

    pub(crate) fn min_version(&self) -> Option<u32> {
        self.min_decryption_version.as_deref().and_then(parse_version)
    }

    pub(crate) fn metadata(&self) -> KeyMetadata {
        let mut m = KeyMetadata::new(
            self.id.clone(),
            self.state.into(),
            to_time(self.created),
            self.current_version().to_string(),
        );
        m.description = self.description.clone();
        m.protection_level = ProtectionLevel::Software;
        m.versions =
            self.versions.iter().map(|v| KeyVersionInfo { id: v.id.clone(), created_at: to_time(v.created) }).collect();
        m.min_decryption_version = self.min_decryption_version.clone();
        m.deletion_date = self.deletion_date.map(to_time);
        m.aliases = self.aliases.clone();
        m.tags = self.tags.clone();
        m.rotation_period = self.rotation_interval_secs.map(Duration::from_secs);
        m
    }

    /// Whether automatic rotation is due at `now` (unix seconds): enabled, a period set, and
    /// the newest version at least that old.
    pub(crate) fn rotation_due(&self, now: u64) -> bool {
        let newest = self.versions.last().map_or(self.created, |v| v.created);
        self.state == StateRecord::Enabled
            && self.rotation_interval_secs.is_some_and(|p| newest.saturating_add(p) <= now)
    }

    /// Recomputes `next_rotation` from the period and the newest version.
    pub(crate) fn refresh_next_rotation(&mut self) {
        let newest = self.versions.last().map_or(self.created, |v| v.created);
        self.next_rotation = self.rotation_interval_secs.map(|p| newest.saturating_add(p));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_and_aliases() {
        assert_eq!(parse_version("1"), Some(1));
        assert_eq!(parse_version("42"), Some(42));
        for bad in ["", "0", "01", "-1", "+1", "1.0", "4294967296"] {
            assert_eq!(parse_version(bad), None, "{bad}");
        }
        assert!(valid_alias("alias/default"));
        assert!(valid_alias("alias/team/app_1-x"));
        for bad in ["alias/", "default", "alias/a b", "alias/é", "Alias/x"] {
            assert!(!valid_alias(bad), "{bad}");
        }
        assert!(!valid_alias(&format!("alias/{}", "a".repeat(251))));
    }

    #[test]
    fn key_ids_are_uuid_style() {
        let id = new_key_id();
        assert_eq!(id.len(), 36);
        assert_eq!(id.as_bytes()[14], b'4');
        assert!(valid_key_id(&id));
        assert_ne!(id, new_key_id());
    }

    #[test]
    fn json_errors_do_not_quote_values() {
        let e = parse(Path::new("/k"), br#"{"format": 1, "keystore_id": "hunter2-secret"}"#).unwrap_err();
        assert!(!e.to_string().contains("hunter2"), "{e}");
        let e = parse(Path::new("/k"), br#"{"format": "hunter2"}"#).unwrap_err();
        assert!(!e.to_string().contains("hunter2"), "{e}");
        let e = parse(Path::new("/k"), br#"{"format": 7}"#).unwrap_err();
        assert!(matches!(e, LocalError::UnsupportedVersion { found: 7, .. }));
    }
}
