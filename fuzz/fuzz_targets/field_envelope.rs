//! Field envelope byte form (FORMAT.md §5): a parsed envelope re-encodes to its input (through
//! `with_entry` with its own entry) and through the text form; opening with the vectors' field
//! key gives the same answer on every AEAD engine.
#![no_main]

use envseal_core::EncryptionContext;
use envseal_core::envelope::{Envelope, FieldKey, from_text, to_text};
use envseal_fuzz::{ENGINES, field_key};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(env) = Envelope::parse(data) else { return };
    let entry = env.entry().expect("parse validated the entry");
    assert_eq!(env.with_entry(&entry).expect("own entry is in bounds"), data, "with_entry(own entry) changed bytes");
    assert_eq!(from_text(&to_text(data)).expect("own text form decodes"), data);
    assert!(env.plaintext_len() + 16 <= data.len());
    // The contexts the vectors use; a fuzzed envelope sealed under any other cannot open.
    let contexts = [
        EncryptionContext::new(),
        EncryptionContext::from_pairs([("table", "users")]).unwrap(),
        EncryptionContext::from_pairs([("table", "users"), ("tenant", "Zürich ☃")]).unwrap(),
        EncryptionContext::from_pairs([("column", "card_number"), ("table", "users")]).unwrap(),
    ];
    let dk = field_key();
    for ctx in &contexts {
        let mut first = None;
        for &engine in ENGINES {
            let k = FieldKey::for_opening(engine, &dk, *env.salt);
            let r = k.open(&env, ctx).map(|p| p.expose_secret().to_vec()).map_err(|e| format!("{e:?}"));
            if let Ok(p) = &r {
                assert_eq!(p.len(), env.plaintext_len());
            }
            match &first {
                None => first = Some(r),
                Some(f) => assert_eq!(f, &r, "AEAD engines disagree"),
            }
        }
    }
});
