#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod document;
mod error;
mod parse;
mod value;

pub use document::{Document, Entry, Line, LineEnding, Quote, RawLine, is_valid_key};
pub use error::{InvalidKey, ParseError, ParseErrorKind};
