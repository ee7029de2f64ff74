//! Rewrap: replace the wrapped-key entries of sealed data without touching the data
//! (FORMAT.md §1.3, §4.4, §5.7, §10.5).
//!
//! Wrapped-key entries sit outside everything the data key authenticates and are bound to their
//! object by the KMS encryption context, so moving a data key to the newest version of its KMS
//! key, or to another key, is one `ReEncrypt` per entry under the object's own context. The
//! container body, the sealed values and the field ciphertexts stay byte-identical.
//!
//! **No job may lose an object.** An entry's backend, key id, key version and blob are
//! unauthenticated, so nothing here is decided from them alone:
//!
//! - an entry counts as good only after it unwrapped (the KMS agreeing with its key id and
//!   version) and its data key passed the object's key commitment ([`Verify::Decrypt`]); an entry
//!   whose label already names the target is verified that way, not skipped;
//! - an entry that fails for a reason of its own (an invalid or foreign blob, a label the KMS
//!   contradicts, a data key that fails the commitment: [`crate::entries::is_entry_fault`]) is
//!   *unverifiable*: reported, and kept unless the job was told to drop such entries
//!   ([`Rewrapper::with_drop_unverifiable`]); other failures (denied, throttled, unreachable)
//!   fail the object, which is then left untouched;
//! - entries that end up naming the same key are merged only among verified entries;
//! - a new entry set is returned only if it holds at least one entry verified by this job, so a
//!   caller that writes what it gets can never replace an object by one that does not open.
//!
//! The same holds for [`add_entry_to_preamble`] / [`add_entry_to_value_keys`] and
//! [`remove_entries_from_preamble`] / [`remove_entries_from_value_keys`], which prove that the
//! remaining entries still open the object before they return.
//!
//! A [`Rewrapper`] holds the KMS, the [`Target`], the [`Verify`] mode, the [`Trust`] and a
//! [`RetryPolicy`], and caches key metadata (the current version of each key) for the whole job.
//! It has one method per sealed form: [`Rewrapper::rewrap_preamble`] (container),
//! [`Rewrapper::rewrap_value_keys`] (value-level .env/JSON/YAML metadata),
//! [`Rewrapper::rewrap_envelope`] (one field envelope) and [`Rewrapper::rewrap_envelopes`] (a
//! column of them, with bounded concurrency).
//!
//! **Across backends** ([`Rewrapper::with_destination`]) no KMS can re-encrypt on the server: the
//! data key is decrypted by the source KMS and encrypted by the destination KMS, so it passes
//! through this process (in a zeroizing buffer, wiped after use). Within one backend it never
//! does.
//!
//! **Jobs over many objects**: [`plan::Planner`] decides which rewrapper handles which entries
//! of an object whose entries may belong to several backends (each backend's own, or a move to a
//! destination), from backends a [`plan::Resolver`] opens, and keeps the rewrappers for the whole
//! job; [`breaker::Breaker`] stops a job when the KMS looks down (several objects in a row
//! failed with a retryable error).
//!
//! Nothing here needs a specific async runtime: concurrency comes from `futures-util`'s
//! `buffer_unordered`, and retry delays from a pluggable sleep function (by default a short-lived
//! thread completing a oneshot channel).

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use futures_util::stream::{self, StreamExt};
use tokio::sync::{OnceCell, Semaphore};

use crate::aead::Engine;
use crate::container::{MAX_ENTRIES, Preamble};
use crate::context::EncryptionContext;
use crate::datakey::DataKey;
use crate::entries::{self, Check, Trust, is_entry_fault};
use crate::envelope::{self, Envelope, FieldKey};
use crate::error::{Error, FormatError, KeyAttempt, KmsError};
use crate::kms::{Kms, WrappedKey};

pub use crate::retry::{RetryPolicy, SleepFn};

pub mod breaker;
pub mod plan;

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

/// How entries are checked.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Verify {
    /// Unwrap the entry and check the object's key commitment with the data key it yields: the
    /// only check that proves an entry opens the object; needs a principal allowed to decrypt.
    #[default]
    Decrypt,
    /// For principals allowed only to ReEncrypt: every entry of the backend is re-encrypted
    /// (labels are never trusted), and the new entry must name the expected backend, key and
    /// version and carry a plausible blob. The KMS authenticated the old blob under the object's
    /// own context, but the commitment is not checked, so in this mode each entry is replaced
    /// only by its own re-encryption: nothing is merged or dropped.
    Structure,
}

/// Counters of a [`Rewrapper`] (all of its calls so far).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RewrapStats {
    /// Entries replaced by a new, verified entry.
    pub rewrapped: u64,
    /// Entries verified and already at the target (no KMS write).
    pub already_at_target: u64,
    /// Entries that could not be verified (kept unless dropped).
    pub unverifiable: u64,
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
    unverifiable: AtomicU64,
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
type InstanceCell = Arc<OnceCell<Result<Option<WrappedKey>, Error>>>;

