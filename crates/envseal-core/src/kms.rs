//! The KMS traits: what envseal needs from a key management service.
//!
//! [`Kms`] holds the cryptographic operations every backend has (generate a data key, decrypt,
//! encrypt ≤ 6 KiB, re-encrypt). [`KeyManager`] holds key administration, which only some
//! backends expose. Both are async and dyn-compatible (`Arc<dyn Kms>`), because most backends
//! do network I/O and the CLI picks one at run time.

use std::collections::BTreeMap;
use std::fmt;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;

use crate::context::EncryptionContext;
use crate::datakey::{DataKey, SecretBytes};
use crate::error::KmsError;

/// Most bytes [`Kms::encrypt`] accepts (6 KiB, Alibaba Cloud KMS's limit).
pub const MAX_DIRECT_ENCRYPT: usize = 6 * 1024;

/// A key encrypted ("wrapped") by a KMS key, as stored in a sealed file.
///
/// `blob` is the KMS's ciphertext (opaque to envseal); `key_id` and `key_version` say which
/// key and version wrapped it, so rotation jobs compare versions instead of guessing.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct WrappedKey {
    /// Backend name (`mock`, `local`, `aws-kms`, ...), as returned by [`Kms::backend`].
    pub backend: String,
    /// Canonical key id (not an alias).
    pub key_id: String,
    /// Key version that wrapped the blob.
    pub key_version: String,
    /// The KMS ciphertext.
    pub blob: Vec<u8>,
}

impl fmt::Debug for WrappedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The blob is not secret, but it is long and useless in logs.
        f.debug_struct("WrappedKey")
            .field("backend", &self.backend)
            .field("key_id", &self.key_id)
            .field("key_version", &self.key_version)
            .field("blob_len", &self.blob.len())
            .finish()
    }
}

/// A fresh data key: plaintext for local use, and the same key wrapped by the KMS.
#[derive(Debug)]
pub struct GeneratedDataKey {
    /// The plaintext key. Drop it as soon as the data is sealed.
    pub data_key: DataKey,
    /// The wrapped copy, to store beside the ciphertext.
    pub wrapped: WrappedKey,
}

/// The result of [`Kms::decrypt`].
#[derive(Debug)]
pub struct Decrypted {
    /// The plaintext.
    pub plaintext: SecretBytes,
    /// Key id that had wrapped it.
    pub key_id: String,
    /// Key version that had wrapped it (found from the blob).
    pub key_version: String,
}

/// A decrypted data key.
#[derive(Debug)]
pub struct UnwrappedDataKey {
    /// The plaintext key.
    pub data_key: DataKey,
    /// Key id that had wrapped it.
    pub key_id: String,
    /// Key version that had wrapped it.
    pub key_version: String,
}

/// Cryptographic KMS operations.
///
/// Implementations must be thread-safe; every method may be called concurrently.
#[async_trait]
pub trait Kms: Send + Sync + fmt::Debug {
    /// Short backend name recorded in wrapped-key entries (`mock`, `local`, `aws-kms`, ...).
    fn backend(&self) -> &str;

    /// Generates a fresh 256-bit data key under `key` (id or alias), bound to `context`.
    ///
    /// # Errors
    /// [`KmsError::KeyNotFound`], [`KmsError::KeyDisabled`], [`KmsError::KeyPendingDeletion`],
    /// [`KmsError::AccessDenied`], [`KmsError::Throttled`], [`KmsError::Unavailable`].
    async fn generate_data_key(&self, key: &str, context: &EncryptionContext) -> Result<GeneratedDataKey, KmsError>;

    /// Decrypts a blob produced by this KMS. The key version is found from the blob.
    ///
    /// # Errors
    /// As [`Kms::generate_data_key`], plus [`KmsError::WrongContext`] (where the backend can
    /// tell), [`KmsError::InvalidCiphertext`], [`KmsError::KeyVersionNotFound`] and
    /// [`KmsError::KeyVersionBelowMinimum`].
    async fn decrypt(&self, wrapped: &WrappedKey, context: &EncryptionContext) -> Result<Decrypted, KmsError>;

