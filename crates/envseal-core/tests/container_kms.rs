//! The container through a real (mock HSM) KMS: rotation, key states, several entries, context
//! binding, tampering, and property tests.

use std::sync::Arc;

use envseal_core::container::{self, Preamble, Recipient, SealOptions};
use envseal_core::kms::KeyManager;
use envseal_core::{EncryptionContext, Engine, Error, FormatError, Kms, KmsError};
use envseal_kms_mock::{MockKms, Op};
use proptest::prelude::*;

fn ctx(p: &[(&str, &str)]) -> EncryptionContext {
    EncryptionContext::from_pairs(p.iter().copied()).unwrap()
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

async fn seal_with(kms: &MockKms, keys: &[&str], c: &EncryptionContext, opts: SealOptions, pt: &[u8]) -> Vec<u8> {
    let rs: Vec<Recipient<'_>> = keys.iter().map(|k| Recipient { kms, key: k }).collect();
    let mut out = Vec::new();
    container::seal(&rs, c, &opts, pt, &mut out).await.unwrap();
    out
}

async fn open_with(kms: &MockKms, c: &EncryptionContext, engine: Engine, sealed: &[u8]) -> Result<Vec<u8>, Error> {
    let mut out = Vec::new();
    container::open(&[kms as &dyn Kms], c, &envseal_core::entries::Trust::Discovery, engine, sealed, &mut out).await?;
    Ok(out)
}

#[tokio::test]
async fn round_trip_default_chunk_boundaries_every_engine() {
    let kms = MockKms::new();
    let key = kms.create_default_key();
    let c = ctx(&[("app", "billing"), ("env", "prod")]);
    let cs = container::DEFAULT_CHUNK_SIZE as usize;
    for &engine in Engine::ALL {
        let opts = SealOptions { engine, ..SealOptions::default() };
        for len in [0, 1, cs - 1, cs, cs + 1, 3 * cs + 17] {
            let pt: Vec<u8> = (0..len).map(|i| (i * 7 + 3) as u8).collect();
            let sealed = seal_with(&kms, &[&key], &c, opts, &pt).await;
            // Any engine opens what any engine sealed.
            for &other in Engine::ALL {
                assert_eq!(open_with(&kms, &c, other, &sealed).await.unwrap(), pt, "len {len}");
            }
            // Opening with a subset of the context (or none) works; a different value does not.
            assert_eq!(open_with(&kms, &ctx(&[("env", "prod")]), engine, &sealed).await.unwrap(), pt);
            assert_eq!(open_with(&kms, &EncryptionContext::new(), engine, &sealed).await.unwrap(), pt);
        }
    }
}

#[tokio::test]
async fn random_multi_mib() {
    let kms = MockKms::new();
    let key = kms.create_default_key();
    let len = 5 * 1024 * 1024 + 12345;
    let mut pt = vec![0u8; len];
    envseal_core::random::fill(&mut pt);
    let sealed = seal_with(&kms, &[&key], &EncryptionContext::new(), SealOptions::default(), &pt).await;
    assert_eq!(sealed.len(), Preamble::parse(&sealed).unwrap().1 + len + len.div_ceil(65536) * 16);
    assert_eq!(open_with(&kms, &EncryptionContext::new(), Engine::default(), &sealed).await.unwrap(), pt);
}

#[tokio::test]
async fn wrong_expected_context_fails_before_any_kms_call() {
    let kms = MockKms::new();
    let key = kms.create_default_key();
    let sealed = seal_with(&kms, &[&key], &ctx(&[("tenant", "a")]), SealOptions::default(), b"x").await;
    kms.reset_counts();
    let err = open_with(&kms, &ctx(&[("tenant", "b")]), Engine::default(), &sealed).await.unwrap_err();
    assert!(matches!(err, Error::Format(FormatError::WrongContext)), "{err:?}");
    assert_eq!(kms.calls(Op::Decrypt), 0);
}

#[tokio::test]
async fn rotation_old_data_opens_new_data_uses_new_version() {
    let kms = MockKms::new();
    let key = kms.create_default_key();
    let c = EncryptionContext::new();
    let before = seal_with(&kms, &[&key], &c, SealOptions::default(), b"before").await;
    let md = kms.rotate_key(&key).await.unwrap();
    assert_eq!(md.current_version, "2");
    let after = seal_with(&kms, &[&key], &c, SealOptions::default(), b"after").await;
    assert_eq!(Preamble::parse(&before).unwrap().0.entries[0].key_version, "1");
    assert_eq!(Preamble::parse(&after).unwrap().0.entries[0].key_version, "2");
    assert_eq!(open_with(&kms, &c, Engine::default(), &before).await.unwrap(), b"before");
    assert_eq!(open_with(&kms, &c, Engine::default(), &after).await.unwrap(), b"after");

    // A minimum decryption version makes old data fail with its own error.
    kms.set_min_decryption_version(&key, "2").await.unwrap();
    let err = open_with(&kms, &c, Engine::default(), &before).await.unwrap_err();
    assert!(matches!(err, Error::Kms(KmsError::KeyVersionBelowMinimum { .. })), "{err:?}");
    assert!(err.to_string().contains("minimum decryption version"));
}

#[tokio::test]
async fn disabled_and_pending_deletion_keys() {
    let kms = MockKms::new();
    let key = kms.create_default_key();
    let c = EncryptionContext::new();
    let sealed = seal_with(&kms, &[&key], &c, SealOptions::default(), b"data").await;
    kms.disable_key(&key).await.unwrap();
    let err = open_with(&kms, &c, Engine::default(), &sealed).await.unwrap_err();
    assert!(matches!(err, Error::Kms(KmsError::KeyDisabled { .. })), "{err:?}");
    kms.enable_key(&key).await.unwrap();
    kms.schedule_key_deletion(&key, 7).await.unwrap();
    let err = open_with(&kms, &c, Engine::default(), &sealed).await.unwrap_err();
    assert!(matches!(err, Error::Kms(KmsError::KeyPendingDeletion { .. })), "{err:?}");
}

#[tokio::test]
async fn several_entries_any_one_opens() {
    let kms = MockKms::new();
    let primary = kms.create_default_key();
    let break_glass = kms.create_default_key();
    let c = ctx(&[("app", "x")]);
    let sealed = seal_with(&kms, &[&primary, &break_glass], &c, SealOptions::default(), b"two keys").await;
    let (pre, _) = Preamble::parse(&sealed).unwrap();
    assert_eq!(pre.entries.len(), 2);
    assert_eq!(pre.entries[1].key_id, break_glass);
    kms.disable_key(&primary).await.unwrap();
    assert_eq!(open_with(&kms, &c, Engine::default(), &sealed).await.unwrap(), b"two keys");
    kms.disable_key(&break_glass).await.unwrap();
    let err = open_with(&kms, &c, Engine::default(), &sealed).await.unwrap_err();
    match err {
        Error::NoKeyOpened(attempts) => {
            assert_eq!(attempts.len(), 2);
            assert!(attempts.iter().all(|a| matches!(a.error, Error::Kms(KmsError::KeyDisabled { .. }))));
        }
        e => panic!("{e:?}"),
    }
}

#[tokio::test]
async fn entries_are_bound_to_their_file() {
    let kms = MockKms::new();
    let key = kms.create_default_key();
    let c = EncryptionContext::new();
    let a = seal_with(&kms, &[&key], &c, SealOptions::default(), b"file a").await;
    let b = seal_with(&kms, &[&key], &c, SealOptions::default(), b"file b").await;
    // Move file a's entry into file b: the KMS context (header hash) no longer matches.
    let (pa, _) = Preamble::parse(&a).unwrap();
    let (mut pb, nb) = Preamble::parse(&b).unwrap();
    pb.entries = pa.entries.clone();
    let mut swapped = pb.encode().unwrap();
    swapped.extend_from_slice(&b[nb..]);
    let err = open_with(&kms, &c, Engine::default(), &swapped).await.unwrap_err();
    assert!(matches!(err, Error::Format(FormatError::HeaderTampered)), "{err:?}");
}

#[tokio::test]
async fn every_single_byte_change_is_rejected_through_the_kms() {
    let kms = MockKms::new();
    let key = kms.create_default_key();
    let c = ctx(&[("k", "v")]);
    let opts = SealOptions { chunk_size: 32, ..SealOptions::default() };
    let sealed = seal_with(&kms, &[&key], &c, opts, &[0x42; 80]).await;
    for i in 0..sealed.len() {
        for bit in [0x01u8, 0x80] {
            let mut bad = sealed.clone();
            bad[i] ^= bit;
            assert!(open_with(&kms, &c, Engine::default(), &bad).await.is_err(), "byte {i} bit {bit:#x} accepted");
        }
    }
    // And each tampered region gets its specific error.
    let (pre, n) = Preamble::parse(&sealed).unwrap();
    let entry_blob_end = n - 64;
    let mut bad = sealed.clone();
    bad[entry_blob_end - 1] ^= 1; // last byte of the wrapped blob
    let err = open_with(&kms, &c, Engine::default(), &bad).await.unwrap_err();
    assert!(matches!(err, Error::Format(FormatError::KeyEntryTampered { index: 0 })), "{err:?}");
    let mut bad = sealed.clone();
    bad[n - 64] ^= 1; // commitment
    let err = open_with(&kms, &c, Engine::default(), &bad).await.unwrap_err();
    assert!(matches!(err, Error::Format(FormatError::CommitmentMismatch)), "{err:?}");
    let mut bad = sealed.clone();
    bad[n - 1] ^= 1; // header MAC
    let err = open_with(&kms, &c, Engine::default(), &bad).await.unwrap_err();
    assert!(matches!(err, Error::Format(FormatError::HeaderTampered)), "{err:?}");
    let mut bad = sealed.clone();
    bad[n + 48 + 5] ^= 1; // second chunk
    let err = open_with(&kms, &c, Engine::default(), &bad).await.unwrap_err();
    assert!(matches!(err, Error::Format(FormatError::ChunkTampered { index: 1 })), "{err:?}");
    assert_eq!(pre.header.chunk_size, 32);
}

#[tokio::test]
async fn kms_faults_surface_as_retryable_errors() {
    let kms = MockKms::new();
    let key = kms.create_default_key();
    kms.fail_next(1, envseal_kms_mock::Fault::Throttled);
    let rs = [Recipient { kms: &kms, key: &key }];
    let err = container::seal(&rs, &EncryptionContext::new(), &SealOptions::default(), &b"x"[..], Vec::new())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Kms(KmsError::Throttled { .. })) && err.is_retryable(), "{err:?}");
    // The next call goes through.
    assert!(
        container::seal(&rs, &EncryptionContext::new(), &SealOptions::default(), &b"x"[..], Vec::new()).await.is_ok()
    );
}

