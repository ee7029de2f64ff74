//! Value-level sealing through the mock KMS: round trips, diff stability, set/unset, tampering.

use envseal_core::container::Recipient;
use envseal_core::values::ValueType;
use envseal_core::{EncryptionContext, Engine, Error, FormatError, Kms};
use envseal_kms_mock::MockKms;
use envseal_stores::{Document, SealSpec, StoreError, json::JsonDocument, parse_key_path};

const SAMPLE: &str = r#"{
  "db": {
    "host": "db.internal",
    "password": "hunter2",
    "port": 5432,
    "replicas": [
      "r1",
      "r2"
    ]
  },
  "debug": false,
  "token": null,
  "PUBLIC_URL": "https://example.com",
  "ratio": 1.50
}
"#;

async fn sealed(kms: &MockKms, key: &str, plain: Option<&str>) -> (Box<dyn Document>, envseal_stores::Unlocked) {
    let mut doc: Box<dyn Document> = Box::new(JsonDocument::parse(SAMPLE.as_bytes()).unwrap());
    let rs = [Recipient { kms, key }];
    let spec = SealSpec {
        recipients: &rs,
        context: EncryptionContext::from_pairs([("app", "billing")]).unwrap(),
        plain_keys: plain.map(str::to_string),
        padding: envseal_core::values::DEFAULT_PADDING,
        engine: Engine::default(),
    };
    let u = envseal_stores::seal(doc.as_mut(), &spec).await.unwrap();
    (doc, u)
}

