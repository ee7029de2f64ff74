//! The document model: every byte of the source lives in exactly one field, so writing the fields
//! back in order reproduces the input.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::str::FromStr;

use crate::error::{InvalidKey, ParseError, ParseErrorKind};
use crate::line::{Entry, Line, LineEnding};
use crate::value;

/// Editing an entry in its line's context needs the parser, which builds entries: it lives
/// here, above both.
impl Entry {
    /// Replaces the value with `raw`, its exact source text (quotes and escapes included), for
    /// callers that keep a value's source form (envseal seals the raw text so that decryption
    /// restores the file byte for byte). Everything else on the line is kept.
    ///
    /// # Errors
    /// [`ParseError`] if `raw`, placed on this line, would not read back as exactly one value
    /// with this line's comment and ending (an unterminated quote, text after a closing quote, a
    /// `#` that would start a comment...). The entry is then unchanged.
    pub fn set_raw_value(&mut self, raw: &str) -> Result<(), ParseError> {
        // Check in context: the whitespace after `=` decides whether a leading `#` starts a
        // comment, and the trailing part must still parse as trailing.
        let line = format!("K{}={}{}{}{}", self.before_eq, self.after_eq, raw, self.trailing, self.ending.as_str());
        let doc = Document::parse(&line)?;
        let e = match doc.lines() {
            [Line::Entry(e)] if e.raw_value == raw && e.trailing == self.trailing => e,
            _ => return Err(ParseError::new(1, ParseErrorKind::TextAfterQuote)),
        };
        self.quote = e.quote;
        self.value = e.value.clone();
        self.raw_value = raw.to_owned();
        Ok(())
    }
}

/// Whether `key` is a valid `.env` key: `[A-Za-z_][A-Za-z0-9_.-]*`.
pub fn is_valid_key(key: &str) -> bool {
    let b = key.as_bytes();
    b.first().is_some_and(|&c| value::is_key_start(c)) && b[1..].iter().all(|&c| value::is_key_char(c))
}

/// A parsed `.env` file. `to_string()` gives back the input byte for byte; edits through
/// [`set`](Document::set), [`remove`](Document::remove) and [`Entry::set_value`] touch only what
/// they change.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Document {
    bom: bool,
    lines: Vec<Line>,
}

impl Document {
    /// An empty document.
    pub fn new() -> Self {
        Self::default()
    }

    /// Parses `.env` text.
    ///
    /// # Errors
    ///
    /// [`ParseError`] with the line number and kind of the first line that does not follow the
    /// grammar (see the crate documentation). The error never contains text from the input.
    pub fn parse(input: &str) -> Result<Self, ParseError> {
        let (bom, lines) = crate::parse::parse(input)?;
        Ok(Document { bom, lines })
    }

    /// Parses `.env` bytes, which must be UTF-8.
    ///
    /// # Errors
    ///
    /// [`ParseErrorKind::InvalidUtf8`] on the line of the first invalid byte, or any error of
    /// [`parse`](Document::parse).
    pub fn parse_bytes(input: &[u8]) -> Result<Self, ParseError> {
        let text = std::str::from_utf8(input).map_err(|e| {
            let line = 1 + input[..e.valid_up_to()].iter().filter(|&&b| b == b'\n').count();
            ParseError::new(line, ParseErrorKind::InvalidUtf8)
        })?;
        Self::parse(text)
    }

    /// All lines in order.
    pub fn lines(&self) -> &[Line] {
        &self.lines
    }

    /// Whether the file starts with a UTF-8 byte order mark (kept on output).
    pub fn has_bom(&self) -> bool {
        self.bom
    }

    /// All entries in file order, duplicates included.
    pub fn entries(&self) -> impl Iterator<Item = &Entry> {
        self.lines.iter().filter_map(Line::as_entry)
    }

    /// All entries in file order, duplicates included, for editing values in place (for example
    /// sealing every value).
    pub fn entries_mut(&mut self) -> impl Iterator<Item = &mut Entry> {
        self.lines.iter_mut().filter_map(|l| match l {
            Line::Entry(e) => Some(e),
            _ => None,
        })
    }

    /// The last entry for `key` (the one a shell would keep).
    pub fn entry(&self, key: &str) -> Option<&Entry> {
        self.entries().filter(|e| e.key == key).last()
    }

    /// The last entry for `key`, for editing.
    pub fn entry_mut(&mut self, key: &str) -> Option<&mut Entry> {
        self.entries_mut().filter(|e| e.key == key).last()
    }

