//! YAML value-level sealing through the mock KMS: the samples in `testdata/yaml/` round-trip,
//! `set` touches one ciphertext, tampering is detected, parse errors quote nothing.

use envseal_core::container::Recipient;
use envseal_core::values::ValueType;
use envseal_core::{EncryptionContext, Engine, Error, FormatError, Kms};
use envseal_kms_mock::MockKms;
use envseal_stores::yaml::YamlDocument;
use envseal_stores::{Document, Format, SealSpec, StoreError, Unlocked, parse_key_path};

const SAMPLE: &str = "\
# secrets
db:
  host: db.internal   # primary
  password: 'hunter2'
  port: 5432
  replicas:
    - r1
    - r2
debug: false
token: ~
PUBLIC_URL: https://example.com
ratio: 1.50
";

fn testdata_dir() -> std::path::PathBuf {
    [env!("CARGO_MANIFEST_DIR"), "..", "..", "testdata", "yaml"].iter().collect()
}

fn context() -> EncryptionContext {
    EncryptionContext::from_pairs([("app", "billing")]).unwrap()
}

async fn seal(kms: &MockKms, key: &str, text: &[u8], plain: Option<&str>) -> (Box<dyn Document>, Unlocked) {
    let mut doc = envseal_stores::parse(Format::Yaml, text).unwrap();
    let rs = [Recipient { kms, key }];
    let spec = SealSpec {
        recipients: &rs,
        context: context(),
        plain_keys: plain.map(str::to_string),
        padding: envseal_core::values::DEFAULT_PADDING,
        engine: Engine::default(),
    };
    let u = envseal_stores::seal(doc.as_mut(), &spec).await.unwrap();
    (doc, u)
}

async fn reopen(kms: &MockKms, bytes: &[u8]) -> Result<(Box<dyn Document>, Unlocked), StoreError> {
    let doc: Box<dyn Document> = Box::new(YamlDocument::parse(bytes)?);
    let u = envseal_stores::unlock(
        doc.as_ref(),
        &[kms as &dyn Kms],
        &EncryptionContext::new(),
        &envseal_core::entries::Trust::Discovery,
        Engine::default(),
    )
    .await?;
    Ok((doc, u))
}

fn mac_mismatch(r: Result<(Box<dyn Document>, Unlocked), StoreError>) -> bool {
    matches!(r.err(), Some(StoreError::Core(Error::Format(FormatError::MacMismatch))))
}

/// Seals, renders, reopens from the bytes, decrypts; returns (sealed text, decrypted text).
async fn round_trip(kms: &MockKms, key: &str, original: &[u8]) -> (String, String) {
    let (doc, _) = seal(kms, key, original, None).await;
    let sealed = String::from_utf8(doc.render()).unwrap();
    let (mut doc, u) = reopen(kms, sealed.as_bytes()).await.unwrap();
    u.decrypt(doc.as_mut()).unwrap();
    (sealed, String::from_utf8(doc.render()).unwrap())
}

