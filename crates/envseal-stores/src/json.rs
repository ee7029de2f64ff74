//! JSON documents: key order kept, numbers kept as written, metadata under the reserved
//! top-level key `envseal`.
//!
//! What is not kept: the original whitespace. A one-line input stays on one line; otherwise output
//! is indented like the input's first indented line, with a final newline if the input had one.

use envseal_core::values::{KeyPath, PathSegment, ValueType};
use serde::Serialize;
use serde_json::{Map, Value};

use crate::document::{Document, Entry, Format};
use crate::error::StoreError;
use crate::meta::Metadata;

/// The reserved top-level key holding envseal's metadata.
pub const META_KEY: &str = "envseal";

/// A JSON document whose top level is an object.
#[derive(Debug, Clone)]
pub struct JsonDocument {
    root: Map<String, Value>,
    indent: Vec<u8>,
    compact: bool,
    final_newline: bool,
}

fn perr(message: impl Into<String>) -> StoreError {
    StoreError::Parse { format: "json", message: message.into() }
}

impl JsonDocument {
    /// Parses JSON text; the top level must be an object.
    ///
    /// # Errors
    /// [`StoreError::Parse`] with line and column (never the offending text).
    pub fn parse(content: &[u8]) -> Result<Self, StoreError> {
        let text = std::str::from_utf8(content).map_err(|e| perr(format!("not UTF-8 (byte {})", e.valid_up_to())))?;
        let located =
            |e: serde_json::Error| perr(format!("{} at line {} column {}", classify(&e), e.line(), e.column()));
        // serde_json keeps the last of duplicate keys; sealing would then silently drop the
        // others. Refuse them, as the YAML store does.
        serde_json::from_str::<NoDuplicates>(text).map_err(located)?;
        let v: Value = serde_json::from_str(text).map_err(located)?;
        let Value::Object(root) = v else {
            return Err(perr("the top level must be an object"));
        };
        let indent = text
            .lines()
            .skip(1)
            .find_map(|l| {
                let ws: String = l.chars().take_while(|c| *c == ' ' || *c == '\t').collect();
                (!ws.is_empty()).then_some(ws)
            })
            .unwrap_or_else(|| "  ".to_string())
            .into_bytes();
        let compact = !text.trim_end().contains('\n');
        Ok(Self { root, indent, compact, final_newline: text.ends_with('\n') })
    }
}

/// Deserializes any JSON, failing on a duplicate key in any object.
struct NoDuplicates;

impl<'de> serde::Deserialize<'de> for NoDuplicates {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(NoDuplicatesVisitor)
    }
}

struct NoDuplicatesVisitor;

impl<'de> serde::de::Visitor<'de> for NoDuplicatesVisitor {
    type Value = NoDuplicates;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<NoDuplicates, A::Error> {
        let mut seen = std::collections::HashSet::new();
        while let Some(key) = map.next_key::<String>()? {
            if !seen.insert(key) {
                return Err(serde::de::Error::custom("duplicate key in an object"));
            }
            map.next_value::<NoDuplicates>()?;
        }
        Ok(NoDuplicates)
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<NoDuplicates, A::Error> {
        while seq.next_element::<NoDuplicates>()?.is_some() {}
        Ok(NoDuplicates)
    }

    fn visit_bool<E>(self, _: bool) -> Result<NoDuplicates, E> {
        Ok(NoDuplicates)
    }
    fn visit_i64<E>(self, _: i64) -> Result<NoDuplicates, E> {
        Ok(NoDuplicates)
    }
    fn visit_u64<E>(self, _: u64) -> Result<NoDuplicates, E> {
        Ok(NoDuplicates)
    }
    fn visit_f64<E>(self, _: f64) -> Result<NoDuplicates, E> {
        Ok(NoDuplicates)
    }
    fn visit_str<E>(self, _: &str) -> Result<NoDuplicates, E> {
        Ok(NoDuplicates)
    }
    fn visit_unit<E>(self) -> Result<NoDuplicates, E> {
        Ok(NoDuplicates)
    }
}

fn classify(e: &serde_json::Error) -> &'static str {
    use serde_json::error::Category;
    match e.classify() {
        Category::Io => "I/O error",
        Category::Syntax => "syntax error",
        Category::Data => "invalid data",
        Category::Eof => "unexpected end of input",
    }
}

