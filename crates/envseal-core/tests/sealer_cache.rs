//! Field envelopes through the `Sealer`, with and without the data-key cache; the mock's call
//! counters prove what the cache saves.

use std::sync::Arc;
use std::time::Duration;

use envseal_core::envelope::{self, Envelope};
use envseal_core::kms::KeyManager;
use envseal_core::{CachePolicy, EncryptionContext, Engine, Error, FormatError, KmsError, Sealer};
use envseal_kms_mock::{MockKms, Op};

fn ctx(p: &[(&str, &str)]) -> EncryptionContext {
    EncryptionContext::from_pairs(p.iter().copied()).unwrap()
}

fn setup() -> (Arc<MockKms>, String) {
    let kms = Arc::new(MockKms::new());
    let key = kms.create_default_key();
    (kms, key)
}

#[tokio::test]
async fn without_cache_every_call_goes_to_the_kms() {
    let (kms, key) = setup();
    let s = Sealer::new(kms.clone(), key);
    let c = ctx(&[("col", "ssn")]);
    let a = s.seal(b"123-45-6789", &c).await.unwrap();
    let b = s.seal(b"123-45-6789", &c).await.unwrap();
    assert_ne!(a, b);
    assert_eq!(s.open(&a, &c).await.unwrap().expose_secret(), b"123-45-6789");
    assert_eq!(s.open(&b, &c).await.unwrap().expose_secret(), b"123-45-6789");
    assert_eq!(kms.calls(Op::GenerateDataKey), 2);
    assert_eq!(kms.calls(Op::Decrypt), 2);
}

#[tokio::test]
async fn cache_avoids_kms_calls_every_engine() {
    for &engine in Engine::ALL {
        let (kms, key) = setup();
        let s = Sealer::new(kms.clone(), key).with_cache(CachePolicy::default()).with_engine(engine);
        let c = ctx(&[("table", "users"), ("column", "email")]);
        let mut sealed = Vec::new();
        for i in 0..1000 {
            sealed.push(s.seal(format!("user{i}@example.com").as_bytes(), &c).await.unwrap());
        }
        assert_eq!(kms.calls(Op::GenerateDataKey), 1);
        // Distinct nonces (a counter), same salt and entry.
        let nonces: std::collections::HashSet<_> = sealed
            .iter()
            .map(|e| {
                let at = 3 + 16 + 32 + Envelope::parse(e).unwrap().entry_bytes.len();
                e[at..at + 12].to_vec()
            })
            .collect();
        assert_eq!(nonces.len(), 1000);
        for (i, e) in sealed.iter().enumerate() {
            assert_eq!(s.open(e, &c).await.unwrap().expose_secret(), format!("user{i}@example.com").as_bytes());
        }
        assert_eq!(kms.calls(Op::Decrypt), 1);
        let st = s.cache_stats();
        assert_eq!((st.misses, st.hits), (2, 1998));
    }
}

