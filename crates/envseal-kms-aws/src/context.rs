//! How an [`EncryptionContext`] becomes AWS's `EncryptionContext`. **Frozen**: see
//! docs/backends/aws-kms.md §Encryption context mapping.
//!
//! Every entry of the envseal context, user entries and envseal's reserved `envseal:*` entries
//! alike, becomes one entry of the AWS string map with the same key and the same value, byte for
//! byte: no prefix, no renaming, no encoding, no extra entries. An empty context is sent as no
//! `EncryptionContext` parameter at all (AWS treats both the same).
//!
//! AWS binds the map to the ciphertext by its own canonical form, order-independent and
//! unambiguous, so `{"ab": "c"}` and `{"a": "bc"}` are different contexts on AWS (moto, the
//! emulator, concatenates pairs without lengths and confuses them; that is moto's flaw, not
//! this mapping's).
//!
//! The mapping must never change: a blob wrapped under one mapping opens only under the same
//! one, so a change would strand every file sealed before it (tink carries a legacy context
//! name forever for this reason). `tests::frozen_mapping` pins it.

use envseal_core::EncryptionContext;

use crate::api::AwsContext;

/// The AWS `EncryptionContext` for `context`: the same pairs, 1:1 (frozen mapping).
pub fn to_aws_context(context: &EncryptionContext) -> std::collections::HashMap<String, String> {
    context.iter().map(|(k, v)| (k.to_owned(), v.to_owned())).collect()
}

/// [`to_aws_context`], or `None` for an empty context (the parameter is then left out).
pub(crate) fn request_context(context: &AwsContext) -> Option<AwsContext> {
    (!context.is_empty()).then(|| context.clone())
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    /// A context with envseal's reserved entry, as core builds it for a field data key
    /// (`envseal:field` = hex of the salt, FORMAT.md).
    fn with_reserved() -> EncryptionContext {
        let user = EncryptionContext::from_pairs([("app", "billing"), ("tenant", "ü-1")]).unwrap();
        envseal_core::envelope::kms_context(&user, &[0x5a; envseal_core::envelope::SALT_LEN]).unwrap()
    }

    /// FROZEN: this exact input must map to this exact AWS context, forever.
    #[test]
    fn frozen_mapping() {
        let got = to_aws_context(&with_reserved());
        let want: HashMap<String, String> =
            [("app", "billing"), ("envseal:field", "5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a"), ("tenant", "ü-1")]
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect();
        assert_eq!(got, want);
        // And in general: every entry, reserved or not, once, unchanged.
        let c = with_reserved();
        assert_eq!(got.len(), c.len());
        assert!(c.iter().all(|(k, v)| got.get(k).map(String::as_str) == Some(v)));
    }

    #[test]
    fn empty_context_is_omitted() {
        assert!(to_aws_context(&EncryptionContext::new()).is_empty());
        assert_eq!(request_context(&HashMap::new()), None);
        let one = to_aws_context(&EncryptionContext::from_pairs([("a", "")]).unwrap());
        assert_eq!(request_context(&one), Some(one.clone()));
    }

    #[test]
    fn distinct_contexts_stay_distinct() {
        // Pairs that naive concatenation confuses map to different AWS contexts.
        let ab = to_aws_context(&EncryptionContext::from_pairs([("ab", "c")]).unwrap());
        let a = to_aws_context(&EncryptionContext::from_pairs([("a", "bc")]).unwrap());
        assert_ne!(ab, a);
        // Order does not matter.
        let x = to_aws_context(&EncryptionContext::from_pairs([("a", "1"), ("b", "2")]).unwrap());
        let y = to_aws_context(&EncryptionContext::from_pairs([("b", "2"), ("a", "1")]).unwrap());
        assert_eq!(x, y);
    }
}
