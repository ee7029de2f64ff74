//! The lines of a document: blank lines and comments kept as written ([`RawLine`]), and entries
//! ([`Entry`]) whose key, quoting, raw value and line ending are each kept, so that writing them
//! back reproduces the input.

use std::fmt;

use crate::value;

/// How a physical line ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LineEnding {
    /// `\n`.
    Lf,
    /// `\r\n`.
    CrLf,
    /// Nothing: the last line of a file without a final newline.
    None,
}

impl LineEnding {
    /// The bytes of this ending: `"\n"`, `"\r\n"` or `""`.
    pub fn as_str(self) -> &'static str {
        match self {
            LineEnding::Lf => "\n",
            LineEnding::CrLf => "\r\n",
            LineEnding::None => "",
        }
    }
}

/// How a value is quoted in the file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Quote {
    /// `KEY=value`: literal, trimmed, ends before a whitespace-preceded `#`.
    None,
    /// `KEY='value'`: literal, may span lines.
    Single,
    /// `KEY="value"`: backslash escapes, may span lines.
    Double,
}

/// A blank (empty or whitespace-only) line, or a comment line, exactly as written.
#[derive(Clone, PartialEq, Eq)]
pub struct RawLine {
    pub(crate) text: String,
    pub(crate) ending: LineEnding,
}

impl RawLine {
    /// The line without its line ending: whitespace for a blank line; for a comment, any
    /// indentation, the `#` and the rest of the line.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// How the line ends.
    pub fn ending(&self) -> LineEnding {
        self.ending
    }
}

// Comments may hold commented-out secrets: `Debug` shows sizes, not text.
impl fmt::Debug for RawLine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RawLine").field("text_len", &self.text.len()).field("ending", &self.ending).finish()
    }
}

/// One logical line of a `.env` file.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Line {
    /// An empty or whitespace-only line.
    Blank(RawLine),
    /// A line whose first non-whitespace character is `#`.
    Comment(RawLine),
    /// A `KEY=value` assignment; a quoted value may span several physical lines.
    Entry(Entry),
}

impl Line {
    /// The entry on this line, if it is one.
    pub fn as_entry(&self) -> Option<&Entry> {
        match self {
            Line::Entry(e) => Some(e),
            _ => None,
        }
    }

    /// How the line (the last physical line, for a multi-line value) ends.
    pub fn ending(&self) -> LineEnding {
        match self {
            Line::Blank(r) | Line::Comment(r) => r.ending,
            Line::Entry(e) => e.ending,
        }
    }

    pub(crate) fn set_ending(&mut self, ending: LineEnding) {
        match self {
            Line::Blank(r) | Line::Comment(r) => r.ending = ending,
            Line::Entry(e) => e.ending = ending,
        }
    }

    pub(crate) fn write(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Line::Blank(r) | Line::Comment(r) => {
                f.write_str(&r.text)?;
                f.write_str(r.ending.as_str())
            }
            Line::Entry(e) => e.write(f),
        }
    }
}

/// A `KEY=value` assignment with its layout.
///
/// Source layout, in order: indentation, optional `export` and the whitespace after it, key,
/// whitespace, `=`, whitespace, the raw value, then trailing whitespace and comment, then the line
/// ending. [`set_value`](Entry::set_value) replaces only the raw value.
///
/// `Debug` shows the key and quoting, never the value.
#[derive(Clone, PartialEq, Eq)]
pub struct Entry {
    pub(crate) indent: String,
    /// The whitespace after `export`, when the line has the prefix.
    pub(crate) export: Option<String>,
    pub(crate) key: String,
    pub(crate) before_eq: String,
    pub(crate) after_eq: String,
    pub(crate) quote: Quote,
    pub(crate) raw_value: String,
    pub(crate) value: String,
    /// Whitespace and an optional `#` comment after the value.
    pub(crate) trailing: String,
    pub(crate) ending: LineEnding,
}

impl Entry {
    /// A new `KEY=value` line: unquoted when the value is plain (letters, digits and
    /// `_-.:/+=@%,[]^`, which covers sealed `ENC[...]` values), otherwise double-quoted with
    /// escapes on one line.
    pub(crate) fn new(key: &str, v: &str, ending: LineEnding) -> Self {
        let (quote, raw_value) =
            if value::plain(v) { (Quote::None, v.to_owned()) } else { (Quote::Double, value::encode_double(v, None)) };
        Entry {
            indent: String::new(),
            export: None,
            key: key.to_owned(),
            before_eq: String::new(),
            after_eq: String::new(),
            quote,
            raw_value,
            value: v.to_owned(),
            trailing: String::new(),
            ending,
        }
    }

