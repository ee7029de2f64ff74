//! Fixture: no import cycle.

mod x;
mod y;
mod z;
#[path = "extra/p.rs"]
mod p;
#[cfg(test)]
mod tests;

pub use crate::x::X;
pub use crate::z::Z;

/// Used by x.rs: an edge to the root, and the root's re-export of `X` is no edge back.
pub struct Config;
