//! Value quoting: decoding what the parser found, and encoding a new value so that it parses back
//! to exactly itself (README §Grammar, "Values").

/// Inline whitespace: space and tab only (README §Grammar). Other Unicode spaces are content.
pub(crate) fn is_ws(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

/// First character of a key: `[A-Za-z_]`.
pub(crate) fn is_key_start(b: u8) -> bool {
    b.is_ascii_alphabetic() || b == b'_'
}

/// Later characters of a key: `[A-Za-z0-9_.-]`.
pub(crate) fn is_key_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-')
}

/// Decodes the text between single quotes: literal, except that a CRLF line break becomes LF.
///
/// Line breaks are file layout, not content: a file converted between LF and CRLF (git
/// `autocrlf`, an editor) must keep the same values.
pub(crate) fn decode_single(inner: &str) -> String {
    inner.replace("\r\n", "\n")
}

/// Decodes the text between double quotes.
///
/// `\n` `\r` `\t` `\"` `\\` `\$` are escapes; a backslash before any other character stays a
/// backslash and that character is read normally. A raw CRLF line break becomes LF, as in
/// [`decode_single`].
pub(crate) fn decode_double(inner: &str) -> String {
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                let escaped = match chars.peek() {
                    Some('n') => Some('\n'),
                    Some('r') => Some('\r'),
                    Some('t') => Some('\t'),
                    Some(&c @ ('"' | '\\' | '$')) => Some(c),
                    _ => None,
                };
                match escaped {
                    Some(e) => {
                        out.push(e);
                        chars.next();
                    }
                    None => out.push('\\'),
                }
            }
            '\r' if chars.peek() == Some(&'\n') => {
                out.push('\n');
                chars.next();
            }
            c => out.push(c),
        }
    }
    out
}

/// Whether `v` can be written unquoted and read back unchanged.
///
/// `space_before` says whether whitespace separates `=` from the value: then a leading `#` would
/// start a comment.
pub(crate) fn unquoted_ok(v: &str, space_before: bool) -> bool {
    let b = v.as_bytes();
    let (Some(&first), Some(&last)) = (b.first(), b.last()) else {
        return true; // empty: `KEY=`
    };
    if is_ws(first) || is_ws(last) || first == b'\'' || first == b'"' {
        return false;
    }
    if space_before && first == b'#' {
        return false;
    }
    if b.iter().any(|&c| c == b'\n' || c == b'\r') {
        return false;
    }
    !b.windows(2).any(|w| is_ws(w[0]) && w[1] == b'#')
}

/// Whether `v` is plain enough to be written unquoted in a new line: only characters no common
/// `.env` reader or POSIX shell assignment treats specially. Sealed values (`ENC[v1:...]`,
/// base64url) qualify.
pub(crate) fn plain(v: &str) -> bool {
    v.bytes().all(|c| {
        c.is_ascii_alphanumeric()
            || matches!(c, b'_' | b'-' | b'.' | b':' | b'/' | b'+' | b'=' | b'@' | b'%' | b',' | b'[' | b']' | b'^')
    })
}

/// Whether `v` can be written between single quotes: no `'`, and no CR (a raw CR before a line
/// break would read back as part of a CRLF).
pub(crate) fn single_ok(v: &str) -> bool {
    !v.contains(['\'', '\r'])
}

/// `'v'`, with each LF written as the line break `brk`.
pub(crate) fn encode_single(v: &str, brk: &str) -> String {
    let mut out = String::with_capacity(v.len() + 2);
    out.push('\'');
    for c in v.chars() {
        match c {
            '\n' => out.push_str(brk),
            c => out.push(c),
        }
    }
    out.push('\'');
    out
}

/// `"v"` with `\` `"` CR escaped; LF escaped as `\n`, or written as the line break `brk` when the
/// value is laid out on several lines.
pub(crate) fn encode_double(v: &str, brk: Option<&str>) -> String {
    let mut out = String::with_capacity(v.len() + 2);
    out.push('"');
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\r' => out.push_str("\\r"),
            '\n' => out.push_str(brk.unwrap_or("\\n")),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn double_escapes() {
        assert_eq!(decode_double(r#"a\nb\rc\td\"e\\f\$g"#), "a\nb\rc\td\"e\\f$g");
    }

    #[test]
    fn double_unknown_escapes_are_literal() {
        assert_eq!(decode_double(r"\q\'\u00e9\{"), r"\q\'\u00e9\{");
        // The character after an unknown escape is read normally: here a CRLF break.
        assert_eq!(decode_double("\\\r\nx"), "\\\nx");
    }

    #[test]
    fn crlf_breaks_decode_to_lf() {
        assert_eq!(decode_double("a\r\nb\nc"), "a\nb\nc");
        assert_eq!(decode_single("a\r\nb\nc"), "a\nb\nc");
        // A lone CR inside quotes is content.
        assert_eq!(decode_single("a\rb"), "a\rb");
        assert_eq!(decode_double("a\rb"), "a\rb");
    }

    #[test]
    fn encode_double_round_trips() {
        for v in ["", "plain", "a\"b\\c", "x\r\ny\n", "\\", "$HOME ${X}", "tab\there", "é🔑"] {
            for brk in [None, Some("\n"), Some("\r\n")] {
                let enc = encode_double(v, brk);
                assert_eq!(decode_double(&enc[1..enc.len() - 1]), v, "{enc:?}");
            }
        }
    }

    #[test]
    fn encode_single_round_trips() {
        for v in ["", "plain", "a\"b\\c\\n", "x\ny\n", "$HOME"] {
            assert!(single_ok(v));
            for brk in ["\n", "\r\n"] {
                let enc = encode_single(v, brk);
                assert_eq!(decode_single(&enc[1..enc.len() - 1]), v);
            }
        }
        assert!(!single_ok("it's"));
        assert!(!single_ok("a\rb"));
    }

    #[test]
    fn unquoted_rules() {
        assert!(unquoted_ok("", false));
        assert!(unquoted_ok("", true));
        assert!(unquoted_ok("a b", false));
        assert!(unquoted_ok("a#b", true));
        assert!(unquoted_ok("#a", false));
        assert!(!unquoted_ok("#a", true));
        assert!(!unquoted_ok("a #b", false));
        assert!(!unquoted_ok("a\t#b", false));
        assert!(!unquoted_ok(" a", false));
        assert!(!unquoted_ok("a\t", false));
        assert!(!unquoted_ok("'a", false));
        assert!(!unquoted_ok("\"a", false));
        assert!(unquoted_ok("a'b\"", false));
        assert!(!unquoted_ok("a\nb", false));
        assert!(!unquoted_ok("a\rb", false));
    }

    #[test]
    fn plain_values() {
        assert!(plain(""));
        assert!(plain("ENC[v1:str:AbC-_x09.Zz]"));
        assert!(plain("dGVzdA=="));
        assert!(!plain("a b"));
        assert!(!plain("$x"));
        assert!(!plain("~/x"));
        assert!(!plain("é"));
    }
}
