//! Rewrap through the mock HSM (issue 7): rotation then rewrap of containers, value-level keys
//! and field envelopes; only entries change; throttling retried; outages reported per item with
//! nothing lost; objects already at the target skipped without a KMS write; moves across
//! backends; verification modes; adding an entry.

use std::sync::Arc;
use std::time::Duration;

use envseal_core::container::{self, Preamble, Recipient, SealOptions};
use envseal_core::envelope::Envelope;
use envseal_core::kms::KeyManager;
use envseal_core::rewrap::{AddEntry, RetryPolicy, Rewrapper, Target, ValueFile, Verify};
use envseal_core::values::{self, KeyPath, ValueKeys, ValueType};
use envseal_core::{CachePolicy, EncryptionContext, Engine, Error, FormatError, Kms, KmsError, Sealer};
use envseal_kms_mock::{Fault, MockKms, Op};

fn ctx(p: &[(&str, &str)]) -> EncryptionContext {
    EncryptionContext::from_pairs(p.iter().copied()).unwrap()
}

/// Fast retries for tests: 8 attempts, 1 ms first cap, 10 ms largest.
fn fast_retry() -> RetryPolicy {
    RetryPolicy::new(8, Duration::from_millis(1), Duration::from_millis(10))
}

fn mock() -> (Arc<MockKms>, Arc<dyn Kms>, String) {
    let m = Arc::new(MockKms::new());
    let key = m.create_default_key();
    let k: Arc<dyn Kms> = m.clone();
    (m, k, key)
}

async fn seal(kms: &dyn Kms, keys: &[&str], pt: &[u8]) -> Vec<u8> {
    let rs: Vec<Recipient<'_>> = keys.iter().map(|k| Recipient { kms, key: k }).collect();
    let opts = SealOptions { chunk_size: 1024, ..SealOptions::default() };
    let mut out = Vec::new();
    container::seal(&rs, &ctx(&[("app", "billing")]), &opts, pt, &mut out).await.unwrap();
    out
}

async fn open(kms: &dyn Kms, sealed: &[u8]) -> Result<Vec<u8>, Error> {
    let mut out = Vec::new();
    container::open(&[kms], &EncryptionContext::new(), Engine::default(), sealed, &mut out).await?;
    Ok(out)
}

/// The new file: new preamble, old body (what the CLI writes).
fn replace_preamble(sealed: &[u8], new: &Preamble) -> Vec<u8> {
    let (_, n) = Preamble::parse(sealed).unwrap();
    let mut out = new.encode().unwrap();
    out.extend_from_slice(&sealed[n..]);
    out
}

#[tokio::test]
async fn container_rotate_then_rewrap_only_entries_change() {
    let (m, kms, key) = mock();
    let pt: Vec<u8> = (0..5000u32).map(|i| (i * 31) as u8).collect();
    let sealed = seal(kms.as_ref(), &[&key], &pt).await;
    m.rotate_key(&key).await.unwrap();

    let rw = Rewrapper::new(kms.clone(), Target::Latest).with_retry(fast_retry());
    let (old, n) = Preamble::parse(&sealed).unwrap();
    let new = rw.rewrap_preamble(&old).await.unwrap().expect("behind the latest version");
    assert_eq!(old.entries[0].key_version, "1");
    assert_eq!(new.entries[0].key_version, "2");
    assert_eq!(new.entries[0].key_id, old.entries[0].key_id);
    assert_ne!(new.entries[0].blob, old.entries[0].blob);
    assert_eq!(
        (new.header.clone(), new.commitment, new.header_mac),
        (old.header.clone(), old.commitment, old.header_mac)
    );

    let rewrapped = replace_preamble(&sealed, &new);
    let (_, n2) = Preamble::parse(&rewrapped).unwrap();
    assert_eq!(&rewrapped[n2..], &sealed[n..], "body byte-identical");
    assert_eq!(open(kms.as_ref(), &rewrapped).await.unwrap(), pt);
    assert_eq!(open(kms.as_ref(), &sealed).await.unwrap(), pt, "the old file still opens");

    // The old version can now be retired; the rewrapped file still opens, the old one not.
    m.set_min_decryption_version(&key, "2").await.unwrap();
    assert_eq!(open(kms.as_ref(), &rewrapped).await.unwrap(), pt);
    assert!(matches!(open(kms.as_ref(), &sealed).await, Err(Error::Kms(KmsError::KeyVersionBelowMinimum { .. }))));

    let s = rw.stats();
    assert_eq!((s.rewrapped, s.already_at_target, s.failed), (1, 0, 0));
}

