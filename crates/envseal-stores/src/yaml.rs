//! YAML documents (a mapping at the top level), edited in place: metadata under the reserved
//! top-level key `envseal`, written as a block mapping at the end of the document.
//!
//! The text is parsed with `yaml-edit` (a lossless rowan syntax tree). A value is replaced by
//! splicing the bytes of its scalar and nothing else, so everything around it stays byte for
//! byte: comments (full-line and trailing), blank lines, key order, key quoting, indentation,
//! flow or block style of every collection, `%YAML`/`---`/`...` markers, line endings (LF or
//! CRLF), a missing final line break. Adding and removing keys or sequence items go through
//! `yaml-edit`, which lays them out like their siblings; the result is parsed again and checked
//! to differ from before by that one value only.
//!
//! The metadata is a block mapping under `envseal`, appended after the top-level mapping
//! (after its trailing comment lines), at its indentation, with the document's line breaks.
//! Removing it cuts exactly what was appended, so a sealed-then-decrypted file ends as it began.
//!
//! # Schema
//!
//! YAML 1.2 core schema (§10.3), applied to plain (unquoted) scalars only: `null`, `Null`,
//! `NULL`, `~` and the empty value are null; `true`/`True`/`TRUE`/`false`/`False`/`FALSE` are
//! booleans; `[-+]?[0-9]+`, `0o…`, `0x…`, decimal floats, `.inf` and `.nan` are numbers (kept as
//! written, so `0123` is the number whose text is `0123`, while `"0123"` is a string). Anything
//! else, including YAML 1.1's `yes`, `no`, `on`, `off`, `y`, `n`, is a string, and is written back
//! unquoted as it was (a YAML 1.1 reader still sees what it saw before). Quoted and block scalars
//! are always strings, decoded (escapes, folding, chomping) by `yaml-edit`.
//!
//! # How values are written
//!
//! * A sealed value (`ENC[v1:...]`) keeps the quoting of the scalar it replaces: unquoted stays
//!   unquoted, `'...'` stays `'...'`, `"..."` stays `"..."`. A block scalar (`|`, `>`) becomes an
//!   unquoted scalar. Inside a flow collection (`{...}`, `[...]`), where `[` and `]` would end an
//!   unquoted scalar, an unquoted or single-quoted scalar becomes single-quoted, and when it is
//!   decrypted, unquoted again if it can be (so a single-quoted string in a flow collection may
//!   come back unquoted).
//! * A plain value is written with its type: numbers, booleans and nulls unquoted, as their
//!   text; a string in the quoting of the scalar it replaces when that can hold it, else
//!   unquoted when it reads back as the same string (not `true`, `123`, `~`, nor anything with
//!   `: `, ` #`, leading or trailing spaces, a leading indicator...), else, for a multi-line
//!   string in block context ending in at most one line break, a literal block scalar (`|` or
//!   `|-`) indented one step (the document's first indentation step, else 2) past its key, else
//!   double-quoted with escapes. Every written scalar is parsed back before it is kept.
//!
//! # Round trip (seal, then decrypt)
//!
//! Gives back the original bytes for: unquoted, single- and double-quoted single-line
//! scalars whose double-quoted form uses no escape that was not needed; numbers, booleans and
//! nulls as written (`~`, `null`, empty); literal block scalars (`|`, `|-`) indented one step
//! past their key; comments, blank lines, order and layout everywhere else.
//!
//! Not kept (the value is, the spelling is not):
//! * escapes that were not needed (`"caf\u00e9"` comes back as `"café"`), and the choice of
//!   escape (`\x0a` comes back as `\n`);
//! * folded block scalars (`>`) come back as literal ones (`|`); block scalars with `|+`, an
//!   explicit indentation indicator, a comment after the header, or another indentation come
//!   back as `|`/`|-` indented one step, or double-quoted;
//! * a block scalar holding a single line without a final line break (`|-` + one line) comes
//!   back unquoted or quoted;
//! * quoted or unquoted scalars continued over several lines come back on one line;
//! * a single-quoted string in a flow collection comes back unquoted when it can be.
//!
//! # Not supported (rejected when parsing, with line and column)
//!
//! Multi-document streams, anchors (`&a`), aliases (`*a`), merge keys (`<<`), tags (`!!str`,
//! `!x`), explicit keys (`? k`), keys that are collections or block scalars, duplicate keys,
//! directives inside the document, and anything `yaml-edit`'s strict YAML 1.2 validator
//! rejects. `yaml-edit`'s parser recovers from some errors by leaving text out of its tree, so
//! the document is also lexed and every token checked to belong to a key or value that was
//! indexed: nothing is left in clear unseen. Block scalar headers and double-quoted escapes
//! are checked here too. Error messages give a position and a reason, never input text.
//!
//! Tabs: `yaml-edit` is more lenient than the specification about tabs in indentation; such
//! input is read as `yaml-edit` reads it.

use std::collections::{BTreeMap, HashSet};
use std::ops::Range;
use std::sync::LazyLock;

use envseal_core::values::{KeyPath, PathSegment, ValueType};
use regex::Regex;
use serde_json::{Map, Value};
use yaml_edit::validator::{Severity, Validator, ValidatorConfig};
use yaml_edit::{Mapping, ParseErrorKind, Scalar, ScalarValue, Sequence, YamlFile, YamlNode, YamlValue};

use crate::document::{Document, Entry, Format};
use crate::error::StoreError;
use crate::meta::Metadata;

/// The reserved top-level key holding envseal's metadata.
pub const META_KEY: &str = "envseal";

/// How a scalar is written in the source.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Style {
    Plain,
    Single,
    Double,
    /// `|`
    Literal,
    /// `>`
    Folded,
}

/// A scalar leaf of the document and where its bytes are.
#[derive(Clone, Debug)]
struct Slot {
    path: KeyPath,
    ty: ValueType,
    /// Decoded string, or the source text of a number, boolean or null.
    text: String,
    /// The bytes a new scalar replaces. For a block scalar, up to the end of its last content
    /// line (its final line break and trailing blank lines stay). For an empty value, the empty
    /// range just after its `:` or `-`.
    span: Range<usize>,
    style: Style,
    /// Inside a flow collection.
    flow: bool,
    /// Column of the key or `-` owning the value (a block scalar is indented past it).
    col: usize,
    /// An empty value of a flow-mapping entry written without `:` (`{a}`).
    bare: bool,
}

/// A top-level `envseal` entry.
#[derive(Clone, Debug)]
struct MetaEntry {
    /// The entry's bytes, key to the line break ending it.
    span: Range<usize>,
    /// Its value as JSON, or why it cannot be one.
    json: Result<Value, String>,
}

/// A YAML document whose top level is a mapping.
///
/// Holds the text and an index of its scalars; no syntax tree (rowan trees are not `Send`),
/// so a structural edit (adding or removing a key, the metadata) parses the text again, while
/// replacing a value only splices bytes.
#[derive(Debug, Clone)]
pub struct YamlDocument {
    text: String,
    slots: Vec<Slot>,
    meta: Vec<MetaEntry>,
    root_flow: bool,
    root_col: usize,
    /// Where the top-level mapping ends (trailing comment lines included).
    root_end: usize,
    /// Indentation step for new block scalars and the metadata.
    unit: usize,
    nl: &'static str,
}

fn perr(message: impl Into<String>) -> StoreError {
    StoreError::Parse { format: "yaml", message: message.into() }
}

