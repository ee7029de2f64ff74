//! The backend against the in-memory fake (src/fake.rs): both conformance suites, in both
//! signature versions, plus retries, the decrypt entry check, request shapes and redaction.

use std::sync::Arc;
use std::time::Duration;

use envseal_core::kms::{KeyManager, KeySpec, Kms, ProtectionLevel};
use envseal_core::{EncryptionContext, KmsError};
use envseal_testkit::{Capabilities, WrongContextReport};

use crate::fake::{AK_ID, AK_SECRET, FakeKms};
use crate::{
    AccessKeySecret, AlibabaConfig, AlibabaKms, CredentialSource, Credentials, RetryPolicy, RotationPolicy,
    SecurityToken, SignatureVersion,
};
use envseal_http::TransportError;

/// What Alibaba Cloud KMS supports, as the backend declares it: a wrong context is a bad
/// ciphertext (KMS does not tell them apart), and there is no minimum decryption version.
pub(crate) fn alibaba_capabilities() -> Capabilities {
    Capabilities::strict().wrong_context(WrongContextReport::InvalidCiphertext).min_decryption_version(false)
}

fn fast_retry() -> RetryPolicy {
    RetryPolicy::new(3, Duration::from_millis(1), Duration::from_millis(5))
}

fn client_with(fake: &Arc<FakeKms>, version: SignatureVersion, credentials: Credentials) -> AlibabaKms {
    let config = AlibabaConfig::new("cn-hangzhou", CredentialSource::Static(credentials))
        .with_signature_version(version)
        .with_retry(fast_retry());
    AlibabaKms::with_transport(config, Box::new(fake.clone())).unwrap()
}

fn client(fake: &Arc<FakeKms>, version: SignatureVersion) -> AlibabaKms {
    client_with(fake, version, Credentials::new(AK_ID, AccessKeySecret::new(AK_SECRET)))
}

fn ctx(pairs: &[(&str, &str)]) -> EncryptionContext {
    EncryptionContext::from_pairs(pairs.iter().copied()).unwrap()
}

#[tokio::test]
async fn conformance_v3() {
    let fake = Arc::new(FakeKms::default());
    let key = fake.add_key();
    fake.add_alias("alias/conformance", &key);
    let kms: Arc<dyn Kms> = Arc::new(client(&fake, SignatureVersion::V3));
    envseal_testkit::run_conformance_with(kms.clone(), &key, &alibaba_capabilities()).await;
    envseal_testkit::run_conformance_with(kms.clone(), "alias/conformance", &alibaba_capabilities()).await;
    envseal_testkit::run_key_management_conformance_with(kms, &alibaba_capabilities()).await;
}

#[tokio::test]
async fn conformance_v2_with_sts_token() {
    let fake = Arc::new(FakeKms::default());
    let key = fake.add_key();
    let creds = Credentials::new(AK_ID, AccessKeySecret::new(AK_SECRET))
        .with_security_token(SecurityToken::new("CAIS-fake-sts-token"));
    let kms: Arc<dyn Kms> = Arc::new(client_with(&fake, SignatureVersion::V2, creds));
    envseal_testkit::run_conformance_with(kms.clone(), &key, &alibaba_capabilities()).await;
    envseal_testkit::run_key_management_conformance_with(kms, &alibaba_capabilities()).await;
}

