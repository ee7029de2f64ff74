//! The key vault (FORMAT.md §11.6): data keys and blind-index keys, each wrapped once by the KMS
//! and stored as a row, named by a [`KeyId`] that sealed values carry.
//!
//! Each entry's `envelope` is a self-contained field envelope (FORMAT.md §5) of an **empty**
//! plaintext, sealed under the entry's data key with the entry's context
//! ([`VaultRecord::context_for`]): it carries the wrapped data key, its key commitment and a tag
//! that authenticates the context. So:
//!
//! - opening an entry is `Decrypt` of its wrapped key under that context, then the commitment
//!   and tag checks of FORMAT.md §5.5: an entry moved to another id, column, kind or generation,
//!   or made under another base context, fails;
//! - rewrapping the vault is [`envseal_core::rewrap::Rewrapper::rewrap_envelopes`] over the
//!   entries (ReEncrypt only, values untouched): see [`crate::rotate::rewrap_vault`].
//!
//! Storage is behind the [`KeyVault`] trait; this crate implements it for PostgreSQL
//! (`sqlx-postgres` feature) and SQLite (`rusqlite` feature: a table in the app's database or a
//! database file of its own, for small apps).

use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use envseal_core::envelope::{self, Envelope, FieldKey};
use envseal_core::kms::{self, Kms};
use envseal_core::{DataKey, EncryptionContext, Engine, FormatError, KmsError};

use crate::context::VAULT_PREFIX;
use crate::error::{Error, VaultError};
use crate::keyref::KeyId;

/// Default name of the key-vault table.
pub const DEFAULT_TABLE: &str = "envseal_key_vault";

/// What a vault entry's key is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum KeyKind {
    /// A data key sealing the values of one column.
    Data,
    /// The key of one blind index, at one generation.
    Index,
}

impl KeyKind {
    /// `data` or `index`, as stored.
    pub fn as_str(self) -> &'static str {
        match self {
            KeyKind::Data => "data",
            KeyKind::Index => "index",
        }
    }

    /// Parses [`KeyKind::as_str`].
    ///
    /// # Errors
    /// [`VaultError::Corrupt`] for anything else.
    pub fn parse(s: &str) -> Result<Self, VaultError> {
        match s {
            "data" => Ok(KeyKind::Data),
            "index" => Ok(KeyKind::Index),
            _ => Err(VaultError::Corrupt("unknown key kind")),
        }
    }
}

/// Lifecycle of a vault entry. Not authenticated: it steers writers and rotation jobs, never
/// what opens.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum EntryState {
    /// In use: a data key may still be sealing somewhere; an index generation is queried.
    Active,
    /// Retired by a rotation job: no value is sealed under it any more (data keys still open,
    /// for backups); an index generation is no longer queried.
    Retired,
}

impl EntryState {
    /// `active` or `retired`, as stored.
    pub fn as_str(self) -> &'static str {
        match self {
            EntryState::Active => "active",
            EntryState::Retired => "retired",
        }
    }

    /// Parses [`EntryState::as_str`].
    ///
    /// # Errors
    /// [`VaultError::Corrupt`] for anything else.
    pub fn parse(s: &str) -> Result<Self, VaultError> {
        match s {
            "active" => Ok(EntryState::Active),
            "retired" => Ok(EntryState::Retired),
            _ => Err(VaultError::Corrupt("unknown key state")),
        }
    }
}

/// One key-vault entry.
#[derive(Clone, PartialEq, Eq)]
pub struct VaultRecord {
    /// The key id values carry.
    pub id: KeyId,
    /// Insertion order, assigned by the store (0 before insertion): rotation jobs take "every
    /// key with `seq` ≤ the last one at the start" as the old keys, without trusting clocks.
    pub seq: u64,
    /// Data or index key.
    pub kind: KeyKind,
    /// Table (or record type) the key belongs to.
    pub table: String,
    /// Column (data keys) or index name (index keys).
    pub name: String,
    /// Index keys: 1, 2, ... (a rotation adds one); data keys: 0.
    pub generation: u32,
    /// Lifecycle state.
    pub state: EntryState,
    /// Creation time, Unix seconds (informational).
    pub created_at: u64,
    /// Index keys: the index definition ([`crate::index::IndexDef::encode`]); data keys: empty.
    pub definition: String,
    /// The base context the entry was made under (stored so that a rewrap job needs no
    /// configuration; the KMS checks it).
    pub context: EncryptionContext,
    /// The field envelope (FORMAT.md §5) holding the wrapped key.
    pub envelope: Vec<u8>,
}

