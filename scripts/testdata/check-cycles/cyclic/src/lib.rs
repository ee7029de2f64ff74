//! Fixture: three import cycles.

mod a;
mod b;
mod c;
mod d;
mod deep;
mod e;

pub use crate::d::Thing;
