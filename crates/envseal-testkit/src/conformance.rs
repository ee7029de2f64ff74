//! The backend conformance suite: what every [`Kms`] (and [`KeyManager`]) must satisfy.
//!
//! The checks use only the traits, so one suite runs against the mock, the local keystore and
//! each real server (STYLE.md §7). They panic with a message naming the backend and the rule
//! that failed.
//!
//! Real KMSs cannot always tell a wrong encryption context from a damaged blob, so where the
//! context is wrong either [`KmsError::WrongContext`] or [`KmsError::InvalidCiphertext`] is
//! accepted.

use std::fmt::{self, Debug};
use std::sync::Arc;

use envseal_core::datakey::DATA_KEY_LEN;
use envseal_core::kms::{
    GeneratedDataKey, KeySpec, KeyState, MAX_DIRECT_ENCRYPT, MIN_DELETION_DAYS, WrappedKey, decrypt_data_key,
};
use envseal_core::{EncryptionContext, KeyManager, Kms, KmsError};

/// Runs the cryptographic conformance checks against `kms`, using `key` (an id or alias of an
/// enabled key that `kms` may use for every operation).
///
/// Checks that:
/// - `generate_data_key` returns 32-byte keys that differ on every call, a wrapped key naming
///   this backend, a key id and a version, and a blob that does not contain the key;
/// - the wrapped key decrypts to the same key, with the same key id and version;
/// - a wrong context fails (`WrongContext` or `InvalidCiphertext`), including contexts that
///   naive encodings confuse (`{"ab":"c"}` / `{"a":"bc"}`, empty / one empty entry);
/// - context entries are order-independent;
/// - a tampered blob (a byte flipped at the start, middle or end, truncated, empty) fails with
///   an error that is not retryable;
/// - `encrypt` / `decrypt` round-trip 0, 1 and 6144 bytes, and 6145 bytes is
///   `PlaintextTooLarge`;
/// - `re_encrypt` to the same key under a new context works, the old context does not open the
///   new blob, the old blob still opens, and a wrong source context fails;
/// - an unknown key is `KeyNotFound`;
/// - the `Debug` output of every value returned contains no key or plaintext bytes.
///
/// # Panics
/// On the first rule the backend breaks, with a message naming it.
pub async fn run_conformance(kms: Arc<dyn Kms>, key: &str) {
    let mut s = Suite::new(&*kms);
    s.data_keys(key).await;
    s.wrong_context(key).await;
    s.context_order(key).await;
    s.tampering(key).await;
    s.direct_encryption(key).await;
    s.re_encryption(key).await;
    s.unknown_key().await;
    s.check_debug_leaks();
}

/// Runs the key-management conformance checks against a backend with a [`KeyManager`]. It
/// creates a key of its own and schedules it for deletion at the end.
///
/// The lifecycle: create → describe / list → rotate (old blobs still decrypt, new data keys
/// use the new version) → alias (describe and generate through it; a duplicate is
/// `AlreadyExists`) → disable (generate, encrypt and decrypt fail with `KeyDisabled`) → enable
/// → schedule deletion (6 and 31 days are `InvalidRequest`, 7 works; cryptographic operations
/// and enable fail with `KeyPendingDeletion`) → cancel (the key comes back disabled) → enable →
/// minimum decryption version set to the newest (the old blob fails with
/// `KeyVersionBelowMinimum`, an unknown version is `KeyVersionNotFound`) → delete the alias.
///
/// A backend that answers `Unsupported` to `set_min_decryption_version` skips that step, with a
/// note on stderr.
///
/// # Panics
/// If `kms.key_manager()` is `None`, or on the first rule the backend breaks.
pub async fn run_key_management_conformance(kms: Arc<dyn Kms>) {
    let mut s = Suite::new(&*kms);
    let Some(km) = kms.key_manager() else {
        panic!("conformance [{}]: key_manager() is None; run_key_management_conformance needs one", s.backend)
    };
    s.lifecycle(km).await;
    s.check_debug_leaks();
}

