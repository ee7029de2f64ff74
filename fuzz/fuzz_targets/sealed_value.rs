//! Value-level sealed values `ENC[v2:<base64url>]` and `ENC[v1:<t>:<base64url>]` (FORMAT.md §10),
//! in both formats (format 2 with the padding chosen by `selector`).
//!
//! Input: `mode`, `selector`, payload.
//! - even mode: the payload is text to open; opening succeeds only for a value that sealing
//!   gives back byte for byte (sealing is deterministic), so a successful open re-seals to the
//!   input.
//! - odd mode: the payload is a plaintext; it is sealed and opened back, then the text is
//!   changed at one place (a character replaced, inserted or removed, chosen by `selector` and
//!   the payload) and must no longer open.
#![no_main]

use envseal_core::values::{KeyPath, PathSegment, ValueKeys, ValueType, is_sealed};
use envseal_fuzz::ENGINES;
use libfuzzer_sys::fuzz_target;

const TYPES: [ValueType; 4] = [ValueType::Str, ValueType::Num, ValueType::Bool, ValueType::Null];
/// Paddings the harness seals with (the first five) and the vectors use (64 too).
const PADDINGS: [u32; 6] = [0, 1, 16, 32, 4096, 64];
const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_+/=:[]vsnbzE01 ";

fn paths() -> [KeyPath; 3] {
    [
        KeyPath::key("DB_PASSWORD"),
        KeyPath(vec![PathSegment::Key("db".into()), PathSegment::Index(0), PathSegment::Key("password".into())]),
        KeyPath(vec![PathSegment::Key("db.0".into()), PathSegment::Key("password".into())]),
    ]
}

fuzz_target!(|data: &[u8]| {
    let [mode, selector, payload @ ..] = data else { return };
    let path = &paths()[*selector as usize % 3];
    let ty = TYPES[(*selector as usize / 3) % 4];
    let dk = envseal_fuzz::field_key();
    let file_id = [0x5a; 32];
    let padding = PADDINGS[*selector as usize % 5];
    for (&engine, version) in ENGINES.iter().flat_map(|e| [(e, 1u8), (e, 2u8)]) {
        let keys = ValueKeys::derive(engine, &dk, file_id, version, padding).expect("valid version and padding");
        if mode % 2 == 0 {
            let Ok(text) = std::str::from_utf8(payload) else { return };
            let _ = is_sealed(text);
            if let Ok((t, pt)) = keys.open(path, text) {
                // Readers accept any padding (it is a writer's setting, inside the ciphertext),
                // so a value opens under these keys whichever padding sealed it: it must re-seal
                // byte for byte under one of the paddings the harness and the vectors use.
                let canonical = PADDINGS.iter().any(|&p| {
                    let k = ValueKeys::derive(engine, &dk, file_id, version, p).expect("valid padding");
                    k.seal(path, t, pt.expose_secret()).expect("an opened value re-seals") == text
                });
                assert!(canonical, "a non-canonical sealed value opened");
            }
        } else {
            let sealed = keys.seal(path, ty, payload).expect("payload is below the value limit");
            assert!(is_sealed(&sealed));
            let (t, pt) = keys.open(path, &sealed).expect("own sealed value opens");
            assert_eq!((t, pt.expose_secret()), (ty, payload));
            let mut bytes = sealed.clone().into_bytes();
            let at = payload.first().copied().unwrap_or(0) as usize * 7 % (bytes.len() + 1);
            let c = ALPHABET[*mode as usize / 2 % ALPHABET.len()];
            match selector / 12 % 3 {
                0 if at < bytes.len() && bytes[at] != c => bytes[at] = c,
                1 => bytes.insert(at, c),
                2 if at < bytes.len() => {
                    bytes.remove(at);
                }
                _ => return,
            }
            let changed = String::from_utf8(bytes).expect("ASCII edits keep UTF-8");
            assert_ne!(changed, sealed);
            assert!(keys.open(path, &changed).is_err(), "a changed sealed value still opens: {changed}");
        }
    }
});
