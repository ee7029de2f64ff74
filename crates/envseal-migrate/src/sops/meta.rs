//! sops's metadata (sops `stores/stores.go`): under the top-level `sops` key in JSON/YAML, as
//! `sops_`-prefixed flattened keys in .env files, in a `[sops]` section in INI files (flattened
//! with `__map_` and `__list_N` separators, `\n` escaped, as `stores/flatten.go` writes them).

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::{Map, Value};

use crate::MigrateError;

/// The metadata fields envseal reads.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Metadata {
    /// age recipients and their wrapped data keys.
    pub age: Vec<AgeEntry>,
    /// AWS KMS keys.
    pub kms: Vec<KmsEntry>,
    /// Vault/OpenBao Transit keys.
    pub hc_vault: Vec<VaultEntry>,
    /// PGP keys (not supported).
    pub pgp: Vec<Value>,
    /// GCP KMS keys (not supported).
    pub gcp_kms: Vec<Value>,
    /// Azure Key Vault keys (not supported).
    pub azure_kv: Vec<Value>,
    /// Key groups (when the file uses them instead of the flat lists).
    pub key_groups: Vec<KeyGroup>,
    /// Shamir threshold of the key groups.
    pub shamir_threshold: Option<u32>,
    /// When the file was last written (the MAC's additional data).
    pub lastmodified: String,
    /// The encrypted MAC.
    pub mac: String,
    /// Keys ending with this are not encrypted.
    pub unencrypted_suffix: Option<String>,
    /// Only keys ending with this are encrypted.
    pub encrypted_suffix: Option<String>,
    /// Keys matching this are not encrypted.
    pub unencrypted_regex: Option<String>,
    /// Only keys matching this are encrypted.
    pub encrypted_regex: Option<String>,
    /// Values under comments matching this are not encrypted.
    pub unencrypted_comment_regex: Option<String>,
    /// Only values under comments matching this are encrypted.
    pub encrypted_comment_regex: Option<String>,
    /// The MAC covers encrypted values only.
    pub mac_only_encrypted: Option<bool>,
    /// The sops version that wrote the file.
    pub version: String,
}

/// An age entry.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct AgeEntry {
    /// The recipient (`age1...`).
    pub recipient: String,
    /// The armored age file holding the data key.
    pub enc: String,
}

/// An AWS KMS entry.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct KmsEntry {
    /// The key ARN.
    pub arn: String,
    /// Base64 of the KMS ciphertext blob.
    pub enc: String,
    /// The KMS encryption context.
    pub context: BTreeMap<String, String>,
    /// A role to assume (not supported: the ambient credentials are used).
    pub role: String,
    /// An AWS profile.
    pub aws_profile: String,
}

/// A Vault Transit entry.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct VaultEntry {
    /// `https://host:port`.
    pub vault_address: String,
    /// The Transit mount (`transit`).
    pub engine_path: String,
    /// The key name.
    pub key_name: String,
    /// `vault:vN:...`.
    pub enc: String,
}

/// One key group.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct KeyGroup {
    /// age entries.
    pub age: Vec<AgeEntry>,
    /// AWS KMS entries.
    pub kms: Vec<KmsEntry>,
    /// Vault entries.
    pub hc_vault: Vec<VaultEntry>,
    /// PGP entries.
    pub pgp: Vec<Value>,
    /// GCP KMS entries.
    pub gcp_kms: Vec<Value>,
    /// Azure Key Vault entries.
    pub azure_kv: Vec<Value>,
}

impl Metadata {
    /// Parses metadata from its JSON form.
    ///
    /// # Errors
    /// [`MigrateError::Malformed`].
    pub fn from_value(v: Value) -> Result<Metadata, MigrateError> {
        let m: Metadata =
            serde_json::from_value(v).map_err(|e| MigrateError::Malformed(format!("sops metadata: {e}")))?;
        if m.mac.is_empty() || m.lastmodified.is_empty() {
            return Err(MigrateError::Malformed("sops metadata without mac or lastmodified".into()));
        }
        Ok(m)
    }

    /// The key groups: the explicit ones, else one group of the flat lists.
    pub fn groups(&self) -> Vec<KeyGroup> {
        if !self.key_groups.is_empty() {
            return self.key_groups.clone();
        }
        vec![KeyGroup {
            age: self.age.clone(),
            kms: self.kms.clone(),
            hc_vault: self.hc_vault.clone(),
            pgp: self.pgp.clone(),
            gcp_kms: self.gcp_kms.clone(),
            azure_kv: self.azure_kv.clone(),
        }]
    }
}

