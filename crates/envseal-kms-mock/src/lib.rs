#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod factory;
pub use factory::{MemFactory, SCHEME};
mod blob;
mod calls;
#[cfg(feature = "faults")]
mod faults;
mod rng;

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use envseal_core::kms::{
    Alias, Decrypted, GeneratedDataKey, KeyManager, KeyMetadata, KeySpec, KeyState, KeyUpdate, KeyVersionInfo, Kms,
    MAX_DELETION_DAYS, MAX_DIRECT_ENCRYPT, MIN_DELETION_DAYS, ProtectionLevel, WrappedKey,
};
use envseal_core::{DataKey, EncryptionContext, KmsError, SecretBytes};
use zeroize::Zeroizing;

pub use crate::calls::{CallCounts, Op};
#[cfg(feature = "faults")]
pub use crate::faults::Fault;

use crate::blob::VersionKeys;
use crate::rng::Rng;

/// The backend name, as recorded in [`WrappedKey::backend`].
pub const BACKEND: &str = "mock";
/// The alias [`MockKms::alias_default`] sets (and the `mem` backend's first key gets).
pub const DEFAULT_ALIAS: &str = "alias/default";

/// Every alias starts with this prefix.
pub const ALIAS_PREFIX: &str = "alias/";

/// Longest alias, prefix included (as on AWS KMS).
const MAX_ALIAS_LEN: usize = 256;

/// An in-memory HSM mock implementing [`Kms`] and [`KeyManager`], with call counters and (with
/// the `faults` feature) fault injection, permission switches and latency. See the crate
/// documentation.
pub struct MockKms {
    state: Mutex<State>,
    control: Mutex<Control>,
}

/// Keys, aliases and the random source, behind one lock.
struct State {
    rng: Rng,
    ring: Keyring,
}

#[derive(Default)]
struct Keyring {
    keys: BTreeMap<String, Key>,
    /// Alias name to canonical key id.
    aliases: BTreeMap<String, String>,
}

struct Key {
    id: String,
    description: String,
    protection_level: ProtectionLevel,
    tags: BTreeMap<String, String>,
    created_at: SystemTime,
    state: KeyState,
    deletion_date: Option<SystemTime>,
    /// Version `n` is `versions[n - 1]`.
    versions: Vec<Version>,
    min_decryption_version: Option<u32>,
    /// Automatic rotation period (applied by whoever sweeps due keys: `envseal kms serve`).
    rotation_period: Option<Duration>,
}

struct Version {
    keys: VersionKeys,
    created_at: SystemTime,
}

impl Key {
    /// The version used for new wraps (the newest).
    fn current(&self) -> (u32, &Version) {
        // Invariant: a key is created with one version and versions are never removed; the
        // count fits in u32 because rotations are one at a time.
        let v = self.versions.last().expect("a key has at least one version");
        (u32::try_from(self.versions.len()).expect("fewer than 2^32 versions"), v)
    }

    fn version(&self, n: u32) -> Option<&Version> {
        self.versions.get(usize::try_from(n).ok()?.checked_sub(1)?)
    }

    /// Parses a version id (canonical decimal, from 1) that exists for this key.
    fn parse_version(&self, version: &str) -> Result<u32, KmsError> {
        match version.parse::<u32>() {
            Ok(n) if n.to_string() == version && self.version(n).is_some() => Ok(n),
            _ => Err(KmsError::KeyVersionNotFound { key: self.id.clone(), version: version.to_owned() }),
        }
    }

    /// Fails unless the key is enabled (the rule for cryptographic operations and rotation).
    fn ensure_usable(&self) -> Result<(), KmsError> {
        match self.state {
            KeyState::Disabled => Err(KmsError::KeyDisabled { key: self.id.clone() }),
            KeyState::PendingDeletion => Err(KmsError::KeyPendingDeletion { key: self.id.clone() }),
            _ => Ok(()),
        }
    }

    fn ensure_not_pending_deletion(&self) -> Result<(), KmsError> {
        match self.state {
            KeyState::PendingDeletion => Err(KmsError::KeyPendingDeletion { key: self.id.clone() }),
            _ => Ok(()),
        }
    }

    /// Wraps `plaintext` under the newest version, bound to `context` (canonical bytes).
    fn wrap(&self, rng: &mut Rng, plaintext: &[u8], context: &[u8]) -> WrappedKey {
        let (n, v) = self.current();
        let blob = blob::seal(&self.id, n, &v.keys, rng.array(), plaintext, context);
        WrappedKey { backend: BACKEND.to_owned(), key_id: self.id.clone(), key_version: n.to_string(), blob }
    }
}

/// A decrypted blob, before it is handed out.
struct Unwrapped {
    plaintext: Zeroizing<Vec<u8>>,
    key_id: String,
    version: u32,
}

impl Keyring {
    /// The canonical id for a key id or alias, if it exists.
    fn resolve_id(&self, key: &str) -> Option<&str> {
        if key.starts_with(ALIAS_PREFIX) {
            self.aliases.get(key).map(String::as_str)
        } else {
            self.keys.get_key_value(key).map(|(id, _)| id.as_str())
        }
    }

    fn resolve(&self, key: &str) -> Result<&Key, KmsError> {
        self.resolve_id(key)
            .and_then(|id| self.keys.get(id))
            .ok_or_else(|| KmsError::KeyNotFound { key: key.to_owned() })
    }

    fn resolve_mut(&mut self, key: &str) -> Result<&mut Key, KmsError> {
        let id = self.resolve_id(key).map(str::to_owned);
        id.and_then(|id| self.keys.get_mut(&id)).ok_or_else(|| KmsError::KeyNotFound { key: key.to_owned() })
    }

    fn create(&mut self, rng: &mut Rng, spec: &KeySpec) -> String {
        let mut id = rng.uuid();
        while self.keys.contains_key(&id) {
            id = rng.uuid();
        }
        let now = SystemTime::now();
        let key = Key {
            id: id.clone(),
            description: spec.description.clone(),
            protection_level: spec.protection_level,
            tags: spec.tags.clone(),
            created_at: now,
            state: KeyState::Enabled,
            deletion_date: None,
            versions: vec![new_version(rng)],
            min_decryption_version: None,
            rotation_period: None,
        };
        self.keys.insert(id.clone(), key);
        id
    }

