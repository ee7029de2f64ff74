//! The encryption context as the ESDK serializes it (data-format/message-header.md,
//! "Encryption Context"): a 2-byte count, then for each entry, sorted by the UTF-8 bytes of its
//! key, a 2-byte key length, the key, a 2-byte value length and the value. An empty context is
//! zero bytes (no count). The same bytes are the AAD of raw AES key wrapping.

use std::collections::BTreeMap;

use crate::error::EsdkError;

/// Context key holding the base64 compressed P-384 public key of signed suites.
pub const PUBLIC_KEY_FIELD: &str = "aws-crypto-public-key";
/// Context keys starting with this are reserved for the ESDK.
pub const RESERVED_PREFIX: &str = "aws-crypto-";
/// Most bytes the serialized context may take (its length field is 16 bits).
pub const MAX_SERIALIZED_LEN: usize = u16::MAX as usize;

/// Serializes `context` (a `BTreeMap` is already sorted by key bytes).
///
/// # Errors
/// [`EsdkError::InvalidContext`] if a key or value, or the whole, exceeds 65,535 bytes.
pub fn serialize(context: &BTreeMap<String, String>) -> Result<Vec<u8>, EsdkError> {
    if context.is_empty() {
        return Ok(Vec::new());
    }
    let too_big = |what: &str| EsdkError::InvalidContext(format!("{what} longer than 65,535 bytes"));
    let mut out = Vec::new();
    out.extend_from_slice(&u16::try_from(context.len()).map_err(|_| too_big("entry count"))?.to_be_bytes());
    for (k, v) in context {
        if k.is_empty() {
            return Err(EsdkError::InvalidContext("empty key".into()));
        }
        out.extend_from_slice(&u16::try_from(k.len()).map_err(|_| too_big("a key"))?.to_be_bytes());
        out.extend_from_slice(k.as_bytes());
        out.extend_from_slice(
            &u16::try_from(v.len()).map_err(|_| too_big(&format!("the value of {k:?}")))?.to_be_bytes(),
        );
        out.extend_from_slice(v.as_bytes());
    }
    if out.len() > MAX_SERIALIZED_LEN {
        return Err(too_big("the serialized context"));
    }
    Ok(out)
}

/// Parses a serialized context. Entries must be UTF-8 and unique; a present count must be
/// non-zero (an empty context is stored as zero bytes).
///
/// # Errors
/// [`EsdkError::Malformed`].
pub fn deserialize(bytes: &[u8]) -> Result<BTreeMap<String, String>, EsdkError> {
    let mut out = BTreeMap::new();
    if bytes.is_empty() {
        return Ok(out);
    }
    let mut r = Cursor { bytes, pos: 0 };
    let count = r.u16()?;
    if count == 0 {
        return Err(EsdkError::malformed("encryption context with a zero entry count"));
    }
    for _ in 0..count {
        let k = r.string()?;
        let v = r.string()?;
        if out.contains_key(&k) {
            return Err(EsdkError::malformed(format!("duplicate encryption context key {k:?}")));
        }
        out.insert(k, v);
    }
    if r.pos != bytes.len() {
        return Err(EsdkError::malformed("extra bytes after the encryption context"));
    }
    Ok(out)
}

struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl Cursor<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], EsdkError> {
        let end = self.pos.checked_add(n).filter(|e| *e <= self.bytes.len());
        let end = end.ok_or_else(|| EsdkError::malformed("encryption context shorter than its lengths say"))?;
        let s = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    fn u16(&mut self) -> Result<u16, EsdkError> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    fn string(&mut self) -> Result<String, EsdkError> {
        let n = self.u16()? as usize;
        let b = self.take(n)?;
        String::from_utf8(b.to_vec()).map_err(|_| EsdkError::malformed("encryption context entry is not UTF-8"))
    }
}

/// Checks a caller's context before encryption: no reserved keys, no empty keys.
///
/// # Errors
/// [`EsdkError::InvalidContext`] naming the key.
pub fn check_user_context(context: &BTreeMap<String, String>) -> Result<(), EsdkError> {
    for k in context.keys() {
        if k.starts_with(RESERVED_PREFIX) {
            return Err(EsdkError::InvalidContext(format!(
                "key {k:?} uses the ESDK's reserved prefix {RESERVED_PREFIX:?}"
            )));
        }
        if k.is_empty() {
            return Err(EsdkError::InvalidContext("empty key".into()));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn ctx(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn known_bytes() {
        assert!(serialize(&BTreeMap::new()).unwrap().is_empty());
        // Sorted by key bytes, each part length-prefixed.
        let b = serialize(&ctx(&[("b", "2"), ("a", "xy")])).unwrap();
        assert_eq!(b, [0, 2, 0, 1, b'a', 0, 2, b'x', b'y', 0, 1, b'b', 0, 1, b'2']);
        assert_eq!(deserialize(&b).unwrap(), ctx(&[("a", "xy"), ("b", "2")]));
    }

    #[test]
    fn rejects_malformed() {
        assert!(deserialize(&[0, 0]).is_err());
        assert!(deserialize(&[0, 1, 0, 1, b'a', 0, 5, b'x']).is_err());
        assert!(deserialize(&[0, 2, 0, 1, b'a', 0, 0, 0, 1, b'a', 0, 0]).is_err(), "duplicate key");
        assert!(deserialize(&[0, 1, 0, 1, 0xff, 0, 0]).is_err(), "not UTF-8");
        assert!(deserialize(&[0, 1, 0, 1, b'a', 0, 0, 9]).is_err(), "trailing byte");
    }

    #[test]
    fn reserved_keys_refused() {
        assert!(check_user_context(&ctx(&[("aws-crypto-public-key", "x")])).is_err());
        assert!(check_user_context(&ctx(&[("purpose", "test")])).is_ok());
    }

    proptest! {
        #[test]
        fn round_trip(m in proptest::collection::btree_map("[a-z]{1,8}", ".{0,16}", 0..6)) {
            let b = serialize(&m).unwrap();
            prop_assert_eq!(deserialize(&b).unwrap(), m);
        }
    }
}