    /// Encrypts a small secret (at most [`MAX_DIRECT_ENCRYPT`] bytes) directly under `key`.
    ///
    /// # Errors
    /// [`KmsError::PlaintextTooLarge`] above the limit; otherwise as
    /// [`Kms::generate_data_key`].
    async fn encrypt(&self, key: &str, plaintext: &[u8], context: &EncryptionContext) -> Result<WrappedKey, KmsError>;

    /// Re-wraps a blob under `destination_key` and `destination_context`.
    ///
    /// Backends that can do this on the server (AWS/Alibaba ReEncrypt, Vault rewrap) override
    /// it so the plaintext never leaves the KMS. The default decrypts and encrypts again, which
    /// briefly holds the plaintext in this process (zeroized after).
    ///
    /// # Errors
    /// Those of [`Kms::decrypt`] for the source, and of [`Kms::encrypt`] for the destination.
    async fn re_encrypt(
        &self,
        wrapped: &WrappedKey,
        source_context: &EncryptionContext,
        destination_key: &str,
        destination_context: &EncryptionContext,
    ) -> Result<WrappedKey, KmsError> {
        let d = self.decrypt(wrapped, source_context).await?;
        self.encrypt(destination_key, d.plaintext.expose_secret(), destination_context).await
    }

    /// The key-management side of this backend, if it has one.
    fn key_manager(&self) -> Option<&dyn KeyManager> {
        None
    }
}

/// Decrypts a wrapped data key and checks that it is 256 bits.
///
/// # Errors
/// Those of [`Kms::decrypt`]; [`KmsError::InvalidCiphertext`] if the plaintext is not 32 bytes.
pub async fn decrypt_data_key(
    kms: &dyn Kms,
    wrapped: &WrappedKey,
    context: &EncryptionContext,
) -> Result<UnwrappedDataKey, KmsError> {
    let d = kms.decrypt(wrapped, context).await?;
    Ok(UnwrappedDataKey {
        data_key: DataKey::try_from_secret(&d.plaintext)?,
        key_id: d.key_id,
        key_version: d.key_version,
    })
}

/// Where a key's material lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ProtectionLevel {
    /// Software-protected key.
    Software,
    /// Key inside a hardware security module.
    Hsm,
}

impl ProtectionLevel {
    /// `SOFTWARE` or `HSM`, as the cloud KMS APIs spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            ProtectionLevel::Software => "SOFTWARE",
            ProtectionLevel::Hsm => "HSM",
        }
    }
}

/// Lifecycle state of a key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum KeyState {
    /// Usable.
    Enabled,
    /// Exists but refuses every cryptographic operation.
    Disabled,
    /// Scheduled for deletion; refuses every cryptographic operation until cancelled.
    PendingDeletion,
}

impl KeyState {
    /// `Enabled`, `Disabled` or `PendingDeletion`.
    pub fn as_str(self) -> &'static str {
        match self {
            KeyState::Enabled => "Enabled",
            KeyState::Disabled => "Disabled",
            KeyState::PendingDeletion => "PendingDeletion",
        }
    }
}

/// What to create.
#[derive(Clone, Debug)]
pub struct KeySpec {
    /// Free text.
    pub description: String,
    /// Software or HSM.
    pub protection_level: ProtectionLevel,
    /// Tags (for attribute-based access policies).
    pub tags: BTreeMap<String, String>,
}

impl Default for KeySpec {
    fn default() -> Self {
        Self { description: String::new(), protection_level: ProtectionLevel::Software, tags: BTreeMap::new() }
    }
}

/// One version of a key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyVersionInfo {
    /// Version id (decimal ordinal for mock/local/Vault, a UUID on Alibaba).
    pub id: String,
    /// When it was created.
    pub created_at: SystemTime,
}

