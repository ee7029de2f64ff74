//! The .env grammar (envseal-dotenv): printing a parsed document gives back the input byte for
//! byte; writing every value back through `set` and adding one new value keeps what a reader
//! sees.
#![no_main]

use envseal_dotenv::Document;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(doc) = Document::parse_bytes(data) else { return };
    assert_eq!(doc.to_string().as_bytes(), data, "printing is not lossless");
    let map = doc.to_map();
    let _ = doc.env();
    let mut edited = doc.clone();
    for (k, v) in &map {
        edited.set(k, v).expect("a parsed key is valid");
    }
    // A value taken from the input, to reach the writer's quoting with odd characters.
    let fresh: String = String::from_utf8_lossy(data).chars().rev().take(40).collect();
    edited.set("ENVSEAL_FUZZ_NEW", &fresh).expect("valid key");
    let printed = edited.to_string();
    let reparsed = Document::parse(&printed).expect("printed document parses");
    let mut expected = map.clone();
    expected.insert("ENVSEAL_FUZZ_NEW".into(), fresh.clone());
    assert_eq!(reparsed.to_map(), expected, "set values do not read back");
});