/// `line L column C` (1-based) of a byte offset.
fn at(text: &str, offset: usize) -> String {
    let lc = yaml_edit::byte_offset_to_line_column(text, offset);
    format!("line {} column {}", lc.line, lc.column)
}

fn line_start(text: &str, pos: usize) -> usize {
    text[..pos].rfind('\n').map_or(0, |i| i + 1)
}

fn column(text: &str, pos: usize) -> usize {
    text[line_start(text, pos)..pos].chars().count()
}

fn start_of(n: &YamlNode) -> usize {
    n.byte_range().start as usize
}

static INT: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"\A(?:[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+)\z").expect("valid regex"));
static FLOAT: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"\A(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?|[-+]?\.(?:inf|Inf|INF)|\.nan|\.NaN|\.NAN)\z",
    )
    .expect("valid regex")
});

fn is_null_text(s: &str) -> bool {
    matches!(s, "" | "~" | "null" | "Null" | "NULL")
}

fn is_bool_text(s: &str) -> bool {
    matches!(s, "true" | "True" | "TRUE" | "false" | "False" | "FALSE")
}

fn is_num_text(s: &str) -> bool {
    INT.is_match(s) || FLOAT.is_match(s)
}

/// The type of a plain scalar under the YAML 1.2 core schema.
fn resolve(plain: &str) -> ValueType {
    if is_null_text(plain) {
        ValueType::Null
    } else if is_bool_text(plain) {
        ValueType::Bool
    } else if is_num_text(plain) {
        ValueType::Num
    } else {
        ValueType::Str
    }
}

/// Style, type and value of a scalar node.
fn decode(s: &Scalar) -> (Style, ValueType, String) {
    let raw = s.value();
    let style = if s.is_block() {
        if raw.starts_with('>') { Style::Folded } else { Style::Literal }
    } else if raw.starts_with('"') {
        Style::Double
    } else if raw.starts_with('\'') {
        Style::Single
    } else {
        Style::Plain
    };
    let value = s.as_string();
    let ty = if style == Style::Plain { resolve(&value) } else { ValueType::Str };
    (style, ty, value)
}

/// Where the content of a block scalar ends: the end of its last non-blank line (or of its
/// header when it has none), before the line break.
fn block_content_end(raw: &str) -> usize {
    let mut end = raw.find(['\n', '\r']).unwrap_or(raw.len());
    let mut off = 0;
    for (i, line) in raw.split_inclusive('\n').enumerate() {
        let body = line.trim_end_matches(['\n', '\r']);
        if i > 0 && !body.trim_matches([' ', '\t']).is_empty() {
            end = off + body.len();
        }
        off += line.len();
    }
    end
}

fn describe(kind: &ParseErrorKind) -> &'static str {
    match kind {
        ParseErrorKind::UnclosedFlowSequence => "unclosed flow sequence",
        ParseErrorKind::UnclosedFlowMapping => "unclosed flow mapping",
        ParseErrorKind::UnterminatedString => "unterminated quoted string",
        _ => "syntax error",
    }
}

/// The position in a collection a value sits at.
#[derive(Clone, Copy)]
enum Ctx {
    /// Value of a mapping entry: where its key ends, and the entry's column.
    MapValue { key_end: usize, col: usize },
    /// Item of a sequence: its index, where the sequence starts, and its column.
    SeqItem { index: usize, seq_start: usize, col: usize },
}

impl Ctx {
    fn col(self) -> usize {
        match self {
            Ctx::MapValue { col, .. } | Ctx::SeqItem { col, .. } => col,
        }
    }
}

/// Builds the index of a parsed document.
struct Walker<'a> {
    text: &'a str,
    slots: Vec<Slot>,
    meta: Vec<MetaEntry>,
    unit: Option<usize>,
    /// Bytes the walk has seen: keys, scalar values, metadata entries.
    covered: Vec<Range<usize>>,
}

