//! The backend behind both APIs: an envseal [`Kms`] with its [`KeyManager`], automatic
//! rotation (the periods are the backend's; the timer is here), and the one mapping from a
//! wire encryption context to an [`EncryptionContext`].

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use envseal_core::kms::{KeyMetadata, KeyUpdate, MAX_DIRECT_ENCRYPT};
use envseal_core::{EncryptionContext, KeyManager, Kms, SecretBytes, WrappedKey};

use crate::error::{Class, Fault};

/// Prefix added to wire context keys that would otherwise be refused or collide (see
/// [`wire_context`]).
pub(crate) const ESCAPE: &str = "~";

/// Default rotation period (365 days), as on both clouds.
pub(crate) const DEFAULT_ROTATION: Duration = Duration::from_secs(365 * 86_400);

/// One day, as the clouds count rotation periods.
const DAY: Duration = Duration::from_secs(86_400);

/// The backend, shared by every request.
#[derive(Debug)]
pub(crate) struct Backend {
    kms: Arc<dyn Kms>,
    /// How long a day of a rotation period lasts here (a day, unless tests shorten it).
    rotation_day: Duration,
    /// (key, version) made by automatic rotation in this run (for ListKeyRotations).
    automatic: std::sync::Mutex<std::collections::HashSet<(String, String)>>,
}

/// A decrypted blob.
pub(crate) struct Opened {
    pub plaintext: SecretBytes,
    pub key_id: String,
    pub key_version: String,
}

/// Builds the context to bind from a wire context (AWS's map, Alibaba's JSON object).
///
/// envseal's [`EncryptionContext`] refuses keys with its reserved `envseal:` prefix from
/// users, but envseal's own cloud backends send exactly such keys to the KMS. So the map is
/// injective, and the identity for ordinary keys: a key that starts with `envseal:` or with
/// [`ESCAPE`] gets one more [`ESCAPE`] in front; every other key is kept. Two different wire
/// contexts never map to the same context, and a client never sees the mapping (contexts are
/// not echoed back). An empty key, or more entries or longer strings than core allows, is
/// `InvalidParameter`.
pub(crate) fn wire_context<'a>(
    pairs: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> Result<EncryptionContext, Fault> {
    let mut ctx = EncryptionContext::new();
    for (k, v) in pairs {
        let key = if k.starts_with(envseal_core::context::RESERVED_PREFIX) || k.starts_with(ESCAPE) {
            format!("{ESCAPE}{k}")
        } else {
            k.to_owned()
        };
        if ctx.get(&key).is_some() {
            return Err(Fault::invalid("the encryption context has a duplicate key"));
        }
        ctx.insert(key, v).map_err(|e| Fault::invalid(e.to_string()))?;
    }
    Ok(ctx)
}

impl Backend {
    pub(crate) fn new(kms: Arc<dyn Kms>, rotation_day: Duration) -> Self {
        Self { kms, rotation_day, automatic: Default::default() }
    }

    pub(crate) fn km(&self) -> Result<&dyn KeyManager, Fault> {
        self.kms.key_manager().ok_or_else(|| {
            Fault::new(Class::Unsupported, format!("the {} backend has no key management", self.kms.backend()))
        })
    }

    /// Metadata of a key named by id or alias.
    pub(crate) async fn describe(&self, key: &str) -> Result<KeyMetadata, Fault> {
        Ok(self.km()?.describe_key(key).await?)
    }

    /// The canonical id of a key named by id or alias.
    pub(crate) async fn resolve(&self, key: &str) -> Result<String, Fault> {
        Ok(self.describe(key).await?.key_id)
    }

    /// Opens a blob of this backend (the key is read from the blob).
    pub(crate) async fn open(&self, blob: Vec<u8>, ctx: &EncryptionContext) -> Result<Opened, Fault> {
        let wrapped = WrappedKey {
            backend: self.kms.backend().to_owned(),
            key_id: String::new(),
            key_version: String::new(),
            blob,
        };
        let d = self.kms.decrypt(&wrapped, ctx).await?;
        Ok(Opened { plaintext: d.plaintext, key_id: d.key_id, key_version: d.key_version })
    }

    /// A data key of `len` bytes under `key`: the backend's own generator for 32 bytes, else
    /// random bytes wrapped with Encrypt.
    pub(crate) async fn data_key(
        &self,
        key: &str,
        len: usize,
        ctx: &EncryptionContext,
    ) -> Result<(SecretBytes, WrappedKey), Fault> {
        if len == 32 {
            let g = self.kms.generate_data_key(key, ctx).await?;
            return Ok((SecretBytes::copy_from(g.data_key.expose_secret()), g.wrapped));
        }
        let mut bytes = vec![0u8; len];
        envseal_core::random::fill(&mut bytes);
        let plaintext = SecretBytes::new(bytes);
        let wrapped = self.kms.encrypt(key, plaintext.expose_secret(), ctx).await?;
        Ok((plaintext, wrapped))
    }

