//! Access keys the server accepts, STS tokens, and the Alibaba signature-nonce cache.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use serde::Deserialize;
use zeroize::Zeroizing;

use crate::error::{Class, Fault};
use crate::mac;
use crate::wire;

/// One access key: an id, its secret, the principal it authenticates, and optionally an STS
/// security token that must accompany it, with an expiry.
pub struct AccessKey {
    id: String,
    secret: Zeroizing<String>,
    principal: String,
    security_token: Option<Zeroizing<String>>,
    expires: Option<SystemTime>,
}

impl AccessKey {
    /// A long-term access key for `principal`.
    pub fn new(id: impl Into<String>, secret: impl Into<String>, principal: impl Into<String>) -> Self {
        Self {
            id: id.into(),
            secret: Zeroizing::new(secret.into()),
            principal: principal.into(),
            security_token: None,
            expires: None,
        }
    }

    /// Makes this a temporary (STS) credential: requests must carry `token`
    /// (`X-Amz-Security-Token`, `x-acs-security-token` or `SecurityToken`), and are refused
    /// after `expires` if given.
    pub fn with_security_token(mut self, token: impl Into<String>, expires: Option<SystemTime>) -> Self {
        self.security_token = Some(Zeroizing::new(token.into()));
        self.expires = expires;
        self
    }

    /// A fresh random access key for `principal` (the dev principal of `envseal kms serve`).
    pub fn generate(principal: impl Into<String>) -> Self {
        const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
        const SECRET_ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
        let pick = |alphabet: &[u8], n: usize| -> String {
            let mut bytes = vec![0u8; n];
            envseal_core::random::fill(&mut bytes);
            // 256 is a multiple of 32 (no bias); 62 adds a bias too small to matter for a dev
            // secret of 40 characters (> 230 bits).
            bytes.iter().map(|b| char::from(alphabet[usize::from(*b) % alphabet.len()])).collect()
        };
        Self::new(format!("ESDEV{}", pick(ALPHABET, 15)), pick(SECRET_ALPHABET, 40), principal)
    }

    /// The access key id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The secret. Print it only where the user asked for it (the dev principal's banner).
    pub fn dangerous_secret(&self) -> &str {
        &self.secret
    }

    /// The principal name.
    pub fn principal(&self) -> &str {
        &self.principal
    }

    pub(crate) fn secret(&self) -> &str {
        &self.secret
    }

    /// Checks the STS token sent with a request (or its absence) and the expiry.
    pub(crate) fn check_token(&self, sent: Option<&str>) -> Result<(), Fault> {
        match (&self.security_token, sent) {
            (None, None) => Ok(()),
            (None, Some(_)) => {
                Err(Fault::new(Class::InvalidToken, "a security token was sent with a long-term access key"))
            }
            (Some(_), None) => {
                Err(Fault::new(Class::InvalidToken, "this access key is temporary: the security token is missing"))
            }
            (Some(expected), Some(sent)) => {
                if !mac::ct_eq(expected, sent) {
                    return Err(Fault::new(Class::InvalidToken, "the security token does not match the access key"));
                }
                if self.expires.is_some_and(|e| SystemTime::now() >= e) {
                    return Err(Fault::new(Class::ExpiredToken, "the security token has expired"));
                }
                Ok(())
            }
        }
    }
}

impl fmt::Debug for AccessKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AccessKey")
            .field("id", &self.id)
            .field("principal", &self.principal)
            .field("sts", &self.security_token.is_some())
            .field("expires", &self.expires)
            .finish_non_exhaustive()
    }
}

/// What a [`CredentialSource`] knows of an access key.
#[derive(Debug)]
#[non_exhaustive]
pub enum Lookup {
    /// The key (its token, if any, is still checked against the request's).
    Found(Arc<AccessKey>),
    /// No such key, or an inactive one.
    Unknown,
    /// A temporary credential that has expired or was revoked.
    Expired,
}

/// Access keys that are looked up when a request names one the fixed set does not hold: IAM
/// users' keys and STS sessions, which change while the server runs.
pub trait CredentialSource: Send + Sync + fmt::Debug {
    /// The key named `access_key_id`; `security_token` is the token the request carries.
    fn lookup(&self, access_key_id: &str, security_token: Option<&str>) -> Lookup;
}