#[tokio::test]
async fn errors_never_carry_secrets() {
    let kms = MockKms::new();
    let key = kms.create_default_key();
    let marker = b"MARKER-SECRET-VALUE-123";
    let c = ctx(&[("k", "v")]);
    let sealed = seal_with(&kms, &[&key], &c, SealOptions { chunk_size: 16, ..SealOptions::default() }, marker).await;
    let mut texts = Vec::new();
    for i in 0..sealed.len() {
        let mut bad = sealed.clone();
        bad[i] ^= 0xff;
        if let Err(e) = open_with(&kms, &c, Engine::default(), &bad).await {
            texts.push(format!("{e} {e:?}"));
        }
    }
    let g = kms.generate_data_key(&key, &c).await.unwrap();
    texts.push(format!("{g:?}"));
    let hex_key = hex::encode(g.data_key.expose_secret());
    for t in &texts {
        assert!(!t.contains("MARKER"), "{t}");
        assert!(!t.to_lowercase().contains(&hex_key), "{t}");
    }
}

fn arc_kms() -> (Arc<MockKms>, String) {
    let kms = Arc::new(MockKms::new());
    let key = kms.create_default_key();
    (kms, key)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn prop_round_trip(len in 0usize..5000, chunk in 16u32..700, engine_ix in 0usize..Engine::ALL.len()) {
        let (kms, key) = arc_kms();
        let engine = Engine::ALL[engine_ix];
        let pt: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
        rt().block_on(async {
            let sealed = seal_with(&kms, &[&key], &EncryptionContext::new(), SealOptions { chunk_size: chunk, engine }, &pt).await;
            prop_assert_eq!(open_with(&kms, &EncryptionContext::new(), engine, &sealed).await.unwrap(), pt);
            Ok(())
        })?;
    }

    #[test]
    fn prop_single_byte_change_rejected(len in 0usize..600, pos in any::<prop::sample::Index>(), x in 1u8..=255) {
        let (kms, key) = arc_kms();
        let pt = vec![0x33u8; len];
        rt().block_on(async {
            let sealed = seal_with(&kms, &[&key], &EncryptionContext::new(), SealOptions { chunk_size: 64, ..SealOptions::default() }, &pt).await;
            let mut bad = sealed.clone();
            let i = pos.index(bad.len());
            bad[i] ^= x;
            prop_assert!(open_with(&kms, &EncryptionContext::new(), Engine::default(), &bad).await.is_err());
            Ok(())
        })?;
    }
}

