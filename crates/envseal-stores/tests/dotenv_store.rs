//! `.env` sealing through the mock KMS: byte-exact round trips of every grammar case, decoded
//! values, duplicates, set/unset, tampering.

use envseal_core::container::Recipient;
use envseal_core::values::{KeyPath, ValueType};
use envseal_core::{EncryptionContext, Engine, Error, FormatError, Kms};
use envseal_kms_mock::MockKms;
use envseal_stores::dotenv::DotenvDocument;
use envseal_stores::{Document, SealSpec, StoreError, Unlocked};

fn testdata(name: &str) -> Vec<u8> {
    std::fs::read(format!("{}/../../testdata/dotenv/{name}", env!("CARGO_MANIFEST_DIR"))).unwrap()
}

async fn seal(kms: &MockKms, key: &str, content: &[u8], plain: Option<&str>) -> Vec<u8> {
    let mut doc: Box<dyn Document> = Box::new(DotenvDocument::parse(content).unwrap());
    let rs = [Recipient { kms, key }];
    let spec = SealSpec {
        recipients: &rs,
        context: EncryptionContext::new(),
        plain_keys: plain.map(str::to_string),
        padding: envseal_core::values::DEFAULT_PADDING,
        engine: Engine::default(),
    };
    envseal_stores::seal(doc.as_mut(), &spec).await.unwrap();
    doc.render()
}

