#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod aead;
pub mod container;
pub mod context;
pub mod datakey;
pub mod entries;
pub mod envelope;
pub mod error;
mod kdf;
pub mod kms;
mod pipeline;
pub mod random;
pub mod retry;
pub mod rewrap;
mod sealer;
pub mod values;
mod wire;

pub use aead::Engine;
pub use context::EncryptionContext;
pub use datakey::{DataKey, SecretBytes};
pub use error::{Error, FormatError, KeyAttempt, KmsError};
pub use kms::{KeyManager, Kms, WrappedKey};
pub use sealer::{CachePolicy, CacheStats, Sealer};
