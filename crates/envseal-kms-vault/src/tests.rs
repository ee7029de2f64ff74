//! Unit tests of `VaultKms` against a scripted fake transport: request shapes, the context
//! mapping, local checks, retries, error mapping and secrecy. The real server is exercised in
//! tests/openbao.rs.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use envseal_core::kms::{KeyManager, KeySpec, Kms, ProtectionLevel, WrappedKey};
use envseal_core::{EncryptionContext, KmsError};

use envseal_http::{Request, Response, Transport, TransportError};

use crate::{RetryPolicy, VaultConfig, VaultKms, VaultToken, associated_data};

const TOKEN: &str = "hvs.unit-test-token-5ecret";

type Answer = Result<(u16, String), TransportError>;

/// A Transit call as the fake saw it: `List` is `GET ...?list=true`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Method {
    Get,
    List,
    Post,
}

#[derive(Clone, Debug)]
struct Sent {
    method: Method,
    path: String,
    body: Option<serde_json::Value>,
}

#[derive(Default)]
struct Fake {
    answers: Mutex<VecDeque<Answer>>,
    sent: Arc<Mutex<Vec<Sent>>>,
}

#[async_trait]
impl Transport for Fake {
    async fn send(&self, request: Request) -> Result<Response, TransportError> {
        let body = request.body.as_ref().map(|b| serde_json::from_slice(b).expect("request bodies are JSON"));
        let (method, path) = match (request.method.as_str(), request.target.strip_suffix("?list=true")) {
            ("GET", Some(path)) => (Method::List, path.to_owned()),
            ("GET", None) => (Method::Get, request.target.to_string()),
            ("POST", None) => (Method::Post, request.target.to_string()),
            (m, _) => panic!("unexpected {m} {}", request.target.as_str()),
        };
        self.sent.lock().unwrap().push(Sent { method, path, body });
        let (status, body) =
            self.answers.lock().unwrap().pop_front().expect("an answer is scripted for every request")?;
        Ok(Response::new(status, body.into_bytes()))
    }
}

/// A backend whose transport answers `answers` in order; returns the log of requests.
fn fake_kms(answers: Vec<Answer>) -> (VaultKms, Arc<Mutex<Vec<Sent>>>) {
    let fake = Fake { answers: Mutex::new(answers.into()), sent: Arc::default() };
    let sent = fake.sent.clone();
    let config = VaultConfig::new("http://127.0.0.1:1", VaultToken::new(TOKEN)).with_retry(RetryPolicy::new(
        4,
        Duration::from_millis(1),
        Duration::from_millis(2),
    ));
    (VaultKms::with_transport(config, Box::new(fake)).unwrap(), sent)
}

fn ok(data: serde_json::Value) -> Answer {
    Ok((200, serde_json::json!({ "data": data }).to_string()))
}

fn err(status: u16, message: &str) -> Answer {
    Ok((status, serde_json::json!({ "errors": [message] }).to_string()))
}

fn ctx() -> EncryptionContext {
    EncryptionContext::from_pairs([("a", "1"), ("b", "2")]).unwrap()
}

fn wrapped(version: &str, blob: &str) -> WrappedKey {
    WrappedKey { backend: "vault-transit".into(), key_id: "k1".into(), key_version: version.into(), blob: blob.into() }
}

const KEY_B64: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="; // bytes 0..32

#[test]
fn context_mapping_is_frozen() {
    // u16 count || (u16 klen || key || u16 vlen || value)*, base64 (FORMAT.md §2.3).
    assert_eq!(associated_data(&ctx()).as_deref(), Some("AAIAAWEAATEAAWIAATI="));
    assert_eq!(associated_data(&EncryptionContext::new()), None);
    let one_empty = EncryptionContext::from_pairs([("a", "")]).unwrap();
    assert_eq!(associated_data(&one_empty).as_deref(), Some("AAEAAWEAAA=="));
}

