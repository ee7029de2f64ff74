//! Rewrap through the mock HSM (issue 7): rotation then rewrap of containers, value-level keys
//! and field envelopes; only entries change; throttling retried; outages reported per item with
//! nothing lost; objects already at the target verified without a KMS write; moves across
//! backends; verification modes; adding an entry.
//!
//! Issue 12: no entry is trusted for its label, unverifiable entries are reported and kept (or
//! dropped on request), and a property test drives random valid and invalid entries through any
//! sequence of rewrap, add and remove: every object opens afterwards, or was left untouched.

use std::sync::Arc;
use std::time::Duration;

use envseal_core::container::{self, Preamble, Recipient, SealOptions};
use envseal_core::entries::Trust;
use envseal_core::envelope::Envelope;
use envseal_core::kms::KeyManager;
use envseal_core::rewrap::{AddEntry, EntryResult, RetryPolicy, Rewrapper, Target, ValueFile, Verify};
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
    container::open(&[kms], &EncryptionContext::new(), &Trust::Discovery, Engine::default(), sealed, &mut out).await?;
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
    let out = rw.rewrap_preamble(&old).await.unwrap();
    let new = Preamble { entries: out.entries.expect("behind the latest version"), ..old.clone() };
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

/// Issue 12: an entry whose label names the target is verified (one Decrypt, commitment
/// checked), never skipped for its label alone; still no KMS write.
#[tokio::test]
async fn already_at_target_is_verified_without_kms_writes() {
    let (m, kms, key) = mock();
    let sealed = seal(kms.as_ref(), &[&key], b"data").await;
    let (p, _) = Preamble::parse(&sealed).unwrap();
    m.reset_counts();
    let rw = Rewrapper::new(kms.clone(), Target::Latest);
    for _ in 0..3 {
        let out = rw.rewrap_preamble(&p).await.unwrap();
        assert!(out.entries.is_none());
        assert_eq!(out.report[0].result, EntryResult::AtTarget);
    }
    let c = m.counts();
    assert_eq!((c.re_encrypt, c.encrypt, c.decrypt, c.generate_data_key), (0, 0, 3, 0));
    assert_eq!(c.key_management, 1, "one describe per key per job");
    assert_eq!(rw.stats().already_at_target, 3);

    // After a rotation a rewrap happens, and a second job over the result verifies it again.
    m.rotate_key(&key).await.unwrap();
    let out = Rewrapper::new(kms.clone(), Target::Latest).rewrap_preamble(&p).await.unwrap();
    let new = Preamble { entries: out.entries.unwrap(), ..p.clone() };
    m.reset_counts();
    assert!(Rewrapper::new(kms.clone(), Target::Latest).rewrap_preamble(&new).await.unwrap().entries.is_none());
    let c = m.counts();
    assert_eq!((c.re_encrypt, c.encrypt, c.generate_data_key, c.decrypt), (0, 0, 0, 1));
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
    let new = Preamble { entries: rw.rewrap_preamble(&p).await.unwrap().entries.unwrap(), ..p.clone() };
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
    let out = Rewrapper::new(kms.clone(), Target::Key(c.clone())).rewrap_preamble(&p).await.unwrap();
    assert_eq!(out.report[1].result, EntryResult::Merged);
    let new = Preamble { entries: out.entries.unwrap(), ..p.clone() };
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
    let vk = ValueKeys::derive(Engine::default(), &g.data_key, file_id, values::V2, 32).unwrap();
    let path = KeyPath::key("DB_PASSWORD");
    let sealed_value = vk.seal(&path, ValueType::Str, b"hunter2").unwrap();
    let commitment = vk.commitment_hex();
    let keys = vec![g.wrapped];
    m.rotate_key(&key).await.unwrap();

    let rw = Rewrapper::new(kms.clone(), Target::Latest).with_retry(fast_retry());
    let file =
        ValueFile { version: values::V2, context: &context, file_id: &file_id, keys: &keys, commitment: &commitment };
    let new = rw.rewrap_value_keys(&file).await.unwrap().entries.unwrap();
    assert_eq!(new[0].key_version, "2");
    // The new entry opens to the same data key: the stored value opens unchanged.
    let kctx = values::kms_context(&context, &file_id).unwrap();
    let check = file.check(Engine::default());
    let (dk, _) =
        envseal_core::entries::unwrap_verified(&[kms.as_ref()], &new, &kctx, &Trust::Discovery, &check).await.unwrap();
    let vk2 = ValueKeys::derive(Engine::default(), &dk, file_id, values::V2, 32).unwrap();
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

    // A second run: everything already at the target, verified with one Decrypt per instance,
    // no KMS write, the same bytes back.
    let new_items: Vec<_> = out.into_iter().zip(&items).map(|((i, r), (_, _, c))| (i, r.unwrap(), c.clone())).collect();
    let instances = c.re_encrypt;
    m.reset_counts();
    let rw = Rewrapper::new(kms.clone(), Target::Latest);
    let again = rw.rewrap_envelopes(new_items.clone(), 32).await;
    let c = m.counts();
    assert_eq!((c.re_encrypt, c.decrypt, c.encrypt, c.generate_data_key), (0, instances, 0, 0));
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
    assert!(rw.rewrap_preamble(&p).await.unwrap().entries.is_some());
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
    let new = Preamble { entries: rw.rewrap_preamble(&p).await.unwrap().entries.unwrap(), ..p.clone() };
    assert_eq!(new.entries[0].key_id, dkey);
    let moved = replace_preamble(&sealed, &new);
    assert_eq!(open(dst.as_ref(), &moved).await.unwrap(), b"moving");
    assert!(open(src.as_ref(), &moved).await.is_err());

    // Add an entry for the other backend: decrypt + encrypt (the data key passes through).
    let adder = Rewrapper::new(dst.clone(), Target::Latest);
    let add = AddEntry { sources: &[src.as_ref()], rewrapper: &adder, key: &dkey };
    let out = envseal_core::rewrap::add_entry_to_preamble(&add, &p).await.unwrap();
    assert!(out.moved);
    let p2 = Preamble { entries: out.entries.unwrap(), ..p.clone() };
    assert_eq!(p2.entries.len(), 2);
    let both = replace_preamble(&sealed, &p2);
    assert_eq!(open(src.as_ref(), &both).await.unwrap(), b"moving");
    assert_eq!(open(dst.as_ref(), &both).await.unwrap(), b"moving");
    // Adding it again: already there (and verified).
    let again = envseal_core::rewrap::add_entry_to_preamble(&add, &p2).await.unwrap();
    assert!(again.entries.is_none());
    assert_eq!(again.report[1].result, EntryResult::AtTarget);

    // Same backend object: server-side ReEncrypt, the data key stays in the KMS.
    let (m, kms, k1) = mock();
    let k2 = m.create_default_key();
    let sealed = seal(kms.as_ref(), &[&k1], b"same").await;
    let (p, _) = Preamble::parse(&sealed).unwrap();
    m.reset_counts();
    let adder = Rewrapper::new(kms.clone(), Target::Latest);
    let add = AddEntry { sources: &[kms.as_ref()], rewrapper: &adder, key: &k2 };
    let out = envseal_core::rewrap::add_entry_to_preamble(&add, &p).await.unwrap();
    assert!(!out.moved);
    assert_eq!(m.calls(Op::ReEncrypt), 1);
    assert_eq!(m.calls(Op::Encrypt), 0);
    assert_eq!(out.entries.unwrap()[1].key_id, k2);
}