fn walk(v: &Value, path: &KeyPath, out: &mut Vec<Entry>) {
    let leaf = |ty, text: String| Entry { path: path.clone(), ty, text };
    match v {
        Value::Object(m) => {
            for (k, v) in m {
                walk(v, &path.child(PathSegment::Key(k.clone())), out);
            }
        }
        Value::Array(a) => {
            for (i, v) in a.iter().enumerate() {
                walk(v, &path.child(PathSegment::Index(i as u64)), out);
            }
        }
        Value::String(s) => out.push(leaf(ValueType::Str, s.clone())),
        Value::Number(n) => out.push(leaf(ValueType::Num, n.to_string())),
        Value::Bool(b) => out.push(leaf(ValueType::Bool, b.to_string())),
        Value::Null => out.push(leaf(ValueType::Null, String::new())),
    }
}

fn typed(ty: ValueType, text: &str) -> Result<Value, StoreError> {
    Ok(match ty {
        ValueType::Str => Value::String(text.to_string()),
        ValueType::Num => Value::Number(text.parse().map_err(|_| perr("sealed number is not a JSON number"))?),
        ValueType::Bool => match text {
            "true" => Value::Bool(true),
            "false" => Value::Bool(false),
            _ => return Err(perr("sealed boolean is not true or false")),
        },
        ValueType::Null => Value::Null,
    })
}

fn check_top(path: &KeyPath) -> Result<&str, StoreError> {
    match path.0.first() {
        Some(PathSegment::Key(k)) if k == META_KEY => Err(StoreError::InvalidPath(format!("{META_KEY:?} is reserved"))),
        Some(PathSegment::Key(k)) => Ok(k),
        _ => Err(StoreError::InvalidPath(path.display())),
    }
}

impl Document for JsonDocument {
    fn format(&self) -> Format {
        Format::Json
    }

    fn entries(&self) -> Vec<Entry> {
        let mut out = Vec::new();
        for (k, v) in &self.root {
            if k != META_KEY {
                walk(v, &KeyPath::key(k.clone()), &mut out);
            }
        }
        out
    }

    fn set_value(&mut self, path: &KeyPath, ty: ValueType, text: &str, sealed: bool) -> Result<(), StoreError> {
        let top = check_top(path)?.to_string();
        let new = if sealed { Value::String(text.to_string()) } else { typed(ty, text)? };
        let mut cur = self.root.entry(top).or_insert(Value::Null);
        for seg in &path.0[1..] {
            cur = match seg {
                PathSegment::Key(k) => {
                    if !cur.is_object() {
                        if !cur.is_null() {
                            return Err(StoreError::InvalidPath(format!("{} is not an object", path.display())));
                        }
                        *cur = Value::Object(Map::new());
                    }
                    cur.as_object_mut()
                        .map(|m| m.entry(k.clone()).or_insert(Value::Null))
                        .ok_or_else(|| StoreError::InvalidPath(path.display()))?
                }
                PathSegment::Index(i) => {
                    let arr = cur
                        .as_array_mut()
                        .ok_or_else(|| StoreError::InvalidPath(format!("{} is not an array", path.display())))?;
                    let i = *i as usize;
                    if i > arr.len() {
                        return Err(StoreError::InvalidPath(format!("{}: index past the end", path.display())));
                    }
                    if i == arr.len() {
                        arr.push(Value::Null);
                    }
                    &mut arr[i]
                }
            };
        }
        if cur.is_object() || cur.is_array() {
            return Err(StoreError::InvalidPath(format!("{} holds an object or array, not a value", path.display())));
        }
        *cur = new;
        Ok(())
    }