#[tokio::test]
async fn request_shapes() {
    let fake = Arc::new(FakeKms::default());
    let key = fake.add_key();
    let kms = client(&fake, SignatureVersion::V3);
    let c = ctx(&[("tenant", "ü"), ("app", "x")]);
    let g = kms.generate_data_key(&key, &c).await.unwrap();
    let w = kms.encrypt(&key, b"hello", &EncryptionContext::new()).await.unwrap();
    kms.decrypt(&g.wrapped, &c).await.unwrap();
    kms.re_encrypt(&w, &EncryptionContext::new(), &key, &c).await.unwrap();
    let calls = fake.calls();
    let actions: Vec<&str> = calls.iter().map(|c| c.action.as_str()).collect();
    assert_eq!(actions, ["GenerateDataKey", "Encrypt", "Decrypt", "ReEncrypt"]);
    let p = |i: usize, k: &str| calls[i].params.get(k).cloned();
    assert_eq!(p(0, "KeyId").as_deref(), Some(key.as_str()));
    assert_eq!(p(0, "KeySpec").as_deref(), Some("AES_256"));
    assert_eq!(p(0, "NumberOfBytes"), None);
    assert_eq!(p(0, "EncryptionContext").as_deref(), Some("{\"app\":\"x\",\"tenant\":\"ü\"}"));
    assert_eq!(p(1, "Plaintext").as_deref(), Some("aGVsbG8="));
    assert_eq!(p(1, "EncryptionContext"), None, "an empty context is no parameter");
    assert_eq!(calls[2].params.len(), 2, "Decrypt sends the blob and the context only: {:?}", calls[2].params);
    assert_eq!(p(3, "SourceEncryptionContext"), None);
    assert_eq!(p(3, "DestinationKeyId").as_deref(), Some(key.as_str()));
    assert!(p(3, "DestinationEncryptionContext").is_some());
    // V3 headers.
    let h = &calls[0].headers;
    assert_eq!(h["x-acs-version"], "2016-01-20");
    assert_eq!(h["x-acs-action"], "GenerateDataKey");
    assert_eq!(h["host"], "kms.cn-hangzhou.aliyuncs.com");
    assert_eq!(h["x-acs-signature-nonce"].len(), 32);
    assert!(crate::time::parse_utc(&h["x-acs-date"]).is_some());
    assert!(h["authorization"].starts_with("ACS3-HMAC-SHA256 Credential=LTAIfakeAccessKey,SignedHeaders=host;"));
    assert!(!h.contains_key("x-acs-security-token"));
    // Every call has its own nonce.
    let nonces: std::collections::BTreeSet<&str> =
        calls.iter().map(|c| c.headers["x-acs-signature-nonce"].as_str()).collect();
    assert_eq!(nonces.len(), calls.len());
    // The wrapped key records the ids KMS returned; the blob is the decoded CiphertextBlob.
    assert_eq!((g.wrapped.backend.as_str(), g.wrapped.key_id.as_str()), ("alibaba-kms", key.as_str()));
    assert!(g.wrapped.key_version.starts_with("v-") && g.wrapped.blob.starts_with(b"fk1"));
}

#[tokio::test]
async fn decrypt_checks_the_entry_against_what_kms_read() {
    let fake = Arc::new(FakeKms::default());
    let key = fake.add_key();
    let other = fake.add_key();
    let kms = client(&fake, SignatureVersion::V3);
    let c = ctx(&[("a", "1")]);
    let g = kms.generate_data_key(&key, &c).await.unwrap();
    let mut w = g.wrapped.clone();
    w.key_version = "v-0000000000000000".into();
    assert!(matches!(kms.decrypt(&w, &c).await, Err(KmsError::InvalidCiphertext)));
    let mut w = g.wrapped.clone();
    w.key_id = other;
    assert!(matches!(kms.decrypt(&w, &c).await, Err(KmsError::InvalidCiphertext)));
    // Malformed entries never reach the server.
    let before = fake.calls().len();
    for bad in [
        envseal_core::WrappedKey { blob: Vec::new(), ..g.wrapped.clone() },
        envseal_core::WrappedKey { key_id: "bad id".into(), ..g.wrapped.clone() },
        envseal_core::WrappedKey { key_version: String::new(), ..g.wrapped.clone() },
        envseal_core::WrappedKey { blob: vec![1; crate::MAX_BLOB_LEN + 1], ..g.wrapped.clone() },
    ] {
        assert!(matches!(kms.decrypt(&bad, &c).await, Err(KmsError::InvalidCiphertext)));
    }
    assert_eq!(fake.calls().len(), before);
    let d = kms.decrypt(&g.wrapped, &c).await.unwrap();
    assert_eq!(d.plaintext.expose_secret(), g.data_key.expose_secret());
}

