#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod crypto;
pub mod error;
mod files;
mod format;
mod kms;
mod store;
mod unlock;

pub use error::LocalError;
pub use kms::BACKEND;
pub use store::{DEFAULT_ALIAS, KEYSTORE_FILE, LOCK_FILE, LocalKms};
pub use unlock::{Argon2Params, InitOptions, MASTER_KEY_FILE, Unlock, UnlockMode};
