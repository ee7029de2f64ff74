//! [`FieldCipher`]: seals and opens column values with data keys from the key vault, and
//! computes blind-index terms.
//!
//! **Data keys.** Each column ([`Column`]) seals under a data key of its own, made by this
//! process: a fresh key from the KMS (`GenerateDataKey`), stored wrapped in the key vault under a
//! random id, then reused for up to [`CachePolicy::max_messages`] values, bytes or
//! [`CachePolicy::max_age`], whichever comes first, with a nonce counter that cannot repeat
//! (FORMAT.md §11.2). A key is never shared between processes for sealing, so the counter needs
//! no coordination. KMS calls therefore follow the cache policy, not the number of rows.
//!
//! **Opening** looks the value's key id up in a bounded cache; on a miss it reads the vault
//! entry, unwraps it (`Decrypt`, one call per key) and checks it against this cipher's base
//! context and the column (FORMAT.md §11.6). Entries expire after `max_age`, so a KMS permission
//! withdrawn takes effect within it. Concurrent misses on one key make one KMS call.
//!
//! **Contexts.** Every value is bound to base context ∪ `{table, column, pk}` (FORMAT.md
//! §11.4): a value copied to another row, column or table, or another application's base
//! context, does not open.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;

use envseal_core::{CachePolicy, EncryptionContext, Engine, FormatError, Kms, Sealer, SecretBytes};
use zeroize::Zeroizing;

use crate::context::{scope_context, value_context};
use crate::error::{Error, VaultError};
use crate::index::{IndexDef, IndexKey, IndexQuery};
use crate::keyref::{self, KeyId, KeyRef, ValueKey};
use crate::value::{FieldValue, IndexTerm, Sealed};
use crate::vault::{self, EntryState, KeyKind, KeyVault, VaultRecord};

/// Which envelope new values are sealed in. Both are always opened.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Form {
    /// The key-reference envelope (FORMAT.md §11): 29 bytes of overhead, data keys in the key
    /// vault.
    #[default]
    KeyReference,
    /// The self-contained field envelope (FORMAT.md §5): the wrapped data key travels with every
    /// value (about 250 bytes with the mock KMS, more with cloud KMSs). Its data key is bound to
    /// the value's whole context, `pk` included, so with a primary key every row costs a KMS
    /// call: meant for a few values, or for migrating to the key-reference form with a re-key.
    SelfContained,
}

/// Counters of one [`FieldCipher`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct FieldStats {
    /// KMS calls made (data keys generated and unwrapped, by this cipher and its self-contained
    /// sealer).
    pub kms_calls: u64,
    /// Data keys created (one per column per cache period).
    pub data_keys_created: u64,
    /// Index keys created (first use of an index, rotations).
    pub index_keys_created: u64,
    /// Key-vault reads.
    pub vault_reads: u64,
    /// Key-vault writes.
    pub vault_writes: u64,
    /// Opens served from the key cache.
    pub open_hits: u64,
    /// Opens that had to fetch a key from the vault.
    pub open_misses: u64,
}

#[derive(Default)]
struct Counters {
    kms_calls: AtomicU64,
    data_keys_created: AtomicU64,
    index_keys_created: AtomicU64,
    vault_reads: AtomicU64,
    vault_writes: AtomicU64,
    open_hits: AtomicU64,
    open_misses: AtomicU64,
}

fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

/// Recovers a lock even if a panicking thread poisoned it: the data behind these locks (maps
/// of `Arc`s) stays consistent across a panic.
fn read<T>(l: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(|p| p.into_inner())
}
fn write<T>(l: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(|p| p.into_inner())
}
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A data key in use for sealing by one column of this process.
struct SealKey {
    key: Arc<ValueKey>,
    created: Instant,
    messages: AtomicU64,
    bytes: AtomicU64,
}

/// An unwrapped data key, for opening.
struct OpenEntry {
    key: Arc<ValueKey>,
    table: Box<str>,
    column: Box<str>,
    created: Instant,
    /// Set on use, cleared by the eviction sweep (the CLOCK approximation of LRU: a hit is one
    /// relaxed load, not a write to a shared counter).
    referenced: AtomicBool,
}

/// Hashes a [`KeyId`] by its 8 bytes. Ids of entries in the map are CSPRNG output (only
/// keys unwrapped by the KMS and checked against the vault are inserted), so they are spread
/// evenly without a keyed hash; an id chosen by an attacker can only miss.
#[derive(Default)]
struct IdHasher(u64);

impl Hasher for IdHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut b = [0u8; 8];
        let n = bytes.len().min(8);
        b[..n].copy_from_slice(&bytes[..n]);
        self.0 ^= u64::from_le_bytes(b);
    }
    fn finish(&self) -> u64 {
        self.0
    }
}

type KeyMap<V> = HashMap<KeyId, V, BuildHasherDefault<IdHasher>>;

struct ColumnState {
    table: String,
    column: String,
    /// Canonical encoding of the scope context (FORMAT.md §11.4), for key derivation.
    scope: Vec<u8>,
    current: RwLock<Option<Arc<SealKey>>>,
    refill: tokio::sync::Mutex<()>,
}

