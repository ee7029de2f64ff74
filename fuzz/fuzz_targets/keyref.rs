//! Key-reference envelopes and index definitions (FORMAT.md §11): parsing never panics; a
//! parsed envelope's parts add up to its input and its text form round-trips; opening with the
//! vectors' data key and key id under the vectors' scope gives the same answer on every AEAD
//! engine; an index definition that parses re-encodes to its input.
#![no_main]

use envseal_core::EncryptionContext;
use envseal_fields::index::IndexDef;
use envseal_fields::keyref::{self, KeyId, KeyRef, ValueKey};
use envseal_fuzz::{ENGINES, field_key};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(def) = IndexDef::parse("fuzz_idx", text) {
            assert_eq!(def.encode(), text, "a definition that parses is canonical");
        }
        if let Ok(bytes) = keyref::from_text(text) {
            assert_eq!(keyref::to_text(&bytes), text, "only canonical text decodes");
        }
    }
    let Ok(env) = KeyRef::parse(data) else { return };
    assert_eq!(env.plaintext_len() + keyref::OVERHEAD, data.len());
    assert_eq!(keyref::key_id_of(data), Some(env.key_id));
    assert_eq!(keyref::from_text(&keyref::to_text(data)).expect("own text form decodes"), data);
    let scope = EncryptionContext::from_pairs([("app", "vectors"), ("table", "users"), ("column", "email")]).unwrap();
    let id = KeyId(std::array::from_fn(|i| 0x50 + i as u8));
    for pk in [None, Some(&b"42"[..]), Some(&b""[..])] {
        let mut first = None;
        for &engine in ENGINES {
            let k = ValueKey::derive(engine, &field_key(), id, &scope.canonical_bytes());
            let mut out = b"prefix".to_vec();
            let r = k.open_into(&env, pk, &mut out).map_err(|e| format!("{e:?}"));
            match &r {
                Ok(()) => assert_eq!(out.len(), 6 + env.plaintext_len()),
                Err(_) => assert_eq!(out, b"prefix", "a failed open leaves the buffer as it was"),
            }
            let r = r.map(|()| out);
            match &first {
                None => first = Some(r),
                Some(f) => assert_eq!(f, &r, "AEAD engines disagree"),
            }
        }
    }
});