impl Walker<'_> {
    fn err(&self, what: &str, pos: usize) -> StoreError {
        perr(format!("{what} at {}", at(self.text, pos)))
    }

    /// Rejects what `yaml-edit` reads leniently: invalid escapes in double-quoted scalars,
    /// block scalar headers with content after the indicators.
    fn check_scalar(&self, s: &Scalar) -> Result<(), StoreError> {
        let r = s.byte_range();
        let (start, raw) = (r.start as usize, &self.text[r.start as usize..r.end as usize]);
        if s.is_block() {
            let header = raw.get(1..raw.find(['\n', '\r']).unwrap_or(raw.len())).unwrap_or("");
            let ind =
                header.len() - header.trim_start_matches(|c: char| c.is_ascii_digit() || c == '+' || c == '-').len();
            let (indicators, rest) = header.split_at(ind);
            let digits = indicators.chars().filter(char::is_ascii_digit).count();
            let chomps = indicators.len() - digits;
            let rest_ok = rest.is_empty()
                || (rest.starts_with([' ', '\t']) && {
                    let r = rest.trim_start_matches([' ', '\t']);
                    r.is_empty() || r.starts_with('#')
                });
            if digits > 1 || chomps > 1 || indicators.contains('0') || !rest_ok {
                return Err(self.err("invalid block scalar header", start));
            }
        } else if let Some(bad) = raw.starts_with('"').then(|| invalid_escape(raw)).flatten() {
            return Err(self.err("invalid escape sequence", start + bad));
        }
        Ok(())
    }

    /// Checks the document token by token: no anchors, aliases, tags or merge keys, no
    /// directive inside the document, and no content the walk did not see (`yaml-edit`
    /// recovers from some errors by leaving text out of the tree).
    fn check_tokens(&mut self) -> Result<(), StoreError> {
        use yaml_edit::SyntaxKind as K;
        self.covered.sort_by_key(|r| r.start);
        let mut pos = 0;
        let mut cov = 0;
        let mut content_seen = false;
        for (kind, tok) in yaml_edit::lex(self.text) {
            let (start, end) = (pos, pos + tok.len());
            pos = end;
            if self.text.get(start..end).is_none_or(|t| t != tok) {
                return Err(perr("the YAML lexer and parser disagree on this input"));
            }
            match kind {
                K::WHITESPACE | K::NEWLINE | K::INDENT | K::COMMENT | K::BOM | K::EOF => continue,
                K::ANCHOR | K::TAG | K::REFERENCE | K::MERGE_KEY => {
                    return Err(self.err("anchors, aliases, tags and merge keys are not supported", start));
                }
                K::DIRECTIVE if !content_seen => continue,
                K::DIRECTIVE => return Err(self.err("a directive (`%`) inside the document", start)),
                _ => content_seen = true,
            }
            if matches!(
                kind,
                K::COLON
                    | K::DASH
                    | K::COMMA
                    | K::LEFT_BRACKET
                    | K::RIGHT_BRACKET
                    | K::LEFT_BRACE
                    | K::RIGHT_BRACE
                    | K::DOC_START
                    | K::DOC_END
            ) {
                continue;
            }
            while cov < self.covered.len() && self.covered[cov].end < end {
                cov += 1;
            }
            if !self.covered.get(cov).is_some_and(|r| r.start <= start && end <= r.end) {
                return Err(self.err("content outside any key or value", start));
            }
        }
        if pos != self.text.len() {
            return Err(perr("the YAML lexer and parser disagree on this input"));
        }
        Ok(())
    }

    fn note_indent(&mut self, flow: bool, parent_col: Option<usize>, start: usize) {
        if let (false, Some(pc), None) = (flow, parent_col, self.unit) {
            let c = column(self.text, start);
            if c > pc {
                self.unit = Some(c - pc);
            }
        }
    }

    fn mapping(
        &mut self,
        m: &Mapping,
        path: &KeyPath,
        flow: bool,
        parent_col: Option<usize>,
        root: bool,
    ) -> Result<(), StoreError> {
        let flow = flow || m.is_flow_style();
        self.note_indent(flow, parent_col, m.byte_range().start as usize);
        let mut seen = HashSet::new();
        for e in m.entries() {
            let er = e.byte_range();
            let (estart, eend) = (er.start as usize, er.end as usize);
            if self.text[estart..].starts_with('?') {
                return Err(self.err("explicit keys (`?`) are not supported", estart));
            }
            let key = match e.key_node() {
                Some(YamlNode::Scalar(s)) if !s.is_block() => s,
                _ => return Err(self.err("only scalar keys are supported", estart)),
            };
            self.check_scalar(&key)?;
            let kr = key.byte_range();
            self.covered.push(kr.start as usize..kr.end as usize);
            let k = key.as_string();
            let value = e.value_node().ok_or_else(|| self.err("mapping entry without a value", estart))?;
            if root && k == META_KEY {
                self.covered.push(estart..eend);
                self.meta.push(MetaEntry { span: estart..eend, json: to_json(&value) });
                continue;
            }
            if !seen.insert(k.clone()) {
                return Err(self.err("duplicate key", estart));
            }
            let ctx = Ctx::MapValue { key_end: key.byte_range().end as usize, col: column(self.text, estart) };
            self.node(&value, &path.child(PathSegment::Key(k)), flow, ctx)?;
        }
        Ok(())
    }

    fn sequence(&mut self, s: &Sequence, path: &KeyPath, flow: bool, parent_col: usize) -> Result<(), StoreError> {
        let flow = flow || s.is_flow_style();
        let seq_start = s.byte_range().start as usize;
        self.note_indent(flow, Some(parent_col), seq_start);
        let col = column(self.text, seq_start);
        for (index, v) in s.values().enumerate() {
            let ctx = Ctx::SeqItem { index, seq_start, col };
            self.node(&v, &path.child(PathSegment::Index(index as u64)), flow, ctx)?;
        }
        Ok(())
    }

    fn node(&mut self, n: &YamlNode, path: &KeyPath, flow: bool, ctx: Ctx) -> Result<(), StoreError> {
        match n {
            YamlNode::Scalar(s) => self.scalar(s, path, flow, ctx),
            YamlNode::Mapping(m) => self.mapping(m, path, flow, Some(ctx.col()), false),
            YamlNode::Sequence(s) => self.sequence(s, path, flow, ctx.col()),
            YamlNode::Alias(_) => Err(self.err("aliases (`*name`) are not supported", start_of(n))),
            YamlNode::TaggedNode(_) => Err(self.err("tags (`!tag`) are not supported", start_of(n))),
        }
    }

    fn scalar(&mut self, s: &Scalar, path: &KeyPath, flow: bool, ctx: Ctx) -> Result<(), StoreError> {
        let r = s.byte_range();
        let (start, end) = (r.start as usize, r.end as usize);
        self.check_scalar(s)?;
        self.covered.push(start..end);
        let (style, ty, text) = decode(s);
        let mut bare = false;
        let span = if s.is_block() {
            start..start + block_content_end(&self.text[start..end])
        } else if start == end {
            // An empty value: the parser places it at the end of its line, after any comment;
            // it is written just after its indicator.
            let p = match ctx {
                Ctx::MapValue { key_end, .. } => {
                    let colon = key_end + self.text[key_end..].len()
                        - self.text[key_end..].trim_start_matches([' ', '\t']).len();
                    if self.text[colon..].starts_with(':') {
                        colon + 1
                    } else {
                        bare = true;
                        key_end
                    }
                }
                Ctx::SeqItem { index, seq_start, .. } => {
                    // Every `-` of a block sequence sits where the first one does in its line.
                    let indent = seq_start - line_start(self.text, seq_start);
                    let dash = if index == 0 || flow { seq_start } else { line_start(self.text, start) + indent };
                    if flow || !self.text.get(dash..).is_some_and(|t| t.starts_with('-')) {
                        return Err(self.err("unsupported layout around an empty value", start));
                    }
                    dash + 1
                }
            };
            // Only blanks and a comment may sit between the indicator and the empty value (an
            // anchor on an empty value is not supported).
            let gap = self.text.get(p..start).unwrap_or("x").trim_start_matches([' ', '\t']);
            if !(gap.is_empty() || gap.starts_with('#')) {
                return Err(self.err("unsupported layout around an empty value", start));
            }
            p..p
        } else {
            start..end
        };
        self.slots.push(Slot { path: path.clone(), ty, text, span, style, flow, col: ctx.col(), bare });
        Ok(())
    }
}

/// The offset of the first invalid escape in a double-quoted scalar, if any (YAML 1.2 §5.7).
fn invalid_escape(raw: &str) -> Option<usize> {
    let mut it = raw.char_indices().peekable();
    while let Some((i, c)) = it.next() {
        if c != '\\' {
            continue;
        }
        let Some((_, e)) = it.next() else { return Some(i) };
        let hex = match e {
            '0' | 'a' | 'b' | 't' | '\t' | 'n' | 'v' | 'f' | 'r' | 'e' | ' ' | '"' | '/' | '\\' | 'N' | '_' | 'L'
            | 'P' | '\n' | '\r' => continue,
            'x' => 2,
            'u' => 4,
            'U' => 8,
            _ => return Some(i),
        };
        let digits: String =
            (0..hex).filter_map(|_| it.next_if(|(_, d)| d.is_ascii_hexdigit()).map(|(_, d)| d)).collect();
        if digits.len() != hex || u32::from_str_radix(&digits, 16).ok().and_then(char::from_u32).is_none() {
            return Some(i);
        }
    }
    None
}

/// A metadata value as JSON: plain scalars by the core schema, numbers must be JSON numbers.
fn to_json(n: &YamlNode) -> Result<Value, String> {
    Ok(match n {
        YamlNode::Scalar(s) => {
            let (_, ty, text) = decode(s);
            match ty {
                ValueType::Str => Value::String(text),
                ValueType::Null => Value::Null,
                ValueType::Bool => Value::Bool(text.eq_ignore_ascii_case("true")),
                ValueType::Num => Value::Number(
                    serde_json::from_str(&text)
                        .map_err(|_| "a number in the metadata is not a JSON number".to_string())?,
                ),
            }
        }
        YamlNode::Mapping(m) => {
            let mut out = Map::new();
            for e in m.entries() {
                let Some(YamlNode::Scalar(k)) = e.key_node() else {
                    return Err("a key in the metadata is not a scalar".into());
                };
                let v = e.value_node().ok_or("an entry in the metadata has no value")?;
                if out.insert(k.as_string(), to_json(&v)?).is_some() {
                    return Err("duplicate key in the metadata".into());
                }
            }
            Value::Object(out)
        }
        YamlNode::Sequence(s) => Value::Array(s.values().map(|v| to_json(&v)).collect::<Result<_, _>>()?),
        YamlNode::Alias(_) | YamlNode::TaggedNode(_) => {
            return Err("aliases and tags are not allowed in the metadata".into());
        }
    })
}