struct IndexKeys {
    fetched: Instant,
    current: Arc<IndexKey>,
    active: Vec<Arc<IndexKey>>,
}

struct IndexState {
    table: String,
    def: IndexDef,
    def_text: String,
    keys: RwLock<Option<Arc<IndexKeys>>>,
    refill: tokio::sync::Mutex<()>,
}

type Nested<T> = Mutex<HashMap<String, HashMap<String, Arc<T>>>>;

struct Inner {
    kms: Arc<dyn Kms>,
    kms_key: String,
    vault: Arc<dyn KeyVault>,
    base: EncryptionContext,
    policy: CachePolicy,
    engine: Engine,
    form: Form,
    sealer: Sealer,
    columns: Nested<ColumnState>,
    indexes: Nested<IndexState>,
    open: RwLock<KeyMap<OpenEntry>>,
    fetching: Mutex<HashMap<KeyId, Arc<tokio::sync::Mutex<()>>>>,
    counters: Counters,
}

/// Seals and opens field values with key-vault data keys; computes blind-index terms. Cheap to
/// clone (an `Arc`); share one per application and KMS key. See the [module docs](self).
#[derive(Clone)]
pub struct FieldCipher {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for FieldCipher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FieldCipher")
            .field("backend", &self.inner.kms.backend())
            .field("kms_key", &self.inner.kms_key)
            .field("context", &self.inner.base)
            .field("form", &self.inner.form)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

/// Builds a [`FieldCipher`].
#[derive(Debug)]
pub struct FieldCipherBuilder {
    kms: Arc<dyn Kms>,
    kms_key: String,
    vault: Arc<dyn KeyVault>,
    base: EncryptionContext,
    policy: CachePolicy,
    engine: Engine,
    form: Form,
}

impl FieldCipherBuilder {
    /// The application's base context (e.g. `{"app": "billing"}`), bound to every value and
    /// every vault entry. It may not use `table`, `column`, `pk` or `keyvault:*`.
    pub fn context(mut self, base: EncryptionContext) -> Self {
        self.base = base;
        self
    }

    /// The data-key cache policy (default [`CachePolicy::default`]: 1024 keys cached for
    /// opening, 5 minutes, 2^20 values or 1 GiB per data key).
    pub fn cache(mut self, policy: CachePolicy) -> Self {
        self.policy = policy;
        self
    }

    /// The AEAD engine.
    pub fn engine(mut self, engine: Engine) -> Self {
        self.engine = engine;
        self
    }

    /// The envelope new values are sealed in (default [`Form::KeyReference`]).
    pub fn form(mut self, form: Form) -> Self {
        self.form = form;
        self
    }

    /// Builds the cipher.
    ///
    /// # Errors
    /// [`Error::Schema`] if the base context uses reserved keys.
    pub fn build(self) -> Result<FieldCipher, Error> {
        crate::context::check_base(&self.base)?;
        let sealer =
            Sealer::new(self.kms.clone(), self.kms_key.clone()).with_cache(self.policy).with_engine(self.engine);
        Ok(FieldCipher {
            inner: Arc::new(Inner {
                kms: self.kms,
                kms_key: self.kms_key,
                vault: self.vault,
                base: self.base,
                policy: self.policy,
                engine: self.engine,
                form: self.form,
                sealer,
                columns: Mutex::new(HashMap::new()),
                indexes: Mutex::new(HashMap::new()),
                open: RwLock::new(KeyMap::default()),
                fetching: Mutex::new(HashMap::new()),
                counters: Counters::default(),
            }),
        })
    }
}

impl FieldCipher {
    /// A cipher sealing under `kms_key` (id or alias) on `kms`, with its keys in `vault`.
    pub fn builder(kms: Arc<dyn Kms>, kms_key: impl Into<String>, vault: Arc<dyn KeyVault>) -> FieldCipherBuilder {
        FieldCipherBuilder {
            kms,
            kms_key: kms_key.into(),
            vault,
            base: EncryptionContext::new(),
            policy: CachePolicy::default(),
            engine: Engine::default(),
            form: Form::default(),
        }
    }

    /// The KMS.
    pub fn kms(&self) -> &Arc<dyn Kms> {
        &self.inner.kms
    }

    /// The KMS key new data keys are generated under.
    pub fn kms_key(&self) -> &str {
        &self.inner.kms_key
    }

    /// The key vault.
    pub fn vault(&self) -> &Arc<dyn KeyVault> {
        &self.inner.vault
    }

    /// The base context.
    pub fn context(&self) -> &EncryptionContext {
        &self.inner.base
    }

    /// The AEAD engine.
    pub fn engine(&self) -> Engine {
        self.inner.engine
    }

    /// The cache policy.
    pub fn policy(&self) -> &CachePolicy {
        &self.inner.policy
    }

    /// Counters so far.
    pub fn stats(&self) -> FieldStats {
        let c = &self.inner.counters;
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        FieldStats {
            kms_calls: l(&c.kms_calls) + self.inner.sealer.cache_stats().misses,
            data_keys_created: l(&c.data_keys_created),
            index_keys_created: l(&c.index_keys_created),
            vault_reads: l(&c.vault_reads),
            vault_writes: l(&c.vault_writes),
            open_hits: l(&c.open_hits),
            open_misses: l(&c.open_misses),
        }
    }