/// The access keys a server accepts: a fixed set, then an optional [`CredentialSource`].
#[derive(Debug, Default)]
pub struct Credentials {
    keys: HashMap<String, Arc<AccessKey>>,
    source: Option<Arc<dyn CredentialSource>>,
}

/// Errors reading an IAM file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IamFileError {
    /// The file could not be read.
    #[error("cannot read the IAM file: {0}")]
    Io(#[from] std::io::Error),
    /// The file is not valid (the message names a position, never a value).
    #[error("invalid IAM file: {0}")]
    Invalid(String),
}

#[derive(Deserialize)]
struct IamFile {
    #[serde(default)]
    access_keys: Vec<IamKey>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct IamKey {
    id: String,
    secret: String,
    principal: Option<String>,
    security_token: Option<String>,
    expires: Option<String>,
}

impl Credentials {
    /// No keys.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds (or replaces) a key.
    pub fn insert(&mut self, key: AccessKey) {
        self.keys.insert(key.id.clone(), Arc::new(key));
    }

    /// Looks up keys not in the fixed set through `source`.
    pub fn set_source(&mut self, source: Arc<dyn CredentialSource>) {
        self.source = Some(source);
    }

    /// (id, principal) of the keys in the fixed set.
    pub fn principals(&self) -> Vec<(String, String)> {
        self.keys.values().map(|k| (k.id.clone(), k.principal.clone())).collect()
    }

    /// Number of keys in the fixed set.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether there is no key in the fixed set and no source.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty() && self.source.is_none()
    }

    /// Reads an IAM file (JSON):
    ///
    /// ```json
    /// {"access_keys": [
    ///   {"id": "AK1", "secret": "...", "principal": "alice"},
    ///   {"id": "STS.AK2", "secret": "...", "principal": "ci", "security_token": "...",
    ///    "expires": "2030-01-01T00:00:00Z"}
    /// ]}
    /// ```
    ///
    /// Other top-level fields are ignored (policies are read by the policy layer).
    ///
    /// # Errors
    /// [`IamFileError`] when the file cannot be read or parsed, a field is missing, or an
    /// `expires` is not RFC 3339.
    pub fn from_iam_file(path: &Path) -> Result<Self, IamFileError> {
        let text = Zeroizing::new(std::fs::read_to_string(path)?);
        // serde_json's message names a position and the expected token; with secrets in the
        // file, only the category and position are kept.
        let file: IamFile = serde_json::from_str(&text).map_err(|e| {
            IamFileError::Invalid(format!("{:?} error at line {} column {}", e.classify(), e.line(), e.column()))
        })?;
        let mut out = Self::new();
        for (i, k) in file.access_keys.into_iter().enumerate() {
            if k.id.is_empty() || k.secret.is_empty() {
                return Err(IamFileError::Invalid(format!("access_keys[{i}]: empty id or secret")));
            }
            let principal = k.principal.unwrap_or_else(|| k.id.clone());
            let mut key = AccessKey::new(k.id, k.secret, principal);
            if let Some(token) = k.security_token {
                let expires =
                    match k.expires.as_deref() {
                        Some(e) => Some(wire::parse_iso8601(e).ok_or_else(|| {
                            IamFileError::Invalid(format!("access_keys[{i}].expires is not RFC 3339"))
                        })?),
                        None => None,
                    };
                key = key.with_security_token(token, expires);
            } else if k.expires.is_some() {
                return Err(IamFileError::Invalid(format!(
                    "access_keys[{i}]: expires is only meaningful with a security_token"
                )));
            }
            out.insert(key);
        }
        Ok(out)
    }

    /// The key `id`, looked up with the request's security token; `unknown` is the API's
    /// message for a key that does not exist.
    pub(crate) fn get(&self, id: &str, token: Option<&str>, unknown: &str) -> Result<Arc<AccessKey>, Fault> {
        if let Some(k) = self.keys.get(id) {
            return Ok(k.clone());
        }
        match self.source.as_ref().map(|s| s.lookup(id, token)) {
            Some(Lookup::Found(k)) => Ok(k),
            Some(Lookup::Expired) => {
                Err(Fault::new(Class::ExpiredToken, "the security token has expired or was revoked"))
            }
            _ => Err(Fault::new(Class::UnknownAccessKey, unknown)),
        }
    }
}