/// Where an entry stands against a [`Rewrapper`]'s target, from its (unauthenticated) label and
/// a read-only describe call (see [`Rewrapper::status`]): a plan for dry runs, never a decision.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum EntryStatus {
    /// The entry belongs to another backend: this rewrapper leaves it alone.
    OtherBackend,
    /// Its label says it is at the target (a real run verifies it).
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

/// What a job did with one entry of an object.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum EntryResult {
    /// Another backend's entry: left as it is, not examined.
    OtherBackend,
    /// Outside the keys the job trusts ([`Trust`]): left as it is, not sent to any KMS.
    NotAllowed,
    /// Verified and already at the target: kept.
    AtTarget,
    /// Replaced by a new entry, verified (or, with [`Verify::Structure`], checked).
    Rewrapped {
        /// The new entry's key id.
        key_id: String,
        /// The new entry's key version.
        key_version: String,
    },
    /// A new entry added by the job.
    Added,
    /// Removed on request (the remaining entries were proven to open the object).
    Removed,
    /// Verified, but another verified entry of the same key was kept: dropped.
    Merged,
    /// Could not be verified for a reason of its own (see [`entries::is_entry_fault`]).
    Unverifiable {
        /// Why (an error message; never secret).
        reason: String,
        /// Whether it was dropped ([`Rewrapper::with_drop_unverifiable`]); else kept as it was.
        dropped: bool,
    },
}

/// One entry of an object and what the job did with it. `backend`, `key_id` and `key_version`
/// are the entry's label as it was read (or, for [`EntryResult::Added`], the new entry's).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EntryReport {
    /// Index of the entry in the object as read (`None` for an added entry).
    pub index: Option<usize>,
    /// Backend name.
    pub backend: String,
    /// Key id.
    pub key_id: String,
    /// Key version.
    pub key_version: String,
    /// What happened.
    pub result: EntryResult,
}

impl EntryReport {
    fn of(index: Option<usize>, e: &WrappedKey, result: EntryResult) -> Self {
        Self { index, backend: e.backend.clone(), key_id: e.key_id.clone(), key_version: e.key_version.clone(), result }
    }
}

/// The result of a job on one object.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Outcome {
    /// The new entries, or `None` when the object does not change. When `Some`, the set holds
    /// at least one entry that this job proved to open the object.
    pub entries: Option<Vec<WrappedKey>>,
    /// One line per entry (and per added entry).
    pub report: Vec<EntryReport>,
    /// Whether a data key passed through this process (a move across backends).
    pub moved: bool,
}

impl Outcome {
    /// The entries that could not be verified.
    pub fn unverifiable(&self) -> impl Iterator<Item = &EntryReport> {
        self.report.iter().filter(|r| matches!(r.result, EntryResult::Unverifiable { .. }))
    }
}

/// The object a job works on: its KMS context, the check a data key must pass, and whether a
/// wrong context means the stored object was altered (containers and value-level files, whose
/// context is computed from stored bytes) or may be the caller's (field envelopes).
struct Object<'a> {
    kctx: &'a EncryptionContext,
    check: &'a Check<'a>,
    bound: bool,
}

/// One entry after [`Rewrapper::rewrap_entry`].
enum One {
    AtTarget,
    Rewrapped(WrappedKey),
    Unverifiable(Error),
}

/// One entry of the new set being built.
struct Slot {
    entry: WrappedKey,
    verified: bool,
    keep: bool,
    error: Option<Error>,
    report: EntryReport,
}

