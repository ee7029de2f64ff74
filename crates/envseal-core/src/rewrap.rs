//! Rewrap: replace the wrapped-key entries of sealed data without touching the data
//! (FORMAT.md §1.3, §4.4, §5.7, §10.5).
//!
//! Wrapped-key entries sit outside everything the data key authenticates and are bound to their
//! object by the KMS encryption context, so moving a data key to the newest version of its KMS
//! key, or to another key, is one `ReEncrypt` per entry under the object's own context. The
//! container body, the sealed values and the field ciphertexts stay byte-identical.
//!
//! A [`Rewrapper`] holds the KMS, the [`Target`], the [`Verify`] mode and a [`RetryPolicy`], and
//! caches key metadata (the current version of each key) for the whole job, so objects already
//! at the target are skipped without any KMS write. It has one method per sealed form:
//! [`Rewrapper::rewrap_preamble`] (container), [`Rewrapper::rewrap_value_keys`] (value-level
//! .env/JSON/YAML metadata), [`Rewrapper::rewrap_envelope`] (one field envelope) and
//! [`Rewrapper::rewrap_envelopes`] (a column of them, with bounded concurrency).
//!
//! **Across backends** ([`Rewrapper::with_destination`]) no KMS can re-encrypt on the server: the
//! data key is decrypted by the source KMS and encrypted by the destination KMS, so it passes
//! through this process (in a zeroizing buffer, wiped after use). Within one backend it never
//! does.
//!
//! Nothing here needs a specific async runtime: concurrency comes from `futures-util`'s
//! `buffer_unordered`, and retry delays from a pluggable sleep function (by default a short-lived
//! thread completing a oneshot channel).

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use futures_util::stream::{self, StreamExt};
use tokio::sync::{OnceCell, Semaphore};

use crate::aead::Engine;
use crate::container::{self, Preamble};
use crate::context::EncryptionContext;
use crate::datakey::DataKey;
use crate::envelope::{self, Envelope, FieldKey};
use crate::error::{Error, FormatError, KeyAttempt, KmsError};
use crate::kms::{self, Kms, WrappedKey};
use crate::values::{self, FILE_ID_LEN, ValueKeys};

pub use crate::retry::{RetryPolicy, SleepFn};

/// Smallest blob a KMS can return for a wrapped 256-bit key: AES key wrap (RFC 3394/5649) adds
/// 8 bytes to 32; every AEAD-based backend adds more. Used by [`Verify::Structure`].
pub const MIN_PLAUSIBLE_BLOB: usize = 40;

/// Where the entries go.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Target {
    /// The same KMS key, at its newest version (after a rotation).
    Latest,
    /// Another key (id or alias), at its newest version.
    Key(String),
}

/// How a new entry is checked before it may replace the old one.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Verify {
    /// Unwrap the new entry and check the object's key commitment with the data key it yields:
    /// the strongest check; needs a principal allowed to decrypt under the destination key.
    #[default]
    Decrypt,
    /// For principals allowed only to ReEncrypt: check that the entry names the expected backend,
    /// key and version and carries a plausible blob, without decrypting. The KMS binds the blob
    /// to the context this job passed, which is the object's own.
    Structure,
}

/// Counters of a [`Rewrapper`] (all of its calls so far).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RewrapStats {
    /// Entries replaced by a new, verified entry.
    pub rewrapped: u64,
    /// Entries already at the target (no KMS write).
    pub already_at_target: u64,
    /// KMS calls retried after a retryable error.
    pub retries: u64,
    /// Objects (preambles, metadata, envelopes) that failed.
    pub failed: u64,
    /// KMS calls made for [`Rewrapper::rewrap_envelopes`] items answered from another item of the
    /// same data-key instance instead.
    pub shared: u64,
}

#[derive(Default)]
struct Counters {
    rewrapped: AtomicU64,
    already_at_target: AtomicU64,
    retries: AtomicU64,
    failed: AtomicU64,
    shared: AtomicU64,
}

/// What a key resolves to on the destination backend.
#[derive(Clone, Debug)]
struct KeyInfo {
    /// Canonical key id, when the backend said (else the id or alias as given).
    key_id: String,
    /// Whether `key_id` is canonical (from the backend's key manager).
    canonical: bool,
    /// Current (newest) version, when the backend can tell.
    current_version: Option<String>,
}

type KeyCell = Arc<OnceCell<KeyInfo>>;
type InstanceCell = Arc<OnceCell<Result<Option<WrappedKey>, Arc<Error>>>>;

