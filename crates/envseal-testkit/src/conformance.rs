//! The backend conformance suite: what every [`Kms`] (and [`KeyManager`]) must satisfy.
//!
//! The checks use only the traits, so one suite runs against the mock, the local keystore and
//! each real server (docs/ARCHITECTURE.md, Conventions 7). They panic with a message naming the backend and the rule
//! that failed.
//!
//! Backends differ where the KMS they drive differs (AWS's Encrypt takes 1..=4096 bytes,
//! Transit has no aliases), and the emulators the harness starts deviate from the real service
//! in places (moto concatenates context pairs without lengths). A backend states what it
//! supports in a [`Capabilities`]; where it declares less than the strict default, the suite
//! checks a documented weaker rule instead, never nothing: an operation declared unsupported
//! must answer [`KmsError::Unsupported`], a smaller encryption range must be enforced, and a
//! tolerated server deviation is tolerated only where it can occur, with a
//! `NOTE (server deviates) ...` line on stderr.

use std::collections::BTreeSet;
use std::fmt::{self, Debug, Display};
use std::io::Write as _;
use std::ops::RangeInclusive;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use envseal_core::datakey::DATA_KEY_LEN;
use envseal_core::kms::{
    GeneratedDataKey, KeySpec, KeyState, MAX_DELETION_DAYS, MAX_DIRECT_ENCRYPT, MIN_DELETION_DAYS, WrappedKey,
    decrypt_data_key,
};
use envseal_core::{EncryptionContext, KeyManager, Kms, KmsError};

/// What a backend supports, or what the test server standing in for its KMS does: the suite
/// checks the strict rule where a capability is present and a weaker, still asserted rule where
/// it is not.
///
/// [`Capabilities::default`] (the same as [`Capabilities::strict`]) is envseal's full contract;
/// the mock, the local keystore and PKCS#11 run with it. A backend relaxes only what it must,
/// with the builder methods:
///
/// ```
/// use envseal_testkit::{Capabilities, WrongContextReport};
///
/// // AWS KMS as moto emulates it (crates/envseal-kms-aws/tests/moto.rs).
/// let moto = Capabilities::strict()
///     .direct_encrypt(1..=4096)
///     .wrong_context(WrongContextReport::InvalidCiphertext)
///     .contexts_unambiguous(false)
///     .rotation_changes_version(false)
///     .key_states_enforced(false)
///     .min_decryption_version(false);
/// assert!(moto.aliases && !moto.min_decryption_version);
/// ```
///
/// What each relaxation still checks:
///
/// | capability | strict (default) | relaxed |
/// |---|---|---|
/// | [`direct_encrypt`](Self::direct_encrypt) | `0..=6144` bytes round-trip | the range's ends round-trip; one byte below is `InvalidRequest`; one above, and 6144, are `PlaintextTooLarge { size, limit: end }` or `InvalidRequest`; 6145 is always `PlaintextTooLarge { limit: 6144 }` |
/// | [`wrong_context`](Self::wrong_context) | `WrongContext` | exactly `InvalidCiphertext` |
/// | [`contexts_unambiguous`](Self::contexts_unambiguous) | every wrong context fails | only a context whose pairs concatenate (`k1 v1 k2 v2 ...`, no lengths) to the same string as the right one may open, with a note; every other wrong context still fails |
/// | [`rotation_changes_version`](Self::rotation_changes_version) | a new current version, listed after the old | `rotate_key` succeeds for the same key; an unchanged version is noted; the current version is listed and used by new data keys; a changed one must follow the strict rule |
/// | [`key_states_enforced`](Self::key_states_enforced) | disabled / pending-deletion keys refuse cryptographic operations and `enable_key`; cancelling a deletion that is not pending is `InvalidRequest` | describe still reports each state; a refusal must be the right error; an accepted operation is noted (and the state restored for the next step) |
/// | [`aliases`](Self::aliases), [`enable_disable`](Self::enable_disable), [`scheduled_deletion`](Self::scheduled_deletion), [`min_decryption_version`](Self::min_decryption_version) | the operations work as documented on [`KeyManager`] | every one of those operations answers `Unsupported` and changes nothing (the key stays enabled, usable, with no deletion date or minimum) |
///
/// A supported operation answering `Unsupported` is a failure, not a skip.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Capabilities {
    /// Plaintext sizes [`Kms::encrypt`] takes. Strict: `0..=MAX_DIRECT_ENCRYPT` (6 KiB). It must
    /// lie within that and include `1..=64` (the suite's own small payloads).
    pub direct_encrypt: RangeInclusive<usize>,
    /// How a wrong encryption context is reported. Strict: [`WrongContextReport::WrongContext`].
    pub wrong_context: WrongContextReport,
    /// Whether different contexts are always told apart. `false` for servers that concatenate
    /// context pairs without lengths (moto; local-kms), so `{"ab":"c"}` opens as `{"a":"bc"}`.
    /// Strict: `true`.
    pub contexts_unambiguous: bool,
    /// Whether `rotate_key` changes the reported current version. `false` where the server
    /// reports no versions (moto) or rotates asynchronously (AWS on-demand rotation). Strict:
    /// `true`.
    pub rotation_changes_version: bool,
    /// Whether the server refuses cryptographic operations on disabled keys and keys pending
    /// deletion (and the state transitions that do not apply). `false` for moto. Strict: `true`.
    pub key_states_enforced: bool,
    /// `create_alias` / `delete_alias` / `list_aliases`, and resolving `alias/NAME`. Strict:
    /// `true`.
    pub aliases: bool,
    /// `enable_key` / `disable_key`. Strict: `true`.
    pub enable_disable: bool,
    /// `schedule_key_deletion` / `cancel_key_deletion`. Strict: `true`. Needs
    /// `enable_disable`: a cancelled deletion leaves the key disabled.
    pub scheduled_deletion: bool,
    /// `set_min_decryption_version`. Strict: `true`.
    pub min_decryption_version: bool,
}

