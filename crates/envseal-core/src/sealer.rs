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

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
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

#[derive(Clone, PartialEq, Eq, Hash)]
enum CacheKey {
    Seal { suite: u8, key: String, context: Vec<u8> },
    Open { suite: u8, salt: [u8; envelope::SALT_LEN], entry: Vec<u8>, context: Vec<u8> },
}

struct Entry {
    key: FieldKey,
    created: Instant,
    messages: AtomicU64,
    bytes: AtomicU64,
}

struct Slot {
    current: Mutex<Option<Arc<Entry>>>,
    refill: tokio::sync::Mutex<()>,
    last_used: AtomicU64,
}

struct Cache {
    policy: CachePolicy,
    slots: Mutex<HashMap<CacheKey, Arc<Slot>>>,
    tick: AtomicU64,
    hits: AtomicU64,
    misses: AtomicU64,
    evictions: AtomicU64,
}

/// Recovers a mutex even if a panicking thread poisoned it: the data behind these mutexes
/// (maps of `Arc`s) stays consistent across a panic.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Cache {
    fn slot(&self, key: &CacheKey) -> Arc<Slot> {
        let now = self.tick.fetch_add(1, Ordering::Relaxed);
        let mut slots = lock(&self.slots);
        if let Some(s) = slots.get(key) {
            s.last_used.store(now, Ordering::Relaxed);
            return s.clone();
        }
        if slots.len() >= self.policy.capacity.max(1) {
            // Evict the least recently used slot; O(capacity), only on insertion.
            if let Some(victim) =
                slots.iter().min_by_key(|(_, s)| s.last_used.load(Ordering::Relaxed)).map(|(k, _)| k.clone())
            {
                slots.remove(&victim);
                self.evictions.fetch_add(1, Ordering::Relaxed);
            }
        }
        let s = Arc::new(Slot {
            current: Mutex::new(None),
            refill: tokio::sync::Mutex::new(()),
            last_used: AtomicU64::new(now),
        });
        slots.insert(key.clone(), s.clone());
        s
    }

    /// Takes one use of the slot's entry if it is within every limit; returns it with the
    /// message index reserved (the nonce counter).
    fn reserve(&self, slot: &Slot, bytes: u64, sealing: bool) -> Option<(Arc<Entry>, u64)> {
        let mut cur = lock(&slot.current);
        let e = cur.as_ref()?;
        let max_messages = self.policy.max_messages.min(envelope::MAX_MESSAGES_PER_KEY);
        let fresh = e.created.elapsed() < self.policy.max_age;
        let (ok, index) = if sealing {
            let index = e.messages.fetch_add(1, Ordering::Relaxed);
            let used = e.bytes.fetch_add(bytes, Ordering::Relaxed).saturating_add(bytes);
            (fresh && index < max_messages && used <= self.policy.max_bytes, index)
        } else {
            (fresh, 0)
        };
        if ok {
            Some((e.clone(), index))
        } else {
            // Exhausted or expired: drop it so its keys are wiped once no caller holds them.
            *cur = None;
            None
        }
    }

    fn stats(&self) -> CacheStats {
        CacheStats {
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            evictions: self.evictions.load(Ordering::Relaxed),
            entries: lock(&self.slots).len(),
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
            slots: Mutex::new(HashMap::new()),
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
        let ck = CacheKey::Seal {
            suite: envelope::SUITE_AES256GCM_HKDF_SHA512,
            key: self.key.clone(),
            context: context.canonical_bytes(),
        };
        let slot = cache.slot(&ck);
        let n = plaintext.len() as u64;
        if let Some((e, index)) = cache.reserve(&slot, n, true) {
            cache.hits.fetch_add(1, Ordering::Relaxed);
            return Ok(e.key.seal(index, plaintext, context)?);
        }
        let _refill = slot.refill.lock().await;
        if let Some((e, index)) = cache.reserve(&slot, n, true) {
            cache.hits.fetch_add(1, Ordering::Relaxed);
            return Ok(e.key.seal(index, plaintext, context)?);
        }
        cache.misses.fetch_add(1, Ordering::Relaxed);
        let key = self.fresh_seal_key(context).await?;
        let e = Arc::new(Entry { key, created: Instant::now(), messages: AtomicU64::new(1), bytes: AtomicU64::new(n) });
        *lock(&slot.current) = Some(e.clone());
        Ok(e.key.seal(0, plaintext, context)?)
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
        let ck = CacheKey::Open {
            suite: envelope::SUITE_AES256GCM_HKDF_SHA512,
            salt: *env.salt,
            entry: env.entry_bytes.to_vec(),
            context: context.canonical_bytes(),
        };
        let slot = cache.slot(&ck);
        if let Some((e, _)) = cache.reserve(&slot, 0, false) {
            cache.hits.fetch_add(1, Ordering::Relaxed);
            return Ok(e.key.open(&env, context)?);
        }
        let _refill = slot.refill.lock().await;
        if let Some((e, _)) = cache.reserve(&slot, 0, false) {
            cache.hits.fetch_add(1, Ordering::Relaxed);
            return Ok(e.key.open(&env, context)?);
        }
        cache.misses.fetch_add(1, Ordering::Relaxed);
        let key = self.fetch_open_key(&env, context).await?;
        // Verify before caching: a forged envelope must not plant a key in the cache.
        let out = key.open(&env, context)?;
        let e = Arc::new(Entry { key, created: Instant::now(), messages: AtomicU64::new(0), bytes: AtomicU64::new(0) });
        *lock(&slot.current) = Some(e);
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
