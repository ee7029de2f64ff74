//! The parser (README §Grammar). It splits the input into fields without dropping a byte, so that
//! `Document::to_string` is the identity on every accepted input.

use crate::error::{ParseError, ParseErrorKind};
use crate::line::{Entry, Line, LineEnding, Quote, RawLine};
use crate::value::{decode_double, decode_single, is_key_char, is_key_start, is_ws};

/// Parses a whole file: whether it starts with a byte order mark, and its lines.
pub(crate) fn parse(input: &str) -> Result<(bool, Vec<Line>), ParseError> {
    let (bom, body) = match input.strip_prefix('\u{feff}') {
        Some(rest) => (true, rest),
        None => (false, input),
    };
    let mut p = Parser { s: body, b: body.as_bytes(), pos: 0, line: 1 };
    let mut lines = Vec::new();
    while p.pos < p.s.len() {
        lines.push(p.next_line()?);
    }
    Ok((bom, lines))
}

struct Parser<'a> {
    s: &'a str,
    b: &'a [u8],
    pos: usize,
    /// 1-based number of the physical line `pos` is on.
    line: usize,
}

impl Parser<'_> {
    fn error(&self, kind: ParseErrorKind) -> ParseError {
        ParseError::new(self.line, kind)
    }

    fn skip_ws(&self, mut i: usize) -> usize {
        while self.b.get(i).copied().is_some_and(is_ws) {
            i += 1;
        }
        i
    }

    fn at_eol(&self, i: usize) -> bool {
        match self.b.get(i) {
            None | Some(b'\n') => true,
            Some(b'\r') => self.b.get(i + 1) == Some(&b'\n'),
            _ => false,
        }
    }

    /// The end of the physical line from `from`: where its text ends, its ending, and where the
    /// next line starts. Rejects a CR that does not begin a CRLF (README §Grammar, "Lines").
    fn line_end(&self, from: usize) -> Result<(usize, LineEnding, usize), ParseError> {
        let rest = &self.b[from..];
        let (text_end, ending, next) = match rest.iter().position(|&c| c == b'\n') {
            Some(i) if i > 0 && rest[i - 1] == b'\r' => (from + i - 1, LineEnding::CrLf, from + i + 1),
            Some(i) => (from + i, LineEnding::Lf, from + i + 1),
            None => (self.b.len(), LineEnding::None, self.b.len()),
        };
        if self.b[from..text_end].contains(&b'\r') {
            return Err(self.error(ParseErrorKind::LoneCarriageReturn));
        }
        Ok((text_end, ending, next))
    }

    fn advance(&mut self, next: usize, ending: LineEnding) {
        self.pos = next;
        if ending != LineEnding::None {
            self.line += 1;
        }
    }

    fn next_line(&mut self) -> Result<Line, ParseError> {
        let start = self.pos;
        let indent_end = self.skip_ws(start);
        let comment = self.b.get(indent_end) == Some(&b'#');
        if !comment && !matches!(self.b.get(indent_end), None | Some(b'\n' | b'\r')) {
            return self.entry(start, indent_end).map(Line::Entry);
        }
        // Blank, whitespace-only or comment line (a lone CR is caught by `line_end`).
        let (text_end, ending, next) = self.line_end(start)?;
        let raw = RawLine { text: self.s[start..text_end].to_owned(), ending };
        self.advance(next, ending);
        Ok(if comment { Line::Comment(raw) } else { Line::Blank(raw) })
    }

    fn entry(&mut self, start: usize, indent_end: usize) -> Result<Entry, ParseError> {
        let (s, b) = (self.s, self.b);
        let mut p = indent_end;

        // `export` is a prefix only when whitespace and then a key follow it; `export=1` and
        // `export = 1` assign the key `export`.
        let mut export = None;
        if s[p..].starts_with("export") {
            let ws_end = self.skip_ws(p + 6);
            if ws_end > p + 6 && b.get(ws_end).copied().is_some_and(is_key_start) {
                export = Some(s[p + 6..ws_end].to_owned());
                p = ws_end;
            }
        }

        let key_start = p;
        match b.get(p) {
            Some(&c) if is_key_start(c) => {}
            Some(b'=') => return Err(self.error(ParseErrorKind::MissingKey)),
            _ => return Err(self.error(ParseErrorKind::InvalidKey)),
        }
        p += 1;
        while b.get(p).copied().is_some_and(is_key_char) {
            p += 1;
        }
        let key_end = p;
        let eq = self.skip_ws(key_end);
        if b.get(eq) != Some(&b'=') {
            // `KEY!=1` is a bad key character; `KEY`, `KEY x=1` lack the `=` after the key.
            let kind = if eq == key_end && !self.at_eol(eq) {
                ParseErrorKind::InvalidKey
            } else {
                ParseErrorKind::MissingEquals
            };
            return Err(self.error(kind));
        }
        let value_start = self.skip_ws(eq + 1);
        let after_eq = &s[eq + 1..value_start];

        let (quote, raw_value, value, trailing, ending, next) = match b.get(value_start) {
            Some(&q @ (b'\'' | b'"')) => {
                let close = if q == b'\'' {
                    b[value_start + 1..]
                        .iter()
                        .position(|&c| c == b'\'')
                        .map(|i| value_start + 1 + i)
                        .ok_or_else(|| self.error(ParseErrorKind::UnterminatedSingleQuote))?
                } else {
                    self.closing_double_quote(value_start + 1)?
                };
                let raw = &s[value_start..=close];
                let inner = &raw[1..raw.len() - 1];
                // The closing quote may be several lines down.
                self.line += raw.bytes().filter(|&c| c == b'\n').count();
                let (text_end, ending, next) = self.line_end(close + 1)?;
                let trailing = &s[close + 1..text_end];
                let rest = trailing.trim_start_matches([' ', '\t']);
                if !(rest.is_empty() || rest.starts_with('#')) {
                    return Err(self.error(ParseErrorKind::TextAfterQuote));
                }
                let (quote, value) = if q == b'\'' {
                    (Quote::Single, decode_single(inner))
                } else {
                    (Quote::Double, decode_double(inner))
                };
                (quote, raw, value, trailing, ending, next)
            }
            _ => {
                let (text_end, ending, next) = self.line_end(value_start)?;
                let region = &s[value_start..text_end];
                let rb = region.as_bytes();
                // A comment starts at the first `#` preceded by a space or tab; that includes the
                // whitespace after `=`, so `KEY= # note` is an empty value with a comment.
                let comment = (0..rb.len())
                    .find(|&j| rb[j] == b'#' && if j == 0 { !after_eq.is_empty() } else { is_ws(rb[j - 1]) });
                let raw = region[..comment.unwrap_or(rb.len())].trim_end_matches([' ', '\t']);
                let trailing = &region[raw.len()..];
                (Quote::None, raw, raw.to_owned(), trailing, ending, next)
            }
        };
        let entry = Entry {
            indent: s[start..indent_end].to_owned(),
            export,
            key: s[key_start..key_end].to_owned(),
            before_eq: s[key_end..eq].to_owned(),
            after_eq: after_eq.to_owned(),
            quote,
            raw_value: raw_value.to_owned(),
            value,
            trailing: trailing.to_owned(),
            ending,
        };
        self.advance(next, ending);
        Ok(entry)
    }

    /// The index of the `"` closing a double-quoted value whose content starts at `from`.
    fn closing_double_quote(&self, from: usize) -> Result<usize, ParseError> {
        let b = self.b;
        let mut i = from;
        while i < b.len() {
            match b[i] {
                // A backslash hides the next byte from the search. Stepping over one byte is
                // enough: `"` and `\` are ASCII, and UTF-8 continuation bytes are never ASCII.
                b'\\' => i += 2,
                b'"' => return Ok(i),
                _ => i += 1,
            }
        }
        Err(self.error(ParseErrorKind::UnterminatedDoubleQuote))
    }
}