    /// Parses and opens a blob, in the order the README documents.
    fn unwrap(&self, wrapped: &WrappedKey, context: &[u8]) -> Result<Unwrapped, KmsError> {
        let p = blob::parse(&wrapped.blob).ok_or(KmsError::InvalidCiphertext)?;
        let key = self.keys.get(p.key_id).ok_or_else(|| KmsError::KeyNotFound { key: p.key_id.to_owned() })?;
        let version = key
            .version(p.version)
            .ok_or_else(|| KmsError::KeyVersionNotFound { key: key.id.clone(), version: p.version.to_string() })?;
        key.ensure_usable()?;
        if let Some(min) = key.min_decryption_version
            && p.version < min
        {
            return Err(KmsError::KeyVersionBelowMinimum {
                key: key.id.clone(),
                version: p.version.to_string(),
                min: min.to_string(),
            });
        }
        // The caller's key id (or alias) must name the key the blob says wrapped it.
        if !wrapped.key_id.is_empty() && self.resolve_id(&wrapped.key_id) != Some(key.id.as_str()) {
            return Err(KmsError::InvalidCiphertext);
        }
        let plaintext = blob::open(&p, &version.keys, context).map_err(|e| match e {
            blob::OpenError::WrongContext => KmsError::WrongContext,
            blob::OpenError::Invalid => KmsError::InvalidCiphertext,
        })?;
        Ok(Unwrapped { plaintext, key_id: key.id.clone(), version: p.version })
    }

    fn metadata(&self, key: &Key) -> KeyMetadata {
        let (current, _) = key.current();
        let mut m = KeyMetadata::new(key.id.clone(), key.state, key.created_at, current.to_string());
        m.description = key.description.clone();
        m.protection_level = key.protection_level;
        m.versions = key
            .versions
            .iter()
            .enumerate()
            .map(|(i, v)| KeyVersionInfo { id: (i + 1).to_string(), created_at: v.created_at })
            .collect();
        m.min_decryption_version = key.min_decryption_version.map(|v| v.to_string());
        m.deletion_date = key.deletion_date;
        m.aliases = self.aliases.iter().filter(|(_, id)| **id == key.id).map(|(a, _)| a.clone()).collect();
        m.tags = key.tags.clone();
        m.rotation_period = key.rotation_period;
        m
    }
}

fn new_version(rng: &mut Rng) -> Version {
    let material = rng.secret::<32>();
    Version { keys: VersionKeys::derive(&material), created_at: SystemTime::now() }
}

fn validate_alias(alias: &str) -> Result<(), KmsError> {
    let name = alias.strip_prefix(ALIAS_PREFIX).unwrap_or("");
    let ok = !name.is_empty()
        && alias.len() <= MAX_ALIAS_LEN
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'/' | b'_' | b'-' | b':'));
    if ok {
        Ok(())
    } else {
        Err(KmsError::InvalidRequest {
            message: format!(
                "alias must be {ALIAS_PREFIX:?} followed by 1 or more of A-Z a-z 0-9 / _ - : \
                 ({MAX_ALIAS_LEN} bytes at most)"
            ),
        })
    }
}

impl MockKms {
    /// An empty mock (no keys) drawing its randomness from the OS CSPRNG.
    pub fn new() -> Self {
        Self::with_rng(Rng::Os)
    }

    /// An empty, fully deterministic mock: key ids, key material, data keys and blob nonces
    /// all come from a DRBG seeded with `seed`, so two mocks with the same seed given the same
    /// calls in the same order produce identical ids and blobs. For tests and vectors only: the
    /// seed determines every key.
    pub fn with_seed(seed: u64) -> Self {
        Self::with_rng(Rng::seeded(seed))
    }

    fn with_rng(rng: Rng) -> Self {
        Self { state: Mutex::new(State { rng, ring: Keyring::default() }), control: Mutex::new(Control::default()) }
    }

    /// Creates an enabled, software-protected key with one version and returns its id.
    ///
    /// A test helper, not a KMS call: it is not counted, and faults, denials and latency do not
    /// apply.
    pub fn create_default_key(&self) -> String {
        let mut st = self.state();
        let State { rng, ring } = &mut *st;
        ring.create(rng, &KeySpec::default())
    }

    /// Points [`DEFAULT_ALIAS`] at `key` (a test helper like
    /// [`MockKms::create_default_key`]: not a counted KMS call). Does nothing if the alias exists.
    pub fn alias_default(&self, key: &str) {
        self.state().ring.aliases.entry(DEFAULT_ALIAS.to_owned()).or_insert_with(|| key.to_owned());
    }

    #[cfg(feature = "faults")]
    /// Makes the next `n` calls (of any operation) fail with `fault`.
    ///
    /// Queued faults are consumed oldest first; a call consumes at most one.
    pub fn fail_next(&self, n: u64, fault: Fault) {
        self.control().faults.fail_next(None, n, fault);
    }

    #[cfg(feature = "faults")]
    /// Makes the next `n` calls of `op` fail with `fault`; other operations are unaffected.
    pub fn fail_next_op(&self, op: Op, n: u64, fault: Fault) {
        self.control().faults.fail_next(Some(op), n, fault);
    }

    #[cfg(feature = "faults")]
    /// `Some(fault)`: every call fails with `fault` until `set_outage(None)`. An outage takes
    /// precedence over queued faults, which it leaves queued.
    pub fn set_outage(&self, fault: Option<Fault>) {
        self.control().faults.set_outage(fault);
    }

    #[cfg(feature = "faults")]
    /// Sleeps `latency` (with `tokio::time::sleep`) at the start of every call; zero turns it
    /// off. The calls then need a Tokio runtime with the time driver enabled.
    pub fn set_latency(&self, latency: Duration) {
        self.control().faults.set_latency(latency);
    }

    #[cfg(feature = "faults")]
    /// Makes every call of `op` fail with [`KmsError::AccessDenied`] until [`MockKms::allow`].
    pub fn deny(&self, op: Op) {
        self.control().faults.set_denied(op, true);
    }

    #[cfg(feature = "faults")]
    /// Undoes [`MockKms::deny`].
    pub fn allow(&self, op: Op) {
        self.control().faults.set_denied(op, false);
    }

    /// Number of calls of `op` so far, failed ones included.
    pub fn calls(&self, op: Op) -> u64 {
        self.control().counts().get(op)
    }

    /// All call counters.
    pub fn counts(&self) -> CallCounts {
        self.control().counts()
    }

    /// Sets every call counter back to zero.
    pub fn reset_counts(&self) {
        self.control().reset_counts();
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // Nothing panics while holding the lock except on OS RNG failure, after which the state
        // is still consistent; keep going rather than cascade the panic into other tests.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn control(&self) -> MutexGuard<'_, Control> {
        self.control.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Every call starts here: count it, and with the `faults` feature sleep the latency, then
    /// apply outage, queued faults and denials.
    async fn enter(&self, op: Op) -> Result<(), KmsError> {
        #[cfg(feature = "faults")]
        {
            let latency = {
                let mut c = self.control();
                c.count(op);
                c.faults.latency()
            };
            if !latency.is_zero() {
                tokio::time::sleep(latency).await;
            }
            self.control().faults.check(op)
        }
        #[cfg(not(feature = "faults"))]
        {
            self.control().count(op);
            Ok(())
        }
    }
}

/// Counters and (with the `faults` feature) what a test injects, behind one lock.
#[derive(Debug, Default)]
struct Control {
    counts: [u64; 5],
    #[cfg(feature = "faults")]
    faults: crate::faults::Injector,
}

impl Control {
    fn counts(&self) -> CallCounts {
        CallCounts::from_array(self.counts)
    }

