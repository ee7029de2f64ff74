#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod document;
mod error;
mod line;
mod parse;
mod value;

pub use document::{Document, is_valid_key};
pub use error::{InvalidKey, ParseError, ParseErrorKind};
pub use line::{Entry, Line, LineEnding, Quote, RawLine};
