//! envseal test kit (not published): the backend conformance suite.
//!
//! Every KMS backend (mock, local, and each real server) runs the same checks, using only the
//! [`Kms`](envseal_core::Kms) and [`KeyManager`](envseal_core::KeyManager) traits:
//!
//! - [`run_conformance`]: data keys, decrypt, context binding, tampering, direct encryption
//!   limits, re-encryption, unknown keys, and that nothing secret is printed by `Debug`.
//! - [`run_key_management_conformance`]: the key lifecycle for backends with a `KeyManager`
//!   (create, describe, rotate, alias, disable/enable, deletion scheduling, minimum decryption
//!   version).
//!
//! [`postgres::TempPostgres`] starts a throwaway PostgreSQL server for database tests.
//!
//! Both suites hold a backend to envseal's full contract. A backend whose KMS does less (AWS's
//! Encrypt takes 1..=4096 bytes; Transit has no aliases), or whose test server deviates from
//! the real service (moto), declares it in a [`Capabilities`] and runs the same suite with
//! [`run_conformance_with`] / [`run_key_management_conformance_with`]: each relaxation swaps a
//! strict check for a weaker one that is still asserted (an unsupported operation must answer
//! `Unsupported`), and each tolerated deviation prints a `NOTE (server deviates) ...` line.
//!
//! They panic with a message naming the failed rule, for use inside `#[tokio::test]`:
//!
//! ```
//! use std::sync::Arc;
//!
//! use envseal_kms_mock::MockKms;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let kms = Arc::new(MockKms::new());
//! let key = kms.create_default_key();
//! envseal_testkit::run_conformance(kms.clone(), &key).await;
//! envseal_testkit::run_key_management_conformance(kms.clone()).await;
//!
//! // A backend without aliases, as Vault Transit declares itself.
//! use envseal_testkit::{Capabilities, WrongContextReport};
//! let transit = Capabilities::strict()
//!     .wrong_context(WrongContextReport::InvalidCiphertext)
//!     .aliases(false)
//!     .enable_disable(false)
//!     .scheduled_deletion(false);
//! assert_ne!(transit, Capabilities::default());
//! # }
//! ```
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod conformance;
pub mod postgres;

pub use conformance::{
    Capabilities, WrongContextReport, run_conformance, run_conformance_with, run_key_management_conformance,
    run_key_management_conformance_with,
};