    fn reset_counts(&mut self) {
        self.counts = [0; 5];
    }

    /// Counts a call to `op`.
    fn count(&mut self, op: Op) {
        self.counts[op.index()] += 1;
    }
}

impl Default for MockKms {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for MockKms {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Key count only: no material, no seed.
        let keys = self.state().ring.keys.len();
        f.debug_struct("MockKms").field("keys", &keys).finish_non_exhaustive()
    }
}

#[async_trait]
impl Kms for MockKms {
    fn backend(&self) -> &str {
        BACKEND
    }

    async fn generate_data_key(&self, key: &str, context: &EncryptionContext) -> Result<GeneratedDataKey, KmsError> {
        self.enter(Op::GenerateDataKey).await?;
        let mut st = self.state();
        let State { rng, ring } = &mut *st;
        let k = ring.resolve(key)?;
        k.ensure_usable()?;
        let data_key = rng.secret::<{ envseal_core::datakey::DATA_KEY_LEN }>();
        let wrapped = k.wrap(rng, &data_key[..], &context.canonical_bytes());
        Ok(GeneratedDataKey { data_key: DataKey::from_bytes(*data_key), wrapped })
    }

    async fn decrypt(&self, wrapped: &WrappedKey, context: &EncryptionContext) -> Result<Decrypted, KmsError> {
        self.enter(Op::Decrypt).await?;
        let u = self.state().ring.unwrap(wrapped, &context.canonical_bytes())?;
        Ok(Decrypted {
            plaintext: SecretBytes::from(u.plaintext),
            key_id: u.key_id,
            key_version: u.version.to_string(),
        })
    }

    async fn encrypt(&self, key: &str, plaintext: &[u8], context: &EncryptionContext) -> Result<WrappedKey, KmsError> {
        self.enter(Op::Encrypt).await?;
        if plaintext.len() > MAX_DIRECT_ENCRYPT {
            return Err(KmsError::PlaintextTooLarge { size: plaintext.len(), limit: MAX_DIRECT_ENCRYPT });
        }
        let mut st = self.state();
        let State { rng, ring } = &mut *st;
        let k = ring.resolve(key)?;
        k.ensure_usable()?;
        Ok(k.wrap(rng, plaintext, &context.canonical_bytes()))
    }

    /// Re-wraps inside the mock HSM: the plaintext never leaves it (and is zeroized).
    async fn re_encrypt(
        &self,
        wrapped: &WrappedKey,
        source_context: &EncryptionContext,
        destination_key: &str,
        destination_context: &EncryptionContext,
    ) -> Result<WrappedKey, KmsError> {
        self.enter(Op::ReEncrypt).await?;
        let mut st = self.state();
        let State { rng, ring } = &mut *st;
        let u = ring.unwrap(wrapped, &source_context.canonical_bytes())?;
        let dest = ring.resolve(destination_key)?;
        dest.ensure_usable()?;
        Ok(dest.wrap(rng, &u.plaintext, &destination_context.canonical_bytes()))
    }

    fn key_manager(&self) -> Option<&dyn KeyManager> {
        Some(self)
    }
}

#[async_trait]
impl KeyManager for MockKms {
    /// Creates an enabled key with version `1`; software and HSM protection are both accepted.
    async fn create_key(&self, spec: &KeySpec) -> Result<KeyMetadata, KmsError> {
        self.enter(Op::KeyManagement).await?;
        let mut st = self.state();
        let State { rng, ring } = &mut *st;
        let id = ring.create(rng, spec);
        ring.resolve(&id).map(|k| ring.metadata(k))
    }

    async fn describe_key(&self, key: &str) -> Result<KeyMetadata, KmsError> {
        self.enter(Op::KeyManagement).await?;
        let st = self.state();
        st.ring.resolve(key).map(|k| st.ring.metadata(k))
    }

    /// Every key, ordered by key id.
    async fn list_keys(&self) -> Result<Vec<KeyMetadata>, KmsError> {
        self.enter(Op::KeyManagement).await?;
        let st = self.state();
        Ok(st.ring.keys.values().map(|k| st.ring.metadata(k)).collect())
    }

    async fn create_alias(&self, alias: &str, key: &str) -> Result<(), KmsError> {
        self.enter(Op::KeyManagement).await?;
        validate_alias(alias)?;
        let mut st = self.state();
        if st.ring.aliases.contains_key(alias) {
            return Err(KmsError::AlreadyExists { what: format!("alias {alias}") });
        }
        let id = st.ring.resolve(key)?.id.clone();
        st.ring.aliases.insert(alias.to_owned(), id);
        Ok(())
    }

    async fn delete_alias(&self, alias: &str) -> Result<(), KmsError> {
        self.enter(Op::KeyManagement).await?;
        validate_alias(alias)?;
        match self.state().ring.aliases.remove(alias) {
            Some(_) => Ok(()),
            None => Err(KmsError::KeyNotFound { key: alias.to_owned() }),
        }
    }

    /// Every alias, ordered by name.
    async fn list_aliases(&self) -> Result<Vec<Alias>, KmsError> {
        self.enter(Op::KeyManagement).await?;
        let st = self.state();
        Ok(st.ring.aliases.iter().map(|(name, id)| Alias { name: name.clone(), key_id: id.clone() }).collect())
    }

    async fn rotate_key(&self, key: &str) -> Result<KeyMetadata, KmsError> {
        self.enter(Op::KeyManagement).await?;
        let mut st = self.state();
        let State { rng, ring } = &mut *st;
        let k = ring.resolve_mut(key)?;
        k.ensure_usable()?;
        k.versions.push(new_version(rng));
        ring.resolve(key).map(|k| ring.metadata(k))
    }

    async fn enable_key(&self, key: &str) -> Result<(), KmsError> {
        self.enter(Op::KeyManagement).await?;
        let mut st = self.state();
        let k = st.ring.resolve_mut(key)?;
        k.ensure_not_pending_deletion()?;
        k.state = KeyState::Enabled;
        Ok(())
    }

    async fn disable_key(&self, key: &str) -> Result<(), KmsError> {
        self.enter(Op::KeyManagement).await?;
        let mut st = self.state();
        let k = st.ring.resolve_mut(key)?;
        k.ensure_not_pending_deletion()?;
        k.state = KeyState::Disabled;
        Ok(())
    }