/// Rewraps wrapped-key entries with one KMS. See the [module documentation](self).
pub struct Rewrapper {
    source: Arc<dyn Kms>,
    destination: Option<Arc<dyn Kms>>,
    target: Target,
    verify: Verify,
    trust: Trust,
    drop_unverifiable: bool,
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
            .field("trust", &self.trust)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

/// Recovers a poisoned mutex: the maps behind it hold `Arc`s and stay consistent.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A value-level sealed file's metadata, as far as a rewrap needs it (FORMAT.md §10.4).
pub use crate::values::FileRef as ValueFile;

/// Maps the errors of one entry's KMS call: an invalid blob is the entry's fault
/// ([`FormatError::KeyEntryTampered`]); a wrong context on a bound object means it was altered.
fn entry_error(e: Error, index: usize, bound: bool) -> Error {
    match e {
        Error::Kms(KmsError::InvalidCiphertext) => FormatError::KeyEntryTampered { index }.into(),
        Error::Kms(KmsError::WrongContext) if bound => FormatError::HeaderTampered.into(),
        e => e,
    }
}

impl Rewrapper {
    /// Rewraps the entries of `kms`'s backend to `target` on the same backend (ReEncrypt: the
    /// data key never leaves the KMS). Verification: [`Verify::Decrypt`]; trust:
    /// [`Trust::Discovery`]; retries: [`RetryPolicy::default`].
    pub fn new(kms: Arc<dyn Kms>, target: Target) -> Self {
        Self {
            source: kms,
            destination: None,
            target,
            verify: Verify::default(),
            trust: Trust::default(),
            drop_unverifiable: false,
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

    /// Sets which entries the job may send to a KMS; the others are left as they are.
    pub fn with_trust(mut self, trust: Trust) -> Self {
        self.trust = trust;
        self
    }

    /// Drops unverifiable entries instead of keeping them (the new set must still hold a
    /// verified entry).
    pub fn with_drop_unverifiable(mut self, drop: bool) -> Self {
        self.drop_unverifiable = drop;
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

    /// The trust.
    pub fn trust(&self) -> &Trust {
        &self.trust
    }

    /// Counters so far.
    pub fn stats(&self) -> RewrapStats {
        let c = &self.counters;
        RewrapStats {
            rewrapped: c.rewrapped.load(Ordering::Relaxed),
            already_at_target: c.already_at_target.load(Ordering::Relaxed),
            unverifiable: c.unverifiable.load(Ordering::Relaxed),
            retries: c.retries.load(Ordering::Relaxed),
            failed: c.failed.load(Ordering::Relaxed),
            shared: c.shared.load(Ordering::Relaxed),
        }
    }

    /// Runs a KMS call with the retry policy.
    async fn call<T, E, F, Fut>(&self, mut call: F) -> Result<T, Error>
    where
        E: Into<Error>,
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let mut attempt = 0u32;
        loop {
            match call().await.map_err(Into::into) {
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
                    return Ok::<_, Error>(KeyInfo {
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

    /// Where `entry` stands against the target, from its label and a read-only describe call
    /// (once per key per job), never writing: for dry runs and reports. A real run does not
    /// trust the label: it verifies the entry.
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

    /// Whether `entry`'s label says it is already where the target says.
    fn at_target(&self, entry: &WrappedKey, info: &KeyInfo) -> bool {
        entry.backend == self.destination().backend()
            && entry.key_id == info.key_id
            && info.current_version.as_deref() == Some(entry.key_version.as_str())
    }

    /// Unwraps `entry` with `kms` (with retries) and runs the object's check on the data key.
    async fn unwrap_checked(
        &self,
        kms: &dyn Kms,
        entry: &WrappedKey,
        index: usize,
        obj: &Object<'_>,
    ) -> Result<DataKey, Error> {
        let dk = self
            .call(|| entries::unwrap_one(kms, entry, obj.kctx, index))
            .await
            .map_err(|e| entry_error(e, index, obj.bound))?;
        (obj.check)(&dk)?;
        Ok(dk)
    }

    /// Verifies one entry: `Ok(Ok(()))` when it opens the object, `Ok(Err(_))` when it fails for
    /// a reason of its own, `Err(_)` for any other failure (the object is then left alone).
    async fn verify_entry(
        &self,
        kms: &dyn Kms,
        entry: &WrappedKey,
        index: usize,
        obj: &Object<'_>,
    ) -> Result<Result<(), Error>, Error> {
        match self.unwrap_checked(kms, entry, index, obj).await {
            Ok(_) => Ok(Ok(())),
            Err(e) if is_entry_fault(&e) => Ok(Err(e)),
            Err(e) => Err(e),
        }
    }

    /// Checks a new entry (made by this job) per the verification mode.
    async fn verify_new(
        &self,
        new: &WrappedKey,
        old: Option<&WrappedKey>,
        info: &KeyInfo,
        index: usize,
        obj: &Object<'_>,
    ) -> Result<Result<(), Error>, Error> {
        let dest = self.destination();
        match self.verify {
            Verify::Decrypt => self.verify_entry(dest.as_ref(), new, index, obj).await,
            Verify::Structure => {
                check_structure(new, old, dest.backend(), info, self.destination.is_some())?;
                Ok(Ok(()))
            }
        }
    }

    /// Takes one entry of this rewrapper's backend towards the target.
    async fn rewrap_entry(&self, entry: &WrappedKey, index: usize, obj: &Object<'_>) -> Result<One, Error> {
        if self.destination.is_some() && self.target == Target::Latest {
            return Err(KmsError::InvalidRequest {
                message: "a move to another backend needs a destination key, not `latest`".into(),
            }
            .into());
        }
        let info = self.key_info(entry).await?;
        if self.verify == Verify::Decrypt && self.at_target(entry, &info) {
            // The label says "at target": prove it before keeping the entry as it is.
            return Ok(match self.verify_entry(self.source.as_ref(), entry, index, obj).await? {
                Ok(()) => One::AtTarget,
                Err(e) => One::Unverifiable(e),
            });
        }
        let made = match &self.destination {
            None => {
                let kms = self.source.as_ref();
                self.call(|| kms.re_encrypt(entry, obj.kctx, &info.key_id, obj.kctx))
                    .await
                    .map_err(|e| entry_error(e, index, obj.bound))
            }
            Some(dest) => match self.unwrap_checked(self.source.as_ref(), entry, index, obj).await {
                // Across backends the data key passes through this process: it was checked
                // against the object's commitment before it is handed to another KMS.
                Ok(dk) => self.call(|| dest.encrypt(&info.key_id, dk.expose_secret(), obj.kctx)).await,
                Err(e) => Err(e),
            },
        };
        let new = match made {
            Ok(n) => n,
            Err(e) if is_entry_fault(&e) => return Ok(One::Unverifiable(e)),
            Err(e) => return Err(e),
        };
        entries::validate(&new)?;
        let same_label =
            new.backend == entry.backend && new.key_id == entry.key_id && new.key_version == entry.key_version;
        match self.verify_new(&new, (!same_label).then_some(entry), &info, index, obj).await? {
            // The KMS had nothing newer (a backend without a key manager to ask beforehand): the
            // old entry is kept, now proven by its re-encryption.
            Ok(()) if same_label => Ok(One::AtTarget),
            Ok(()) => Ok(One::Rewrapped(new)),
            // The old blob re-encrypted fine, but not to the object's data key.
            Err(e) => Ok(One::Unverifiable(e)),
        }
    }

    /// Rewraps `entries` of one object and assembles the new set (see the module docs).
    async fn rewrap_entries(&self, entries: &[WrappedKey], obj: &Object<'_>) -> Result<Outcome, Error> {
        let mut slots = Vec::with_capacity(entries.len());
        for (index, e) in entries.iter().enumerate() {
            let slot = |result, verified| Slot {
                entry: e.clone(),
                verified,
                keep: true,
                error: None,
                report: EntryReport::of(Some(index), e, result),
            };
            if e.backend != self.source.backend() {
                slots.push(slot(EntryResult::OtherBackend, false));
                continue;
            }
            if !self.trust.permits(e) {
                slots.push(slot(EntryResult::NotAllowed, false));
                continue;
            }
            match self.rewrap_entry(e, index, obj).await {
                Ok(One::AtTarget) => {
                    self.counters.already_at_target.fetch_add(1, Ordering::Relaxed);
                    slots.push(slot(EntryResult::AtTarget, true));
                }
                Ok(One::Rewrapped(new)) => {
                    self.counters.rewrapped.fetch_add(1, Ordering::Relaxed);
                    let result =
                        EntryResult::Rewrapped { key_id: new.key_id.clone(), key_version: new.key_version.clone() };
                    slots.push(Slot { entry: new, ..slot(result, true) });
                }
                Ok(One::Unverifiable(err)) => {
                    self.counters.unverifiable.fetch_add(1, Ordering::Relaxed);
                    let result = EntryResult::Unverifiable { reason: err.to_string(), dropped: self.drop_unverifiable };
                    slots.push(Slot { keep: !self.drop_unverifiable, error: Some(err), ..slot(result, false) });
                }
                Err(err) => return Err(err),
            }
        }
        self.assemble(slots)
    }

    /// Merges verified duplicates and checks the invariant: a changed set holds at least one
    /// entry this job verified; an object none of whose entries this job could examine or verify
    /// is an error.
    fn assemble(&self, mut slots: Vec<Slot>) -> Result<Outcome, Error> {
        if self.verify == Verify::Decrypt {
            let mut seen = HashSet::new();
            for s in slots.iter_mut().filter(|s| s.verified) {
                if !seen.insert((s.entry.backend.clone(), s.entry.key_id.clone())) {
                    s.keep = false;
                    s.report.result = EntryResult::Merged;
                }
            }
        }
        let examined_none_verified = !slots.iter().any(|s| s.verified)
            && slots.iter().all(|s| matches!(s.report.result, EntryResult::Unverifiable { .. }));
        let changed = slots.iter().any(|s| !s.keep || matches!(s.report.result, EntryResult::Rewrapped { .. }));
        if examined_none_verified || (changed && !slots.iter().any(|s| s.keep && s.verified)) {
            return Err(no_verified(slots));
        }
        let report = slots.iter().map(|s| s.report.clone()).collect();
        let entries = changed.then(|| slots.into_iter().filter(|s| s.keep).map(|s| s.entry).collect());
        Ok(Outcome { entries, report, moved: changed && self.destination.is_some() })
    }

    /// Rewraps a container's entries. `Outcome::entries` replaces the preamble's entries; the
    /// header, commitment and header MAC are unchanged, so the body stays valid byte for byte.
    ///
    /// # Errors
    /// [`KmsError`]s (after retries); the errors of the entries when none could be verified;
    /// [`FormatError`] if a new entry violates a bound.
    pub async fn rewrap_preamble(&self, preamble: &Preamble) -> Result<Outcome, Error> {
        let kctx = preamble.kms_context();
        let check = preamble.check(self.engine);
        let out = self
            .rewrap_entries(&preamble.entries, &Object { kctx: &kctx, check: &check, bound: true })
            .await
            .and_then(|out| {
                if let Some(entries) = &out.entries {
                    Preamble { entries: entries.clone(), ..preamble.clone() }.encode()?;
                }
                Ok(out)
            });
        self.count(out)
    }

    fn count<T>(&self, r: Result<T, Error>) -> Result<T, Error> {
        if r.is_err() {
            self.counters.failed.fetch_add(1, Ordering::Relaxed);
        }
        r
    }

    /// Rewraps a value-level file's `keys` (FORMAT.md §10.5: no value and no MAC changes).
    ///
    /// # Errors
    /// As [`Rewrapper::rewrap_preamble`].
    pub async fn rewrap_value_keys(&self, file: &ValueFile<'_>) -> Result<Outcome, Error> {
        let kctx = file.kms_context()?;
        let check = file.check(self.engine);
        let out = self.rewrap_entries(file.keys, &Object { kctx: &kctx, check: &check, bound: true }).await;
        self.count(out)
    }

    /// Rewraps one field envelope (byte form) sealed under `context`. Returns the new envelope
    /// (only the entry differs), or `None` when it is verified and already at the target.
    ///
    /// # Errors
    /// Parse errors, and as [`Rewrapper::rewrap_preamble`].
    pub async fn rewrap_envelope(&self, sealed: &[u8], context: &EncryptionContext) -> Result<Option<Vec<u8>>, Error> {
        let env = Envelope::parse(sealed)?;
        let out = match self.rewrap_instance(&env, context).await {
            Ok(Some(entry)) => env.with_entry(&entry).map(Some).map_err(Error::from),
            Ok(None) => Ok(None),
            Err(e) => Err(e),
        };
        self.count(out)
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
        let out = self
            .rewrap_entries(std::slice::from_ref(&entry), &Object { kctx: &kctx, check: &check, bound: false })
            .await?;
        Ok(out.entries.and_then(|mut e| e.pop()))
    }

    /// Rewraps a batch of field envelopes (e.g. a database column) with at most `concurrency`
    /// data-key instances in the KMS at a time (items waiting for an instance another item is
    /// already rewrapping do not count; up to `16 × concurrency` items are read ahead). Each
    /// item is `(id, envelope bytes, context)`; the result has one `(id, result)` per item, in
    /// completion order: the new envelope, or the **unchanged input** when it was verified and
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
                    self.rewrap_instance(&env, context).await
                }
            })
            .await;
        if !first {
            self.counters.shared.fetch_add(1, Ordering::Relaxed);
        }
        match shared {
            Ok(Some(entry)) => Ok(Some(env.with_entry(entry)?)),
            Ok(None) => Ok(None),
            Err(e) => Err(e.clone()),
        }
    }
}

/// The error when no entry of an object could be verified: each entry's failure.
fn no_verified(slots: Vec<Slot>) -> Error {
    let mut attempts: Vec<KeyAttempt> = slots
        .into_iter()
        .filter_map(|s| {
            Some(KeyAttempt {
                index: s.report.index.unwrap_or(0),
                backend: s.entry.backend,
                key_id: s.entry.key_id,
                error: s.error?,
            })
        })
        .collect();
    if attempts.len() == 1 {
        return attempts.pop().map(|a| a.error).unwrap_or(Error::NoKeyOpened(Vec::new()));
    }
    Error::NoKeyOpened(attempts)
}

/// [`Verify::Structure`]: the new entry names the destination backend, the target key (when the
/// backend told us its canonical id) and a version not older than the current one (when known),
/// with a blob of plausible size that fits the formats' bounds. `old` is the entry it replaces
/// (none when it is added).
fn check_structure(
    new: &WrappedKey,
    old: Option<&WrappedKey>,
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
    if let Some(old) = old {
        if !moved && new.key_id == old.key_id && new.key_version == old.key_version {
            return bad("rewrapped entry did not change");
        }
        if new.blob == old.blob {
            return bad("rewrapped entry has an implausible blob");
        }
    }
    if new.blob.len() < MIN_PLAUSIBLE_BLOB {
        return bad("rewrapped entry has an implausible blob");
    }
    entries::validate(new)?;
    Ok(())
}

/// `v >= min` for decimal versions; equality for opaque ones (UUIDs on Alibaba).
fn version_at_least(v: &str, min: &str) -> bool {
    match (v.parse::<u64>(), min.parse::<u64>()) {
        (Ok(a), Ok(b)) => a >= b,
        _ => v == min,
    }
}

/// What to add with [`add_entry_to_preamble`] / [`add_entry_to_value_keys`].
#[derive(Debug)]
pub struct AddEntry<'a> {
    /// Backends that may open the object's existing entries.
    pub sources: &'a [&'a dyn Kms],
    /// Makes the new entry (its destination, or its source when it has none) with its verify
    /// mode, trust, retry policy and drop setting; its target is ignored.
    pub rewrapper: &'a Rewrapper,
    /// The key (id or alias) to wrap under.
    pub key: &'a str,
}

/// Adds a wrapped-key entry for `add.key` to an object.
///
/// An existing entry that names the key counts as present only once it is verified; one that
/// cannot be verified is reported (and kept, unless the rewrapper drops such entries) and the
/// new entry is added beside it. The new entry comes from a server-side ReEncrypt of an entry on
/// the destination instance when one verifies, else the data key is opened through the checked
/// unwrap (commitment verified) and encrypted under the key: it then passes through this process.
async fn add_entry_inner(add: &AddEntry<'_>, entries: &[WrappedKey], obj: &Object<'_>) -> Result<Outcome, Error> {
    let rw = add.rewrapper;
    let dest = rw.destination().clone();
    let info = rw.describe(add.key).await?;
    let mut slots: Vec<Slot> = entries
        .iter()
        .enumerate()
        .map(|(i, e)| Slot {
            entry: e.clone(),
            verified: false,
            keep: true,
            error: None,
            report: EntryReport::of(Some(i), e, EntryResult::OtherBackend),
        })
        .collect();
    for (i, slot) in slots.iter_mut().enumerate() {
        let e = &entries[i];
        if e.backend != dest.backend() || e.key_id != info.key_id {
            continue;
        }
        if rw.verify == Verify::Structure {
            // Nothing can be verified without Decrypt: the label is all there is.
            slot.report.result = EntryResult::AtTarget;
            return Ok(Outcome { entries: None, report: slots.into_iter().map(|s| s.report).collect(), moved: false });
        }
        match rw.verify_entry(dest.as_ref(), e, i, obj).await? {
            Ok(()) => {
                slot.report.result = EntryResult::AtTarget;
                rw.counters.already_at_target.fetch_add(1, Ordering::Relaxed);
                return Ok(Outcome {
                    entries: None,
                    report: slots.into_iter().map(|s| s.report).collect(),
                    moved: false,
                });
            }
            Err(err) => {
                rw.counters.unverifiable.fetch_add(1, Ordering::Relaxed);
                slot.report.result =
                    EntryResult::Unverifiable { reason: err.to_string(), dropped: rw.drop_unverifiable };
                slot.keep = !rw.drop_unverifiable;
                slot.error = Some(err);
            }
        }
    }
    // Server-side first: a ReEncrypt on the destination instance never exposes the data key.
    let same = |k: &&dyn Kms| std::ptr::addr_eq(*k as *const dyn Kms, Arc::as_ptr(&dest));
    let mut made = None;
    if add.sources.iter().any(same) {
        for (i, e) in entries.iter().enumerate().filter(|(_, e)| e.backend == dest.backend() && rw.trust.permits(e)) {
            let n = match rw.call(|| dest.re_encrypt(e, obj.kctx, &info.key_id, obj.kctx)).await {
                Ok(n) => n,
                Err(err) if is_entry_fault(&entry_error(err.clone(), i, obj.bound)) => continue,
                Err(err) => return Err(err),
            };
            entries::validate(&n)?;
            if rw.verify_new(&n, None, &info, entries.len(), obj).await?.is_ok() {
                made = Some((n, false));
                break;
            }
        }
    }
    let (new, moved) = match made {
        Some(m) => m,
        None => {
            let check = obj.check;
            let (dk, _) = entries::unwrap_verified(add.sources, entries, obj.kctx, &rw.trust, check).await?;
            let n = rw.call(|| dest.encrypt(&info.key_id, dk.expose_secret(), obj.kctx)).await?;
            drop(dk);
            entries::validate(&n)?;
            rw.verify_new(&n, None, &info, entries.len(), obj).await??;
            (n, true)
        }
    };
    let kept = slots.iter().filter(|s| s.keep).count();
    if kept >= MAX_ENTRIES {
        return Err(FormatError::LimitExceeded {
            what: "wrapped-key entries",
            value: kept as u64 + 1,
            max: MAX_ENTRIES as u64,
        }
        .into());
    }
    rw.counters.rewrapped.fetch_add(1, Ordering::Relaxed);
    let mut report: Vec<EntryReport> = slots.iter().map(|s| s.report.clone()).collect();
    report.push(EntryReport::of(None, &new, EntryResult::Added));
    let mut out: Vec<WrappedKey> = slots.into_iter().filter(|s| s.keep).map(|s| s.entry).collect();
    out.push(new);
    Ok(Outcome { entries: Some(out), report, moved })
}

/// Adds a wrapped-key entry to a container preamble (FORMAT.md §4.4). `Outcome::entries` is
/// `None` when a verified entry for the key is already there.
///
/// # Errors
/// As [`entries::unwrap_verified`], [`Rewrapper::rewrap_preamble`];
/// [`FormatError::LimitExceeded`] beyond 16 entries.
pub async fn add_entry_to_preamble(add: &AddEntry<'_>, preamble: &Preamble) -> Result<Outcome, Error> {
    let kctx = preamble.kms_context();
    let check = preamble.check(add.rewrapper.engine);
    let out = add_entry_inner(add, &preamble.entries, &Object { kctx: &kctx, check: &check, bound: true }).await?;
    if let Some(entries) = &out.entries {
        Preamble { entries: entries.clone(), ..preamble.clone() }.encode()?;
    }
    Ok(out)
}

/// Adds a wrapped-key entry to a value-level file's keys, as [`add_entry_to_preamble`].
///
/// # Errors
/// As [`add_entry_to_preamble`].
pub async fn add_entry_to_value_keys(add: &AddEntry<'_>, file: &ValueFile<'_>) -> Result<Outcome, Error> {
    let kctx = file.kms_context()?;
    let check = file.check(add.rewrapper.engine);
    add_entry_inner(add, file.keys, &Object { kctx: &kctx, check: &check, bound: true }).await
}

/// What to remove with [`remove_entries_from_preamble`] / [`remove_entries_from_value_keys`].
#[derive(Clone, Copy)]
pub struct RemoveEntries<'a> {
    /// Backends that may open the remaining entries (one of them must).
    pub sources: &'a [&'a dyn Kms],
    /// Which entries the proof may use.
    pub trust: &'a Trust,
    /// The AEAD engine used to check the commitment.
    pub engine: Engine,
    /// Which entries to remove.
    pub matches: &'a (dyn Fn(&WrappedKey) -> bool + Sync),
}

