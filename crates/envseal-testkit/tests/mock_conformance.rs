//! The conformance suite against the in-memory mock, and against wrappers of it that behave
//! like other backends (or break the rules), to show what each [`Capabilities`] relaxation
//! tolerates and what it still catches.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use envseal_core::kms::{Alias, Decrypted, GeneratedDataKey, KeyMetadata, KeySpec, KeyState, MAX_DIRECT_ENCRYPT};
use envseal_core::{EncryptionContext, KeyManager, Kms, KmsError, WrappedKey};
use envseal_kms_mock::MockKms;
use envseal_testkit::{
    Capabilities, WrongContextReport, run_conformance, run_conformance_with, run_key_management_conformance,
    run_key_management_conformance_with,
};

#[tokio::test]
async fn mock_conforms() {
    let kms = Arc::new(MockKms::new());
    let key = kms.create_default_key();
    run_conformance(kms, &key).await;
}

#[tokio::test]
async fn mock_conforms_through_an_alias() {
    let kms = Arc::new(MockKms::new());
    let key = kms.create_default_key();
    kms.create_alias("alias/conformance", &key).await.unwrap();
    run_conformance(kms, "alias/conformance").await;
}

#[tokio::test]
async fn seeded_mock_conforms() {
    let kms = Arc::new(MockKms::with_seed(7));
    let key = kms.create_default_key();
    run_conformance(kms.clone(), &key).await;
    run_key_management_conformance(kms).await;
}

#[tokio::test]
async fn mock_key_management_conforms() {
    let kms = Arc::new(MockKms::new());
    run_key_management_conformance(kms.clone()).await;
    // The suite cleans up after itself: its key is pending deletion, its alias gone.
    assert!(kms.list_aliases().await.unwrap().is_empty());
}

#[tokio::test]
async fn strict_capabilities_are_the_default() {
    assert_eq!(Capabilities::default(), Capabilities::strict());
    let caps = Capabilities::default();
    assert_eq!(caps.direct_encrypt, 0..=MAX_DIRECT_ENCRYPT);
    assert_eq!(caps.wrong_context, WrongContextReport::WrongContext);
    assert!(caps.contexts_unambiguous && caps.rotation_changes_version && caps.key_states_enforced);
    assert!(caps.aliases && caps.enable_disable && caps.scheduled_deletion && caps.min_decryption_version);
    let kms = Arc::new(MockKms::new());
    let key = kms.create_default_key();
    run_conformance_with(kms.clone(), &key, &caps).await;
    run_key_management_conformance_with(kms, &caps).await;
}

#[tokio::test]
#[should_panic(expected = "must include 1..=64")]
async fn a_nonsensical_declaration_is_refused() {
    let kms = Arc::new(MockKms::new());
    let key = kms.create_default_key();
    run_conformance_with(kms, &key, &Capabilities::strict().direct_encrypt(1..=8192)).await;
}

#[tokio::test]
#[should_panic(expected = "scheduled_deletion needs enable_disable")]
async fn deletion_without_enable_disable_is_refused() {
    let kms = Arc::new(MockKms::new());
    run_key_management_conformance_with(kms, &Capabilities::strict().enable_disable(false)).await;
}

// ---------------------------------------------------------------------------------------------
// Cryptographic quirks

/// How [`Wrapper`] bends the mock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Passes everything through (with the trait's default, client-side `re_encrypt`).
    Faithful,
    /// Forgets to send the encryption context.
    DropContext,
    /// Sends the context the way moto builds its AAD: the pairs concatenated without lengths.
    ConcatContext,
    /// AWS KMS's Encrypt range: 1..=4096 bytes (0 is InvalidRequest, 4097..=6144
    /// PlaintextTooLarge with AWS's limit).
    AwsEncryptRange,
    /// Reports a wrong context as `InvalidCiphertext`, as AEAD-only backends do.
    OpaqueContextErrors,
}

/// A backend built on the mock, without a `KeyManager`.
#[derive(Debug)]
struct Wrapper {
    inner: MockKms,
    mode: Mode,
}

impl Wrapper {
    fn ctx<'a>(&self, c: &'a EncryptionContext) -> std::borrow::Cow<'a, EncryptionContext> {
        use std::borrow::Cow;
        match self.mode {
            Mode::DropContext => Cow::Owned(EncryptionContext::new()),
            Mode::ConcatContext => {
                let aad: String = c.iter().flat_map(|(k, v)| [k, v]).collect();
                Cow::Owned(EncryptionContext::from_pairs([("aad", aad)]).unwrap())
            }
            _ => Cow::Borrowed(c),
        }
    }
}

