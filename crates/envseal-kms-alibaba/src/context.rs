//! How an [`EncryptionContext`] becomes Alibaba Cloud KMS's `EncryptionContext` parameter.
//! **Frozen**: see docs/backends/alibaba-kms.md §Encryption context mapping.
//!
//! KMS takes the context as a JSON object of string values, sent as a string parameter
//! (`EncryptionContext={"app":"billing"}`), the same for `GenerateDataKey`, `Encrypt`,
//! `Decrypt` and (as `SourceEncryptionContext` / `DestinationEncryptionContext`) `ReEncrypt`.
//! The mapping:
//!
//! - every entry of the envseal context, user entries and envseal's reserved `envseal:*`
//!   entries alike, becomes one member of the object with the same name and the same value,
//!   byte for byte: no prefix, no renaming, no extra members;
//! - members in bytewise order of their names (the context's own order), written compactly
//!   (`{"a":"1","b":"2"}`, no spaces), non-ASCII characters as UTF-8, `"` `\` and control
//!   characters escaped as JSON requires (`\"`, `\\`, `\n`, `\u001f`) — exactly what the
//!   official SDK's `json.dumps(..., ensure_ascii=False, separators=(",", ":"))` writes for the
//!   same pairs in the same order;
//! - an empty context is no parameter at all.
//!
//! KMS binds the parsed object, not the string, so the order and escaping do not change what a
//! blob is bound to; they are fixed anyway so requests are reproducible. What must never change
//! is the set of pairs: a blob wrapped under one mapping opens only under the same one, and a
//! change would strand every file sealed before it (tink carries a legacy context name forever
//! for this reason). `tests::frozen_mapping` pins it.

use std::collections::BTreeMap;

use envseal_core::EncryptionContext;

/// The `EncryptionContext` parameter for `context` (frozen mapping), or `None` for an empty
/// context (the parameter is then left out).
pub fn context_json(context: &EncryptionContext) -> Option<String> {
    if context.is_empty() {
        return None;
    }
    let map: BTreeMap<&str, &str> = context.iter().collect();
    // Invariant: a map of strings always serializes.
    Some(serde_json::to_string(&map).expect("JSON of a string map"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A context with envseal's reserved entry, as core builds it for a field data key.
    fn with_reserved() -> EncryptionContext {
        let user = EncryptionContext::from_pairs([("app", "billing"), ("tenant", "ü-1")]).unwrap();
        envseal_core::envelope::kms_context(&user, &[0x5a; envseal_core::envelope::SALT_LEN]).unwrap()
    }

    /// FROZEN: this exact input must map to this exact parameter, forever.
    #[test]
    fn frozen_mapping() {
        assert_eq!(
            context_json(&with_reserved()).unwrap(),
            "{\"app\":\"billing\",\"envseal:field\":\"5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a\",\"tenant\":\"ü-1\"}"
        );
        let tricky =
            EncryptionContext::from_pairs([("q\"uote", "back\\slash"), ("ctl", "a\nb\u{1f}c\u{7f}"), ("sp ace", "")])
                .unwrap();
        assert_eq!(
            context_json(&tricky).unwrap(),
            "{\"ctl\":\"a\\nb\\u001fc\u{7f}\",\"q\\\"uote\":\"back\\\\slash\",\"sp ace\":\"\"}"
        );
    }

    #[test]
    fn every_pair_once_unchanged() {
        let c = with_reserved();
        let parsed: BTreeMap<String, String> = serde_json::from_str(&context_json(&c).unwrap()).unwrap();
        assert_eq!(parsed.len(), c.len());
        assert!(c.iter().all(|(k, v)| parsed.get(k).map(String::as_str) == Some(v)));
    }

    #[test]
    fn empty_is_omitted_and_distinct_contexts_stay_distinct() {
        assert_eq!(context_json(&EncryptionContext::new()), None);
        assert_eq!(context_json(&EncryptionContext::from_pairs([("a", "")]).unwrap()).unwrap(), "{\"a\":\"\"}");
        let ab = context_json(&EncryptionContext::from_pairs([("ab", "c")]).unwrap());
        let a = context_json(&EncryptionContext::from_pairs([("a", "bc")]).unwrap());
        assert_ne!(ab, a);
        let x = EncryptionContext::from_pairs([("a", "1"), ("b", "2")]).unwrap();
        let y = EncryptionContext::from_pairs([("b", "2"), ("a", "1")]).unwrap();
        assert_eq!(context_json(&x), context_json(&y));
    }
}