impl fmt::Debug for RemoveEntries<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RemoveEntries").field("trust", self.trust).finish_non_exhaustive()
    }
}

async fn remove_inner(rm: &RemoveEntries<'_>, entries: &[WrappedKey], obj: &Object<'_>) -> Result<Outcome, Error> {
    let mut report = Vec::with_capacity(entries.len());
    let mut kept = Vec::new();
    for (i, e) in entries.iter().enumerate() {
        if (rm.matches)(e) {
            report.push(EntryReport::of(Some(i), e, EntryResult::Removed));
        } else {
            report.push(EntryReport::of(Some(i), e, EntryResult::AtTarget));
            kept.push(e.clone());
        }
    }
    if kept.len() == entries.len() {
        return Ok(Outcome { entries: None, report, moved: false });
    }
    if kept.is_empty() {
        return Err(KmsError::InvalidRequest {
            message: "refusing to remove the last wrapped-key entry: the data could not be opened any more".into(),
        }
        .into());
    }
    // The proof: one remaining entry opens the object.
    entries::unwrap_verified(rm.sources, &kept, obj.kctx, rm.trust, obj.check).await?;
    Ok(Outcome { entries: Some(kept), report, moved: false })
}

/// Removes the entries `rm.matches` selects from a container preamble, after proving that one
/// of the remaining entries unwraps and passes the key commitment (FORMAT.md §4.4).
///
/// # Errors
/// [`KmsError::InvalidRequest`] if no entry would remain; the errors of
/// [`entries::unwrap_verified`] when no remaining entry opens the file (nothing is removed).
pub async fn remove_entries_from_preamble(rm: &RemoveEntries<'_>, preamble: &Preamble) -> Result<Outcome, Error> {
    let kctx = preamble.kms_context();
    let check = preamble.check(rm.engine);
    remove_inner(rm, &preamble.entries, &Object { kctx: &kctx, check: &check, bound: true }).await
}