/// YAML's printable characters (c-printable), without the byte order mark.
fn is_printable(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r' | ' '..='~' | '\u{85}' | '\u{A0}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}' | '\u{10000}'..)
        && c != '\u{FEFF}'
}

/// Printable and not a line break (YAML 1.1 also breaks lines at NEL, LS and PS).
fn is_inline(c: char) -> bool {
    is_printable(c) && !matches!(c, '\n' | '\r' | '\u{85}' | '\u{2028}' | '\u{2029}')
}

/// Whether `s` can be written unquoted and read back as the same string.
fn plain_ok(s: &str, flow: bool) -> bool {
    let Some(first) = s.chars().next() else { return false };
    let flow_ind = |c: char| matches!(c, ',' | '[' | ']' | '{' | '}');
    let second = s.chars().nth(1);
    // `-`, `?` and `:` start an unquoted scalar only when a safe character follows.
    let bad_start = "[]{},#&*!|>'\"%@`".contains(first)
        || (matches!(first, '-' | '?' | ':') && second.is_none_or(|c| c == ' ' || c == '\t' || (flow && flow_ind(c))))
        || s.starts_with("---")
        || s.starts_with("...");
    let bad_inside = !s.chars().all(is_inline)
        || s.starts_with([' ', '\t'])
        || s.ends_with([' ', '\t', ':'])
        || [": ", ":\t", " #", "\t#"].iter().any(|p| s.contains(p))
        || (flow && s.chars().any(flow_ind));
    !bad_start && !bad_inside && resolve(s) == ValueType::Str
}

fn single_quoted(s: &str) -> Option<String> {
    s.chars().all(is_inline).then(|| format!("'{}'", s.replace('\'', "''")))
}

fn double_quoted(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\0' => out.push_str("\\0"),
            '\u{7}' => out.push_str("\\a"),
            '\u{8}' => out.push_str("\\b"),
            '\t' => out.push_str("\\t"),
            '\n' => out.push_str("\\n"),
            '\u{B}' => out.push_str("\\v"),
            '\u{C}' => out.push_str("\\f"),
            '\r' => out.push_str("\\r"),
            '\u{1B}' => out.push_str("\\e"),
            '\u{85}' => out.push_str("\\N"),
            '\u{2028}' => out.push_str("\\L"),
            '\u{2029}' => out.push_str("\\P"),
            c if is_printable(c) => out.push(c),
            c if (c as u32) < 0x100 => out.push_str(&format!("\\x{:02X}", c as u32)),
            c if (c as u32) < 0x10000 => out.push_str(&format!("\\u{:04X}", c as u32)),
            c => out.push_str(&format!("\\U{:08X}", c as u32)),
        }
    }
    out.push('"');
    out
}

/// A literal block scalar for `s`, its content indented by `indent` spaces, without the line
/// break ending its last line (the one after the replaced scalar ends it). `None` when a
/// literal block cannot hold `s` simply.
fn literal(s: &str, indent: usize, nl: &str) -> Option<String> {
    let body = s.trim_end_matches('\n');
    let header = match s.len() - body.len() {
        0 => "|-",
        1 => "|",
        _ => return None,
    };
    let first = body.split('\n').find(|l| !l.is_empty())?;
    if !body.contains('\n') && header == "|-"
        || first.starts_with([' ', '\t'])
        || !body.chars().all(|c| c == '\n' || (is_inline(c)))
    {
        return None;
    }
    let pad = " ".repeat(indent);
    let mut out = String::from(header);
    for line in body.split('\n') {
        out.push_str(nl);
        if !line.is_empty() {
            out.push_str(&pad);
            out.push_str(line);
        }
    }
    Some(out)
}

/// A way of writing a value.
enum Candidate {
    Inline(String),
    Literal,
}

/// Reads back one scalar written in a small document of its own.
fn read_back(doc: &str, flow: bool) -> Option<(ValueType, String)> {
    let parsed = YamlFile::parse(doc);
    if parsed.has_errors() {
        return None;
    }
    let d = parsed.tree().document()?;
    let node = if flow { d.as_sequence()?.get(0)? } else { d.as_mapping()?.entries().next()?.value_node()? };
    let YamlNode::Scalar(s) = node else { return None };
    let (_, ty, text) = decode(&s);
    Some((ty, text))
}

fn typed_text_ok(ty: ValueType, text: &str) -> Result<(), StoreError> {
    match ty {
        ValueType::Num if !is_num_text(text) => Err(perr("sealed number is not a YAML number")),
        ValueType::Bool if !is_bool_text(text) => Err(perr("sealed boolean is not true or false")),
        ValueType::Null if !is_null_text(text) => Err(perr("sealed null is not null")),
        _ => Ok(()),
    }
}

/// Appends a JSON value as YAML block lines (metadata only: no block scalars needed).
fn yaml_scalar(v: &Value) -> String {
    match v {
        Value::String(s) if plain_ok(s, false) => s.clone(),
        Value::String(s) => double_quoted(s),
        Value::Null => "null".into(),
        other => other.to_string(),
    }
}

fn yaml_key(k: &str) -> String {
    if plain_ok(k, false) { k.to_string() } else { double_quoted(k) }
}

fn emit_entry(key: &str, v: &Value, indent: usize, unit: usize, out: &mut Vec<String>) {
    let pad = " ".repeat(indent);
    let k = yaml_key(key);
    match v {
        Value::Object(m) if m.is_empty() => out.push(format!("{pad}{k}: {{}}")),
        Value::Array(a) if a.is_empty() => out.push(format!("{pad}{k}: []")),
        Value::Object(m) => {
            out.push(format!("{pad}{k}:"));
            for (k2, v2) in m {
                emit_entry(k2, v2, indent + unit, unit, out);
            }
        }
        Value::Array(a) => {
            out.push(format!("{pad}{k}:"));
            for item in a {
                emit_item(item, indent + unit, unit, out);
            }
        }
        scalar => out.push(format!("{pad}{k}: {}", yaml_scalar(scalar))),
    }
}

fn emit_item(v: &Value, indent: usize, unit: usize, out: &mut Vec<String>) {
    let pad = " ".repeat(indent);
    match v {
        Value::Object(m) if !m.is_empty() => {
            let first = out.len();
            for (k, v2) in m {
                emit_entry(k, v2, indent + 2, unit, out);
            }
            out[first].replace_range(..indent + 2, &format!("{pad}- "));
        }
        Value::Array(a) if !a.is_empty() => {
            out.push(format!("{pad}-"));
            for item in a {
                emit_item(item, indent + unit, unit, out);
            }
        }
        Value::Object(_) => out.push(format!("{pad}- {{}}")),
        Value::Array(_) => out.push(format!("{pad}- []")),
        scalar => out.push(format!("{pad}- {}", yaml_scalar(scalar))),
    }
}

fn check_top(path: &KeyPath) -> Result<(), StoreError> {
    match path.0.first() {
        Some(PathSegment::Key(k)) if k == META_KEY => Err(StoreError::InvalidPath(format!("{META_KEY:?} is reserved"))),
        Some(PathSegment::Key(_)) => Ok(()),
        _ => Err(StoreError::InvalidPath(path.display())),
    }
}

