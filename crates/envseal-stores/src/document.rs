//! What a value-level file is to the stores: its format, its values, and the [`Document`]
//! trait each format implements.

use std::path::Path;

use envseal_core::values::{KeyPath, ValueType};

use crate::error::StoreError;
use crate::meta::Metadata;

/// File formats envseal understands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// `.env` (KEY=value lines).
    Dotenv,
    /// JSON (an object at the top level).
    Json,
    /// YAML (a mapping at the top level).
    Yaml,
    /// Anything else: the streaming binary container.
    Binary,
}

impl Format {
    /// `dotenv`, `json`, `yaml`, `binary`.
    pub fn name(self) -> &'static str {
        match self {
            Format::Dotenv => "dotenv",
            Format::Json => "json",
            Format::Yaml => "yaml",
            Format::Binary => "binary",
        }
    }

    /// The format a file name suggests, if any: `*.json`, `*.yaml`/`*.yml`, `.env`, `*.env`,
    /// `.env.*`.
    pub fn from_path(path: &Path) -> Option<Format> {
        let name = path.file_name()?.to_str()?.to_ascii_lowercase();
        let ext = path.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase);
        match ext.as_deref() {
            Some("json") => return Some(Format::Json),
            Some("yaml" | "yml") => return Some(Format::Yaml),
            Some("env") => return Some(Format::Dotenv),
            _ => {}
        }
        if name == ".env" || name.starts_with(".env.") {
            return Some(Format::Dotenv);
        }
        None
    }

    /// Detects the format from the name, else from the content: a binary container, a JSON
    /// object, or else binary.
    pub fn detect(path: Option<&Path>, content: &[u8]) -> Format {
        if envseal_core::container::is_container(content) {
            return Format::Binary;
        }
        if let Some(f) = path.and_then(Format::from_path) {
            return f;
        }
        let trimmed = content.iter().position(|b| !b.is_ascii_whitespace()).map(|i| &content[i..]).unwrap_or(&[]);
        if trimmed.starts_with(b"{") && serde_json::from_slice::<serde_json::Value>(content).is_ok() {
            return Format::Json;
        }
        Format::Binary
    }
}

/// One value of a document, as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// Where it is.
    pub path: KeyPath,
    /// Its type as stored (a sealed value is stored as a string).
    pub ty: ValueType,
    /// Its text as stored (for strings: the decoded string, without quotes or escapes).
    pub text: String,
}

/// A parsed secrets file whose values can be read and replaced without disturbing the rest.
pub trait Document: Send + Sync {
    /// The format.
    fn format(&self) -> Format;
    /// Every value, in document order, excluding envseal's metadata.
    fn entries(&self) -> Vec<Entry>;
    /// Sets the value at `path` (adding it if missing). A sealed value is stored as a string
    /// (`text` is the `ENC[...]` form); a plain value is stored with its type `ty`.
    ///
    /// # Errors
    /// [`StoreError::InvalidPath`] if the path cannot hold a value.
    fn set_value(&mut self, path: &KeyPath, ty: ValueType, text: &str, sealed: bool) -> Result<(), StoreError>;
    /// Sets the `index`-th value of [`Document::entries`] (formats with duplicate keys
    /// override this; the default goes through the entry's path).
    ///
    /// # Errors
    /// As [`Document::set_value`].
    fn set_at(&mut self, index: usize, ty: ValueType, text: &str, sealed: bool) -> Result<(), StoreError> {
        let path = self
            .entries()
            .into_iter()
            .nth(index)
            .map(|e| e.path)
            .ok_or_else(|| StoreError::NoSuchKey(format!("#{index}")))?;
        self.set_value(&path, ty, text, sealed)
    }
    /// The value a program sees for a stored plain text (formats that seal a value's source
    /// form, like .env with its quotes and escapes, decode it here). Default: unchanged.
    ///
    /// # Errors
    /// [`StoreError::Parse`] if the text does not decode.
    fn decode_value(&self, stored: &str) -> Result<String, StoreError> {
        Ok(stored.to_string())
    }
    /// The stored form of a value given by a user (inverse of [`Document::decode_value`]).
    /// Default: unchanged.
    ///
    /// # Errors
    /// [`StoreError::Parse`] if the value cannot be represented.
    fn encode_value(&self, path: &KeyPath, value: &str) -> Result<String, StoreError> {
        let _ = path;
        Ok(value.to_string())
    }
    /// Removes the value at `path`; returns whether it existed.
    ///
    /// # Errors
    /// [`StoreError::InvalidPath`].
    fn remove_value(&mut self, path: &KeyPath) -> Result<bool, StoreError>;
    /// envseal's metadata, if present.
    ///
    /// # Errors
    /// [`StoreError::Metadata`] when present but invalid (or present twice).
    fn metadata(&self) -> Result<Option<Metadata>, StoreError>;
    /// Writes (`Some`) or removes (`None`) the metadata.
    ///
    /// # Errors
    /// [`StoreError::InvalidPath`] if the document cannot hold it.
    fn set_metadata(&mut self, meta: Option<&Metadata>) -> Result<(), StoreError>;
    /// The document's bytes.
    fn render(&self) -> Vec<u8>;
}
