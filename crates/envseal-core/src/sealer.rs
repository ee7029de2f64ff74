//! Field-level sealing with a bounded data-key cache.
//!
//! Without a cache every [`Sealer::seal`] asks the KMS for a fresh data key and every
//! [`Sealer::open`] asks it to decrypt one. With a [`CachePolicy`], a data key (and its derived
//! value key) is reused for many values until it reaches its age, message or byte limit, and a
//! decrypted data key is reused to open every envelope that carries the same wrapped key.
//!
//! Cache entries are keyed by suite, key and the canonical encryption context (and, for
//! opening, by the exact wrapped-key entry and salt), so a key fetched for one context can never
//! seal or open under another. Concurrent callers that miss on the same entry wait for a single
//! KMS call. Evicted and expired entries are dropped, which zeroizes their key schedules.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use crate::aead::Engine;
use crate::context::EncryptionContext;
use crate::datakey::SecretBytes;
use crate::entries;
use crate::envelope::{self, Envelope, FieldKey};
use crate::error::{Error, FormatError, KmsError};
use crate::kms::Kms;

/// Limits of the data-key cache.
#[derive(Clone, Copy, Debug)]
pub struct CachePolicy {
    /// Most distinct cache entries (seal and open together); least recently used go first.
    pub capacity: usize,
    /// Longest a data key is reused after it was fetched.
    pub max_age: Duration,
    /// Most values one data key may seal (capped at 2^32).
    pub max_messages: u64,
    /// Most plaintext bytes one data key may seal.
    pub max_bytes: u64,
}

impl Default for CachePolicy {
    /// 1024 entries, 5 minutes, 2^20 messages, 1 GiB.
    fn default() -> Self {
        Self { capacity: 1024, max_age: Duration::from_secs(300), max_messages: 1 << 20, max_bytes: 1 << 30 }
    }
}

/// Cache counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Lookups served from the cache.
    pub hits: u64,
    /// Lookups that called the KMS.
    pub misses: u64,
    /// Entries dropped to respect the capacity.
    pub evictions: u64,
    /// Entries now held.
    pub entries: usize,
}

struct Entry {
    key: FieldKey,
    created: Instant,
    messages: AtomicU64,
    bytes: AtomicU64,
}

struct Slot {
    current: RwLock<Option<Arc<Entry>>>,
    refill: tokio::sync::Mutex<()>,
    /// The cache's tick at the last use, for least-recently-used eviction.
    last_used: AtomicU64,
}

impl Slot {
    fn new(tick: u64) -> Arc<Self> {
        Arc::new(Slot {
            current: RwLock::new(None),
            refill: tokio::sync::Mutex::new(()),
            last_used: AtomicU64::new(tick),
        })
    }

    /// Drops the current entry if it is still `stale` (its keys are wiped once no caller holds
    /// them).
    fn retire(&self, stale: *const Entry) {
        let mut w = write(&self.current);
        if w.as_ref().is_some_and(|c| Arc::as_ptr(c) == stale) {
            *w = None;
        }
    }
}

/// The opening slot of one data-key instance: the exact entry bytes and context it is for.
struct OpenSlot {
    entry: Vec<u8>,
    context: Vec<u8>,
    slot: Arc<Slot>,
}

/// Cache slots. Sealing slots are keyed by the canonical context alone (suite and KMS key are
/// the sealer's own); opening slots by the envelope salt, then by exact entry bytes and context.
#[derive(Default)]
struct Maps {
    seal: HashMap<Vec<u8>, Arc<Slot>>,
    open: HashMap<[u8; envelope::SALT_LEN], Vec<OpenSlot>>,
    len: usize,
}

struct Cache {
    policy: CachePolicy,
    maps: RwLock<Maps>,
    tick: AtomicU64,
    hits: AtomicU64,
    misses: AtomicU64,
    evictions: AtomicU64,
}

/// Recovers a lock even if a panicking thread poisoned it: the data behind these locks (maps
/// of `Arc`s) stays consistent across a panic.
fn read<T>(l: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(|p| p.into_inner())
}
fn write<T>(l: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(|p| p.into_inner())
}