// ---------------------------------------------------------------------------------------------
// Issue 12: entries are never trusted for their label.

/// An entry naming the key with a label at the newest version and a random blob, as a writer
/// of the file could prepend it.
fn forged(label_of: &envseal_core::WrappedKey, version: &str, seed: u8) -> envseal_core::WrappedKey {
    envseal_core::WrappedKey {
        key_version: version.into(),
        blob: (0..label_of.blob.len()).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect(),
        ..label_of.clone()
    }
}

/// An entry that really unwraps under the key and the file's own context, to another data key:
/// it fails the commitment.
async fn wrong_key_entry(kms: &dyn Kms, key: &str, p: &Preamble) -> envseal_core::WrappedKey {
    kms.generate_data_key(key, &p.kms_context()).await.unwrap().wrapped
}

fn with_entries(sealed: &[u8], p: &Preamble, entries: Vec<envseal_core::WrappedKey>) -> Vec<u8> {
    replace_preamble(sealed, &Preamble { entries, ..p.clone() })
}

#[tokio::test]
async fn issue12_forged_label_at_target_is_verified_not_trusted() {
    let (m, kms, key) = mock();
    let sealed = seal(kms.as_ref(), &[&key], b"precious").await;
    m.rotate_key(&key).await.unwrap();
    let (p, _) = Preamble::parse(&sealed).unwrap();
    let good = p.entries[0].clone();
    let file = with_entries(&sealed, &p, vec![forged(&good, "2", 1), good.clone()]);
    assert_eq!(open(kms.as_ref(), &file).await.unwrap(), b"precious");
    let (fp, _) = Preamble::parse(&file).unwrap();

    let out = Rewrapper::new(kms.clone(), Target::Latest).rewrap_preamble(&fp).await.unwrap();
    let entries = out.entries.clone().unwrap();
    assert!(matches!(out.report[0].result, EntryResult::Unverifiable { dropped: false, .. }), "{:?}", out.report);
    assert!(matches!(out.report[1].result, EntryResult::Rewrapped { .. }));
    assert_eq!(entries.len(), 2, "the unverifiable entry is kept, not merged away");
    assert_eq!(open(kms.as_ref(), &with_entries(&file, &fp, entries)).await.unwrap(), b"precious");

    let out =
        Rewrapper::new(kms.clone(), Target::Latest).with_drop_unverifiable(true).rewrap_preamble(&fp).await.unwrap();
    let entries = out.entries.unwrap();
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].key_version, "2");
    assert_eq!(open(kms.as_ref(), &with_entries(&file, &fp, entries)).await.unwrap(), b"precious");

    // Only forged entries: nothing verifies, the job fails and returns nothing to write.
    let only = with_entries(&sealed, &p, vec![forged(&good, "2", 2), forged(&good, "1", 3)]);
    let (op, _) = Preamble::parse(&only).unwrap();
    assert!(Rewrapper::new(kms.clone(), Target::Latest).rewrap_preamble(&op).await.is_err());
    assert!(
        Rewrapper::new(kms.clone(), Target::Latest).with_drop_unverifiable(true).rewrap_preamble(&op).await.is_err()
    );
}