/// Description of a key.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct KeyMetadata {
    /// Canonical id.
    pub key_id: String,
    /// Free text.
    pub description: String,
    /// Lifecycle state.
    pub state: KeyState,
    /// Software or HSM.
    pub protection_level: ProtectionLevel,
    /// Creation time.
    pub created_at: SystemTime,
    /// Version used for new wraps.
    pub current_version: String,
    /// All versions, oldest first.
    pub versions: Vec<KeyVersionInfo>,
    /// Oldest version still allowed to decrypt, if a minimum is set.
    pub min_decryption_version: Option<String>,
    /// When deletion happens, if scheduled.
    pub deletion_date: Option<SystemTime>,
    /// Aliases pointing at this key.
    pub aliases: Vec<String>,
    /// Tags.
    pub tags: BTreeMap<String, String>,
    /// Automatic rotation period, if a rotation policy is on: a new version is made once the
    /// newest is this old (see [`KeyMetadata::next_rotation`]).
    pub rotation_period: Option<Duration>,
}

impl KeyMetadata {
    /// When automatic rotation makes the next version: the newest version's creation time
    /// (the key's, if no version is listed) plus [`KeyMetadata::rotation_period`]; `None`
    /// without a period.
    pub fn next_rotation(&self) -> Option<SystemTime> {
        let period = self.rotation_period?;
        let newest = self.versions.iter().map(|v| v.created_at).max().unwrap_or(self.created_at);
        newest.checked_add(period)
    }

    /// Whether automatic rotation is due at `now`: a period is set, the key is enabled, and
    /// [`KeyMetadata::next_rotation`] has passed. A disabled key or one pending deletion is not
    /// rotated (as on AWS and Alibaba Cloud).
    pub fn rotation_due(&self, now: SystemTime) -> bool {
        self.state == KeyState::Enabled && self.next_rotation().is_some_and(|t| t <= now)
    }

    /// Builds metadata; backends fill the rest of the fields as they know them.
    pub fn new(key_id: String, state: KeyState, created_at: SystemTime, current_version: String) -> Self {
        Self {
            key_id,
            description: String::new(),
            state,
            protection_level: ProtectionLevel::Software,
            created_at,
            current_version,
            versions: Vec::new(),
            min_decryption_version: None,
            deletion_date: None,
            aliases: Vec::new(),
            tags: BTreeMap::new(),
            rotation_period: None,
        }
    }
}

/// Changes to a key's attributes ([`KeyManager::update_key`]); fields left at their default
/// change nothing.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct KeyUpdate {
    /// A new description.
    pub description: Option<String>,
    /// Tags to add or overwrite.
    pub set_tags: BTreeMap<String, String>,
    /// Tag keys to remove (applied before `set_tags`).
    pub remove_tags: Vec<String>,
    /// `Some(Some(period))` turns automatic rotation on with this period, `Some(None)` turns it
    /// off.
    pub rotation_period: Option<Option<Duration>>,
}

impl KeyUpdate {
    /// Sets the description.
    pub fn description(mut self, d: impl Into<String>) -> Self {
        self.description = Some(d.into());
        self
    }

    /// Adds or overwrites a tag.
    pub fn tag(mut self, k: impl Into<String>, v: impl Into<String>) -> Self {
        self.set_tags.insert(k.into(), v.into());
        self
    }

    /// Removes a tag.
    pub fn untag(mut self, k: impl Into<String>) -> Self {
        self.remove_tags.push(k.into());
        self
    }

    /// Turns automatic rotation on (`Some(period)`) or off (`None`).
    pub fn rotation(mut self, period: Option<Duration>) -> Self {
        self.rotation_period = Some(period);
        self
    }
}

/// An alias and the key it points at.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Alias {
    /// Alias name, e.g. `alias/app`.
    pub name: String,
    /// Target key id.
    pub key_id: String,
}

/// Shortest deletion window accepted by [`KeyManager::schedule_key_deletion`], in days.
pub const MIN_DELETION_DAYS: u32 = 7;
/// Longest deletion window, in days.
pub const MAX_DELETION_DAYS: u32 = 30;

/// Key administration, for backends that expose it.
#[async_trait]
pub trait KeyManager: Send + Sync {
    /// Creates a key with one version.
    ///
    /// # Errors
    /// [`KmsError::AccessDenied`], [`KmsError::Unsupported`] (e.g. HSM on a software-only
    /// backend), transport errors.
    async fn create_key(&self, spec: &KeySpec) -> Result<KeyMetadata, KmsError>;

    /// Describes a key by id or alias.
    ///
    /// # Errors
    /// [`KmsError::KeyNotFound`].
    async fn describe_key(&self, key: &str) -> Result<KeyMetadata, KmsError>;