/// State shared by the checks: the backend under test, every `Debug` text produced from a
/// returned value, and every secret those texts must not contain.
struct Suite<'a> {
    kms: &'a dyn Kms,
    backend: String,
    debug_texts: Vec<String>,
    secrets: Vec<Vec<u8>>,
}

/// The encryption context most checks use.
fn base_context() -> EncryptionContext {
    context(&[("purpose", "envseal-conformance"), ("tenant", "t-1")])
}

fn context(pairs: &[(&str, &str)]) -> EncryptionContext {
    // Invariant: the fixtures are valid user contexts.
    EncryptionContext::from_pairs(pairs.iter().copied()).expect("valid fixture context")
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

impl<'a> Suite<'a> {
    fn new(kms: &'a dyn Kms) -> Self {
        Self { kms, backend: kms.backend().to_owned(), debug_texts: Vec::new(), secrets: Vec::new() }
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
    fn err<T: Debug>(&mut self, r: Result<T, KmsError>, rule: &str, expected: &str, f: impl Fn(&KmsError) -> bool) {
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

    #[track_caller]
    fn wrong_context_err<T: Debug>(&mut self, r: Result<T, KmsError>, rule: &str) {
        self.err(r, rule, "WrongContext or InvalidCiphertext", |e| {
            matches!(e, KmsError::WrongContext | KmsError::InvalidCiphertext)
        });
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
            (context(&[("ab", "c")]), context(&[("a", "bc")])),
            (EncryptionContext::new(), context(&[("a", "")])),
        ];
        for (right, wrong) in &pairs {
            let rule = format!("decrypt with a wrong context ({right:?} sealed, {wrong:?} given)");
            let g = self.generate(key, right, &rule).await;
            self.wrong_context_err(self.kms.decrypt(&g.wrapped, wrong).await, &rule);
            let w = self.ok(self.kms.encrypt(key, b"conformance context", right).await, &rule);
            self.wrong_context_err(self.kms.decrypt(&w, wrong).await, &rule);
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
        for size in [0, 1, MAX_DIRECT_ENCRYPT] {
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
            self.wrong_context_err(self.kms.decrypt(&w, &EncryptionContext::new()).await, &rule);
        }
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
        self.wrong_context_err(self.kms.decrypt(&w2, &c1).await, "the old context must not open the re-encrypted blob");
        let d = self.ok(self.kms.decrypt(&w1, &c1).await, "the original blob still opens after re_encrypt");
        self.check(d.plaintext.expose_secret() == secret, rule, "the original blob decrypts to different bytes");
        self.wrong_context_err(self.kms.re_encrypt(&w1, &c2, key, &c2).await, "re_encrypt with a wrong source context");

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
        let v2 = rotated.current_version.clone();
        self.check(v2 != v1, "rotate_key", "the current version did not change");
        let ids: Vec<&str> = rotated.versions.iter().map(|v| v.id.as_str()).collect();
        self.check(ids == [v1.as_str(), v2.as_str()], "rotate_key", format_args!("versions {ids:?}"));
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

        // Disable and enable.
        self.ok(km.disable_key(&id).await, "disable_key");
        let d = self.ok(km.describe_key(&id).await, "describe_key after disable_key");
        self.check(d.state == KeyState::Disabled, "disable_key", format_args!("state {:?}", d.state));
        let disabled = |e: &KmsError| matches!(e, KmsError::KeyDisabled { .. });
        let r = self.kms.generate_data_key(&id, &c).await;
        self.err(r, "generate_data_key under a disabled key", "KeyDisabled", disabled);
        let r = self.kms.generate_data_key(&alias, &c).await;
        self.err(r, "generate_data_key by alias under a disabled key", "KeyDisabled", disabled);
        let r = self.kms.encrypt(&id, b"x", &c).await;
        self.err(r, "encrypt under a disabled key", "KeyDisabled", disabled);
        let r = self.kms.decrypt(&g1.wrapped, &c).await;
        self.err(r, "decrypt under a disabled key", "KeyDisabled", disabled);
        self.ok(km.enable_key(&id).await, "enable_key");
        self.unwrap_matches(&g1, &c, "decrypt after enable_key").await;

        // Schedule and cancel deletion.
        for days in [MIN_DELETION_DAYS - 1, envseal_core::kms::MAX_DELETION_DAYS + 1] {
            let r = km.schedule_key_deletion(&id, days).await;
            let rule = format!("schedule_key_deletion in {days} days");
            self.err(r, &rule, "InvalidRequest", |e| matches!(e, KmsError::InvalidRequest { .. }));
        }
        let m = self.ok(km.schedule_key_deletion(&id, MIN_DELETION_DAYS).await, "schedule_key_deletion in 7 days");
        self.check(
            m.state == KeyState::PendingDeletion && m.deletion_date.is_some(),
            "schedule_key_deletion in 7 days",
            format_args!("state {:?}, deletion date {:?}", m.state, m.deletion_date),
        );
        let pending = |e: &KmsError| matches!(e, KmsError::KeyPendingDeletion { .. });
        let r = self.kms.generate_data_key(&id, &c).await;
        self.err(r, "generate_data_key under a key pending deletion", "KeyPendingDeletion", pending);
        let r = self.kms.decrypt(&g1.wrapped, &c).await;
        self.err(r, "decrypt under a key pending deletion", "KeyPendingDeletion", pending);
        let r = km.enable_key(&id).await;
        self.err(r, "enable_key of a key pending deletion", "KeyPendingDeletion", pending);
        self.ok(km.cancel_key_deletion(&id).await, "cancel_key_deletion");
        let d = self.ok(km.describe_key(&id).await, "describe_key after cancel_key_deletion");
        self.check(
            d.state == KeyState::Disabled && d.deletion_date.is_none(),
            "cancel_key_deletion leaves the key disabled",
            format_args!("state {:?}, deletion date {:?}", d.state, d.deletion_date),
        );
        let r = self.kms.generate_data_key(&id, &c).await;
        self.err(r, "generate_data_key after cancel_key_deletion", "KeyDisabled", disabled);
        self.ok(km.enable_key(&id).await, "enable_key after cancel_key_deletion");
        self.unwrap_matches(&g1, &c, "decrypt after cancel_key_deletion and enable_key").await;

        // Minimum decryption version.
        match km.set_min_decryption_version(&id, &v2).await {
            Err(KmsError::Unsupported { .. }) => {
                eprintln!("conformance [{}]: set_min_decryption_version is unsupported; skipped", self.backend);
            }
            r => {
                let rule = "set_min_decryption_version to the newest version";
                self.ok(r, rule);
                let d = self.ok(km.describe_key(&id).await, rule);
                self.check(
                    d.min_decryption_version.as_deref() == Some(v2.as_str()),
                    rule,
                    format_args!("describe_key reports {:?}", d.min_decryption_version),
                );
                let r = self.kms.decrypt(&g1.wrapped, &c).await;
                self.err(r, "decrypt of a blob below the minimum version", "KeyVersionBelowMinimum", |e| {
                    matches!(e, KmsError::KeyVersionBelowMinimum { version, min, .. } if *version == v1 && *min == v2)
                });
                self.unwrap_matches(&g2, &c, "decrypt of a blob at the minimum version").await;
                let r = km.set_min_decryption_version(&id, "999999").await;
                self.err(r, "set_min_decryption_version to an unknown version", "KeyVersionNotFound", |e| {
                    matches!(e, KmsError::KeyVersionNotFound { .. })
                });
            }
        }

        // Clean up.
        self.ok(km.delete_alias(&alias).await, "delete_alias");
        let r = km.delete_alias(&alias).await;
        self.err(r, "delete_alias of a deleted alias", "KeyNotFound", |e| matches!(e, KmsError::KeyNotFound { .. }));
        self.ok(km.schedule_key_deletion(&id, MIN_DELETION_DAYS).await, "schedule_key_deletion (clean-up)");
    }
}
