//! The objects envseal keeps in the token (README §Token objects).
//!
//! - **Key versions**: AES-256 secret keys, `CKA_LABEL = <name>`, `CKA_ID = "<name>#v<N>"`,
//!   sensitive, never extractable. `CKA_ENCRYPT` / `CKA_DECRYPT` carry the key state, so the
//!   token itself refuses a disabled key, an old version for encryption, or a version below
//!   the minimum for decryption.
//! - **Key records**: data objects (`CKA_APPLICATION = "envseal-kms-pkcs11/key"`,
//!   `CKA_LABEL = <name>`) whose JSON value holds what PKCS#11 has no attribute for:
//!   description, tags, times, state, deletion date, minimum version. Data object values are
//!   read-only in SoftHSM2, so a change writes a new record with the next `seq` and then
//!   destroys the old one; readers take the highest `seq`.
//! - **Aliases**: data objects (`CKA_APPLICATION = "envseal-kms-pkcs11/alias"`,
//!   `CKA_LABEL = alias/...`) whose value is the key name.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::Session;
use cryptoki::types::Ulong;
use serde::{Deserialize, Serialize};

use envseal_core::KmsError;

use crate::token::{OpError, OpResult, rv};

/// `CKA_APPLICATION` of key records.
pub const APP_KEY: &str = "envseal-kms-pkcs11/key";
/// `CKA_APPLICATION` of aliases.
pub const APP_ALIAS: &str = "envseal-kms-pkcs11/alias";

/// Longest record value read (a record is a few hundred bytes; tags and description are bounded).
const MAX_RECORD_LEN: usize = 64 * 1024;
/// Longest description accepted.
pub const MAX_DESCRIPTION_LEN: usize = 8192;
/// Most tags accepted.
pub const MAX_TAGS: usize = 50;
/// Longest tag key.
pub const MAX_TAG_KEY_LEN: usize = 128;
/// Longest tag value.
pub const MAX_TAG_VALUE_LEN: usize = 256;
/// Longest alias.
pub const MAX_ALIAS_LEN: usize = 256;

/// `CKA_ID` of version `v` of key `name`.
pub fn version_id(name: &str, v: u32) -> Vec<u8> {
    format!("{name}#v{v}").into_bytes()
}

/// The version number in a `CKA_ID`, if it is `"<name>#v<N>"` with `N` canonical decimal >= 1.
pub fn parse_version_id(name: &str, id: &[u8]) -> Option<u32> {
    let rest = id.strip_prefix(name.as_bytes())?.strip_prefix(b"#v")?;
    parse_version(std::str::from_utf8(rest).ok()?)
}

/// A canonical decimal version (no sign, no leading zero), >= 1.
pub fn parse_version(s: &str) -> Option<u32> {
    if s.is_empty() || s.starts_with('0') || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok().filter(|&v| v >= 1)
}

/// Key names: 1..=255 bytes (the blob's length byte), no control characters, and not
/// `alias/...` (that names an alias).
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= crate::blob::MAX_NAME_LEN
        && !name.starts_with("alias/")
        && !name.chars().any(char::is_control)
}

/// Aliases: `alias/` then 1 or more of `A-Z a-z 0-9 / _ -`, at most 256 bytes.
pub fn valid_alias(alias: &str) -> bool {
    alias.len() <= MAX_ALIAS_LEN
        && alias.strip_prefix("alias/").is_some_and(|rest| {
            !rest.is_empty() && rest.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'/' | b'_' | b'-'))
        })
}

/// Seconds since the Unix epoch.
pub fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// A Unix time as `SystemTime` (0 = unknown, shown as the epoch).
pub fn time(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(secs)
}

/// One version object of a key.
#[derive(Debug, Clone, Copy)]
pub struct VersionObject {
    pub handle: ObjectHandle,
    pub version: u32,
    pub encrypt: bool,
    pub decrypt: bool,
}

fn key_template(name: &str) -> Vec<Attribute> {
    vec![
        Attribute::Class(ObjectClass::SECRET_KEY),
        Attribute::KeyType(KeyType::AES),
        Attribute::Label(name.as_bytes().to_vec()),
    ]
}

fn flag(attrs: &[Attribute], want: AttributeType) -> bool {
    attrs.iter().any(|a| match (a, want) {
        (Attribute::Encrypt(b), AttributeType::Encrypt) | (Attribute::Decrypt(b), AttributeType::Decrypt) => *b,
        _ => false,
    })
}

fn bytes_attr(attrs: &[Attribute], want: AttributeType) -> Option<&[u8]> {
    attrs.iter().find_map(|a| match (a, want) {
        (Attribute::Id(v), AttributeType::Id)
        | (Attribute::Label(v), AttributeType::Label)
        | (Attribute::Value(v), AttributeType::Value) => Some(v.as_slice()),
        _ => None,
    })
}