    /// The handle of `table`.`column` (created on first use, then shared).
    ///
    /// # Errors
    /// [`Error::Schema`] for invalid names.
    pub fn column(&self, table: &str, column: &str) -> Result<Column, Error> {
        let mut map = lock(&self.inner.columns);
        if let Some(s) = map.get(table).and_then(|t| t.get(column)) {
            return Ok(Column { inner: self.inner.clone(), state: s.clone() });
        }
        let state = Arc::new(ColumnState {
            table: table.to_string(),
            column: column.to_string(),
            scope: scope_context(&self.inner.base, table, column)?.canonical_bytes(),
            current: RwLock::new(None),
            refill: tokio::sync::Mutex::new(()),
        });
        map.entry(table.to_string()).or_default().insert(column.to_string(), state.clone());
        Ok(Column { inner: self.inner.clone(), state })
    }

    /// The handle of index `def.name` of `table` (created on first use, then shared).
    ///
    /// # Errors
    /// [`Error::Schema`] for invalid names, or a definition that differs from the one this
    /// cipher already uses for that name.
    pub fn index(&self, table: &str, def: &IndexDef) -> Result<Index, Error> {
        crate::context::check_name("table", table, true)?;
        let mut map = lock(&self.inner.indexes);
        if let Some(s) = map.get(table).and_then(|t| t.get(&def.name)) {
            if &s.def != def {
                return Err(Error::Schema(format!("index {table}.{} is used with two definitions", def.name)));
            }
            return Ok(Index { inner: self.inner.clone(), state: s.clone() });
        }
        let state = Arc::new(IndexState {
            table: table.to_string(),
            def: def.clone(),
            def_text: def.encode(),
            keys: RwLock::new(None),
            refill: tokio::sync::Mutex::new(()),
        });
        map.entry(table.to_string()).or_default().insert(def.name.clone(), state.clone());
        Ok(Index { inner: self.inner.clone(), state })
    }

    /// Drops every cached key (sealing and opening): the next seal of each column makes a new
    /// data key, and the next open fetches from the vault again.
    pub fn clear_cache(&self) {
        for t in lock(&self.inner.columns).values() {
            for c in t.values() {
                *write(&c.current) = None;
            }
        }
        for t in lock(&self.inner.indexes).values() {
            for i in t.values() {
                *write(&i.keys) = None;
            }
        }
        write(&self.inner.open).clear();
    }
}

impl Inner {
    /// Runs `f` with the cached opening key of `id`, if there is a fresh one. The map's read
    /// lock is held meanwhile (no reference count to touch on the hot path).
    fn with_cached<R>(
        &self,
        id: &KeyId,
        col: &ColumnState,
        f: impl FnOnce(&ValueKey) -> R,
    ) -> Option<Result<R, Error>> {
        let map = read(&self.open);
        let e = map.get(id)?;
        if e.created.elapsed() >= self.policy.max_age {
            return None;
        }
        if !e.referenced.load(Ordering::Relaxed) {
            e.referenced.store(true, Ordering::Relaxed);
        }
        bump(&self.counters.open_hits);
        Some(check_scope(e, col).map(|()| f(&e.key)))
    }

    fn remember(&self, id: KeyId, key: Arc<ValueKey>, table: &str, column: &str) {
        let mut map = write(&self.open);
        let cap = self.policy.capacity.max(1);
        if !map.contains_key(&id) && map.len() >= cap {
            // Expired entries go first; then the CLOCK sweep: the first entry not used since
            // the last sweep, clearing the bits it passes. O(capacity), on insertion only.
            map.retain(|_, e| e.created.elapsed() < self.policy.max_age);
            if map.len() >= cap {
                let victim = map
                    .iter()
                    .find(|(_, e)| !e.referenced.swap(false, Ordering::Relaxed))
                    .or_else(|| map.iter().next())
                    .map(|(k, _)| *k);
                if let Some(v) = victim {
                    map.remove(&v);
                }
            }
        }
        let entry = OpenEntry {
            key,
            table: table.into(),
            column: column.into(),
            created: Instant::now(),
            referenced: AtomicBool::new(true),
        };
        map.insert(id, entry);
    }

    /// The value key of `id` for opening a value of `col`, fetched from the vault and the KMS
    /// (concurrent misses on one key wait for one fetch).
    async fn open_key(&self, id: KeyId, col: &ColumnState) -> Result<Arc<ValueKey>, Error> {
        let gate = lock(&self.fetching).entry(id).or_default().clone();
        let _g = gate.lock().await;
        let result = self.fetch_open_key(id, col).await;
        lock(&self.fetching).remove(&id);
        result
    }