    /// Encrypts at most `limit` bytes (≤ [`MAX_DIRECT_ENCRYPT`]).
    pub(crate) async fn encrypt(
        &self,
        key: &str,
        plaintext: &[u8],
        ctx: &EncryptionContext,
        limit: usize,
    ) -> Result<WrappedKey, Fault> {
        if plaintext.len() > limit.min(MAX_DIRECT_ENCRYPT) {
            return Err(Fault::invalid(format!(
                "the plaintext is {} bytes; at most {limit} bytes can be encrypted directly",
                plaintext.len()
            )));
        }
        if plaintext.is_empty() {
            return Err(Fault::invalid("the plaintext is empty"));
        }
        Ok(self.kms.encrypt(key, plaintext, ctx).await?)
    }

    /// Re-encrypts inside the backend; returns the source key and version (from opening the
    /// blob first, which also checks the source context) and the new blob.
    pub(crate) async fn re_encrypt(
        &self,
        blob: Vec<u8>,
        source_ctx: &EncryptionContext,
        destination: &str,
        destination_ctx: &EncryptionContext,
    ) -> Result<(Opened, WrappedKey), Fault> {
        let source = self.open(blob.clone(), source_ctx).await?;
        let wrapped = WrappedKey {
            backend: self.kms.backend().to_owned(),
            key_id: source.key_id.clone(),
            key_version: source.key_version.clone(),
            blob,
        };
        let out = self.kms.re_encrypt(&wrapped, source_ctx, destination, destination_ctx).await?;
        Ok((source, out))
    }

    /// The rotation period of a key as the API states it (days of the cloud), if rotation is on.
    pub(crate) fn rotation_period(&self, m: &KeyMetadata) -> Option<Duration> {
        m.rotation_period.map(|p| p.mul_f64(DAY.as_secs_f64() / self.rotation_day.as_secs_f64()))
    }

    /// Turns automatic rotation on with a period stated in the API's days (`Some`), or off.
    pub(crate) async fn set_rotation(&self, key_id: &str, period: Option<Duration>) -> Result<KeyMetadata, Fault> {
        let stored = period.map(|p| p.mul_f64(self.rotation_day.as_secs_f64() / DAY.as_secs_f64()));
        Ok(self.km()?.update_key(key_id, &KeyUpdate::default().rotation(stored)).await?)
    }

    /// When automatic rotation makes the next version (the backend's clock: scaled).
    pub(crate) fn next_rotation(&self, m: &KeyMetadata) -> Option<SystemTime> {
        m.next_rotation()
    }

    /// Rotates every key whose automatic rotation is due; returns their ids.
    pub(crate) async fn rotate_due(&self) -> Result<Vec<String>, Fault> {
        let km = self.km()?;
        let now = SystemTime::now();
        let mut rotated = Vec::new();
        for m in km.list_keys().await? {
            if m.rotation_due(now) {
                let r = km.rotate_key(&m.key_id).await?;
                self.automatic
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .insert((m.key_id.clone(), r.current_version));
                rotated.push(m.key_id);
            }
        }
        Ok(rotated)
    }

    /// Whether `version` of `key_id` was made by automatic rotation (during this run).
    pub(crate) fn rotated_automatically(&self, key_id: &str, version: &str) -> bool {
        self.automatic
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .contains(&(key_id.to_owned(), version.to_owned()))
    }

    /// How often to look for due rotations: a hundredth of a day of this server (at least
    /// 10 ms, at most 1 s).
    pub(crate) fn rotation_tick(&self) -> Duration {
        (self.rotation_day / 100).clamp(Duration::from_millis(10), Duration::from_secs(1))
    }
}

/// Parses a JSON object of string values (Alibaba's `EncryptionContext` parameter).
pub(crate) fn context_from_json(text: &str) -> Result<EncryptionContext, Fault> {
    let v: serde_json::Value = serde_json::from_str(text)
        .map_err(|_| Fault::invalid("EncryptionContext must be a JSON object of string values"))?;
    let obj =
        v.as_object().ok_or_else(|| Fault::invalid("EncryptionContext must be a JSON object of string values"))?;
    let mut pairs = BTreeMap::new();
    for (k, v) in obj {
        let v = v.as_str().ok_or_else(|| Fault::invalid("EncryptionContext values must be strings"))?;
        pairs.insert(k.as_str(), v);
    }
    wire_context(pairs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_context_is_injective_and_identity_for_plain_keys() {
        let plain = wire_context([("app", "billing"), ("tenant", "ü")]).unwrap();
        assert_eq!(plain, EncryptionContext::from_pairs([("app", "billing"), ("tenant", "ü")]).unwrap());
        let reserved = wire_context([("envseal:field", "ab")]).unwrap();
        assert_eq!(reserved.get("~envseal:field"), Some("ab"));
        // "~envseal:field" on the wire is escaped once more, so it differs from the above.
        let tricky = wire_context([("~envseal:field", "ab")]).unwrap();
        assert_ne!(tricky.canonical_bytes(), reserved.canonical_bytes());
        assert_ne!(wire_context([("~a", "")]).unwrap(), wire_context([("a", "")]).unwrap());
        assert!(wire_context([("", "x")]).is_err());
    }

    #[test]
    fn json_contexts() {
        assert_eq!(context_from_json(r#"{"b":"2","a":"1"}"#).unwrap().len(), 2);
        assert!(context_from_json(r#"{"a":1}"#).is_err());
        assert!(context_from_json(r#"["a"]"#).is_err());
        assert!(context_from_json("{").is_err());
        assert!(context_from_json("{}").unwrap().is_empty());
    }
}