#[cfg(test)]
mod tests {
    use crate::{Document, LineEnding, ParseErrorKind, Quote};

    fn doc(s: &str) -> Document {
        let d = Document::parse(s).unwrap_or_else(|e| panic!("{s:?}: {e}"));
        assert_eq!(d.to_string(), s, "round trip");
        d
    }

    fn one(s: &str) -> (String, String, Quote) {
        let d = doc(s);
        let entries: Vec<_> = d.entries().collect();
        assert_eq!(entries.len(), 1, "{s:?}");
        let e = entries[0];
        (e.key().to_owned(), e.value().to_owned(), e.quote())
    }

    fn value(s: &str) -> String {
        one(s).1
    }

    fn err(s: &str) -> (usize, ParseErrorKind) {
        let e = Document::parse(s).expect_err(s);
        (e.line(), e.kind())
    }

    #[test]
    fn empty_input() {
        let d = doc("");
        assert!(d.lines().is_empty());
    }

    #[test]
    fn comments_blank_and_whitespace_lines() {
        let d = doc("# top\n\n   \t\n  # indented\n\t\nA=1\n#\n");
        assert_eq!(d.lines().len(), 7);
        assert_eq!(d.entries().count(), 1);
        assert!(matches!(&d.lines()[0], crate::Line::Comment(r) if r.text() == "# top"));
        assert!(matches!(&d.lines()[2], crate::Line::Blank(r) if r.text() == "   \t"));
        assert!(matches!(&d.lines()[3], crate::Line::Comment(r) if r.text() == "  # indented"));
    }