    async fn fetch_open_key(&self, id: KeyId, col: &ColumnState) -> Result<Arc<ValueKey>, Error> {
        // Another caller may have fetched it while this one waited at the gate.
        if let Some(k) = self.with_cached(&id, col, |_| ()) {
            k?;
            if let Some(e) = read(&self.open).get(&id) {
                return Ok(e.key.clone());
            }
        }
        bump(&self.counters.open_misses);
        bump(&self.counters.vault_reads);
        let rec = self.vault.get(&id).await?.ok_or(Error::UnknownKey { key: id })?;
        if rec.id != id {
            return Err(VaultError::Corrupt("the vault answered with another entry").into());
        }
        if rec.kind != KeyKind::Data || rec.table != col.table || rec.name != col.column {
            return Err(Error::WrongScope {
                expected: format!("{}.{}", col.table, col.column),
                found: format!("{} key of {}", rec.kind.as_str(), rec.scope()),
            });
        }
        bump(&self.counters.kms_calls);
        let dk = vault::open_entry(self.kms.as_ref(), self.engine, &self.base, &rec).await?;
        let key = Arc::new(ValueKey::derive(self.engine, &dk, id, &col.scope));
        self.remember(id, key.clone(), &col.table, &col.column);
        Ok(key)
    }

    /// Seals with the column's current key if it is within every limit, taking one nonce
    /// counter; `Ok(false)` when a new data key is needed (an exhausted or expired key is
    /// retired here). The read lock is held while sealing: no reference count to touch.
    fn seal_warm(
        &self,
        col: &ColumnState,
        plaintext: &[u8],
        pk: Option<&str>,
        out: &mut Vec<u8>,
    ) -> Result<bool, Error> {
        let bytes = plaintext.len() as u64;
        let guard = read(&col.current);
        let Some(cur) = guard.as_ref() else { return Ok(false) };
        let max_messages = self.policy.max_messages.min(keyref::MAX_MESSAGES_PER_KEY);
        let index = cur.messages.fetch_add(1, Ordering::Relaxed);
        let used = cur.bytes.fetch_add(bytes, Ordering::Relaxed).saturating_add(bytes);
        if index < max_messages && used <= self.policy.max_bytes && cur.created.elapsed() < self.policy.max_age {
            cur.key.seal_into(index, plaintext, pk.map(str::as_bytes), out)?;
            return Ok(true);
        }
        // Exhausted or expired: retire it (unless another caller already replaced it).
        let stale = Arc::as_ptr(cur);
        drop(guard);
        let mut w = write(&col.current);
        if w.as_ref().is_some_and(|c| Arc::as_ptr(c) == stale) {
            *w = None;
        }
        Ok(false)
    }

    /// Makes a new data key for `col`, stores it in the vault, installs it for sealing and
    /// caches it for opening. Returns it with its first counter (0) reserved.
    async fn new_seal_key(&self, col: &ColumnState, bytes: u64) -> Result<Arc<ValueKey>, Error> {
        let mut attempts = 0;
        let (dk, rec) = loop {
            let rec = VaultRecord {
                id: KeyId::random(),
                seq: 0,
                kind: KeyKind::Data,
                table: col.table.clone(),
                name: col.column.clone(),
                generation: 0,
                state: EntryState::Active,
                created_at: vault::unix_now(),
                definition: String::new(),
                context: self.base.clone(),
                envelope: Vec::new(),
            };
            bump(&self.counters.kms_calls);
            let (dk, rec) = vault::new_entry(self.kms.as_ref(), &self.kms_key, self.engine, &self.base, rec).await?;
            bump(&self.counters.vault_writes);
            match self.vault.insert(&rec).await {
                Ok(_) => break (dk, rec),
                // Ids are 64 random bits: a new one meets one of a million existing ids with a
                // chance of about 2^-44. The store refuses a duplicate; draw again.
                Err(VaultError::Conflict) if attempts < 3 => attempts += 1,
                Err(e) => return Err(e.into()),
            }
        };
        bump(&self.counters.data_keys_created);
        let key = Arc::new(ValueKey::derive(self.engine, &dk, rec.id, &col.scope));
        drop(dk);
        self.remember(rec.id, key.clone(), &col.table, &col.column);
        let sk = Arc::new(SealKey {
            key: key.clone(),
            created: Instant::now(),
            messages: AtomicU64::new(1),
            bytes: AtomicU64::new(bytes),
        });
        *write(&col.current) = Some(sk);
        Ok(key)
    }
}

fn check_scope(e: &OpenEntry, col: &ColumnState) -> Result<(), Error> {
    if *e.table != *col.table || *e.column != *col.column {
        return Err(Error::WrongScope {
            expected: format!("{}.{}", col.table, col.column),
            found: format!("data key of {}.{}", e.table, e.column),
        });
    }
    Ok(())
}

/// One column: seals and opens its values. Cheap to clone; get it once with
/// [`FieldCipher::column`] and keep it for the hot path.
#[derive(Clone)]
pub struct Column {
    inner: Arc<Inner>,
    state: Arc<ColumnState>,
}

impl std::fmt::Debug for Column {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Column({}.{})", self.state.table, self.state.column)
    }
}

impl Column {
    /// The table.
    pub fn table(&self) -> &str {
        &self.state.table
    }

    /// The column.
    pub fn name(&self) -> &str {
        &self.state.column
    }

    /// The full context of a value of this column in row `pk` (for inspection and the
    /// self-contained form).
    ///
    /// # Errors
    /// [`Error::Schema`] for an oversized `pk`.
    pub fn value_context(&self, pk: Option<&str>) -> Result<EncryptionContext, Error> {
        value_context(&self.inner.base, &self.state.table, &self.state.column, pk)
    }