/// Every version object of `name`, oldest first. Objects labelled `name` whose `CKA_ID` is
/// not `"<name>#v<N>"` are not envseal's and are ignored.
///
/// # Errors
/// Two objects with the same version: the token is inconsistent and the caller must fix it.
pub fn find_versions(s: &Session, name: &str) -> OpResult<Vec<VersionObject>> {
    let mut out = Vec::new();
    for handle in s.find_objects(&key_template(name))? {
        let attrs = s.get_attributes(handle, &[AttributeType::Id, AttributeType::Encrypt, AttributeType::Decrypt])?;
        let Some(version) = bytes_attr(&attrs, AttributeType::Id).and_then(|id| parse_version_id(name, id)) else {
            continue;
        };
        out.push(VersionObject {
            handle,
            version,
            encrypt: flag(&attrs, AttributeType::Encrypt),
            decrypt: flag(&attrs, AttributeType::Decrypt),
        });
    }
    out.sort_by_key(|v| v.version);
    if let Some(w) = out.windows(2).find(|w| w[0].version == w[1].version) {
        return Err(duplicate(name, w[0].version));
    }
    Ok(out)
}

fn duplicate(name: &str, version: u32) -> OpError {
    OpError::Kms(KmsError::Unavailable {
        message: format!(
            "the token holds two key objects with CKA_ID \"{name}#v{version}\": destroy the one envseal did not create"
        ),
        retryable: false,
    })
}

/// Every envseal key object in the token, grouped by name.
pub fn all_versions(s: &Session) -> OpResult<BTreeMap<String, Vec<VersionObject>>> {
    let template = [Attribute::Class(ObjectClass::SECRET_KEY), Attribute::KeyType(KeyType::AES)];
    let mut out: BTreeMap<String, Vec<VersionObject>> = BTreeMap::new();
    for handle in s.find_objects(&template)? {
        let attrs = s.get_attributes(
            handle,
            &[AttributeType::Label, AttributeType::Id, AttributeType::Encrypt, AttributeType::Decrypt],
        )?;
        let Some(name) = bytes_attr(&attrs, AttributeType::Label).and_then(|l| std::str::from_utf8(l).ok()) else {
            continue;
        };
        let Some(version) = bytes_attr(&attrs, AttributeType::Id).and_then(|id| parse_version_id(name, id)) else {
            continue;
        };
        out.entry(name.to_string()).or_default().push(VersionObject {
            handle,
            version,
            encrypt: flag(&attrs, AttributeType::Encrypt),
            decrypt: flag(&attrs, AttributeType::Decrypt),
        });
    }
    for (name, versions) in out.iter_mut() {
        versions.sort_by_key(|v| v.version);
        if let Some(w) = versions.windows(2).find(|w| w[0].version == w[1].version) {
            return Err(duplicate(name, w[0].version));
        }
    }
    Ok(out)
}

/// Generates version `version` of `name` inside the token: AES-256, token object, private,
/// sensitive, never extractable, usable for CKM_AES_GCM encrypt/decrypt only.
pub fn generate_version(s: &Session, name: &str, version: u32, encrypt: bool, decrypt: bool) -> OpResult<ObjectHandle> {
    let template = [
        Attribute::Token(true),
        Attribute::Private(true),
        Attribute::Sensitive(true),
        Attribute::Extractable(false),
        Attribute::Encrypt(encrypt),
        Attribute::Decrypt(decrypt),
        Attribute::Wrap(false),
        Attribute::Unwrap(false),
        Attribute::Sign(false),
        Attribute::Verify(false),
        Attribute::Derive(false),
        // The key state lives in CKA_ENCRYPT / CKA_DECRYPT, which envseal flips.
        Attribute::Modifiable(true),
        Attribute::ValueLen(Ulong::try_from(32usize)?),
        Attribute::Label(name.as_bytes().to_vec()),
        Attribute::Id(version_id(name, version)),
    ];
    Ok(s.generate_key(&Mechanism::AesKeyGen, &template)?)
}

/// Lifecycle state as stored in a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum StateRecord {
    Enabled,
    Disabled,
    PendingDeletion,
}

/// One version's creation time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VersionRecord {
    pub version: u32,
    pub created: u64,
}

/// The key record (README §Token objects, key record).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyRecord {
    /// Record format, 1.
    pub format: u32,
    /// Incremented on every change; the highest wins.
    pub seq: u64,
    pub description: String,
    pub tags: BTreeMap<String, String>,
    /// Unix seconds; 0 when unknown (a key created outside envseal).
    pub created: u64,
    pub state: StateRecord,
    pub deletion_date: Option<u64>,
    pub min_decryption_version: Option<u32>,
    pub versions: Vec<VersionRecord>,
}