    #[test]
    fn unquoted() {
        assert_eq!(one("A=b\n"), ("A".into(), "b".into(), Quote::None));
        assert_eq!(value("A=  spaced  value \t\n"), "spaced  value");
        assert_eq!(value("A=a=b==\n"), "a=b==");
        assert_eq!(value("A=it's \"fine\"\n"), "it's \"fine\"");
        assert_eq!(value("A=no\\nescapes\n"), "no\\nescapes");
    }

    #[test]
    fn trailing_comments() {
        let d = doc("A=abc # comment\n");
        let e = d.entries().next().unwrap();
        assert_eq!(e.value(), "abc");
        assert_eq!(e.raw_value(), "abc");
        assert_eq!(e.comment(), Some("# comment"));
        assert_eq!(value("A=abc\t#c\n"), "abc");
        assert_eq!(value("A=abc#def\n"), "abc#def");
        assert_eq!(value("A=#not-a-comment\n"), "#not-a-comment");
        assert_eq!(value("A= #only a comment\n"), "");
        assert_eq!(value("A=a #b #c\n"), "a");
        assert_eq!(value("A=\"q\" # c\n"), "q");
        assert_eq!(value("A=\"q\"# c\n"), "q");
        assert_eq!(value("A='q'\t#c\n"), "q");
        assert_eq!(value("A='q'  \n"), "q");
    }

    #[test]
    fn export_prefix() {
        let d = doc("export A=1\nexport\t B=2\n");
        let e: Vec<_> = d.entries().collect();
        assert_eq!((e[0].key(), e[0].value(), e[0].has_export()), ("A", "1", true));
        assert_eq!((e[1].key(), e[1].has_export()), ("B", true));
        // `export` as the key itself.
        for s in ["export=1\n", "export = 1\n", "export =1\n"] {
            let (k, v, _) = one(s);
            assert_eq!((k.as_str(), v.as_str()), ("export", "1"), "{s:?}");
        }
        let d = doc("exportX=1\n");
        assert_eq!(d.entries().next().unwrap().key(), "exportX");
        assert!(!d.entries().next().unwrap().has_export());
    }

    #[test]
    fn spaces_around_equals_and_indent() {
        let (k, v, _) = one("  A \t= \tb\n");
        assert_eq!((k.as_str(), v.as_str()), ("A", "b"));
        let (k, v, _) = one("  export  A  =  'x'  # c\n");
        assert_eq!((k.as_str(), v.as_str()), ("A", "x"));
    }