    /// Seals `plaintext` for row `pk` (`None` when the table has no primary key: the value can
    /// then be moved between rows of this column).
    ///
    /// # Errors
    /// KMS and vault errors when a new data key is needed; [`FormatError::LimitExceeded`] above
    /// 16 MiB.
    pub async fn seal(&self, plaintext: &[u8], pk: Option<&str>) -> Result<Sealed, Error> {
        let mut out = Vec::with_capacity(keyref::OVERHEAD + plaintext.len());
        self.seal_into(plaintext, pk, &mut out).await?;
        Ok(Sealed::from_bytes(out))
    }

    /// Seals into `out`, appending the envelope; with a warm key and a buffer of enough
    /// capacity, sealing makes no allocation.
    ///
    /// # Errors
    /// As [`Column::seal`].
    pub async fn seal_into(&self, plaintext: &[u8], pk: Option<&str>, out: &mut Vec<u8>) -> Result<(), Error> {
        if plaintext.len() > envseal_core::envelope::MAX_PLAINTEXT {
            return Err(FormatError::LimitExceeded {
                what: "field plaintext",
                value: plaintext.len() as u64,
                max: envseal_core::envelope::MAX_PLAINTEXT as u64,
            }
            .into());
        }
        if self.inner.form == Form::SelfContained {
            let ctx = self.value_context(pk)?;
            out.extend_from_slice(&self.inner.sealer.seal(plaintext, &ctx).await?);
            return Ok(());
        }
        if self.inner.seal_warm(&self.state, plaintext, pk, out)? {
            return Ok(());
        }
        // The cold path is boxed, so that the warm path's future stays small.
        Box::pin(self.seal_cold(plaintext, pk, out)).await
    }

    async fn seal_cold(&self, plaintext: &[u8], pk: Option<&str>, out: &mut Vec<u8>) -> Result<(), Error> {
        let _refill = self.state.refill.lock().await;
        if self.inner.seal_warm(&self.state, plaintext, pk, out)? {
            return Ok(());
        }
        let key = self.inner.new_seal_key(&self.state, plaintext.len() as u64).await?;
        key.seal_into(0, plaintext, pk.map(str::as_bytes), out)?;
        Ok(())
    }

    /// Seals with the column's current key if it has a fresh one, without any I/O; returns
    /// `false` (and leaves `out` alone) when a new data key is needed first.
    ///
    /// # Errors
    /// [`FormatError::LimitExceeded`] above 16 MiB; [`Error::Schema`] for an oversized `pk`.
    pub fn try_seal_warm(&self, plaintext: &[u8], pk: Option<&str>, out: &mut Vec<u8>) -> Result<bool, Error> {
        if self.inner.form != Form::KeyReference {
            return Ok(false);
        }
        self.inner.seal_warm(&self.state, plaintext, pk, out)
    }

    /// Opens a sealed value of row `pk` (either form).
    ///
    /// # Errors
    /// [`Error::UnknownKey`], [`Error::WrongScope`]; [`FormatError::ValueTampered`] for an
    /// altered value or one from another row; parse errors; KMS errors when the key must be
    /// fetched.
    pub async fn open(&self, sealed: &[u8], pk: Option<&str>) -> Result<SecretBytes, Error> {
        let mut out = Zeroizing::new(Vec::with_capacity(sealed.len()));
        self.open_into(sealed, pk, &mut out).await?;
        Ok(SecretBytes::from(out))
    }

    /// Opens into `out` (appending); with a cached key and enough capacity, opening makes no
    /// allocation. On failure `out` is left as it was.
    ///
    /// # Errors
    /// As [`Column::open`].
    pub async fn open_into(&self, sealed: &[u8], pk: Option<&str>, out: &mut Zeroizing<Vec<u8>>) -> Result<(), Error> {
        if sealed.first() == Some(&envseal_core::envelope::TAG) {
            let ctx = self.value_context(pk)?;
            let pt = self.inner.sealer.open(sealed, &ctx).await?;
            out.extend_from_slice(pt.expose_secret());
            return Ok(());
        }
        let env = KeyRef::parse(sealed)?;
        let pkb = pk.map(str::as_bytes);
        if let Some(r) = self.inner.with_cached(&env.key_id, &self.state, |k| k.open_into(&env, pkb, out)) {
            return Ok(r??);
        }
        let key = Box::pin(self.inner.open_key(env.key_id, &self.state)).await?;
        Ok(key.open_into(&env, pkb, out)?)
    }

    /// Opens with an already cached key, without any I/O; `Ok(false)` when the key must be
    /// fetched first (or the value is in the self-contained form).
    ///
    /// # Errors
    /// As [`Column::open`], for what can be decided without I/O.
    pub fn try_open_warm(&self, sealed: &[u8], pk: Option<&str>, out: &mut Zeroizing<Vec<u8>>) -> Result<bool, Error> {
        if sealed.first() == Some(&envseal_core::envelope::TAG) {
            return Ok(false);
        }
        let env = KeyRef::parse(sealed)?;
        let pkb = pk.map(str::as_bytes);
        match self.inner.with_cached(&env.key_id, &self.state, |k| k.open_into(&env, pkb, out)) {
            Some(r) => Ok(r?.map(|()| true)?),
            None => Ok(false),
        }
    }