thread_local! {
    /// The canonical context of the current call, encoded without an allocation per call.
    static CONTEXT: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Runs `f` with the canonical encoding of `context` (FORMAT.md §2.3).
fn with_context<R>(context: &EncryptionContext, f: impl FnOnce(&[u8]) -> R) -> R {
    CONTEXT.with(|b| match b.try_borrow_mut() {
        Ok(mut b) => {
            b.clear();
            context.encode_into(&mut b);
            f(&b)
        }
        // Only if `f` re-entered the sealer on this thread: encode afresh.
        Err(_) => f(&context.canonical_bytes()),
    })
}

impl Cache {
    fn touch(&self, slot: &Slot) {
        slot.last_used.store(self.tick.fetch_add(1, Ordering::Relaxed), Ordering::Relaxed);
    }

    /// Whether `e` may seal `bytes` more bytes (taking one message index) or, for opening,
    /// is still fresh. Returns the index.
    fn admit(&self, e: &Entry, bytes: u64, sealing: bool) -> Option<u64> {
        let fresh = e.created.elapsed() < self.policy.max_age;
        if !sealing {
            return fresh.then_some(0);
        }
        let max_messages = self.policy.max_messages.min(envelope::MAX_MESSAGES_PER_KEY);
        let index = e.messages.fetch_add(1, Ordering::Relaxed);
        let used = e.bytes.fetch_add(bytes, Ordering::Relaxed).saturating_add(bytes);
        (fresh && index < max_messages && used <= self.policy.max_bytes).then_some(index)
    }

    /// Seals with the cached key of `context` if there is a usable one (the warm path: no
    /// allocation besides `out`'s, no reference count touched). `None`: go to the KMS.
    fn seal_warm(&self, context: &[u8], plaintext: &[u8], out: &mut Vec<u8>) -> Option<Result<(), FormatError>> {
        let maps = read(&self.maps);
        let slot = maps.seal.get(context)?;
        self.touch(slot);
        let cur = read(&slot.current);
        let e = cur.as_ref()?;
        match self.admit(e, plaintext.len() as u64, true) {
            Some(index) => Some(e.key.seal_into(index, plaintext, context, out)),
            None => {
                // Exhausted or expired: drop it so its keys are wiped once no caller holds them.
                let stale = Arc::as_ptr(e);
                drop(cur);
                slot.retire(stale);
                None
            }
        }
    }

    /// Opens with the cached key of this instance and context, if fresh.
    fn open_warm(&self, env: &Envelope<'_>, context: &[u8]) -> Option<Result<SecretBytes, FormatError>> {
        let maps = read(&self.maps);
        let os = maps.open.get(env.salt)?.iter().find(|o| o.entry == env.entry_bytes && o.context == context)?;
        self.touch(&os.slot);
        let cur = read(&os.slot.current);
        let e = cur.as_ref()?;
        if self.admit(e, 0, false).is_none() {
            let stale = Arc::as_ptr(e);
            drop(cur);
            os.slot.retire(stale);
            return None;
        }
        let mut out = zeroize::Zeroizing::new(Vec::with_capacity(env.plaintext_len()));
        Some(e.key.open_into(env, context, &mut out).map(|()| SecretBytes::from(out)))
    }

    /// Makes room for one more slot by evicting the least recently used one (of either map).
    /// O(capacity), only on insertion.
    fn make_room(&self, maps: &mut Maps) {
        if maps.len < self.policy.capacity.max(1) {
            return;
        }
        let used = |s: &Slot| s.last_used.load(Ordering::Relaxed);
        let seal = maps.seal.iter().map(|(k, s)| (used(s), k)).min_by_key(|(t, _)| *t).map(|(t, k)| (t, k.clone()));
        let open = maps
            .open
            .iter()
            .flat_map(|(salt, v)| v.iter().enumerate().map(move |(i, o)| (used(&o.slot), *salt, i)))
            .min_by_key(|(t, _, _)| *t);
        match (seal, open) {
            (Some((ts, k)), Some((to, _, _))) if ts <= to => {
                maps.seal.remove(&k);
            }
            (Some((_, k)), None) => {
                maps.seal.remove(&k);
            }
            (_, Some((_, salt, i))) => remove_open(maps, salt, i),
            (None, None) => return,
        }
        maps.len -= 1;
        self.evictions.fetch_add(1, Ordering::Relaxed);
    }

    fn seal_slot(&self, context: &[u8]) -> Arc<Slot> {
        let mut maps = write(&self.maps);
        if let Some(s) = maps.seal.get(context) {
            self.touch(s);
            return s.clone();
        }
        self.make_room(&mut maps);
        let s = Slot::new(self.tick.fetch_add(1, Ordering::Relaxed));
        maps.seal.insert(context.to_vec(), s.clone());
        maps.len += 1;
        s
    }

    fn open_slot(&self, env: &Envelope<'_>, context: &[u8]) -> Arc<Slot> {
        let mut maps = write(&self.maps);
        if let Some(o) =
            maps.open.get(env.salt).and_then(|v| v.iter().find(|o| o.entry == env.entry_bytes && o.context == context))
        {
            self.touch(&o.slot);
            return o.slot.clone();
        }
        self.make_room(&mut maps);
        let s = Slot::new(self.tick.fetch_add(1, Ordering::Relaxed));
        maps.open.entry(*env.salt).or_default().push(OpenSlot {
            entry: env.entry_bytes.to_vec(),
            context: context.to_vec(),
            slot: s.clone(),
        });
        maps.len += 1;
        s
    }

    fn stats(&self) -> CacheStats {
        CacheStats {
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            evictions: self.evictions.load(Ordering::Relaxed),
            entries: read(&self.maps).len,
        }
    }
}

fn remove_open(maps: &mut Maps, salt: [u8; envelope::SALT_LEN], i: usize) {
    if let Some(v) = maps.open.get_mut(&salt) {
        v.remove(i);
        if v.is_empty() {
            maps.open.remove(&salt);
        }
    }
}

/// Seals and opens field envelopes under one KMS key, optionally with a data-key cache.
pub struct Sealer {
    kms: Arc<dyn Kms>,
    key: String,
    engine: Engine,
    cache: Option<Cache>,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sealer")
            .field("backend", &self.kms.backend())
            .field("key", &self.key)
            .field("engine", &self.engine)
            .field("cache", &self.cache.as_ref().map(|c| c.stats()))
            .finish()
    }
}

