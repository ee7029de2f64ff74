//! What the database tests share: the record type, its rows, the KMS.

#![allow(dead_code)]

use std::path::Path;
use std::sync::Arc;

use envseal_core::Kms;
use envseal_fields::{CachePolicy, EncryptionContext, FieldCipher, KeyVault, Record};
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