    /// The decoded value of the last entry for `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.entry(key).map(Entry::value)
    }

    /// Sets `key` to `value`: changes the last entry for `key` with [`Entry::set_value`], or
    /// appends `KEY=value` (see [`Entry::set_value`] for quoting) ending with the file's dominant
    /// line ending. When appending to a file without a final newline, the old last line gets one
    /// first.
    ///
    /// # Errors
    ///
    /// [`InvalidKey`] if `key` is not `[A-Za-z_][A-Za-z0-9_.-]*`; the document is unchanged.
    pub fn set(&mut self, key: &str, value: &str) -> Result<(), InvalidKey> {
        if !is_valid_key(key) {
            return Err(InvalidKey);
        }
        if let Some(e) = self.entry_mut(key) {
            e.set_value(value);
            return Ok(());
        }
        let ending = self.line_ending();
        if let Some(last) = self.lines.last_mut()
            && last.ending() == LineEnding::None
        {
            last.set_ending(ending);
        }
        self.lines.push(Line::Entry(Entry::new(key, value, ending)));
        Ok(())
    }

    /// Removes every entry for `key`. Returns whether there was one.
    pub fn remove(&mut self, key: &str) -> bool {
        let before = self.lines.len();
        self.lines.retain(|l| l.as_entry().is_none_or(|e| e.key != key));
        self.lines.len() != before
    }

    /// The line ending most lines use: [`LineEnding::CrLf`] if more lines end in CRLF than in LF,
    /// else [`LineEnding::Lf`].
    pub fn line_ending(&self) -> LineEnding {
        let (mut lf, mut crlf) = (0usize, 0usize);
        for l in &self.lines {
            match l.ending() {
                LineEnding::Lf => lf += 1,
                LineEnding::CrLf => crlf += 1,
                LineEnding::None => {}
            }
        }
        if crlf > lf { LineEnding::CrLf } else { LineEnding::Lf }
    }

    /// The environment the file describes: one `(key, value)` per distinct key, in order of first
    /// appearance, with the value of the last entry (later assignments win, as in a shell).
    pub fn env(&self) -> Vec<(&str, &str)> {
        let mut out: Vec<(&str, &str)> = Vec::new();
        let mut index: HashMap<&str, usize> = HashMap::new();
        for e in self.entries() {
            match index.get(e.key.as_str()) {
                Some(&i) => out[i].1 = &e.value,
                None => {
                    index.insert(&e.key, out.len());
                    out.push((&e.key, &e.value));
                }
            }
        }
        out
    }

    /// [`env`](Document::env) as an owned map (last entry wins).
    pub fn to_map(&self) -> BTreeMap<String, String> {
        self.entries().map(|e| (e.key.clone(), e.value.clone())).collect()
    }
}

impl fmt::Display for Document {
    /// The file's text: the parsed input byte for byte, plus any edits.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.bom {
            f.write_str("\u{feff}")?;
        }
        self.lines.iter().try_for_each(|l| l.write(f))
    }
}

impl FromStr for Document {
    type Err = ParseError;

