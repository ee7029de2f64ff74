//! Property tests of the codecs of envseal-fields: the key-reference envelope (FORMAT.md §11.1,
//! §11.3, §11.5), its text form, index definitions and terms (§11.7), and the typed field
//! codecs. No KMS or database: the value and index keys are derived from fixed data keys.

use envseal_core::{DataKey, EncryptionContext, Engine, FormatError};
use envseal_fields::index::IndexKey;
use envseal_fields::keyref::{self, KeyId, KeyRef, ValueKey};
use envseal_fields::{FieldValue, IndexDef, Normalize, Sealed};
use proptest::prelude::*;

fn scope(column: &str) -> Vec<u8> {
    EncryptionContext::from_pairs([("app", "props"), ("table", "t"), ("column", column)]).unwrap().canonical_bytes()
}

fn value_key(engine: Engine, id: [u8; 8], column: &str) -> ValueKey {
    ValueKey::derive(engine, &DataKey::from_bytes([0x42; 32]), KeyId(id), &scope(column))
}

fn pk_strategy() -> impl Strategy<Value = Option<Vec<u8>>> {
    prop::option::of(prop::collection::vec(any::<u8>(), 0..200))
}

fn normalize_strategy() -> impl Strategy<Value = Normalize> {
    prop_oneof![Just(Normalize::None), Just(Normalize::Lowercase), Just(Normalize::Digits)]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// Seal then open gives the plaintext back on every engine, the envelope is 29 bytes longer,
    /// names its key and counter, and the text form round-trips.
    #[test]
    fn keyref_round_trip(
        plaintext in prop::collection::vec(any::<u8>(), 0..600),
        counter in any::<u32>(),
        id in any::<[u8; 8]>(),
        pk in pk_strategy(),
    ) {
        for &engine in Engine::ALL {
            let k = value_key(engine, id, "c");
            let env = k.seal(u64::from(counter), &plaintext, pk.as_deref()).unwrap();
            prop_assert_eq!(env.len(), plaintext.len() + keyref::OVERHEAD);
            let parsed = KeyRef::parse(&env).unwrap();
            prop_assert_eq!(parsed.key_id, KeyId(id));
            prop_assert_eq!(parsed.counter, counter);
            prop_assert_eq!(parsed.plaintext_len(), plaintext.len());
            let mut out = b"x".to_vec();
            k.open_into(&parsed, pk.as_deref(), &mut out).unwrap();
            prop_assert_eq!(&out[1..], &plaintext[..]);
            prop_assert_eq!(keyref::from_text(&keyref::to_text(&env)).unwrap(), env.clone());
            prop_assert_eq!(keyref::key_id_of(&env), Some(KeyId(id)));
        }
    }

    /// A value opens only in its own row and column: another row key (or none instead of one),
    /// another column's key, or any flipped bit fails, and the output buffer is left alone.
    #[test]
    fn keyref_bindings_and_tamper(
        plaintext in prop::collection::vec(any::<u8>(), 0..100),
        counter in any::<u32>(),
        pk in pk_strategy(),
        other_pk in pk_strategy(),
        flip in any::<prop::sample::Index>(),
        bit in 0u8..8,
    ) {
        let k = value_key(Engine::default(), [7; 8], "c");
        let env = k.seal(u64::from(counter), &plaintext, pk.as_deref()).unwrap();
        let parsed = KeyRef::parse(&env).unwrap();
        let mut out = b"keep".to_vec();
        if other_pk != pk {
            prop_assert!(matches!(k.open_into(&parsed, other_pk.as_deref(), &mut out), Err(FormatError::ValueTampered)));
        }
        let other_column = value_key(Engine::default(), [7; 8], "d");
        prop_assert!(matches!(other_column.open_into(&parsed, pk.as_deref(), &mut out), Err(FormatError::ValueTampered)));
        let mut bad = env.clone();
        bad[flip.index(env.len())] ^= 1 << bit;
        let r = KeyRef::parse(&bad).and_then(|p| k.open_into(&p, pk.as_deref(), &mut out));
        prop_assert!(r.is_err());
        prop_assert_eq!(out, b"keep".to_vec());
    }

    /// The parser never panics, and classifies what it refuses by its first byte and length.
    #[test]
    fn keyref_parse_classifies_any_input(bytes in prop::collection::vec(any::<u8>(), 0..80)) {
        match KeyRef::parse(&bytes) {
            Ok(p) => {
                prop_assert_eq!(bytes[0], keyref::TAG);
                prop_assert_eq!(p.plaintext_len() + keyref::OVERHEAD, bytes.len());
            }
            Err(FormatError::NotSealed) => prop_assert!(bytes.first().is_none_or(|b| *b != keyref::TAG && !keyref::RESERVED_TAGS.contains(b))),
            Err(FormatError::UnsupportedVersion(b)) => prop_assert!(keyref::RESERVED_TAGS.contains(&b)),
            Err(FormatError::Truncated) => prop_assert!(bytes[0] == keyref::TAG && bytes.len() < keyref::OVERHEAD),
            Err(e) => prop_assert!(false, "unexpected {:?}", e),
        }
    }

    /// The text form of any bytes decodes to them; text that is not canonical base64url is refused.
    #[test]
    fn text_form_round_trip(bytes in prop::collection::vec(any::<u8>(), 0..300), junk in "[^A-Za-z0-9_-]") {
        let t = keyref::to_text(&bytes);
        prop_assert_eq!(keyref::from_text(&t).unwrap(), bytes.clone());
        let bad = format!("{t}{junk}");
        prop_assert!(keyref::from_text(&bad).is_err());
        let s = Sealed::from_bytes(bytes.clone());
        let json = serde_json::to_string(&s).unwrap();
        prop_assert_eq!(serde_json::from_str::<Sealed>(&json).unwrap(), s);
    }

    /// An index definition's text parses back to the same definition, and is canonical.
    #[test]
    fn index_definition_round_trip(
        fields in prop::collection::vec(("[a-z_][a-z0-9_]{0,20}", normalize_strategy()), 1..6),
        bits in 1u16..=256,
    ) {
        let d = IndexDef::new("idx", fields, bits).unwrap();
        let text = d.encode();
        let back = IndexDef::parse("idx", &text).unwrap();
        prop_assert_eq!(back.encode(), text);
        prop_assert_eq!(back, d);
    }

    /// Terms are `1 + ceil(bits / 8)` bytes, start with the generation byte, keep the unused low
    /// bits clear, and depend on the normalised value only.
    #[test]
    fn index_terms_shape(value in "[ A-Za-z0-9@.]{0,40}", bits in 1u16..=256, generation in any::<u32>()) {
        let d = IndexDef::new("idx", [("v", Normalize::Lowercase)], bits).unwrap();
        let k = IndexKey::derive(&DataKey::from_bytes([3; 32]), KeyId([9; 8]), generation);
        let t = k.term(&d, &d.input(&[value.as_bytes()]).unwrap());
        let b = t.as_bytes();
        prop_assert_eq!(b.len(), 1 + usize::from(bits).div_ceil(8));
        prop_assert_eq!(b[0], generation.to_le_bytes()[0]);
        let unused = (8 - bits % 8) % 8;
        prop_assert_eq!(b[b.len() - 1] & ((1u16 << unused) - 1) as u8, 0);
        let upper = format!("  {}\t", value.to_uppercase());
        prop_assert_eq!(&t, &k.term(&d, &d.input(&[upper.as_bytes()]).unwrap()));
    }

    /// The typed field codecs round-trip.
    #[test]
    fn field_value_codecs(s in ".{0,40}", b in prop::collection::vec(any::<u8>(), 0..40), i in any::<i64>(), u in any::<u32>(), f in any::<bool>()) {
        fn rt<T: FieldValue + PartialEq + std::fmt::Debug>(v: T) -> Result<(), TestCaseError> {
            let mut buf = Vec::new();
            v.encode(&mut buf);
            prop_assert_eq!(T::decode(&buf), Some(v));
            Ok(())
        }
        rt(s)?;
        rt(b)?;
        rt(i)?;
        rt(u)?;
        rt(f)?;
    }
}