    /// The key (without any `export` prefix).
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The decoded value: quotes removed, escapes processed, CRLF breaks inside quotes read as LF.
    /// No variable expansion: `${VAR}` stays as written.
    pub fn value(&self) -> &str {
        &self.value
    }

    /// The value exactly as in the source, including its quotes (and, for a multi-line value, its
    /// line breaks).
    pub fn raw_value(&self) -> &str {
        &self.raw_value
    }

    /// How the value is quoted.
    pub fn quote(&self) -> Quote {
        self.quote
    }

    /// Whether the line starts with `export`.
    pub fn has_export(&self) -> bool {
        self.export.is_some()
    }

    /// The trailing comment, from its `#` to the end of the line, if any.
    pub fn comment(&self) -> Option<&str> {
        self.trailing.find('#').map(|i| &self.trailing[i..])
    }

    /// How the entry's last physical line ends.
    pub fn line_ending(&self) -> LineEnding {
        self.ending
    }

    /// Replaces the value, keeping everything else on the line (indentation, `export`, spacing
    /// around `=`, trailing comment, line ending) byte-identical.
    ///
    /// The quoting style stays the same when it can hold `new`:
    /// - unquoted: no CR/LF, no leading or trailing space/tab, no leading quote, no `#` after a
    ///   space/tab (nor a leading `#` when whitespace follows `=`);
    /// - single quotes: no `'` and no CR;
    /// - double quotes: anything.
    ///
    /// Otherwise the value is written in double quotes with escapes. A value that was laid out on
    /// several lines keeps literal line breaks (in the same LF/CRLF style); otherwise LF is written
    /// as `\n`. Setting the current value again changes nothing, so the source text stays as it
    /// was.
    ///
    /// One layout change is unavoidable: in `KEY= # note` the value is empty and the space belongs
    /// to `=`; a non-empty unquoted value gets a space before `# note` (`KEY= v # note`).
    ///
    /// After this call, parsing the document's text again yields exactly `new` for this entry.
    pub fn set_value(&mut self, new: &str) {
        if new == self.value {
            return;
        }
        // Literal breaks are kept in the break style the value already uses; a value that had
        // none gets the entry's own line ending.
        let brk = if self.raw_value.contains("\r\n") {
            "\r\n"
        } else if self.raw_value.contains('\n') || self.ending != LineEnding::CrLf {
            "\n"
        } else {
            "\r\n"
        };
        let multiline = self.raw_value.contains('\n');
        let (quote, raw) = match self.quote {
            Quote::None if value::unquoted_ok(new, !self.after_eq.is_empty()) => (Quote::None, new.to_owned()),
            Quote::Single if value::single_ok(new) => (Quote::Single, value::encode_single(new, brk)),
            _ => (Quote::Double, value::encode_double(new, multiline.then_some(brk))),
        };
        // `KEY= # note` parses as an empty value whose comment has no whitespace of its own (the
        // space went to `after_eq`): a value written in front of it needs one, or the `#` would
        // become part of an unquoted value.
        if quote == Quote::None && !raw.is_empty() && self.trailing.starts_with('#') {
            self.trailing.insert(0, ' ');
        }
        self.quote = quote;
        self.raw_value = raw;
        self.value = new.to_owned();
    }

    pub(crate) fn write(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.indent)?;
        if let Some(ws) = &self.export {
            f.write_str("export")?;
            f.write_str(ws)?;
        }
        f.write_str(&self.key)?;
        f.write_str(&self.before_eq)?;
        f.write_str("=")?;
        f.write_str(&self.after_eq)?;
        f.write_str(&self.raw_value)?;
        f.write_str(&self.trailing)?;
        f.write_str(self.ending.as_str())
    }
}

impl fmt::Debug for Entry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Entry")
            .field("key", &self.key)
            .field("export", &self.has_export())
            .field("quote", &self.quote)
            .field("value", &"<redacted>")
            .field("ending", &self.ending)
            .finish()
    }
}