#[tokio::test]
async fn issue12_an_entry_failing_the_commitment_does_not_block_the_next() {
    let (m, kms, key) = mock();
    let sealed = seal(kms.as_ref(), &[&key], b"precious").await;
    let (p, _) = Preamble::parse(&sealed).unwrap();
    let bad = wrong_key_entry(kms.as_ref(), &key, &p).await;
    let file = with_entries(&sealed, &p, vec![bad.clone(), p.entries[0].clone()]);
    assert_eq!(open(kms.as_ref(), &file).await.unwrap(), b"precious");
    let (fp, _) = Preamble::parse(&file).unwrap();

    // A rotation job: the bad entry re-encrypts fine but not to this file's data key.
    m.rotate_key(&key).await.unwrap();
    let out = Rewrapper::new(kms.clone(), Target::Latest).rewrap_preamble(&fp).await.unwrap();
    assert!(matches!(&out.report[0].result, EntryResult::Unverifiable { reason, .. } if reason.contains("commitment")));
    let entries = out.entries.unwrap();
    assert_eq!(open(kms.as_ref(), &with_entries(&file, &fp, entries)).await.unwrap(), b"precious");

    // Removing the good entry would leave only the bad one: refused. Removing the bad one works.
    let good_blob = p.entries[0].blob.clone();
    let remove_good = move |e: &envseal_core::WrappedKey| e.blob == good_blob;
    let spec = envseal_core::rewrap::RemoveEntries {
        sources: &[kms.as_ref()],
        trust: &Trust::Discovery,
        engine: Engine::default(),
        matches: &remove_good,
    };
    assert!(envseal_core::rewrap::remove_entries_from_preamble(&spec, &fp).await.is_err());
    let bad_blob = bad.blob.clone();
    let remove_bad = move |e: &envseal_core::WrappedKey| e.blob == bad_blob;
    let spec = envseal_core::rewrap::RemoveEntries { matches: &remove_bad, ..spec };
    let out = envseal_core::rewrap::remove_entries_from_preamble(&spec, &fp).await.unwrap();
    let entries = out.entries.unwrap();
    assert_eq!(entries, vec![p.entries[0].clone()]);
}

#[tokio::test]
async fn issue12_add_does_not_trust_a_label() {
    let (m, kms, k1) = mock();
    let k2 = m.create_default_key();
    let sealed = seal(kms.as_ref(), &[&k1], b"precious").await;
    let (p, _) = Preamble::parse(&sealed).unwrap();
    // A forged entry claiming k2: add k2 must still add a real one.
    let claim = envseal_core::WrappedKey { key_id: k2.clone(), ..forged(&p.entries[0], "1", 9) };
    let file = with_entries(&sealed, &p, vec![claim, p.entries[0].clone()]);
    let (fp, _) = Preamble::parse(&file).unwrap();
    let adder = Rewrapper::new(kms.clone(), Target::Latest);
    let add = AddEntry { sources: &[kms.as_ref()], rewrapper: &adder, key: &k2 };
    let out = envseal_core::rewrap::add_entry_to_preamble(&add, &fp).await.unwrap();
    assert!(matches!(out.report[0].result, EntryResult::Unverifiable { .. }));
    let entries = out.entries.unwrap();
    assert_eq!(entries.len(), 3);
    // The added entry alone opens the file.
    let added = with_entries(&file, &fp, vec![entries[2].clone()]);
    m.disable_key(&k1).await.unwrap();
    assert_eq!(open(kms.as_ref(), &added).await.unwrap(), b"precious");
}

