//! Encryption context: key/value pairs bound as additional authenticated data.
//!
//! One canonical encoding is used everywhere (FORMAT.md §2.3): entries sorted by key (bytewise),
//! every key and value length-prefixed. Unlike `join(path, ":")` (sops) or unprefixed
//! concatenation (moto, local-kms), two different contexts can never encode to the same bytes.

use std::collections::BTreeMap;
use std::fmt;

use crate::error::FormatError;

/// Keys starting with this prefix are reserved for envseal's own entries (file id, header hash).
pub const RESERVED_PREFIX: &str = "envseal:";

/// Most entries a KMS context may hold (a user context plus envseal's reserved entry).
pub const MAX_ENTRIES: usize = 64;
/// Most entries a user context may hold: one slot stays free for envseal's reserved entry.
pub const MAX_USER_ENTRIES: usize = MAX_ENTRIES - 1;
/// Longest key or value, in bytes.
pub const MAX_STRING_LEN: usize = 1024;

/// An encryption context: a sorted map of UTF-8 keys to UTF-8 values.
///
/// Contexts are not secret: they are stored in clear in sealed files and sent to the KMS. Do
/// not put secrets in them.
#[derive(Clone, Default, PartialEq, Eq, Hash)]
pub struct EncryptionContext {
    entries: BTreeMap<String, String>,
}

impl EncryptionContext {
    /// An empty context.
    pub fn new() -> Self {
        Self::default()
    }

    /// Builds a user context from pairs, rejecting reserved keys, duplicates and oversized
    /// entries.
    ///
    /// # Errors
    /// [`FormatError::InvalidContext`] naming the problem (never the value).
    pub fn from_pairs<I, K, V>(pairs: I) -> Result<Self, FormatError>
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<String>,
        V: Into<String>,
    {
        let mut ctx = Self::new();
        for (k, v) in pairs {
            let k = k.into();
            if ctx.entries.contains_key(&k) {
                return Err(FormatError::InvalidContext(format!("duplicate key {k:?}")));
            }
            ctx.insert(k, v)?;
        }
        Ok(ctx)
    }

    /// Adds a user entry.
    ///
    /// # Errors
    /// [`FormatError::InvalidContext`] if the key is empty, reserved, or too long, the value is
    /// too long, or the context is full.
    pub fn insert(&mut self, key: impl Into<String>, value: impl Into<String>) -> Result<(), FormatError> {
        let key = key.into();
        if key.starts_with(RESERVED_PREFIX) {
            return Err(FormatError::InvalidContext(format!(
                "key {key:?} uses the reserved prefix {RESERVED_PREFIX:?}"
            )));
        }
        if !self.entries.contains_key(&key) && self.entries.len() >= MAX_USER_ENTRIES {
            return Err(FormatError::InvalidContext(format!("more than {MAX_USER_ENTRIES} entries")));
        }
        self.insert_any(key, value.into())
    }

    /// Adds an entry, reserved or not (envseal's own entries).
    pub(crate) fn insert_any(&mut self, key: String, value: String) -> Result<(), FormatError> {
        if key.is_empty() {
            return Err(FormatError::InvalidContext("empty key".into()));
        }
        if key.len() > MAX_STRING_LEN || value.len() > MAX_STRING_LEN {
            return Err(FormatError::InvalidContext(format!(
                "key {:?} or its value is longer than {MAX_STRING_LEN} bytes",
                truncate(&key)
            )));
        }
        if !self.entries.contains_key(&key) && self.entries.len() >= MAX_ENTRIES {
            return Err(FormatError::InvalidContext(format!("more than {MAX_ENTRIES} entries")));
        }
        self.entries.insert(key, value);
        Ok(())
    }

    /// The value for `key`, if any.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.entries.get(key).map(String::as_str)
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when the context has no entries.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Entries in canonical (bytewise key) order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.entries.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// The entries whose keys do not use the reserved prefix.
    pub fn user_entries(&self) -> EncryptionContext {
        EncryptionContext {
            entries: self
                .entries
                .iter()
                .filter(|(k, _)| !k.starts_with(RESERVED_PREFIX))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        }
    }