impl fmt::Debug for VaultRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VaultRecord")
            .field("id", &self.id)
            .field("seq", &self.seq)
            .field("kind", &self.kind)
            .field("table", &self.table)
            .field("name", &self.name)
            .field("generation", &self.generation)
            .field("state", &self.state)
            .field("envelope_len", &self.envelope.len())
            .finish_non_exhaustive()
    }
}

impl VaultRecord {
    /// `table.name`.
    pub fn scope(&self) -> String {
        format!("{}.{}", self.table, self.name)
    }

    /// The entry's encryption context under `base`: `base` ∪ `keyvault:id`, `keyvault:kind`,
    /// `keyvault:table`, `keyvault:name`, `keyvault:generation` and, for index keys,
    /// `keyvault:index` (the definition). The wrapped key is bound to it by the KMS (with the
    /// reserved `envseal:field` salt entry of FORMAT.md §5.4) and the envelope's tag covers it.
    ///
    /// # Errors
    /// [`Error::Schema`] if `base` uses reserved keys or is full.
    pub fn context_for(&self, base: &EncryptionContext) -> Result<EncryptionContext, Error> {
        crate::context::check_base(base)?;
        let mut c = base.clone();
        let p = |k: &str| format!("{VAULT_PREFIX}{k}");
        c.insert(p("id"), self.id.to_hex())?;
        c.insert(p("kind"), self.kind.as_str())?;
        c.insert(p("table"), self.table.clone())?;
        c.insert(p("name"), self.name.clone())?;
        c.insert(p("generation"), self.generation.to_string())?;
        if self.kind == KeyKind::Index {
            c.insert(p("index"), self.definition.clone())?;
        }
        Ok(c)
    }

    /// The entry's context under the base context stored with it (what a rewrap job uses).
    ///
    /// # Errors
    /// As [`VaultRecord::context_for`].
    pub fn stored_context(&self) -> Result<EncryptionContext, Error> {
        self.context_for(&self.context)
    }
}

/// Storage of key-vault entries. Implementations must be safe for concurrent use by many
/// processes: `insert` must fail with [`VaultError::Conflict`] instead of overwriting, and
/// `replace_envelope` must compare and swap atomically.
#[async_trait]
pub trait KeyVault: Send + Sync + fmt::Debug {
    /// Stores a new entry and returns its `seq`.
    ///
    /// # Errors
    /// [`VaultError::Conflict`] if the id, or (index keys) the table, name and generation,
    /// exist; storage errors.
    async fn insert(&self, record: &VaultRecord) -> Result<u64, VaultError>;

    /// The entry with this id.
    ///
    /// # Errors
    /// Storage errors; [`VaultError::Corrupt`].
    async fn get(&self, id: &KeyId) -> Result<Option<VaultRecord>, VaultError>;

    /// Every entry of one kind, table and name, in `seq` order.
    ///
    /// # Errors
    /// As [`KeyVault::get`].
    async fn scope(&self, kind: KeyKind, table: &str, name: &str) -> Result<Vec<VaultRecord>, VaultError>;

    /// Up to `limit` entries with `seq > after`, in `seq` order.
    ///
    /// # Errors
    /// As [`KeyVault::get`].
    async fn list(&self, after: u64, limit: usize) -> Result<Vec<VaultRecord>, VaultError>;

    /// An upper bound of the `seq` of every entry inserted (committed or not) before this call,
    /// such that every later insert gets a larger `seq`: the "old keys" line of a rotation job.
    ///
    /// # Errors
    /// Storage errors.
    async fn snapshot(&self) -> Result<u64, VaultError>;

    /// Replaces an entry's envelope if it is still `old`; returns whether it was replaced.
    ///
    /// # Errors
    /// Storage errors.
    async fn replace_envelope(&self, id: &KeyId, old: &[u8], new: &[u8]) -> Result<bool, VaultError>;

    /// Sets an entry's state.
    ///
    /// # Errors
    /// Storage errors.
    async fn set_state(&self, id: &KeyId, state: EntryState) -> Result<(), VaultError>;
}