    #[test]
    fn keys() {
        for k in ["A", "_", "_a1", "a.b-c_D9", "lower"] {
            assert_eq!(one(&format!("{k}=1\n")).0, k);
        }
    }

    #[test]
    fn single_quoted() {
        assert_eq!(one("A='x'\n"), ("A".into(), "x".into(), Quote::Single));
        assert_eq!(value(r#"A='a\nb "c" ${D} # e'"#), r#"a\nb "c" ${D} # e"#);
        assert_eq!(value("A='line1\nline2\n'\n"), "line1\nline2\n");
        assert_eq!(value("A='line1\r\nline2'\r\n"), "line1\nline2");
    }

    #[test]
    fn double_quoted() {
        assert_eq!(one("A=\"x\"\n"), ("A".into(), "x".into(), Quote::Double));
        assert_eq!(value(r#"A="a\nb\rc\td\"e\\f\$g\qh ${I}""#), "a\nb\rc\td\"e\\f$g\\qh ${I}");
        let d = doc("A=\"l1\nl2 \\\"q\\\"\nl3\"\nB=2\n");
        assert_eq!(d.get("A"), Some("l1\nl2 \"q\"\nl3"));
        assert_eq!(d.get("B"), Some("2"));
        assert_eq!(value("A=\"l1\r\nl2\"\r\n"), "l1\nl2");
        assert_eq!(value("A=\"'single' inside\"\n"), "'single' inside");
        assert_eq!(value("A=\"ends with backslash\\\\\"\n"), "ends with backslash\\");
    }

    #[test]
    fn empty_values() {
        assert_eq!(one("A=\n"), ("A".into(), "".into(), Quote::None));
        assert_eq!(one("A=\"\"\n"), ("A".into(), "".into(), Quote::Double));
        assert_eq!(one("A=''\n"), ("A".into(), "".into(), Quote::Single));
        assert_eq!(value("A="), "");
        assert_eq!(value("A =   \n"), "");
    }

    #[test]
    fn unicode() {
        assert_eq!(value("A=héllo wörld ✓ 日本\n"), "héllo wörld ✓ 日本");
        assert_eq!(value("A=\"🔑\\\"é\"\n"), "🔑\"é");
        assert_eq!(value("A='Grüße'\n"), "Grüße");
        // Non-ASCII whitespace is content, not trimmed.
        assert_eq!(value("A=\u{a0}x\u{a0}\n"), "\u{a0}x\u{a0}");
    }

    #[test]
    fn line_endings() {
        let d = doc("A=1\r\nB=2\nC=\"x\"\r\n# c\r\n\r\nD=4");
        let endings: Vec<_> = d.lines().iter().map(crate::Line::ending).collect();
        use LineEnding::*;
        assert_eq!(endings, [CrLf, Lf, CrLf, CrLf, CrLf, None]);
        assert_eq!(d.get("A"), Some("1"));
        assert_eq!(d.get("D"), Some("4"));
    }

    #[test]
    fn missing_final_newline() {
        for s in ["A=1", "A='1'", "A=\"1\"", "# c", "  ", "A=1 # c", "A=\"a\nb\""] {
            doc(s);
        }
    }

    #[test]
    fn bom_kept() {
        let d = doc("\u{feff}A=1\n");
        assert!(d.has_bom());
        assert_eq!(d.get("A"), Some("1"));
    }

    #[test]
    fn no_expansion() {
        let d = doc("A=1\nB=${A}\nC=\"$A\"\n");
        assert_eq!(d.get("B"), Some("${A}"));
        assert_eq!(d.get("C"), Some("$A"));
    }

    #[test]
    fn duplicates_last_wins() {
        let d = doc("A=1\nB=x\nA=2\n");
        assert_eq!(d.entries().count(), 3);
        assert_eq!(d.get("A"), Some("2"));
        assert_eq!(d.env(), [("A", "2"), ("B", "x")]);
        assert_eq!(d.to_map().get("A").map(String::as_str), Some("2"));
    }

    #[test]
    fn errors() {
        use ParseErrorKind::*;
        assert_eq!(err("=value\n"), (1, MissingKey));
        assert_eq!(err("A=1\n  =value\n"), (2, MissingKey));
        assert_eq!(err("A=1\nbad key=1\n"), (2, MissingEquals));
        assert_eq!(err("KEY\n"), (1, MissingEquals));
        assert_eq!(err("export KEY\n"), (1, MissingEquals));
        assert_eq!(err("1A=1\n"), (1, InvalidKey));
        assert_eq!(err("KEY!=1\n"), (1, InvalidKey));
        assert_eq!(err("KÉY=1\n"), (1, InvalidKey));
        assert_eq!(err("\"A\"=1\n"), (1, InvalidKey));
        assert_eq!(err("A=1\n\nB='open\nstill\n"), (3, UnterminatedSingleQuote));
        assert_eq!(err("A=\"open\\\"\n"), (1, UnterminatedDoubleQuote));
        assert_eq!(err("A=\"x\"y\n"), (1, TextAfterQuote));
        assert_eq!(err("A=\"x\ny\" z\n"), (2, TextAfterQuote));
        assert_eq!(err("A='x' 'y'\n"), (1, TextAfterQuote));
        assert_eq!(err("A=1\rB=2\r"), (1, LoneCarriageReturn));
        assert_eq!(err("# c\rA=1\n"), (1, LoneCarriageReturn));
        assert_eq!(err("A=1\n\r"), (2, LoneCarriageReturn));
        assert_eq!(err("A=\"x\"\r"), (1, LoneCarriageReturn));
    }

    #[test]
    fn lone_cr_inside_quotes_is_content() {
        assert_eq!(value("A=\"a\rb\"\n"), "a\rb");
        assert_eq!(value("A='a\rb'\n"), "a\rb");
    }

    #[test]
    fn invalid_utf8() {
        let e = Document::parse_bytes(b"A=1\nB=\xff\xfe\n").unwrap_err();
        assert_eq!((e.line(), e.kind()), (2, ParseErrorKind::InvalidUtf8));
        assert_eq!(e.to_string(), "line 2: invalid UTF-8");
        let d = Document::parse_bytes("A=é\n".as_bytes()).unwrap();
        assert_eq!(d.get("A"), Some("é"));
    }

    /// Error messages and `Debug` never echo input text (sops once echoed a value).
    #[test]
    fn errors_never_contain_the_value() {
        const M: &str = "SECRETMARKER";
        let inputs = [
            format!("{M}\n"),
            format!("={M}\n"),
            format!("  ={M}\n"),
            format!("bad key={M}\n"),
            format!("{M} {M}={M}\n"),
            format!("1{M}={M}\n"),
            format!("A!={M}\n"),
            format!("A=\"{M}\n"),
            format!("A=\"{M}\\\"\n"),
            format!("A='{M}\n{M}\n"),
            format!("A=\"{M}\"{M}\n"),
            format!("A='{M}' {M}\n"),
            format!("A={M}\r{M}\n"),
            format!("# {M}\r\n{M}\r"),
            format!("export {M}\n"),
        ];
        for input in &inputs {
            let e = Document::parse(input).expect_err(input);
            for shown in [e.to_string(), format!("{e:?}"), format!("{:?}", e.kind())] {
                assert!(!shown.contains(M), "{shown}");
                assert!(!shown.contains("MARKER"), "{shown}");
            }
        }
        let mut bytes = format!("A={M}").into_bytes();
        bytes.push(0xff);
        let e = Document::parse_bytes(&bytes).unwrap_err();
        assert!(!e.to_string().contains(M) && !format!("{e:?}").contains(M));
    }

    #[test]
    fn debug_redacts_values_and_comments() {
        let d = doc("# OLD=SECRETMARKER\nA=SECRETMARKER\nB=\"SECRETMARKER\"\n");
        let shown = format!("{d:?}");
        assert!(!shown.contains("SECRETMARKER"), "{shown}");
        assert!(shown.contains("\"A\""));
    }
}
