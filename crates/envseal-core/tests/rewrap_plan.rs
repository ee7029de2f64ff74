//! The backend planning of a rewrap job (`rewrap::plan`, issue 13): which rewrapper handles
//! which entries of an object with entries of several backends, through the mock HSM: each
//! backend's own entries to their latest version, a key on a backend the object already uses
//! (server-side), a move to another backend (the data key passes through), the per-job cache of
//! rewrappers and backends, and resolver errors.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use envseal_core::container::{self, Preamble, Recipient, SealOptions};
use envseal_core::entries::Trust;
use envseal_core::kms::{Decrypted, GeneratedDataKey, KeyManager};
use envseal_core::rewrap::plan::{KmsSet, Planner, Resolver};
use envseal_core::rewrap::{EntryResult, RetryPolicy, Target, ValueFile};
use envseal_core::values::{self, KeyPath, ValueKeys, ValueType};
use envseal_core::{EncryptionContext, Engine, Error, Kms, KmsError, WrappedKey};
use envseal_kms_mock::{Fault, MockKms, Op};

/// A mock HSM under another backend name, so that one object can carry entries of two
/// backends.
#[derive(Debug)]
struct Named {
    inner: Arc<MockKms>,
    name: &'static str,
}

impl Named {
    fn rename(&self, w: WrappedKey) -> WrappedKey {
        WrappedKey { backend: self.name.to_string(), ..w }
    }
}

#[async_trait]
impl Kms for Named {
    fn backend(&self) -> &str {
        self.name
    }

    async fn generate_data_key(&self, key: &str, context: &EncryptionContext) -> Result<GeneratedDataKey, KmsError> {
        let g = self.inner.generate_data_key(key, context).await?;
        Ok(GeneratedDataKey { data_key: g.data_key, wrapped: self.rename(g.wrapped) })
    }

    async fn decrypt(&self, wrapped: &WrappedKey, context: &EncryptionContext) -> Result<Decrypted, KmsError> {
        self.inner.decrypt(wrapped, context).await
    }

    async fn encrypt(&self, key: &str, plaintext: &[u8], context: &EncryptionContext) -> Result<WrappedKey, KmsError> {
        Ok(self.rename(self.inner.encrypt(key, plaintext, context).await?))
    }

    async fn re_encrypt(
        &self,
        wrapped: &WrappedKey,
        source_context: &EncryptionContext,
        destination_key: &str,
        destination_context: &EncryptionContext,
    ) -> Result<WrappedKey, KmsError> {
        let w = self.inner.re_encrypt(wrapped, source_context, destination_key, destination_context).await?;
        Ok(self.rename(w))
    }

    fn key_manager(&self) -> Option<&dyn KeyManager> {
        Some(self.inner.as_ref())
    }
}

/// A backend named `name` with one key.
fn backend(name: &'static str) -> (Arc<MockKms>, Arc<dyn Kms>, String) {
    let m = Arc::new(MockKms::new());
    let key = m.create_default_key();
    (m.clone(), Arc::new(Named { inner: m, name }), key)
}

fn ctx() -> EncryptionContext {
    EncryptionContext::from_pairs([("app", "billing")]).unwrap()
}

fn fast_retry() -> RetryPolicy {
    RetryPolicy::new(3, Duration::from_millis(1), Duration::from_millis(5))
}

/// A container with one entry per (backend, key), in that order.
async fn seal(recipients: &[(&Arc<dyn Kms>, &str)], pt: &[u8]) -> Preamble {
    let rs: Vec<Recipient<'_>> = recipients.iter().map(|(k, key)| Recipient { kms: k.as_ref(), key }).collect();
    let mut out = Vec::new();
    container::seal(&rs, &ctx(), &SealOptions::default(), pt, &mut out).await.unwrap();
    Preamble::parse(&out).unwrap().0
}

/// Whether `kms` opens the container's data key through the new entries (unwrap and commitment).
async fn opens(kms: &Arc<dyn Kms>, p: &Preamble) -> bool {
    let check = p.check(Engine::default());
    envseal_core::entries::unwrap_verified(&[kms.as_ref()], &p.entries, &p.kms_context(), &Trust::Discovery, &check)
        .await
        .is_ok()
}