mod invariant {
    //! The rewrap invariant under random entries and operations: after every operation the
    //! object opens, or the operation failed and the object is unchanged.

    use super::*;
    use proptest::prelude::*;

    #[derive(Clone, Debug)]
    enum Kind {
        Good,
        ForgedLabel(u8),
        WrongDataKey,
    }

    #[derive(Clone, Debug)]
    enum Step {
        Rotate(usize),
        Latest { drop: bool },
        To { key: usize, drop: bool },
        Add(usize),
        Remove(usize),
    }

    fn kind() -> impl Strategy<Value = Kind> {
        prop_oneof![Just(Kind::Good), (0u8..3).prop_map(Kind::ForgedLabel), Just(Kind::WrongDataKey)]
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            (0usize..3).prop_map(Step::Rotate),
            any::<bool>().prop_map(|drop| Step::Latest { drop }),
            (0usize..3, any::<bool>()).prop_map(|(key, drop)| Step::To { key, drop }),
            (0usize..3).prop_map(Step::Add),
            (0usize..4).prop_map(Step::Remove),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]
        #[test]
        fn every_rewrap_sequence_leaves_an_openable_object(
            extra in proptest::collection::vec((kind(), 0usize..3, any::<bool>()), 0..4),
            steps in proptest::collection::vec(step(), 1..6),
        ) {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async {
                let (m, kms, k0) = mock();
                let keys = [k0.clone(), m.create_default_key(), m.create_default_key()];
                let sealed = seal(kms.as_ref(), &[&keys[0]], b"payload").await;
                let (p, _) = Preamble::parse(&sealed).unwrap();
                let mut entries = p.entries.clone();
                for (k, key, front) in &extra {
                    let e = match k {
                        Kind::Good => continue,
                        Kind::ForgedLabel(v) => envseal_core::WrappedKey {
                            key_id: keys[*key].clone(),
                            ..forged(&p.entries[0], &(v + 1).to_string(), *v)
                        },
                        Kind::WrongDataKey => wrong_key_entry(kms.as_ref(), &keys[*key], &p).await,
                    };
                    if *front { entries.insert(0, e) } else { entries.push(e) }
                }
                let mut file = with_entries(&sealed, &p, entries);
                for s in &steps {
                    let (cur, _) = Preamble::parse(&file).unwrap();
                    let result = match s {
                        Step::Rotate(k) => {
                            m.rotate_key(&keys[*k]).await.unwrap();
                            continue;
                        }
                        Step::Latest { drop } => Rewrapper::new(kms.clone(), Target::Latest)
                            .with_drop_unverifiable(*drop)
                            .rewrap_preamble(&cur)
                            .await,
                        Step::To { key, drop } => Rewrapper::new(kms.clone(), Target::Key(keys[*key].clone()))
                            .with_drop_unverifiable(*drop)
                            .rewrap_preamble(&cur)
                            .await,
                        Step::Add(k) => {
                            let adder = Rewrapper::new(kms.clone(), Target::Latest);
                            let add = AddEntry { sources: &[kms.as_ref()], rewrapper: &adder, key: &keys[*k] };
                            envseal_core::rewrap::add_entry_to_preamble(&add, &cur).await
                        }
                        Step::Remove(i) => {
                            let Some(victim) = cur.entries.get(*i).cloned() else { continue };
                            let matches = move |e: &envseal_core::WrappedKey| *e == victim;
                            let spec = envseal_core::rewrap::RemoveEntries {
                                sources: &[kms.as_ref()],
                                trust: &Trust::Discovery,
                                engine: Engine::default(),
                                matches: &matches,
                            };
                            envseal_core::rewrap::remove_entries_from_preamble(&spec, &cur).await
                        }
                    };
                    // Whatever the result, what a caller would write must open.
                    if let Ok(out) = result && let Some(new) = out.entries {
                        file = with_entries(&file, &cur, new);
                    }
                    prop_assert_eq!(open(kms.as_ref(), &file).await.unwrap(), b"payload".to_vec(), "after {:?}", s);
                }
                Ok(())
            })?;
        }
    }
}