/// Rebuilds the metadata tree from flattened `(key, value)` pairs (sops `Unflatten`): keys
/// split on `__map_` and `__list_N`, values with `\n` escapes decoded, `mac_only_encrypted`
/// and `shamir_threshold` typed.
///
/// # Errors
/// [`MigrateError::Malformed`] for inconsistent keys.
pub fn unflatten(pairs: &[(String, String)]) -> Result<Value, MigrateError> {
    let mut root = Value::Object(Map::new());
    for (k, v) in pairs {
        let v = v.replace("\\n", "\n");
        let value = match k.as_str() {
            "mac_only_encrypted" => Value::Bool(v == "true"),
            "shamir_threshold" => Value::from(
                v.parse::<u32>()
                    .map_err(|_| MigrateError::Malformed("sops shamir_threshold is not a number".into()))?,
            ),
            _ => Value::String(v),
        };
        insert(&mut root, &tokenize(k), value)?;
    }
    // Lists were filled by index: holes would be nulls.
    Ok(root)
}

enum Token {
    Key(String),
    Index(usize),
}

fn tokenize(path: &str) -> Vec<Token> {
    const MAP: &str = "__map_";
    const LIST: &str = "__list_";
    let mut out = Vec::new();
    let mut rest = path;
    let mut kind_is_list = false;
    loop {
        let next = [rest.find(MAP).map(|i| (i, false)), rest.find(LIST).map(|i| (i, true))]
            .into_iter()
            .flatten()
            .min_by_key(|(i, _)| *i);
        let (end, next_is_list) = match next {
            Some((i, l)) => (i, Some(l)),
            None => (rest.len(), None),
        };
        let piece = &rest[..end];
        out.push(if kind_is_list {
            Token::Index(piece.parse().unwrap_or(usize::MAX))
        } else {
            Token::Key(piece.to_string())
        });
        match next_is_list {
            Some(l) => {
                rest = &rest[end + if l { LIST.len() } else { MAP.len() }..];
                kind_is_list = l;
            }
            None => break,
        }
    }
    out
}

fn insert(node: &mut Value, tokens: &[Token], value: Value) -> Result<(), MigrateError> {
    let bad = || MigrateError::Malformed("inconsistent flattened sops metadata".into());
    let Some((first, rest)) = tokens.split_first() else { return Err(bad()) };
    let slot: &mut Value = match first {
        Token::Key(k) => {
            let m = node.as_object_mut().ok_or_else(bad)?;
            m.entry(k.clone()).or_insert(Value::Null)
        }
        Token::Index(i) => {
            // Bounded: sops metadata lists are short; refuse absurd indices.
            if *i > 1024 {
                return Err(bad());
            }
            let a = node.as_array_mut().ok_or_else(bad)?;
            if a.len() <= *i {
                a.resize(i + 1, Value::Null);
            }
            &mut a[*i]
        }
    };
    match rest.first() {
        None => {
            *slot = value;
            Ok(())
        }
        Some(next) => {
            if slot.is_null() {
                *slot = match next {
                    Token::Key(_) => Value::Object(Map::new()),
                    Token::Index(_) => Value::Array(Vec::new()),
                };
            }
            insert(slot, rest, value)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unflattens_like_sops() {
        let pairs: Vec<(String, String)> = [
            ("age__list_0__map_recipient", "age1x"),
            ("age__list_0__map_enc", "-----BEGIN\\nX\\n"),
            ("kms__list_1__map_arn", "arn2"),
            ("kms__list_0__map_arn", "arn1"),
            ("kms__list_0__map_context__map_app", "web"),
            ("lastmodified", "2026-01-01T00:00:00Z"),
            ("mac", "ENC[...]"),
            ("mac_only_encrypted", "true"),
            ("unencrypted_suffix", "_unencrypted"),
        ]
        .into_iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
        let m = Metadata::from_value(unflatten(&pairs).unwrap()).unwrap();
        assert_eq!(m.age[0].recipient, "age1x");
        assert_eq!(m.age[0].enc, "-----BEGIN\nX\n");
        assert_eq!(m.kms[0].arn, "arn1");
        assert_eq!(m.kms[1].arn, "arn2");
        assert_eq!(m.kms[0].context["app"], "web");
        assert_eq!(m.mac_only_encrypted, Some(true));
        assert_eq!(m.groups().len(), 1);
    }

    #[test]
    fn rejects_inconsistent_keys() {
        let pairs = vec![("a".to_string(), "1".to_string()), ("a__map_b".to_string(), "2".to_string())];
        assert!(unflatten(&pairs).is_err());
    }
}