#[tokio::test]
async fn already_at_target_is_skipped_without_kms_writes() {
    let (m, kms, key) = mock();
    let sealed = seal(kms.as_ref(), &[&key], b"data").await;
    let (p, _) = Preamble::parse(&sealed).unwrap();
    m.reset_counts();
    let rw = Rewrapper::new(kms.clone(), Target::Latest);
    for _ in 0..3 {
        assert!(rw.rewrap_preamble(&p).await.unwrap().is_none());
    }
    let c = m.counts();
    assert_eq!((c.re_encrypt, c.encrypt, c.decrypt, c.generate_data_key), (0, 0, 0, 0));
    assert_eq!(c.key_management, 1, "one describe per key per job");
    assert_eq!(rw.stats().already_at_target, 3);

    // After a rotation a rewrap happens, and a second job over the result skips it again.
    m.rotate_key(&key).await.unwrap();
    let new = Rewrapper::new(kms.clone(), Target::Latest).rewrap_preamble(&p).await.unwrap().unwrap();
    m.reset_counts();
    assert!(Rewrapper::new(kms.clone(), Target::Latest).rewrap_preamble(&new).await.unwrap().is_none());
    let c = m.counts();
    assert_eq!(c.total() - c.key_management, 0);
}

#[tokio::test]
async fn to_another_key_and_structure_mode_for_reencrypt_only_principals() {
    let (m, kms, key) = mock();
    let other = m.create_default_key();
    m.create_alias("alias/next", &other).await.unwrap();
    let sealed = seal(kms.as_ref(), &[&key], b"secret body").await;
    let (p, _) = Preamble::parse(&sealed).unwrap();

    // A principal that may not decrypt: Verify::Decrypt fails (nothing replaced), Structure works.
    m.deny(Op::Decrypt);
    let rw = Rewrapper::new(kms.clone(), Target::Key("alias/next".into()));
    assert!(matches!(rw.rewrap_preamble(&p).await, Err(Error::Kms(KmsError::AccessDenied { .. }))));
    let rw = rw.with_verify(Verify::Structure);
    let new = rw.rewrap_preamble(&p).await.unwrap().unwrap();
    m.allow(Op::Decrypt);
    assert_eq!(new.entries.len(), 1);
    assert_eq!(new.entries[0].key_id, other, "canonical id, not the alias");
    assert_eq!(open(kms.as_ref(), &replace_preamble(&sealed, &new)).await.unwrap(), b"secret body");
}

#[tokio::test]
async fn two_entries_to_one_key_merge() {
    let (m, kms, a) = mock();
    let b = m.create_default_key();
    let c = m.create_default_key();
    let sealed = seal(kms.as_ref(), &[&a, &b], b"x").await;
    let (p, _) = Preamble::parse(&sealed).unwrap();
    let new = Rewrapper::new(kms.clone(), Target::Key(c.clone())).rewrap_preamble(&p).await.unwrap().unwrap();
    assert_eq!(new.entries.len(), 1);
    assert_eq!(new.entries[0].key_id, c);
    assert_eq!(open(kms.as_ref(), &replace_preamble(&sealed, &new)).await.unwrap(), b"x");
}

#[tokio::test]
async fn tampered_commitment_is_caught_before_replacing() {
    let (m, kms, key) = mock();
    let sealed = seal(kms.as_ref(), &[&key], b"x").await;
    let (mut p, _) = Preamble::parse(&sealed).unwrap();
    p.commitment[0] ^= 1;
    m.rotate_key(&key).await.unwrap();
    let r = Rewrapper::new(kms.clone(), Target::Latest).rewrap_preamble(&p).await;
    assert!(matches!(r, Err(Error::Format(FormatError::CommitmentMismatch))), "{r:?}");
}

#[tokio::test]
async fn value_level_keys() {
    let (m, kms, key) = mock();
    let context = ctx(&[("env", "prod")]);
    let file_id = [7u8; values::FILE_ID_LEN];
    let g = kms.generate_data_key(&key, &values::kms_context(&context, &file_id).unwrap()).await.unwrap();
    let vk = ValueKeys::derive(Engine::default(), &g.data_key, file_id);
    let path = KeyPath::key("DB_PASSWORD");
    let sealed_value = vk.seal(&path, ValueType::Str, b"hunter2").unwrap();
    let commitment = vk.commitment_hex();
    let keys = vec![g.wrapped];
    m.rotate_key(&key).await.unwrap();

    let rw = Rewrapper::new(kms.clone(), Target::Latest).with_retry(fast_retry());
    let file = ValueFile { context: &context, file_id: &file_id, keys: &keys, commitment: &commitment };
    let new = rw.rewrap_value_keys(&file).await.unwrap().unwrap();
    assert_eq!(new[0].key_version, "2");
    // The new entry opens to the same data key: the stored value opens unchanged.
    let kctx = values::kms_context(&context, &file_id).unwrap();
    let (dk, _) = envseal_core::kms::unwrap_any(&[kms.as_ref()], &new, &kctx).await.unwrap();
    let vk2 = ValueKeys::derive(Engine::default(), &dk, file_id);
    vk2.check_commitment(&commitment).unwrap();
    assert_eq!(vk2.open(&path, &sealed_value).unwrap().1.expose_secret(), b"hunter2");
    // Wrong commitment: refused.
    let bad = "0".repeat(64);
    let file = ValueFile { commitment: &bad, ..file };
    let rw = Rewrapper::new(kms.clone(), Target::Latest);
    assert!(matches!(rw.rewrap_value_keys(&file).await, Err(Error::Format(FormatError::CommitmentMismatch))));
}

