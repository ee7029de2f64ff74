//! What the database tests share: the record type, its rows, the KMS.

#![allow(dead_code)]

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use async_trait::async_trait;
use envseal_core::Kms;
use envseal_fields::rotate::{Row, RowStore, RowUpdate};
use envseal_fields::{CachePolicy, EncryptionContext, Error, FieldCipher, KeyVault, Record};
use envseal_kms_local::{LocalKms, Unlock};

/// A users table: e-mail, phone and SSN sealed; blind indexes on e-mail and phone, and a
/// deliberately coarse (4-bit) compound index so that queries meet false positives.
#[derive(Record, Clone, Debug, PartialEq)]
#[envseal(table = "users", index(name = "contact_idx", fields("email", "phone"), bits = 4))]
pub struct User {
    #[envseal(primary_key)]
    pub id: i64,
    pub name: String,
    #[envseal(encrypt, index = "email_idx", normalize = "lowercase", bits = 16)]
    pub email: String,
    #[envseal(encrypt, index = "phone_idx", normalize = "digits", bits = 16)]
    pub phone: String,
    #[envseal(encrypt)]
    pub ssn: Option<String>,
}

/// The sealed columns, in table order.
pub const SEALED: [&str; 3] = ["email", "phone", "ssn"];

pub fn user(i: i64) -> User {
    User {
        id: i,
        name: format!("User {i}"),
        email: format!("User{i}@Example.com"),
        phone: format!("+1 (555) {:03}-{:04}", i % 1000, i),
        ssn: (i % 3 != 0).then(|| format!("{:03}-{:02}-{:04}", 100 + i % 800, i % 100, i % 10_000)),
    }
}

/// The local keystore (the default backend) in `dir`, and its default key.
pub fn local_kms(dir: &Path) -> Arc<LocalKms> {
    Arc::new(LocalKms::open_or_create(dir, Unlock::master_key_file()).expect("local keystore"))
}

pub fn base() -> EncryptionContext {
    EncryptionContext::from_pairs([("app", "field-tests")]).expect("context")
}

pub fn cipher(kms: Arc<dyn Kms>, vault: Arc<dyn KeyVault>, policy: CachePolicy) -> FieldCipher {
    FieldCipher::builder(kms, "alias/default", vault).context(base()).cache(policy).build().expect("cipher")
}

/// Checks what a row opens to.
pub async fn assert_opens(c: &FieldCipher, sealed: &UserSealed, want: &User) {
    let got = User::open(sealed, c).await.expect("row opens");
    assert_eq!(&got, want);
}

/// A row store that fails its `fail_at`-th batch read: an interruption in the middle of a job.
pub struct Flaky<'a> {
    pub inner: &'a dyn RowStore,
    pub fetches: AtomicUsize,
    pub fail_at: usize,
}

impl<'a> Flaky<'a> {
    pub fn new(inner: &'a dyn RowStore, fail_at: usize) -> Self {
        Self { inner, fetches: AtomicUsize::new(0), fail_at }
    }
}

#[async_trait]
impl RowStore for Flaky<'_> {
    fn columns(&self) -> &[String] {
        self.inner.columns()
    }
    async fn fetch(&self, after: Option<&str>, limit: usize, headers_only: bool) -> Result<Vec<Row>, Error> {
        if self.fetches.fetch_add(1, Ordering::SeqCst) + 1 == self.fail_at {
            return Err(Error::Database("connection reset (injected)".into()));
        }
        self.inner.fetch(after, limit, headers_only).await
    }
    async fn fetch_pks(&self, pks: &[String]) -> Result<Vec<Row>, Error> {
        self.inner.fetch_pks(pks).await
    }
    async fn update(&self, updates: &[RowUpdate]) -> Result<Vec<String>, Error> {
        self.inner.update(updates).await
    }
}

/// Checks a row after a re-key: it opens to `want` and no sealed cell is under a key of `old`.
pub async fn assert_rekeyed(
    c: &FieldCipher,
    s: &UserSealed,
    want: &User,
    old: &std::collections::HashSet<envseal_fields::KeyId>,
) {
    assert_opens(c, s, want).await;
    for v in [Some(&s.email), Some(&s.phone), s.ssn.as_ref()].into_iter().flatten() {
        let id = envseal_fields::keyref::key_id_of(v.as_bytes()).expect("a key-reference value");
        assert!(!old.contains(&id), "row {} still under an old key {id}", s.id);
    }
    assert_eq!(s.email_idx.generation_tag(), Some(2), "row {}: a term of the new index generation", s.id);
}
