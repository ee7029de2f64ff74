#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod document;
pub mod dotenv;
mod error;
pub mod json;
mod meta;
mod parse;
mod sealing;
pub mod yaml;

pub use document::{Document, Entry, Format};
pub use error::StoreError;
pub use meta::Metadata;
pub use parse::{parse, parse_key_path};
pub use sealing::{FixedSeal, SealSpec, Unlocked, seal, seal_fixed, unlock, unlock_with_data_key};
