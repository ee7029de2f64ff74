#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod atomic;
pub mod percent;
pub mod wildcard;
pub mod zeroizing;