/// How a backend reports a wrong encryption context on decrypt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum WrongContextReport {
    /// [`KmsError::WrongContext`]: the backend tells a wrong context from a damaged blob
    /// (mock, local keystore).
    WrongContext,
    /// [`KmsError::InvalidCiphertext`]: the context is only AEAD associated data on the server,
    /// so a wrong one looks like a damaged blob (AWS KMS, Vault Transit, PKCS#11 AES-GCM).
    InvalidCiphertext,
}

impl Default for Capabilities {
    fn default() -> Self {
        Self::strict()
    }
}

impl Capabilities {
    /// Everything supported, nothing tolerated: the default.
    pub fn strict() -> Self {
        Self {
            direct_encrypt: 0..=MAX_DIRECT_ENCRYPT,
            wrong_context: WrongContextReport::WrongContext,
            contexts_unambiguous: true,
            rotation_changes_version: true,
            key_states_enforced: true,
            aliases: true,
            enable_disable: true,
            scheduled_deletion: true,
            min_decryption_version: true,
        }
    }

    /// Sets [`Capabilities::direct_encrypt`].
    #[must_use]
    pub fn direct_encrypt(mut self, sizes: RangeInclusive<usize>) -> Self {
        self.direct_encrypt = sizes;
        self
    }

    /// Sets [`Capabilities::wrong_context`].
    #[must_use]
    pub fn wrong_context(mut self, report: WrongContextReport) -> Self {
        self.wrong_context = report;
        self
    }

    /// Sets [`Capabilities::contexts_unambiguous`].
    #[must_use]
    pub fn contexts_unambiguous(mut self, yes: bool) -> Self {
        self.contexts_unambiguous = yes;
        self
    }

    /// Sets [`Capabilities::rotation_changes_version`].
    #[must_use]
    pub fn rotation_changes_version(mut self, yes: bool) -> Self {
        self.rotation_changes_version = yes;
        self
    }

    /// Sets [`Capabilities::key_states_enforced`].
    #[must_use]
    pub fn key_states_enforced(mut self, yes: bool) -> Self {
        self.key_states_enforced = yes;
        self
    }

    /// Sets [`Capabilities::aliases`].
    #[must_use]
    pub fn aliases(mut self, yes: bool) -> Self {
        self.aliases = yes;
        self
    }

    /// Sets [`Capabilities::enable_disable`].
    #[must_use]
    pub fn enable_disable(mut self, yes: bool) -> Self {
        self.enable_disable = yes;
        self
    }

    /// Sets [`Capabilities::scheduled_deletion`].
    #[must_use]
    pub fn scheduled_deletion(mut self, yes: bool) -> Self {
        self.scheduled_deletion = yes;
        self
    }

    /// Sets [`Capabilities::min_decryption_version`].
    #[must_use]
    pub fn min_decryption_version(mut self, yes: bool) -> Self {
        self.min_decryption_version = yes;
        self
    }

    /// Panics if the declaration itself makes no sense for the suite.
    fn validate(&self, backend: &str) {
        let (lo, hi) = (*self.direct_encrypt.start(), *self.direct_encrypt.end());
        if lo > 1 || !(64..=MAX_DIRECT_ENCRYPT).contains(&hi) {
            panic!(
                "conformance [{backend}]: Capabilities::direct_encrypt {lo}..={hi} must include 1..=64 and end at \
                 most at {MAX_DIRECT_ENCRYPT}"
            );
        }
        if self.scheduled_deletion && !self.enable_disable {
            panic!(
                "conformance [{backend}]: Capabilities::scheduled_deletion needs enable_disable: a cancelled \
                 deletion leaves the key disabled (KeyManager::cancel_key_deletion)"
            );
        }
    }
}

/// Runs the cryptographic conformance checks against `kms` with the strict [`Capabilities`]:
/// [`run_conformance_with`]`(kms, key, &Capabilities::default())`.
///
/// # Panics
/// On the first rule the backend breaks, with a message naming it.
pub async fn run_conformance(kms: Arc<dyn Kms>, key: &str) {
    run_conformance_with(kms, key, &Capabilities::default()).await;
}

/// Runs the cryptographic conformance checks against `kms`, using `key` (an id or alias of an
/// enabled key that `kms` may use for every operation), as far as `caps` says the backend
/// goes.
///
/// Checks that:
/// - `generate_data_key` returns 32-byte keys that differ on every call, a wrapped key naming
///   this backend, a key id and a version, and a blob that does not contain the key;
/// - the wrapped key decrypts to the same key, with the same key id and version;
/// - a wrong context fails with the error of [`Capabilities::wrong_context`], including
///   contexts that naive encodings confuse (`{"ab":"c"}` / `{"a":"bc"}`, empty / one empty
///   entry; see [`Capabilities::contexts_unambiguous`]);
/// - context entries are order-independent;
/// - a tampered blob (a byte flipped at the start, middle or end, truncated, empty) fails with
///   an error that is not retryable;
/// - `encrypt` / `decrypt` round-trip the ends of [`Capabilities::direct_encrypt`] (strict: 0,
///   1 and 6144 bytes), sizes outside it fail, and 6145 bytes is `PlaintextTooLarge`;
/// - `re_encrypt` to the same key under a new context works, the old context does not open the
///   new blob, the old blob still opens, and a wrong source context fails;
/// - an unknown key (and, with aliases, an unknown alias) is `KeyNotFound`;
/// - the `Debug` output of every value returned contains no key or plaintext bytes.
///
/// # Panics
/// On the first rule the backend breaks, with a message naming it; if `caps` is not a valid
/// declaration.
pub async fn run_conformance_with(kms: Arc<dyn Kms>, key: &str, caps: &Capabilities) {
    let mut s = Suite::new(&*kms, caps);
    s.data_keys(key).await;
    s.wrong_context(key).await;
    s.context_order(key).await;
    s.tampering(key).await;
    s.direct_encryption(key).await;
    s.re_encryption(key).await;
    s.unknown_key().await;
    s.check_debug_leaks();
    s.report_unused_relaxations(&[("contexts_unambiguous", caps.contexts_unambiguous)]);
}