async fn column(kms: Arc<dyn Kms>, key: &str, n: usize) -> Vec<(usize, Vec<u8>, EncryptionContext)> {
    let sealer = Sealer::new(kms, key).with_cache(CachePolicy { max_messages: 64, ..CachePolicy::default() });
    let mut out = Vec::new();
    for i in 0..n {
        let c = ctx(&[("table", "users"), ("column", if i % 2 == 0 { "ssn" } else { "email" })]);
        out.push((i, sealer.seal(format!("value-{i}").as_bytes(), &c).await.unwrap(), c));
    }
    out
}

#[tokio::test]
async fn field_envelopes_batch_rotate_rewrap_open() {
    let (m, kms, key) = mock();
    let items = column(kms.clone(), &key, 500).await;
    m.rotate_key(&key).await.unwrap();
    m.reset_counts();
    let rw = Rewrapper::new(kms.clone(), Target::Latest).with_retry(fast_retry());
    let mut out = rw.rewrap_envelopes(items.clone(), 16).await;
    out.sort_by_key(|(i, _)| *i);
    assert_eq!(out.len(), 500);
    // 500 values under a 64-message cache: ~8 instances per context, one ReEncrypt (and one
    // verifying Decrypt) each, shared by the envelopes of the instance.
    let c = m.counts();
    assert!(c.re_encrypt <= 20 && c.re_encrypt >= 8, "{c:?}");
    assert_eq!(rw.stats().shared, 500 - c.re_encrypt);
    let opener = Sealer::new(kms.clone(), &key);
    for ((i, r), (_, old, c)) in out.iter().zip(&items) {
        let new = r.as_ref().unwrap();
        let (pn, po) = (Envelope::parse(new).unwrap(), Envelope::parse(old).unwrap());
        assert_eq!(pn.entry().unwrap().key_version, "2");
        assert_eq!(po.entry().unwrap().key_version, "1");
        // Only the entry differs: putting the old entry back gives the old bytes.
        assert_eq!(&pn.with_entry(&po.entry().unwrap()).unwrap(), old);
        assert_eq!(opener.open(new, c).await.unwrap().expose_secret(), format!("value-{i}").as_bytes());
    }

    // A second run: everything already at the target, no KMS write, the same bytes back.
    let new_items: Vec<_> = out.into_iter().zip(&items).map(|((i, r), (_, _, c))| (i, r.unwrap(), c.clone())).collect();
    m.reset_counts();
    let rw = Rewrapper::new(kms.clone(), Target::Latest);
    let again = rw.rewrap_envelopes(new_items.clone(), 32).await;
    let c = m.counts();
    assert_eq!((c.re_encrypt, c.decrypt, c.encrypt, c.generate_data_key), (0, 0, 0, 0));
    for (i, r) in again {
        assert_eq!(r.unwrap(), new_items[i].1);
    }
}

#[tokio::test]
async fn throttling_is_retried_and_succeeds() {
    let (m, kms, key) = mock();
    let items = column(kms.clone(), &key, 40).await;
    m.rotate_key(&key).await.unwrap();
    // Throttle the next 5 calls of every kind (describe, ReEncrypt, Decrypt).
    m.fail_next(5, Fault::Throttled);
    let rw = Rewrapper::new(kms.clone(), Target::Latest).with_retry(fast_retry());
    let out = rw.rewrap_envelopes(items, 8).await;
    assert!(out.iter().all(|(_, r)| r.is_ok()), "{:?}", out.iter().find(|(_, r)| r.is_err()));
    assert_eq!(rw.stats().retries, 5);

    // Single objects too, with an injected outage that ends.
    let sealed = seal(kms.as_ref(), &[&key], b"x").await;
    m.rotate_key(&key).await.unwrap();
    m.fail_next_op(Op::ReEncrypt, 3, Fault::Unavailable);
    let (p, _) = Preamble::parse(&sealed).unwrap();
    let rw = Rewrapper::new(kms.clone(), Target::Latest).with_retry(fast_retry());
    assert!(rw.rewrap_preamble(&p).await.unwrap().is_some());
    assert_eq!(rw.stats().retries, 3);
}

