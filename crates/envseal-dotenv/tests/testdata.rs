//! The sample files in `testdata/dotenv/` (see the README there) parse, round-trip byte for byte
//! and decode to the expected values.

use std::path::PathBuf;

use envseal_dotenv::{Document, LineEnding, Quote};

fn read(name: &str) -> Vec<u8> {
    let path: PathBuf = [env!("CARGO_MANIFEST_DIR"), "..", "..", "testdata", "dotenv", name].iter().collect();
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn parse_round_trip(name: &str) -> Document {
    let bytes = read(name);
    let doc = Document::parse_bytes(&bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
    assert_eq!(doc.to_string().as_bytes(), bytes.as_slice(), "{name} round trip");
    doc
}

#[test]
fn grammar_env() {
    let doc = parse_round_trip("grammar.env");
    let expected: &[(&str, &str)] = &[
        ("PLAIN", "value"),
        ("SPACED", "spaced value"),
        ("INDENTED", "yes"),
        ("EXPORTED", "yes"),
        ("TABBED", "x"),
        ("export", "not-a-prefix"),
        ("WITH_COMMENT", "abc"),
        ("TAB_COMMENT", "abc"),
        ("HASH_INSIDE", "abc#def"),
        ("HASH_FIRST", "#not-a-comment"),
        ("ONLY_COMMENT", ""),
        ("EQUALS", "a=b=="),
        ("URL", "postgres://user:p%40ss@db:5432/app?sslmode=require&x=1"),
        ("EMPTY", ""),
        ("EMPTY_DQ", ""),
        ("EMPTY_SQ", ""),
        ("SQ", r#"literal \n $HOME ${VAR} "x" # not a comment"#),
        ("DQ", "tab\tnl\ncr\rq\"bs\\dollar$ unknown\\q ${VAR}"),
        ("DQ_SINGLE", "it's"),
        ("SQ_DOUBLE", "say \"hi\""),
        ("NO_EXPANSION", "${HOME}/bin:$PATH"),
        ("UNICODE", "héllo wörld ✓ 日本"),
        ("UNICODE_DQ", "Grüße 🔑"),
        ("dotted.key-name_1", "ok"),
        ("_UNDERSCORE", "1"),
        ("SEALED", "ENC[v1:str:AAECAwQFBgcICQoLDA0ODw]"),
        ("CRLF_PLAIN", "crlf"),
        ("CRLF_DQ", "crlf quoted"),
        ("CRLF_MULTI", "line one\nline two"),
        ("MULTI_DQ", "-----BEGIN FAKE KEY-----\nAAAA\nBBBB\n-----END FAKE KEY-----"),
        ("MULTI_SQ", "first\nsecond \\n stays"),
        ("MULTI_ESCAPED", "a\nb"),
        ("DUP", "first"),
        ("DUP", "second"),
        ("LAST", "no final newline"),
    ];
    let got: Vec<(&str, &str)> = doc.entries().map(|e| (e.key(), e.value())).collect();
    assert_eq!(got, expected);

    assert_eq!(doc.get("DUP"), Some("second"));
    assert!(doc.entry("EXPORTED").unwrap().has_export());
    assert!(doc.entry("TABBED").unwrap().has_export());
    assert!(!doc.entry("export").unwrap().has_export());
    assert_eq!(doc.entry("WITH_COMMENT").unwrap().comment(), Some("# trailing comment"));
    assert_eq!(doc.entry("CRLF_DQ").unwrap().line_ending(), LineEnding::CrLf);
    assert_eq!(doc.entry("LAST").unwrap().line_ending(), LineEnding::None);
    assert_eq!(doc.lines().len(), 41);
    assert_eq!(doc.to_map().len(), expected.len() - 1);
}

/// Seal every value, then restore every value: the values come back, unquoted entries stay
/// unquoted while sealed, and the layout around the values never moves.
#[test]
fn grammar_env_seal_and_unseal() {
    let mut doc = parse_round_trip("grammar.env");
    let original = doc.clone();
    for (i, e) in doc.entries_mut().enumerate() {
        let was = e.quote();
        e.set_value(&format!("ENC[v1:str:{i}-_abc.XYZ]"));
        assert_eq!(e.quote(), was, "{}: sealing keeps the quoting", e.key());
    }
    let sealed = Document::parse(&doc.to_string()).unwrap();
    assert_eq!(sealed.lines().len(), original.lines().len());
    let originals: Vec<String> = original.entries().map(|e| e.value().to_owned()).collect();
    let mut doc = sealed;
    for (e, v) in doc.entries_mut().zip(&originals) {
        e.set_value(v);
    }
    let restored = Document::parse(&doc.to_string()).unwrap();
    let values: Vec<&str> = restored.entries().map(|e| e.value()).collect();
    assert_eq!(values, originals);
}

#[test]
fn big_env() {
    let text = String::from_utf8(read("big.env")).unwrap();
    let doc = parse_round_trip("big.env");
    assert_eq!(doc.entries().count(), 1000);
    for (n, e) in (1..).zip(doc.entries()) {
        assert_eq!(e.key(), format!("KEY_{n}"));
        assert!(!e.value().is_empty());
    }
    let six = doc.entry("KEY_6").unwrap();
    assert_eq!(six.quote(), Quote::Double);
    assert!(six.value().contains(" #$x \"") && six.value().ends_with("\" \\end"));
    let seven = doc.entry("KEY_7").unwrap();
    assert!(seven.value().ends_with("\\n${NOT_EXPANDED}\\"));
    assert_eq!(doc.entry("KEY_50").unwrap().comment(), Some("# rotated 2022-06-10"));

    // Sealing then restoring gives back the same bytes: the generator writes each value the way
    // `set_value` would.
    let originals: Vec<String> = doc.entries().map(|e| e.value().to_owned()).collect();
    let mut edited = doc.clone();
    for e in edited.entries_mut() {
        e.set_value("ENC[v1:str:AAAA]");
    }
    let mut edited = Document::parse(&edited.to_string()).unwrap();
    for (e, v) in edited.entries_mut().zip(&originals) {
        e.set_value(v);
    }
    assert_eq!(edited.to_string(), text);
}