    /// Seals a typed value ([`FieldValue`]).
    ///
    /// # Errors
    /// As [`Column::seal`].
    pub async fn seal_value<T: FieldValue>(&self, value: &T, pk: Option<&str>) -> Result<Sealed, Error> {
        let mut pt = Zeroizing::new(Vec::new());
        value.encode(&mut pt);
        self.seal(&pt, pk).await
    }

    /// Opens a typed value.
    ///
    /// # Errors
    /// As [`Column::open`]; [`Error::Decode`] if the plaintext is not a `T`.
    pub async fn open_value<T: FieldValue>(&self, sealed: &Sealed, pk: Option<&str>) -> Result<T, Error> {
        let pt = self.open(sealed.as_bytes(), pk).await?;
        T::decode(pt.expose_secret()).ok_or_else(|| Error::Decode {
            column: format!("{}.{}", self.state.table, self.state.column),
            expected: T::TYPE_NAME,
        })
    }
}

/// One blind index of a table: terms for writers and queries, and index-key rotation. Cheap to
/// clone.
#[derive(Clone)]
pub struct Index {
    inner: Arc<Inner>,
    state: Arc<IndexState>,
}

impl std::fmt::Debug for Index {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Index({}.{}: {})", self.state.table, self.state.def.name, self.state.def_text)
    }
}

impl Index {
    /// The definition.
    pub fn def(&self) -> &IndexDef {
        &self.state.def
    }

    /// The table.
    pub fn table(&self) -> &str {
        &self.state.table
    }

    /// The term to store for a record whose indexed fields have these plaintexts (encoded,
    /// [`FieldValue`]), under the newest active index-key generation.
    ///
    /// # Errors
    /// KMS and vault errors when the index keys must be (re)loaded; [`Error::Schema`] for a
    /// definition that differs from the vault's, or a wrong number of fields.
    pub async fn term(&self, fields: &[&[u8]]) -> Result<IndexTerm, Error> {
        let input = self.state.def.input(fields)?;
        let keys = self.keys().await?;
        Ok(keys.current.term(&self.state.def, &input))
    }

    /// The terms to look up for these plaintexts: one per active generation (usually one;
    /// two during an index-key rotation).
    ///
    /// # Errors
    /// As [`Index::term`].
    pub async fn terms(&self, fields: &[&[u8]]) -> Result<Vec<IndexTerm>, Error> {
        let input = self.state.def.input(fields)?;
        let keys = self.keys().await?;
        Ok(keys.active.iter().map(|k| k.term(&self.state.def, &input)).collect())
    }

    /// A query for these plaintexts, with a way to drop false positives from opened records.
    ///
    /// # Errors
    /// As [`Index::term`].
    pub async fn query<R>(
        &self,
        fields: &[&[u8]],
        extract: fn(&R) -> Vec<Zeroizing<Vec<u8>>>,
    ) -> Result<IndexQuery<R>, Error> {
        let input = self.state.def.input(fields)?;
        let keys = self.keys().await?;
        let terms = keys.active.iter().map(|k| k.term(&self.state.def, &input)).collect();
        Ok(IndexQuery::new(self.state.def.clone(), terms, input, extract))
    }

    /// The generation new terms are computed under, loading the keys if needed.
    ///
    /// # Errors
    /// As [`Index::term`].
    pub async fn current_generation(&self) -> Result<u32, Error> {
        Ok(self.keys().await?.current.generation())
    }

    /// Adds the next index-key generation (for a rotation job) and returns it. Writers move to
    /// it when they reload their index keys (within the cache's `max_age`); queries ask for
    /// every active generation until the old ones are retired ([`Index::retire_before`]).
    ///
    /// # Errors
    /// [`VaultError::Conflict`] if another rotation added a generation at the same time; KMS
    /// and vault errors.
    pub async fn rotate(&self) -> Result<u32, Error> {
        let inner = &self.inner;
        bump(&inner.counters.vault_reads);
        let recs = inner.vault.scope(KeyKind::Index, &self.state.table, &self.state.def.name).await?;
        let generation = recs.iter().map(|r| r.generation).max().unwrap_or(0) + 1;
        self.create_generation(generation).await?;
        *write(&self.state.keys) = None;
        Ok(generation)
    }

    /// Marks every generation older than `generation` retired: queries stop asking for their
    /// terms. Only safe once no row holds a term of those generations.
    ///
    /// # Errors
    /// Vault errors.
    pub async fn retire_before(&self, generation: u32) -> Result<u32, Error> {
        let inner = &self.inner;
        bump(&inner.counters.vault_reads);
        let recs = inner.vault.scope(KeyKind::Index, &self.state.table, &self.state.def.name).await?;
        let mut n = 0;
        for r in recs.iter().filter(|r| r.generation < generation && r.state == EntryState::Active) {
            bump(&inner.counters.vault_writes);
            inner.vault.set_state(&r.id, EntryState::Retired).await?;
            n += 1;
        }
        *write(&self.state.keys) = None;
        Ok(n)
    }