impl Sealer {
    /// A sealer for `key` (id or alias) on `kms`, without a cache.
    pub fn new(kms: Arc<dyn Kms>, key: impl Into<String>) -> Self {
        Self { kms, key: key.into(), engine: Engine::default(), cache: None }
    }

    /// Enables the data-key cache.
    pub fn with_cache(mut self, policy: CachePolicy) -> Self {
        self.cache = Some(Cache {
            policy,
            maps: RwLock::new(Maps::default()),
            tick: AtomicU64::new(0),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            evictions: AtomicU64::new(0),
        });
        self
    }

    /// Chooses the AEAD engine.
    pub fn with_engine(mut self, engine: Engine) -> Self {
        self.engine = engine;
        self
    }

    /// Cache counters (all zero without a cache).
    pub fn cache_stats(&self) -> CacheStats {
        self.cache.as_ref().map(Cache::stats).unwrap_or_default()
    }

    async fn fresh_seal_key(&self, context: &EncryptionContext) -> Result<FieldKey, Error> {
        let salt: [u8; envelope::SALT_LEN] = crate::random::array();
        let kctx = envelope::kms_context(context, &salt)?;
        let g = self.kms.generate_data_key(&self.key, &kctx).await?;
        Ok(FieldKey::new(self.engine, &g.data_key, salt, &g.wrapped)?)
    }

    /// Seals `plaintext` under `context`; returns the envelope's byte form.
    ///
    /// # Errors
    /// [`KmsError`]s from generating a data key; [`FormatError::LimitExceeded`] for oversize
    /// plaintext.
    pub async fn seal(&self, plaintext: &[u8], context: &EncryptionContext) -> Result<Vec<u8>, Error> {
        if plaintext.len() > envelope::MAX_PLAINTEXT {
            return Err(FormatError::LimitExceeded {
                what: "field plaintext",
                value: plaintext.len() as u64,
                max: envelope::MAX_PLAINTEXT as u64,
            }
            .into());
        }
        let Some(cache) = &self.cache else {
            return Ok(self.fresh_seal_key(context).await?.seal(0, plaintext, context)?);
        };
        let mut out = Vec::new();
        if let Some(r) = with_context(context, |ctx| cache.seal_warm(ctx, plaintext, &mut out)) {
            cache.hits.fetch_add(1, Ordering::Relaxed);
            r?;
            return Ok(out);
        }
        // The cold path is boxed so that the warm path's future stays small.
        Box::pin(self.seal_cold(cache, plaintext, context)).await
    }

