//! The PKCS#11 backend against a real SoftHSM2 token.
//!
//! Each test runs in its own child process with its own token (see `common/softhsm.rs`).
//! Without SoftHSM2 the tests print `SKIPPED:` and pass, unless `ENVSEAL_REQUIRE_SERVERS=1`.

mod common {
    pub mod softhsm;
}

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use cryptoki::error::{Error, RvError};
use cryptoki::mechanism::Mechanism;
use cryptoki::mechanism::aead::GcmParams;
use cryptoki::object::{Attribute, AttributeInfo, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::Session;
use cryptoki::types::Ulong;

use common::softhsm::{LABEL, PIN, SO_PIN, block_on, enter};
use envseal_core::kms::{KeySpec, KeyState, ProtectionLevel, WrappedKey, decrypt_data_key};
use envseal_core::{EncryptionContext, KeyManager, Kms, KmsError};
use envseal_kms_pkcs11::{APP_KEY, Pin, Pkcs11Kms, Pkcs11Options, Pkcs11Uri, blob};
use envseal_testkit::{Capabilities, WrongContextReport};

fn ctx(pairs: &[(&str, &str)]) -> EncryptionContext {
    EncryptionContext::from_pairs(pairs.iter().copied()).unwrap()
}

/// The full contract, except that the context is only AES-GCM associated data inside the
/// token, so a wrong context fails the tag check like a damaged blob (`InvalidCiphertext`).
fn pkcs11_capabilities() -> Capabilities {
    Capabilities::strict().wrong_context(WrongContextReport::InvalidCiphertext)
}

async fn named_key(kms: &Pkcs11Kms, name: &str) {
    let spec = KeySpec { description: format!("test key {name}"), ..KeySpec::default() };
    kms.create_named_key(name, &spec).await.unwrap();
}

/// Every envseal key object labelled `name`: (CKA_ID, handle).
fn key_objects(s: &Session, name: &str) -> Vec<(String, ObjectHandle)> {
    let template =
        [Attribute::Class(ObjectClass::SECRET_KEY), Attribute::KeyType(KeyType::AES), Attribute::Label(name.into())];
    let mut out: Vec<(String, ObjectHandle)> = s
        .find_objects(&template)
        .unwrap()
        .into_iter()
        .map(|h| {
            let id = s.get_attributes(h, &[AttributeType::Id]).unwrap().into_iter().find_map(|a| match a {
                Attribute::Id(v) => Some(String::from_utf8(v).unwrap()),
                _ => None,
            });
            (id.unwrap_or_default(), h)
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

fn flags(s: &Session, h: ObjectHandle) -> (bool, bool) {
    let attrs = s.get_attributes(h, &[AttributeType::Encrypt, AttributeType::Decrypt]).unwrap();
    (attrs.contains(&Attribute::Encrypt(true)), attrs.contains(&Attribute::Decrypt(true)))
}

#[test]
fn conformance() {
    let Some(t) = enter("conformance") else { return };
    block_on(async {
        let kms = t.kms();
        named_key(&kms, "conformance").await;
        let kms: Arc<dyn Kms> = Arc::new(kms);
        envseal_testkit::run_conformance_with(kms.clone(), "conformance", &pkcs11_capabilities()).await;
        envseal_testkit::run_key_management_conformance_with(kms, &pkcs11_capabilities()).await;
    });
}

#[test]
fn conformance_through_an_alias() {
    let Some(t) = enter("conformance_through_an_alias") else { return };
    block_on(async {
        let kms = t.kms();
        named_key(&kms, "aliased").await;
        kms.create_alias("alias/default", "aliased").await.unwrap();
        let kms: Arc<dyn Kms> = Arc::new(kms);
        envseal_testkit::run_conformance_with(kms, "alias/default", &pkcs11_capabilities()).await;
    });
}

#[test]
fn blob_layout_is_as_documented() {
    let Some(t) = enter("blob_layout_is_as_documented") else { return };
    block_on(async {
        let kms = t.kms();
        named_key(&kms, "cmk").await;
        let c = ctx(&[("app", "billing")]);
        let g = kms.generate_data_key("cmk", &c).await.unwrap();
        assert_eq!(
            (g.wrapped.backend.as_str(), g.wrapped.key_id.as_str(), g.wrapped.key_version.as_str()),
            ("pkcs11", "cmk", "1")
        );
        let b = &g.wrapped.blob;
        // magic || format version || name length || name || u32 version || IV || ct || tag
        assert_eq!(&b[..5], b"P11\x01\x03");
        assert_eq!(&b[5..8], b"cmk");
        assert_eq!(&b[8..12], &[0, 0, 0, 1]);
        assert_eq!(b.len(), 12 + 12 + 32 + 16);
        let p = blob::parse(b).unwrap();
        assert_eq!((p.name, p.version), ("cmk", 1));

        // The AAD is header || canonical context: decrypting inside the token with it works.
        let s = t.raw_session();
        let (_, handle) = key_objects(&s, "cmk").remove(0);
        let aad = blob::aad(p.header, &c.canonical_bytes());
        let mut iv = p.iv;
        let mech = Mechanism::AesGcm(GcmParams::new(&mut iv, &aad, Ulong::from(128)).unwrap());
        let plain = s.decrypt(&mech, handle, p.ciphertext).unwrap();
        assert_eq!(plain, g.data_key.expose_secret());
    });
}

#[test]
fn key_objects_follow_the_version_scheme() {
    let Some(t) = enter("key_objects_follow_the_version_scheme") else { return };
    block_on(async {
        let kms = t.kms();
        let c = ctx(&[("k", "v")]);
        named_key(&kms, "app").await;
        let m = kms.describe_key("app").await.unwrap();
        assert_eq!((m.key_id.as_str(), m.current_version.as_str(), m.state), ("app", "1", KeyState::Enabled));
        assert_eq!(m.protection_level, ProtectionLevel::Hsm);
        assert_eq!(m.description, "test key app");
        let g1 = kms.generate_data_key("app", &c).await.unwrap();

        let m = kms.rotate_key("app").await.unwrap();
        assert_eq!(m.current_version, "2");
        let g2 = kms.generate_data_key("app", &c).await.unwrap();
        assert_eq!(g2.wrapped.key_version, "2");

        let s = t.raw_session();
        let objs = key_objects(&s, "app");
        assert_eq!(objs.iter().map(|(id, _)| id.as_str()).collect::<Vec<_>>(), ["app#v1", "app#v2"]);
        // Only the current version encrypts; both decrypt.
        assert_eq!(flags(&s, objs[0].1), (false, true));
        assert_eq!(flags(&s, objs[1].1), (true, true));

        // Disabling is enforced by the token itself, not only by envseal.
        kms.disable_key("app").await.unwrap();
        assert_eq!(flags(&s, objs[1].1), (false, false));
        let mut iv = [0u8; 12];
        let mech = Mechanism::AesGcm(GcmParams::new(&mut iv, &[], Ulong::from(128)).unwrap());
        assert!(matches!(s.encrypt(&mech, objs[1].1, b"x"), Err(Error::Pkcs11(RvError::KeyFunctionNotPermitted, _))));
        assert!(matches!(kms.decrypt(&g1.wrapped, &c).await, Err(KmsError::KeyDisabled { .. })));
        assert!(matches!(kms.rotate_key("app").await, Err(KmsError::KeyDisabled { .. })));
        kms.enable_key("app").await.unwrap();
        assert_eq!(flags(&s, objs[0].1), (false, true));
        assert_eq!(flags(&s, objs[1].1), (true, true));

        // The minimum decryption version clears CKA_DECRYPT on older versions.
        kms.set_min_decryption_version("app", "2").await.unwrap();
        assert_eq!(flags(&s, objs[0].1), (false, false));
        assert!(matches!(
            kms.decrypt(&g1.wrapped, &c).await,
            Err(KmsError::KeyVersionBelowMinimum { version, min, .. }) if version == "1" && min == "2"
        ));
        assert!(decrypt_data_key(&kms, &g2.wrapped, &c).await.is_ok());
        kms.set_min_decryption_version("app", "1").await.unwrap();
        assert_eq!(flags(&s, objs[0].1), (false, true));
        assert!(kms.decrypt(&g1.wrapped, &c).await.is_ok());

        // A destroyed version object is KeyVersionNotFound.
        s.destroy_object(objs[0].1).unwrap();
        assert!(matches!(kms.decrypt(&g1.wrapped, &c).await, Err(KmsError::KeyVersionNotFound { .. })));

        // Names.
        assert!(matches!(kms.create_named_key("app", &KeySpec::default()).await, Err(KmsError::AlreadyExists { .. })));
        for bad in ["", "alias/x", "a\u{7}b"] {
            assert!(matches!(
                kms.create_named_key(bad, &KeySpec::default()).await,
                Err(KmsError::InvalidRequest { .. })
            ));
        }
        let long = "k".repeat(256);
        assert!(matches!(kms.create_named_key(&long, &KeySpec::default()).await, Err(KmsError::InvalidRequest { .. })));
        assert!(matches!(kms.generate_data_key(&long, &c).await, Err(KmsError::KeyNotFound { .. })));
        let listed = kms.list_keys().await.unwrap();
        assert_eq!(listed.iter().map(|k| k.key_id.as_str()).collect::<Vec<_>>(), ["app"]);
    });
}

#[test]
fn keys_made_outside_envseal_are_usable() {
    let Some(t) = enter("keys_made_outside_envseal_are_usable") else { return };
    block_on(async {
        // As `pkcs11-tool --keygen --key-type AES:32 --label ext --id $(hex of "ext#v1") --sensitive` would.
        let s = t.raw_session();
        let template = [
            Attribute::Token(true),
            Attribute::Private(true),
            Attribute::Sensitive(true),
            Attribute::Extractable(false),
            Attribute::Encrypt(true),
            Attribute::Decrypt(true),
            Attribute::ValueLen(Ulong::from(32)),
            Attribute::Label(b"ext".to_vec()),
            Attribute::Id(b"ext#v1".to_vec()),
        ];
        s.generate_key(&Mechanism::AesKeyGen, &template).unwrap();
        // An object with the label but another CKA_ID is not an envseal version.
        let other = [Attribute::Token(true), Attribute::ValueLen(Ulong::from(32)), Attribute::Label(b"ext".to_vec())];
        s.generate_key(&Mechanism::AesKeyGen, &other).unwrap();

        let kms = t.kms();
        let c = ctx(&[("a", "b")]);
        let g = kms.generate_data_key("ext", &c).await.unwrap();
        assert_eq!((g.wrapped.key_id.as_str(), g.wrapped.key_version.as_str()), ("ext", "1"));
        let m = kms.describe_key("ext").await.unwrap();
        assert_eq!(
            (m.state, m.current_version.as_str(), m.created_at),
            (KeyState::Enabled, "1", std::time::UNIX_EPOCH)
        );
        let m = kms.rotate_key("ext").await.unwrap();
        assert_eq!(m.versions.len(), 2);
        assert!(decrypt_data_key(&kms, &g.wrapped, &c).await.is_ok());
        // Disabled with another tool (CKA_ENCRYPT/CKA_DECRYPT cleared): envseal sees a disabled key.
        let objs = key_objects(&s, "ext");
        let current = objs.iter().find(|(id, _)| id == "ext#v2").unwrap().1;
        s.update_attributes(current, &[Attribute::Encrypt(false), Attribute::Decrypt(false)]).unwrap();
        assert_eq!(kms.describe_key("ext").await.unwrap().state, KeyState::Disabled);
        assert!(matches!(kms.generate_data_key("ext", &c).await, Err(KmsError::KeyDisabled { .. })));
        kms.enable_key("ext").await.unwrap();
        assert!(kms.generate_data_key("ext", &c).await.is_ok());
    });
}

#[test]
fn expired_keys_are_absent_then_purged() {
    let Some(t) = enter("expired_keys_are_absent_then_purged") else { return };
    block_on(async {
        let kms = t.kms();
        named_key(&kms, "doomed").await;
        kms.create_alias("alias/doomed", "doomed").await.unwrap();
        kms.schedule_key_deletion("doomed", 7).await.unwrap();
        // Move the deletion date into the past with a newer record, as time passing would.
        let s = t.raw_session();
        let record = r#"{"format":1,"seq":99,"description":"","tags":{},"created":1,"state":"PendingDeletion","deletion_date":2,"min_decryption_version":null,"versions":[{"version":1,"created":1}]}"#;
        s.create_object(&[
            Attribute::Class(ObjectClass::DATA),
            Attribute::Token(true),
            Attribute::Private(true),
            Attribute::Application(APP_KEY.as_bytes().to_vec()),
            Attribute::Label(b"doomed".to_vec()),
            Attribute::Value(record.as_bytes().to_vec()),
        ])
        .unwrap();
        let c = ctx(&[]);
        assert!(matches!(kms.describe_key("doomed").await, Err(KmsError::KeyNotFound { .. })));
        assert!(matches!(kms.generate_data_key("doomed", &c).await, Err(KmsError::KeyNotFound { .. })));
        assert!(kms.list_keys().await.unwrap().is_empty());
        assert!(kms.list_aliases().await.unwrap().is_empty());
        assert_eq!(key_objects(&s, "doomed").len(), 1, "not purged before a key-management change");
        // The next key-management change purges it: objects, alias and records.
        named_key(&kms, "other").await;
        assert!(key_objects(&s, "doomed").is_empty());
        let data =
            s.find_objects(&[Attribute::Class(ObjectClass::DATA), Attribute::Label(b"doomed".to_vec())]).unwrap();
        assert!(data.is_empty());
        assert!(matches!(kms.delete_alias("alias/doomed").await, Err(KmsError::KeyNotFound { .. })));
    });
}

#[test]
fn key_material_is_not_extractable() {
    let Some(t) = enter("key_material_is_not_extractable") else { return };
    block_on(async {
        let kms = t.kms();
        named_key(&kms, "locked").await;
        let s = t.raw_session();
        let (_, h) = key_objects(&s, "locked").remove(0);
        // C_GetAttributeValue(CKA_VALUE) is refused as sensitive.
        let info = s.get_attribute_info(h, &[AttributeType::Value]).unwrap();
        assert!(matches!(info.as_slice(), [AttributeInfo::Sensitive]), "{info:?}");
        let attrs = s
            .get_attributes(
                h,
                &[
                    AttributeType::Value,
                    AttributeType::Sensitive,
                    AttributeType::Extractable,
                    AttributeType::NeverExtractable,
                    AttributeType::AlwaysSensitive,
                    AttributeType::Token,
                    AttributeType::Private,
                    AttributeType::Local,
                    AttributeType::ValueLen,
                ],
            )
            .unwrap();
        assert!(!attrs.iter().any(|a| matches!(a, Attribute::Value(_))), "CKA_VALUE was returned");
        for want in [
            Attribute::Sensitive(true),
            Attribute::Extractable(false),
            Attribute::NeverExtractable(true),
            Attribute::AlwaysSensitive(true),
            Attribute::Token(true),
            Attribute::Private(true),
            Attribute::Local(true),
            Attribute::ValueLen(Ulong::from(32)),
        ] {
            assert!(attrs.contains(&want), "{want:?} missing from {attrs:?}");
        }
        // And it cannot be made extractable later.
        assert!(matches!(
            s.update_attributes(h, &[Attribute::Extractable(true)]),
            Err(Error::Pkcs11(RvError::AttributeReadOnly | RvError::ActionProhibited, _))
        ));
        assert!(s.update_attributes(h, &[Attribute::Sensitive(false)]).is_err());
    });
}

#[test]
fn tampered_blob_and_wrong_context() {
    let Some(t) = enter("tampered_blob_and_wrong_context") else { return };
    block_on(async {
        let kms = t.kms();
        named_key(&kms, "tamper").await;
        named_key(&kms, "other").await;
        let c = ctx(&[("file", "a.env")]);
        let g = kms.generate_data_key("tamper", &c).await.unwrap();
        let n = g.wrapped.blob.len();
        let header = 9 + "tamper".len();
        for i in 0..n {
            let mut b = g.wrapped.blob.clone();
            b[i] ^= 0x01;
            let r = kms.decrypt(&WrappedKey { blob: b, ..g.wrapped.clone() }, &c).await;
            let e = r.expect_err("a tampered blob must not decrypt");
            // Header bytes disagree with the entry's key id / version, or the AAD; the rest
            // fails AES-GCM authentication inside the token.
            assert!(matches!(e, KmsError::InvalidCiphertext), "byte {i}: {e:?}");
        }
        // The entry's key id or version disagrees with the blob.
        let moved = WrappedKey { key_id: "other".into(), ..g.wrapped.clone() };
        assert!(matches!(kms.decrypt(&moved, &c).await, Err(KmsError::InvalidCiphertext)));
        let moved = WrappedKey { key_version: "2".into(), ..g.wrapped.clone() };
        assert!(matches!(kms.decrypt(&moved, &c).await, Err(KmsError::InvalidCiphertext)));
        // A blob claiming another key does not open under it (the header is in the AAD).
        let mut b = g.wrapped.blob.clone();
        b[5..11].copy_from_slice(b"other\0");
        b[4] = 5;
        b.remove(10);
        let r = kms
            .decrypt(
                &WrappedKey { blob: b, key_id: String::new(), key_version: String::new(), ..g.wrapped.clone() },
                &c,
            )
            .await;
        assert!(matches!(r, Err(KmsError::InvalidCiphertext)), "{r:?}");
        // Wrong contexts: SoftHSM2 reports an AES-GCM failure, mapped to InvalidCiphertext.
        for wrong in [ctx(&[]), ctx(&[("file", "b.env")]), ctx(&[("file", "a.env"), ("x", "")])] {
            assert!(matches!(kms.decrypt(&g.wrapped, &wrong).await, Err(KmsError::InvalidCiphertext)));
        }
        // Unknown version and unknown key.
        let mut b = g.wrapped.blob.clone();
        b[header - 1] = 9;
        let r = kms.decrypt(&WrappedKey { blob: b, key_version: String::new(), ..g.wrapped.clone() }, &c).await;
        assert!(matches!(r, Err(KmsError::KeyVersionNotFound { .. })), "{r:?}");
        assert!(kms.decrypt(&g.wrapped, &c).await.is_ok());
    });
}

#[test]
fn wrong_missing_and_prompted_pin() {
    let Some(t) = enter("wrong_missing_and_prompted_pin") else { return };
    block_on(async {
        let c = ctx(&[]);
        // Wrong PIN: AccessDenied with a hint, never the PIN, and no second attempt.
        let wrong_pin = "wrong-pin-0000";
        let kms = t.kms_with_pin(wrong_pin);
        let e = kms.generate_data_key("any", &c).await.unwrap_err();
        let text = format!("{e} {e:?} {kms:?}");
        assert!(matches!(e, KmsError::AccessDenied { .. }), "{text}");
        assert!(text.contains("ENVSEAL_PKCS11_PIN") && text.contains("PinIncorrect"), "{text}");
        assert!(!text.contains(wrong_pin) && !text.contains(PIN), "{text}");
        let e = kms.login().await.unwrap_err();
        assert!(e.to_string().contains("does not retry"), "{e}");

        // No PIN and no prompt.
        let none = Pkcs11Kms::open_with(t.uri(), Pkcs11Options::new()).unwrap();
        let e = none.login().await.unwrap_err();
        assert!(matches!(&e, KmsError::AccessDenied { message } if message.contains("ENVSEAL_PKCS11_PIN")), "{e}");

        // A prompt is asked once, with the token label.
        let calls = Arc::new(AtomicUsize::new(0));
        let seen = calls.clone();
        let options = Pkcs11Options::new().pin_prompt(move |req| {
            seen.fetch_add(1, Ordering::SeqCst);
            assert_eq!(req.token_label, LABEL);
            Some(Pin::new(PIN))
        });
        let prompted = Pkcs11Kms::open_with(t.uri(), options).unwrap();
        prompted.create_named_key("p", &KeySpec::default()).await.unwrap();
        for _ in 0..3 {
            prompted.generate_data_key("p", &c).await.unwrap();
        }
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    });
}

#[test]
fn pin_never_appears_in_debug_or_errors() {
    let Some(t) = enter("pin_never_appears_in_debug_or_errors") else { return };
    block_on(async {
        // First, before any login succeeds: PKCS#11 login state is shared by the whole
        // process, so a wrong PIN is only ever checked while nobody is logged in.
        let bad_pin = "bad-pin-31337";
        let bad = t.kms_with_pin(bad_pin);
        let bad_login = bad.login().await.unwrap_err();
        let kms = t.kms();
        named_key(&kms, "k").await;
        let c = ctx(&[]);
        let mut texts = vec![
            format!("{kms:?}"),
            format!("{bad:?}"),
            format!("{:?}", Pkcs11Options::new().pin(Pin::new(PIN))),
            format!("{:?}", Pin::new(PIN)),
            format!("{:?}", kms.uri()),
        ];
        let errors = [
            kms.generate_data_key("missing", &c).await.unwrap_err(),
            kms.decrypt(&WrappedKey { blob: vec![1, 2, 3], ..kms.encrypt("k", b"x", &c).await.unwrap() }, &c)
                .await
                .unwrap_err(),
            kms.encrypt("k", &[0; 7000], &c).await.unwrap_err(),
            bad_login,
            Pkcs11Kms::open(&format!("pkcs11:token={LABEL}?pin-value={PIN}")).unwrap_err(),
            Pkcs11Kms::open_with(
                Pkcs11Uri::for_token("no-such-token").with_module_path(&t.module),
                Pkcs11Options::new().pin(Pin::new(PIN)),
            )
            .unwrap_err(),
        ];
        for e in &errors {
            texts.push(format!("{e} {e:?}"));
        }
        for text in &texts {
            assert!(!text.contains(PIN) && !text.contains(SO_PIN) && !text.contains(bad_pin), "PIN leaked: {text}");
        }
    });
}

#[test]
fn opening_errors() {
    let Some(t) = enter("opening_errors") else { return };
    let opts = || Pkcs11Options::new().pin(Pin::new(PIN));
    // No such token: Unavailable, naming the tokens present.
    let e = Pkcs11Kms::open_with(Pkcs11Uri::for_token("nope").with_module_path(&t.module), opts()).unwrap_err();
    assert!(matches!(&e, KmsError::Unavailable { message, retryable: false } if message.contains(LABEL)), "{e}");
    // No such module.
    let e = Pkcs11Kms::open_with(Pkcs11Uri::for_token(LABEL).with_module_path("/nonexistent/libp11.so"), opts())
        .unwrap_err();
    assert!(matches!(&e, KmsError::Unavailable { message, .. } if message.contains("/nonexistent/libp11.so")), "{e}");
    // A PIN in the URI is refused with the way to do it instead.
    let e = Pkcs11Kms::open("pkcs11:token=envseal-test?pin-value=1234").unwrap_err();
    assert!(matches!(&e, KmsError::InvalidRequest { message } if message.contains("ENVSEAL_PKCS11_PIN")), "{e}");
    // The documented URI form opens the token; object= is the default key; default module paths work.
    let uri = format!("pkcs11:token={LABEL};object=app-key?module-path={}", t.module.display());
    let kms = Pkcs11Kms::open_with(uri.parse().unwrap(), opts()).unwrap();
    assert_eq!(kms.default_key(), Some("app-key"));
    assert_eq!(kms.token_label(), LABEL);
    let kms = Pkcs11Kms::open_with(Pkcs11Uri::for_token(LABEL), opts()).unwrap();
    assert_eq!(kms.backend(), "pkcs11");
    // slot-id selects too.
    let by_slot = Pkcs11Kms::open_with(Pkcs11Uri::default().with_slot_id(kms.slot_id()), opts()).unwrap();
    assert_eq!(by_slot.token_label(), LABEL);
}

#[test]
fn concurrent_use_and_second_instance() {
    let Some(t) = enter("concurrent_use_and_second_instance") else { return };
    block_on(async {
        let kms = t.kms();
        named_key(&kms, "busy").await;
        let mut tasks = Vec::new();
        for i in 0..32 {
            let kms = kms.clone();
            tasks.push(tokio::spawn(async move {
                let c = ctx(&[("task", &i.to_string())]);
                for _ in 0..10 {
                    let g = kms.generate_data_key("busy", &c).await.unwrap();
                    let d = decrypt_data_key(&kms, &g.wrapped, &c).await.unwrap();
                    assert_eq!(d.data_key.expose_secret(), g.data_key.expose_secret());
                }
            }));
        }
        for task in tasks {
            task.await.unwrap();
        }
        // Blobs survive the instance: another one (same token) opens them.
        let c = ctx(&[("x", "y")]);
        let w = kms.encrypt("busy", b"a small secret", &c).await.unwrap();
        drop(kms);
        let again = t.kms();
        let d = again.decrypt(&w, &c).await.unwrap();
        assert_eq!(d.plaintext.expose_secret(), b"a small secret");
    });
}

#[test]
fn works_without_a_tokio_runtime() {
    let Some(t) = enter("works_without_a_tokio_runtime") else { return };
    // Outside Tokio the calls run inline; any executor will do.
    let kms = t.kms();
    let fut = async {
        named_key(&kms, "inline").await;
        let c = ctx(&[]);
        let g = kms.generate_data_key("inline", &c).await.unwrap();
        kms.decrypt(&g.wrapped, &c).await.unwrap()
    };
    let d = futures_lite_block_on(fut);
    assert_eq!(d.key_id, "inline");
}

/// A minimal executor: the backend's futures complete without waking when no runtime is present.
fn futures_lite_block_on<F: std::future::Future>(f: F) -> F::Output {
    use std::task::{Context, Poll, Waker};
    let mut f = std::pin::pin!(f);
    let mut cx = Context::from_waker(Waker::noop());
    loop {
        if let Poll::Ready(v) = f.as_mut().poll(&mut cx) {
            return v;
        }
    }
}

#[test]
fn cached_handles_follow_changes_made_elsewhere() {
    let Some(t) = enter("cached_handles_follow_changes_made_elsewhere") else { return };
    block_on(async {
        let c = ctx(&[("a", "b")]);
        let user = t.kms();
        let admin = t.kms(); // another instance: its changes bypass `user`'s cache
        named_key(&admin, "shared").await;
        let g1 = user.generate_data_key("shared", &c).await.unwrap();
        assert_eq!(g1.wrapped.key_version, "1");

        // Rotated elsewhere: the token refuses the cached old version for encryption.
        admin.rotate_key("shared").await.unwrap();
        let g2 = user.generate_data_key("shared", &c).await.unwrap();
        assert_eq!(g2.wrapped.key_version, "2");
        assert!(user.decrypt(&g1.wrapped, &c).await.is_ok());

        // Disabled elsewhere: refused at once, with the right error.
        admin.disable_key("shared").await.unwrap();
        assert!(matches!(user.generate_data_key("shared", &c).await, Err(KmsError::KeyDisabled { .. })));
        assert!(matches!(user.decrypt(&g2.wrapped, &c).await, Err(KmsError::KeyDisabled { .. })));
        admin.enable_key("shared").await.unwrap();
        assert!(user.decrypt(&g2.wrapped, &c).await.is_ok());

        // Version object destroyed with another tool.
        let s = t.raw_session();
        let v2 = key_objects(&s, "shared").into_iter().find(|(id, _)| id == "shared#v2").unwrap().1;
        s.destroy_object(v2).unwrap();
        assert!(matches!(user.decrypt(&g2.wrapped, &c).await, Err(KmsError::KeyVersionNotFound { .. })));
        assert!(user.decrypt(&g1.wrapped, &c).await.is_ok());
    });
}