    /// This context plus envseal's reserved entries (used for the KMS context of wrapped keys).
    pub(crate) fn with_reserved(&self, reserved: &[(&str, String)]) -> Result<Self, FormatError> {
        let mut out = self.clone();
        for (k, v) in reserved {
            debug_assert!(k.starts_with(RESERVED_PREFIX));
            out.insert_any((*k).to_string(), v.clone())?;
        }
        Ok(out)
    }

    /// The canonical encoding (FORMAT.md §2.3):
    /// `u16 count || (u16 klen || key || u16 vlen || value)*`, sorted by key bytes, big-endian.
    pub fn canonical_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(2 + self.entries.iter().map(|(k, v)| 4 + k.len() + v.len()).sum::<usize>());
        self.encode_into(&mut out);
        out
    }

    pub(crate) fn encode_into(&self, out: &mut Vec<u8>) {
        // Bounds are enforced on insert, so the casts cannot truncate.
        out.extend_from_slice(&(self.entries.len() as u16).to_be_bytes());
        for (k, v) in &self.entries {
            out.extend_from_slice(&(k.len() as u16).to_be_bytes());
            out.extend_from_slice(k.as_bytes());
            out.extend_from_slice(&(v.len() as u16).to_be_bytes());
            out.extend_from_slice(v.as_bytes());
        }
    }

    /// Parses a user context in the canonical encoding from the front of `input`, returning
    /// the context and the number of bytes consumed. Non-canonical encodings (unsorted or
    /// duplicate keys, bad UTF-8, oversized entries) and reserved keys are rejected.
    ///
    /// # Errors
    /// [`FormatError::Truncated`] if `input` ends early; [`FormatError::LimitExceeded`] above
    /// [`MAX_USER_ENTRIES`] entries or [`MAX_STRING_LEN`] bytes; [`FormatError::Malformed`]
    /// otherwise.
    pub fn decode_prefix(input: &[u8]) -> Result<(Self, usize), FormatError> {
        let mut r = crate::wire::Reader::new(input);
        let count = r.u16()? as usize;
        if count > MAX_USER_ENTRIES {
            return Err(FormatError::LimitExceeded {
                what: "context entries",
                value: count as u64,
                max: MAX_USER_ENTRIES as u64,
            });
        }
        let mut entries = BTreeMap::new();
        let mut prev: Option<String> = None;
        for _ in 0..count {
            let k = r.string16(MAX_STRING_LEN, "context key")?;
            let v = r.string16(MAX_STRING_LEN, "context value")?;
            if k.is_empty() {
                return Err(FormatError::Malformed("empty context key"));
            }
            if k.starts_with(RESERVED_PREFIX) {
                return Err(FormatError::Malformed("reserved key in a stored context"));
            }
            if prev.as_ref().is_some_and(|p| p.as_bytes() >= k.as_bytes()) {
                return Err(FormatError::Malformed("context keys not strictly sorted"));
            }
            prev = Some(k.clone());
            entries.insert(k, v);
        }
        Ok((Self { entries }, r.position()))
    }

    /// Checks that every entry of `expected` is present here with the same value (the rule the
    /// AWS Encryption SDK calls "required encryption context").
    pub fn contains_all(&self, expected: &EncryptionContext) -> bool {
        expected.iter().all(|(k, v)| self.get(k) == Some(v))
    }
}

fn truncate(s: &str) -> &str {
    match s.char_indices().nth(32) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

impl fmt::Debug for EncryptionContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.entries.iter()).finish()
    }
}