/// Where an entry stands against a [`Rewrapper`]'s target (see [`Rewrapper::status`]).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum EntryStatus {
    /// The entry belongs to another backend: this rewrapper leaves it alone.
    OtherBackend,
    /// Already at the target: skipped.
    AtTarget,
    /// To be rewrapped to this key (canonical id when the backend told) and version (when
    /// known).
    Behind {
        /// Destination key id.
        key_id: String,
        /// Destination key version, if the backend can tell.
        key_version: Option<String>,
    },
}

/// The result of rewrapping one entry.
#[derive(Debug)]
enum EntryOutcome {
    /// Not ours (another backend), or already at the target.
    Unchanged,
    /// Replaced.
    Rewrapped(WrappedKey),
}

/// Checks that a data key is the one the object committed to (container commitment and header
/// MAC, value-level commitment, or field-envelope commitment).
type Check<'a> = dyn Fn(&DataKey) -> Result<(), Error> + Send + Sync + 'a;

/// Rewraps wrapped-key entries with one KMS. See the [module documentation](self).
pub struct Rewrapper {
    source: Arc<dyn Kms>,
    destination: Option<Arc<dyn Kms>>,
    target: Target,
    verify: Verify,
    engine: Engine,
    retry: RetryPolicy,
    keys: Mutex<HashMap<String, KeyCell>>,
    counters: Counters,
}

impl fmt::Debug for Rewrapper {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Rewrapper")
            .field("source", &self.source.backend())
            .field("destination", &self.destination.as_ref().map(|d| d.backend().to_string()))
            .field("target", &self.target)
            .field("verify", &self.verify)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

/// Recovers a poisoned mutex: the maps behind it hold `Arc`s and stay consistent.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A value-level sealed file's metadata, as far as a rewrap needs it (FORMAT.md §10.4).
#[derive(Clone, Copy, Debug)]
pub struct ValueFile<'a> {
    /// The file's user context.
    pub context: &'a EncryptionContext,
    /// The file id.
    pub file_id: &'a [u8; FILE_ID_LEN],
    /// The wrapped-key entries.
    pub keys: &'a [WrappedKey],
    /// The stored key commitment (hex).
    pub commitment: &'a str,
}

impl Rewrapper {
    /// Rewraps the entries of `kms`'s backend to `target` on the same backend (ReEncrypt: the
    /// data key never leaves the KMS). Verification: [`Verify::Decrypt`]; retries:
    /// [`RetryPolicy::default`].
    pub fn new(kms: Arc<dyn Kms>, target: Target) -> Self {
        Self {
            source: kms,
            destination: None,
            target,
            verify: Verify::default(),
            engine: Engine::default(),
            retry: RetryPolicy::default(),
            keys: Mutex::new(HashMap::new()),
            counters: Counters::default(),
        }
    }

    /// Moves the entries of the source backend to `destination` (another backend, or another
    /// instance of one): the source decrypts the data key, the destination encrypts it. **The
    /// data key passes through this process** (zeroized after use). Needs a [`Target::Key`].
    pub fn with_destination(mut self, destination: Arc<dyn Kms>) -> Self {
        self.destination = Some(destination);
        self
    }

    /// Sets the verification mode.
    pub fn with_verify(mut self, verify: Verify) -> Self {
        self.verify = verify;
        self
    }

    /// Sets the retry policy.
    pub fn with_retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// Sets the AEAD engine used to check commitments.
    pub fn with_engine(mut self, engine: Engine) -> Self {
        self.engine = engine;
        self
    }

    /// The source KMS.
    pub fn source(&self) -> &Arc<dyn Kms> {
        &self.source
    }

    /// The KMS new entries are made by (the destination, else the source).
    pub fn destination(&self) -> &Arc<dyn Kms> {
        self.destination.as_ref().unwrap_or(&self.source)
    }

    /// Whether the data key passes through this process (a move across backends).
    pub fn moves_data_key(&self) -> bool {
        self.destination.is_some()
    }

    /// The target.
    pub fn target(&self) -> &Target {
        &self.target
    }

    /// Counters so far.
    pub fn stats(&self) -> RewrapStats {
        let c = &self.counters;
        RewrapStats {
            rewrapped: c.rewrapped.load(Ordering::Relaxed),
            already_at_target: c.already_at_target.load(Ordering::Relaxed),
            retries: c.retries.load(Ordering::Relaxed),
            failed: c.failed.load(Ordering::Relaxed),
            shared: c.shared.load(Ordering::Relaxed),
        }
    }