#[tokio::test]
async fn retries_transient_failures_with_a_fresh_signature() {
    let fake = Arc::new(FakeKms::default());
    let key = fake.add_key();
    let kms = client(&fake, SignatureVersion::V3);
    let c = EncryptionContext::new();
    fake.fail_next(vec![(503, "ServiceUnavailableTemporary"), (400, "Throttling.User")]);
    kms.generate_data_key(&key, &c).await.unwrap();
    // Three failures exhaust the three attempts.
    fake.fail_next(vec![(500, "InternalFailure"), (500, "InternalFailure"), (500, "InternalFailure")]);
    let e = kms.generate_data_key(&key, &c).await.unwrap_err();
    assert!(matches!(e, KmsError::Unavailable { retryable: true, .. }), "{e:?}");
    fake.fail_next(vec![(400, "Throttling"), (400, "Throttling"), (400, "Throttling")]);
    assert!(matches!(kms.generate_data_key(&key, &c).await, Err(KmsError::Throttled { .. })));
    // Connection refused: retried.
    fake.transport_fail_next(TransportError::Connect("refused".into()));
    kms.generate_data_key(&key, &c).await.unwrap();
    // A creation is not retried after a failure that may have been processed ...
    fake.fail_next(vec![(500, "InternalFailure")]);
    assert!(matches!(kms.create_key(&KeySpec::default()).await, Err(KmsError::Unavailable { .. })));
    fake.transport_fail_next(TransportError::Timeout("slow".into()));
    assert!(matches!(kms.rotate_key(&key).await, Err(KmsError::Unavailable { .. })));
    // ... but is after one that certainly was not.
    fake.fail_next(vec![(400, "Throttling.User")]);
    kms.create_key(&KeySpec::default()).await.unwrap();
    // Client errors are final.
    fake.fail_next(vec![(404, "Forbidden.KeyNotFound")]);
    assert!(matches!(kms.generate_data_key(&key, &c).await, Err(KmsError::KeyNotFound { .. })));
    kms.generate_data_key(&key, &c).await.unwrap();
}

#[tokio::test]
async fn wrong_secret_is_access_denied_without_secrets() {
    let fake = Arc::new(FakeKms::default());
    let key = fake.add_key();
    let kms = client_with(
        &fake,
        SignatureVersion::V3,
        Credentials::new(AK_ID, AccessKeySecret::new("sk-wrong-secret-123"))
            .with_security_token(SecurityToken::new("tok-wrong-secret-456")),
    );
    let e = kms.encrypt(&key, b"plaintext-secret-789", &EncryptionContext::new()).await.unwrap_err();
    let text = format!("{e} {e:?} {kms:?}");
    assert!(matches!(e, KmsError::AccessDenied { .. }), "{text}");
    for secret in ["sk-wrong-secret", "tok-wrong-secret", "plaintext-secret", "cGxhaW50ZXh0LXNlY3JldC03ODk"] {
        assert!(!text.contains(secret), "{secret} in {text}");
    }
    assert!(text.contains("LTAIfakeAccessKey"), "{text}");
}

