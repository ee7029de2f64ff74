//! Paths in comments and strings are not edges: crate::e::E here would make a cycle with e.rs.

use crate::b::B;

/* crate::e::E in a block /* nested */ comment */
pub const PATH: &str = "crate::e::E";
pub const RAW: &str = r#"use crate::e::E; "quoted""#;
pub const QUOTE: char = '"';

pub struct A(pub B);

#[cfg(test)]
mod tests {
    // `super` here is a.rs itself, not the crate root.
    use super::*;

    fn _f(_: A) {}
}