    /// Runs a KMS call with the retry policy.
    async fn call<T, F, Fut>(&self, mut call: F) -> Result<T, KmsError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, KmsError>>,
    {
        let mut attempt = 0u32;
        loop {
            match call().await {
                Err(e) if e.is_retryable() && attempt + 1 < self.retry.max_attempts => {
                    self.counters.retries.fetch_add(1, Ordering::Relaxed);
                    (self.retry.sleep)(self.retry.delay(attempt)).await;
                    attempt += 1;
                }
                r => return r,
            }
        }
    }

    /// The key new entries for `entry` go to, with its current version when known. Cached for
    /// the life of this rewrapper: one describe call per key per job.
    async fn key_info(&self, entry: &WrappedKey) -> Result<KeyInfo, Error> {
        match &self.target {
            Target::Latest => self.describe(&entry.key_id).await,
            Target::Key(k) => self.describe(k).await,
        }
    }

    /// Canonical id and current version of `wanted` on the destination, once per job.
    async fn describe(&self, wanted: &str) -> Result<KeyInfo, Error> {
        let cell = lock(&self.keys).entry(wanted.to_string()).or_default().clone();
        let info = cell
            .get_or_try_init(|| async {
                let dest = self.destination();
                let Some(km) = dest.key_manager() else {
                    return Ok::<_, KmsError>(KeyInfo {
                        key_id: wanted.to_string(),
                        canonical: false,
                        current_version: None,
                    });
                };
                let m = self.call(|| km.describe_key(wanted)).await?;
                Ok(KeyInfo { key_id: m.key_id, canonical: true, current_version: Some(m.current_version) })
            })
            .await?;
        Ok(info.clone())
    }

    /// Where `entry` stands against the target, asking the destination's key manager (a
    /// read-only describe call, once per key per job) and never writing: for dry runs and
    /// reports.
    ///
    /// # Errors
    /// [`KmsError`]s of the describe call (after retries).
    pub async fn status(&self, entry: &WrappedKey) -> Result<EntryStatus, Error> {
        if entry.backend != self.source.backend() {
            return Ok(EntryStatus::OtherBackend);
        }
        let info = self.key_info(entry).await?;
        if self.at_target(entry, &info) {
            return Ok(EntryStatus::AtTarget);
        }
        Ok(EntryStatus::Behind { key_id: info.key_id, key_version: info.current_version })
    }

    /// Canonical id and current version of `key` on the destination (cached per job).
    ///
    /// # Errors
    /// [`KmsError`]s of the describe call (after retries).
    pub async fn describe_key(&self, key: &str) -> Result<(String, Option<String>), Error> {
        let i = self.describe(key).await?;
        Ok((i.key_id, i.current_version))
    }

    /// Whether `entry` is already where the target says, as far as the destination can tell.
    fn at_target(&self, entry: &WrappedKey, info: &KeyInfo) -> bool {
        entry.backend == self.destination().backend()
            && entry.key_id == info.key_id
            && info.current_version.as_deref() == Some(entry.key_version.as_str())
    }

    /// Rewraps one entry under `kctx`. Entries of other backends are left alone.
    async fn rewrap_entry(
        &self,
        entry: &WrappedKey,
        kctx: &EncryptionContext,
        check: &Check<'_>,
    ) -> Result<EntryOutcome, Error> {
        if entry.backend != self.source.backend() {
            return Ok(EntryOutcome::Unchanged);
        }
        if self.destination.is_some() && self.target == Target::Latest {
            return Err(KmsError::InvalidRequest {
                message: "a move to another backend needs a destination key, not `latest`".into(),
            }
            .into());
        }
        let info = self.key_info(entry).await?;
        if self.at_target(entry, &info) {
            self.counters.already_at_target.fetch_add(1, Ordering::Relaxed);
            return Ok(EntryOutcome::Unchanged);
        }
        let new = match &self.destination {
            None => {
                let kms = self.source.as_ref();
                self.call(|| kms.re_encrypt(entry, kctx, &info.key_id, kctx)).await?
            }
            Some(dest) => {
                // Across backends: the data key passes through this process. Check it against
                // the object's commitment before handing it to another KMS.
                let k = self.unwrap_checked(self.source.as_ref(), entry, kctx, 0).await?;
                check(&k)?;
                let wrapped = self.call(|| dest.encrypt(&info.key_id, k.expose_secret(), kctx)).await?;
                drop(k);
                wrapped
            }
        };
        if new.backend == entry.backend && new.key_id == entry.key_id && new.key_version == entry.key_version {
            // The KMS had nothing newer (a backend without a key manager to ask beforehand).
            self.counters.already_at_target.fetch_add(1, Ordering::Relaxed);
            return Ok(EntryOutcome::Unchanged);
        }
        self.verify_new(&new, entry, &info, kctx, check).await?;
        self.counters.rewrapped.fetch_add(1, Ordering::Relaxed);
        Ok(EntryOutcome::Rewrapped(new))
    }