#[async_trait::async_trait]
impl Kms for Wrapper {
    fn backend(&self) -> &str {
        self.inner.backend()
    }
    async fn generate_data_key(&self, key: &str, context: &EncryptionContext) -> Result<GeneratedDataKey, KmsError> {
        self.inner.generate_data_key(key, &self.ctx(context)).await
    }
    async fn decrypt(&self, wrapped: &WrappedKey, context: &EncryptionContext) -> Result<Decrypted, KmsError> {
        match self.inner.decrypt(wrapped, &self.ctx(context)).await {
            Err(KmsError::WrongContext) if self.mode == Mode::OpaqueContextErrors => Err(KmsError::InvalidCiphertext),
            r => r,
        }
    }
    async fn encrypt(&self, key: &str, plaintext: &[u8], context: &EncryptionContext) -> Result<WrappedKey, KmsError> {
        if self.mode == Mode::AwsEncryptRange {
            match plaintext.len() {
                0 => return Err(KmsError::InvalidRequest { message: "empty plaintext".into() }),
                n @ 4097..=MAX_DIRECT_ENCRYPT => return Err(KmsError::PlaintextTooLarge { size: n, limit: 4096 }),
                _ => {}
            }
        }
        self.inner.encrypt(key, plaintext, &self.ctx(context)).await
    }
}

fn wrapper(mode: Mode) -> (Arc<Wrapper>, String) {
    let inner = MockKms::new();
    let key = inner.create_default_key();
    (Arc::new(Wrapper { inner, mode }), key)
}

/// Every relaxation of the cryptographic suite at once.
fn most_relaxed() -> Capabilities {
    Capabilities::strict()
        .direct_encrypt(1..=4096)
        .wrong_context(WrongContextReport::InvalidCiphertext)
        .contexts_unambiguous(false)
}

#[tokio::test]
async fn default_re_encrypt_conforms() {
    let (kms, key) = wrapper(Mode::Faithful);
    run_conformance(kms, &key).await;
}

#[tokio::test]
#[should_panic(expected = "key_manager() is None")]
async fn key_management_needs_a_key_manager() {
    let (kms, _) = wrapper(Mode::Faithful);
    run_key_management_conformance(kms).await;
}

#[tokio::test]
#[should_panic(expected = "decrypt with a wrong context")]
async fn a_backend_ignoring_the_context_fails() {
    let (kms, key) = wrapper(Mode::DropContext);
    run_conformance(kms, &key).await;
}

/// moto's flaw, reproduced on the mock: declared, it passes (with a NOTE for `{"ab":"c"}` /
/// `{"a":"bc"}`, the one pair whose concatenations agree).
#[tokio::test]
async fn concatenated_contexts_pass_when_declared() {
    let (kms, key) = wrapper(Mode::ConcatContext);
    run_conformance_with(kms, &key, &Capabilities::strict().contexts_unambiguous(false)).await;
}

#[tokio::test]
#[should_panic(
    expected = r#"decrypt with a wrong context ({"ab": "c"} sealed, {"a": "bc"} given): expected WrongContext, got Ok"#
)]
async fn concatenated_contexts_fail_the_strict_suite() {
    let (kms, key) = wrapper(Mode::ConcatContext);
    run_conformance(kms, &key).await;
}

/// Tolerating moto's collisions does not tolerate a backend that ignores the context: it opens
/// under contexts that do not collide at all, and the suite still fails on the first one.
#[tokio::test]
#[should_panic(
    expected = r#"decrypt with a wrong context ({"purpose": "envseal-conformance", "tenant": "t-1"} sealed, {"purpose": "envseal-conformance", "tenant": "t-2"} given): expected WrongContext, got Ok"#
)]
async fn ignoring_the_context_fails_even_with_collisions_tolerated() {
    let (kms, key) = wrapper(Mode::DropContext);
    run_conformance_with(kms, &key, &Capabilities::strict().contexts_unambiguous(false)).await;
}

/// The same with every cryptographic relaxation declared.
#[tokio::test]
#[should_panic(expected = "decrypt with a wrong context")]
async fn ignoring_the_context_fails_under_every_relaxation() {
    let (kms, key) = wrapper(Mode::DropContext);
    run_conformance_with(kms, &key, &most_relaxed()).await;
}