    fn remove_value(&mut self, path: &KeyPath) -> Result<bool, StoreError> {
        let top = check_top(path)?;
        if path.0.len() == 1 {
            return Ok(self.root.shift_remove(top).is_some());
        }
        let Some(mut cur) = self.root.get_mut(top) else { return Ok(false) };
        for seg in &path.0[1..path.0.len() - 1] {
            let next = match seg {
                PathSegment::Key(k) => cur.get_mut(k.as_str()),
                PathSegment::Index(i) => cur.get_mut(*i as usize),
            };
            match next {
                Some(n) => cur = n,
                None => return Ok(false),
            }
        }
        Ok(match (path.0.last(), cur) {
            (Some(PathSegment::Key(k)), Value::Object(m)) => m.shift_remove(k.as_str()).is_some(),
            (Some(PathSegment::Index(i)), Value::Array(a)) if (*i as usize) < a.len() => {
                a.remove(*i as usize);
                true
            }
            _ => false,
        })
    }

    fn metadata(&self) -> Result<Option<Metadata>, StoreError> {
        self.root.get(META_KEY).map(|v| Metadata::from_json(v.clone())).transpose()
    }

    fn set_metadata(&mut self, meta: Option<&Metadata>) -> Result<(), StoreError> {
        match meta {
            Some(m) => {
                self.root.insert(META_KEY.to_string(), m.to_json());
            }
            None => {
                self.root.shift_remove(META_KEY);
            }
        }
        Ok(())
    }

    fn render(&self) -> Vec<u8> {
        let mut out = Vec::new();
        // Invariant: serializing a Map of JSON values into a Vec cannot fail.
        if self.compact {
            serde_json::to_writer(&mut out, &self.root).expect("JSON serializes");
        } else {
            let fmt = serde_json::ser::PrettyFormatter::with_indent(&self.indent);
            let mut ser = serde_json::Serializer::with_formatter(&mut out, fmt);
            self.root.serialize(&mut ser).expect("JSON serializes");
        }
        if self.final_newline {
            out.push(b'\n');
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse_key_path;

    #[test]
    fn entries_and_set() {
        let mut d = JsonDocument::parse(br#"{"b": {"x": [1, "two", true, null]}, "a": 1.50}"#).unwrap();
        let e: Vec<_> = d.entries().into_iter().map(|e| (e.path.display(), e.ty, e.text)).collect();
        assert_eq!(
            e,
            vec![
                ("b.x[0]".into(), ValueType::Num, "1".into()),
                ("b.x[1]".into(), ValueType::Str, "two".into()),
                ("b.x[2]".into(), ValueType::Bool, "true".into()),
                ("b.x[3]".into(), ValueType::Null, "".into()),
                ("a".into(), ValueType::Num, "1.50".into()),
            ]
        );
        d.set_value(&parse_key_path("c.d").unwrap(), ValueType::Str, "new", false).unwrap();
        assert!(d.set_value(&parse_key_path("envseal").unwrap(), ValueType::Str, "x", false).is_err());
        assert!(d.set_value(&parse_key_path("b").unwrap(), ValueType::Str, "x", false).is_err());
        let out = String::from_utf8(d.render()).unwrap();
        assert!(out.contains("\"a\":1.50"), "one-line input stays compact: {out}");
        assert!(out.find("\"b\"").unwrap() < out.find("\"a\"").unwrap());
        assert!(d.remove_value(&parse_key_path("b.x[1]").unwrap()).unwrap());
        assert!(!d.remove_value(&parse_key_path("zz").unwrap()).unwrap());
    }

    #[test]
    fn parse_errors_never_quote_input() {
        let err = JsonDocument::parse(b"{\"k\": SECRETMARKER}").unwrap_err().to_string();
        assert!(!err.contains("SECRETMARKER"), "{err}");
        assert!(JsonDocument::parse(b"[1,2]").is_err());
        assert!(JsonDocument::parse(br#"{"a":{"x":1,"x":2}}"#).is_err());
        assert!(JsonDocument::parse(br#"{"a":[{"x":1},{"x":2}],"n":1e3}"#).is_ok());
        assert!(JsonDocument::parse(b"\xff").is_err());
    }
}