#[tokio::test]
async fn generate_data_key_request_and_answer() {
    let (kms, sent) = fake_kms(vec![
        ok(serde_json::json!({ "ciphertext": "vault:v3:AAAA", "key_version": 3, "plaintext": KEY_B64 })),
        ok(serde_json::json!({ "ciphertext": "vault:v3:BBBB", "key_version": 3, "plaintext": KEY_B64 })),
    ]);
    let g = kms.generate_data_key("k1", &ctx()).await.unwrap();
    assert_eq!(g.data_key.expose_secret()[..], (0u8..32).collect::<Vec<_>>()[..]);
    assert_eq!((g.wrapped.backend.as_str(), g.wrapped.key_id.as_str()), ("vault-transit", "k1"));
    assert_eq!((g.wrapped.key_version.as_str(), g.wrapped.blob.as_slice()), ("3", &b"vault:v3:AAAA"[..]));
    kms.generate_data_key("k1", &EncryptionContext::new()).await.unwrap();
    let sent = sent.lock().unwrap();
    assert_eq!((sent[0].method, sent[0].path.as_str()), (Method::Post, "transit/datakey/plaintext/k1"));
    assert_eq!(sent[0].body, Some(serde_json::json!({ "bits": 256, "associated_data": "AAIAAWEAATEAAWIAATI=" })));
    // Empty context: no associated_data at all.
    assert_eq!(sent[1].body, Some(serde_json::json!({ "bits": 256 })));
}

#[tokio::test]
async fn generate_data_key_rejects_odd_answers() {
    let (kms, _) = fake_kms(vec![
        ok(serde_json::json!({ "ciphertext": "vault:v1:AAAA", "plaintext": "AAEC" })),
        ok(serde_json::json!({ "ciphertext": "nope", "plaintext": KEY_B64 })),
        ok(serde_json::json!({ "ciphertext": "vault:v1:AAAA" })),
    ]);
    for _ in 0..3 {
        let e = kms.generate_data_key("k1", &ctx()).await.unwrap_err();
        assert!(matches!(e, KmsError::Unavailable { retryable: false, .. }), "{e:?}");
    }
}

#[tokio::test]
async fn decrypt_checks_locally_before_sending() {
    let (kms, sent) = fake_kms(vec![]);
    for (version, blob) in [
        ("2", "vault:v1:AAAA"), // entry and blob disagree
        ("1", "vault:v01:AAAA"),
        ("1", "wault:v1:AAAA"),
        ("1", "vault:v1:"),
        ("1", ""),
        ("", "vault:v1:AAAA"),
    ] {
        let e = kms.decrypt(&wrapped(version, blob), &ctx()).await.unwrap_err();
        assert!(matches!(e, KmsError::InvalidCiphertext), "{version} {blob}: {e:?}");
    }
    let mut w = wrapped("1", "vault:v1:AAAA");
    w.key_id = "alias/x".into();
    assert!(matches!(kms.decrypt(&w, &ctx()).await, Err(KmsError::InvalidCiphertext)));
    w.blob = vec![b'v'; 100_000];
    assert!(matches!(kms.decrypt(&w, &ctx()).await, Err(KmsError::InvalidCiphertext)));
    assert!(sent.lock().unwrap().is_empty());
}

#[tokio::test]
async fn decrypt_request_and_errors() {
    let (kms, sent) = fake_kms(vec![
        ok(serde_json::json!({ "plaintext": "aGVsbG8=" })),
        err(400, "cipher: message authentication failed"),
        err(400, "ciphertext or signature version is disallowed by policy (too old)"),
        ok(serde_json::json!({ "name": "k1", "type": "aes256-gcm96", "latest_version": 3,
            "min_decryption_version": 3, "keys": { "3": 1_700_000_000 } })),
        err(400, "invalid ciphertext: version is too new"),
        err(400, "encryption key not found"),
    ]);
    let d = kms.decrypt(&wrapped("2", "vault:v2:AAAA"), &ctx()).await.unwrap();
    assert_eq!((d.plaintext.expose_secret(), d.key_id.as_str(), d.key_version.as_str()), (&b"hello"[..], "k1", "2"));
    let e = kms.decrypt(&wrapped("2", "vault:v2:AAAA"), &ctx()).await.unwrap_err();
    assert!(matches!(e, KmsError::InvalidCiphertext), "{e:?}");
    let e = kms.decrypt(&wrapped("2", "vault:v2:AAAA"), &ctx()).await.unwrap_err();
    assert!(
        matches!(&e, KmsError::KeyVersionBelowMinimum { key, version, min } if key == "k1" && version == "2" && min == "3"),
        "{e:?}"
    );
    let e = kms.decrypt(&wrapped("9", "vault:v9:AAAA"), &ctx()).await.unwrap_err();
    assert!(matches!(&e, KmsError::KeyVersionNotFound { version, .. } if version == "9"), "{e:?}");
    let e = kms.decrypt(&wrapped("2", "vault:v2:AAAA"), &ctx()).await.unwrap_err();
    assert!(matches!(&e, KmsError::KeyNotFound { key } if key == "k1"), "{e:?}");
    let sent = sent.lock().unwrap();
    assert_eq!(sent[0].path, "transit/decrypt/k1");
    assert_eq!(
        sent[0].body,
        Some(serde_json::json!({ "ciphertext": "vault:v2:AAAA", "associated_data": "AAIAAWEAATEAAWIAATI=" }))
    );
    assert_eq!((sent[3].method, sent[3].path.as_str()), (Method::Get, "transit/keys/k1"));
}

