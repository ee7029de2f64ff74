//! Errors. No message carries text from the input: a `.env` line that fails to parse may well be
//! a secret pasted on the wrong line, so errors name a line number and a fixed description only.

use thiserror::Error;

/// A `.env` input was rejected: where, and why.
///
/// `Display` gives `line N: <description>`. Neither `Display` nor `Debug` contains any text taken
/// from the input.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
#[error("line {line}: {kind}")]
pub struct ParseError {
    line: usize,
    kind: ParseErrorKind,
}

impl ParseError {
    pub(crate) fn new(line: usize, kind: ParseErrorKind) -> Self {
        Self { line, kind }
    }

    /// The 1-based physical line the problem was found on. For an unterminated quote this is the
    /// line of the opening quote.
    pub fn line(&self) -> usize {
        self.line
    }

    /// What is wrong with that line.
    pub fn kind(&self) -> ParseErrorKind {
        self.kind
    }
}

/// Why a line was rejected (see the grammar in the crate documentation).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Error)]
#[non_exhaustive]
pub enum ParseErrorKind {
    /// The input is not valid UTF-8 (only from [`Document::parse_bytes`](crate::Document::parse_bytes)).
    #[error("invalid UTF-8")]
    InvalidUtf8,
    /// A carriage return not followed by a line feed outside a quoted value. Old Mac (CR-only)
    /// files land here instead of being read as one long line.
    #[error("carriage return without a line feed (only LF and CRLF line endings are supported)")]
    LoneCarriageReturn,
    /// The line starts with `=`: there is no key.
    #[error("missing key before `=`")]
    MissingKey,
    /// The key starts with, or contains, a character outside `[A-Za-z_][A-Za-z0-9_.-]*`.
    #[error("invalid key (a key must match [A-Za-z_][A-Za-z0-9_.-]*)")]
    InvalidKey,
    /// A key is not followed by `=` (for example `KEY` alone, or `bad key=1`).
    #[error("expected `=` after the key")]
    MissingEquals,
    /// A single-quoted value has no closing `'`.
    #[error("unterminated single-quoted value")]
    UnterminatedSingleQuote,
    /// A double-quoted value has no closing unescaped `"`.
    #[error("unterminated double-quoted value")]
    UnterminatedDoubleQuote,
    /// Something other than whitespace and a `#` comment follows a closing quote.
    #[error("unexpected text after the closing quote (only whitespace and a `#` comment may follow)")]
    TextAfterQuote,
}

/// A key given to [`Document::set`](crate::Document::set) is not a valid `.env` key.
///
/// The message does not repeat the key.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
#[error("invalid key (a key must match [A-Za-z_][A-Za-z0-9_.-]*)")]
#[non_exhaustive]
pub struct InvalidKey;