fn is_null_node(n: &YamlNode) -> bool {
    matches!(n, YamlNode::Scalar(s) if decode(s).1 == ValueType::Null)
}

fn find_entry(m: &Mapping, key: &str) -> Option<yaml_edit::MappingEntry> {
    m.entries().find(|e| matches!(e.key_node(), Some(YamlNode::Scalar(s)) if s.as_string() == key))
}

impl YamlDocument {
    /// Parses YAML text; the top level must be a mapping.
    ///
    /// # Errors
    /// [`StoreError::Parse`] with line and column (never the offending text), also for the
    /// constructs listed in the module documentation.
    pub fn parse(content: &[u8]) -> Result<Self, StoreError> {
        let text = std::str::from_utf8(content).map_err(|e| perr(format!("not UTF-8 (byte {})", e.valid_up_to())))?;
        Self::index(text.to_string())
    }

    fn index(text: String) -> Result<Self, StoreError> {
        let parsed = YamlFile::parse(&text);
        if let Some(e) = parsed.positioned_errors().first() {
            return Err(perr(format!("{} at {}", describe(&e.kind), at(&text, e.range.start as usize))));
        }
        let file = parsed.tree();
        let docs: Vec<_> = file.documents().collect();
        let doc = match docs.as_slice() {
            [] => return Err(perr("the document is empty; the top level must be a mapping")),
            [d] => d,
            more => {
                return Err(perr(format!(
                    "multi-document streams are not supported ({} documents); keep one document per file",
                    more.len()
                )));
            }
        };
        // Duplicate keys are checked below, where a repeated `envseal` key is left for
        // `metadata()` to report.
        let strict = Validator::with_config(ValidatorConfig { check_duplicate_keys: false, ..Default::default() });
        if let Some(v) = strict.validate(doc).into_iter().find(|v| v.severity == Severity::Error) {
            let place = v.text_range.map_or_else(|| "an unknown position".to_string(), |r| at(&text, r.start as usize));
            return Err(perr(format!("invalid YAML ({:?}) at {place}", v.rule)));
        }
        let root = doc.as_mapping().ok_or_else(|| perr("the top level must be a mapping"))?;
        let range = root.byte_range();
        let mut w = Walker { text: &text, slots: Vec::new(), meta: Vec::new(), unit: None, covered: Vec::new() };
        w.mapping(&root, &KeyPath::default(), false, None, true)?;
        w.check_tokens()?;
        let (slots, meta, unit) = (w.slots, w.meta, w.unit.unwrap_or(2));
        Ok(Self {
            root_flow: root.is_flow_style(),
            root_col: column(&text, range.start as usize),
            root_end: range.end as usize,
            nl: if text.contains("\r\n") { "\r\n" } else { "\n" },
            text,
            slots,
            meta,
            unit,
        })
    }

    /// Whether only blanks and then a line break follow `pos` on its line.
    fn line_ends_after(&self, pos: usize) -> bool {
        let rest = self.text[pos..].trim_start_matches([' ', '\t']);
        rest.starts_with('\n') || rest.starts_with("\r\n")
    }

    /// The scalar text to write at slot `i` for (`ty`, `text`), read back before it is chosen.
    fn choose(&self, i: usize, ty: ValueType, text: &str) -> Result<(String, Style), StoreError> {
        let slot = &self.slots[i];
        let mut cands: Vec<(Candidate, Style)> = Vec::new();
        if ty == ValueType::Str {
            let single = || single_quoted(text).map(|s| (Candidate::Inline(s), Style::Single));
            match slot.style {
                Style::Double => cands.push((Candidate::Inline(double_quoted(text)), Style::Double)),
                Style::Single if !slot.flow => cands.extend(single()),
                _ => {}
            }
            if plain_ok(text, slot.flow) {
                cands.push((Candidate::Inline(text.to_string()), Style::Plain));
            }
            // In a flow collection, single quotes stand for "unquoted if possible": a sealed
            // value cannot be unquoted there, and unquoted is what flow collections mostly hold.
            if slot.flow && slot.style != Style::Double {
                cands.extend(single());
            }
            if !slot.flow && text.contains('\n') && self.line_ends_after(slot.span.end) {
                cands.push((Candidate::Literal, Style::Literal));
            }
            cands.push((Candidate::Inline(double_quoted(text)), Style::Double));
        } else {
            typed_text_ok(ty, text)?;
            cands.push((Candidate::Inline(text.to_string()), Style::Plain));
        }
        for (c, style) in cands {
            let (probe, written) = match c {
                Candidate::Inline(s) if slot.flow => (format!("[{s}]"), s),
                Candidate::Inline(s) => (format!("k: {s}\n"), s),
                Candidate::Literal => {
                    let (Some(probe), Some(written)) =
                        (literal(text, self.unit, "\n"), literal(text, slot.col + self.unit, self.nl))
                    else {
                        continue;
                    };
                    (format!("k: {probe}\n"), written)
                }
            };
            if read_back(&probe, slot.flow).is_some_and(|(t, v)| t == ty && v == text) {
                return Ok((written, style));
            }
        }
        Err(StoreError::InvalidPath(format!("{}: the value cannot be written as YAML", slot.path.display())))
    }

    /// Replaces the scalar at slot `i`, splicing its bytes only.
    fn write_slot(&mut self, i: usize, ty: ValueType, text: &str) -> Result<(), StoreError> {
        // An empty value in a flow sequence would be no item at all.
        let text = if ty == ValueType::Null && text.is_empty() && self.slots[i].flow && !self.slots[i].bare {
            match self.slots[i].path.0.last() {
                Some(PathSegment::Index(_)) => "null",
                _ => text,
            }
        } else {
            text
        };
        let (scalar, style) = if ty == ValueType::Null && text.is_empty() {
            (String::new(), Style::Plain)
        } else {
            self.choose(i, ty, text)?
        };
        let slot = &self.slots[i];
        let (range, replacement, lead) = if scalar.is_empty() {
            let b = self.text.as_bytes();
            let mut s = slot.span.start;
            // Drop the space that separated the old value from its indicator.
            if !slot.span.is_empty() && s >= 2 && b[s - 1] == b' ' && matches!(b[s - 2], b':' | b'-') {
                s -= 1;
            }
            (s..slot.span.end, String::new(), 0)
        } else if slot.span.is_empty() {
            let prefix = if slot.bare { ": " } else { " " };
            (slot.span.clone(), format!("{prefix}{scalar}"), prefix.len())
        } else {
            (slot.span.clone(), scalar.clone(), 0)
        };
        let new_start = range.start + lead;
        let new_end = range.start + replacement.len();
        let delta = new_end as isize - range.end as isize;
        let old_end = range.end;
        self.text.replace_range(range, &replacement);
        let shift = |p: &mut usize| {
            if *p >= old_end {
                *p = p.wrapping_add_signed(delta);
            }
        };
        for (j, s) in self.slots.iter_mut().enumerate() {
            if j != i {
                shift(&mut s.span.start);
                shift(&mut s.span.end);
            }
        }
        for m in &mut self.meta {
            shift(&mut m.span.start);
            shift(&mut m.span.end);
        }
        shift(&mut self.root_end);
        let slot = &mut self.slots[i];
        slot.span = new_start..new_end;
        slot.ty = ty;
        slot.text = text.to_string();
        slot.style = style;
        if !replacement.is_empty() {
            slot.bare = false;
        }
        Ok(())
    }