#[tokio::test]
async fn aws_encrypt_range_passes_when_declared() {
    let (kms, key) = wrapper(Mode::AwsEncryptRange);
    run_conformance_with(kms, &key, &Capabilities::strict().direct_encrypt(1..=4096)).await;
}

#[tokio::test]
#[should_panic(expected = "encrypt/decrypt of 0 bytes: unexpected error")]
async fn aws_encrypt_range_fails_the_strict_suite() {
    let (kms, key) = wrapper(Mode::AwsEncryptRange);
    run_conformance(kms, &key).await;
}

/// A declared range is enforced: the mock takes 0 bytes, which the declaration says it refuses.
#[tokio::test]
#[should_panic(expected = "encrypt of 0 bytes (below the declared range 1..=4096): expected InvalidRequest, got Ok")]
async fn a_declared_encrypt_range_is_checked_below() {
    let (kms, key) = wrapper(Mode::Faithful);
    run_conformance_with(kms, &key, &Capabilities::strict().direct_encrypt(1..=4096)).await;
}

/// ... and above: the mock takes 4097 bytes.
#[tokio::test]
#[should_panic(expected = "encrypt of 4097 bytes (above the declared range 0..=4096)")]
async fn a_declared_encrypt_range_is_checked_above() {
    let (kms, key) = wrapper(Mode::Faithful);
    run_conformance_with(kms, &key, &Capabilities::strict().direct_encrypt(0..=4096)).await;
}

#[tokio::test]
async fn opaque_context_errors_pass_when_declared() {
    let (kms, key) = wrapper(Mode::OpaqueContextErrors);
    let caps = Capabilities::strict().wrong_context(WrongContextReport::InvalidCiphertext);
    run_conformance_with(kms, &key, &caps).await;
}

#[tokio::test]
#[should_panic(expected = "expected WrongContext, got invalid or tampered KMS ciphertext")]
async fn opaque_context_errors_fail_the_strict_suite() {
    let (kms, key) = wrapper(Mode::OpaqueContextErrors);
    run_conformance(kms, &key).await;
}

/// The declared error is the one expected, not one of two: the mock says `WrongContext`.
#[tokio::test]
#[should_panic(
    expected = "expected InvalidCiphertext (declared: wrong contexts look like damaged blobs), got wrong encryption context"
)]
async fn a_declared_context_error_is_checked() {
    let (kms, key) = wrapper(Mode::Faithful);
    let caps = Capabilities::strict().wrong_context(WrongContextReport::InvalidCiphertext);
    run_conformance_with(kms, &key, &caps).await;
}

// ---------------------------------------------------------------------------------------------
// Key-management quirks

/// How [`Managed`] bends the mock's key management.
#[derive(Debug, Default, Clone, Copy)]
struct Quirks {
    /// Aliases answer `Unsupported` (Transit).
    no_aliases: bool,
    /// enable / disable answer `Unsupported` (Transit).
    no_enable_disable: bool,
    /// schedule / cancel deletion answer `Unsupported` (Transit).
    no_scheduled_deletion: bool,
    /// set_min_decryption_version answers `Unsupported` (AWS).
    no_min_version: bool,
    /// States are recorded and reported but not enforced; enabling a key pending deletion
    /// forgets the deletion, cancelling a deletion that is not pending disables the key (moto).
    states_not_enforced: bool,
    /// State changes are accepted and forgotten: describe keeps saying `Enabled`.
    states_ignored: bool,
    /// `rotate_key` succeeds without a new version (moto reports no versions).
    rotation_noop: bool,
}

/// The mock with a `KeyManager` that has some other backend's (or a broken backend's) quirks.
#[derive(Debug)]
struct Managed {
    inner: MockKms,
    q: Quirks,
    /// State overrides by canonical key id, for `states_not_enforced`.
    states: Mutex<HashMap<String, (KeyState, Option<SystemTime>)>>,
}

fn managed(q: Quirks) -> Arc<Managed> {
    Arc::new(Managed { inner: MockKms::new(), q, states: Mutex::new(HashMap::new()) })
}

fn unsupported<T>(operation: &'static str) -> Result<T, KmsError> {
    Err(KmsError::Unsupported { operation, backend: "mock".into() })
}

impl Managed {
    fn overlay(&self, mut m: KeyMetadata) -> KeyMetadata {
        if let Some((state, date)) = self.states.lock().unwrap().get(&m.key_id) {
            (m.state, m.deletion_date) = (*state, *date);
        }
        m
    }