#[tokio::test]
async fn contexts_get_separate_keys_and_bind() {
    let (kms, key) = setup();
    let s = Sealer::new(kms.clone(), key).with_cache(CachePolicy::default());
    let a = ctx(&[("tenant", "a")]);
    let b = ctx(&[("tenant", "b")]);
    let ea = s.seal(b"x", &a).await.unwrap();
    let eb = s.seal(b"y", &b).await.unwrap();
    assert_eq!(kms.calls(Op::GenerateDataKey), 2);
    assert_ne!(Envelope::parse(&ea).unwrap().salt, Envelope::parse(&eb).unwrap().salt);
    // Opening with the wrong context fails at the KMS (not served from another context's key).
    let err = s.open(&ea, &b).await.unwrap_err();
    assert!(matches!(err, Error::Kms(KmsError::WrongContext)), "{err:?}");
    // A fresh sealer (cold cache) can open it with the right context.
    let (kms2, _) = (kms.clone(), ());
    let cold = Sealer::new(kms2, "unused");
    assert_eq!(cold.open(&ea, &a).await.unwrap().expose_secret(), b"x");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_seals_fetch_one_key() {
    let (kms, key) = setup();
    kms.set_latency(Duration::from_millis(50));
    let s = Arc::new(Sealer::new(kms.clone(), key).with_cache(CachePolicy::default()));
    let c = ctx(&[("k", "v")]);
    let tasks: Vec<_> = (0..64)
        .map(|i| {
            let s = s.clone();
            let c = c.clone();
            tokio::spawn(async move { s.seal(format!("v{i}").as_bytes(), &c).await.unwrap() })
        })
        .collect();
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.unwrap());
    }
    assert_eq!(kms.calls(Op::GenerateDataKey), 1, "parallel misses must share one KMS call");
    let tasks: Vec<_> = out
        .into_iter()
        .map(|e| {
            let s = s.clone();
            let c = c.clone();
            tokio::spawn(async move { s.open(&e, &c).await.unwrap().expose_secret().to_vec() })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(kms.calls(Op::Decrypt), 1);
}

#[tokio::test]
async fn limits_force_new_data_keys() {
    let (kms, key) = setup();
    let c = EncryptionContext::new();
    let s =
        Sealer::new(kms.clone(), key.clone()).with_cache(CachePolicy { max_messages: 10, ..CachePolicy::default() });
    for _ in 0..25 {
        s.seal(b"m", &c).await.unwrap();
    }
    assert_eq!(kms.calls(Op::GenerateDataKey), 3);

    let (kms, key) = setup();
    let s = Sealer::new(kms.clone(), key.clone()).with_cache(CachePolicy { max_bytes: 100, ..CachePolicy::default() });
    for _ in 0..10 {
        s.seal(&[0u8; 30], &c).await.unwrap(); // 3 per key fit in 100 bytes
    }
    assert_eq!(kms.calls(Op::GenerateDataKey), 4);

    let (kms, key) = setup();
    let s = Sealer::new(kms.clone(), key.clone())
        .with_cache(CachePolicy { max_age: Duration::from_millis(30), ..CachePolicy::default() });
    s.seal(b"a", &c).await.unwrap();
    s.seal(b"b", &c).await.unwrap();
    tokio::time::sleep(Duration::from_millis(60)).await;
    s.seal(b"c", &c).await.unwrap();
    assert_eq!(kms.calls(Op::GenerateDataKey), 2);

    let (kms, key) = setup();
    let s = Sealer::new(kms.clone(), key).with_cache(CachePolicy { capacity: 2, ..CachePolicy::default() });
    for t in ["a", "b", "c", "a"] {
        s.seal(b"x", &ctx(&[("t", t)])).await.unwrap();
    }
    let st = s.cache_stats();
    assert_eq!(st.entries, 2);
    assert_eq!(st.evictions, 2);
    assert_eq!(kms.calls(Op::GenerateDataKey), 4);
}

#[tokio::test]
async fn rotation_and_states_for_fields() {
    let (kms, key) = setup();
    let s = Sealer::new(kms.clone(), key.clone());
    let c = EncryptionContext::new();
    let old = s.seal(b"old", &c).await.unwrap();
    kms.rotate_key(&key).await.unwrap();
    let new = s.seal(b"new", &c).await.unwrap();
    assert_eq!(Envelope::parse(&old).unwrap().entry().unwrap().key_version, "1");
    assert_eq!(Envelope::parse(&new).unwrap().entry().unwrap().key_version, "2");
    assert_eq!(s.open(&old, &c).await.unwrap().expose_secret(), b"old");
    kms.disable_key(&key).await.unwrap();
    assert!(matches!(s.open(&new, &c).await, Err(Error::Kms(KmsError::KeyDisabled { .. }))));
    assert!(matches!(s.seal(b"z", &c).await, Err(Error::Kms(KmsError::KeyDisabled { .. }))));
}

#[tokio::test]
async fn tampering_is_detected_even_with_a_warm_cache() {
    let (kms, key) = setup();
    let s = Sealer::new(kms.clone(), key).with_cache(CachePolicy::default());
    let c = ctx(&[("k", "v")]);
    let e = s.seal(b"payload", &c).await.unwrap();
    s.open(&e, &c).await.unwrap();
    let p = Envelope::parse(&e).unwrap();
    let entry_end = 3 + 16 + 32 + p.entry_bytes.len();
    for i in 0..e.len() {
        let mut bad = e.clone();
        bad[i] ^= 0x04;
        assert!(s.open(&bad, &c).await.is_err(), "flip at {i} accepted");
    }
    // The commitment region gets its own error; the value region too.
    let mut bad = e.clone();
    bad[3 + 16] ^= 1;
    assert!(matches!(s.open(&bad, &c).await, Err(Error::Format(FormatError::CommitmentMismatch))));
    let mut bad = e.clone();
    bad[entry_end + 12] ^= 1;
    assert!(matches!(s.open(&bad, &c).await, Err(Error::Format(FormatError::ValueTampered))));
    // Text form round trip.
    let t = s.seal_text(b"text", &c).await.unwrap();
    assert!(t.starts_with(envelope::TEXT_PREFIX));
    assert_eq!(s.open_text(&t, &c).await.unwrap().expose_secret(), b"text");
}

#[tokio::test]
async fn rewrapped_envelope_still_opens() {
    let (kms, key) = setup();
    let s = Sealer::new(kms.clone(), key.clone());
    let c = ctx(&[("row", "42")]);
    let e = s.seal(b"field", &c).await.unwrap();
    kms.rotate_key(&key).await.unwrap();
    let p = Envelope::parse(&e).unwrap();
    let kctx = envelope::kms_context(&c, p.salt).unwrap();
    use envseal_core::Kms;
    let new_entry = kms.re_encrypt(&p.entry().unwrap(), &kctx, &key, &kctx).await.unwrap();
    assert_eq!(new_entry.key_version, "2");
    let re = p.with_entry(&new_entry).unwrap();
    assert_eq!(s.open(&re, &c).await.unwrap().expose_secret(), b"field");
}

#[tokio::test]
async fn overhead_is_as_documented() {
    let (kms, key) = setup();
    let s = Sealer::new(kms.clone(), key.clone());
    let e = s.seal(&[0u8; 64], &EncryptionContext::new()).await.unwrap();
    let entry = 1 + 4 + 2 + key.len() + 2 + 1 + 2 + Envelope::parse(&e).unwrap().entry().unwrap().blob.len();
    assert_eq!(e.len() - 64, 3 + 16 + 32 + entry + 12 + 16);
}

#[tokio::test]
async fn seal_into_appends_with_a_warm_or_cold_cache() {
    let (kms, key) = setup();
    let c = ctx(&[("table", "t")]);
    for s in [
        Sealer::new(kms.clone(), key.clone()),
        Sealer::new(kms.clone(), key.clone()).with_cache(CachePolicy::default()),
    ] {
        let mut buf = b"head".to_vec();
        s.seal_into(b"one", &c, &mut buf).await.unwrap();
        let first = buf.len();
        s.seal_into(b"two", &c, &mut buf).await.unwrap();
        assert_eq!(&buf[..4], b"head");
        assert_eq!(s.open(&buf[4..first], &c).await.unwrap().expose_secret(), b"one");
        assert_eq!(s.open(&buf[first..], &c).await.unwrap().expose_secret(), b"two");
        assert!(s.seal_into(&vec![0; envelope::MAX_PLAINTEXT + 1], &c, &mut buf).await.is_err());
    }
}
