//! [`Kms`] and [`KeyManager`] for [`LocalKms`].

use async_trait::async_trait;
use zeroize::Zeroizing;

use envseal_core::kms::{
    Alias, Decrypted, GeneratedDataKey, KeyMetadata, KeySpec, KeyUpdate, MAX_DELETION_DAYS, MAX_DIRECT_ENCRYPT,
    MIN_DELETION_DAYS, ProtectionLevel,
};
use envseal_core::{DataKey, EncryptionContext, KeyManager, Kms, KmsError, SecretBytes, WrappedKey};

use crate::crypto;
use crate::format::{self, KeyRecord, KeystoreFile, StateRecord};
use crate::store::LocalKms;

/// Backend name, recorded in every [`WrappedKey`] this keystore makes.
pub const BACKEND: &str = "local";

const SECONDS_PER_DAY: u64 = 24 * 60 * 60;

fn not_found(key: &str) -> KmsError {
    KmsError::KeyNotFound { key: key.to_string() }
}

fn invalid(message: impl Into<String>) -> KmsError {
    KmsError::InvalidRequest { message: message.into() }
}

/// The key named by `key` (id or alias).
fn resolve<'a>(file: &'a KeystoreFile, key: &str, now: u64) -> Result<&'a KeyRecord, KmsError> {
    file.find(key, now).map(|i| &file.keys[i]).ok_or_else(|| not_found(key))
}

fn resolve_mut<'a>(file: &'a mut KeystoreFile, key: &str, now: u64) -> Result<&'a mut KeyRecord, KmsError> {
    let i = file.find(key, now).ok_or_else(|| not_found(key))?;
    Ok(&mut file.keys[i])
}

/// Refuses cryptographic use of a key that is not enabled.
fn ensure_enabled(key: &KeyRecord) -> Result<(), KmsError> {
    match key.state {
        StateRecord::Enabled => Ok(()),
        StateRecord::Disabled => Err(KmsError::KeyDisabled { key: key.id.clone() }),
        StateRecord::PendingDeletion => Err(KmsError::KeyPendingDeletion { key: key.id.clone() }),
    }
}

/// Refuses a state change on a key pending deletion (cancel the deletion first).
fn ensure_not_pending(key: &KeyRecord) -> Result<(), KmsError> {
    if key.state == StateRecord::PendingDeletion {
        return Err(KmsError::KeyPendingDeletion { key: key.id.clone() });
    }
    Ok(())
}

fn validate_spec(spec: &KeySpec) -> Result<(), KmsError> {
    if spec.protection_level == ProtectionLevel::Hsm {
        return Err(KmsError::Unsupported { operation: "create_key with HSM protection", backend: BACKEND.into() });
    }
    validate_attributes(&spec.description, &spec.tags)
}

/// The limits of the file format on a description and tags.
fn validate_attributes(description: &str, tags: &std::collections::BTreeMap<String, String>) -> Result<(), KmsError> {
    if description.len() > format::MAX_DESCRIPTION_LEN {
        return Err(invalid(format!("description longer than {} bytes", format::MAX_DESCRIPTION_LEN)));
    }
    if tags.len() > format::MAX_TAGS {
        return Err(invalid(format!("more than {} tags", format::MAX_TAGS)));
    }
    for (k, v) in tags {
        if k.is_empty() || k.len() > format::MAX_TAG_KEY_LEN || v.len() > format::MAX_TAG_VALUE_LEN {
            return Err(invalid(format!(
                "tag keys must be 1..={} bytes and values at most {} bytes",
                format::MAX_TAG_KEY_LEN,
                format::MAX_TAG_VALUE_LEN
            )));
        }
    }
    Ok(())
}

/// Adds a version with fresh material to `k` (which must be enabled).
fn add_version(k: &mut KeyRecord, session: &crate::store::Session<'_>) -> Result<(), KmsError> {
    ensure_enabled(k)?;
    let next = k.current_version().checked_add(1).ok_or_else(|| invalid("the key has too many versions"))?;
    k.versions.push(session.new_version(&k.id, next));
    k.refresh_next_rotation();
    Ok(())
}

