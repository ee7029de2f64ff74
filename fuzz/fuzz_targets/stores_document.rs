//! Value-level sealed files (.env, JSON, YAML) and their envseal metadata: parse, list entries,
//! read the metadata, render. A .env file without metadata renders byte for byte; rendering is
//! stable (render -> parse -> render is the identity), keeps every entry and the metadata, and
//! metadata written back reads back equal.
#![no_main]

use envseal_stores::{Format, parse};
use libfuzzer_sys::fuzz_target;

const FORMATS: [Format; 3] = [Format::Dotenv, Format::Json, Format::Yaml];

fuzz_target!(|data: &[u8]| {
    let [sel, content @ ..] = data else { return };
    let format = FORMATS[*sel as usize % 3];
    let _ = Format::detect(None, content);
    let Ok(doc) = parse(format, content) else { return };
    let entries = doc.entries();
    for e in &entries {
        if !envseal_core::values::is_sealed(&e.text) {
            let _ = doc.decode_value(&e.text);
        }
    }
    let meta = doc.metadata().map_err(|e| e.to_string());
    let rendered = doc.render();
    // Without metadata, .env rendering is byte-exact (the metadata block itself is rewritten
    // in its canonical form: one field a line, each with a line ending).
    if format == Format::Dotenv && meta == Ok(None) {
        assert_eq!(rendered, content, ".env rendering is not lossless");
    }
    let again = parse(format, &rendered).expect("rendered output parses");
    assert_eq!(again.entries(), entries, "entries changed through render");
    assert_eq!(again.metadata().map_err(|e| e.to_string()), meta, "metadata changed through render");
    assert_eq!(again.render(), rendered, "render is not stable");
    if let Ok(Some(m)) = meta {
        let mut doc = parse(format, content).expect("parsed before");
        doc.set_metadata(None).expect("metadata removes");
        assert_eq!(doc.metadata().expect("no metadata"), None);
        assert_eq!(doc.entries(), entries, "removing metadata changed entries");
        doc.set_metadata(Some(&m)).expect("metadata writes");
        assert_eq!(doc.metadata().expect("metadata reads"), Some(m.clone()));
        let re = parse(format, &doc.render()).expect("re-rendered output parses");
        assert_eq!(re.metadata().expect("metadata reads"), Some(m));
        assert_eq!(re.entries(), entries);
    }
});