    /// Adds the missing value at `path` as a null (with the mappings leading to it), through
    /// `yaml-edit`, which lays the new entry out like its siblings.
    fn add_missing(&mut self, path: &KeyPath) -> Result<(), StoreError> {
        let bad = |why: &str| StoreError::InvalidPath(format!("{}: {why}", path.display()));
        let build = |rest: &[PathSegment]| -> Result<YamlValue, StoreError> {
            let mut v = YamlValue::scalar(ScalarValue::null());
            for seg in rest.iter().rev() {
                let PathSegment::Key(k) = seg else { return Err(bad("there is no sequence to index")) };
                v = YamlValue::Mapping(BTreeMap::from([(k.clone(), v)]));
            }
            Ok(v)
        };
        let file = YamlFile::parse(&self.text).tree();
        let root = file.document().and_then(|d| d.as_mapping()).ok_or_else(|| bad("no top-level mapping"))?;
        let mut cur = YamlNode::Mapping(root.clone());
        // The null value an added mapping replaces, if any.
        let mut replaced: Option<KeyPath> = None;
        let mut done = false;
        for (d, seg) in path.0.iter().enumerate() {
            let rest = &path.0[d + 1..];
            let here = KeyPath(path.0[..=d].to_vec());
            let next = match (&cur, seg) {
                (YamlNode::Mapping(m), PathSegment::Key(k)) => match find_entry(m, k) {
                    Some(e) => {
                        let v = e.value_node().ok_or_else(|| bad("malformed entry"))?;
                        if is_null_node(&v) && !rest.is_empty() {
                            let key = e.key_node().ok_or_else(|| bad("malformed entry"))?;
                            m.set(key, build(rest)?);
                            replaced = Some(here);
                            done = true;
                            break;
                        }
                        v
                    }
                    None => {
                        let value = build(rest)?;
                        if d == 0 && find_entry(m, META_KEY).is_some() {
                            m.insert_before(META_KEY, k.as_str(), value);
                        } else {
                            m.set(k.as_str(), value);
                        }
                        done = true;
                        break;
                    }
                },
                (YamlNode::Sequence(s), PathSegment::Index(i)) => {
                    let (i, len) = (*i as usize, s.len());
                    if i > len {
                        return Err(bad("index past the end"));
                    }
                    if i == len {
                        s.push(build(rest)?);
                        done = true;
                        break;
                    }
                    let v = s.get(i).ok_or_else(|| bad("malformed sequence"))?;
                    if is_null_node(&v) && !rest.is_empty() {
                        s.set(i, build(rest)?);
                        replaced = Some(here);
                        done = true;
                        break;
                    }
                    v
                }
                (YamlNode::Mapping(_), PathSegment::Index(_)) => return Err(bad("not a sequence")),
                (YamlNode::Sequence(_), PathSegment::Key(_)) => return Err(bad("not a mapping")),
                _ => return Err(bad("a value is in the way")),
            };
            cur = next;
        }
        if !done {
            return Err(StoreError::InvalidPath(format!(
                "{} holds a mapping or sequence, not a value",
                path.display()
            )));
        }
        let next = Self::index(file.to_string())?;
        let mut expected = self.entries();
        expected.retain(|e| replaced.as_ref() != Some(&e.path));
        let mut got = next.entries();
        let added = got.iter().position(|e| &e.path == path && e.ty == ValueType::Null);
        if let Some(p) = added {
            got.remove(p);
        }
        if added.is_none() || got != expected || !same_meta(&next.meta, &self.meta) {
            return Err(bad("cannot add it without disturbing the document"));
        }
        *self = next;
        Ok(())
    }
}

fn same_meta(a: &[MetaEntry], b: &[MetaEntry]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.json == y.json)
}

impl Document for YamlDocument {
    fn format(&self) -> Format {
        Format::Yaml
    }

    fn entries(&self) -> Vec<Entry> {
        self.slots.iter().map(|s| Entry { path: s.path.clone(), ty: s.ty, text: s.text.clone() }).collect()
    }

    fn set_value(&mut self, path: &KeyPath, ty: ValueType, text: &str, sealed: bool) -> Result<(), StoreError> {
        check_top(path)?;
        let ty = if sealed { ValueType::Str } else { ty };
        if ty != ValueType::Str {
            // Fail before any structural change.
            typed_text_ok(ty, text)?;
        }
        let i = match self.slots.iter().position(|s| &s.path == path) {
            Some(i) => i,
            None => {
                if self.slots.iter().any(|s| s.path.0.starts_with(&path.0)) {
                    return Err(StoreError::InvalidPath(format!(
                        "{} holds a mapping or sequence, not a value",
                        path.display()
                    )));
                }
                self.add_missing(path)?;
                self.slots
                    .iter()
                    .position(|s| &s.path == path)
                    .ok_or_else(|| StoreError::InvalidPath(path.display()))?
            }
        };
        self.write_slot(i, ty, text)
    }

    fn remove_value(&mut self, path: &KeyPath) -> Result<bool, StoreError> {
        check_top(path)?;
        let file = YamlFile::parse(&self.text).tree();
        let Some(root) = file.document().and_then(|d| d.as_mapping()) else { return Ok(false) };
        let (last, parents) = path.0.split_last().ok_or_else(|| StoreError::InvalidPath(path.display()))?;
        let mut cur = YamlNode::Mapping(root);
        for seg in parents {
            let next = match (&cur, seg) {
                (YamlNode::Mapping(m), PathSegment::Key(k)) => find_entry(m, k).and_then(|e| e.value_node()),
                (YamlNode::Sequence(s), PathSegment::Index(i)) => s.get(*i as usize),
                _ => None,
            };
            match next {
                Some(n) => cur = n,
                None => return Ok(false),
            }
        }
        match (&cur, last) {
            (YamlNode::Mapping(m), PathSegment::Key(k)) => {
                let Some(key) = find_entry(m, k).and_then(|e| e.key_node()) else { return Ok(false) };
                m.remove(key);
            }
            (YamlNode::Sequence(s), PathSegment::Index(i)) if (*i as usize) < s.len() => {
                s.remove(*i as usize);
            }
            _ => return Ok(false),
        }
        let next = Self::index(file.to_string())?;
        // What should be left: everything outside `path`, later items of the same sequence one
        // index down.
        let expected: Vec<Entry> = self
            .entries()
            .into_iter()
            .filter(|e| !e.path.0.starts_with(&path.0))
            .map(|mut e| {
                if let (PathSegment::Index(i), true) = (last, e.path.0.starts_with(parents))
                    && let Some(PathSegment::Index(j)) = e.path.0.get_mut(parents.len())
                    && *j > *i
                {
                    *j -= 1;
                }
                e
            })
            .collect();
        if next.entries() != expected || !same_meta(&next.meta, &self.meta) {
            return Err(StoreError::InvalidPath(format!(
                "{}: cannot remove it without disturbing the document",
                path.display()
            )));
        }
        *self = next;
        Ok(true)
    }

    fn metadata(&self) -> Result<Option<Metadata>, StoreError> {
        match self.meta.as_slice() {
            [] => Ok(None),
            [m] => Metadata::from_json(m.json.clone().map_err(StoreError::Metadata)?).map(Some),
            _ => Err(StoreError::Metadata(format!("the top-level key {META_KEY:?} appears more than once"))),
        }
    }

