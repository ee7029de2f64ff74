//! Round trips, tampering, truncation, limits, and the public ESDK commitment vectors.

use std::collections::BTreeMap;
use std::io::Cursor;
use std::sync::Arc;

use async_trait::async_trait;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use envseal_core::DataKey;
use envseal_kms_mock::MockKms;
use zeroize::Zeroizing;

use crate::*;

fn ctx(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

fn raw(name: &str, byte: u8) -> RawAesKeyring {
    RawAesKeyring::new("envseal-test", name, Zeroizing::new(vec![byte; 32])).unwrap()
}

async fn seal(keyrings: &[&dyn Keyring], suite: Suite, frame: u32, data: &[u8]) -> Vec<u8> {
    let opts = EncryptOptions { suite, frame_length: frame, context: ctx(&[("purpose", "test")]) };
    let enc = begin_encrypt(keyrings, &opts).await.unwrap();
    let mut out = Vec::new();
    let s = enc.encrypt(Cursor::new(data), &mut out).unwrap();
    assert_eq!(s.plaintext_bytes, data.len() as u64);
    out
}

async fn unseal(keyrings: &[&dyn Keyring], msg: &[u8]) -> Result<Vec<u8>, EsdkError> {
    let opts = DecryptOptions::default();
    let mut input = Cursor::new(msg);
    let h = read_header(&mut input, &opts)?;
    let d = open(h, keyrings, &opts).await?;
    let mut out = Vec::new();
    d.decrypt_to_staging(&mut input, &mut out)?;
    Ok(out)
}

#[tokio::test]
async fn round_trips_both_suites_and_frame_boundaries() {
    let k = raw("k", 1);
    for suite in [Suite::CommitKey, Suite::CommitKeyEcdsaP384] {
        for len in [0usize, 1, 15, 16, 17, 32, 100] {
            let data: Vec<u8> = (0..len as u32).map(|i| i as u8).collect();
            let msg = seal(&[&k], suite, 16, &data).await;
            assert!(looks_like_message(&msg));
            assert_eq!(unseal(&[&k], &msg).await.unwrap(), data, "{suite} len {len}");
        }
    }
}

#[tokio::test]
async fn several_keys_any_one_opens() {
    let kms = Arc::new(MockKms::new());
    let key = kms.create_default_key();
    let a = KmsKeyring::new(kms.clone(), key);
    let b = raw("b", 2);
    let msg = seal(&[&a, &b], Suite::CommitKeyEcdsaP384, 4096, b"hello").await;
    let mut input = Cursor::new(&msg);
    let h = read_header(&mut input, &DecryptOptions::default()).unwrap();
    assert_eq!(h.edks.len(), 2);
    assert_eq!(h.edks[0].provider_id, "envseal:mock");
    assert_eq!(h.edks[1].provider_id, "envseal-test");
    assert!(h.context.contains_key(context::PUBLIC_KEY_FIELD));
    assert_eq!(unseal(&[&b], &msg).await.unwrap(), b"hello");
    assert_eq!(unseal(&[&KmsKeyring::discovery(kms)], &msg).await.unwrap(), b"hello");
    match unseal(&[&raw("b", 3)], &msg).await {
        Err(EsdkError::NoKeyOpened(a)) => assert!(matches!(a[0].error, EsdkError::WrongKey)),
        other => panic!("{other:?}"),
    }
    assert!(matches!(unseal(&[&raw("other", 2)], &msg).await, Err(EsdkError::NoKeyOpened(a)) if a.is_empty()));
}

#[tokio::test]
async fn streaming_and_spooled_modes() {
    let k = raw("k", 1);
    let data = vec![7u8; 10_000];
    for suite in [Suite::CommitKey, Suite::CommitKeyEcdsaP384] {
        let msg = seal(&[&k], suite, 1000, &data).await;
        let mut input = Cursor::new(&msg);
        let d = open(read_header(&mut input, &DecryptOptions::default()).unwrap(), &[&k], &DecryptOptions::default())
            .await
            .unwrap();
        let body = &msg[input.position() as usize..];
        let mut out = Vec::new();
        match (suite.is_signed(), d.decrypt_streaming(body, &mut out)) {
            (true, Err(EsdkError::SignedNeedsStaging)) => assert!(out.is_empty()),
            (false, Ok(_)) => assert_eq!(out, data),
            (_, other) => panic!("{other:?}"),
        }
        let mut spool = Cursor::new(Vec::new());
        let mut out = Vec::new();
        d.decrypt_spooled(body, &mut spool, &mut out).unwrap();
        assert_eq!(out, data);
        // A tampered last byte of the body: nothing at all reaches the output.
        let mut bad = body.to_vec();
        let n = bad.len();
        bad[n - 1] ^= 1;
        let mut out = Vec::new();
        assert!(d.decrypt_spooled(&bad[..], &mut Cursor::new(Vec::new()), &mut out).is_err());
        assert!(out.is_empty());
    }
}

#[tokio::test]
async fn every_byte_flip_is_caught() {
    let k = raw("k", 1);
    for suite in [Suite::CommitKey, Suite::CommitKeyEcdsaP384] {
        let msg = seal(&[&k], suite, 8, b"0123456789abcdefXYZ").await;
        for i in 0..msg.len() {
            let mut bad = msg.clone();
            bad[i] ^= 0x01;
            assert!(unseal(&[&k], &bad).await.is_err(), "{suite}: flip at {i} not caught");
        }
    }
}

#[tokio::test]
async fn truncation_at_every_length_and_trailing_data() {
    let k = raw("k", 1);
    for suite in [Suite::CommitKey, Suite::CommitKeyEcdsaP384] {
        let msg = seal(&[&k], suite, 8, b"0123456789abcdefXYZ").await;
        for n in 0..msg.len() {
            assert!(unseal(&[&k], &msg[..n]).await.is_err(), "{suite}: cut at {n} not caught");
        }
        let mut longer = msg.clone();
        longer.push(0);
        assert!(matches!(unseal(&[&k], &longer).await, Err(EsdkError::TrailingData)));
    }
}

#[tokio::test]
async fn frames_reordered_are_caught() {
    let k = raw("k", 1);
    let msg = seal(&[&k], Suite::CommitKey, 4, b"aaaabbbbcc").await;
    let mut input = Cursor::new(&msg);
    read_header(&mut input, &DecryptOptions::default()).unwrap();
    let h = input.position() as usize;
    // Regular frames are 4 + 12 + 4 + 16 = 36 bytes: swap the first two.
    let mut bad = msg.clone();
    bad[h..h + 36].copy_from_slice(&msg[h + 36..h + 72]);
    bad[h + 36..h + 72].copy_from_slice(&msg[h..h + 36]);
    assert!(matches!(unseal(&[&k], &bad).await, Err(EsdkError::FrameTampered { sequence: 1 })));
}

#[tokio::test]
async fn limits_and_policy() {
    let keys: Vec<RawAesKeyring> = (0..3).map(|i| raw(&format!("k{i}"), i)).collect();
    let refs: Vec<&dyn Keyring> = keys.iter().map(|k| k as &dyn Keyring).collect();
    let msg = seal(&refs, Suite::CommitKey, 64, b"x").await;
    let opts = DecryptOptions { max_encrypted_data_keys: 2, ..Default::default() };
    assert!(matches!(read_header(&mut Cursor::new(&msg), &opts), Err(EsdkError::TooManyDataKeys { count: 3, max: 2 })));
    // Version 1 and non-committing suites are refused with the policy named.
    let e = read_header(&mut Cursor::new([1u8, 0x80, 0x03, 0x78]), &opts).unwrap_err();
    assert!(matches!(e, EsdkError::CommitmentPolicy), "{e}");
    let mut v2 = msg.clone();
    v2[1..3].copy_from_slice(&0x0378u16.to_be_bytes());
    let e = read_header(&mut Cursor::new(&v2), &opts).unwrap_err();
    assert!(e.to_string().contains("REQUIRE_ENCRYPT_REQUIRE_DECRYPT"), "{e}");
    // Reserved context keys and frame lengths.
    let bad = EncryptOptions { context: ctx(&[("aws-crypto-x", "1")]), ..Default::default() };
    assert!(matches!(begin_encrypt(&refs, &bad).await, Err(EsdkError::InvalidContext(_))));
    let bad = EncryptOptions { frame_length: 0, ..Default::default() };
    assert!(begin_encrypt(&refs, &bad).await.is_err());
    assert!(begin_encrypt(&[], &EncryptOptions::default()).await.is_err());
}

#[tokio::test]
async fn required_context() {
    let k = raw("k", 1);
    let msg = seal(&[&k], Suite::CommitKey, 64, b"x").await;
    let mut input = Cursor::new(&msg);
    let h = read_header(&mut input, &DecryptOptions::default()).unwrap();
    let opts = DecryptOptions { required_context: ctx(&[("purpose", "other")]), ..Default::default() };
    assert!(matches!(open(h.clone(), &[&k], &opts).await, Err(EsdkError::WrongContext(k)) if k == "purpose"));
    let opts = DecryptOptions { required_context: ctx(&[("purpose", "test")]), ..Default::default() };
    assert!(open(h, &[&k], &opts).await.is_ok());
}

#[test]
fn errors_never_show_secrets() {
    let e = EsdkError::NoKeyOpened(vec![EdkAttempt {
        index: 0,
        provider_id: "aws-kms".into(),
        key_name: "arn:aws:kms:r:1:key/k".into(),
        error: EsdkError::WrongKey,
    }]);
    let s = e.to_string();
    assert!(s.contains("#0 aws-kms arn:aws:kms:r:1:key/k"), "{s}");
}

/// A keyring that returns a known data key for any entry (the vectors give the decrypted key of
/// their AWS KMS entries, whose KMS is not reachable from here).
#[derive(Debug)]
struct KnownDataKey(Vec<u8>);

#[async_trait]
impl Keyring for KnownDataKey {
    fn describe(&self) -> String {
        "known data key".into()
    }
    async fn generate(&self, _: &BTreeMap<String, String>) -> Result<(DataKey, Edk), EsdkError> {
        unreachable!()
    }
    async fn wrap(&self, _: &DataKey, _: &BTreeMap<String, String>) -> Result<Edk, EsdkError> {
        unreachable!()
    }
    async fn unwrap(&self, _: &Edk, _: &BTreeMap<String, String>) -> Result<DataKey, EsdkError> {
        let mut k = [0u8; 32];
        k.copy_from_slice(&self.0);
        Ok(DataKey::from_bytes(k))
    }
}

/// The ESDK's public "Message Format V2" commitment vectors (testdata/esdk/README.md): 46
/// messages written by the C, Java and Python ESDKs, signed and unsigned, framed (frame sizes 1
/// to 1024) and unframed, some with a wrong commitment.
#[tokio::test]
async fn public_commitment_vectors() {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../testdata/esdk/commitment-test-vectors.json"
    ))
    .unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let tests = v["tests"].as_array().unwrap();
    assert_eq!(tests.len(), 46);
    let (mut ok, mut refused_commitment, mut refused_unframed) = (0, 0, 0);
    for t in tests {
        let comment = t["comment"].as_str().unwrap();
        let msg = B64.decode(t["ciphertext"].as_str().unwrap()).unwrap();
        let dek = B64.decode(t["decrypted-dek"].as_str().unwrap()).unwrap();
        let expect_ok = t["status"] == true || t["status"] == "True";
        let static_key;
        let known;
        let keyring: &dyn Keyring = if t["keyring-type"] == "static" {
            // The vectors' raw AES key: 32 zero bytes, namespace "ProviderName", name "KeyId".
            static_key = RawAesKeyring::new("ProviderName", "KeyId", Zeroizing::new(vec![0u8; 32])).unwrap();
            &static_key
        } else {
            known = KnownDataKey(dek);
            &known
        };
        let result = unseal(&[keyring], &msg).await;
        let unframed = msg.len() > 3 && {
            let mut c = Cursor::new(&msg);
            matches!(read_header(&mut c, &DecryptOptions::default()), Err(EsdkError::NonFramed))
        };
        match (&result, expect_ok, unframed) {
            (Err(EsdkError::NonFramed), _, true) => refused_unframed += 1,
            (Ok(plain), true, false) => {
                let want: String =
                    t["plaintext-frames"].as_array().unwrap().iter().map(|f| f.as_str().unwrap()).collect();
                assert_eq!(String::from_utf8(plain.clone()).unwrap(), want, "{comment}");
                ok += 1;
            }
            (Err(EsdkError::CommitmentMismatch), false, false) => refused_commitment += 1,
            _ => panic!("{comment}: expected ok={expect_ok} unframed={unframed}, got {result:?}"),
        }
    }
    // 34 framed messages decrypt; 5 framed ones with a wrong commitment are refused as such; 7
    // unframed ones (one of them also with a wrong commitment) are refused as unsupported.
    assert_eq!((ok, refused_commitment, refused_unframed), (34, 5, 7));
}