impl KeyRecord {
    /// A record for a new key, or for a key made outside envseal (`created` = 0).
    pub fn new(description: String, tags: BTreeMap<String, String>, created: u64) -> Self {
        Self {
            format: 1,
            seq: 0,
            description,
            tags,
            created,
            state: StateRecord::Enabled,
            deletion_date: None,
            min_decryption_version: None,
            versions: Vec::new(),
        }
    }

    /// Past its deletion date: treated as absent, purged by the next key-management call.
    pub fn is_expired(&self, now: u64) -> bool {
        self.state == StateRecord::PendingDeletion && self.deletion_date.is_some_and(|d| d <= now)
    }

    pub fn version_created(&self, version: u32) -> u64 {
        self.versions.iter().find(|v| v.version == version).map_or(0, |v| v.created)
    }
}

/// The current record of `name` (highest `seq`) and the handles of every record object of it.
pub fn read_record(s: &Session, name: &str) -> OpResult<(Option<KeyRecord>, Vec<ObjectHandle>)> {
    let template = [
        Attribute::Class(ObjectClass::DATA),
        Attribute::Application(APP_KEY.as_bytes().to_vec()),
        Attribute::Label(name.as_bytes().to_vec()),
    ];
    let handles = s.find_objects(&template)?;
    let mut best: Option<KeyRecord> = None;
    for &h in &handles {
        let attrs = s.get_attributes(h, &[AttributeType::Value])?;
        let Some(value) = bytes_attr(&attrs, AttributeType::Value) else { continue };
        if value.len() > MAX_RECORD_LEN {
            continue;
        }
        // A record that does not parse (another format version, damage) is skipped: the
        // key stays usable from its objects alone.
        let Ok(record) = serde_json::from_slice::<KeyRecord>(value) else { continue };
        if record.format == 1 && best.as_ref().is_none_or(|b| record.seq > b.seq) {
            best = Some(record);
        }
    }
    Ok((best, handles))
}

/// Every key record in the token, by name.
pub fn all_records(s: &Session) -> OpResult<BTreeMap<String, KeyRecord>> {
    let template = [Attribute::Class(ObjectClass::DATA), Attribute::Application(APP_KEY.as_bytes().to_vec())];
    let mut out: BTreeMap<String, KeyRecord> = BTreeMap::new();
    for h in s.find_objects(&template)? {
        let attrs = s.get_attributes(h, &[AttributeType::Label, AttributeType::Value])?;
        let (Some(label), Some(value)) =
            (bytes_attr(&attrs, AttributeType::Label), bytes_attr(&attrs, AttributeType::Value))
        else {
            continue;
        };
        let Ok(name) = std::str::from_utf8(label) else { continue };
        if value.len() > MAX_RECORD_LEN {
            continue;
        }
        let Ok(record) = serde_json::from_slice::<KeyRecord>(value) else { continue };
        if record.format != 1 {
            continue;
        }
        match out.get(name) {
            Some(b) if b.seq >= record.seq => {}
            _ => {
                out.insert(name.to_string(), record);
            }
        }
    }
    Ok(out)
}

/// Writes `record` as the new record of `name` (seq = previous + 1), then destroys the
/// previous record objects. A crash in between leaves two records; readers take the newer and
/// the next write removes the older.
pub fn write_record(s: &Session, name: &str, record: &mut KeyRecord, previous: &[ObjectHandle]) -> OpResult<()> {
    record.seq += 1;
    // Serializing a struct of strings, integers and maps cannot fail.
    let value = serde_json::to_vec(record).map_err(|_| {
        OpError::Kms(KmsError::Unavailable { message: "cannot encode the key record".into(), retryable: false })
    })?;
    let template = [
        Attribute::Class(ObjectClass::DATA),
        Attribute::Token(true),
        Attribute::Private(true),
        Attribute::Modifiable(false),
        Attribute::Application(APP_KEY.as_bytes().to_vec()),
        Attribute::Label(name.as_bytes().to_vec()),
        Attribute::Value(value),
    ];
    s.create_object(&template)?;
    for &h in previous {
        // Best effort: a leftover older record is ignored by readers.
        let _ = s.destroy_object(h);
    }
    Ok(())
}

/// An alias: its name, target key and object handles (normally one).
#[derive(Debug, Clone)]
pub struct AliasObject {
    pub alias: String,
    pub target: String,
    pub handles: Vec<ObjectHandle>,
}