    async fn id(&self, key: &str) -> Result<String, KmsError> {
        Ok(self.inner.describe_key(key).await?.key_id)
    }

    async fn set_state(&self, key: &str, state: Option<(KeyState, Option<SystemTime>)>) -> Result<(), KmsError> {
        let id = self.id(key).await?;
        let mut states = self.states.lock().unwrap();
        match state {
            Some(s) => states.insert(id, s),
            None => states.remove(&id),
        };
        Ok(())
    }
}

#[async_trait::async_trait]
impl Kms for Managed {
    fn backend(&self) -> &str {
        self.inner.backend()
    }
    async fn generate_data_key(&self, key: &str, context: &EncryptionContext) -> Result<GeneratedDataKey, KmsError> {
        self.inner.generate_data_key(key, context).await
    }
    async fn decrypt(&self, wrapped: &WrappedKey, context: &EncryptionContext) -> Result<Decrypted, KmsError> {
        self.inner.decrypt(wrapped, context).await
    }
    async fn encrypt(&self, key: &str, plaintext: &[u8], context: &EncryptionContext) -> Result<WrappedKey, KmsError> {
        self.inner.encrypt(key, plaintext, context).await
    }
    fn key_manager(&self) -> Option<&dyn KeyManager> {
        Some(self)
    }
}

#[async_trait::async_trait]
impl KeyManager for Managed {
    async fn create_key(&self, spec: &KeySpec) -> Result<KeyMetadata, KmsError> {
        self.inner.create_key(spec).await
    }
    async fn describe_key(&self, key: &str) -> Result<KeyMetadata, KmsError> {
        Ok(self.overlay(self.inner.describe_key(key).await?))
    }
    async fn list_keys(&self) -> Result<Vec<KeyMetadata>, KmsError> {
        Ok(self.inner.list_keys().await?.into_iter().map(|m| self.overlay(m)).collect())
    }
    async fn create_alias(&self, alias: &str, key: &str) -> Result<(), KmsError> {
        if self.q.no_aliases {
            return unsupported("create_alias");
        }
        self.inner.create_alias(alias, key).await
    }
    async fn delete_alias(&self, alias: &str) -> Result<(), KmsError> {
        if self.q.no_aliases {
            return unsupported("delete_alias");
        }
        self.inner.delete_alias(alias).await
    }
    async fn list_aliases(&self) -> Result<Vec<Alias>, KmsError> {
        if self.q.no_aliases {
            return unsupported("list_aliases");
        }
        self.inner.list_aliases().await
    }
    async fn rotate_key(&self, key: &str) -> Result<KeyMetadata, KmsError> {
        if self.q.rotation_noop {
            return self.describe_key(key).await;
        }
        self.inner.rotate_key(key).await
    }
    async fn enable_key(&self, key: &str) -> Result<(), KmsError> {
        match self.q {
            Quirks { no_enable_disable: true, .. } => unsupported("enable_key"),
            Quirks { states_ignored: true, .. } => Ok(()),
            Quirks { states_not_enforced: true, .. } => self.set_state(key, None).await,
            _ => self.inner.enable_key(key).await,
        }
    }
    async fn disable_key(&self, key: &str) -> Result<(), KmsError> {
        match self.q {
            Quirks { no_enable_disable: true, .. } => unsupported("disable_key"),
            Quirks { states_ignored: true, .. } => Ok(()),
            Quirks { states_not_enforced: true, .. } => self.set_state(key, Some((KeyState::Disabled, None))).await,
            _ => self.inner.disable_key(key).await,
        }
    }
    async fn schedule_key_deletion(&self, key: &str, pending_days: u32) -> Result<KeyMetadata, KmsError> {
        if self.q.no_scheduled_deletion {
            return unsupported("schedule_key_deletion");
        }
        if !(self.q.states_ignored || self.q.states_not_enforced) {
            return self.inner.schedule_key_deletion(key, pending_days).await;
        }
        if !(7..=30).contains(&pending_days) {
            return Err(KmsError::InvalidRequest { message: "deletion window out of range".into() });
        }
        if self.q.states_not_enforced {
            let when = SystemTime::now() + Duration::from_secs(u64::from(pending_days) * 86_400);
            self.set_state(key, Some((KeyState::PendingDeletion, Some(when)))).await?;
        }
        self.describe_key(key).await
    }
    async fn cancel_key_deletion(&self, key: &str) -> Result<(), KmsError> {
        match self.q {
            Quirks { no_scheduled_deletion: true, .. } => unsupported("cancel_key_deletion"),
            Quirks { states_ignored: true, .. } => Ok(()),
            Quirks { states_not_enforced: true, .. } => self.set_state(key, Some((KeyState::Disabled, None))).await,
            _ => self.inner.cancel_key_deletion(key).await,
        }
    }
    async fn set_min_decryption_version(&self, key: &str, version: &str) -> Result<(), KmsError> {
        if self.q.no_min_version {
            return unsupported("set_min_decryption_version");
        }
        self.inner.set_min_decryption_version(key, version).await
    }
}