async fn reopen(kms: &MockKms, bytes: &[u8]) -> Result<(Box<dyn Document>, envseal_stores::Unlocked), StoreError> {
    let doc: Box<dyn Document> = Box::new(JsonDocument::parse(bytes)?);
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

#[tokio::test]
async fn json_round_trip_keeps_types_order_and_bytes() {
    let kms = MockKms::new();
    let key = kms.create_default_key();
    let (doc, _) = sealed(&kms, &key, Some("/PUBLIC_[^/]*")).await;
    let text = String::from_utf8(doc.render()).unwrap();
    assert!(!text.contains("hunter2") && !text.contains("db.internal") && !text.contains("5432"));
    assert!(text.contains("https://example.com"), "plain key kept in clear");
    assert!(text.contains("\"envseal\""));
    let (mut doc, u) = reopen(&kms, text.as_bytes()).await.unwrap();
    u.decrypt(doc.as_mut()).unwrap();
    assert_eq!(String::from_utf8(doc.render()).unwrap(), SAMPLE);
}

#[tokio::test]
async fn set_changes_one_ciphertext_only_and_edit_keeps_unchanged_values() {
    let kms = MockKms::new();
    let key = kms.create_default_key();
    let (doc, _) = sealed(&kms, &key, None).await;
    let before = doc.entries();
    let bytes = doc.render();
    let (mut doc, mut u) = reopen(&kms, &bytes).await.unwrap();
    u.set(doc.as_mut(), &parse_key_path("db.password").unwrap(), ValueType::Str, b"new-password").unwrap();
    let after = doc.entries();
    let changed: Vec<_> = before.iter().zip(&after).filter(|(a, b)| a != b).map(|(a, _)| a.path.display()).collect();
    assert_eq!(changed, vec!["db.password"]);
    // The result opens, MAC and all.
    let bytes2 = doc.render();
    let (doc3, u3) = reopen(&kms, &bytes2).await.unwrap();
    let vals = u3.values(doc3.as_ref()).unwrap();
    let pw = vals.iter().find(|(p, _, _)| p.display() == "db.password").unwrap();
    assert_eq!(pw.2.expose_secret(), b"new-password");

    // Edit flow: decrypt a copy, change one value in the plaintext, reseal with the same keys.
    let (mut plain, u4) = reopen(&kms, &bytes2).await.unwrap();
    u4.decrypt(plain.as_mut()).unwrap();
    let edited = String::from_utf8(plain.render()).unwrap().replace("db.internal", "db2.internal");
    let mut edited_doc: Box<dyn Document> = Box::new(JsonDocument::parse(edited.as_bytes()).unwrap());
    let (_, mut u5) = reopen(&kms, &bytes2).await.unwrap();
    u5.reseal(edited_doc.as_mut()).unwrap();
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
    let (mut d6, mut u6) = reopen(&kms, &bytes2).await.unwrap();
    u6.unset(d6.as_mut(), &parse_key_path("debug").unwrap()).unwrap();
    assert!(matches!(u6.unset(d6.as_mut(), &parse_key_path("debug").unwrap()), Err(StoreError::NoSuchKey(_))));
    assert!(reopen(&kms, &d6.render()).await.is_ok());
}

fn swap_values(text: &str, a: &str, b: &str) -> String {
    let va: serde_json::Value = serde_json::from_str(text).unwrap();
    let get = |v: &serde_json::Value, p: &str| v.pointer(p).unwrap().clone();
    let (x, y) = (get(&va, a), get(&va, b));
    let mut v = va.clone();
    *v.pointer_mut(a).unwrap() = y;
    *v.pointer_mut(b).unwrap() = x;
    serde_json::to_string_pretty(&v).unwrap()
}

#[tokio::test]
async fn tampering_is_detected() {
    let kms = MockKms::new();
    let key = kms.create_default_key();
    let (doc, _) = sealed(&kms, &key, Some("/PUBLIC_[^/]*")).await;
    let text = String::from_utf8(doc.render()).unwrap();

    // Swap two sealed values: each is bound to its path.
    let swapped = swap_values(&text, "/db/host", "/db/password");
    let err = reopen(&kms, swapped.as_bytes()).await.err().unwrap();
    assert!(matches!(err, StoreError::Core(Error::Format(FormatError::MacMismatch))), "{err:?}");

    // Remove a value, add a value, change a plain value, reorder keys.
    let mut v: serde_json::Value = serde_json::from_str(&text).unwrap();
    v["db"].as_object_mut().unwrap().shift_remove("port");
    let err = reopen(&kms, v.to_string().as_bytes()).await.err().unwrap();
    assert!(matches!(err, StoreError::Core(Error::Format(FormatError::MacMismatch))), "{err:?}");
    let plain_changed = text.replace("https://example.com", "https://evil.example");
    let err = reopen(&kms, plain_changed.as_bytes()).await.err().unwrap();
    assert!(matches!(err, StoreError::Core(Error::Format(FormatError::MacMismatch))), "{err:?}");
    let mut v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let debug = v.as_object_mut().unwrap().shift_remove("debug").unwrap();
    v.as_object_mut().unwrap().insert("debug".into(), debug);
    let err = reopen(&kms, v.to_string().as_bytes()).await.err().unwrap();
    assert!(matches!(err, StoreError::Core(Error::Format(FormatError::MacMismatch))), "{err:?}");

    // Plain value added where the rule says sealed.
    let mut v: serde_json::Value = serde_json::from_str(&text).unwrap();
    v["extra"] = serde_json::Value::String("x".into());
    let err = reopen(&kms, v.to_string().as_bytes()).await.err().unwrap();
    assert!(matches!(err, StoreError::UnsealedValue(_)), "{err:?}");

    // Wrong expected context.
    let d: Box<dyn Document> = Box::new(JsonDocument::parse(text.as_bytes()).unwrap());
    let err = envseal_stores::unlock(
        d.as_ref(),
        &[&kms as &dyn Kms],
        &EncryptionContext::from_pairs([("app", "other")]).unwrap(),
        &envseal_core::entries::Trust::Discovery,
        Engine::default(),
    )
    .await
    .err()
    .unwrap();
    assert!(matches!(err, StoreError::Core(Error::Format(FormatError::WrongContext))), "{err:?}");

    // Context in the metadata edited: the KMS binding fails.
    let edited = text.replace("\"billing\"", "\"billinG\"");
    let err = reopen(&kms, edited.as_bytes()).await.err().unwrap();
    assert!(matches!(err, StoreError::Core(Error::Format(FormatError::HeaderTampered))), "{err:?}");

    // Already sealed.
    let mut d: Box<dyn Document> = Box::new(JsonDocument::parse(text.as_bytes()).unwrap());
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

#[tokio::test]
async fn unset_of_a_sequence_item_reseals_the_items_after_it() {
    let kms = MockKms::new();
    let key = kms.create_default_key();
    let (doc, _) = sealed(&kms, &key, None).await;
    let bytes = doc.render();
    let (mut d, mut u) = reopen(&kms, &bytes).await.unwrap();
    let host_before = d.entries().into_iter().find(|e| e.path.display() == "db.host").unwrap();
    u.unset(d.as_mut(), &parse_key_path("db.replicas[0]").unwrap()).unwrap();
    // Unrelated values keep their exact ciphertext.
    assert_eq!(d.entries().into_iter().find(|e| e.path.display() == "db.host").unwrap(), host_before);
    let (d2, u2) = reopen(&kms, &d.render()).await.unwrap();
    let vals = u2.values(d2.as_ref()).unwrap();
    let r0 = vals.iter().find(|(p, _, _)| p.display() == "db.replicas[0]").unwrap();
    assert_eq!(r0.2.expose_secret(), b"r2");
    assert!(!vals.iter().any(|(p, _, _)| p.display() == "db.replicas[1]"));
}