fn alias_objects(s: &Session, alias: Option<&str>) -> OpResult<Vec<AliasObject>> {
    let mut template = vec![Attribute::Class(ObjectClass::DATA), Attribute::Application(APP_ALIAS.as_bytes().to_vec())];
    if let Some(a) = alias {
        template.push(Attribute::Label(a.as_bytes().to_vec()));
    }
    let mut out: Vec<AliasObject> = Vec::new();
    for h in s.find_objects(&template)? {
        let attrs = s.get_attributes(h, &[AttributeType::Label, AttributeType::Value])?;
        let (Some(label), Some(value)) =
            (bytes_attr(&attrs, AttributeType::Label), bytes_attr(&attrs, AttributeType::Value))
        else {
            continue;
        };
        let (Ok(label), Ok(target)) = (std::str::from_utf8(label), std::str::from_utf8(value)) else { continue };
        match out.iter_mut().find(|a| a.alias == label) {
            Some(existing) if existing.target == target => existing.handles.push(h),
            Some(_) => {
                return Err(OpError::Kms(KmsError::Unavailable {
                    message: format!(
                        "alias {label} is defined twice with different keys in the token: delete it and create it again"
                    ),
                    retryable: false,
                }));
            }
            None => out.push(AliasObject { alias: label.to_string(), target: target.to_string(), handles: vec![h] }),
        }
    }
    Ok(out)
}

/// The alias `alias`, if defined.
pub fn find_alias(s: &Session, alias: &str) -> OpResult<Option<AliasObject>> {
    Ok(alias_objects(s, Some(alias))?.into_iter().next())
}

/// Every alias, sorted by name.
pub fn all_aliases(s: &Session) -> OpResult<Vec<AliasObject>> {
    let mut v = alias_objects(s, None)?;
    v.sort_by(|a, b| a.alias.cmp(&b.alias));
    Ok(v)
}

/// Creates an alias object.
pub fn create_alias(s: &Session, alias: &str, target: &str) -> OpResult<()> {
    let template = [
        Attribute::Class(ObjectClass::DATA),
        Attribute::Token(true),
        Attribute::Private(true),
        Attribute::Modifiable(false),
        Attribute::Application(APP_ALIAS.as_bytes().to_vec()),
        Attribute::Label(alias.as_bytes().to_vec()),
        Attribute::Value(target.as_bytes().to_vec()),
    ];
    s.create_object(&template)?;
    Ok(())
}

/// Sets `CKA_ENCRYPT` / `CKA_DECRYPT` of one object.
///
/// # Errors
/// `KmsError::Unsupported` naming `operation` when the token does not let these attributes
/// change.
pub fn set_flags(
    s: &Session,
    handle: ObjectHandle,
    encrypt: bool,
    decrypt: bool,
    operation: &'static str,
) -> OpResult<()> {
    match s.update_attributes(handle, &[Attribute::Encrypt(encrypt), Attribute::Decrypt(decrypt)]) {
        Ok(()) => Ok(()),
        Err(e)
            if matches!(
                rv(&e),
                Some(cryptoki::error::RvError::AttributeReadOnly | cryptoki::error::RvError::ActionProhibited)
            ) =>
        {
            Err(OpError::Kms(KmsError::Unsupported { operation, backend: crate::blob::BACKEND.into() }))
        }
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_ids() {
        assert_eq!(version_id("cmk", 3), b"cmk#v3");
        assert_eq!(parse_version_id("cmk", b"cmk#v3"), Some(3));
        assert_eq!(parse_version_id("a#v1", b"a#v1#v2"), Some(2));
        for bad in [&b"cmk#v0"[..], b"cmk#v03", b"cmk#v", b"cmk#v-1", b"cmk#3", b"other#v1", b"cmk#v99999999999"] {
            assert_eq!(parse_version_id("cmk", bad), None, "{}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn names_and_aliases() {
        assert!(valid_name("cmk") && valid_name("My Key ü") && valid_name(&"k".repeat(255)));
        assert!(!valid_name("") && !valid_name(&"k".repeat(256)) && !valid_name("alias/x") && !valid_name("a\nb"));
        assert!(valid_alias("alias/app") && valid_alias("alias/a/b_c-1"));
        assert!(!valid_alias("alias/") && !valid_alias("app") && !valid_alias("alias/a b"));
        assert!(!valid_alias(&format!("alias/{}", "a".repeat(251))));
    }

    #[test]
    fn record_json_is_stable() {
        let mut r = KeyRecord::new("d".into(), BTreeMap::from([("team".into(), "x".into())]), 10);
        r.versions.push(VersionRecord { version: 1, created: 10 });
        let json = serde_json::to_string(&r).unwrap();
        assert_eq!(
            json,
            r#"{"format":1,"seq":0,"description":"d","tags":{"team":"x"},"created":10,"state":"Enabled","deletion_date":null,"min_decryption_version":null,"versions":[{"version":1,"created":10}]}"#
        );
        assert_eq!(serde_json::from_str::<KeyRecord>(&json).unwrap(), r);
        assert!(serde_json::from_str::<KeyRecord>(&json.replace("\"seq\"", "\"extra\":1,\"seq\"")).is_err());
    }
}