    /// Marks the key pending deletion (it is never actually deleted: the mock has no clock).
    /// A key already pending deletion gives [`KmsError::KeyPendingDeletion`].
    async fn schedule_key_deletion(&self, key: &str, pending_days: u32) -> Result<KeyMetadata, KmsError> {
        self.enter(Op::KeyManagement).await?;
        if !(MIN_DELETION_DAYS..=MAX_DELETION_DAYS).contains(&pending_days) {
            return Err(KmsError::InvalidRequest {
                message: format!(
                    "deletion window of {pending_days} days is outside {MIN_DELETION_DAYS}..={MAX_DELETION_DAYS}"
                ),
            });
        }
        let mut st = self.state();
        let k = st.ring.resolve_mut(key)?;
        k.ensure_not_pending_deletion()?;
        k.state = KeyState::PendingDeletion;
        k.deletion_date = Some(SystemTime::now() + Duration::from_secs(u64::from(pending_days) * 86_400));
        st.ring.resolve(key).map(|k| st.ring.metadata(k))
    }

    async fn cancel_key_deletion(&self, key: &str) -> Result<(), KmsError> {
        self.enter(Op::KeyManagement).await?;
        let mut st = self.state();
        let k = st.ring.resolve_mut(key)?;
        if k.state != KeyState::PendingDeletion {
            return Err(KmsError::InvalidRequest { message: format!("key {} is not pending deletion", k.id) });
        }
        k.state = KeyState::Disabled;
        k.deletion_date = None;
        Ok(())
    }

    /// `version` must be an existing version's canonical decimal id; lowering the minimum is
    /// allowed. A key pending deletion gives [`KmsError::KeyPendingDeletion`].
    async fn set_min_decryption_version(&self, key: &str, version: &str) -> Result<(), KmsError> {
        self.enter(Op::KeyManagement).await?;
        let mut st = self.state();
        let k = st.ring.resolve_mut(key)?;
        k.ensure_not_pending_deletion()?;
        k.min_decryption_version = Some(k.parse_version(version)?);
        Ok(())
    }

    /// Description, tags and rotation period; a key pending deletion gives
    /// [`KmsError::KeyPendingDeletion`]. The mock applies no rotation by itself (it has no
    /// timer): a caller sweeps keys whose [`KeyMetadata::rotation_due`] holds.
    async fn update_key(&self, key: &str, update: &KeyUpdate) -> Result<KeyMetadata, KmsError> {
        self.enter(Op::KeyManagement).await?;
        if update.rotation_period == Some(Some(Duration::ZERO)) {
            return Err(KmsError::InvalidRequest { message: "the rotation period must be positive".into() });
        }
        let mut st = self.state();
        let k = st.ring.resolve_mut(key)?;
        k.ensure_not_pending_deletion()?;
        if let Some(d) = &update.description {
            k.description = d.clone();
        }
        for t in &update.remove_tags {
            k.tags.remove(t);
        }
        k.tags.extend(update.set_tags.iter().map(|(a, b)| (a.clone(), b.clone())));
        if let Some(p) = update.rotation_period {
            k.rotation_period = p;
        }
        st.ring.resolve(key).map(|k| st.ring.metadata(k))
    }