impl<'a> IntoIterator for &'a EncryptionContext {
    type Item = (&'a String, &'a String);
    type IntoIter = std::collections::btree_map::Iter<'a, String, String>;
    fn into_iter(self) -> Self::IntoIter {
        self.entries.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx(p: &[(&str, &str)]) -> EncryptionContext {
        EncryptionContext::from_pairs(p.iter().copied()).unwrap()
    }

    #[test]
    fn order_independent_and_canonical() {
        let a = ctx(&[("b", "2"), ("a", "1")]);
        let b = ctx(&[("a", "1"), ("b", "2")]);
        assert_eq!(a.canonical_bytes(), b.canonical_bytes());
        assert_eq!(a.canonical_bytes(), [0, 2, 0, 1, b'a', 0, 1, b'1', 0, 1, b'b', 0, 1, b'2']);
    }

    #[test]
    fn no_collisions_that_peers_have() {
        // moto/local-kms concatenation: {"ab": "c"} vs {"a": "bc"}.
        assert_ne!(ctx(&[("ab", "c")]).canonical_bytes(), ctx(&[("a", "bc")]).canonical_bytes());
        // sops-style join: {"a:b": ""} vs {"a": "b:"}.
        assert_ne!(ctx(&[("a:b", "")]).canonical_bytes(), ctx(&[("a", "b:")]).canonical_bytes());
        assert_ne!(ctx(&[]).canonical_bytes(), ctx(&[("a", "")]).canonical_bytes());
    }

    #[test]
    fn reserved_prefix_rejected_for_users() {
        assert!(matches!(EncryptionContext::from_pairs([("envseal:file", "x")]), Err(FormatError::InvalidContext(_))));
        assert!(EncryptionContext::from_pairs([("", "x")]).is_err());
        assert!(EncryptionContext::from_pairs([("a", "1"), ("a", "2")]).is_err());
    }

    #[test]
    fn decode_roundtrip_and_rejects_non_canonical() {
        let c = ctx(&[("tenant", "ü"), ("app", "x")]);
        let bytes = c.canonical_bytes();
        let (d, n) = EncryptionContext::decode_prefix(&bytes).unwrap();
        assert_eq!((d, n), (c, bytes.len()));
        // Unsorted.
        let bad = [0, 2, 0, 1, b'b', 0, 0, 0, 1, b'a', 0, 0];
        assert!(matches!(EncryptionContext::decode_prefix(&bad), Err(FormatError::Malformed(_))));
        // Duplicate.
        let dup = [0, 2, 0, 1, b'a', 0, 0, 0, 1, b'a', 0, 0];
        assert!(EncryptionContext::decode_prefix(&dup).is_err());
        // Truncated.
        assert!(matches!(EncryptionContext::decode_prefix(&bytes[..bytes.len() - 1]), Err(FormatError::Truncated)));
        // Too many entries.
        assert!(matches!(EncryptionContext::decode_prefix(&[0xff, 0xff]), Err(FormatError::LimitExceeded { .. })));
    }

    #[test]
    fn user_contexts_leave_room_for_the_reserved_entry() {
        let mut c = EncryptionContext::new();
        for i in 0..MAX_USER_ENTRIES {
            c.insert(format!("k{i:02}"), "v").unwrap();
        }
        assert!(c.insert("one-more", "v").is_err());
        assert!(c.with_reserved(&[("envseal:x", "y".into())]).is_ok());
        let mut bytes = c.canonical_bytes();
        bytes[1] = 64; // claim 64 entries
        assert!(matches!(EncryptionContext::decode_prefix(&bytes), Err(FormatError::LimitExceeded { .. })));
        // A stored context may not carry reserved keys.
        let r = [0, 1, 0, 9, b'e', b'n', b'v', b's', b'e', b'a', b'l', b':', b'x', 0, 0];
        assert!(matches!(EncryptionContext::decode_prefix(&r), Err(FormatError::Malformed(_))));
    }

    #[test]
    fn contains_all() {
        let c = ctx(&[("a", "1"), ("b", "2")]);
        assert!(c.contains_all(&ctx(&[("a", "1")])));
        assert!(!c.contains_all(&ctx(&[("a", "2")])));
        assert!(c.contains_all(&EncryptionContext::new()));
    }
}