/// Issue 12: re-keying a container gives it a new data key and salt for the same recipients;
/// the old entry (or its data key) opens nothing of the new file, which is proven to open before
/// `rekey` returns; a damaged body makes it fail.
#[tokio::test]
async fn rekey_revokes_old_entries_and_proves_the_result() {
    use envseal_core::container::Opener;
    use envseal_core::entries::Trust;
    let kms = MockKms::new();
    let a = kms.create_default_key();
    let b = kms.create_default_key();
    let c = ctx(&[("app", "x")]);
    let opts = SealOptions { chunk_size: 64, ..SealOptions::default() };
    let pt: Vec<u8> = (0..1000u32).map(|i| (i % 251) as u8).collect();
    let sealed = seal_with(&kms, &[&a, &b], &c, opts, &pt).await;
    let opener =
        Opener { kmses: &[&kms as &dyn Kms], expected: &c, trust: &Trust::Discovery, engine: Engine::default() };
    let mut out = std::io::Cursor::new(Vec::new());
    let n = envseal_core::container::rekey(&opener, &[Recipient { kms: &kms, key: &b }], &sealed[..], &mut out)
        .await
        .unwrap();
    assert_eq!(n, pt.len() as u64);
    let rekeyed = out.into_inner();
    assert_eq!(open_with(&kms, &c, Engine::default(), &rekeyed).await.unwrap(), pt);
    let (old, _) = Preamble::parse(&sealed).unwrap();
    let (new, _) = Preamble::parse(&rekeyed).unwrap();
    assert_ne!(old.header.salt, new.header.salt);
    assert_eq!((new.header.chunk_size, new.entries.len()), (64, 1));
    // The old entry for b (and a) no longer opens anything: another header, another data key.
    let mut spliced = Preamble { entries: old.entries.clone(), ..new.clone() }.encode().unwrap();
    spliced.extend_from_slice(&rekeyed[new.encode().unwrap().len()..]);
    assert!(open_with(&kms, &c, Engine::default(), &spliced).await.is_err());
    // A damaged body: nothing proven, an error.
    let mut bad = sealed.clone();
    let last = bad.len() - 3;
    bad[last] ^= 1;
    let mut out = std::io::Cursor::new(Vec::new());
    assert!(
        envseal_core::container::rekey(&opener, &[Recipient { kms: &kms, key: &b }], &bad[..], &mut out).await.is_err()
    );
}