    async fn create_generation(&self, generation: u32) -> Result<(), Error> {
        let inner = &self.inner;
        let rec = VaultRecord {
            id: KeyId::random(),
            seq: 0,
            kind: KeyKind::Index,
            table: self.state.table.clone(),
            name: self.state.def.name.clone(),
            generation,
            state: EntryState::Active,
            created_at: vault::unix_now(),
            definition: self.state.def_text.clone(),
            context: inner.base.clone(),
            envelope: Vec::new(),
        };
        bump(&inner.counters.kms_calls);
        let (_dk, rec) = vault::new_entry(inner.kms.as_ref(), &inner.kms_key, inner.engine, &inner.base, rec).await?;
        bump(&inner.counters.vault_writes);
        inner.vault.insert(&rec).await?;
        bump(&inner.counters.index_keys_created);
        Ok(())
    }

    async fn keys(&self) -> Result<Arc<IndexKeys>, Error> {
        let fresh = |k: &Option<Arc<IndexKeys>>| {
            k.as_ref().filter(|k| k.fetched.elapsed() < self.inner.policy.max_age).cloned()
        };
        if let Some(k) = fresh(&read(&self.state.keys)) {
            return Ok(k);
        }
        let _refill = self.state.refill.lock().await;
        if let Some(k) = fresh(&read(&self.state.keys)) {
            return Ok(k);
        }
        let keys = Arc::new(self.load().await?);
        *write(&self.state.keys) = Some(keys.clone());
        Ok(keys)
    }