/// As [`remove_entries_from_preamble`], for a value-level file. Removing an entry does not
/// revoke it (its holder may keep the data key from an old copy): re-key the file as well
/// (`envseal_stores::Unlocked::rekey`).
///
/// # Errors
/// As [`remove_entries_from_preamble`].
pub async fn remove_entries_from_value_keys(rm: &RemoveEntries<'_>, file: &ValueFile<'_>) -> Result<Outcome, Error> {
    let kctx = file.kms_context()?;
    let check = file.check(rm.engine);
    remove_inner(rm, file.keys, &Object { kctx: &kctx, check: &check, bound: true }).await
}

/// One worker's part of a rewrap job split across `count` workers (`envseal rewrap --shard
/// I/N`, e.g. a Kubernetes indexed Job or a CI matrix): every object belongs to exactly one
/// shard, decided by the SHA-256 of its name (its path, as every worker names it), so workers
/// given the same set of objects take disjoint parts that together cover all of it, without
/// talking to each other. Shards are numbered from 0.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shard {
    index: u32,
    count: u32,
}

/// A shard specification that is not `I/N` with `0 <= I < N`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid shard {0:?}: expected I/N with 0 <= I < N (e.g. 0/4 ... 3/4)")]
pub struct ShardError(String);

impl Shard {
    /// Shard `index` of `count`.
    ///
    /// # Errors
    /// [`ShardError`] unless `index < count`.
    pub fn new(index: u32, count: u32) -> Result<Shard, ShardError> {
        if index < count { Ok(Shard { index, count }) } else { Err(ShardError(format!("{index}/{count}"))) }
    }