    fn set_metadata(&mut self, meta: Option<&Metadata>) -> Result<(), StoreError> {
        let mut next = self.clone();
        if !self.meta.is_empty() {
            // Cut each entry with its lines; when one ends the file without a line break, the
            // line break before it goes too (the inverse of appending below).
            let mut text = self.text.clone();
            for m in self.meta.iter().rev() {
                let mut start = line_start(&text, m.span.start);
                if !text[..m.span.end].ends_with('\n') && start > 0 {
                    start -= if text[..start].ends_with("\r\n") { 2 } else { 1 };
                }
                text.replace_range(start..m.span.end, "");
            }
            next = Self::index(text)?;
        }
        if let Some(m) = meta {
            if next.root_flow {
                return Err(StoreError::InvalidPath(format!(
                    "a flow-style top-level mapping ({{...}}) cannot hold the {META_KEY:?} metadata"
                )));
            }
            let json = m.to_json();
            let Value::Object(obj) = &json else {
                return Err(StoreError::Metadata("metadata is not an object".into()));
            };
            let mut lines = Vec::new();
            emit_entry(META_KEY, &Value::Object(obj.clone()), next.root_col, next.unit, &mut lines);
            let block = lines.join(next.nl);
            let mut text = next.text.clone();
            let at = next.root_end;
            let insert = if at == 0 || text[..at].ends_with('\n') {
                format!("{block}{}", next.nl)
            } else {
                format!("{}{block}", next.nl)
            };
            text.insert_str(at, &insert);
            next = Self::index(text)?;
            if !matches!(next.meta.as_slice(), [e] if e.json.as_ref() == Ok(&json)) {
                return Err(StoreError::Metadata("the metadata does not read back as written".into()));
            }
        }
        if next.entries() != self.entries() {
            return Err(StoreError::Metadata("writing the metadata would change the values".into()));
        }
        *self = next;
        Ok(())
    }