/// A resolver that counts how often each backend is asked for.
struct Counting {
    set: KmsSet,
    sources: AtomicUsize,
    destinations: AtomicUsize,
    asked: Mutex<Vec<String>>,
}

impl Counting {
    fn new(set: KmsSet) -> Self {
        Self { set, sources: AtomicUsize::new(0), destinations: AtomicUsize::new(0), asked: Mutex::new(Vec::new()) }
    }
}

impl Resolver for Counting {
    type Error = Error;

    fn source(&self, backend: &str) -> Result<Arc<dyn Kms>, Error> {
        self.sources.fetch_add(1, Ordering::SeqCst);
        self.asked.lock().unwrap().push(backend.to_string());
        self.set.source(backend)
    }

    fn destination(&self) -> Result<Arc<dyn Kms>, Error> {
        self.destinations.fetch_add(1, Ordering::SeqCst);
        self.set.destination()
    }
}

#[tokio::test]
async fn latest_rewraps_each_backend_on_its_own() {
    let (ma, a, ka) = backend("alpha");
    let (mb, b, kb) = backend("beta");
    let p = seal(&[(&a, &ka), (&b, &kb)], b"two backends").await;
    ma.rotate_key(&ka).await.unwrap();
    mb.rotate_key(&kb).await.unwrap();
    ma.reset_counts();
    mb.reset_counts();

    let planner = Planner::new(KmsSet::new([a.clone(), b.clone()])).with_setup(|rw| rw.with_retry(fast_retry()));
    let plan = planner.plan(&Target::Latest, &p.entries).unwrap();
    assert_eq!(plan.len(), 2, "one rewrapper per backend");
    assert_eq!((plan[0].source().backend(), plan[1].source().backend()), ("alpha", "beta"));
    assert!(plan.iter().all(|rw| !rw.moves_data_key()));

    let out = planner.rewrap_preamble(&Target::Latest, &p).await.unwrap();
    assert!(!out.moved);
    let new = Preamble { entries: out.entries.expect("both behind"), ..p.clone() };
    let labels: Vec<_> = new.entries.iter().map(|e| (e.backend.as_str(), e.key_version.as_str())).collect();
    assert_eq!(labels, [("alpha", "2"), ("beta", "2")]);
    assert!(opens(&a, &new).await && opens(&b, &new).await);
    // Each step reports only the entries of its backend.
    assert_eq!(out.report.len(), 2);
    assert!(out.report.iter().all(|r| matches!(r.result, EntryResult::Rewrapped { .. })));
    // Server-side only: the data key never came out of either KMS for the rewrap.
    for m in [&ma, &mb] {
        assert_eq!((m.calls(Op::ReEncrypt), m.calls(Op::Encrypt)), (1, 0));
    }

    // At the target now: nothing changes, both verified.
    let again = planner.rewrap_preamble(&Target::Latest, &new).await.unwrap();
    assert!(again.entries.is_none());
    assert!(again.report.iter().all(|r| r.result == EntryResult::AtTarget));
}

#[tokio::test]
async fn key_on_a_backend_the_object_uses_stays_on_it() {
    let (ma, a, ka) = backend("alpha");
    let (mb, b, kb) = backend("beta");
    let kb2 = mb.create_default_key();
    let p = seal(&[(&a, &ka), (&b, &kb)], b"to another key").await;
    ma.reset_counts();
    mb.reset_counts();

    let planner = Planner::new(KmsSet::new([a.clone()]).with_destination(b.clone()));
    let target = Target::Key(kb2.clone());
    let plan = planner.plan(&target, &p.entries).unwrap();
    assert_eq!(plan.len(), 1);
    assert!(Arc::ptr_eq(plan[0].source(), &b) && !plan[0].moves_data_key());

    let out = planner.rewrap_preamble(&target, &p).await.unwrap();
    assert!(!out.moved);
    let new = Preamble { entries: out.entries.unwrap(), ..p.clone() };
    assert_eq!(new.entries[0], p.entries[0], "the other backend's entry is left alone");
    assert_eq!(new.entries[1].key_id, kb2);
    assert!(opens(&b, &new).await && opens(&a, &new).await);
    assert_eq!(mb.calls(Op::Encrypt), 0, "ReEncrypt on the destination");
    assert_eq!(ma.counts().re_encrypt + ma.counts().encrypt, 0);
}