    /// Unwraps `entry` with `kms` and checks that the KMS read the entry's key id and version
    /// from the blob (FORMAT.md §4.5).
    async fn unwrap_checked(
        &self,
        kms: &dyn Kms,
        entry: &WrappedKey,
        kctx: &EncryptionContext,
        index: usize,
    ) -> Result<DataKey, Error> {
        let k = self.call(|| kms::decrypt_data_key(kms, entry, kctx)).await.map_err(|e| match e {
            KmsError::InvalidCiphertext => Error::Format(FormatError::KeyEntryTampered { index }),
            KmsError::WrongContext => Error::Format(FormatError::HeaderTampered),
            e => Error::Kms(e),
        })?;
        if k.key_id != entry.key_id || k.key_version != entry.key_version {
            return Err(FormatError::KeyEntryTampered { index }.into());
        }
        Ok(k.data_key)
    }

    async fn verify_new(
        &self,
        new: &WrappedKey,
        old: &WrappedKey,
        info: &KeyInfo,
        kctx: &EncryptionContext,
        check: &Check<'_>,
    ) -> Result<(), Error> {
        let dest = self.destination();
        match self.verify {
            Verify::Decrypt => {
                let k = self.unwrap_checked(dest.as_ref(), new, kctx, 0).await?;
                check(&k)
            }
            Verify::Structure => check_structure(new, old, dest.backend(), info, self.destination.is_some()),
        }
    }

    /// Rewraps `entries` (bound by `kctx`) and returns the new list, or `None` when nothing
    /// changed. Entries that end up naming the same backend and key are merged (the first kept).
    async fn rewrap_entries(
        &self,
        entries: &[WrappedKey],
        kctx: &EncryptionContext,
        check: &Check<'_>,
    ) -> Result<Option<Vec<WrappedKey>>, Error> {
        let mut out = Vec::with_capacity(entries.len());
        let mut changed = false;
        for e in entries {
            match self.rewrap_entry(e, kctx, check).await {
                Ok(EntryOutcome::Unchanged) => out.push(e.clone()),
                Ok(EntryOutcome::Rewrapped(n)) => {
                    changed = true;
                    out.push(n);
                }
                Err(err) => {
                    self.counters.failed.fetch_add(1, Ordering::Relaxed);
                    return Err(err);
                }
            }
        }
        if !changed {
            return Ok(None);
        }
        let mut merged: Vec<WrappedKey> = Vec::with_capacity(out.len());
        for e in out {
            if !merged.iter().any(|m| m.backend == e.backend && m.key_id == e.key_id) {
                merged.push(e);
            }
        }
        Ok(Some(merged))
    }

    /// Rewraps a container's entries. Returns the new preamble (header, commitment and header
    /// MAC unchanged, so the body stays valid byte for byte), or `None` when every entry of this
    /// backend is already at the target.
    ///
    /// # Errors
    /// [`KmsError`]s (after retries); [`FormatError::HeaderTampered`] /
    /// [`FormatError::KeyEntryTampered`] / [`FormatError::CommitmentMismatch`] when verification
    /// fails; [`FormatError`] if a new entry violates a bound.
    pub async fn rewrap_preamble(&self, preamble: &Preamble) -> Result<Option<Preamble>, Error> {
        let kctx = preamble.kms_context();
        let engine = self.engine;
        let check = |dk: &DataKey| -> Result<(), Error> { preamble.open(engine, dk).map(drop).map_err(Error::from) };
        let Some(entries) = self.rewrap_entries(&preamble.entries, &kctx, &check).await? else {
            return Ok(None);
        };
        let new = Preamble { entries, ..preamble.clone() };
        new.encode()?; // bounds of the new entries
        Ok(Some(new))
    }

