//! What the two SQL adapters share: identifiers, the vault and checkpoint columns, and how
//! their values are decoded.

use std::collections::BTreeMap;

use envseal_core::EncryptionContext;

use crate::context::check_name;
use crate::error::{Error, VaultError};
use crate::keyref::KeyId;
use crate::vault::{EntryState, KeyKind, VaultRecord};

/// `"name"` or `"schema"."name"`: names are checked to `[A-Za-z0-9_]` first, so quoting is only
/// for case and keywords.
pub(crate) fn quote(name: &str) -> Result<String, Error> {
    check_name("SQL identifier", name, true)?;
    Ok(name.split('.').map(|p| format!("\"{p}\"")).collect::<Vec<_>>().join("."))
}

/// A name for an index of `table` (unqualified: indexes live in their table's schema).
pub(crate) fn index_name(table: &str, suffix: &str) -> String {
    let base = table.rsplit('.').next().unwrap_or(table);
    format!("\"{base}_{suffix}\"")
}

/// The vault columns after `seq`, in the order the adapters select and insert them.
pub(crate) const VAULT_COLUMNS: &str =
    "id, kind, table_name, name, generation, state, created_at, definition, context, envelope";

/// A vault row's columns, as read.
pub(crate) struct VaultRow {
    pub seq: i64,
    pub id: Vec<u8>,
    pub kind: String,
    pub table: String,
    pub name: String,
    pub generation: i64,
    pub state: String,
    pub created_at: i64,
    pub definition: String,
    pub context: Vec<u8>,
    pub envelope: Vec<u8>,
}

impl VaultRow {
    pub(crate) fn into_record(self) -> Result<VaultRecord, VaultError> {
        let (context, n) =
            EncryptionContext::decode_prefix(&self.context).map_err(|_| VaultError::Corrupt("unreadable context"))?;
        if n != self.context.len() {
            return Err(VaultError::Corrupt("trailing bytes after the context"));
        }
        Ok(VaultRecord {
            id: KeyId::from_slice(&self.id).map_err(|_| VaultError::Corrupt("key id is not 8 bytes"))?,
            seq: u64::try_from(self.seq).map_err(|_| VaultError::Corrupt("negative seq"))?,
            kind: KeyKind::parse(&self.kind)?,
            table: self.table,
            name: self.name,
            generation: u32::try_from(self.generation).map_err(|_| VaultError::Corrupt("generation out of range"))?,
            state: EntryState::parse(&self.state)?,
            created_at: u64::try_from(self.created_at).unwrap_or(0),
            definition: self.definition,
            context,
            envelope: self.envelope,
        })
    }
}

/// Index generations of a checkpoint, as JSON text.
pub(crate) fn generations_to_text(g: &BTreeMap<String, u32>) -> String {
    // Invariant: a map of strings to integers always serializes.
    serde_json::to_string(g).expect("a string map serializes")
}

pub(crate) fn generations_from_text(s: &str) -> Result<BTreeMap<String, u32>, Error> {
    serde_json::from_str(s).map_err(|_| Error::Database("unreadable index generations in the checkpoint table".into()))
}

#[cfg(feature = "sqlx-postgres")]
pub(crate) fn i64_of(v: u64, what: &'static str) -> Result<i64, Error> {
    i64::try_from(v).map_err(|_| Error::Database(format!("{what} does not fit a BIGINT")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers() {
        assert_eq!(quote("users").unwrap(), "\"users\"");
        assert_eq!(quote("app.users").unwrap(), "\"app\".\"users\"");
        assert!(quote("users\"; drop").is_err());
        assert_eq!(index_name("app.envseal_key_vault", "scope"), "\"envseal_key_vault_scope\"");
    }
}