#[tokio::test]
async fn testdata_samples_round_trip() {
    let kms = MockKms::new();
    let key = kms.create_default_key();
    let mut names: Vec<_> = std::fs::read_dir(testdata_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    names.sort();
    assert!(names.len() >= 5, "{names:?}");
    for path in names {
        let original = std::fs::read(&path).unwrap();
        let name = path.file_name().unwrap().to_str().unwrap();
        let expected_path = testdata_dir().join("expected").join(name);
        let expected =
            std::fs::read_to_string(&expected_path).unwrap_or_else(|_| String::from_utf8(original.clone()).unwrap());

        let plain = YamlDocument::parse(&original).unwrap();
        let (sealed, decrypted) = round_trip(&kms, &key, &original).await;
        assert_eq!(decrypted, expected, "{name}");

        // Every value sealed, every string value gone from the text.
        let sealed_doc = YamlDocument::parse(sealed.as_bytes()).unwrap();
        assert_eq!(sealed_doc.entries().len(), plain.entries().len(), "{name}");
        for (e, s) in plain.entries().iter().zip(sealed_doc.entries()) {
            assert_eq!((&e.path, s.ty), (&s.path, ValueType::Str), "{name}");
            assert!(envseal_core::values::is_sealed(&s.text), "{name}: {}", s.path.display());
            let body = &sealed[..sealed.find("\nenvseal:\n").unwrap()];
            if e.ty == ValueType::Str && e.text.len() >= 6 {
                assert!(!body.contains(&e.text), "{name}: {} in clear", e.path.display());
            }
        }
        // The decrypted document has the original values, types and order.
        assert_eq!(YamlDocument::parse(decrypted.as_bytes()).unwrap().entries(), plain.entries(), "{name}");
    }
}

#[tokio::test]
async fn line_endings_and_final_newline_round_trip() {
    let kms = MockKms::new();
    let key = kms.create_default_key();
    for original in [
        "a: 1\r\nb:\r\n  c: 'x'\r\n  d: |\r\n    l1\r\n    l2\r\n# end\r\n",
        "a: 1\nb: two",
        "a: 1\n# trailing comment without newline",
        "---\na: 1\n...\n",
        "%YAML 1.2\n---\na: [1, two, \"three\"]\nb: {c: d}\n",
        "  indented: root\n  second: 2\n",
        "a:\n    four: spaces\n    pem: |\n        x\n        y\n",
    ] {
        let (sealed, decrypted) = round_trip(&kms, &key, original.as_bytes()).await;
        assert_eq!(decrypted, original, "sealed:\n{sealed}");
        if original.contains("\r\n") {
            assert_eq!(sealed.matches('\n').count(), sealed.matches("\r\n").count(), "CRLF kept:\n{sealed:?}");
        }
    }
}

#[tokio::test]
async fn sealed_file_keeps_layout_and_plain_keys() {
    let kms = MockKms::new();
    let key = kms.create_default_key();
    let (doc, _) = seal(&kms, &key, SAMPLE.as_bytes(), Some("/PUBLIC_[^/]*")).await;
    let text = String::from_utf8(doc.render()).unwrap();
    // Look for the values outside the ciphertexts and the metadata: a short value such as "r1"
    // may appear inside random base64 by chance.
    let mut clear = text[..text.find("\nenvseal:\n").expect("metadata block")].to_string();
    while let Some(start) = clear.find("ENC[") {
        let end = start + clear[start..].find(']').expect("closed ENC[...]") + 1;
        clear.replace_range(start..end, "");
    }
    for secret in ["hunter2", "db.internal", "5432", "r1", "1.50"] {
        assert!(!clear.contains(secret), "{secret} in\n{text}");
    }
    assert!(text.contains("PUBLIC_URL: https://example.com\n"), "plain key kept in clear");
    assert!(text.starts_with("# secrets\ndb:\n  host: ENC[v2:"), "{text}");
    assert!(text.contains("   # primary\n  password: 'ENC[v2:"), "comment and quoting kept:\n{text}");
    assert!(text.contains("\n    - ENC[v2:"), "{text}");
    // Metadata last, as a block mapping.
    let meta_at = text.find("\nenvseal:\n  version: 2\n").expect("metadata block");
    assert!(text[..meta_at].contains("ratio: ENC[v2:"), "{text}");
    assert!(doc.metadata().unwrap().is_some());
}

#[tokio::test]
async fn set_changes_one_ciphertext_only_and_edit_keeps_unchanged_values() {
    let kms = MockKms::new();
    let key = kms.create_default_key();
    let (doc, _) = seal(&kms, &key, SAMPLE.as_bytes(), None).await;
    let before = doc.entries();
    let bytes = doc.render();
    let (mut doc, mut u) = reopen(&kms, &bytes).await.unwrap();
    u.set(doc.as_mut(), &parse_key_path("db.password").unwrap(), ValueType::Str, b"new: pass # word").unwrap();
    let after = doc.entries();
    let changed: Vec<_> = before.iter().zip(&after).filter(|(a, b)| a != b).map(|(a, _)| a.path.display()).collect();
    assert_eq!(changed, vec!["db.password"]);
    // Only that line and the metadata's mac/modified lines differ.
    let bytes2 = doc.render();
    let (old, new) = (String::from_utf8(bytes.clone()).unwrap(), String::from_utf8(bytes2.clone()).unwrap());
    let diff: Vec<_> = old.lines().zip(new.lines()).filter(|(a, b)| a != b).map(|(a, _)| a.trim_start()).collect();
    assert!(diff.len() <= 3 && diff[0].starts_with("password: 'ENC["), "{diff:?}");
    assert!(diff[1..].iter().all(|l| l.starts_with("mac: ") || l.starts_with("modified: ")), "{diff:?}");

    // The result opens, MAC and all, and holds the new value.
    let (doc3, u3) = reopen(&kms, &bytes2).await.unwrap();
    let vals = u3.values(doc3.as_ref()).unwrap();
    let pw = vals.iter().find(|(p, _, _)| p.display() == "db.password").unwrap();
    assert_eq!(pw.2.expose_secret(), b"new: pass # word");

    // A new nested key and a new sequence item.
    let (mut d4, mut u4) = reopen(&kms, &bytes2).await.unwrap();
    u4.set(d4.as_mut(), &parse_key_path("db.pool.max").unwrap(), ValueType::Num, b"20").unwrap();
    u4.set(d4.as_mut(), &parse_key_path("db.replicas[2]").unwrap(), ValueType::Str, b"r3").unwrap();
    let t4 = String::from_utf8(d4.render()).unwrap();
    assert!(t4.contains("\n  pool:\n    max: ENC[v2:"), "{t4}");
    let (mut d4, u4) = reopen(&kms, t4.as_bytes()).await.unwrap();
    u4.decrypt(d4.as_mut()).unwrap();
    let plain4 = String::from_utf8(d4.render()).unwrap();
    assert!(plain4.contains("  password: 'new: pass # word'\n"), "{plain4}");
    assert!(plain4.contains("    - r2\n    - r3\n  pool:\n    max: 20\ndebug: false\n"), "{plain4}");

    // Edit flow: decrypt a copy, change one value in the plaintext, reseal with the same keys.
    let (mut plain, u5) = reopen(&kms, &bytes2).await.unwrap();
    u5.decrypt(plain.as_mut()).unwrap();
    let edited = String::from_utf8(plain.render()).unwrap().replace("db.internal", "db2.internal");
    let mut edited_doc: Box<dyn Document> = Box::new(YamlDocument::parse(edited.as_bytes()).unwrap());
    let (_, mut u6) = reopen(&kms, &bytes2).await.unwrap();
    u6.reseal(edited_doc.as_mut()).unwrap();
    let changed: Vec<_> = doc3
        .entries()
        .iter()
        .zip(&edited_doc.entries())
        .filter(|(a, b)| a != b)
        .map(|(a, _)| a.path.display())
        .collect();
    assert_eq!(changed, vec!["db.host"]);
    assert!(reopen(&kms, &edited_doc.render()).await.is_ok());

    // Unset.
    let (mut d7, mut u7) = reopen(&kms, &bytes2).await.unwrap();
    u7.unset(d7.as_mut(), &parse_key_path("debug").unwrap()).unwrap();
    assert!(matches!(u7.unset(d7.as_mut(), &parse_key_path("debug").unwrap()), Err(StoreError::NoSuchKey(_))));
    // The last item: removing an earlier one would move later items to paths their
    // ciphertexts are not bound to (`Unlocked::unset` does not reseal them).
    u7.unset(d7.as_mut(), &parse_key_path("db.replicas[1]").unwrap()).unwrap();
    let t7 = String::from_utf8(d7.render()).unwrap();
    assert!(!t7.contains("debug:"), "{t7}");
    let (mut d7, u7) = reopen(&kms, t7.as_bytes()).await.unwrap();
    u7.decrypt(d7.as_mut()).unwrap();
    let plain7 = String::from_utf8(d7.render()).unwrap();
    assert!(plain7.contains("  replicas:\n    - r1\ntoken: ~\n"), "{plain7}");
}

/// Swaps the text of the values of two lines that start with the given keys.
fn swap_line_values(text: &str, a: &str, b: &str) -> String {
    let lines: Vec<&str> = text.split_inclusive('\n').collect();
    let find = |k: &str| lines.iter().position(|l| l.trim_start().starts_with(k)).unwrap();
    let (ia, ib) = (find(a), find(b));
    let value = |l: &str| l.split_once(": ").unwrap().1.to_string();
    let (va, vb) = (value(lines[ia]), value(lines[ib]));
    let mut out: Vec<String> = lines.iter().map(|l| l.to_string()).collect();
    out[ia] = format!("{}: {vb}", lines[ia].split_once(": ").unwrap().0);
    out[ib] = format!("{}: {va}", lines[ib].split_once(": ").unwrap().0);
    out.concat()
}

#[tokio::test]
async fn tampering_is_detected() {
    let kms = MockKms::new();
    let key = kms.create_default_key();
    let (doc, _) = seal(&kms, &key, SAMPLE.as_bytes(), Some("/PUBLIC_[^/]*")).await;
    let text = String::from_utf8(doc.render()).unwrap();
    assert!(reopen(&kms, text.as_bytes()).await.is_ok());

    // Swap two sealed values of the same type: each is bound to its path.
    let swapped = swap_line_values(&text, "host:", "PUBLIC_URL:");
    assert!(matches!(reopen(&kms, swapped.as_bytes()).await.err(), Some(StoreError::UnsealedValue(_))));
    let swapped = swap_line_values(&text, "password:", "host:");
    assert!(mac_mismatch(reopen(&kms, swapped.as_bytes()).await), "swap");

    // Remove a value.
    let removed: String = text.split_inclusive('\n').filter(|l| !l.trim_start().starts_with("port:")).collect();
    assert!(mac_mismatch(reopen(&kms, removed.as_bytes()).await), "remove");

    // Reorder two top-level entries.
    let lines: Vec<&str> = text.split_inclusive('\n').collect();
    let d = lines.iter().position(|l| l.starts_with("debug:")).unwrap();
    let mut reordered = lines.clone();
    reordered.swap(d, d + 1);
    assert!(mac_mismatch(reopen(&kms, reordered.concat().as_bytes()).await), "reorder");

    // Change a plain value.
    let plain_changed = text.replace("https://example.com", "https://evil.example");
    assert!(mac_mismatch(reopen(&kms, plain_changed.as_bytes()).await), "plain value");

    // A value added in clear where the rule says sealed.
    let added = text.replace("\nenvseal:\n", "\nextra: x\nenvseal:\n");
    assert!(matches!(reopen(&kms, added.as_bytes()).await.err(), Some(StoreError::UnsealedValue(_))));

    // Metadata twice.
    let twice = format!("{text}envseal:\n  version: 2\n");
    assert!(matches!(reopen(&kms, twice.as_bytes()).await.err(), Some(StoreError::Metadata(_))));

    // Context in the metadata edited: the KMS binding fails.
    let edited = text.replace("app: billing", "app: billinG");
    let err = reopen(&kms, edited.as_bytes()).await.err().unwrap();
    assert!(matches!(err, StoreError::Core(Error::Format(FormatError::HeaderTampered))), "{err:?}");

    // Already sealed.
    let mut d: Box<dyn Document> = Box::new(YamlDocument::parse(text.as_bytes()).unwrap());
    let rs = [Recipient { kms: &kms, key: &key }];
    let spec = SealSpec {
        recipients: &rs,
        context: EncryptionContext::new(),
        plain_keys: None,
        padding: envseal_core::values::DEFAULT_PADDING,
        engine: Engine::default(),
    };
    assert!(matches!(envseal_stores::seal(d.as_mut(), &spec).await, Err(StoreError::AlreadySealed)));
}

#[test]
fn parse_errors_never_contain_values() {
    const MARK: &str = "SECRETMARKER";
    let cases = [
        "a: [SECRETMARKER\n",
        "a: {b: SECRETMARKER\n",
        "a: \"SECRETMARKER\n",
        "a: 'SECRETMARKER\n",
        "a: SECRETMARKER\n---\nb: SECRETMARKER\n",
        "- SECRETMARKER\n",
        "SECRETMARKER\n",
        "a: &SECRETMARKER x\nb: *SECRETMARKER\n",
        "a: !SECRETMARKER x\n",
        "a: SECRETMARKER\na: SECRETMARKER\n",
        "a:\n  b: SECRETMARKER\n c: SECRETMARKER\n",
        "a: \"\\xZZSECRETMARKER\"\n",
        "a: |SECRETMARKER\n  x\n",
        "a: 1\n%SECRETMARKER: x\n",
        "? SECRETMARKER\n: x\n",
        "[SECRETMARKER]: x\n",
        "a: b: SECRETMARKER\n",
        "a: SECRETMARKER\n\u{0}\n",
    ];
    for case in cases {
        let err =
            envseal_stores::parse(Format::Yaml, case.as_bytes()).err().unwrap_or_else(|| panic!("accepted {case:?}"));
        assert!(matches!(err, StoreError::Parse { format: "yaml", .. }), "{err:?}");
        let (shown, debug) = (err.to_string(), format!("{err:?}"));
        assert!(!shown.contains(MARK) && !debug.contains(MARK), "{case:?}: {shown}");
    }
    // Bad metadata: the error names the problem, not the values.
    let meta = "a: 1\nenvseal:\n  version: 1\n  file_id: SECRETMARKER\n  keys: []\n  commitment: x\n  mac: y\n";
    let doc = YamlDocument::parse(meta.as_bytes()).unwrap();
    let err = doc.metadata().unwrap_err();
    assert!(matches!(err, StoreError::Metadata(_)) && !err.to_string().contains(MARK), "{err}");
}
