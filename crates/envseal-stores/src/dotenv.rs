//! `.env` documents, through the lossless parser of `envseal-dotenv`.
//!
//! Each value is sealed in its exact source form (quotes and escapes included), so decrypting
//! restores the file byte for byte; programs (`envseal run`, `get`) see the decoded value. The
//! metadata is a block of `#ENVSEAL_<FIELD>=<JSON>` comment lines at the end of the file: .env
//! loaders skip them as comments, and a rewrap changes only those lines.

use envseal_core::values::{KeyPath, PathSegment, ValueType};
use envseal_dotenv::{Document as Env, LineEnding};
use serde_json::{Map, Value};

use crate::{Document, Entry, Format, Metadata, StoreError};

/// Prefix of every metadata line.
pub const META_PREFIX: &str = "#ENVSEAL_";

/// Fields, in the order they are written. `KEY` repeats.
const FIELDS: &[(&str, &str)] = &[
    ("VERSION", "version"),
    ("FILE_ID", "file_id"),
    ("CONTEXT", "context"),
    ("KEY", "keys"),
    ("PLAIN_KEYS", "plain_keys"),
    ("PADDING", "padding"),
    ("COMMITMENT", "commitment"),
    ("MAC", "mac"),
    ("CREATED", "created"),
    ("MODIFIED", "modified"),
];
/// Set when sealing added a line break after a last line that had none.
const FINAL_NEWLINE_FIELD: &str = "FINAL_NEWLINE";

/// A `.env` document.
#[derive(Debug, Clone)]
pub struct DotenvDocument {
    env: Env,
    /// The metadata block's lines (without line endings), if sealed.
    meta: Option<Vec<String>>,
}

fn perr(e: impl std::fmt::Display) -> StoreError {
    StoreError::Parse { format: "dotenv", message: e.to_string() }
}

fn key_of(path: &KeyPath) -> Result<&str, StoreError> {
    match path.0.as_slice() {
        [PathSegment::Key(k)] => Ok(k),
        _ => Err(StoreError::InvalidPath(format!("{}: .env keys have no nesting", path.display()))),
    }
}

impl DotenvDocument {
    /// Parses `.env` bytes, splitting off a trailing metadata block.
    ///
    /// # Errors
    /// [`StoreError::Parse`] (line number and kind, never the text);
    /// [`StoreError::Metadata`] for metadata lines anywhere but one block at the end.
    pub fn parse(content: &[u8]) -> Result<Self, StoreError> {
        let text = std::str::from_utf8(content).map_err(|e| {
            let line = 1 + content[..e.valid_up_to()].iter().filter(|&&b| b == b'\n').count();
            perr(format_args!("line {line}: not UTF-8"))
        })?;
        // Find the trailing block of metadata lines.
        let lines: Vec<&str> = text.split_inclusive('\n').collect();
        let mut start = lines.len();
        while start > 0 && lines[start - 1].starts_with(META_PREFIX) {
            start -= 1;
        }
        if lines[..start].iter().any(|l| l.starts_with(META_PREFIX)) {
            return Err(StoreError::Metadata(
                "envseal metadata lines appear outside the final block (two metadata sections?)".into(),
            ));
        }
        let body_len: usize = lines[..start].iter().map(|l| l.len()).sum();
        let (mut body, meta_text) = text.split_at(body_len);
        let meta: Option<Vec<String>> = (start < lines.len()).then(|| meta_text.lines().map(str::to_string).collect());
        let added_newline = format!("{META_PREFIX}{FINAL_NEWLINE_FIELD}=false");
        if meta.as_ref().is_some_and(|m| m.contains(&added_newline)) {
            body = body.strip_suffix("\r\n").or_else(|| body.strip_suffix('\n')).unwrap_or(body);
        }
        let env = Env::parse(body).map_err(perr)?;
        Ok(Self { env, meta })
    }

    fn ending(&self) -> &'static str {
        match self.env.line_ending() {
            LineEnding::CrLf => "\r\n",
            _ => "\n",
        }
    }
}

/// Stores `text` as the entry's source text; a sealed value (which needs no quoting) is put
/// inside the quotes the entry already has.
fn set_raw(e: &mut envseal_dotenv::Entry, text: &str, sealed: bool) -> Result<(), StoreError> {
    let raw = match (sealed, e.quote()) {
        (true, envseal_dotenv::Quote::Double) => format!("\"{text}\""),
        (true, envseal_dotenv::Quote::Single) => format!("'{text}'"),
        _ => text.to_string(),
    };
    match e.set_raw_value(&raw) {
        // `KEY= # note`: a bare value would swallow the glued comment; quotes keep the line's
        // layout (and so the plaintext's bytes) intact.
        Err(_) if sealed && e.quote() == envseal_dotenv::Quote::None => {
            e.set_raw_value(&format!("\"{text}\"")).map_err(perr)
        }
        r => r.map_err(perr),
    }
}