    fn from_str(s: &str) -> Result<Self, ParseError> {
        Document::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::line::Quote;

    fn doc(s: &str) -> Document {
        let d = Document::parse(s).unwrap();
        assert_eq!(d.to_string(), s);
        d
    }

    /// Sets `key` on `input` and checks the output text and that it parses back to the value.
    fn set(input: &str, key: &str, v: &str, expected: &str) {
        let mut d = doc(input);
        d.set(key, v).unwrap();
        let out = d.to_string();
        assert_eq!(out, expected, "set {key} = {v:?}");
        assert_eq!(Document::parse(&out).unwrap().get(key), Some(v));
    }

    #[test]
    fn set_keeps_layout() {
        set("  export A = old  # c\r\n", "A", "new", "  export A = new  # c\r\n");
        set("A='old' # c\n", "A", "new", "A='new' # c\n");
        set("A=\"old\"\n", "A", "new", "A=\"new\"\n");
        set("A=old", "A", "new", "A=new");
    }

    #[test]
    fn set_switches_to_double_quotes_when_needed() {
        set("A=old # c\n", "A", "two #words", "A=\"two #words\" # c\n");
        set("A=old\n", "A", " padded ", "A=\" padded \"\n");
        set("A=old\n", "A", "'q", "A=\"'q\"\n");
        set("A=old\n", "A", "l1\nl2", "A=\"l1\\nl2\"\n");
        set("A= old\n", "A", "#x", "A= \"#x\"\n");
        set("A=old\n", "A", "#x", "A=#x\n");
        // The comment of an empty value gets its own space.
        set("A=\t# c\n", "A", "v", "A=\tv # c\n");
        set("A=\t# c\n", "A", "#v", "A=\t\"#v\"# c\n");
        set("A=v # c\n", "A", "", "A= # c\n");
        set("A='old'\n", "A", "it's", "A=\"it's\"\n");
        set("A='old'\n", "A", "a\rb", "A=\"a\\rb\"\n");
        set("A=\"old\"\n", "A", "q\"\\\r\t$", "A=\"q\\\"\\\\\\r\t$\"\n");
    }

    #[test]
    fn set_keeps_unquoted_styles_that_fit() {
        set("A=old\n", "A", "a b", "A=a b\n");
        set("A=old\n", "A", "a'b\"c", "A=a'b\"c\n");
        set("A=old\n", "A", "", "A=\n");
        set("A='old'\n", "A", "", "A=''\n");
        set("A=old\n", "A", "ENC[v1:str:AbC-_x09.Zz]", "A=ENC[v1:str:AbC-_x09.Zz]\n");
    }

    #[test]
    fn multi_line_values_keep_their_layout() {
        set("A='l1\nl2'\n", "A", "x\ny\n", "A='x\ny\n'\n");
        set("A='l1\r\nl2'\r\n", "A", "x\ny", "A='x\r\ny'\r\n");
        set("A='one line'\r\n", "A", "x\ny", "A='x\r\ny'\r\n");
        set("A=\"l1\nl2\"\n", "A", "x\ny", "A=\"x\ny\"\n");
        set("A=\"l1\r\nl2\"\n", "A", "x\r\ny", "A=\"x\\r\r\ny\"\n");
        set("A=\"one line\"\n", "A", "x\ny", "A=\"x\\ny\"\n");
        // A value that fits no longer in single quotes keeps its line breaks in double quotes.
        set("A='l1\nl2'\n", "A", "it's\nok", "A=\"it's\nok\"\n");
    }

    #[test]
    fn setting_the_same_value_is_a_no_op() {
        let s = "A=\"a\\qb\"\nB='x'\n";
        let mut d = doc(s);
        d.set("A", "a\\qb").unwrap();
        d.set("B", "x").unwrap();
        assert_eq!(d.to_string(), s);
    }

    #[test]
    fn set_modifies_the_last_duplicate() {
        set("A=1\nA=2\n", "A", "3", "A=1\nA=3\n");
    }

    #[test]
    fn set_appends_new_keys() {
        set("", "A", "1", "A=1\n");
        set("B=2\n", "A", "1", "B=2\nA=1\n");
        set("B=2", "A", "1", "B=2\nA=1\n");
        set("B=2\r\nC=3\r\nD=4", "A", "1", "B=2\r\nC=3\r\nD=4\r\nA=1\r\n");
        set("# only a comment", "A", "1", "# only a comment\nA=1\n");
        set("B=2\n", "A", "two words", "B=2\nA=\"two words\"\n");
        set("B=2\n", "A", "$HOME", "B=2\nA=\"$HOME\"\n");
        set("B=2\n", "A", "x\ny", "B=2\nA=\"x\\ny\"\n");
        set("B=2\n", "A", "ENC[v1:str:A-b_c]", "B=2\nA=ENC[v1:str:A-b_c]\n");
    }

    #[test]
    fn set_rejects_invalid_keys() {
        let mut d = doc("A=1\n");
        for k in ["", "1A", "a b", "A=", "é", "-x", "SECRETMARKER!"] {
            let e = d.set(k, "v").unwrap_err();
            // A fixed message: the key is not echoed.
            assert_eq!(e.to_string(), "invalid key (a key must match [A-Za-z_][A-Za-z0-9_.-]*)");
        }
        assert_eq!(d.to_string(), "A=1\n");
        assert!(is_valid_key("a.b-c_1"));
        assert!(!is_valid_key("a b"));
    }

    #[test]
    fn remove_drops_all_occurrences() {
        let mut d = doc("A=1\n# c\nB=2\nA=3\n");
        assert!(d.remove("A"));
        assert_eq!(d.to_string(), "# c\nB=2\n");
        assert!(!d.remove("A"));
        assert_eq!(d.get("A"), None);
    }

    #[test]
    fn dominant_line_ending() {
        assert_eq!(doc("").line_ending(), LineEnding::Lf);
        assert_eq!(doc("A=1\r\nB=2\r\nC=3\n").line_ending(), LineEnding::CrLf);
        assert_eq!(doc("A=1\r\nB=2\n").line_ending(), LineEnding::Lf);
    }

    #[test]
    fn env_order_and_last_wins() {
        let d = doc("B=1\nA=2\nB=3\nC=4\n");
        assert_eq!(d.env(), [("B", "3"), ("A", "2"), ("C", "4")]);
        let m = d.to_map();
        assert_eq!(m.len(), 3);
        assert_eq!(m["B"], "3");
    }

    #[test]
    fn entry_accessors() {
        let d = doc("export K = \"v\\n\"  # note\r\n");
        let e = d.entry("K").unwrap();
        assert_eq!(e.key(), "K");
        assert_eq!(e.value(), "v\n");
        assert_eq!(e.raw_value(), "\"v\\n\"");
        assert_eq!(e.quote(), Quote::Double);
        assert!(e.has_export());
        assert_eq!(e.comment(), Some("# note"));
        assert_eq!(e.line_ending(), LineEnding::CrLf);
        assert_eq!(doc("K=v\n").entry("K").unwrap().comment(), None);
    }
}