    /// Rewraps a value-level file's `keys` (FORMAT.md §10.5: no value and no MAC changes).
    /// Returns the new entries, or `None` when nothing changed.
    ///
    /// # Errors
    /// As [`Rewrapper::rewrap_preamble`].
    pub async fn rewrap_value_keys(&self, file: &ValueFile<'_>) -> Result<Option<Vec<WrappedKey>>, Error> {
        let kctx = values::kms_context(file.context, file.file_id)?;
        let engine = self.engine;
        let check = |dk: &DataKey| -> Result<(), Error> {
            Ok(ValueKeys::derive(engine, dk, *file.file_id).check_commitment(file.commitment)?)
        };
        let out = self.rewrap_entries(file.keys, &kctx, &check).await?;
        if let Some(keys) = &out {
            for k in keys {
                container::encode_entry(&mut Vec::new(), k)?;
            }
        }
        Ok(out)
    }

    /// Rewraps one field envelope (byte form) sealed under `context`. Returns the new envelope
    /// (only the entry differs), or `None` when it is already at the target.
    ///
    /// # Errors
    /// Parse errors, and as [`Rewrapper::rewrap_preamble`].
    pub async fn rewrap_envelope(&self, sealed: &[u8], context: &EncryptionContext) -> Result<Option<Vec<u8>>, Error> {
        let env = Envelope::parse(sealed)?;
        match self.rewrap_instance(&env, context).await {
            Ok(Some(entry)) => Ok(Some(env.with_entry(&entry)?)),
            Ok(None) => Ok(None),
            Err(e) => {
                self.counters.failed.fetch_add(1, Ordering::Relaxed);
                Err(e)
            }
        }
    }

    /// The new entry for an envelope's data-key instance, or `None` if unchanged.
    async fn rewrap_instance(
        &self,
        env: &Envelope<'_>,
        context: &EncryptionContext,
    ) -> Result<Option<WrappedKey>, Error> {
        let entry = env.entry()?;
        let kctx = envelope::kms_context(context, env.salt)?;
        let engine = self.engine;
        let check = |dk: &DataKey| -> Result<(), Error> {
            // Opening the value checks the commitment first (FORMAT.md §5.5), then the tag.
            FieldKey::for_opening(engine, dk, *env.salt).open(env, context).map(drop).map_err(Error::from)
        };
        match self.rewrap_entry(&entry, &kctx, &check).await? {
            EntryOutcome::Unchanged => Ok(None),
            EntryOutcome::Rewrapped(n) => Ok(Some(n)),
        }
    }

    /// Rewraps a batch of field envelopes (e.g. a database column) with at most `concurrency`
    /// data-key instances in the KMS at a time (items waiting for an instance another item is
    /// already rewrapping do not count; up to `16 × concurrency` items are read ahead). Each item is `(id, envelope bytes, context)`; the result has one `(id, result)` per
    /// item, in completion order: the new envelope, or the **unchanged input** when it was
    /// already at the target, or the item's error (the caller keeps its old envelope: nothing is
    /// lost). Retryable KMS errors are retried per the policy.
    ///
    /// Envelopes of one data-key instance (same salt, commitment, entry and context: sealed
    /// under one cached data key) share a single KMS call and verification (FORMAT.md §5.7). The
    /// instances seen are remembered for the duration of the call, so memory grows with the
    /// number of distinct instances: feed very large columns in chunks.
    pub async fn rewrap_envelopes<Id, I>(&self, items: I, concurrency: usize) -> Vec<(Id, Result<Vec<u8>, Error>)>
    where
        I: IntoIterator<Item = (Id, Vec<u8>, EncryptionContext)>,
    {
        let concurrency = concurrency.max(1);
        let instances: Mutex<HashMap<[u8; 32], InstanceCell>> = Mutex::new(HashMap::new());
        let permits = Semaphore::new(concurrency);
        let (instances, permits) = (&instances, &permits);
        stream::iter(items)
            .map(|(id, bytes, context)| async move {
                let r = self.rewrap_shared(instances, permits, &bytes, &context).await;
                if r.is_err() {
                    self.counters.failed.fetch_add(1, Ordering::Relaxed);
                }
                (id, r.map(|new| new.unwrap_or(bytes)))
            })
            .buffer_unordered(concurrency.saturating_mul(16))
            .collect()
            .await
    }