    async fn update_alias(&self, alias: &str, key: &str) -> Result<(), KmsError> {
        self.enter(Op::KeyManagement).await?;
        validate_alias(alias)?;
        let mut st = self.state();
        let id = st.ring.resolve(key)?.id.clone();
        match st.ring.aliases.get_mut(alias) {
            Some(target) => {
                *target = id;
                Ok(())
            }
            None => Err(KmsError::KeyNotFound { key: alias.to_owned() }),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Instant;

    use envseal_core::kms::decrypt_data_key;

    use super::*;

    fn ctx(p: &[(&str, &str)]) -> EncryptionContext {
        EncryptionContext::from_pairs(p.iter().copied()).unwrap()
    }

    fn setup() -> (MockKms, String) {
        let kms = MockKms::new();
        let key = kms.create_default_key();
        (kms, key)
    }

    #[test]
    fn is_send_sync_debug_and_dyn() {
        fn assert_traits<T: Send + Sync + fmt::Debug + 'static>() {}
        assert_traits::<MockKms>();
        let kms: Arc<dyn Kms> = Arc::new(MockKms::default());
        assert_eq!(kms.backend(), "mock");
        assert!(kms.key_manager().is_some());
    }

    #[tokio::test]
    async fn generate_and_decrypt_round_trip() {
        let (kms, key) = setup();
        let c = ctx(&[("app", "x")]);
        let g = kms.generate_data_key(&key, &c).await.unwrap();
        assert_eq!(g.wrapped.backend, "mock");
        assert_eq!(g.wrapped.key_id, key);
        assert_eq!(g.wrapped.key_version, "1");
        let g2 = kms.generate_data_key(&key, &c).await.unwrap();
        assert_ne!(g.data_key.expose_secret(), g2.data_key.expose_secret());
        let d = decrypt_data_key(&kms, &g.wrapped, &c).await.unwrap();
        assert_eq!(d.data_key.expose_secret(), g.data_key.expose_secret());
        assert_eq!((d.key_id.as_str(), d.key_version.as_str()), (key.as_str(), "1"));
        // An empty key id in the entry is fine: the blob names the key.
        let mut anon = g.wrapped.clone();
        anon.key_id.clear();
        assert!(kms.decrypt(&anon, &c).await.is_ok());
    }

    #[tokio::test]
    async fn key_ids_are_uuids() {
        let (kms, key) = setup();
        assert_eq!(key.len(), 36);
        assert_eq!(key.split('-').map(str::len).collect::<Vec<_>>(), [8, 4, 4, 4, 12]);
        assert_ne!(kms.create_default_key(), key);
    }

    #[tokio::test]
    async fn rotation_keeps_old_blobs_and_wraps_with_newest() {
        let (kms, key) = setup();
        let c = ctx(&[("k", "v")]);
        let old = kms.generate_data_key(&key, &c).await.unwrap();
        let old_direct = kms.encrypt(&key, b"small secret", &c).await.unwrap();
        let m = kms.rotate_key(&key).await.unwrap();
        assert_eq!(m.current_version, "2");
        assert_eq!(m.versions.iter().map(|v| v.id.as_str()).collect::<Vec<_>>(), ["1", "2"]);
        let new = kms.generate_data_key(&key, &c).await.unwrap();
        assert_eq!(new.wrapped.key_version, "2");
        assert_eq!(kms.encrypt(&key, b"x", &c).await.unwrap().key_version, "2");
        let d = decrypt_data_key(&kms, &old.wrapped, &c).await.unwrap();
        assert_eq!(d.data_key.expose_secret(), old.data_key.expose_secret());
        assert_eq!(d.key_version, "1");
        let d = kms.decrypt(&old_direct, &c).await.unwrap();
        assert_eq!((d.plaintext.expose_secret(), d.key_version.as_str()), (&b"small secret"[..], "1"));
        assert_eq!(decrypt_data_key(&kms, &new.wrapped, &c).await.unwrap().key_version, "2");
        // Fresh material: the version 1 blob with its version field set to 2 does not open.
        let mut moved = old.wrapped.blob.clone();
        moved[40..44].copy_from_slice(&2u32.to_be_bytes());
        let moved = WrappedKey { blob: moved, ..old.wrapped.clone() };
        assert!(kms.decrypt(&moved, &c).await.is_err());
    }

    #[tokio::test]
    async fn seeded_mocks_are_deterministic() {
        async fn run(seed: u64) -> (String, Vec<u8>, [u8; 32], Vec<u8>, KeyMetadata) {
            let kms = MockKms::with_seed(seed);
            let key = kms.create_default_key();
            let c = ctx(&[("a", "1")]);
            let g = kms.generate_data_key(&key, &c).await.unwrap();
            let e = kms.encrypt(&key, b"hello", &c).await.unwrap();
            let m = kms.create_key(&KeySpec::default()).await.unwrap();
            (key, g.wrapped.blob, *g.data_key.expose_secret(), e.blob, m)
        }
        let (a, b, c) = (run(42).await, run(42).await, run(43).await);
        assert_eq!((&a.0, &a.1, &a.2, &a.3, &a.4.key_id), (&b.0, &b.1, &b.2, &b.3, &b.4.key_id));
        assert_ne!(a.0, c.0);
        assert_ne!(a.2, c.2);
        assert_ne!(a.1, c.1);
        // The unseeded mock is not reproducible.
        assert_ne!(MockKms::new().create_default_key(), MockKms::new().create_default_key());
    }

    #[tokio::test]
    async fn contexts_do_not_cross_decrypt() {
        let (kms, key) = setup();
        let pairs = [
            (ctx(&[("ab", "c")]), ctx(&[("a", "bc")])),
            (ctx(&[]), ctx(&[("a", "")])),
            (ctx(&[("a", "1")]), ctx(&[("a", "1"), ("b", "2")])),
        ];
        for (x, y) in pairs {
            let g = kms.generate_data_key(&key, &x).await.unwrap();
            assert!(matches!(kms.decrypt(&g.wrapped, &y).await, Err(KmsError::WrongContext)));
            let g = kms.generate_data_key(&key, &y).await.unwrap();
            assert!(matches!(kms.decrypt(&g.wrapped, &x).await, Err(KmsError::WrongContext)));
            assert!(kms.decrypt(&g.wrapped, &y).await.is_ok());
        }
        // Entry order does not matter.
        let g = kms.generate_data_key(&key, &ctx(&[("b", "2"), ("a", "1")])).await.unwrap();
        assert!(kms.decrypt(&g.wrapped, &ctx(&[("a", "1"), ("b", "2")])).await.is_ok());
    }

    #[tokio::test]
    async fn every_single_byte_flip_is_rejected() {
        let (kms, key) = setup();
        kms.rotate_key(&key).await.unwrap(); // so a flipped version can land on nothing
        let c = ctx(&[("k", "v")]);
        let w = kms.encrypt(&key, b"secret", &c).await.unwrap();
        let l = key.len();
        for i in 0..w.blob.len() {
            for bit in [0x01, 0x80, 0xff] {
                let mut bad = w.clone();
                bad.blob[i] ^= bit;
                let err = kms.decrypt(&bad, &c).await.unwrap_err();
                let ok = match i {
                    // Magic, or a key id length that no longer parses or names no key.
                    0..=3 => matches!(err, KmsError::InvalidCiphertext | KmsError::KeyNotFound { .. }),
                    _ if i < 4 + l => matches!(err, KmsError::InvalidCiphertext | KmsError::KeyNotFound { .. }),
                    _ if i < 8 + l => matches!(err, KmsError::KeyVersionNotFound { .. } | KmsError::InvalidCiphertext),
                    _ if i < 24 + l => matches!(err, KmsError::WrongContext),
                    _ => matches!(err, KmsError::InvalidCiphertext),
                };
                assert!(ok, "byte {i} ^ {bit:#x}: {err:?}");
            }
        }
        for n in 0..w.blob.len() {
            let short = WrappedKey { blob: w.blob[..n].to_vec(), ..w.clone() };
            assert!(matches!(kms.decrypt(&short, &c).await, Err(KmsError::InvalidCiphertext)), "truncated to {n}");
        }
        let mut long = w.clone();
        long.blob.push(0);
        assert!(matches!(kms.decrypt(&long, &c).await, Err(KmsError::InvalidCiphertext)));
    }

    #[tokio::test]
    async fn entry_key_id_must_name_the_blobs_key() {
        let (kms, key) = setup();
        let other = kms.create_default_key();
        kms.create_alias("alias/mine", &key).await.unwrap();
        kms.create_alias("alias/other", &other).await.unwrap();
        let c = ctx(&[]);
        let w = kms.encrypt(&key, b"x", &c).await.unwrap();
        for (id, ok) in [
            (key.as_str(), true),
            ("alias/mine", true),
            ("", true),
            (&other, false),
            ("alias/other", false),
            ("nope", false),
        ] {
            let r = kms.decrypt(&WrappedKey { key_id: id.to_owned(), ..w.clone() }, &c).await;
            assert_eq!(r.is_ok(), ok, "{id}");
            if !ok {
                assert!(matches!(r, Err(KmsError::InvalidCiphertext)), "{id}");
            }
        }
    }

    #[tokio::test]
    async fn encrypt_limit() {
        let (kms, key) = setup();
        let c = ctx(&[]);
        for n in [0, 1, MAX_DIRECT_ENCRYPT] {
            let pt = vec![0x5a; n];
            let w = kms.encrypt(&key, &pt, &c).await.unwrap();
            assert_eq!(kms.decrypt(&w, &c).await.unwrap().plaintext.expose_secret(), &pt[..]);
        }
        let err = kms.encrypt(&key, &[0; MAX_DIRECT_ENCRYPT + 1], &c).await.unwrap_err();
        assert!(matches!(err, KmsError::PlaintextTooLarge { size: 6145, limit: 6144 }), "{err:?}");
    }

    #[tokio::test]
    async fn unknown_keys() {
        let (kms, key) = setup();
        let c = ctx(&[]);
        let w = kms.encrypt(&key, b"x", &c).await.unwrap();
        for k in ["00000000-0000-4000-8000-000000000000", "alias/none", ""] {
            let nf = |r: Result<(), KmsError>| matches!(r, Err(KmsError::KeyNotFound { key }) if key == k);
            assert!(nf(kms.generate_data_key(k, &c).await.map(drop)), "{k}");
            assert!(nf(kms.encrypt(k, b"x", &c).await.map(drop)));
            assert!(nf(kms.re_encrypt(&w, &c, k, &c).await.map(drop)));
            assert!(nf(kms.describe_key(k).await.map(drop)));
            assert!(nf(kms.rotate_key(k).await.map(drop)));
            assert!(nf(kms.enable_key(k).await));
            assert!(nf(kms.disable_key(k).await));
            assert!(nf(kms.schedule_key_deletion(k, 7).await.map(drop)));
            assert!(nf(kms.cancel_key_deletion(k).await));
            assert!(nf(kms.set_min_decryption_version(k, "1").await));
            assert!(nf(kms.create_alias("alias/new", k).await));
        }
        // A blob naming a key this mock does not have.
        let foreign = MockKms::new();
        let fk = foreign.create_default_key();
        let fw = foreign.encrypt(&fk, b"x", &c).await.unwrap();
        assert!(matches!(kms.decrypt(&fw, &c).await, Err(KmsError::KeyNotFound { key }) if key == fk));
    }

    #[tokio::test]
    async fn aliases() {
        let (kms, key) = setup();
        for bad in ["app", "alias/", "alias/a b", "Alias/x", "alias/é", &format!("alias/{}", "a".repeat(251))] {
            assert!(matches!(kms.create_alias(bad, &key).await, Err(KmsError::InvalidRequest { .. })), "{bad}");
        }
        kms.create_alias(&format!("alias/{}", "a".repeat(250)), &key).await.unwrap();
        kms.create_alias("alias/app/prod_1-x:y", &key).await.unwrap();
        // Aliases resolve anywhere a key is taken, including as an alias target.
        kms.create_alias("alias/second", "alias/app/prod_1-x:y").await.unwrap();
        assert!(matches!(kms.create_alias("alias/second", &key).await, Err(KmsError::AlreadyExists { .. })));
        let c = ctx(&[]);
        let g = kms.generate_data_key("alias/second", &c).await.unwrap();
        assert_eq!(g.wrapped.key_id, key);
        let m = kms.describe_key("alias/second").await.unwrap();
        assert_eq!(m.key_id, key);
        assert_eq!(m.aliases.len(), 3);
        assert_eq!(kms.rotate_key("alias/second").await.unwrap().current_version, "2");
        let list = kms.list_aliases().await.unwrap();
        assert_eq!(list.len(), 3);
        assert!(list.iter().all(|a| a.key_id == key));
        assert!(list.windows(2).all(|w| w[0].name < w[1].name));
        kms.delete_alias("alias/second").await.unwrap();
        assert!(matches!(kms.delete_alias("alias/second").await, Err(KmsError::KeyNotFound { .. })));
        assert!(matches!(kms.delete_alias("second").await, Err(KmsError::InvalidRequest { .. })));
        assert!(matches!(kms.describe_key("alias/second").await, Err(KmsError::KeyNotFound { .. })));
        // The key itself is untouched.
        assert!(kms.decrypt(&g.wrapped, &c).await.is_ok());
        assert_eq!(kms.list_aliases().await.unwrap().len(), 2);
    }

    #[tokio::test]
    async fn create_describe_list_keep_spec() {
        let kms = MockKms::new();
        let spec = KeySpec {
            description: "payments".into(),
            protection_level: ProtectionLevel::Hsm,
            tags: [("team".to_string(), "core".to_string())].into(),
        };
        let m = kms.create_key(&spec).await.unwrap();
        assert_eq!((m.state, m.protection_level), (KeyState::Enabled, ProtectionLevel::Hsm));
        assert_eq!((m.description.as_str(), m.current_version.as_str()), ("payments", "1"));
        assert_eq!(m.tags.get("team").map(String::as_str), Some("core"));
        assert_eq!(m.versions.len(), 1);
        assert_eq!(m.min_decryption_version, None);
        assert_eq!(m.deletion_date, None);
        let d = kms.describe_key(&m.key_id).await.unwrap();
        assert_eq!((d.key_id, d.description, d.tags), (m.key_id.clone(), m.description, m.tags));
        let sw = kms.create_default_key();
        let list = kms.list_keys().await.unwrap();
        assert_eq!(list.len(), 2);
        assert!(list.iter().any(|k| k.key_id == sw && k.protection_level == ProtectionLevel::Software));
        assert!(list.windows(2).all(|w| w[0].key_id < w[1].key_id));
    }

    #[tokio::test]
    async fn disabled_keys_refuse_crypto() {
        let (kms, key) = setup();
        let c = ctx(&[]);
        let w = kms.encrypt(&key, b"x", &c).await.unwrap();
        kms.disable_key(&key).await.unwrap();
        assert_eq!(kms.describe_key(&key).await.unwrap().state, KeyState::Disabled);
        let disabled = |r: Result<(), KmsError>| matches!(r, Err(KmsError::KeyDisabled { key: k }) if k == key);
        assert!(disabled(kms.generate_data_key(&key, &c).await.map(drop)));
        assert!(disabled(kms.encrypt(&key, b"x", &c).await.map(drop)));
        assert!(disabled(kms.decrypt(&w, &c).await.map(drop)));
        assert!(disabled(kms.re_encrypt(&w, &c, &key, &c).await.map(drop)));
        assert!(disabled(kms.rotate_key(&key).await.map(drop)));
        // Re-encrypting into a disabled key fails too.
        let other = kms.create_default_key();
        let wo = kms.encrypt(&other, b"x", &c).await.unwrap();
        assert!(disabled(kms.re_encrypt(&wo, &c, &key, &c).await.map(drop)));
        kms.disable_key(&key).await.unwrap(); // idempotent
        kms.enable_key(&key).await.unwrap();
        assert_eq!(kms.describe_key(&key).await.unwrap().state, KeyState::Enabled);
        assert!(kms.decrypt(&w, &c).await.is_ok());
    }

    #[tokio::test]
    async fn deletion_schedule_and_cancel() {
        let (kms, key) = setup();
        let c = ctx(&[]);
        let w = kms.encrypt(&key, b"x", &c).await.unwrap();
        for days in [0, 6, 31, u32::MAX] {
            assert!(matches!(kms.schedule_key_deletion(&key, days).await, Err(KmsError::InvalidRequest { .. })));
        }
        assert!(matches!(kms.cancel_key_deletion(&key).await, Err(KmsError::InvalidRequest { .. })));
        let before = SystemTime::now();
        let m = kms.schedule_key_deletion(&key, 7).await.unwrap();
        assert_eq!(m.state, KeyState::PendingDeletion);
        let date = m.deletion_date.unwrap();
        assert!(date >= before + Duration::from_secs(7 * 86_400));
        assert!(date <= SystemTime::now() + Duration::from_secs(7 * 86_400));
        let pending = |r: Result<(), KmsError>| matches!(r, Err(KmsError::KeyPendingDeletion { key: k }) if k == key);
        assert!(pending(kms.generate_data_key(&key, &c).await.map(drop)));
        assert!(pending(kms.encrypt(&key, b"x", &c).await.map(drop)));
        assert!(pending(kms.decrypt(&w, &c).await.map(drop)));
        assert!(pending(kms.re_encrypt(&w, &c, &key, &c).await.map(drop)));
        assert!(pending(kms.rotate_key(&key).await.map(drop)));
        assert!(pending(kms.enable_key(&key).await));
        assert!(pending(kms.disable_key(&key).await));
        assert!(pending(kms.set_min_decryption_version(&key, "1").await));
        assert!(pending(kms.schedule_key_deletion(&key, 30).await.map(drop)));
        kms.cancel_key_deletion(&key).await.unwrap();
        let m = kms.describe_key(&key).await.unwrap();
        assert_eq!((m.state, m.deletion_date), (KeyState::Disabled, None));
        assert!(matches!(kms.decrypt(&w, &c).await, Err(KmsError::KeyDisabled { .. })));
        kms.enable_key(&key).await.unwrap();
        assert!(kms.decrypt(&w, &c).await.is_ok());
        // A disabled key can be scheduled, with the longest window.
        kms.disable_key(&key).await.unwrap();
        assert_eq!(kms.schedule_key_deletion(&key, 30).await.unwrap().state, KeyState::PendingDeletion);
    }

    #[tokio::test]
    async fn min_decryption_version() {
        let (kms, key) = setup();
        let c = ctx(&[]);
        let v1 = kms.encrypt(&key, b"one", &c).await.unwrap();
        kms.rotate_key(&key).await.unwrap();
        let v2 = kms.encrypt(&key, b"two", &c).await.unwrap();
        for bad in ["3", "0", "01", "", "x", "-1", "4294967296"] {
            let r = kms.set_min_decryption_version(&key, bad).await;
            assert!(matches!(r, Err(KmsError::KeyVersionNotFound { ref version, .. }) if version == bad), "{bad}");
        }
        kms.set_min_decryption_version(&key, "2").await.unwrap();
        assert_eq!(kms.describe_key(&key).await.unwrap().min_decryption_version.as_deref(), Some("2"));
        let err = kms.decrypt(&v1, &c).await.unwrap_err();
        assert!(
            matches!(&err, KmsError::KeyVersionBelowMinimum { key: k, version, min } if *k == key && version == "1" && min == "2"),
            "{err:?}"
        );
        assert!(matches!(kms.re_encrypt(&v1, &c, &key, &c).await, Err(KmsError::KeyVersionBelowMinimum { .. })));
        assert_eq!(kms.decrypt(&v2, &c).await.unwrap().plaintext.expose_secret(), b"two");
        // Lowering it again restores access.
        kms.set_min_decryption_version(&key, "1").await.unwrap();
        assert_eq!(kms.decrypt(&v1, &c).await.unwrap().plaintext.expose_secret(), b"one");
    }

    #[tokio::test]
    async fn blob_with_unknown_version() {
        let (kms, key) = setup();
        let c = ctx(&[]);
        let mut w = kms.encrypt(&key, b"x", &c).await.unwrap();
        w.blob[40..44].copy_from_slice(&9u32.to_be_bytes());
        let err = kms.decrypt(&w, &c).await.unwrap_err();
        assert!(matches!(&err, KmsError::KeyVersionNotFound { key: k, version } if *k == key && version == "9"));
    }

    #[tokio::test]
    async fn re_encrypt_inside_the_hsm() {
        let (kms, key) = setup();
        let dest = kms.create_default_key();
        kms.create_alias("alias/dest", &dest).await.unwrap();
        let (c1, c2) = (ctx(&[("v", "1")]), ctx(&[("v", "2")]));
        let g = kms.generate_data_key(&key, &c1).await.unwrap();
        kms.reset_counts();
        let w = kms.re_encrypt(&g.wrapped, &c1, "alias/dest", &c2).await.unwrap();
        assert_eq!(kms.counts(), CallCounts { re_encrypt: 1, ..CallCounts::default() });
        assert_eq!((w.key_id.as_str(), w.key_version.as_str()), (dest.as_str(), "1"));
        let d = decrypt_data_key(&kms, &w, &c2).await.unwrap();
        assert_eq!(d.data_key.expose_secret(), g.data_key.expose_secret());
        assert!(matches!(kms.decrypt(&w, &c1).await, Err(KmsError::WrongContext)));
        assert!(matches!(kms.re_encrypt(&g.wrapped, &c2, &dest, &c2).await, Err(KmsError::WrongContext)));
        // To the latest version of the same key.
        kms.rotate_key(&key).await.unwrap();
        let w = kms.re_encrypt(&g.wrapped, &c1, &key, &c1).await.unwrap();
        assert_eq!(w.key_version, "2");
        assert_eq!(decrypt_data_key(&kms, &w, &c1).await.unwrap().key_version, "2");
    }

    #[tokio::test]
    async fn injected_faults_count_down() {
        let (kms, key) = setup();
        let c = ctx(&[]);
        kms.fail_next(2, Fault::Throttled);
        let e = kms.generate_data_key(&key, &c).await.unwrap_err();
        assert!(matches!(e, KmsError::Throttled { .. }) && e.is_retryable());
        // Any operation consumes it, key management included.
        assert!(matches!(kms.describe_key(&key).await, Err(KmsError::Throttled { .. })));
        let g = kms.generate_data_key(&key, &c).await.unwrap();
        assert_eq!(kms.calls(Op::GenerateDataKey), 2);
        assert_eq!(kms.calls(Op::KeyManagement), 1);

        kms.fail_next_op(Op::Decrypt, 1, Fault::Unavailable);
        assert!(kms.encrypt(&key, b"x", &c).await.is_ok());
        let e = kms.decrypt(&g.wrapped, &c).await.unwrap_err();
        assert!(matches!(e, KmsError::Unavailable { retryable: true, .. }), "{e:?}");
        assert!(kms.decrypt(&g.wrapped, &c).await.is_ok());
        assert_eq!(kms.calls(Op::Decrypt), 2);

        // Zero queues nothing; queued faults are consumed oldest first.
        kms.fail_next(0, Fault::Throttled);
        kms.fail_next_op(Op::Encrypt, 1, Fault::Unavailable);
        kms.fail_next(1, Fault::Throttled);
        assert!(matches!(kms.decrypt(&g.wrapped, &c).await, Err(KmsError::Throttled { .. })));
        assert!(matches!(kms.encrypt(&key, b"x", &c).await, Err(KmsError::Unavailable { .. })));
        assert!(kms.encrypt(&key, b"x", &c).await.is_ok());
        assert!(kms.decrypt(&g.wrapped, &c).await.is_ok());
    }

    #[tokio::test]
    async fn outage_until_cleared() {
        let (kms, key) = setup();
        let c = ctx(&[]);
        kms.fail_next(1, Fault::Throttled);
        kms.set_outage(Some(Fault::Unavailable));
        for _ in 0..3 {
            assert!(matches!(kms.generate_data_key(&key, &c).await, Err(KmsError::Unavailable { .. })));
            assert!(matches!(kms.list_keys().await, Err(KmsError::Unavailable { .. })));
        }
        kms.set_outage(Some(Fault::Throttled));
        assert!(matches!(kms.encrypt(&key, b"x", &c).await, Err(KmsError::Throttled { .. })));
        kms.set_outage(None);
        // The queued fault survived the outage.
        assert!(matches!(kms.list_keys().await, Err(KmsError::Throttled { .. })));
        assert!(kms.generate_data_key(&key, &c).await.is_ok());
        assert_eq!(
            kms.counts(),
            CallCounts { generate_data_key: 4, encrypt: 1, key_management: 4, ..Default::default() }
        );
    }

    #[tokio::test]
    async fn deny_and_allow() {
        let (kms, key) = setup();
        let c = ctx(&[]);
        kms.deny(Op::Decrypt);
        kms.deny(Op::KeyManagement);
        let g = kms.generate_data_key(&key, &c).await.unwrap();
        assert!(matches!(kms.decrypt(&g.wrapped, &c).await, Err(KmsError::AccessDenied { .. })));
        assert!(matches!(kms.rotate_key(&key).await, Err(KmsError::AccessDenied { .. })));
        // Denied calls still count, and change nothing.
        assert_eq!(kms.calls(Op::KeyManagement), 1);
        kms.allow(Op::Decrypt);
        kms.allow(Op::KeyManagement);
        assert!(kms.decrypt(&g.wrapped, &c).await.is_ok());
        assert_eq!(kms.describe_key(&key).await.unwrap().current_version, "1");
    }

    #[tokio::test]
    async fn latency_delays_every_call() {
        let (kms, key) = setup();
        let c = ctx(&[]);
        kms.set_latency(Duration::from_millis(40));
        let t = Instant::now();
        kms.generate_data_key(&key, &c).await.unwrap();
        kms.describe_key(&key).await.unwrap();
        assert!(t.elapsed() >= Duration::from_millis(80), "{:?}", t.elapsed());
        // Faults apply after the delay.
        kms.fail_next(1, Fault::Throttled);
        let t = Instant::now();
        assert!(kms.encrypt(&key, b"x", &c).await.is_err());
        assert!(t.elapsed() >= Duration::from_millis(40));
        kms.set_latency(Duration::ZERO);
        let t = Instant::now();
        kms.encrypt(&key, b"x", &c).await.unwrap();
        assert!(t.elapsed() < Duration::from_millis(40));
    }

    #[test]
    fn no_latency_needs_no_timer() {
        // A runtime without the time driver is enough when no latency is set.
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let (kms, key) = setup();
        rt.block_on(async { kms.generate_data_key(&key, &EncryptionContext::new()).await.unwrap() });
    }

    #[tokio::test]
    async fn counters() {
        let (kms, key) = setup();
        assert_eq!(kms.counts(), CallCounts::default(), "create_default_key is not counted");
        let c = ctx(&[]);
        let g = kms.generate_data_key(&key, &c).await.unwrap();
        kms.decrypt(&g.wrapped, &c).await.unwrap();
        kms.decrypt(&g.wrapped, &c).await.unwrap();
        let _ = kms.decrypt(&g.wrapped, &ctx(&[("x", "y")])).await.unwrap_err();
        let w = kms.encrypt(&key, b"x", &c).await.unwrap();
        kms.re_encrypt(&w, &c, &key, &c).await.unwrap();
        kms.list_aliases().await.unwrap();
        kms.create_key(&KeySpec::default()).await.unwrap();
        let counts = kms.counts();
        assert_eq!(
            counts,
            CallCounts { generate_data_key: 1, decrypt: 3, encrypt: 1, re_encrypt: 1, key_management: 2 }
        );
        assert_eq!(counts.total(), 8);
        for op in Op::ALL {
            assert_eq!(kms.calls(op), counts.get(op), "{op}");
        }
        kms.reset_counts();
        assert_eq!(kms.counts(), CallCounts::default());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_use_through_dyn_kms() {
        let mock = Arc::new(MockKms::new());
        let key = mock.create_default_key();
        let kms: Arc<dyn Kms> = mock.clone();
        let tasks: Vec<_> = (0..32)
            .map(|i| {
                let (kms, key) = (kms.clone(), key.clone());
                tokio::spawn(async move {
                    let c = EncryptionContext::from_pairs([("i", i.to_string())]).unwrap();
                    let g = kms.generate_data_key(&key, &c).await.unwrap();
                    let d = decrypt_data_key(&*kms, &g.wrapped, &c).await.unwrap();
                    assert_eq!(d.data_key.expose_secret(), g.data_key.expose_secret());
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(mock.counts(), CallCounts { generate_data_key: 32, decrypt: 32, ..Default::default() });
    }

    #[tokio::test]
    async fn nothing_secret_in_debug_or_errors() {
        let kms = MockKms::with_seed(7);
        let key = kms.create_default_key();
        let c = ctx(&[("k", "v")]);
        let g = kms.generate_data_key(&key, &c).await.unwrap();
        let marker = b"MARKER-SECRET-VALUE-123";
        let w = kms.encrypt(&key, marker, &c).await.unwrap();
        let d = kms.decrypt(&w, &c).await.unwrap();
        let dk = g.data_key.expose_secret();
        let hex: String = dk.iter().map(|b| format!("{b:02x}")).collect();
        let mut texts = vec![format!("{kms:?}"), format!("{g:?}"), format!("{d:?}"), format!("{w:?}")];
        assert_eq!(texts[0], "MockKms { keys: 1, .. }");
        // Every error the mock can produce on these inputs.
        let mut bad = w.clone();
        for i in 0..bad.blob.len() {
            bad.blob[i] ^= 0xff;
            if let Err(e) = kms.decrypt(&bad, &c).await {
                texts.push(format!("{e} {e:?}"));
            }
            bad.blob[i] ^= 0xff;
        }
        kms.deny(Op::Encrypt);
        texts.push(format!("{:?}", kms.encrypt(&key, marker, &c).await));
        kms.allow(Op::Encrypt);
        texts.push(format!("{:?}", kms.encrypt(&key, &[0x41; 7000], &c).await));
        kms.set_min_decryption_version(&key, "1").await.unwrap();
        kms.rotate_key(&key).await.unwrap();
        kms.set_min_decryption_version(&key, "2").await.unwrap();
        texts.push(format!("{:?}", kms.decrypt(&w, &c).await));
        for t in &texts {
            assert!(!t.contains("MARKER"), "{t}");
            assert!(!t.contains(&hex), "{t}");
            assert!(!t.contains(&format!("{:?}", &dk[..])), "{t}");
        }
    }
}
