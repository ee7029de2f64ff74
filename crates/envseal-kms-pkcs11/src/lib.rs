#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod blob;
mod kms;
mod objects;
mod pin;
mod token;
pub mod uri;

pub use blob::BACKEND;
pub use kms::{Pkcs11Kms, Pkcs11Options};
pub use objects::{APP_ALIAS, APP_KEY};
pub use pin::{PIN_ENV, Pin, PinPrompt, PinRequest};
pub use token::{DEFAULT_MODULES, MODULE_ENV};
pub use uri::{Pkcs11Uri, UriError};
