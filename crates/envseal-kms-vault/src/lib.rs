#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod config;
mod error;
mod keys;
mod kms;
mod names;

#[cfg(test)]
mod tests;

pub use crate::config::{
    DEFAULT_MOUNT, DEFAULT_TIMEOUT, TransitUri, URI_SCHEME, URI_SCHEME_HTTP, VaultConfig, VaultToken, default_retry,
};
pub use crate::keys::TransitKeyInfo;
pub use crate::kms::{BACKEND, GENERATED_NAME_PREFIX, KEY_TYPE, VaultKms, associated_data};
pub use crate::names::{ciphertext_version, is_valid_key_name};
/// The retry policy of [`VaultConfig::retry`] (the workspace's one, from `envseal-core`).
pub use envseal_core::retry::RetryPolicy;