/// Signature nonces seen within the replay window (Alibaba `SignatureNonce` /
/// `x-acs-signature-nonce`): a nonce may be used once.
#[derive(Debug)]
pub(crate) struct NonceCache {
    window: Duration,
    capacity: usize,
    inner: Mutex<NonceInner>,
}

#[derive(Debug, Default)]
struct NonceInner {
    seen: HashMap<String, Instant>,
    order: VecDeque<(Instant, String)>,
}

impl NonceCache {
    pub(crate) fn new(window: Duration, capacity: usize) -> Self {
        Self { window, capacity, inner: Mutex::new(NonceInner::default()) }
    }

    /// Records `nonce` (scoped by access key); false if it was already used.
    pub(crate) fn check_and_insert(&self, access_key: &str, nonce: &str) -> bool {
        let now = Instant::now();
        let mut inner = self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        while let Some((t, _)) = inner.order.front() {
            if now.duration_since(*t) <= self.window && inner.order.len() < self.capacity {
                break;
            }
            if let Some((_, n)) = inner.order.pop_front() {
                inner.seen.remove(&n);
            }
        }
        let k = format!("{access_key}\n{nonce}");
        if inner.seen.contains_key(&k) {
            return false;
        }
        inner.seen.insert(k.clone(), now);
        inner.order.push_back((now, k));
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens() {
        let k = AccessKey::new("a", "s", "p");
        assert!(k.check_token(None).is_ok());
        assert_eq!(k.check_token(Some("t")).unwrap_err().class, Class::InvalidToken);
        let k = AccessKey::new("a", "s", "p").with_security_token("tok", None);
        assert!(k.check_token(Some("tok")).is_ok());
        assert_eq!(k.check_token(Some("tox")).unwrap_err().class, Class::InvalidToken);
        assert_eq!(k.check_token(None).unwrap_err().class, Class::InvalidToken);
        let past = SystemTime::now() - Duration::from_secs(1);
        let k = AccessKey::new("a", "s", "p").with_security_token("tok", Some(past));
        assert_eq!(k.check_token(Some("tok")).unwrap_err().class, Class::ExpiredToken);
    }

    #[test]
    fn generated_keys_and_debug() {
        let k = AccessKey::generate("dev");
        assert!(k.id().starts_with("ESDEV") && k.id().len() == 20);
        assert_eq!(k.dangerous_secret().len(), 40);
        assert!(!format!("{k:?}").contains(k.dangerous_secret()));
        assert_ne!(k.id(), AccessKey::generate("dev").id());
    }

    #[test]
    fn iam_file() {
        let dir = std::env::temp_dir().join(format!("envseal-iam-{}", wire::uuid_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("iam.json");
        std::fs::write(
            &p,
            r#"{"access_keys":[{"id":"A","secret":"S3CRET-VALUE"},{"id":"B","secret":"x","principal":"ci",
               "security_token":"t","expires":"2030-01-01T00:00:00Z"}], "policies": []}"#,
        )
        .unwrap();
        let c = Credentials::from_iam_file(&p).unwrap();
        assert_eq!(c.len(), 2);
        assert_eq!(c.get("A", None, "").unwrap().principal(), "A");
        assert!(c.get("B", Some("t"), "").unwrap().check_token(Some("t")).is_ok());
        std::fs::write(&p, r#"{"access_keys":[{"id":"A","secret":"S3CRET-VALUE","bogus":1}]}"#).unwrap();
        let e = Credentials::from_iam_file(&p).unwrap_err().to_string();
        assert!(!e.contains("S3CRET"), "{e}");
        std::fs::write(&p, r#"{"access_keys":[{"id":"A","secret":"S3CRET-VALUE" "#).unwrap();
        let e = Credentials::from_iam_file(&p).unwrap_err().to_string();
        assert!(!e.contains("S3CRET"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn nonces_are_single_use_and_bounded() {
        let c = NonceCache::new(Duration::from_secs(900), 3);
        assert!(c.check_and_insert("ak", "n1"));
        assert!(!c.check_and_insert("ak", "n1"));
        assert!(c.check_and_insert("other", "n1"), "scoped by access key");
        assert!(c.check_and_insert("ak", "n2"));
        assert!(c.check_and_insert("ak", "n3"));
        // Capacity 3: the oldest entry was evicted to make room.
        assert!(c.check_and_insert("ak", "n1"));
    }
}