    /// Parses `I/N`.
    ///
    /// # Errors
    /// [`ShardError`].
    pub fn parse(spec: &str) -> Result<Shard, ShardError> {
        let bad = || ShardError(spec.to_owned());
        let (i, n) = spec.split_once('/').ok_or_else(bad)?;
        let digits = |x: &str| !x.is_empty() && x.len() <= 9 && x.bytes().all(|b| b.is_ascii_digit());
        if !digits(i) || !digits(n) {
            return Err(bad());
        }
        Shard::new(i.parse().map_err(|_| bad())?, n.parse().map_err(|_| bad())?).map_err(|_| bad())
    }

    /// This shard's number, from 0.
    pub fn index(&self) -> u32 {
        self.index
    }

    /// How many shards there are.
    pub fn count(&self) -> u32 {
        self.count
    }

    /// Whether the object named `name` is this shard's.
    pub fn owns(&self, name: &[u8]) -> bool {
        let h = crate::kdf::sha256(name);
        let mut first = [0u8; 8];
        first.copy_from_slice(&h[..8]);
        u64::from_be_bytes(first) % u64::from(self.count) == u64::from(self.index)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_partition_every_name_once() {
        let names: Vec<String> = (0..1000).map(|i| format!("secrets/app-{i}.env")).collect();
        let shards: Vec<Shard> = (0..4).map(|i| Shard::parse(&format!("{i}/4")).unwrap()).collect();
        let mut sizes = [0usize; 4];
        for n in &names {
            let owners: Vec<usize> = (0..4).filter(|&i| shards[i].owns(n.as_bytes())).collect();
            assert_eq!(owners.len(), 1, "{n}: {owners:?}");
            sizes[owners[0]] += 1;
        }
        assert!(sizes.iter().all(|&s| (200..=300).contains(&s)), "{sizes:?}");
        assert!(Shard::parse("0/1").unwrap().owns(b"anything"));
        for bad in ["", "4/4", "1", "-1/4", "1/0", "a/b", "1/4/5", " 1/4", "1/+4"] {
            assert!(Shard::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn versions_compare_numerically_when_decimal() {
        assert!(version_at_least("10", "9"));
        assert!(version_at_least("2", "2"));
        assert!(!version_at_least("1", "2"));
        assert!(version_at_least("abc", "abc"));
        assert!(!version_at_least("abc", "abd"));
    }

    #[test]
    fn cloned_errors_keep_their_class() {
        let e = Error::Kms(KmsError::Unavailable { message: "down".into(), retryable: true });
        let d = e.clone();
        assert!(d.is_retryable());
        assert_eq!(d.to_string(), e.to_string());
        let e = Error::from(std::io::Error::new(std::io::ErrorKind::NotFound, "x"));
        assert!(matches!(e.clone(), Error::Io(io) if io.kind() == std::io::ErrorKind::NotFound));
    }

    #[test]
    fn structure_check() {
        let old = WrappedKey { backend: "mock".into(), key_id: "k".into(), key_version: "1".into(), blob: vec![1; 60] };
        let info = KeyInfo { key_id: "k".into(), canonical: true, current_version: Some("2".into()) };
        let good = WrappedKey { key_version: "2".into(), blob: vec![2; 60], ..old.clone() };
        assert!(check_structure(&good, Some(&old), "mock", &info, false).is_ok());
        assert!(check_structure(&good, None, "mock", &info, true).is_ok());
        for bad in [
            WrappedKey { backend: "local".into(), ..good.clone() },
            WrappedKey { key_id: "other".into(), ..good.clone() },
            WrappedKey { key_version: "1".into(), ..good.clone() },
            WrappedKey { key_version: String::new(), ..good.clone() },
            WrappedKey { blob: vec![2; 39], ..good.clone() },
            WrappedKey { blob: old.blob.clone(), ..good.clone() },
        ] {
            assert!(check_structure(&bad, Some(&old), "mock", &info, false).is_err(), "{bad:?}");
        }
    }
}