#[tokio::test]
async fn encrypt_limits_and_never_upserts() {
    let (kms, sent) = fake_kms(vec![
        ok(serde_json::json!({ "ciphertext": "vault:v1:AAAA", "key_version": 1 })),
        err(400, "unknown key type envseal-no-upsert"),
    ]);
    let e = kms.encrypt("k1", &[0; 6145], &ctx()).await.unwrap_err();
    assert!(matches!(e, KmsError::PlaintextTooLarge { size: 6145, limit: 6144 }));
    let w = kms.encrypt("k1", b"hi", &EncryptionContext::new()).await.unwrap();
    assert_eq!((w.key_version.as_str(), w.blob.as_slice()), ("1", &b"vault:v1:AAAA"[..]));
    let e = kms.encrypt("missing", b"hi", &ctx()).await.unwrap_err();
    assert!(matches!(&e, KmsError::KeyNotFound { key } if key == "missing"), "{e:?}");
    let e = kms.encrypt("bad/name", b"hi", &ctx()).await.unwrap_err();
    assert!(matches!(e, KmsError::InvalidRequest { .. }), "{e:?}");
    let sent = sent.lock().unwrap();
    assert_eq!(sent.len(), 2);
    assert_eq!(sent[0].path, "transit/encrypt/k1");
    assert_eq!(sent[0].body, Some(serde_json::json!({ "plaintext": "aGk=", "type": "envseal-no-upsert" })));
}

#[tokio::test]
async fn re_encrypt_uses_rewrap_only_without_context() {
    let (kms, sent) = fake_kms(vec![
        ok(serde_json::json!({ "ciphertext": "vault:v4:CCCC", "key_version": 4 })),
        ok(serde_json::json!({ "plaintext": "aGk=" })),
        ok(serde_json::json!({ "ciphertext": "vault:v4:DDDD", "key_version": 4 })),
    ]);
    let empty = EncryptionContext::new();
    let w = kms.re_encrypt(&wrapped("1", "vault:v1:AAAA"), &empty, "k1", &empty).await.unwrap();
    assert_eq!((w.key_id.as_str(), w.key_version.as_str()), ("k1", "4"));
    let w = kms.re_encrypt(&wrapped("1", "vault:v1:AAAA"), &ctx(), "k1", &ctx()).await.unwrap();
    assert_eq!(w.blob, b"vault:v4:DDDD");
    let sent = sent.lock().unwrap();
    let paths: Vec<&str> = sent.iter().map(|s| s.path.as_str()).collect();
    assert_eq!(paths, ["transit/rewrap/k1", "transit/decrypt/k1", "transit/encrypt/k1"]);
    assert_eq!(sent[0].body, Some(serde_json::json!({ "ciphertext": "vault:v1:AAAA" })));
}