    async fn load(&self) -> Result<IndexKeys, Error> {
        let inner = &self.inner;
        let (table, name) = (&self.state.table, &self.state.def.name);
        for _ in 0..3 {
            bump(&inner.counters.vault_reads);
            let recs = inner.vault.scope(KeyKind::Index, table, name).await?;
            let active: Vec<&VaultRecord> = recs.iter().filter(|r| r.state == EntryState::Active).collect();
            if active.is_empty() {
                let generation = recs.iter().map(|r| r.generation).max().unwrap_or(0) + 1;
                match self.create_generation(generation).await {
                    // Another process created it first: read it.
                    Ok(()) | Err(Error::Vault(VaultError::Conflict)) => continue,
                    Err(e) => return Err(e),
                }
            }
            let mut keys = Vec::with_capacity(active.len());
            for r in active {
                if r.definition != self.state.def_text {
                    return Err(Error::Schema(format!(
                        "index {table}.{name}: the key vault holds the definition {:?}, this program uses {:?}",
                        r.definition, self.state.def_text
                    )));
                }
                bump(&inner.counters.kms_calls);
                let dk = vault::open_entry(inner.kms.as_ref(), inner.engine, &inner.base, r).await?;
                keys.push(Arc::new(IndexKey::derive(&dk, r.id, r.generation)));
            }
            keys.sort_by_key(|k| std::cmp::Reverse(k.generation()));
            let current = keys[0].clone();
            return Ok(IndexKeys { fetched: Instant::now(), current, active: keys });
        }
        Err(Error::Vault(VaultError::Conflict))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::index::Normalize;
    use crate::vault::memory::MemoryVault;
    use envseal_kms_mock::MockKms;

    fn setup() -> (Arc<MockKms>, Arc<MemoryVault>, FieldCipher) {
        let kms = Arc::new(MockKms::new());
        let key = kms.create_default_key();
        let vault = Arc::new(MemoryVault::default());
        let c = FieldCipher::builder(kms.clone(), key.clone(), vault.clone())
            .context(EncryptionContext::from_pairs([("app", "test")]).unwrap())
            .build()
            .unwrap();
        (kms, vault, c)
    }

    #[tokio::test]
    async fn seal_open_bindings_and_kms_calls() {
        let (kms, _vault, c) = setup();
        let email = c.column("users", "email").unwrap();
        let mut sealed = Vec::new();
        for i in 0..100 {
            sealed.push(email.seal(format!("user{i}@example.com").as_bytes(), Some(&i.to_string())).await.unwrap());
        }
        assert_eq!(kms.counts().generate_data_key, 1, "one data key for 100 values");
        for (i, s) in sealed.iter().enumerate() {
            assert_eq!(s.as_bytes().len(), keyref::OVERHEAD + format!("user{i}@example.com").len());
        }
        for (i, s) in sealed.iter().enumerate() {
            let pt = email.open(s.as_bytes(), Some(&i.to_string())).await.unwrap();
            assert_eq!(pt.expose_secret(), format!("user{i}@example.com").as_bytes());
        }
        // Another row, another column, no pk: refused.
        assert!(matches!(
            email.open(sealed[0].as_bytes(), Some("1")).await,
            Err(Error::Core(envseal_core::Error::Format(FormatError::ValueTampered)))
        ));
        assert!(email.open(sealed[0].as_bytes(), None).await.is_err());
        let phone = c.column("users", "phone").unwrap();
        assert!(matches!(phone.open(sealed[0].as_bytes(), Some("0")).await, Err(Error::WrongScope { .. })));
    }

    #[tokio::test]
    async fn another_process_opens_through_the_vault_and_the_context_is_checked() {
        let (kms, vault, c) = setup();
        let s = c.column("users", "ssn").unwrap().seal(b"078-05-1120", Some("9")).await.unwrap();
        let key = c.kms_key().to_string();
        let other = FieldCipher::builder(kms.clone(), key.clone(), vault.clone())
            .context(EncryptionContext::from_pairs([("app", "test")]).unwrap())
            .build()
            .unwrap();
        let col = other.column("users", "ssn").unwrap();
        assert_eq!(col.open(s.as_bytes(), Some("9")).await.unwrap().expose_secret(), b"078-05-1120");
        assert_eq!(other.stats().open_misses, 1);
        col.open(s.as_bytes(), Some("9")).await.unwrap();
        assert_eq!(other.stats().open_hits, 1);
        // Another application's base context cannot open it (the KMS refuses the context).
        let stranger = FieldCipher::builder(kms.clone(), key, vault.clone())
            .context(EncryptionContext::from_pairs([("app", "other")]).unwrap())
            .build()
            .unwrap();
        assert!(stranger.column("users", "ssn").unwrap().open(s.as_bytes(), Some("9")).await.is_err());
        // An unknown key id.
        let mut forged = s.as_bytes().to_vec();
        forged[1] ^= 1;
        assert!(matches!(col.open(&forged, Some("9")).await, Err(Error::UnknownKey { .. })));
    }

    #[tokio::test]
    async fn cache_policy_bounds_keys_and_self_contained_values_open() {
        let kms = Arc::new(MockKms::new());
        let key = kms.create_default_key();
        let vault = Arc::new(MemoryVault::default());
        let policy = CachePolicy { max_messages: 10, ..CachePolicy::default() };
        let c = FieldCipher::builder(kms.clone(), key.clone(), vault.clone()).cache(policy).build().unwrap();
        let col = c.column("t", "c").unwrap();
        for i in 0..35 {
            col.seal(b"v", Some(&i.to_string())).await.unwrap();
        }
        assert_eq!(c.stats().data_keys_created, 4);
        assert_eq!(kms.counts().generate_data_key, 4);
        // The self-contained form opens too, through the same column.
        let sc = FieldCipher::builder(kms.clone(), key, vault).form(Form::SelfContained).build().unwrap();
        let v = sc.column("t", "c").unwrap().seal(b"legacy", Some("1")).await.unwrap();
        assert_eq!(v.as_bytes()[0], envseal_core::envelope::TAG);
        assert_eq!(col.open(v.as_bytes(), Some("1")).await.unwrap().expose_secret(), b"legacy");
        assert!(col.open(v.as_bytes(), Some("2")).await.is_err());
    }

    #[tokio::test]
    async fn warm_paths_need_no_io() {
        let (_kms, _vault, c) = setup();
        let col = c.column("t", "c").unwrap();
        let mut out = Vec::new();
        assert!(!col.try_seal_warm(b"x", Some("1"), &mut out).unwrap());
        assert!(out.is_empty());
        let s = col.seal(b"x", Some("1")).await.unwrap();
        assert!(col.try_seal_warm(b"y", Some("2"), &mut out).unwrap());
        let mut pt = Zeroizing::new(Vec::new());
        assert!(col.try_open_warm(&out, Some("2"), &mut pt).unwrap());
        assert_eq!(&pt[..], b"y");
        pt.clear();
        assert!(col.try_open_warm(s.as_bytes(), Some("1"), &mut pt).unwrap());
        c.clear_cache();
        assert!(!col.try_open_warm(s.as_bytes(), Some("1"), &mut pt).unwrap());
    }

    #[tokio::test]
    async fn indexes_find_equal_values_and_rotate() {
        let (kms, _vault, c) = setup();
        let def = IndexDef::new("email_idx", [("email", Normalize::Lowercase)], 16).unwrap();
        let idx = c.index("users", &def).unwrap();
        let t1 = idx.term(&[b"Alice@Example.com"]).await.unwrap();
        let t2 = idx.term(&[b" alice@example.com"]).await.unwrap();
        assert_eq!(t1, t2);
        assert_eq!(t1.as_bytes().len(), 3);
        assert_eq!(t1.generation_tag(), Some(1));
        let calls = kms.counts().total();
        idx.term(&[b"bob@example.com"]).await.unwrap();
        assert_eq!(kms.counts().total(), calls, "index keys are cached");
        // Another definition under the same name is refused.
        let other = IndexDef::new("email_idx", [("email", Normalize::None)], 16).unwrap();
        assert!(c.index("users", &other).is_err());
        let fresh = FieldCipher::builder(kms.clone(), c.kms_key(), c.vault().clone())
            .context(c.context().clone())
            .build()
            .unwrap();
        assert!(matches!(fresh.index("users", &other).unwrap().term(&[b"x"]).await, Err(Error::Schema(_))));
        // Rotation: both generations are queried until the old one is retired.
        assert_eq!(idx.rotate().await.unwrap(), 2);
        let terms = idx.terms(&[b"alice@example.com"]).await.unwrap();
        assert_eq!(terms.len(), 2);
        assert!(terms.contains(&t1));
        let t3 = idx.term(&[b"alice@example.com"]).await.unwrap();
        assert_eq!(t3.generation_tag(), Some(2));
        assert_eq!(idx.retire_before(2).await.unwrap(), 1);
        assert_eq!(idx.terms(&[b"alice@example.com"]).await.unwrap(), vec![t3]);
    }
}