impl LocalKms {
    /// Applies automatic rotation: every enabled key whose period has passed since its newest
    /// version gets one new version (one, however many periods passed). Returns the ids of the
    /// keys rotated. Called before each wrap for the key it uses, and by `envseal kms serve` on
    /// a timer for all keys.
    ///
    /// # Errors
    /// The keystore's I/O errors.
    pub fn rotate_due_keys(&self) -> Result<Vec<String>, KmsError> {
        let due = self.read(|file, session| Ok(file.keys.iter().any(|k| k.rotation_due(session.now))))?;
        if !due {
            return Ok(Vec::new());
        }
        self.mutate(|file, session| {
            let mut rotated = Vec::new();
            for k in file.keys.iter_mut().filter(|k| k.rotation_due(session.now)) {
                add_version(k, session)?;
                rotated.push(k.id.clone());
            }
            Ok(rotated)
        })
    }

    /// Rotates `key` first if its automatic rotation is due (checked again under the write
    /// lock, so two processes never both rotate).
    fn rotate_if_due(&self, key: &str) -> Result<(), KmsError> {
        let due = self.read(|file, session| {
            Ok(file.find(key, session.now).is_some_and(|i| file.keys[i].rotation_due(session.now)))
        })?;
        if due {
            self.mutate(|file, session| {
                let now = session.now;
                let k = resolve_mut(file, key, now)?;
                if k.rotation_due(now) {
                    add_version(k, session)?;
                }
                Ok(())
            })?;
        }
        Ok(())
    }

    /// Wraps `plaintext` under the current version of `key` (rotated first if due).
    fn wrap_under(&self, key: &str, plaintext: &[u8], context: &EncryptionContext) -> Result<WrappedKey, KmsError> {
        self.rotate_if_due(key)?;
        let canonical = context.canonical_bytes();
        self.read(|file, session| {
            let k = resolve(file, key, session.now)?;
            ensure_enabled(k)?;
            let version = k.current_version();
            let keys = session.version_keys(k, version)?;
            let blob = crypto::wrap(&keys, session.keystore_id(), &k.id, version, &canonical, plaintext);
            Ok(WrappedKey { backend: BACKEND.into(), key_id: k.id.clone(), key_version: version.to_string(), blob })
        })
    }

    /// Opens a blob (README §Wrapped blob, decryption order).
    fn unwrap_blob(
        &self,
        wrapped: &WrappedKey,
        context: &EncryptionContext,
    ) -> Result<(Zeroizing<Vec<u8>>, String, String), KmsError> {
        let parsed = crypto::parse(&wrapped.blob)?;
        let canonical = context.canonical_bytes();
        self.read(|file, session| {
            if &parsed.keystore_id != session.keystore_id() {
                // Key ids are random: a blob naming one of this keystore's keys but another
                // keystore id was altered. Otherwise it was sealed with another local keystore:
                // the key is not here and the blob may be intact, so say that, not "tampered".
                if file.keys.iter().any(|k| k.id == parsed.key_id) {
                    return Err(KmsError::InvalidCiphertext);
                }
                return Err(KmsError::KeyNotFound {
                    key: format!("{} (wrapped by another local keystore)", parsed.key_id),
                });
            }
            let index = file
                .keys
                .iter()
                .position(|k| k.id == parsed.key_id && !k.is_expired(session.now))
                .ok_or_else(|| not_found(parsed.key_id))?;
            // The entry's key id and version sit outside the blob; they must name what the
            // blob says (an alias of the same key is fine).
            if !wrapped.key_id.is_empty() && file.find(&wrapped.key_id, session.now) != Some(index) {
                return Err(KmsError::InvalidCiphertext);
            }
            if !wrapped.key_version.is_empty() && format::parse_version(&wrapped.key_version) != Some(parsed.version) {
                return Err(KmsError::InvalidCiphertext);
            }
            let k = &file.keys[index];
            ensure_enabled(k)?;
            if parsed.version == 0 || parsed.version > k.current_version() {
                return Err(KmsError::KeyVersionNotFound { key: k.id.clone(), version: parsed.version.to_string() });
            }
            if let Some(min) = k.min_version()
                && parsed.version < min
            {
                return Err(KmsError::KeyVersionBelowMinimum {
                    key: k.id.clone(),
                    version: parsed.version.to_string(),
                    min: min.to_string(),
                });
            }
            let keys = session.version_keys(k, parsed.version)?;
            let plaintext = parsed.open(&keys, &canonical)?;
            Ok((plaintext, k.id.clone(), parsed.version.to_string()))
        })
    }
}

