#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod client;
mod config;
pub mod context;
mod credentials;
mod error;
mod kms;
pub mod signer;
mod time;
pub mod uri;

#[cfg(test)]
mod fake;
#[cfg(test)]
#[path = "../tests/common/http.rs"]
mod test_http;
#[cfg(test)]
mod tests;

pub use crate::config::{
    AlibabaConfig, DEFAULT_TIMEOUT, ENDPOINT_VAR, Endpoint, NETWORK_VAR, REGION_VAR, SIGNATURE_VAR, default_retry,
};
pub use crate::credentials::{
    AccessKeySecret, CredentialSource, Credentials, DEFAULT_METADATA_ENDPOINT, EcsRamRoleConfig,
    METADATA_TOKEN_TTL_SECONDS, REFRESH_FRACTION, SecurityToken,
};
pub use crate::kms::{AlibabaKms, BACKEND, CREATE_KEY_SPEC, DATA_KEY_SPEC, KEY_USAGE, MAX_BLOB_LEN, RotationPolicy};
pub use crate::signer::SignatureVersion;
pub use crate::uri::AlibabaKeyUri;
/// The retry policy of [`AlibabaConfig::retry`] (the workspace's one, from `envseal-core`).
pub use envseal_core::retry::RetryPolicy;