    async fn rewrap_shared(
        &self,
        instances: &Mutex<HashMap<[u8; 32], InstanceCell>>,
        permits: &Semaphore,
        bytes: &[u8],
        context: &EncryptionContext,
    ) -> Result<Option<Vec<u8>>, Error> {
        let env = Envelope::parse(bytes)?;
        let mut id = Vec::with_capacity(64 + env.entry_bytes.len());
        id.extend_from_slice(env.salt);
        id.extend_from_slice(env.commitment);
        id.extend_from_slice(&(env.entry_bytes.len() as u64).to_be_bytes());
        id.extend_from_slice(env.entry_bytes);
        id.extend_from_slice(&context.canonical_bytes());
        let id = crate::kdf::sha256(&id);
        let cell = lock(instances).entry(id).or_default().clone();
        let mut first = false;
        let shared = cell
            .get_or_init(|| {
                first = true;
                async {
                    // Invariant: the semaphore is never closed.
                    let _permit = permits.acquire().await.expect("semaphore is open");
                    self.rewrap_instance(&env, context).await.map_err(Arc::new)
                }
            })
            .await;
        if !first {
            self.counters.shared.fetch_add(1, Ordering::Relaxed);
        }
        match shared {
            Ok(Some(entry)) => Ok(Some(env.with_entry(entry)?)),
            Ok(None) => Ok(None),
            Err(e) => Err(duplicate(e)),
        }
    }
}

/// [`Verify::Structure`]: the new entry names the destination backend, the target key (when the
/// backend told us its canonical id) and a version not older than the current one (when known),
/// with a blob of plausible size that fits the formats' bounds.
fn check_structure(
    new: &WrappedKey,
    old: &WrappedKey,
    backend: &str,
    info: &KeyInfo,
    moved: bool,
) -> Result<(), Error> {
    let bad = |what: &'static str| Err(Error::Format(FormatError::Malformed(what)));
    if new.backend != backend {
        return bad("rewrapped entry names another backend");
    }
    if new.key_id.is_empty() || (info.canonical && new.key_id != info.key_id) {
        return bad("rewrapped entry names another key");
    }
    if new.key_version.is_empty() {
        return bad("rewrapped entry has no key version");
    }
    if let Some(cur) = &info.current_version
        && !version_at_least(&new.key_version, cur)
    {
        return bad("rewrapped entry is older than the key's current version");
    }
    if !moved && new.key_id == old.key_id && new.key_version == old.key_version {
        return bad("rewrapped entry did not change");
    }
    if new.blob.len() < MIN_PLAUSIBLE_BLOB || new.blob == old.blob {
        return bad("rewrapped entry has an implausible blob");
    }
    container::encode_entry(&mut Vec::new(), new)?;
    Ok(())
}

/// `v >= min` for decimal versions; equality for opaque ones (UUIDs on Alibaba).
fn version_at_least(v: &str, min: &str) -> bool {
    match (v.parse::<u64>(), min.parse::<u64>()) {
        (Ok(a), Ok(b)) => a >= b,
        _ => v == min,
    }
}

/// A copy of an error shared by every item of one data-key instance. I/O errors keep their kind
/// and message.
pub(crate) fn duplicate(e: &Error) -> Error {
    match e {
        Error::Format(f) => Error::Format(duplicate_format(f)),
        Error::Kms(k) => Error::Kms(duplicate_kms(k)),
        Error::NoKeyOpened(a) => Error::NoKeyOpened(
            a.iter()
                .map(|a| KeyAttempt {
                    index: a.index,
                    backend: a.backend.clone(),
                    key_id: a.key_id.clone(),
                    error: duplicate(&a.error),
                })
                .collect(),
        ),
        Error::Io(io) => Error::Io(std::io::Error::new(io.kind(), io.to_string())),
        Error::NoBackend { backend } => Error::NoBackend { backend: backend.clone() },
    }
}

fn duplicate_format(e: &FormatError) -> FormatError {
    use FormatError as F;
    match e {
        F::NotSealed => F::NotSealed,
        F::UnsupportedVersion(v) => F::UnsupportedVersion(*v),
        F::UnsupportedSuite(s) => F::UnsupportedSuite(*s),
        F::Truncated => F::Truncated,
        F::Malformed(m) => F::Malformed(m),
        F::LimitExceeded { what, value, max } => F::LimitExceeded { what, value: *value, max: *max },
        F::InvalidContext(m) => F::InvalidContext(m.clone()),
        F::WrongContext => F::WrongContext,
        F::CommitmentMismatch => F::CommitmentMismatch,
        F::HeaderTampered => F::HeaderTampered,
        F::KeyEntryTampered { index } => F::KeyEntryTampered { index: *index },
        F::ChunkTampered { index } => F::ChunkTampered { index: *index },
        F::TruncatedBody { chunks } => F::TruncatedBody { chunks: *chunks },
        F::TrailingData => F::TrailingData,
        F::MacMismatch => F::MacMismatch,
        F::ValueTampered => F::ValueTampered,
    }
}