impl Document for DotenvDocument {
    fn format(&self) -> Format {
        Format::Dotenv
    }

    fn entries(&self) -> Vec<Entry> {
        self.env
            .entries()
            .map(|e| {
                // A sealed value keeps the quotes its plaintext had (so a comment glued to a
                // closing quote stays valid); its stored text is the bare `ENC[...]`.
                let text = if envseal_core::values::is_sealed(e.value()) { e.value() } else { e.raw_value() };
                Entry { path: KeyPath::key(e.key()), ty: ValueType::Str, text: text.to_string() }
            })
            .collect()
    }

    fn set_at(&mut self, index: usize, _ty: ValueType, text: &str, sealed: bool) -> Result<(), StoreError> {
        let e = self.env.entries_mut().nth(index).ok_or_else(|| StoreError::NoSuchKey(format!("#{index}")))?;
        set_raw(e, text, sealed)
    }

    fn set_value(&mut self, path: &KeyPath, _ty: ValueType, text: &str, sealed: bool) -> Result<(), StoreError> {
        let key = key_of(path)?.to_string();
        if self.env.entry(&key).is_none() {
            self.env.set(&key, "").map_err(|_| StoreError::InvalidPath(format!("{key:?} is not a valid .env key")))?;
        }
        // Invariant: the entry exists, it was just added if missing.
        let e = self.env.entry_mut(&key).ok_or_else(|| StoreError::NoSuchKey(key.clone()))?;
        set_raw(e, text, sealed)
    }

    fn decode_value(&self, stored: &str) -> Result<String, StoreError> {
        let d = Env::parse(&format!("K={stored}")).map_err(perr)?;
        d.get("K").map(str::to_string).ok_or_else(|| perr("value does not decode"))
    }

    fn encode_value(&self, path: &KeyPath, value: &str) -> Result<String, StoreError> {
        // An existing entry keeps its quoting style (its sealed text sits inside the quotes the
        // plaintext had) when that style can hold the new value.
        if let Some(e) = key_of(path).ok().and_then(|k| self.env.entry(k)) {
            let mut e = e.clone();
            e.set_value(value);
            return Ok(e.raw_value().to_string());
        }
        let mut d = Env::new();
        d.set("K", value).map_err(perr)?;
        d.entry("K").map(|e| e.raw_value().to_string()).ok_or_else(|| perr("value cannot be encoded"))
    }

    fn remove_value(&mut self, path: &KeyPath) -> Result<bool, StoreError> {
        Ok(self.env.remove(key_of(path)?))
    }

    fn metadata(&self) -> Result<Option<Metadata>, StoreError> {
        let Some(lines) = &self.meta else { return Ok(None) };
        let bad = |m: String| StoreError::Metadata(m);
        let mut obj = Map::new();
        let mut keys = Vec::new();
        for l in lines {
            let rest = l.strip_prefix(META_PREFIX).ok_or_else(|| bad("not a metadata line".into()))?;
            let (name, json) = rest.split_once('=').ok_or_else(|| bad("metadata line without `=`".into()))?;
            if name == FINAL_NEWLINE_FIELD {
                continue;
            }
            let field = FIELDS.iter().find(|(n, _)| *n == name).ok_or_else(|| bad(format!("unknown field {name}")))?.1;
            let v: Value = serde_json::from_str(json).map_err(|_| bad(format!("field {name} is not valid JSON")))?;
            if field == "keys" {
                keys.push(v);
            } else if obj.insert(field.to_string(), v).is_some() {
                return Err(bad(format!("field {name} appears twice")));
            }
        }
        obj.insert("keys".into(), Value::Array(keys));
        Metadata::from_json(Value::Object(obj)).map(Some)
    }

    fn set_metadata(&mut self, meta: Option<&Metadata>) -> Result<(), StoreError> {
        let Some(m) = meta else {
            self.meta = None;
            return Ok(());
        };
        let json = m.to_json();
        let mut lines = Vec::new();
        for (name, field) in FIELDS {
            match json.get(*field) {
                Some(Value::Array(items)) if *field == "keys" => {
                    for k in items {
                        lines.push(format!("{META_PREFIX}{name}={k}"));
                    }
                }
                Some(Value::Null) | None => {}
                Some(v) => lines.push(format!("{META_PREFIX}{name}={v}")),
            }
        }
        let body = self.env.to_string();
        if !body.is_empty() && !body.ends_with('\n') {
            lines.push(format!("{META_PREFIX}{FINAL_NEWLINE_FIELD}=false"));
        }
        self.meta = Some(lines);
        Ok(())
    }

    fn render(&self) -> Vec<u8> {
        let mut out = self.env.to_string();
        if let Some(lines) = &self.meta {
            let nl = self.ending();
            if !out.is_empty() && !out.ends_with('\n') {
                out.push_str(nl);
            }
            for l in lines {
                out.push_str(l);
                out.push_str(nl);
            }
        }
        out.into_bytes()
    }
}
