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
//! Both panic with a message naming the failed rule, for use inside `#[tokio::test]`:
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
//! envseal_testkit::run_key_management_conformance(kms).await;
//! # }
//! ```
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod conformance;

pub use conformance::{run_conformance, run_key_management_conformance};