    /// Lists every key.
    ///
    /// # Errors
    /// Transport and permission errors.
    async fn list_keys(&self) -> Result<Vec<KeyMetadata>, KmsError>;

    /// Points `alias` (e.g. `alias/app`) at `key`.
    ///
    /// # Errors
    /// [`KmsError::AlreadyExists`], [`KmsError::KeyNotFound`], [`KmsError::InvalidRequest`]
    /// for a malformed alias.
    async fn create_alias(&self, alias: &str, key: &str) -> Result<(), KmsError>;

    /// Removes an alias (not the key).
    ///
    /// # Errors
    /// [`KmsError::KeyNotFound`] if no such alias.
    async fn delete_alias(&self, alias: &str) -> Result<(), KmsError>;

    /// Lists aliases.
    ///
    /// # Errors
    /// Transport and permission errors.
    async fn list_aliases(&self) -> Result<Vec<Alias>, KmsError>;

    /// Adds a version with new key material; new wraps use it, old versions still decrypt.
    /// Returns the updated metadata.
    ///
    /// # Errors
    /// [`KmsError::KeyNotFound`], [`KmsError::KeyDisabled`], [`KmsError::KeyPendingDeletion`].
    async fn rotate_key(&self, key: &str) -> Result<KeyMetadata, KmsError>;

    /// Enables a disabled key.
    ///
    /// # Errors
    /// [`KmsError::KeyNotFound`]; [`KmsError::KeyPendingDeletion`] (cancel deletion first).
    async fn enable_key(&self, key: &str) -> Result<(), KmsError>;

    /// Disables a key: every cryptographic operation fails until it is enabled.
    ///
    /// # Errors
    /// [`KmsError::KeyNotFound`]; [`KmsError::KeyPendingDeletion`].
    async fn disable_key(&self, key: &str) -> Result<(), KmsError>;

    /// Schedules deletion in `pending_days` ([`MIN_DELETION_DAYS`]..=[`MAX_DELETION_DAYS`]).
    ///
    /// # Errors
    /// [`KmsError::InvalidRequest`] for a window out of range; [`KmsError::KeyNotFound`].
    async fn schedule_key_deletion(&self, key: &str, pending_days: u32) -> Result<KeyMetadata, KmsError>;

    /// Cancels a scheduled deletion; the key comes back disabled, as on AWS and Alibaba.
    ///
    /// # Errors
    /// [`KmsError::InvalidRequest`] if no deletion is pending; [`KmsError::KeyNotFound`].
    async fn cancel_key_deletion(&self, key: &str) -> Result<(), KmsError>;

    /// Sets the oldest version allowed to decrypt. Older data then fails with
    /// [`KmsError::KeyVersionBelowMinimum`] until it is rewrapped.
    ///
    /// # Errors
    /// [`KmsError::KeyVersionNotFound`]; [`KmsError::Unsupported`].
    async fn set_min_decryption_version(&self, key: &str, version: &str) -> Result<(), KmsError>;

    /// Changes a key's description, tags or automatic rotation period; returns the updated
    /// metadata. A backend with automatic rotation makes a new version once
    /// [`KeyMetadata::rotation_due`] (the local keystore when the key is next used; `envseal
    /// kms serve` on a timer).
    ///
    /// # Errors
    /// [`KmsError::KeyNotFound`]; [`KmsError::KeyPendingDeletion`]; [`KmsError::InvalidRequest`]
    /// for a zero period; [`KmsError::Unsupported`] by default.
    async fn update_key(&self, key: &str, update: &KeyUpdate) -> Result<KeyMetadata, KmsError> {
        let _ = (key, update);
        Err(KmsError::Unsupported { operation: "update_key", backend: "this".into() })
    }

    /// Points an existing `alias` at another key, in one step.
    ///
    /// # Errors
    /// [`KmsError::KeyNotFound`] for an unknown alias or key; [`KmsError::Unsupported`] by
    /// default.
    async fn update_alias(&self, alias: &str, key: &str) -> Result<(), KmsError> {
        let _ = (alias, key);
        Err(KmsError::Unsupported { operation: "update_alias", backend: "this".into() })
    }
}