#[tokio::test]
async fn outage_gives_per_item_errors_and_loses_nothing() {
    let (m, kms, key) = mock();
    // No cache: every envelope its own data-key instance.
    let sealer = Sealer::new(kms.clone(), &key);
    let c = ctx(&[("t", "x")]);
    let mut items = Vec::new();
    for i in 0..30 {
        items.push((i, sealer.seal(b"v", &c).await.unwrap(), c.clone()));
    }
    m.rotate_key(&key).await.unwrap();
    m.set_outage(Some(Fault::Unavailable));
    let rw = Rewrapper::new(kms.clone(), Target::Latest).with_retry(RetryPolicy::new(
        3,
        Duration::from_millis(1),
        Duration::from_millis(2),
    ));
    let out = rw.rewrap_envelopes(items.clone(), 8).await;
    assert_eq!(out.len(), 30, "one result per item");
    assert!(out.iter().all(|(_, r)| matches!(r, Err(e) if e.is_retryable())));
    assert_eq!(rw.stats().failed, 30);
    // The outage ends: the same items rewrap.
    m.set_outage(None);
    let rw = Rewrapper::new(kms.clone(), Target::Latest).with_retry(fast_retry());
    let out = rw.rewrap_envelopes(items, 8).await;
    assert!(out.iter().all(|(_, r)| r.is_ok()));
    assert_eq!(rw.stats().rewrapped, 30);
}

#[tokio::test]
async fn tokio_sleep_can_replace_the_thread_sleep() {
    let (m, kms, key) = mock();
    let items = column(kms.clone(), &key, 10).await;
    m.rotate_key(&key).await.unwrap();
    m.fail_next(2, Fault::Throttled);
    let retry = fast_retry().with_sleep(Arc::new(|d| Box::pin(tokio::time::sleep(d))));
    let rw = Rewrapper::new(kms.clone(), Target::Latest).with_retry(retry);
    assert!(rw.rewrap_envelopes(items, 4).await.into_iter().all(|(_, r)| r.is_ok()));
}

#[tokio::test]
async fn move_across_backends_and_add_entry() {
    let (_, src, key) = mock();
    let (_, dst, dkey) = mock();
    let sealed = seal(src.as_ref(), &[&key], b"moving").await;
    let (p, _) = Preamble::parse(&sealed).unwrap();

    // Latest makes no sense across backends.
    let rw = Rewrapper::new(src.clone(), Target::Latest).with_destination(dst.clone());
    assert!(rw.rewrap_preamble(&p).await.is_err());

    let rw = Rewrapper::new(src.clone(), Target::Key(dkey.clone())).with_destination(dst.clone());
    assert!(rw.moves_data_key());
    let new = rw.rewrap_preamble(&p).await.unwrap().unwrap();
    assert_eq!(new.entries[0].key_id, dkey);
    let moved = replace_preamble(&sealed, &new);
    assert_eq!(open(dst.as_ref(), &moved).await.unwrap(), b"moving");
    assert!(open(src.as_ref(), &moved).await.is_err());

    // Add an entry for the other backend: decrypt + encrypt (the data key passes through).
    let adder = Rewrapper::new(dst.clone(), Target::Latest);
    let add = AddEntry { sources: &[src.as_ref()], rewrapper: &adder, key: &dkey };
    let (p2, through) = envseal_core::rewrap::add_entry_to_preamble(&add, &p).await.unwrap();
    assert!(through);
    assert_eq!(p2.entries.len(), 2);
    let both = replace_preamble(&sealed, &p2);
    assert_eq!(open(src.as_ref(), &both).await.unwrap(), b"moving");
    assert_eq!(open(dst.as_ref(), &both).await.unwrap(), b"moving");
    // Adding it again: already there.
    assert!(matches!(
        envseal_core::rewrap::add_entry_to_preamble(&add, &p2).await,
        Err(Error::Kms(KmsError::AlreadyExists { .. }))
    ));

    // Same backend object: server-side ReEncrypt, the data key stays in the KMS.
    let (m, kms, k1) = mock();
    let k2 = m.create_default_key();
    let sealed = seal(kms.as_ref(), &[&k1], b"same").await;
    let (p, _) = Preamble::parse(&sealed).unwrap();
    m.reset_counts();
    let adder = Rewrapper::new(kms.clone(), Target::Latest);
    let add = AddEntry { sources: &[kms.as_ref()], rewrapper: &adder, key: &k2 };
    let (p3, through) = envseal_core::rewrap::add_entry_to_preamble(&add, &p).await.unwrap();
    assert!(!through);
    assert_eq!(m.calls(Op::ReEncrypt), 1);
    assert_eq!(m.calls(Op::Encrypt), 0);
    assert_eq!(p3.entries[1].key_id, k2);
}
