//! The wildcard matcher: `*` matches any run of characters (the empty one included), `?`
//! exactly one character; everything else matches itself, optionally ignoring case.
//!
//! The whole text must match (no implicit `*` at either end). Matching is greedy with
//! backtracking to the last `*` only, so it runs in `O(pattern × text)` at worst and needs no
//! allocation beyond the two character vectors. Patterns in another syntax (IAM's `${*}`, a
//! literal star; audit queries where `?` is an ordinary character) say what each character
//! stands for ([`Pattern::with_syntax`]).

/// One element of a pattern.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Token {
    /// Any run of characters, the empty one included (`*`).
    AnyRun,
    /// Exactly one character (`?`).
    AnyOne,
    /// This character.
    Char(char),
}

/// A parsed pattern.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pattern {
    tokens: Vec<Token>,
    ignore_case: bool,
}

impl Pattern {
    /// `*` and `?` are wildcards, every other character is literal ([`Pattern::standard`]).
    /// With `ignore_case`, the pattern and the texts are compared in lower case (Unicode, as
    /// `str::to_lowercase`).
    pub fn new(pattern: &str, ignore_case: bool) -> Self {
        Self::with_syntax(pattern, ignore_case, Self::standard)
    }

    /// The standard syntax: `*` is [`Token::AnyRun`], `?` is [`Token::AnyOne`].
    pub fn standard(c: char) -> Token {
        match c {
            '*' => Token::AnyRun,
            '?' => Token::AnyOne,
            c => Token::Char(c),
        }
    }

    /// A pattern in another syntax: `syntax` says what each character of `pattern` (lowered
    /// first with `ignore_case`) stands for. E.g. IAM's `${*}` (a literal star) or audit
    /// queries, where `?` is an ordinary character.
    pub fn with_syntax(pattern: &str, ignore_case: bool, syntax: impl Fn(char) -> Token) -> Self {
        let folded;
        let pattern = if ignore_case {
            folded = pattern.to_lowercase();
            folded.as_str()
        } else {
            pattern
        };
        Self { tokens: pattern.chars().map(syntax).collect(), ignore_case }
    }

    /// Whether the whole of `text` matches.
    pub fn matches(&self, text: &str) -> bool {
        if self.ignore_case {
            match_chars(&self.tokens, &text.to_lowercase().chars().collect::<Vec<_>>())
        } else {
            match_chars(&self.tokens, &text.chars().collect::<Vec<_>>())
        }
    }
}

/// `Pattern::new(pattern, ignore_case).matches(text)`.
pub fn matches(pattern: &str, text: &str, ignore_case: bool) -> bool {
    Pattern::new(pattern, ignore_case).matches(text)
}

fn match_chars(p: &[Token], t: &[char]) -> bool {
    // (pattern index, text index); the last `*` seen and the text index it was tried at.
    let (mut pi, mut ti, mut star, mut mark) = (0usize, 0usize, None, 0usize);
    while ti < t.len() {
        match p.get(pi) {
            Some(Token::AnyOne) => {
                pi += 1;
                ti += 1;
            }
            Some(Token::Char(c)) if *c == t[ti] => {
                pi += 1;
                ti += 1;
            }
            Some(Token::AnyRun) => {
                star = Some(pi);
                mark = ti;
                pi += 1;
            }
            _ => match star {
                // Let the last `*` take one more character and try again from there.
                Some(s) => {
                    pi = s + 1;
                    mark += 1;
                    ti = mark;
                }
                None => return false,
            },
        }
    }
    p[pi..].iter().all(|t| *t == Token::AnyRun)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stars_and_questions() {
        assert!(matches("Generate*", "GenerateDataKey", false));
        assert!(matches("*Data*", "GenerateDataKey", false));
        assert!(matches("*", "", false));
        assert!(matches("**", "x", false));
        assert!(matches("a?c", "abc", false));
        assert!(!matches("a?c", "ac", false));
        assert!(!matches("Gen*Z", "GenerateDataKey", false));
        assert!(!matches("", "x", false));
        assert!(matches("", "", false));
        assert!(matches("a*b*c", "aXbYbZc", false));
        assert!(!matches("a*b*c", "aXbYbZ", false));
        assert!(matches("arn:*:key/*", "arn:aws:kms:us-east-1:1:key/k", false));
        // One `?` is one character, not one byte.
        assert!(matches("?", "é", false));
        // A `*` in the text is an ordinary character for a `*` in the pattern.
        assert!(matches("*b", "*xb", false));
        assert!(matches("a*", "a*", false));
    }

    #[test]
    fn case() {
        assert!(!matches("decrypt", "Decrypt", false));
        assert!(matches("decrypt", "Decrypt", true));
        assert!(matches("KMS:*", "kms:Decrypt", true));
        // Unicode lower-casing of both sides, as str::to_lowercase does it.
        assert!(matches("ÄB*", "äbc", true));
        assert!(matches("ΟΔΟΣ", "οδος", true));
    }

    #[test]
    fn other_syntaxes() {
        // `#` for a literal star: only a `*` matches it.
        let p = Pattern::with_syntax("a#b", false, |c| if c == '#' { Token::Char('*') } else { Pattern::standard(c) });
        assert!(p.matches("a*b"));
        assert!(!p.matches("aXb"));
        // `?` as an ordinary character.
        let p = Pattern::with_syntax("x?*", true, |c| if c == '*' { Token::AnyRun } else { Token::Char(c) });
        assert!(p.matches("X?yz"));
        assert!(!p.matches("Xyz"));
        assert_eq!(Pattern::with_syntax("A*", true, Pattern::standard), Pattern::new("a*", true));
    }

    #[test]
    fn backtracking_is_bounded() {
        let text = "a".repeat(2000);
        let pattern = format!("{}b", "*a".repeat(50));
        assert!(!matches(&pattern, &text, false));
    }
}