#[tokio::test]
async fn retries_transient_failures_with_a_bound() {
    let answer = || ok(serde_json::json!({ "ciphertext": "vault:v1:AAAA", "plaintext": KEY_B64 }));
    let (kms, sent) = fake_kms(vec![
        err(429, "rate limited"),
        err(503, "Vault is sealed"),
        Err(TransportError::Connect("refused".into())),
        answer(),
    ]);
    kms.generate_data_key("k1", &ctx()).await.unwrap();
    assert_eq!(sent.lock().unwrap().len(), 4);

    let (kms, sent) = fake_kms(vec![err(500, "boom"), err(500, "boom"), err(500, "boom"), err(500, "boom")]);
    let e = kms.generate_data_key("k1", &ctx()).await.unwrap_err();
    assert!(matches!(e, KmsError::Unavailable { retryable: true, .. }), "{e:?}");
    assert_eq!(sent.lock().unwrap().len(), 4, "4 attempts at most");

    let (kms, sent) = fake_kms(vec![Err(TransportError::Timeout("slow".into())), answer()]);
    kms.generate_data_key("k1", &ctx()).await.unwrap();
    assert_eq!(sent.lock().unwrap().len(), 2);

    // Client errors are final.
    let (kms, sent) = fake_kms(vec![err(400, "cipher: message authentication failed")]);
    assert!(kms.decrypt(&wrapped("1", "vault:v1:AAAA"), &ctx()).await.is_err());
    assert_eq!(sent.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn rotation_is_never_sent_twice_after_it_may_have_run() {
    let key = serde_json::json!({ "name": "k1", "type": "aes256-gcm96", "latest_version": 2,
        "min_decryption_version": 1, "keys": { "1": 1_700_000_000, "2": 1_700_000_100 } });
    let (kms, sent) = fake_kms(vec![err(500, "boom")]);
    assert!(kms.rotate_key("k1").await.is_err());
    assert_eq!(sent.lock().unwrap().len(), 1);
    let (kms, sent) = fake_kms(vec![Err(TransportError::Timeout("slow".into()))]);
    assert!(kms.rotate_key("k1").await.is_err());
    assert_eq!(sent.lock().unwrap().len(), 1);
    // Not processed (refused, throttled, sealed): retried.
    let (kms, sent) = fake_kms(vec![Err(TransportError::Connect("refused".into())), err(429, "slow down"), ok(key)]);
    let m = kms.rotate_key("k1").await.unwrap();
    assert_eq!(m.current_version, "2");
    assert_eq!(sent.lock().unwrap().len(), 3);
    assert_eq!(sent.lock().unwrap()[0].path, "transit/keys/k1/rotate");
}

#[tokio::test]
async fn key_management_requests() {
    let key = |latest: u32| {
        serde_json::json!({ "name": "k1", "type": "aes256-gcm96", "latest_version": latest,
            "min_decryption_version": 1, "deletion_allowed": false, "keys": { "1": 1_700_000_000 } })
    };
    let (kms, sent) = fake_kms(vec![
        ok(key(1)),                                        // create_key
        Ok((404, r#"{"errors":[]}"#.into())),              // create_named_key: read
        Ok((204, String::new())),                          // create_named_key: create (old servers)
        ok(key(1)),                                        // ... then read
        ok(key(1)),                                        // create_named_key of an existing key
        ok(serde_json::json!({ "keys": ["k1", "gone"] })), // list
        ok(key(1)),                                        // ... k1
        Ok((404, r#"{"errors":[]}"#.into())),              // ... gone
        Ok((404, r#"{"errors":[]}"#.into())),              // list with no keys
        ok(key(1)),                                        // set_min_decryption_version
        err(400, "cannot set min decryption version of 5, latest key version is 1"),
    ]);
    let m = kms.create_key(&KeySpec { description: "ignored".into(), ..KeySpec::default() }).await.unwrap();
    assert_eq!(m.key_id, "k1");
    let m = kms.create_named_key("k1", &KeySpec::default()).await.unwrap();
    assert_eq!(m.current_version, "1");
    let e = kms.create_named_key("k1", &KeySpec::default()).await.unwrap_err();
    assert!(matches!(e, KmsError::AlreadyExists { .. }), "{e:?}");
    let listed = kms.list_keys().await.unwrap();
    assert_eq!(listed.iter().map(|m| m.key_id.as_str()).collect::<Vec<_>>(), ["k1"]);
    assert!(kms.list_keys().await.unwrap().is_empty());
    kms.set_min_decryption_version("k1", "1").await.unwrap();
    let e = kms.set_min_decryption_version("k1", "5").await.unwrap_err();
    assert!(matches!(&e, KmsError::KeyVersionNotFound { version, .. } if version == "5"), "{e:?}");
    for bad in ["0", "01", "x", ""] {
        let e = kms.set_min_decryption_version("k1", bad).await.unwrap_err();
        assert!(matches!(e, KmsError::KeyVersionNotFound { .. }), "{bad}: {e:?}");
    }

    let sent = sent.lock().unwrap();
    let calls: Vec<(Method, &str)> = sent.iter().map(|s| (s.method, s.path.as_str())).collect();
    assert!(calls[0].1.starts_with("transit/keys/envseal-") && calls[0].1.len() == "transit/keys/envseal-".len() + 32);
    assert_eq!(
        &calls[1..],
        [
            (Method::Get, "transit/keys/k1"),
            (Method::Post, "transit/keys/k1"),
            (Method::Get, "transit/keys/k1"),
            (Method::Get, "transit/keys/k1"),
            (Method::List, "transit/keys"),
            (Method::Get, "transit/keys/k1"),
            (Method::Get, "transit/keys/gone"),
            (Method::List, "transit/keys"),
            (Method::Post, "transit/keys/k1/config"),
            (Method::Post, "transit/keys/k1/config"),
        ]
    );
    assert_eq!(sent[0].body, Some(serde_json::json!({ "type": "aes256-gcm96" })));
    assert_eq!(sent[9].body, Some(serde_json::json!({ "min_decryption_version": 1 })));
}

#[tokio::test]
async fn unsupported_operations() {
    let (kms, sent) = fake_kms(vec![]);
    let km: &dyn KeyManager = kms.key_manager().unwrap();
    let unsupported = |e: KmsError| matches!(e, KmsError::Unsupported { backend, .. } if backend == "vault-transit");
    assert!(unsupported(km.create_alias("alias/a", "k1").await.unwrap_err()));
    assert!(unsupported(km.delete_alias("alias/a").await.unwrap_err()));
    assert!(unsupported(km.list_aliases().await.unwrap_err()));
    assert!(unsupported(km.enable_key("k1").await.unwrap_err()));
    assert!(unsupported(km.disable_key("k1").await.unwrap_err()));
    assert!(unsupported(km.schedule_key_deletion("k1", 7).await.unwrap_err()));
    assert!(unsupported(km.cancel_key_deletion("k1").await.unwrap_err()));
    let hsm = KeySpec { protection_level: ProtectionLevel::Hsm, ..KeySpec::default() };
    assert!(unsupported(km.create_key(&hsm).await.unwrap_err()));
    let tagged = KeySpec { tags: [("team".to_owned(), "a".to_owned())].into(), ..KeySpec::default() };
    assert!(unsupported(km.create_key(&tagged).await.unwrap_err()));
    assert!(sent.lock().unwrap().is_empty());
}

#[tokio::test]
async fn the_token_never_shows() {
    let (kms, _) = fake_kms(vec![
        err(403, &format!("permission denied; token {TOKEN} is not allowed")),
        Err(TransportError::Connect("refused".into())),
        Err(TransportError::Connect("refused".into())),
        Err(TransportError::Connect("refused".into())),
        Err(TransportError::Connect("refused".into())),
    ]);
    let denied = kms.generate_data_key("k1", &ctx()).await.unwrap_err();
    assert!(matches!(denied, KmsError::AccessDenied { .. }));
    let down = kms.generate_data_key("k1", &ctx()).await.unwrap_err();
    assert!(matches!(down, KmsError::Unavailable { retryable: true, .. }));
    let invalid = VaultKms::new(VaultConfig::new("ftp://x", VaultToken::new(TOKEN))).unwrap_err();
    let bad_header = VaultKms::new(VaultConfig::new("http://x", VaultToken::new(format!("{TOKEN}\n")))).unwrap_err();
    let texts = [
        format!("{denied} {denied:?}"),
        format!("{down} {down:?}"),
        format!("{invalid} {invalid:?}"),
        format!("{bad_header} {bad_header:?}"),
        format!("{kms:?}"),
        format!("{:?}", VaultConfig::new("http://x", VaultToken::new(TOKEN))),
    ];
    for text in texts {
        assert!(!text.contains("5ecret"), "{text}");
    }
}

#[test]
fn config_validation() {
    let v = |addr: &str| VaultKms::new(VaultConfig::new(addr, VaultToken::new("t")));
    assert!(v("http://127.0.0.1:8200").is_ok());
    assert!(v("https://vault.example:8200/prefix/").is_ok());
    for bad in ["", "127.0.0.1:8200", "ftp://x", "http://u:p@x", "http://x/?q=1"] {
        assert!(matches!(v(bad), Err(KmsError::InvalidRequest { .. })), "{bad:?}");
    }
    assert!(VaultKms::new(VaultConfig::new("http://x", VaultToken::new(""))).is_err());
    assert!(VaultKms::new(VaultConfig::new("http://x", VaultToken::new("t")).with_mount("../sys")).is_err());
    let e = VaultKms::new(VaultConfig::new("https://x", VaultToken::new("t")).with_ca_cert("/nonexistent/ca.pem"))
        .unwrap_err();
    assert!(e.to_string().contains("/nonexistent/ca.pem"), "{e}");
    let kms = v("http://127.0.0.1:8200/").unwrap();
    assert_eq!((kms.backend(), kms.mount()), ("vault-transit", "transit"));
}