/// Seconds since the Unix epoch (0 if the clock is before it).
pub(crate) fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// Generates a data key under `kms_key` for `record` (whose `envelope` is filled in) and
/// returns it with the record ready to insert.
pub(crate) async fn new_entry(
    kms: &dyn Kms,
    kms_key: &str,
    engine: Engine,
    base: &EncryptionContext,
    mut record: VaultRecord,
) -> Result<(DataKey, VaultRecord), Error> {
    let ctx = record.context_for(base)?;
    let salt: [u8; envelope::SALT_LEN] = envseal_core::random::array();
    let kctx = envelope::kms_context(&ctx, &salt)?;
    let g = kms.generate_data_key(kms_key, &kctx).await?;
    let fk = FieldKey::new(engine, &g.data_key, salt, &g.wrapped)?;
    record.envelope = fk.seal(0, b"", &ctx)?;
    record.context = base.clone();
    Ok((g.data_key, record))
}

/// Unwraps a vault entry under `base` and checks it (FORMAT.md §11.6): the KMS must open the
/// wrapped key under the entry's context and report the key id and version the entry names;
/// then the key commitment and the empty plaintext's tag must verify.
pub(crate) async fn open_entry(
    kms: &dyn Kms,
    engine: Engine,
    base: &EncryptionContext,
    record: &VaultRecord,
) -> Result<DataKey, Error> {
    let ctx = record.context_for(base)?;
    let env = Envelope::parse(&record.envelope)?;
    let entry = env.entry()?;
    if entry.backend != kms.backend() {
        return Err(KmsError::Unsupported { operation: "decrypt", backend: entry.backend }.into());
    }
    let kctx = envelope::kms_context(&ctx, env.salt)?;
    let k = kms::decrypt_data_key(kms, &entry, &kctx).await.map_err(|e| match e {
        KmsError::InvalidCiphertext => Error::from(FormatError::KeyEntryTampered { index: 0 }),
        e => Error::from(e),
    })?;
    if k.key_id != entry.key_id || k.key_version != entry.key_version {
        return Err(FormatError::KeyEntryTampered { index: 0 }.into());
    }
    let opened = FieldKey::for_opening(engine, &k.data_key, *env.salt).open(&env, &ctx)?;
    if !opened.is_empty() {
        return Err(FormatError::Malformed("key-vault entry with a non-empty value").into());
    }
    Ok(k.data_key)
}

#[cfg(test)]
pub(crate) mod memory {
    //! An in-memory vault for unit tests.
    use std::sync::Mutex;

    use super::*;

    #[derive(Debug, Default)]
    pub(crate) struct MemoryVault(pub(crate) Mutex<Vec<VaultRecord>>);

    #[async_trait]
    impl KeyVault for MemoryVault {
        async fn insert(&self, record: &VaultRecord) -> Result<u64, VaultError> {
            let mut v = self.0.lock().unwrap();
            if v.iter().any(|r| {
                r.id == record.id
                    || (r.kind == KeyKind::Index
                        && record.kind == KeyKind::Index
                        && r.table == record.table
                        && r.name == record.name
                        && r.generation == record.generation)
            }) {
                return Err(VaultError::Conflict);
            }
            let seq = v.len() as u64 + 1;
            v.push(VaultRecord { seq, ..record.clone() });
            Ok(seq)
        }
        async fn get(&self, id: &KeyId) -> Result<Option<VaultRecord>, VaultError> {
            Ok(self.0.lock().unwrap().iter().find(|r| &r.id == id).cloned())
        }
        async fn scope(&self, kind: KeyKind, table: &str, name: &str) -> Result<Vec<VaultRecord>, VaultError> {
            Ok(self
                .0
                .lock()
                .unwrap()
                .iter()
                .filter(|r| r.kind == kind && r.table == table && r.name == name)
                .cloned()
                .collect())
        }
        async fn list(&self, after: u64, limit: usize) -> Result<Vec<VaultRecord>, VaultError> {
            Ok(self.0.lock().unwrap().iter().filter(|r| r.seq > after).take(limit).cloned().collect())
        }
        async fn snapshot(&self) -> Result<u64, VaultError> {
            Ok(self.0.lock().unwrap().len() as u64)
        }
        async fn replace_envelope(&self, id: &KeyId, old: &[u8], new: &[u8]) -> Result<bool, VaultError> {
            let mut v = self.0.lock().unwrap();
            match v.iter_mut().find(|r| &r.id == id && r.envelope == old) {
                Some(r) => {
                    r.envelope = new.to_vec();
                    Ok(true)
                }
                None => Ok(false),
            }
        }
        async fn set_state(&self, id: &KeyId, state: EntryState) -> Result<(), VaultError> {
            if let Some(r) = self.0.lock().unwrap().iter_mut().find(|r| &r.id == id) {
                r.state = state;
            }
            Ok(())
        }
    }
}