    fn render(&self) -> Vec<u8> {
        self.text.as_bytes().to_vec()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse_key_path;

    fn doc(s: &str) -> YamlDocument {
        YamlDocument::parse(s.as_bytes()).unwrap()
    }

    fn entries(d: &YamlDocument) -> Vec<(String, ValueType, String)> {
        d.entries().into_iter().map(|e| (e.path.display(), e.ty, e.text)).collect()
    }

    fn set(d: &mut YamlDocument, p: &str, ty: ValueType, v: &str) {
        d.set_value(&parse_key_path(p).unwrap(), ty, v, false).unwrap();
    }

    fn text(d: &YamlDocument) -> String {
        String::from_utf8(d.render()).unwrap()
    }

    #[test]
    fn entries_types_and_order() {
        let d = doc(concat!(
            "# head\n",
            "b:\n",
            "  x: [1, two, true, null]\n",
            "  s: 'it''s'\n",
            "  q: \"tab\\there\"\n",
            "  lit: |\n    l1\n    l2\n",
            "  fold: >-\n    f1\n    f2\n",
            "a: 1.50\n",
            "yes: yes\n",
            "z: ~\n",
            "e:\n",
            "o: 0123\n",
            "h: 0x1F\n",
            "n: -3.5e2\n",
            "inf: -.inf\n",
            "T: True\n",
        ));
        use ValueType::*;
        let s = |p: &str, t, v: &str| (p.to_string(), t, v.to_string());
        assert_eq!(
            entries(&d),
            vec![
                s("b.x[0]", Num, "1"),
                s("b.x[1]", Str, "two"),
                s("b.x[2]", Bool, "true"),
                s("b.x[3]", Null, "null"),
                s("b.s", Str, "it's"),
                s("b.q", Str, "tab\there"),
                s("b.lit", Str, "l1\nl2\n"),
                s("b.fold", Str, "f1 f2"),
                s("a", Num, "1.50"),
                s("yes", Str, "yes"),
                s("z", Null, "~"),
                s("e", Null, ""),
                s("o", Num, "0123"),
                s("h", Num, "0x1F"),
                s("n", Num, "-3.5e2"),
                s("inf", Num, "-.inf"),
                s("T", Bool, "True"),
            ]
        );
    }

    #[test]
    fn strings_are_quoted_when_needed() {
        let mut d = doc("k: x # keep\nf: {a: x}\nl: [x]\n");
        for v in [
            "true",
            "123",
            "0123",
            "~",
            "",
            "null",
            "a: b",
            "a #b",
            " lead",
            "trail ",
            "-",
            "- x",
            "[x]",
            "{x}",
            "#x",
            "&a",
            "*a",
            "!t",
            "|",
            ">",
            "'",
            "\"",
            "%x",
            "@x",
            "`x",
            "---",
            "...",
            "x:",
            "tab\tx",
            "\u{0}\u{7f}\u{85}",
            "\u{feff}bom",
            "é ü 日本 🙂",
            "ENC[v1:s:AbC-_09]",
            "a,b",
            "? x",
            ": x",
            "line\nline",
        ] {
            for p in ["k", "f.a", "l[0]"] {
                set(&mut d, p, ValueType::Str, v);
                let back = doc(&text(&d));
                let e = back.entries().into_iter().find(|e| e.path.display() == p).unwrap();
                assert_eq!((e.ty, e.text.as_str()), (ValueType::Str, v), "{p} = {v:?} in\n{}", text(&d));
            }
        }
        assert!(text(&d).starts_with("k: \"line\\nline\" # keep\n"), "{}", text(&d));
        // A quoted scalar stays quoted; an unquoted one stays unquoted where it can.
        set(&mut d, "k", ValueType::Str, "ENC[v1:s:AbC-_09]");
        assert!(text(&d).starts_with("k: \"ENC[v1:s:AbC-_09]\" # keep\n"), "{}", text(&d));
        set(&mut d, "k", ValueType::Num, "1");
        set(&mut d, "k", ValueType::Str, "ENC[v1:s:AbC-_09]");
        set(&mut d, "f.a", ValueType::Num, "1");
        set(&mut d, "f.a", ValueType::Str, "ENC[v1:s:AbC-_09]");
        assert_eq!(text(&d), "k: ENC[v1:s:AbC-_09] # keep\nf: {a: 'ENC[v1:s:AbC-_09]'}\nl: [\"line\\nline\"]\n");
    }

    #[test]
    fn block_scalars_and_quote_styles_come_back() {
        let src = "a:\n  pem: |\n    -----BEGIN-----\n    abc\n\n    -----END-----\n  s: 'single'\n  d: \"double\"\n  strip: |-\n    x\n    y\nz: 1\n";
        let mut d = doc(src);
        let before = d.entries();
        for e in &before {
            d.set_value(&e.path, ValueType::Str, "ENC[v1:s:AAAA]", true).unwrap();
        }
        let sealed = text(&d);
        assert_eq!(
            sealed,
            "a:\n  pem: ENC[v1:s:AAAA]\n  s: 'ENC[v1:s:AAAA]'\n  d: \"ENC[v1:s:AAAA]\"\n  strip: ENC[v1:s:AAAA]\nz: ENC[v1:s:AAAA]\n"
        );
        let mut d = doc(&sealed);
        for e in &before {
            d.set_value(&e.path, e.ty, &e.text, false).unwrap();
        }
        assert_eq!(text(&d), src);
    }

    #[test]
    fn empty_values_round_trip() {
        let src = "a:\nb:   # c\nl:\n  - \n  -\n  - x\nf: {k: }\n";
        let mut d = doc(src);
        let before = d.entries();
        assert_eq!(before.iter().filter(|e| e.ty == ValueType::Null).count(), 5, "{before:?}");
        for e in &before {
            d.set_value(&e.path, ValueType::Str, "ENC[v1:z:AA]", true).unwrap();
        }
        let sealed = text(&d);
        assert_eq!(
            sealed,
            "a: ENC[v1:z:AA]\nb: ENC[v1:z:AA]   # c\nl:\n  - ENC[v1:z:AA] \n  - ENC[v1:z:AA]\n  - ENC[v1:z:AA]\nf: {k: 'ENC[v1:z:AA]' }\n"
        );
        let mut d = doc(&sealed);
        for e in &before {
            d.set_value(&e.path, e.ty, &e.text, false).unwrap();
        }
        assert_eq!(text(&d), src);
    }

    #[test]
    fn add_and_remove() {
        let mut d = doc("# c\ndb:\n  host: h  # t\n\n# tail\nlist:\n  - a\nflow: {x: 1}\n");
        set(&mut d, "db.port", ValueType::Num, "5432");
        set(&mut d, "db.opts.ssl", ValueType::Bool, "true");
        set(&mut d, "list[1]", ValueType::Str, "b c");
        set(&mut d, "flow.y", ValueType::Str, "v");
        set(&mut d, "top", ValueType::Null, "");
        assert_eq!(
            text(&d),
            "# c\ndb:\n  host: h  # t\n  port: 5432\n  opts:\n    ssl: true\n\n# tail\nlist:\n  - a\n  - b c\nflow: {x: 1, y: v}\ntop:\n"
        );
        let bad = |d: &mut YamlDocument, p: &str| d.set_value(&parse_key_path(p).unwrap(), ValueType::Str, "x", false);
        assert!(matches!(bad(&mut d, "envseal"), Err(StoreError::InvalidPath(_))));
        assert!(matches!(bad(&mut d, "envseal.x"), Err(StoreError::InvalidPath(_))));
        assert!(matches!(bad(&mut d, "db"), Err(StoreError::InvalidPath(_))));
        assert!(matches!(bad(&mut d, "list[5]"), Err(StoreError::InvalidPath(_))));
        assert!(matches!(bad(&mut d, "db.host.x"), Err(StoreError::InvalidPath(_))));
        assert!(matches!(bad(&mut d, "list.x"), Err(StoreError::InvalidPath(_))));
        assert!(matches!(bad(&mut d, "new[0]"), Err(StoreError::InvalidPath(_))));
        assert!(matches!(
            d.set_value(&parse_key_path("db.port").unwrap(), ValueType::Num, "12abc", false),
            Err(StoreError::Parse { .. })
        ));
        set(&mut d, "top.x", ValueType::Str, "nested");
        assert!(text(&d).ends_with("top:\n  x: nested\n"), "{}", text(&d));

        let rm = |d: &mut YamlDocument, p: &str| d.remove_value(&parse_key_path(p).unwrap()).unwrap();
        assert!(rm(&mut d, "db.opts"));
        assert!(rm(&mut d, "list[0]"));
        assert!(rm(&mut d, "flow.x"));
        assert!(!rm(&mut d, "nope"));
        assert!(!rm(&mut d, "list[3]"));
        assert!(!rm(&mut d, "db.host.x"));
        assert_eq!(
            text(&d),
            "# c\ndb:\n  host: h  # t\n  port: 5432\n\n# tail\nlist:\n  - b c\nflow: {y: v}\ntop:\n  x: nested\n"
        );
        assert!(entries(&d).contains(&("list[0]".into(), ValueType::Str, "b c".into())));
    }

    fn meta() -> Metadata {
        Metadata::from_json(serde_json::json!({
            "version": 1,
            "file_id": "11".repeat(32),
            "context": {"app": "billing", "123": "true"},
            "keys": [{"backend": "mock", "key_id": "k-1", "key_version": "1", "blob": "AAEC"}],
            "commitment": "22".repeat(32),
            "mac": "33".repeat(32),
            "created": "2024-01-02T03:04:05Z",
        }))
        .unwrap()
    }

    #[test]
    fn metadata_is_appended_and_removed_exactly() {
        for src in ["a: 1\n", "a: 1", "a: 1\n# end\n", "---\na: 1\n...\n", "a:\n    b: 1\r\n", "  a: 1\n  b: 2\n"] {
            let mut d = doc(src);
            assert!(d.metadata().unwrap().is_none());
            d.set_metadata(Some(&meta())).unwrap();
            let sealed = text(&d);
            let d2 = doc(&sealed);
            assert_eq!(d2.metadata().unwrap(), Some(meta()), "{sealed}");
            assert_eq!(d2.entries(), doc(src).entries());
            let mut d3 = d2.clone();
            d3.set_metadata(Some(&meta())).unwrap();
            assert_eq!(text(&d3), sealed, "rewriting is stable");
            d3.set_metadata(None).unwrap();
            assert_eq!(text(&d3), src);
        }
        let mut d = doc("a: 1\n");
        d.set_metadata(Some(&meta())).unwrap();
        let t = text(&d);
        assert!(t.contains("\n      key_version: \"1\"\n") && t.contains("\n    \"123\": \"true\"\n"), "{t}");
        // Two metadata keys.
        let twice = format!("{t}envseal:\n  version: 1\n");
        assert!(matches!(doc(&twice).metadata(), Err(StoreError::Metadata(_))));
        // A flow top level cannot hold it.
        assert!(doc("{a: 1}").set_metadata(Some(&meta())).is_err());
        // Adding a top-level key keeps the metadata last.
        set(&mut d, "b", ValueType::Str, "x");
        assert!(text(&d).starts_with("a: 1\nb: x\nenvseal:\n"), "{}", text(&d));
    }

    #[test]
    fn parse_errors_never_quote_input() {
        for bad in [
            "k: [SECRETMARKER\n",
            "k: \"SECRETMARKER\n",
            "k: SECRETMARKER\n---\nj: SECRETMARKER\n",
            "- SECRETMARKER\n",
            "SECRETMARKER\n",
            "",
            "# SECRETMARKER\n",
            "a: &x SECRETMARKER\nb: *x\n",
            "a: !!str SECRETMARKER\n",
            "? SECRETMARKER\n: v\n",
            "a: SECRETMARKER\na: SECRETMARKER\n",
            "a:\n  b: SECRETMARKER\n c: SECRETMARKER\n",
            "a: SECRETMARKER\n\tb: 1\n",
            "a: \"\\qSECRETMARKER\"\n",
            "[a, b]: SECRETMARKER\n",
            "a: b: SECRETMARKER\n",
        ] {
            let err = YamlDocument::parse(bad.as_bytes()).err().unwrap_or_else(|| panic!("accepted {bad:?}"));
            assert!(matches!(err, StoreError::Parse { format: "yaml", .. }));
            let msg = err.to_string();
            assert!(!msg.contains("SECRETMARKER"), "{msg}");
            let whole = msg.contains("top level") || msg.contains("multi-document");
            assert!(whole || msg.contains("line "), "{msg}");
        }
        assert!(YamlDocument::parse(b"\xff").is_err());
        let err = YamlDocument::parse(b"a: 1\n---\nb: 2\n").unwrap_err().to_string();
        assert!(err.contains("multi-document"), "{err}");
    }
}