#[tokio::test]
async fn key_on_another_backend_moves_from_the_first_entry() {
    let (_, a, ka) = backend("alpha");
    let (_, b, kb) = backend("beta");
    let (_, c, kc) = backend("gamma");
    let p = seal(&[(&a, &ka), (&b, &kb)], b"moving").await;

    let set = KmsSet::new([a.clone(), b.clone()]).with_destination(c.clone());
    let planner = Planner::new(Counting::new(set));
    let target = Target::Key(kc.clone());
    let plan = planner.plan(&target, &p.entries).unwrap();
    assert_eq!(plan.len(), 1);
    assert!(Arc::ptr_eq(plan[0].source(), &a), "moved from the backend of the first entry");
    assert!(Arc::ptr_eq(plan[0].destination(), &c) && plan[0].moves_data_key());

    let out = planner.rewrap_preamble(&target, &p).await.unwrap();
    assert!(out.moved, "the data key passed through this process");
    let new = Preamble { entries: out.entries.unwrap(), ..p.clone() };
    assert!(opens(&c, &new).await);
    assert_eq!(new.entries.iter().filter(|e| e.backend == "gamma").count(), 1);

    // One rewrapper for the job: the same instance for every object, the source asked once.
    let p2 = seal(&[(&a, &ka)], b"another file").await;
    for _ in 0..3 {
        let again = planner.plan(&target, &p2.entries).unwrap();
        assert!(Arc::ptr_eq(&again[0], &plan[0]));
    }
    let r = planner.backends();
    assert_eq!(*r.asked.lock().unwrap(), ["alpha"]);
    assert_eq!(r.sources.load(Ordering::SeqCst), 1);

    // The other target, `Latest`, has rewrappers of its own.
    let latest = planner.plan(&Target::Latest, &p.entries).unwrap();
    assert!(latest.iter().all(|rw| !Arc::ptr_eq(rw, &plan[0])));
}

#[tokio::test]
async fn latest_caches_rewrappers_across_objects() {
    let (m, a, ka) = backend("alpha");
    let planner = Planner::new(Counting::new(KmsSet::new([a.clone()])));
    let files: Vec<Preamble> = {
        let mut v = Vec::new();
        for i in 0..4u8 {
            v.push(seal(&[(&a, &ka)], &[i; 10]).await);
        }
        v
    };
    m.rotate_key(&ka).await.unwrap();
    m.reset_counts();
    for p in &files {
        let out = planner.rewrap_preamble(&Target::Latest, p).await.unwrap();
        assert_eq!(out.entries.unwrap()[0].key_version, "2");
    }
    assert_eq!(planner.backends().sources.load(Ordering::SeqCst), 1, "the backend asked for once");
    assert_eq!(planner.backends().destinations.load(Ordering::SeqCst), 0, "no destination for Latest");
    assert_eq!(m.counts().key_management, 1, "one describe per key per job");
    let rw = &planner.plan(&Target::Latest, &files[0].entries).unwrap()[0];
    assert_eq!(rw.stats().rewrapped, 4);
    assert!(!rw.trust().is_strict());

    // The setup applies to every rewrapper the planner makes, planned or not.
    let strict = Planner::new(KmsSet::new([a.clone()])).with_setup(|rw| rw.with_trust(Trust::Allow(Vec::new())));
    assert!(strict.plan(&Target::Latest, &files[0].entries).unwrap()[0].trust().is_strict());
    assert!(strict.rewrapper(a.clone(), Target::Latest).trust().is_strict());
}