#[tokio::test]
async fn key_references_and_uris() {
    let fake = Arc::new(FakeKms::default());
    let key = fake.add_key();
    fake.add_alias("alias/app", &key);
    let kms = client(&fake, SignatureVersion::V3);
    let c = EncryptionContext::new();
    let g = kms.generate_data_key("alibaba-kms:cn-hangzhou/alias/app", &c).await.unwrap();
    assert_eq!(g.wrapped.key_id, key, "the entry records the key id, not the alias");
    let arn = format!("acs:kms:cn-hangzhou:1234567890123456:key/{key}");
    kms.generate_data_key(&arn, &c).await.unwrap();
    for bad in [
        "alibaba-kms:cn-shanghai/alias/app".to_owned(),
        format!("acs:kms:cn-shanghai:1234567890123456:key/{key}"),
        "bad key".to_owned(),
        String::new(),
    ] {
        let before = fake.calls().len();
        assert!(matches!(kms.generate_data_key(&bad, &c).await, Err(KmsError::InvalidRequest { .. })), "{bad}");
        assert_eq!(fake.calls().len(), before, "{bad} reached the server");
    }
    assert!(matches!(kms.create_alias("app2", &key).await, Err(KmsError::InvalidRequest { .. })));
    assert!(matches!(kms.schedule_key_deletion(&key, 6).await, Err(KmsError::InvalidRequest { .. })));
}

#[tokio::test]
async fn key_management_extras() {
    let fake = Arc::new(FakeKms::default());
    let kms = client(&fake, SignatureVersion::V3);
    let spec = KeySpec {
        description: "team a key".into(),
        protection_level: ProtectionLevel::Hsm,
        tags: [("team".to_owned(), "a".to_owned())].into(),
    };
    let m = kms.create_key(&spec).await.unwrap();
    let create = fake.calls().into_iter().find(|c| c.action == "CreateKey").unwrap();
    assert_eq!(create.params["KeySpec"], "Aliyun_AES_256");
    assert_eq!(create.params["KeyUsage"], "ENCRYPT/DECRYPT");
    assert_eq!(create.params["ProtectionLevel"], "HSM");
    assert_eq!(create.params["Tags"], "[{\"TagKey\":\"team\",\"TagValue\":\"a\"}]");
    assert_eq!((m.protection_level, m.description.as_str()), (ProtectionLevel::Hsm, "team a key"));
    let d = kms.describe_key(&m.key_id).await.unwrap();
    assert_eq!(d.tags, spec.tags);
    assert_eq!(d.versions.len(), 1);
    kms.rotate_key(&m.key_id).await.unwrap();
    let versions = kms.list_key_versions(&m.key_id).await.unwrap();
    assert_eq!(versions.len(), 2);
    assert_eq!(versions[1].id, kms.describe_key(&m.key_id).await.unwrap().current_version);
    kms.update_rotation_policy(&m.key_id, RotationPolicy::Every(Duration::from_secs(30 * 86_400))).await.unwrap();
    kms.update_rotation_policy(&m.key_id, RotationPolicy::Disabled).await.unwrap();
    let calls: Vec<_> = fake.calls().into_iter().filter(|c| c.action == "UpdateRotationPolicy").collect();
    assert_eq!(calls[0].params["RotationInterval"], "2592000s");
    assert_eq!(calls[0].params["EnableAutomaticRotation"], "true");
    assert_eq!(calls[1].params["EnableAutomaticRotation"], "false");
    assert!(matches!(
        kms.set_min_decryption_version(&m.key_id, &versions[1].id).await,
        Err(KmsError::Unsupported { operation: "set_min_decryption_version", .. })
    ));
    // Paging: more keys than one page.
    for _ in 0..120 {
        fake.add_key();
    }
    let listed = kms.list_keys().await.unwrap();
    assert_eq!(listed.len(), 121);
}

#[test]
fn debug_shows_no_secret() {
    let fake = Arc::new(FakeKms::default());
    let kms = client_with(
        &fake,
        SignatureVersion::V3,
        Credentials::new("LTAIdebug", AccessKeySecret::new("sk-debug-secret"))
            .with_security_token(SecurityToken::new("tok-debug-secret")),
    );
    let text = format!("{kms:?}");
    assert!(text.contains("LTAIdebug") && text.contains("cn-hangzhou"), "{text}");
    assert!(!text.contains("sk-debug") && !text.contains("tok-debug"), "{text}");
}
