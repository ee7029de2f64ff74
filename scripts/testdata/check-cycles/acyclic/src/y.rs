/// See [`crate::x::X`]: a comment, not an edge.
pub fn helper() {}

pub const NAME: &str = "crate::x::X";
pub const QUOTE: char = '"';
pub const TICK: char = '\'';

pub fn first<'a>(s: &'a str) -> &'a str {
    s // crate::z::Z
}

mod inner {
    use super::helper;

    pub fn call() {
        helper();
    }
}

#[cfg(test)]
mod tests {
    // Unit tests may use what is built on this file (x.rs uses y.rs): not an edge.
    use crate::x::X;

    fn _f(_: X) {}
}