/// Runs the key-management conformance checks with the strict [`Capabilities`]:
/// [`run_key_management_conformance_with`]`(kms, &Capabilities::default())`.
///
/// # Panics
/// If `kms.key_manager()` is `None`, or on the first rule the backend breaks.
pub async fn run_key_management_conformance(kms: Arc<dyn Kms>) {
    run_key_management_conformance_with(kms, &Capabilities::default()).await;
}

/// Runs the key-management conformance checks against a backend with a [`KeyManager`], as far
/// as `caps` says it goes. It creates a key of its own and, where it can, schedules it for
/// deletion at the end.
///
/// The strict lifecycle: create → describe / list → rotate (old blobs still decrypt, new data
/// keys use the new version) → alias (describe and generate through it; a duplicate is
/// `AlreadyExists`) → disable (generate, encrypt and decrypt fail with `KeyDisabled`) → enable
/// → schedule deletion (6 and 31 days are `InvalidRequest`, 7 works; cryptographic operations
/// and enable fail with `KeyPendingDeletion`) → cancel (the key comes back disabled; a second
/// cancel is `InvalidRequest`) → enable → minimum decryption version set to the newest (the
/// old blob fails with `KeyVersionBelowMinimum`, an unknown version is `KeyVersionNotFound`) →
/// delete the alias. What each [`Capabilities`] relaxation checks instead is in its table.
///
/// # Panics
/// If `kms.key_manager()` is `None`, or on the first rule the backend breaks; if `caps` is not
/// a valid declaration.
pub async fn run_key_management_conformance_with(kms: Arc<dyn Kms>, caps: &Capabilities) {
    let mut s = Suite::new(&*kms, caps);
    let Some(km) = kms.key_manager() else {
        panic!("conformance [{}]: key_manager() is None; run_key_management_conformance needs one", s.backend)
    };
    s.lifecycle(km).await;
    s.check_debug_leaks();
    s.report_unused_relaxations(&[
        ("rotation_changes_version", caps.rotation_changes_version),
        ("key_states_enforced", caps.key_states_enforced),
    ]);
}

/// State shared by the checks: the backend under test and what it declares, every `Debug`
/// text produced from a returned value, every secret those texts must not contain, and the
/// relaxations a deviation was tolerated under.
struct Suite<'a> {
    kms: &'a dyn Kms,
    caps: &'a Capabilities,
    backend: String,
    debug_texts: Vec<String>,
    secrets: Vec<Vec<u8>>,
    used_relaxations: BTreeSet<&'static str>,
}

/// The encryption context most checks use.
fn base_context() -> EncryptionContext {
    context(&[("purpose", "envseal-conformance"), ("tenant", "t-1")])
}

fn context(pairs: &[(&str, &str)]) -> EncryptionContext {
    // Invariant: the fixtures are valid user contexts.
    EncryptionContext::from_pairs(pairs.iter().copied()).expect("valid fixture context")
}

/// The context as a server without length prefixes sees it: `k1 || v1 || k2 || v2 ...` in key
/// order (moto's AAD). Only contexts with equal concatenations can collide on such a server.
fn concatenated(c: &EncryptionContext) -> String {
    c.iter().flat_map(|(k, v)| [k, v]).collect()
}

/// `n` random bytes.
fn random_bytes(n: usize) -> Vec<u8> {
    let mut v = vec![0u8; n];
    envseal_core::random::fill(&mut v);
    v
}

/// A random version-4 UUID, to name a key that does not exist.
fn random_uuid() -> String {
    let h = hex::encode(random_bytes(16));
    format!("{}-{}-4{}-8{}-{}", &h[..8], &h[8..12], &h[13..16], &h[17..20], &h[20..32])
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}

fn unsupported(e: &KmsError) -> bool {
    matches!(e, KmsError::Unsupported { .. })
}

fn disabled(e: &KmsError) -> bool {
    matches!(e, KmsError::KeyDisabled { .. })
}

fn pending(e: &KmsError) -> bool {
    matches!(e, KmsError::KeyPendingDeletion { .. })
}

impl<'a> Suite<'a> {
    fn new(kms: &'a dyn Kms, caps: &'a Capabilities) -> Self {
        let backend = kms.backend().to_owned();
        caps.validate(&backend);
        Self { kms, caps, backend, debug_texts: Vec::new(), secrets: Vec::new(), used_relaxations: BTreeSet::new() }
    }

    /// Panics with a message naming the backend and the rule.
    #[track_caller]
    fn fail(&self, rule: &str, detail: impl fmt::Display) -> ! {
        panic!("conformance [{}]: {rule}: {detail}", self.backend)
    }

    #[track_caller]
    fn check(&self, ok: bool, rule: &str, detail: impl fmt::Display) {
        if !ok {
            self.fail(rule, detail);
        }
    }

    /// A deviation tolerated by the relaxation `capability`, on the process's stderr (libtest
    /// captures `eprintln!` of passing tests, not this).
    fn note(&mut self, capability: &'static str, rule: &str, detail: impl Display) {
        self.used_relaxations.insert(capability);
        let line = format!(
            "NOTE (server deviates) [{}]: {rule}: {detail} (tolerated: Capabilities::{capability} is false)\n",
            self.backend
        );
        let _ = std::io::stderr().write_all(line.as_bytes());
    }