    async fn seal_cold(&self, cache: &Cache, plaintext: &[u8], context: &EncryptionContext) -> Result<Vec<u8>, Error> {
        let ctx = context.canonical_bytes();
        let slot = cache.seal_slot(&ctx);
        let _refill = slot.refill.lock().await;
        let mut out = Vec::new();
        if let Some(r) = cache.seal_warm(&ctx, plaintext, &mut out) {
            cache.hits.fetch_add(1, Ordering::Relaxed);
            r?;
            return Ok(out);
        }
        cache.misses.fetch_add(1, Ordering::Relaxed);
        let key = self.fresh_seal_key(context).await?;
        let n = plaintext.len() as u64;
        let e = Arc::new(Entry { key, created: Instant::now(), messages: AtomicU64::new(1), bytes: AtomicU64::new(n) });
        *write(&slot.current) = Some(e.clone());
        e.key.seal_into(0, plaintext, &ctx, &mut out)?;
        Ok(out)
    }

    /// Seals into `out`, appending the envelope's byte form: with a warm cache and a buffer
    /// reused with enough capacity, sealing makes no allocation.
    ///
    /// # Errors
    /// As [`Sealer::seal`].
    pub async fn seal_into(
        &self,
        plaintext: &[u8],
        context: &EncryptionContext,
        out: &mut Vec<u8>,
    ) -> Result<(), Error> {
        if let Some(cache) = &self.cache
            && plaintext.len() <= envelope::MAX_PLAINTEXT
            && let Some(r) = with_context(context, |ctx| cache.seal_warm(ctx, plaintext, out))
        {
            cache.hits.fetch_add(1, Ordering::Relaxed);
            return Ok(r?);
        }
        out.extend_from_slice(&self.seal(plaintext, context).await?);
        Ok(())
    }

    /// Seals to the text form (`esf1:...`).
    ///
    /// # Errors
    /// As [`Sealer::seal`].
    pub async fn seal_text(&self, plaintext: &[u8], context: &EncryptionContext) -> Result<String, Error> {
        Ok(envelope::to_text(&self.seal(plaintext, context).await?))
    }

    async fn fetch_open_key(&self, env: &Envelope<'_>, context: &EncryptionContext) -> Result<FieldKey, Error> {
        let entry = env.entry()?;
        if entry.backend != self.kms.backend() {
            return Err(KmsError::Unsupported { operation: "decrypt", backend: entry.backend }.into());
        }
        let kctx = envelope::kms_context(context, env.salt)?;
        let dk = entries::unwrap_one(self.kms.as_ref(), &entry, &kctx, 0).await?;
        Ok(FieldKey::for_opening(self.engine, &dk, *env.salt))
    }

    /// Opens an envelope (byte form) sealed under `context`.
    ///
    /// # Errors
    /// Parse errors; [`KmsError`]s from decrypting the data key (a wrong context shows here as
    /// [`KmsError::WrongContext`] or, on KMSs that cannot tell, as
    /// [`FormatError::KeyEntryTampered`]); [`FormatError::CommitmentMismatch`];
    /// [`FormatError::ValueTampered`].
    pub async fn open(&self, sealed: &[u8], context: &EncryptionContext) -> Result<SecretBytes, Error> {
        let env = Envelope::parse(sealed)?;
        let Some(cache) = &self.cache else {
            return Ok(self.fetch_open_key(&env, context).await?.open(&env, context)?);
        };
        if let Some(r) = with_context(context, |ctx| cache.open_warm(&env, ctx)) {
            cache.hits.fetch_add(1, Ordering::Relaxed);
            return Ok(r?);
        }
        Box::pin(self.open_cold(cache, &env, context)).await
    }

    async fn open_cold(
        &self,
        cache: &Cache,
        env: &Envelope<'_>,
        context: &EncryptionContext,
    ) -> Result<SecretBytes, Error> {
        let ctx = context.canonical_bytes();
        let slot = cache.open_slot(env, &ctx);
        let _refill = slot.refill.lock().await;
        if let Some(r) = cache.open_warm(env, &ctx) {
            cache.hits.fetch_add(1, Ordering::Relaxed);
            return Ok(r?);
        }
        cache.misses.fetch_add(1, Ordering::Relaxed);
        let key = self.fetch_open_key(env, context).await?;
        // Verify before caching: a forged envelope must not plant a key in the cache.
        let out = key.open(env, context)?;
        let e = Arc::new(Entry { key, created: Instant::now(), messages: AtomicU64::new(0), bytes: AtomicU64::new(0) });
        *write(&slot.current) = Some(e);
        Ok(out)
    }

    /// Opens the text form.
    ///
    /// # Errors
    /// As [`Sealer::open`], plus text decoding errors.
    pub async fn open_text(&self, sealed: &str, context: &EncryptionContext) -> Result<SecretBytes, Error> {
        self.open(&envelope::from_text(sealed)?, context).await
    }
}
