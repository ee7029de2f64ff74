//! envseal's metadata in a value-level sealed file (FORMAT.md §10.4).

use std::collections::BTreeMap;

use base64::Engine as _;
use envseal_core::values::FILE_ID_LEN;
use envseal_core::{EncryptionContext, WrappedKey};
use serde::{Deserialize, Serialize};

use crate::StoreError;

/// Metadata of a value-level sealed file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Metadata {
    /// Value-format version: 1 or 2 (FORMAT.md §10).
    pub version: u32,
    /// Random file id: HKDF salt and KMS-context binding.
    pub file_id: [u8; FILE_ID_LEN],
    /// The encryption context.
    pub context: EncryptionContext,
    /// Wrapped data-key entries (any one opens the file; rewrap replaces them).
    pub keys: Vec<WrappedKey>,
    /// Regular expression of the values left in clear: format 2 matches the whole JSON pointer
    /// of each value (`/a/b/0`), format 1 any part of its dotted path.
    pub plain_keys: Option<String>,
    /// Format 2: values are padded to a multiple of this many bytes (`None` in format 1).
    pub padding: Option<u32>,
    /// Key commitment (hex).
    pub commitment: String,
    /// Whole-file MAC (hex).
    pub mac: String,
    /// When the file was first sealed (RFC 3339), informational.
    pub created: Option<String>,
    /// When it was last changed by envseal (RFC 3339), informational.
    pub modified: Option<String>,
}

/// The JSON shape of the metadata, shared by every format.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Wire {
    pub version: u32,
    pub file_id: String,
    #[serde(default)]
    pub context: BTreeMap<String, String>,
    pub keys: Vec<WireKey>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plain_keys: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub padding: Option<u32>,
    pub commitment: String,
    pub mac: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub modified: Option<String>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct WireKey {
    pub backend: String,
    pub key_id: String,
    pub key_version: String,
    pub blob: String,
}

impl Metadata {
    /// The bytes the MAC covers besides the entries: version, context, plain-keys rule and
    /// (format 2) padding.
    pub(crate) fn mac_header(&self) -> Vec<u8> {
        let mut h = Vec::new();
        h.extend_from_slice(&self.version.to_be_bytes());
        h.extend_from_slice(&self.context.canonical_bytes());
        match &self.plain_keys {
            None => h.push(0),
            Some(r) => {
                h.push(1);
                h.extend_from_slice(&(r.len() as u64).to_be_bytes());
                h.extend_from_slice(r.as_bytes());
            }
        }
        if let Some(p) = self.padding {
            h.extend_from_slice(&p.to_be_bytes());
        }
        h
    }

    pub(crate) fn to_wire(&self) -> Wire {
        Wire {
            version: self.version,
            file_id: hex::encode(self.file_id),
            context: self.context.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            keys: self
                .keys
                .iter()
                .map(|k| WireKey {
                    backend: k.backend.clone(),
                    key_id: k.key_id.clone(),
                    key_version: k.key_version.clone(),
                    blob: base64::engine::general_purpose::STANDARD.encode(&k.blob),
                })
                .collect(),
            plain_keys: self.plain_keys.clone(),
            padding: self.padding,
            commitment: self.commitment.clone(),
            mac: self.mac.clone(),
            created: self.created.clone(),
            modified: self.modified.clone(),
        }
    }

    pub(crate) fn from_wire(w: Wire) -> Result<Self, StoreError> {
        let bad = |m: &str| StoreError::Metadata(m.to_string());
        if w.version != 1 && w.version != 2 {
            return Err(StoreError::Core(
                envseal_core::FormatError::UnsupportedVersion(w.version.min(255) as u8).into(),
            ));
        }
        match (w.version, w.padding) {
            (1, Some(_)) => return Err(bad("padding is a format-2 field")),
            (2, None) => return Err(bad("format 2 needs a padding")),
            (_, Some(p)) => envseal_core::values::check_padding(p).map_err(|e| StoreError::Metadata(e.to_string()))?,
            _ => {}
        }
        let mut file_id = [0u8; FILE_ID_LEN];
        if w.file_id.bytes().any(|b| b.is_ascii_uppercase()) {
            return Err(bad("file_id must be 64 lowercase hex digits"));
        }
        hex::decode_to_slice(&w.file_id, &mut file_id).map_err(|_| bad("file_id must be 64 lowercase hex digits"))?;
        let context = EncryptionContext::from_pairs(w.context).map_err(|e| StoreError::Metadata(e.to_string()))?;
        if w.keys.is_empty() {
            return Err(bad("no wrapped-key entry"));
        }
        if w.keys.len() > envseal_core::container::MAX_ENTRIES {
            return Err(bad("too many wrapped-key entries"));
        }
        let keys = w
            .keys
            .into_iter()
            .map(|k| {
                let blob = base64::engine::general_purpose::STANDARD
                    .decode(&k.blob)
                    .map_err(|_| bad("key blob is not base64"))?;
                let e = WrappedKey { backend: k.backend, key_id: k.key_id, key_version: k.key_version, blob };
                envseal_core::entries::validate(&e).map_err(|e| StoreError::Metadata(format!("key entry: {e}")))?;
                Ok(e)
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        let lower_hex = |s: &str| s.len() == 64 && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        if !lower_hex(&w.commitment) || !lower_hex(&w.mac) {
            return Err(bad("commitment and mac must be 64 lowercase hex digits"));
        }
        Ok(Metadata {
            version: w.version,
            file_id,
            context,
            keys,
            plain_keys: w.plain_keys,
            padding: w.padding,
            commitment: w.commitment,
            mac: w.mac,
            created: w.created,
            modified: w.modified,
        })
    }

    /// As a JSON value (for JSON and YAML documents, and `inspect --json`).
    pub fn to_json(&self) -> serde_json::Value {
        // Invariant: the wire struct has only strings, integers, maps and lists.
        serde_json::to_value(self.to_wire()).expect("metadata serializes")
    }

    /// From a JSON value.
    ///
    /// # Errors
    /// [`StoreError::Metadata`] naming the problem.
    pub fn from_json(v: serde_json::Value) -> Result<Self, StoreError> {
        let w: Wire = serde_json::from_value(v).map_err(|e| StoreError::Metadata(e.to_string()))?;
        Self::from_wire(w)
    }
}