    /// A relaxation declared but never needed in this run may be stale: say so.
    fn report_unused_relaxations(&self, declared: &[(&'static str, bool)]) {
        for (capability, strict) in declared {
            if !strict && !self.used_relaxations.contains(capability) {
                let line = format!(
                    "NOTE [{}]: Capabilities::{capability} is false, but the backend behaved strictly in this run\n",
                    self.backend
                );
                let _ = std::io::stderr().write_all(line.as_bytes());
            }
        }
    }

    /// The value of a call that must succeed; its `Debug` is kept for the leak check.
    #[track_caller]
    fn ok<T: Debug>(&mut self, r: Result<T, KmsError>, rule: &str) -> T {
        match r {
            Ok(v) => {
                self.debug_texts.push(format!("{v:?}"));
                v
            }
            Err(e) => self.fail(rule, format_args!("unexpected error: {e} ({e:?})")),
        }
    }

    /// The error of a call that must fail, checked by `expected`.
    #[track_caller]
    fn err<T: Debug>(
        &mut self,
        r: Result<T, KmsError>,
        rule: &str,
        expected: impl Display,
        f: impl Fn(&KmsError) -> bool,
    ) {
        match r {
            Ok(v) => self.fail(rule, format_args!("expected {expected}, got Ok({v:?})")),
            Err(e) => {
                self.debug_texts.push(format!("{e} {e:?}"));
                if !f(&e) {
                    self.fail(rule, format_args!("expected {expected}, got {e} ({e:?})"));
                }
            }
        }
    }

    /// A call the backend declares unsupported: it must say `Unsupported`.
    #[track_caller]
    fn unsupported<T: Debug>(&mut self, r: Result<T, KmsError>, operation: &str, capability: &str) {
        let rule = format!("{operation} (declared unsupported: Capabilities::{capability} is false)");
        self.err(r, &rule, "Unsupported", unsupported);
    }

    /// A cryptographic operation on a key in a state that refuses it. With
    /// [`Capabilities::key_states_enforced`] false, success is noted instead of failing; an
    /// error must still be the right one.
    #[track_caller]
    fn refused_by_state<T: Debug>(
        &mut self,
        r: Result<T, KmsError>,
        rule: &str,
        expected: &str,
        f: impl Fn(&KmsError) -> bool,
    ) {
        match r {
            Ok(v) if !self.caps.key_states_enforced => {
                self.debug_texts.push(format!("{v:?}"));
                self.note("key_states_enforced", rule, format_args!("the server accepted it instead of {expected}"));
            }
            r => self.err(r, rule, expected, f),
        }
    }

    /// The result of opening something sealed under `sealed` with the wrong context `given`:
    /// the error [`Capabilities::wrong_context`] names. A server that confuses contexts whose
    /// pairs concatenate to the same string may open it, if declared, for exactly those.
    #[track_caller]
    fn wrong_context_err<T: Debug>(
        &mut self,
        r: Result<T, KmsError>,
        rule: &str,
        sealed: &EncryptionContext,
        given: &EncryptionContext,
    ) {
        if let Ok(v) = &r
            && !self.caps.contexts_unambiguous
            && concatenated(sealed) == concatenated(given)
        {
            self.debug_texts.push(format!("{v:?}"));
            let detail = format!(
                "opened under {given:?}, sealed under {sealed:?}: the server concatenates context pairs without \
                 lengths (both are {:?})",
                concatenated(sealed)
            );
            self.note("contexts_unambiguous", rule, detail);
            return;
        }
        match self.caps.wrong_context {
            WrongContextReport::WrongContext => {
                self.err(r, rule, "WrongContext", |e| matches!(e, KmsError::WrongContext));
            }
            WrongContextReport::InvalidCiphertext => {
                self.err(r, rule, "InvalidCiphertext (declared: wrong contexts look like damaged blobs)", |e| {
                    matches!(e, KmsError::InvalidCiphertext)
                });
            }
        }
    }

    /// Generates a data key and checks its shape; remembers the key as a secret.
    async fn generate(&mut self, key: &str, ctx: &EncryptionContext, rule: &str) -> GeneratedDataKey {
        let g = self.ok(self.kms.generate_data_key(key, ctx).await, rule);
        let k = g.data_key.expose_secret();
        self.check(k.len() == DATA_KEY_LEN, rule, format_args!("data key is {} bytes, not 32", k.len()));
        self.check(k.iter().any(|&b| b != 0), rule, "data key is all zeros");
        self.secrets.push(k.to_vec());
        let w = &g.wrapped;
        self.check(w.backend == self.backend, rule, format_args!("wrapped.backend is {:?}", w.backend));
        self.check(!w.key_id.is_empty(), rule, "wrapped.key_id is empty");
        self.check(!w.key_version.is_empty(), rule, "wrapped.key_version is empty");
        self.check(!w.blob.is_empty(), rule, "wrapped.blob is empty");
        self.check(!contains(&w.blob, k), rule, "the blob contains the plaintext data key");
        g
    }

    /// Decrypts `w` and checks the key and the id / version reported.
    async fn unwrap_matches(&mut self, g: &GeneratedDataKey, ctx: &EncryptionContext, rule: &str) {
        let d = self.ok(self.kms.decrypt(&g.wrapped, ctx).await, rule);
        self.check(d.plaintext.expose_secret() == g.data_key.expose_secret(), rule, "decrypt returned a different key");
        self.check(
            d.key_id == g.wrapped.key_id && d.key_version == g.wrapped.key_version,
            rule,
            format_args!(
                "decrypt reports key {} version {}, the wrapped key says {} version {}",
                d.key_id, d.key_version, g.wrapped.key_id, g.wrapped.key_version
            ),
        );
        let u = self.ok(decrypt_data_key(self.kms, &g.wrapped, ctx).await, rule);
        self.check(u.data_key.expose_secret() == g.data_key.expose_secret(), rule, "decrypt_data_key differs");
    }

    async fn data_keys(&mut self, key: &str) {
        let c = base_context();
        let a = self.generate(key, &c, "generate_data_key").await;
        let b = self.generate(key, &c, "generate_data_key").await;
        self.check(
            a.data_key.expose_secret() != b.data_key.expose_secret(),
            "generate_data_key",
            "two calls returned the same data key",
        );
        self.check(a.wrapped.blob != b.wrapped.blob, "generate_data_key", "two calls returned the same blob");
        self.check(
            a.wrapped.key_id == b.wrapped.key_id,
            "generate_data_key",
            "two calls under one key report different key ids",
        );
        self.unwrap_matches(&a, &c, "decrypt of a generated data key").await;
        self.unwrap_matches(&b, &c, "decrypt of a generated data key").await;
    }

    async fn wrong_context(&mut self, key: &str) {
        let pairs = [
            (base_context(), context(&[("purpose", "envseal-conformance"), ("tenant", "t-2")])),
            (base_context(), context(&[("purpose", "envseal-conformance")])),
            (base_context(), EncryptionContext::new()),
            // Equal when concatenated without lengths: only this pair may open on a server
            // declared with `contexts_unambiguous(false)`.
            (context(&[("ab", "c")]), context(&[("a", "bc")])),
            // Close to it, but not equal when concatenated: must fail everywhere.
            (context(&[("ab", "c")]), context(&[("a", "bd")])),
            (EncryptionContext::new(), context(&[("a", "")])),
        ];
        for (right, wrong) in &pairs {
            let rule = format!("decrypt with a wrong context ({right:?} sealed, {wrong:?} given)");
            let g = self.generate(key, right, &rule).await;
            self.wrong_context_err(self.kms.decrypt(&g.wrapped, wrong).await, &rule, right, wrong);
            let w = self.ok(self.kms.encrypt(key, b"conformance context", right).await, &rule);
            self.wrong_context_err(self.kms.decrypt(&w, wrong).await, &rule, right, wrong);
            self.unwrap_matches(&g, right, &rule).await;
        }
    }

    async fn context_order(&mut self, key: &str) {
        let rule = "context entries are order-independent";
        let forward = context(&[("a", "1"), ("b", "2"), ("c", "3")]);
        let backward = context(&[("c", "3"), ("b", "2"), ("a", "1")]);
        let g = self.generate(key, &forward, rule).await;
        self.unwrap_matches(&g, &backward, rule).await;
    }

    async fn tampering(&mut self, key: &str) {
        let c = base_context();
        let g = self.generate(key, &c, "tampered blob").await;
        let blob = &g.wrapped.blob;
        let n = blob.len();
        let mut cases: Vec<(String, Vec<u8>)> = Vec::new();
        for i in [0, n / 2, n - 1] {
            let mut b = blob.clone();
            b[i] ^= 0x01;
            cases.push((format!("byte {i} of {n} flipped"), b));
        }
        cases.push(("last byte removed".into(), blob[..n - 1].to_vec()));
        cases.push(("empty blob".into(), Vec::new()));
        for (what, b) in cases {
            let rule = format!("decrypt of a tampered blob ({what})");
            let w = WrappedKey { blob: b, ..g.wrapped.clone() };
            let r = self.kms.decrypt(&w, &c).await;
            self.err(r, &rule, "a non-retryable error", |e| !e.is_retryable());
        }
        self.unwrap_matches(&g, &c, "decrypt of the untampered blob").await;
    }

    async fn direct_encryption(&mut self, key: &str) {
        let c = base_context();
        let empty = EncryptionContext::new();
        let (lo, hi) = (*self.caps.direct_encrypt.start(), *self.caps.direct_encrypt.end());
        let mut sizes = vec![lo, lo + 1, hi];
        sizes.dedup();
        for size in sizes {
            let rule = format!("encrypt/decrypt of {size} bytes");
            let pt = random_bytes(size);
            let w = self.ok(self.kms.encrypt(key, &pt, &c).await, &rule);
            self.check(w.backend == self.backend, &rule, format_args!("wrapped.backend is {:?}", w.backend));
            self.check(!w.key_id.is_empty() && !w.key_version.is_empty(), &rule, "empty key id or version");
            if size >= 16 {
                self.check(!contains(&w.blob, &pt), &rule, "the blob contains the plaintext");
                self.secrets.push(pt.clone());
            }
            let d = self.ok(self.kms.decrypt(&w, &c).await, &rule);
            self.check(d.plaintext.expose_secret() == pt, &rule, "decrypt returned different bytes");
            self.check(
                d.key_id == w.key_id && d.key_version == w.key_version,
                &rule,
                "decrypt reports a different key id or version",
            );
            self.wrong_context_err(self.kms.decrypt(&w, &empty).await, &rule, &c, &empty);
        }
        if lo > 0 {
            // Below the server's range: the server refuses the request itself.
            let size = lo - 1;
            let rule = format!("encrypt of {size} bytes (below the declared range {lo}..={hi})");
            let r = self.kms.encrypt(key, &random_bytes(size), &c).await;
            self.err(r, &rule, "InvalidRequest", |e| matches!(e, KmsError::InvalidRequest { .. }));
        }
        if hi < MAX_DIRECT_ENCRYPT {
            // Within envseal's bound but above the server's: the backend reports the server's
            // limit (or passes on the server's validation error).
            let mut sizes = vec![hi + 1, MAX_DIRECT_ENCRYPT];
            sizes.dedup();
            for size in sizes {
                let rule = format!("encrypt of {size} bytes (above the declared range {lo}..={hi})");
                let r = self.kms.encrypt(key, &random_bytes(size), &c).await;
                let expected = format!("PlaintextTooLarge {{ size: {size}, limit: {hi} }} or InvalidRequest");
                self.err(r, &rule, expected, |e| match e {
                    KmsError::PlaintextTooLarge { size: s, limit } => *s == size && *limit == hi,
                    KmsError::InvalidRequest { .. } => true,
                    _ => false,
                });
            }
        }
        // envseal's own bound, whatever the server's.
        let size = MAX_DIRECT_ENCRYPT + 1;
        let r = self.kms.encrypt(key, &random_bytes(size), &c).await;
        self.err(r, "encrypt of 6145 bytes", "PlaintextTooLarge { size: 6145, limit: 6144 }", |e| {
            matches!(e, KmsError::PlaintextTooLarge { size: s, limit } if *s == size && *limit == MAX_DIRECT_ENCRYPT)
        });
    }

    async fn re_encryption(&mut self, key: &str) {
        let rule = "re_encrypt to the same key under a new context";
        let (c1, c2) = (base_context(), context(&[("purpose", "envseal-conformance"), ("stage", "rewrapped")]));
        let secret = format!("conformance-secret-{}", hex::encode(random_bytes(8))).into_bytes();
        self.secrets.push(secret.clone());
        let w1 = self.ok(self.kms.encrypt(key, &secret, &c1).await, rule);
        let w2 = self.ok(self.kms.re_encrypt(&w1, &c1, key, &c2).await, rule);
        self.check(w2.backend == self.backend, rule, format_args!("wrapped.backend is {:?}", w2.backend));
        self.check(w2.key_id == w1.key_id, rule, "the new blob reports another key id");
        let d = self.ok(self.kms.decrypt(&w2, &c2).await, rule);
        self.check(d.plaintext.expose_secret() == secret, rule, "the new blob decrypts to different bytes");
        let r = self.kms.decrypt(&w2, &c1).await;
        self.wrong_context_err(r, "the old context must not open the re-encrypted blob", &c2, &c1);
        let d = self.ok(self.kms.decrypt(&w1, &c1).await, "the original blob still opens after re_encrypt");
        self.check(d.plaintext.expose_secret() == secret, rule, "the original blob decrypts to different bytes");
        let r = self.kms.re_encrypt(&w1, &c2, key, &c2).await;
        self.wrong_context_err(r, "re_encrypt with a wrong source context", &c1, &c2);

        let g = self.generate(key, &c1, rule).await;
        let w = self.ok(self.kms.re_encrypt(&g.wrapped, &c1, key, &c2).await, rule);
        let rewrapped = GeneratedDataKey { data_key: g.data_key, wrapped: w };
        self.unwrap_matches(&rewrapped, &c2, "decrypt of a re-encrypted data key").await;
    }

    async fn unknown_key(&mut self) {
        let missing = random_uuid();
        let c = base_context();
        let rule = format!("generate_data_key under an unknown key {missing}");
        let r = self.kms.generate_data_key(&missing, &c).await;
        self.err(r, &rule, "KeyNotFound", |e| matches!(e, KmsError::KeyNotFound { .. }));
        let rule = format!("encrypt under an unknown key {missing}");
        let r = self.kms.encrypt(&missing, b"x", &c).await;
        self.err(r, &rule, "KeyNotFound", |e| matches!(e, KmsError::KeyNotFound { .. }));
        if self.caps.aliases {
            let alias = format!("alias/envseal-conformance-missing-{}", hex::encode(random_bytes(6)));
            let rule = format!("generate_data_key under an unknown alias {alias}");
            let r = self.kms.generate_data_key(&alias, &c).await;
            self.err(r, &rule, "KeyNotFound", |e| matches!(e, KmsError::KeyNotFound { .. }));
        }
    }

    /// No `Debug` (or error) text produced so far contains a secret, raw, in hex or as a byte
    /// list; neither does the backend's own `Debug`.
    fn check_debug_leaks(&mut self) {
        self.debug_texts.push(format!("{:?}", self.kms));
        for secret in &self.secrets {
            let forms = [
                hex::encode(secret),
                hex::encode_upper(secret),
                format!("{secret:?}"),
                String::from_utf8_lossy(secret).into(),
            ];
            for text in &self.debug_texts {
                for form in &forms {
                    if text.contains(form.as_str()) {
                        self.fail("Debug output must not contain secrets", format_args!("found one in {text:.200}"));
                    }
                }
            }
        }
    }

    /// The key is enabled, has no deletion date and still opens `g`: what an unsupported state
    /// change must leave behind.
    async fn unchanged_and_usable(&mut self, km: &dyn KeyManager, id: &str, g: &GeneratedDataKey, rule: &str) {
        let c = base_context();
        let d = self.ok(km.describe_key(id).await, rule);
        self.check(
            d.state == KeyState::Enabled && d.deletion_date.is_none(),
            rule,
            format_args!("the key changed: state {:?}, deletion date {:?}", d.state, d.deletion_date),
        );
        self.unwrap_matches(g, &c, rule).await;
    }

    async fn lifecycle(&mut self, km: &dyn KeyManager) {
        let c = base_context();
        let spec = KeySpec { description: "envseal conformance".into(), ..KeySpec::default() };

        // Create, describe, list.
        let created = self.ok(km.create_key(&spec).await, "create_key");
        let id = created.key_id.clone();
        self.check(!id.is_empty(), "create_key", "empty key id");
        self.check(created.state == KeyState::Enabled, "create_key", format_args!("state {:?}", created.state));
        let v1 = created.current_version.clone();
        self.check(
            created.versions.len() == 1 && created.versions[0].id == v1,
            "create_key",
            format_args!("expected one version {v1:?}, got {:?}", created.versions),
        );
        self.check(created.deletion_date.is_none(), "create_key", "deletion date set on a new key");
        self.check(created.min_decryption_version.is_none(), "create_key", "minimum decryption version on a new key");
        let d = self.ok(km.describe_key(&id).await, "describe_key");
        self.check(
            d.key_id == id && d.current_version == v1 && d.state == KeyState::Enabled,
            "describe_key",
            format_args!("describe disagrees with create: {d:?}"),
        );
        let list = self.ok(km.list_keys().await, "list_keys");
        self.check(list.iter().any(|k| k.key_id == id), "list_keys", "the new key is not listed");
        let r = km.describe_key(&random_uuid()).await;
        self.err(r, "describe_key of an unknown key", "KeyNotFound", |e| matches!(e, KmsError::KeyNotFound { .. }));

        // Rotate.
        let g1 = self.generate(&id, &c, "generate_data_key under a new key").await;
        self.check(g1.wrapped.key_id == id, "generate_data_key", "key id is not the canonical id");
        self.check(g1.wrapped.key_version == v1, "generate_data_key", "version is not the current version");
        let rotated = self.ok(km.rotate_key(&id).await, "rotate_key");
        self.check(rotated.key_id == id, "rotate_key", format_args!("metadata of another key: {}", rotated.key_id));
        let v2 = rotated.current_version.clone();
        let ids: Vec<&str> = rotated.versions.iter().map(|v| v.id.as_str()).collect();
        if v2 == v1 && !self.caps.rotation_changes_version {
            self.note("rotation_changes_version", "rotate_key", format_args!("the current version stays {v1:?}"));
            self.check(ids.contains(&v2.as_str()), "rotate_key", format_args!("current version not in {ids:?}"));
        } else {
            // A server that does report a new version must report it properly.
            self.check(v2 != v1, "rotate_key", "the current version did not change");
            self.check(ids == [v1.as_str(), v2.as_str()], "rotate_key", format_args!("versions {ids:?}"));
        }
        let d = self.ok(km.describe_key(&id).await, "describe_key after rotate_key");
        self.check(d.current_version == v2, "describe_key after rotate_key", "current version is not the new one");
        let g2 = self.generate(&id, &c, "generate_data_key after rotate_key").await;
        self.check(
            g2.wrapped.key_version == v2,
            "generate_data_key after rotate_key",
            "new data keys must use the new version",
        );
        self.unwrap_matches(&g1, &c, "decrypt of a blob from before the rotation").await;
        self.unwrap_matches(&g2, &c, "decrypt of a blob from after the rotation").await;

        // Alias.
        let alias = format!("alias/envseal-conformance-{}", hex::encode(random_bytes(6)));
        if self.caps.aliases {
            self.ok(km.create_alias(&alias, &id).await, "create_alias");
            let d = self.ok(km.describe_key(&alias).await, "describe_key by alias");
            self.check(d.key_id == id, "describe_key by alias", "the alias resolves to another key");
            let aliases = self.ok(km.list_aliases().await, "list_aliases");
            self.check(
                aliases.iter().any(|a| a.name == alias && a.key_id == id),
                "list_aliases",
                "the new alias is missing",
            );
            let ga = self.generate(&alias, &c, "generate_data_key by alias").await;
            self.check(
                ga.wrapped.key_id == id && ga.wrapped.key_version == v2,
                "generate_data_key by alias",
                "the wrapped key must carry the canonical id and the current version",
            );
            let r = km.create_alias(&alias, &id).await;
            self.err(r, "create_alias of an existing alias", "AlreadyExists", |e| {
                matches!(e, KmsError::AlreadyExists { .. })
            });
        } else {
            self.unsupported(km.create_alias(&alias, &id).await, "create_alias", "aliases");
            self.unsupported(km.list_aliases().await, "list_aliases", "aliases");
            self.unsupported(km.delete_alias(&alias).await, "delete_alias", "aliases");
        }

        // Disable and enable.
        if self.caps.enable_disable {
            self.ok(km.disable_key(&id).await, "disable_key");
            let d = self.ok(km.describe_key(&id).await, "describe_key after disable_key");
            self.check(d.state == KeyState::Disabled, "disable_key", format_args!("state {:?}", d.state));
            let r = self.kms.generate_data_key(&id, &c).await;
            self.refused_by_state(r, "generate_data_key under a disabled key", "KeyDisabled", disabled);
            if self.caps.aliases {
                let r = self.kms.generate_data_key(&alias, &c).await;
                self.refused_by_state(r, "generate_data_key by alias under a disabled key", "KeyDisabled", disabled);
            }
            let r = self.kms.encrypt(&id, b"x", &c).await;
            self.refused_by_state(r, "encrypt under a disabled key", "KeyDisabled", disabled);
            let r = self.kms.decrypt(&g1.wrapped, &c).await;
            self.refused_by_state(r, "decrypt under a disabled key", "KeyDisabled", disabled);
            self.ok(km.enable_key(&id).await, "enable_key");
            let d = self.ok(km.describe_key(&id).await, "describe_key after enable_key");
            self.check(d.state == KeyState::Enabled, "enable_key", format_args!("state {:?}", d.state));
            self.unwrap_matches(&g1, &c, "decrypt after enable_key").await;
        } else {
            self.unsupported(km.disable_key(&id).await, "disable_key", "enable_disable");
            self.unsupported(km.enable_key(&id).await, "enable_key", "enable_disable");
            self.unchanged_and_usable(km, &id, &g1, "after the unsupported disable_key / enable_key").await;
        }

        // Schedule and cancel deletion.
        if self.caps.scheduled_deletion {
            self.deletion(km, &id, &g1).await;
        } else {
            self.unsupported(
                km.schedule_key_deletion(&id, MIN_DELETION_DAYS).await,
                "schedule_key_deletion",
                "scheduled_deletion",
            );
            self.unsupported(km.cancel_key_deletion(&id).await, "cancel_key_deletion", "scheduled_deletion");
            self.unchanged_and_usable(km, &id, &g1, "after the unsupported schedule / cancel_key_deletion").await;
        }

        // Minimum decryption version.
        if self.caps.min_decryption_version {
            let rule = "set_min_decryption_version to the newest version";
            self.ok(km.set_min_decryption_version(&id, &v2).await, rule);
            let d = self.ok(km.describe_key(&id).await, rule);
            self.check(
                d.min_decryption_version.as_deref() == Some(v2.as_str()),
                rule,
                format_args!("describe_key reports {:?}", d.min_decryption_version),
            );
            // With one version (a rotation that kept it, declared) no blob can be below the minimum.
            if v2 != v1 {
                let r = self.kms.decrypt(&g1.wrapped, &c).await;
                self.err(r, "decrypt of a blob below the minimum version", "KeyVersionBelowMinimum", |e| {
                    matches!(e, KmsError::KeyVersionBelowMinimum { version, min, .. } if *version == v1 && *min == v2)
                });
            }
            self.unwrap_matches(&g2, &c, "decrypt of a blob at the minimum version").await;
            let r = km.set_min_decryption_version(&id, "999999").await;
            self.err(r, "set_min_decryption_version to an unknown version", "KeyVersionNotFound", |e| {
                matches!(e, KmsError::KeyVersionNotFound { .. })
            });
        } else {
            let r = km.set_min_decryption_version(&id, &v2).await;
            self.unsupported(r, "set_min_decryption_version", "min_decryption_version");
            let d =
                self.ok(km.describe_key(&id).await, "describe_key after the unsupported set_min_decryption_version");
            self.check(
                d.min_decryption_version.is_none(),
                "describe_key after the unsupported set_min_decryption_version",
                format_args!("reports a minimum {:?}", d.min_decryption_version),
            );
            self.unwrap_matches(&g1, &c, "decrypt after the unsupported set_min_decryption_version").await;
        }

        // Clean up (a backend without scheduled deletion keeps the key: the server is a test one).
        if self.caps.aliases {
            self.ok(km.delete_alias(&alias).await, "delete_alias");
            let r = km.delete_alias(&alias).await;
            self.err(r, "delete_alias of a deleted alias", "KeyNotFound", |e| {
                matches!(e, KmsError::KeyNotFound { .. })
            });
        }
        if self.caps.scheduled_deletion {
            self.ok(km.schedule_key_deletion(&id, MIN_DELETION_DAYS).await, "schedule_key_deletion (clean-up)");
        }
    }

    /// Schedules and cancels deletion of `id` (enabled; `g` was wrapped by it), leaving it
    /// enabled.
    async fn deletion(&mut self, km: &dyn KeyManager, id: &str, g: &GeneratedDataKey) {
        let c = base_context();
        for days in [MIN_DELETION_DAYS - 1, MAX_DELETION_DAYS + 1] {
            let r = km.schedule_key_deletion(id, days).await;
            let rule = format!("schedule_key_deletion in {days} days");
            self.err(r, &rule, "InvalidRequest", |e| matches!(e, KmsError::InvalidRequest { .. }));
        }
        self.schedule_deletion(km, id, "schedule_key_deletion in 7 days").await;
        let r = self.kms.generate_data_key(id, &c).await;
        self.refused_by_state(r, "generate_data_key under a key pending deletion", "KeyPendingDeletion", pending);
        let r = self.kms.decrypt(&g.wrapped, &c).await;
        self.refused_by_state(r, "decrypt under a key pending deletion", "KeyPendingDeletion", pending);
        if self.caps.enable_disable {
            let rule = "enable_key of a key pending deletion";
            match km.enable_key(id).await {
                Ok(()) if !self.caps.key_states_enforced => {
                    self.note("key_states_enforced", rule, "the server enabled it");
                    let d = self.ok(km.describe_key(id).await, rule);
                    if d.state != KeyState::PendingDeletion {
                        // Put the key back where the next step expects it.
                        self.schedule_deletion(km, id, "schedule_key_deletion again, after the accepted enable_key")
                            .await;
                    }
                }
                r => self.err(r, rule, "KeyPendingDeletion", pending),
            }
        }
        self.ok(km.cancel_key_deletion(id).await, "cancel_key_deletion");
        let d = self.ok(km.describe_key(id).await, "describe_key after cancel_key_deletion");
        self.check(
            d.state == KeyState::Disabled && d.deletion_date.is_none(),
            "cancel_key_deletion leaves the key disabled",
            format_args!("state {:?}, deletion date {:?}", d.state, d.deletion_date),
        );
        let r = self.kms.generate_data_key(id, &c).await;
        self.refused_by_state(r, "generate_data_key after cancel_key_deletion", "KeyDisabled", disabled);
        self.ok(km.enable_key(id).await, "enable_key after cancel_key_deletion");
        self.unwrap_matches(g, &c, "decrypt after cancel_key_deletion and enable_key").await;

        let rule = "cancel_key_deletion of a key not pending deletion";
        match km.cancel_key_deletion(id).await {
            Ok(()) if !self.caps.key_states_enforced => {
                self.note("key_states_enforced", rule, "the server accepted it");
                let d = self.ok(km.describe_key(id).await, rule);
                if d.state != KeyState::Enabled {
                    self.ok(km.enable_key(id).await, "enable_key, after the accepted cancel_key_deletion");
                }
            }
            r => self.err(r, rule, "InvalidRequest", |e| matches!(e, KmsError::InvalidRequest { .. })),
        }
        let d = self.ok(km.describe_key(id).await, rule);
        self.check(
            d.state == KeyState::Enabled && d.deletion_date.is_none(),
            rule,
            format_args!("the key is left with state {:?}, deletion date {:?}", d.state, d.deletion_date),
        );
    }

    /// Schedules deletion of `id` in 7 days and checks the state and date reported.
    async fn schedule_deletion(&mut self, km: &dyn KeyManager, id: &str, rule: &str) {
        let m = self.ok(km.schedule_key_deletion(id, MIN_DELETION_DAYS).await, rule);
        self.check(
            m.state == KeyState::PendingDeletion,
            rule,
            format_args!("state {:?}, deletion date {:?}", m.state, m.deletion_date),
        );
        let Some(when) = m.deletion_date else { self.fail(rule, "no deletion date") };
        let day = Duration::from_secs(86_400);
        let now = SystemTime::now();
        let (earliest, latest) = (now + day * (MIN_DELETION_DAYS - 1), now + day * (MIN_DELETION_DAYS + 1));
        self.check(
            (earliest..=latest).contains(&when),
            rule,
            format_args!("deletion date {when:?} is not about {MIN_DELETION_DAYS} days from now ({now:?})"),
        );
        let d = self.ok(km.describe_key(id).await, rule);
        self.check(
            d.state == KeyState::PendingDeletion && d.deletion_date.is_some(),
            rule,
            format_args!("describe_key reports state {:?}, deletion date {:?}", d.state, d.deletion_date),
        );
    }
}