fn duplicate_kms(e: &KmsError) -> KmsError {
    use KmsError as K;
    match e {
        K::KeyNotFound { key } => K::KeyNotFound { key: key.clone() },
        K::KeyVersionNotFound { key, version } => K::KeyVersionNotFound { key: key.clone(), version: version.clone() },
        K::KeyDisabled { key } => K::KeyDisabled { key: key.clone() },
        K::KeyPendingDeletion { key } => K::KeyPendingDeletion { key: key.clone() },
        K::KeyVersionBelowMinimum { key, version, min } => {
            K::KeyVersionBelowMinimum { key: key.clone(), version: version.clone(), min: min.clone() }
        }
        K::AccessDenied { message } => K::AccessDenied { message: message.clone() },
        K::WrongContext => K::WrongContext,
        K::InvalidCiphertext => K::InvalidCiphertext,
        K::PlaintextTooLarge { size, limit } => K::PlaintextTooLarge { size: *size, limit: *limit },
        K::Throttled { message } => K::Throttled { message: message.clone() },
        K::Unavailable { message, retryable } => K::Unavailable { message: message.clone(), retryable: *retryable },
        K::InvalidRequest { message } => K::InvalidRequest { message: message.clone() },
        K::AlreadyExists { what } => K::AlreadyExists { what: what.clone() },
        K::Unsupported { operation, backend } => K::Unsupported { operation, backend: backend.clone() },
    }
}

/// Adds a wrapped-key entry for `key` on `destination` to an object whose entries are
/// `entries` (bound by `kctx`), and returns it with whether the data key passed through this
/// process.
///
/// When one of `sources` *is* `destination` (the same object) and holds an entry, the new entry
/// comes from a server-side ReEncrypt of that entry; otherwise the data key is unwrapped with
/// any source, checked against the object's commitment (`check`), and encrypted under `key`.
/// The new entry is then verified per `verify`.
async fn add_entry_inner(
    rw: &Rewrapper,
    sources: &[&dyn Kms],
    entries: &[WrappedKey],
    kctx: &EncryptionContext,
    check: &Check<'_>,
    key: &str,
) -> Result<(WrappedKey, bool), Error> {
    let dest = rw.destination().clone();
    let same = |k: &&dyn Kms| std::ptr::addr_eq(*k as *const dyn Kms, Arc::as_ptr(&dest));
    let server_side =
        sources.iter().copied().find(same).and_then(|k| {
            entries.iter().enumerate().find(|(_, e)| e.backend == k.backend()).map(|(i, e)| (i, e.clone()))
        });
    let info = rw.describe(key).await?;
    if entries.iter().any(|e| e.backend == dest.backend() && e.key_id == info.key_id) {
        return Err(
            KmsError::AlreadyExists { what: format!("an entry for {} key {}", dest.backend(), info.key_id) }.into()
        );
    }
    let (new, moved) = match server_side {
        Some((_, entry)) => (rw.call(|| dest.re_encrypt(&entry, kctx, &info.key_id, kctx)).await?, false),
        None => {
            let (k, _) = kms::unwrap_any(sources, entries, kctx).await?;
            check(&k)?;
            let wrapped = rw.call(|| dest.encrypt(&info.key_id, k.expose_secret(), kctx)).await?;
            drop(k);
            (wrapped, true)
        }
    };
    let placeholder =
        WrappedKey { backend: String::new(), key_id: String::new(), key_version: String::new(), blob: Vec::new() };
    match rw.verify {
        Verify::Decrypt => {
            let k = rw.unwrap_checked(dest.as_ref(), &new, kctx, entries.len()).await?;
            check(&k)?;
        }
        Verify::Structure => check_structure(&new, &placeholder, dest.backend(), &info, true)?,
    }
    rw.counters.rewrapped.fetch_add(1, Ordering::Relaxed);
    Ok((new, moved))
}

/// What to add with [`add_entry_to_preamble`] / [`add_entry_to_value_keys`].
#[derive(Debug)]
pub struct AddEntry<'a> {
    /// Backends that may open the object's existing entries.
    pub sources: &'a [&'a dyn Kms],
    /// Makes the new entry (its destination, or its source when it has none) with its verify
    /// mode and retry policy; its target is ignored.
    pub rewrapper: &'a Rewrapper,
    /// The key (id or alias) to wrap under.
    pub key: &'a str,
}