#[async_trait]
impl Kms for LocalKms {
    fn backend(&self) -> &str {
        BACKEND
    }

    async fn generate_data_key(&self, key: &str, context: &EncryptionContext) -> Result<GeneratedDataKey, KmsError> {
        let data_key = DataKey::generate();
        let wrapped = self.wrap_under(key, data_key.expose_secret(), context)?;
        Ok(GeneratedDataKey { data_key, wrapped })
    }

    async fn decrypt(&self, wrapped: &WrappedKey, context: &EncryptionContext) -> Result<Decrypted, KmsError> {
        let (plaintext, key_id, key_version) = self.unwrap_blob(wrapped, context)?;
        Ok(Decrypted { plaintext: SecretBytes::from(plaintext), key_id, key_version })
    }

    async fn encrypt(&self, key: &str, plaintext: &[u8], context: &EncryptionContext) -> Result<WrappedKey, KmsError> {
        if plaintext.len() > MAX_DIRECT_ENCRYPT {
            return Err(KmsError::PlaintextTooLarge { size: plaintext.len(), limit: MAX_DIRECT_ENCRYPT });
        }
        self.wrap_under(key, plaintext, context)
    }

    /// Rewraps inside the keystore: the plaintext stays in a zeroizing buffer and never leaves
    /// this call.
    async fn re_encrypt(
        &self,
        wrapped: &WrappedKey,
        source_context: &EncryptionContext,
        destination_key: &str,
        destination_context: &EncryptionContext,
    ) -> Result<WrappedKey, KmsError> {
        let (plaintext, _, _) = self.unwrap_blob(wrapped, source_context)?;
        if plaintext.len() > MAX_DIRECT_ENCRYPT {
            return Err(KmsError::PlaintextTooLarge { size: plaintext.len(), limit: MAX_DIRECT_ENCRYPT });
        }
        self.wrap_under(destination_key, &plaintext, destination_context)
    }

    fn key_manager(&self) -> Option<&dyn KeyManager> {
        Some(self)
    }
}

#[async_trait]
impl KeyManager for LocalKms {
    async fn create_key(&self, spec: &KeySpec) -> Result<KeyMetadata, KmsError> {
        validate_spec(spec)?;
        self.mutate(|file, session| {
            let key = session.new_key(spec.description.clone(), spec.tags.clone());
            let meta = key.metadata();
            file.keys.push(key);
            Ok(meta)
        })
    }

    async fn describe_key(&self, key: &str) -> Result<KeyMetadata, KmsError> {
        self.read(|file, session| resolve(file, key, session.now).map(KeyRecord::metadata))
    }

    async fn list_keys(&self) -> Result<Vec<KeyMetadata>, KmsError> {
        self.read(|file, session| {
            Ok(file.keys.iter().filter(|k| !k.is_expired(session.now)).map(KeyRecord::metadata).collect())
        })
    }

    async fn create_alias(&self, alias: &str, key: &str) -> Result<(), KmsError> {
        if !format::valid_alias(alias) {
            return Err(invalid(format!(
                "malformed alias {alias:?}: expected `alias/` then letters, digits, `/`, `_` or `-` (at most 256 bytes)"
            )));
        }
        self.mutate(|file, session| {
            let index = file.find(key, session.now).ok_or_else(|| not_found(key))?;
            if file.alias_owner(alias).is_some() {
                return Err(KmsError::AlreadyExists { what: format!("alias {alias}") });
            }
            let k = &mut file.keys[index];
            k.aliases.push(alias.to_string());
            k.aliases.sort();
            Ok(())
        })
    }

    async fn delete_alias(&self, alias: &str) -> Result<(), KmsError> {
        self.mutate(|file, _| {
            let index = file.alias_owner(alias).ok_or_else(|| not_found(alias))?;
            file.keys[index].aliases.retain(|a| a != alias);
            Ok(())
        })
    }

    async fn list_aliases(&self) -> Result<Vec<Alias>, KmsError> {
        self.read(|file, session| {
            let mut out: Vec<Alias> = file
                .keys
                .iter()
                .filter(|k| !k.is_expired(session.now))
                .flat_map(|k| k.aliases.iter().map(|a| Alias { name: a.clone(), key_id: k.id.clone() }))
                .collect();
            out.sort_by(|a, b| a.name.cmp(&b.name));
            Ok(out)
        })
    }