/// Vault Transit's shape: no aliases, no enable / disable, no scheduled deletion.
fn transit_quirks() -> Quirks {
    Quirks { no_aliases: true, no_enable_disable: true, no_scheduled_deletion: true, ..Quirks::default() }
}

fn transit_caps() -> Capabilities {
    Capabilities::strict().aliases(false).enable_disable(false).scheduled_deletion(false)
}

/// moto's shape: states not enforced, no versions, no minimum decryption version.
fn moto_quirks() -> Quirks {
    Quirks { states_not_enforced: true, rotation_noop: true, no_min_version: true, ..Quirks::default() }
}

fn moto_caps() -> Capabilities {
    Capabilities::strict().key_states_enforced(false).rotation_changes_version(false).min_decryption_version(false)
}

#[tokio::test]
async fn faithful_managed_wrapper_conforms() {
    run_key_management_conformance(managed(Quirks::default())).await;
}

#[tokio::test]
async fn transit_shape_passes_when_declared() {
    let kms = managed(transit_quirks());
    let key = kms.inner.create_default_key();
    run_conformance_with(kms.clone(), &key, &transit_caps()).await;
    run_key_management_conformance_with(kms, &transit_caps()).await;
}

#[tokio::test]
#[should_panic(expected = "create_alias: unexpected error: operation create_alias is not supported")]
async fn transit_shape_fails_the_strict_suite() {
    run_key_management_conformance(managed(transit_quirks())).await;
}

/// Declaring an operation unsupported is checked: the mock has aliases, so `create_alias`
/// succeeding is a failure.
#[tokio::test]
#[should_panic(
    expected = "create_alias (declared unsupported: Capabilities::aliases is false): expected Unsupported, got Ok"
)]
async fn a_declared_unsupported_operation_must_say_so() {
    run_key_management_conformance_with(managed(Quirks::default()), &Capabilities::strict().aliases(false)).await;
}

#[tokio::test]
#[should_panic(
    expected = "schedule_key_deletion (declared unsupported: Capabilities::scheduled_deletion is false): expected Unsupported"
)]
async fn a_declared_unsupported_deletion_must_say_so() {
    let caps = Capabilities::strict().scheduled_deletion(false);
    run_key_management_conformance_with(managed(Quirks::default()), &caps).await;
}

/// `Unsupported` from an operation declared supported is a failure, not a skip.
#[tokio::test]
#[should_panic(
    expected = "set_min_decryption_version to the newest version: unexpected error: operation set_min_decryption_version is not supported"
)]
async fn unsupported_min_version_fails_when_declared_supported() {
    let q = Quirks { no_min_version: true, ..Quirks::default() };
    run_key_management_conformance(managed(q)).await;
}

#[tokio::test]
async fn moto_shape_passes_when_declared() {
    run_key_management_conformance_with(managed(moto_quirks()), &moto_caps()).await;
}

#[tokio::test]
#[should_panic(expected = "rotate_key: the current version did not change")]
async fn moto_shape_fails_the_strict_suite() {
    run_key_management_conformance(managed(moto_quirks())).await;
}

#[tokio::test]
#[should_panic(expected = "generate_data_key under a disabled key: expected KeyDisabled, got Ok")]
async fn unenforced_states_fail_the_strict_suite() {
    let q = Quirks { states_not_enforced: true, ..Quirks::default() };
    run_key_management_conformance(managed(q)).await;
}

/// Tolerating unenforced states does not tolerate a backend that forgets them: describe must
/// still report the key disabled.
#[tokio::test]
#[should_panic(expected = "disable_key: state Enabled")]
async fn ignored_states_fail_even_when_enforcement_is_relaxed() {
    let q = Quirks { states_ignored: true, ..moto_quirks() };
    run_key_management_conformance_with(managed(q), &moto_caps()).await;
}