/// Adds a wrapped-key entry to a container preamble (FORMAT.md §4.4); returns the new preamble
/// and whether the data key passed through this process. An entry for the same backend and key
/// already present is an [`KmsError::AlreadyExists`].
///
/// # Errors
/// As [`kms::unwrap_any`], [`Rewrapper::rewrap_preamble`]; [`FormatError::LimitExceeded`]
/// beyond 16 entries.
pub async fn add_entry_to_preamble(add: &AddEntry<'_>, preamble: &Preamble) -> Result<(Preamble, bool), Error> {
    let kctx = preamble.kms_context();
    let engine = add.rewrapper.engine;
    let check = |dk: &DataKey| -> Result<(), Error> { preamble.open(engine, dk).map(drop).map_err(Error::from) };
    let (entry, moved) = add_entry_inner(add.rewrapper, add.sources, &preamble.entries, &kctx, &check, add.key).await?;
    let mut p = preamble.clone();
    push_unique(&mut p.entries, entry)?;
    p.encode()?;
    Ok((p, moved))
}

/// Adds a wrapped-key entry to a value-level file's keys; returns the new keys and whether the
/// data key passed through this process.
///
/// # Errors
/// As [`add_entry_to_preamble`].
pub async fn add_entry_to_value_keys(
    add: &AddEntry<'_>,
    file: &ValueFile<'_>,
) -> Result<(Vec<WrappedKey>, bool), Error> {
    let kctx = values::kms_context(file.context, file.file_id)?;
    let engine = add.rewrapper.engine;
    let check = |dk: &DataKey| -> Result<(), Error> {
        Ok(ValueKeys::derive(engine, dk, *file.file_id).check_commitment(file.commitment)?)
    };
    let (entry, moved) = add_entry_inner(add.rewrapper, add.sources, file.keys, &kctx, &check, add.key).await?;
    let mut keys = file.keys.to_vec();
    push_unique(&mut keys, entry)?;
    Ok((keys, moved))
}

fn push_unique(entries: &mut Vec<WrappedKey>, entry: WrappedKey) -> Result<(), Error> {
    if entries.iter().any(|e| e.backend == entry.backend && e.key_id == entry.key_id) {
        return Err(
            KmsError::AlreadyExists { what: format!("an entry for {} key {}", entry.backend, entry.key_id) }.into()
        );
    }
    if entries.len() >= container::MAX_ENTRIES {
        return Err(FormatError::LimitExceeded {
            what: "wrapped-key entries",
            value: entries.len() as u64 + 1,
            max: container::MAX_ENTRIES as u64,
        }
        .into());
    }
    container::encode_entry(&mut Vec::new(), &entry)?;
    entries.push(entry);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_compare_numerically_when_decimal() {
        assert!(version_at_least("10", "9"));
        assert!(version_at_least("2", "2"));
        assert!(!version_at_least("1", "2"));
        assert!(version_at_least("abc", "abc"));
        assert!(!version_at_least("abc", "abd"));
    }

    #[test]
    fn duplicated_errors_keep_their_class() {
        let e = Error::Kms(KmsError::Unavailable { message: "down".into(), retryable: true });
        let d = duplicate(&e);
        assert!(d.is_retryable());
        assert_eq!(d.to_string(), e.to_string());
        let e = Error::Format(FormatError::KeyEntryTampered { index: 3 });
        assert!(matches!(duplicate(&e), Error::Format(FormatError::KeyEntryTampered { index: 3 })));
        let e = Error::Io(std::io::Error::new(std::io::ErrorKind::NotFound, "x"));
        assert!(matches!(duplicate(&e), Error::Io(io) if io.kind() == std::io::ErrorKind::NotFound));
    }

    #[test]
    fn structure_check() {
        let old = WrappedKey { backend: "mock".into(), key_id: "k".into(), key_version: "1".into(), blob: vec![1; 60] };
        let info = KeyInfo { key_id: "k".into(), canonical: true, current_version: Some("2".into()) };
        let good = WrappedKey { key_version: "2".into(), blob: vec![2; 60], ..old.clone() };
        assert!(check_structure(&good, &old, "mock", &info, false).is_ok());
        for bad in [
            WrappedKey { backend: "local".into(), ..good.clone() },
            WrappedKey { key_id: "other".into(), ..good.clone() },
            WrappedKey { key_version: "1".into(), ..good.clone() },
            WrappedKey { key_version: String::new(), ..good.clone() },
            WrappedKey { blob: vec![2; 39], ..good.clone() },
            WrappedKey { blob: old.blob.clone(), ..good.clone() },
        ] {
            assert!(check_structure(&bad, &old, "mock", &info, false).is_err(), "{bad:?}");
        }
    }
}