#[tokio::test]
async fn value_level_keys_of_two_backends() {
    let (ma, a, ka) = backend("alpha");
    let (_, b, kb) = backend("beta");
    let context = EncryptionContext::from_pairs([("env", "prod")]).unwrap();
    let file_id = [9u8; values::FILE_ID_LEN];
    let kctx = values::kms_context(&context, &file_id).unwrap();
    let g = a.generate_data_key(&ka, &kctx).await.unwrap();
    let other = b.encrypt(&kb, g.data_key.expose_secret(), &kctx).await.unwrap();
    let vk = ValueKeys::derive(Engine::default(), &g.data_key, file_id, values::V2, 32).unwrap();
    let sealed = vk.seal(&KeyPath::key("TOKEN"), ValueType::Str, b"s3cret").unwrap();
    let commitment = vk.commitment_hex();
    let keys = vec![g.wrapped, other];
    ma.rotate_key(&ka).await.unwrap();

    let planner = Planner::new(KmsSet::new([a.clone(), b.clone()]));
    let file = ValueFile {
        version: values::V2,
        context: &context,
        file_id: &file_id,
        keys: &keys,
        commitment: &commitment,
        padding: 32,
    };
    let out = planner.rewrap_value_keys(&Target::Latest, &file).await.unwrap();
    let new = out.entries.expect("alpha's entry is behind");
    assert_eq!((new[0].key_version.as_str(), &new[1]), ("2", &keys[1]));
    assert_eq!(out.report.len(), 2);
    assert!(matches!(out.report[0].result, EntryResult::Rewrapped { .. }));
    assert_eq!(out.report[1].result, EntryResult::AtTarget);
    let check = file.check(Engine::default());
    let (dk, _) = envseal_core::entries::unwrap_verified(&[a.as_ref()], &new[..1], &kctx, &Trust::Discovery, &check)
        .await
        .unwrap();
    let vk2 = ValueKeys::derive(Engine::default(), &dk, file_id, values::V2, 32).unwrap();
    assert_eq!(vk2.open(&KeyPath::key("TOKEN"), &sealed).unwrap().1.expose_secret(), b"s3cret");
}

#[tokio::test]
async fn resolver_errors_fail_the_object_and_sources_skip_them() {
    let (_, a, ka) = backend("alpha");
    let (_, b, kb) = backend("beta");
    let p = seal(&[(&a, &ka), (&b, &kb)], b"half configured").await;

    // Only alpha is configured: Latest needs beta too, and fails the object.
    let planner = Planner::new(KmsSet::new([a.clone()]));
    let e = planner.rewrap_preamble(&Target::Latest, &p).await.unwrap_err();
    assert!(matches!(&e, Error::NoBackend { backend } if backend == "beta"), "{e}");
    // No destination for a Key target.
    assert!(matches!(planner.plan(&Target::Key(ka.clone()), &p.entries), Err(Error::NoBackend { .. })));
    // The backends that open the entries: alpha only, once.
    let sources = planner.sources(&[p.entries[0].clone(), p.entries[1].clone(), p.entries[0].clone()]);
    assert_eq!(sources.len(), 1);
    assert!(Arc::ptr_eq(&sources[0], &a));
    // A Key plan needs an entry to move.
    let planner = Planner::new(KmsSet::new([]).with_destination(b.clone()));
    assert!(planner.plan(&Target::Key(kb.clone()), &[]).is_err());
}

#[tokio::test]
async fn kms_failures_fail_the_object_unchanged() {
    let (m, a, ka) = backend("alpha");
    let p = seal(&[(&a, &ka)], b"outage").await;
    m.rotate_key(&ka).await.unwrap();
    let planner = Planner::new(KmsSet::new([a.clone()])).with_setup(|rw| rw.with_retry(fast_retry()));
    m.set_outage(Some(Fault::Unavailable));
    let e = planner.rewrap_preamble(&Target::Latest, &p).await.unwrap_err();
    assert!(e.is_retryable(), "{e}");
    let breaker = envseal_core::rewrap::breaker::Breaker::new(1);
    breaker.failure_of(&e);
    assert!(breaker.is_open());
    m.set_outage(None);
    assert!(planner.rewrap_preamble(&Target::Latest, &p).await.unwrap().entries.is_some());
}