async fn open(kms: &MockKms, sealed: &[u8]) -> Result<(Box<dyn Document>, Unlocked), StoreError> {
    let doc: Box<dyn Document> = Box::new(DotenvDocument::parse(sealed)?);
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

async fn decrypt(kms: &MockKms, sealed: &[u8]) -> Vec<u8> {
    let (mut doc, u) = open(kms, sealed).await.unwrap();
    u.decrypt(doc.as_mut()).unwrap();
    doc.render()
}

#[tokio::test]
async fn every_sample_round_trips_byte_exact() {
    let kms = MockKms::new();
    let key = kms.create_default_key();
    for name in ["grammar.env", "big.env"] {
        let original = testdata(name);
        let sealed = seal(&kms, &key, &original, None).await;
        let text = String::from_utf8(sealed.clone()).unwrap();
        assert!(text.contains("#ENVSEAL_MAC="), "{name}");
        // Every value is sealed: no original value text survives.
        let plain = DotenvDocument::parse(&original).unwrap();
        for e in plain.entries() {
            if e.text.len() >= 6 {
                assert!(!text.contains(&e.text), "{name}: value of {} left in clear", e.path.display());
            }
        }
        assert_eq!(decrypt(&kms, &sealed).await, original, "{name}");
    }
}

#[tokio::test]
async fn values_decode_like_a_shell_and_duplicates_last_wins() {
    let kms = MockKms::new();
    let key = kms.create_default_key();
    let src = b"export A=1\nB=\"two\\nlines\"\nC='lit $HOME'\nA=3 # again\nEMPTY=\nM=\"x\ny\"\n";
    let sealed = seal(&kms, &key, src, None).await;
    let (doc, u) = open(&kms, &sealed).await.unwrap();
    let vals: Vec<(String, String)> = u
        .decoded_values(doc.as_ref())
        .unwrap()
        .into_iter()
        .map(|(p, _, v)| (p.display(), String::from_utf8(v.expose_secret().to_vec()).unwrap()))
        .collect();
    assert_eq!(
        vals,
        vec![
            ("A".into(), "1".into()),
            ("B".into(), "two\nlines".into()),
            ("C".into(), "lit $HOME".into()),
            ("A".into(), "3".into()),
            ("EMPTY".into(), "".into()),
            ("M".into(), "x\ny".into()),
        ]
    );
    assert_eq!(decrypt(&kms, &sealed).await, src);
}

#[tokio::test]
async fn set_and_unset_touch_one_line() {
    let kms = MockKms::new();
    let key = kms.create_default_key();
    let src = b"# config\nA=1\nB=2\nC=3\n";
    let sealed = seal(&kms, &key, src, None).await;
    let (mut doc, mut u) = open(&kms, &sealed).await.unwrap();
    u.set(doc.as_mut(), &KeyPath::key("B"), ValueType::Str, b"two words").unwrap();
    u.set(doc.as_mut(), &KeyPath::key("D"), ValueType::Str, b"new\nline").unwrap();
    let after = String::from_utf8(doc.render()).unwrap();
    let before = String::from_utf8(sealed.clone()).unwrap();
    let line = |t: &str, k: &str| t.lines().find(|l| l.starts_with(k)).unwrap().to_string();
    assert_eq!(line(&after, "A="), line(&before, "A="));
    assert_eq!(line(&after, "C="), line(&before, "C="));
    assert_ne!(line(&after, "B="), line(&before, "B="));
    let plain = decrypt(&kms, after.as_bytes()).await;
    // B keeps its (unquoted) style, which can hold inner spaces; D is new and gets quotes.
    assert_eq!(plain, b"# config\nA=1\nB=two words\nC=3\nD=\"new\\nline\"\n");
    let (mut doc, mut u) = open(&kms, after.as_bytes()).await.unwrap();
    u.unset(doc.as_mut(), &KeyPath::key("A")).unwrap();
    assert_eq!(decrypt(&kms, &doc.render()).await, b"# config\nB=two words\nC=3\nD=\"new\\nline\"\n");
}

#[tokio::test]
async fn crlf_and_missing_final_newline_and_plain_keys() {
    let kms = MockKms::new();
    let key = kms.create_default_key();
    for src in [&b"A=1\r\nPUBLIC_URL=https://x\r\nB=2"[..], b"A=1", b"", b"# only a comment"] {
        let sealed = seal(&kms, &key, src, Some("/PUBLIC_[^/]*")).await;
        assert_eq!(decrypt(&kms, &sealed).await, src, "{:?}", String::from_utf8_lossy(src));
    }
    let sealed = seal(&kms, &key, b"A=1\r\nPUBLIC_URL=https://x\r\n", Some("/PUBLIC_[^/]*")).await;
    let t = String::from_utf8(sealed).unwrap();
    assert!(t.contains("PUBLIC_URL=https://x\r\n") && t.contains("#ENVSEAL_MAC=") && t.ends_with("\r\n"));
}

#[tokio::test]
async fn tampering_and_metadata_errors() {
    let kms = MockKms::new();
    let key = kms.create_default_key();
    let sealed = String::from_utf8(seal(&kms, &key, b"A=1\nB=2\nC=3\n", None).await).unwrap();
    let lines: Vec<&str> = sealed.lines().collect();
    let val = |i: usize| lines[i].split_once('=').unwrap().1.to_string();
    let mac = |s: &str| match futures_open(&kms, s) {
        Err(StoreError::Core(Error::Format(FormatError::MacMismatch))) => true,
        other => panic!("{other:?}"),
    };
    // Swap two values.
    let swapped = sealed.replacen(&val(0), "@@", 1).replacen(&val(1), &val(0), 1).replacen("@@", &val(1), 1);
    assert!(mac(&swapped));
    // Remove a line; reorder two lines; duplicate a line.
    assert!(mac(&sealed.replacen(&format!("{}\n", lines[1]), "", 1)));
    assert!(mac(&sealed.replacen(
        &format!("{}\n{}\n", lines[0], lines[1]),
        &format!("{}\n{}\n", lines[1], lines[0]),
        1
    )));
    assert!(mac(&sealed.replacen(&format!("{}\n", lines[2]), &format!("{}\n{}\n", lines[2], lines[2]), 1)));
    // Move a sealed value to another key: the MAC catches it first (and the value AAD too).
    assert!(mac(&sealed.replacen(&format!("A={}", val(0)), &format!("Z={}", val(0)), 1)));
    // Two metadata sections.
    let twice = format!("{sealed}X=1\n{}", lines[3..].join("\n"));
    assert!(matches!(DotenvDocument::parse(twice.as_bytes()), Err(StoreError::Metadata(_))));
    // Unknown metadata field.
    let odd = format!("{sealed}#ENVSEAL_WHAT=1\n");
    assert!(matches!(DotenvDocument::parse(odd.as_bytes()).unwrap().metadata(), Err(StoreError::Metadata(_))));
    // Parse errors never quote values.
    let e = DotenvDocument::parse(b"A=\"SECRETMARKER").unwrap_err().to_string();
    assert!(!e.contains("SECRETMARKER"), "{e}");
}

fn futures_open(kms: &MockKms, s: &str) -> Result<(), StoreError> {
    std::thread::scope(|sc| {
        sc.spawn(|| {
            let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
            rt.block_on(open(kms, s.as_bytes())).map(|_| ())
        })
        .join()
        .unwrap()
    })
}