    async fn rotate_key(&self, key: &str) -> Result<KeyMetadata, KmsError> {
        self.mutate(|file, session| {
            let k = resolve_mut(file, key, session.now)?;
            add_version(k, session)?;
            Ok(k.metadata())
        })
    }

    async fn enable_key(&self, key: &str) -> Result<(), KmsError> {
        self.mutate(|file, session| {
            let k = resolve_mut(file, key, session.now)?;
            ensure_not_pending(k)?;
            k.state = StateRecord::Enabled;
            Ok(())
        })
    }

    async fn disable_key(&self, key: &str) -> Result<(), KmsError> {
        self.mutate(|file, session| {
            let k = resolve_mut(file, key, session.now)?;
            ensure_not_pending(k)?;
            k.state = StateRecord::Disabled;
            Ok(())
        })
    }

    async fn schedule_key_deletion(&self, key: &str, pending_days: u32) -> Result<KeyMetadata, KmsError> {
        if !(MIN_DELETION_DAYS..=MAX_DELETION_DAYS).contains(&pending_days) {
            return Err(invalid(format!(
                "pending window of {pending_days} days is outside {MIN_DELETION_DAYS}..={MAX_DELETION_DAYS}"
            )));
        }
        self.mutate(|file, session| {
            let now = session.now;
            let k = resolve_mut(file, key, now)?;
            ensure_not_pending(k)?;
            k.state = StateRecord::PendingDeletion;
            k.deletion_date = Some(now + u64::from(pending_days) * SECONDS_PER_DAY);
            Ok(k.metadata())
        })
    }

    async fn cancel_key_deletion(&self, key: &str) -> Result<(), KmsError> {
        self.mutate(|file, session| {
            let k = resolve_mut(file, key, session.now)?;
            if k.state != StateRecord::PendingDeletion {
                return Err(invalid(format!("key {} is not pending deletion", k.id)));
            }
            k.state = StateRecord::Disabled;
            k.deletion_date = None;
            Ok(())
        })
    }

    async fn set_min_decryption_version(&self, key: &str, version: &str) -> Result<(), KmsError> {
        self.mutate(|file, session| {
            let k = resolve_mut(file, key, session.now)?;
            let v = format::parse_version(version)
                .filter(|&v| v <= k.current_version())
                .ok_or_else(|| KmsError::KeyVersionNotFound { key: k.id.clone(), version: version.to_string() })?;
            k.min_decryption_version = Some(v.to_string());
            Ok(())
        })
    }

    async fn update_key(&self, key: &str, update: &KeyUpdate) -> Result<KeyMetadata, KmsError> {
        if update.rotation_period == Some(Some(std::time::Duration::ZERO)) {
            return Err(invalid("the rotation period must be positive"));
        }
        self.mutate(|file, session| {
            let k = resolve_mut(file, key, session.now)?;
            ensure_not_pending(k)?;
            let mut tags = k.tags.clone();
            for t in &update.remove_tags {
                tags.remove(t);
            }
            tags.extend(update.set_tags.iter().map(|(a, b)| (a.clone(), b.clone())));
            let description = update.description.clone().unwrap_or_else(|| k.description.clone());
            validate_attributes(&description, &tags)?;
            k.tags = tags;
            k.description = description;
            if let Some(p) = update.rotation_period {
                // Whole seconds, at least one (the file stores seconds).
                k.rotation_interval_secs = p.map(|d| d.as_secs().max(1));
                k.refresh_next_rotation();
            }
            Ok(k.metadata())
        })
    }

    async fn update_alias(&self, alias: &str, key: &str) -> Result<(), KmsError> {
        self.mutate(|file, session| {
            let target = file.find(key, session.now).ok_or_else(|| not_found(key))?;
            let owner = file.alias_owner(alias).ok_or_else(|| not_found(alias))?;
            if owner != target {
                file.keys[owner].aliases.retain(|a| a != alias);
                let k = &mut file.keys[target];
                k.aliases.push(alias.to_string());
                k.aliases.sort();
            }
            Ok(())
        })
    }
}
