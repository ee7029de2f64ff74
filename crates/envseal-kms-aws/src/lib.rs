#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod api;
pub mod context;
mod error;
mod factory;
#[cfg(test)]
mod fake;
mod kms;
mod sdk;
pub mod uri;

/// The `aws-config` crate this backend is built on, for [`AwsKms::new`]'s `SdkConfig` of the
/// matching version.
pub use aws_config;
/// Static credentials (for emulators and tests), from the SDK.
pub use aws_sdk_kms::config::Credentials;
pub use factory::{AwsFactory, SCHEME};
pub use kms::{AwsKms, AwsKmsBuilder, DEFAULT_ATTEMPT_TIMEOUT, DEFAULT_MAX_ATTEMPTS, DEFAULT_OPERATION_TIMEOUT};
pub use uri::{AwsKeyUri, KeyRefKind, UriError};

/// Backend name recorded in wrapped-key entries (`WrappedKey::backend`) and the URI scheme.
pub const BACKEND: &str = "aws-kms";

/// Most bytes AWS KMS's own Encrypt takes (envseal's trait allows 6 KiB; above 4096 bytes AWS
/// answers `ValidationException`, reported as `KmsError::PlaintextTooLarge` with this limit).
pub const AWS_MAX_ENCRYPT: usize = 4096;

/// The key version recorded when AWS reports no key material id (Encrypt's response has none;
/// neither have emulators such as moto). See the README, §Versions and rotation.
pub const UNVERSIONED: &str = "unversioned";
