#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]
#![deny(missing_docs)]

use std::path::Path;

use envseal_core::entries::{self, Recipient, Trust};
use envseal_core::values::{self, KeyPath, ValueKeys, ValueType};
use envseal_core::{EncryptionContext, Engine, FormatError, Kms, SecretBytes, WrappedKey};

pub mod dotenv;
pub mod json;
mod meta;
pub mod yaml;

pub use meta::Metadata;

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

/// Errors of the value-level stores.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The input could not be parsed in its format (the message never quotes values).
    #[error("cannot parse {format} input: {message}")]
    Parse {
        /// Format name.
        format: &'static str,
        /// What is wrong, and where.
        message: String,
    },
    /// The file already carries envseal metadata.
    #[error("the file is already sealed")]
    AlreadySealed,
    /// The file carries no envseal metadata.
    #[error("the file is not sealed (no envseal metadata)")]
    NotSealed,
    /// The envseal metadata is present but invalid.
    #[error("invalid envseal metadata: {0}")]
    Metadata(String),
    /// No value at this key path.
    #[error("no value at {0}")]
    NoSuchKey(String),
    /// The key path cannot be used here (e.g. the reserved `envseal` key).
    #[error("invalid key path: {0}")]
    InvalidPath(String),
    /// A value that should be sealed is in clear in a sealed file.
    #[error("value at {0} is not sealed, but the file's rules say it must be")]
    UnsealedValue(String),
    /// The plain-keys rule is not a valid regular expression.
    #[error("invalid plain-keys regular expression: {0}")]
    BadRegex(String),
    /// Sealing or opening failed.
    #[error(transparent)]
    Core(#[from] envseal_core::Error),
}

impl From<FormatError> for StoreError {
    fn from(e: FormatError) -> Self {
        StoreError::Core(e.into())
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

/// Parses `content` as `format`.
///
/// # Errors
/// [`StoreError::Parse`]; binary is not a document.
pub fn parse(format: Format, content: &[u8]) -> Result<Box<dyn Document>, StoreError> {
    match format {
        Format::Json => Ok(Box::new(json::JsonDocument::parse(content)?)),
        Format::Yaml => Ok(Box::new(yaml::YamlDocument::parse(content)?)),
        Format::Dotenv => Ok(Box::new(dotenv::DotenvDocument::parse(content)?)),
        f => Err(StoreError::Parse { format: f.name(), message: "not a value-level format".into() }),
    }
}

/// What to seal with.
#[derive(Debug)]
pub struct SealSpec<'a> {
    /// KMS keys; the first generates the data key, the others get a copy (any one opens).
    pub recipients: &'a [Recipient<'a>],
    /// The encryption context.
    pub context: EncryptionContext,
    /// Values whose whole JSON pointer (`/a/b/0`; a .env variable `K` is `/K`) matches this
    /// regular expression stay in clear (the expression is anchored at both ends).
    pub plain_keys: Option<String>,
    /// Values are padded to a multiple of this many bytes ([`values::DEFAULT_PADDING`] by
    /// default; 0 pads only by the marker byte).
    pub padding: u32,
    /// AEAD engine.
    pub engine: Engine,
}

/// The plain-keys rule of a file, compiled for its format version.
#[derive(Debug)]
struct PlainRule {
    re: regex::Regex,
    /// Format 2: the rule matches whole JSON pointers. Format 1: any part of the dotted path.
    pointer: bool,
}

impl PlainRule {
    fn compile(rule: &Option<String>, version: u32) -> Result<Option<Self>, StoreError> {
        let Some(r) = rule.as_deref() else { return Ok(None) };
        let pointer = version >= 2;
        let src = if pointer { format!("^(?:{r})$") } else { r.to_string() };
        let re = regex::Regex::new(&src).map_err(|e| StoreError::BadRegex(e.to_string()))?;
        Ok(Some(Self { re, pointer }))
    }

    fn matches(&self, path: &KeyPath) -> bool {
        if self.pointer { self.re.is_match(&path.pointer()) } else { self.re.is_match(&path.display()) }
    }
}

/// An opened sealed file: its keys and metadata.
#[derive(Debug)]
pub struct Unlocked {
    keys: ValueKeys,
    /// The file's metadata.
    pub meta: Metadata,
    plain: Option<PlainRule>,
    /// The entry that opened the file (it unwrapped and passed the key commitment).
    verified: WrappedKey,
    engine: Engine,
    /// A fixed `modified` time (test vectors); else the clock.
    fixed_time: Option<String>,
    /// The entries the last MAC was computed over (what `render_checked` must read back).
    maced: Option<Vec<Entry>>,
}

impl Unlocked {
    fn is_plain(&self, path: &KeyPath) -> bool {
        self.plain.as_ref().is_some_and(|r| r.matches(path))
    }

    /// The index of the wrapped-key entry that opened the file (verified: it unwrapped and
    /// passed the key commitment).
    pub fn opened_entry(&self) -> Option<usize> {
        self.meta.keys.iter().position(|e| *e == self.verified)
    }

    /// The JSON pointers of the values left in clear by the plain-keys rule, in document order.
    pub fn plain_pointers(&self, doc: &dyn Document) -> Vec<String> {
        doc.entries().into_iter().filter(|e| self.is_plain(&e.path)).map(|e| e.path.pointer()).collect()
    }

    /// The MAC over the document's stored entries.
    fn mac(&self, doc: &dyn Document) -> Result<String, StoreError> {
        self.mac_of(&doc.entries())
    }

    /// The MAC over these entries (in document order).
    fn mac_of(&self, entries: &[Entry]) -> Result<String, StoreError> {
        let mut m = self.keys.mac(&self.meta.mac_header());
        for e in entries {
            let sealed = !self.is_plain(&e.path);
            if sealed && !(e.ty == ValueType::Str && values::is_sealed(&e.text)) {
                return Err(StoreError::UnsealedValue(e.path.display()));
            }
            m.entry(&e.path, sealed, e.ty, &e.text);
        }
        Ok(m.finish())
    }

    /// Seals (or, for plain keys, stores) `plaintext` at `path`: at entry `index` when given,
    /// else at the path (added if missing).
    fn seal_entry(
        &self,
        doc: &mut dyn Document,
        index: Option<usize>,
        path: &KeyPath,
        ty: ValueType,
        plaintext: &[u8],
    ) -> Result<(), StoreError> {
        let (ty, text, sealed) = if self.is_plain(path) {
            let text = std::str::from_utf8(plaintext)
                .map_err(|_| StoreError::Parse { format: doc.format().name(), message: "value is not UTF-8".into() })?;
            (ty, text.to_string(), false)
        } else {
            (ValueType::Str, self.keys.seal(path, ty, plaintext)?, true)
        };
        match index {
            Some(i) => doc.set_at(i, ty, &text, sealed),
            None => doc.set_value(path, ty, &text, sealed),
        }
    }

    fn finish(&mut self, doc: &mut dyn Document) -> Result<(), StoreError> {
        let entries = doc.entries();
        self.meta.mac = self.mac_of(&entries)?;
        self.meta.modified = Some(self.fixed_time.clone().unwrap_or_else(now));
        self.maced = Some(entries);
        doc.set_metadata(Some(&self.meta))
    }

    /// Renders `doc` and proves that the bytes read back as this file before anyone writes them:
    /// they parse, the metadata (entries, commitment, MAC) reads back as it is, the verified
    /// entry that opened the file (or that a re-key proved) is still among the entries, and
    /// every value reads back with the exact stored text (and type) the MAC was computed over —
    /// so the stored MAC verifies and each value opens as it did in `doc`. Writers (`set`,
    /// `unset`, `edit`, `encrypt`, `rekey`) write only what this returns.
    ///
    /// # Errors
    /// [`StoreError::Metadata`] (an internal error) if the rendered bytes do not read back.
    pub fn render_checked(&self, doc: &dyn Document) -> Result<Vec<u8>, StoreError> {
        let bytes = doc.render();
        let bad = |what: &str| StoreError::Metadata(format!("internal error: the rewritten file {what}"));
        let back = parse(doc.format(), &bytes)?;
        let meta = back.metadata()?.ok_or_else(|| bad("lost its metadata"))?;
        if meta != self.meta {
            return Err(bad("has other metadata than intended"));
        }
        if self.opened_entry().is_none() {
            return Err(bad("lost the wrapped key that opened it"));
        }
        let same = match &self.maced {
            Some(maced) => back.entries() == *maced,
            None => back.entries() == doc.entries(),
        };
        if !same {
            return Err(bad("does not read back to the same values"));
        }
        Ok(bytes)
    }

    /// Every value as a program sees it (decoded from its stored form), in document order;
    /// for duplicate keys the last one is what a shell would keep.
    ///
    /// # Errors
    /// As [`Unlocked::values`], plus decoding errors.
    pub fn decoded_values(&self, doc: &dyn Document) -> Result<Vec<(KeyPath, ValueType, SecretBytes)>, StoreError> {
        self.values(doc)?
            .into_iter()
            .map(|(p, ty, v)| {
                let text = std::str::from_utf8(v.expose_secret()).map_err(|_| StoreError::Parse {
                    format: doc.format().name(),
                    message: "value is not UTF-8".into(),
                })?;
                Ok((p, ty, SecretBytes::new(doc.decode_value(text)?.into_bytes())))
            })
            .collect()
    }

    /// Every value in its stored plaintext form, in document order.
    ///
    /// # Errors
    /// [`FormatError::ValueTampered`] (through [`StoreError::Core`]) for a value that fails
    /// authentication.
    pub fn values(&self, doc: &dyn Document) -> Result<Vec<(KeyPath, ValueType, SecretBytes)>, StoreError> {
        doc.entries()
            .into_iter()
            .map(|e| {
                if self.is_plain(&e.path) {
                    Ok((e.path, e.ty, SecretBytes::new(e.text.into_bytes())))
                } else {
                    let (ty, v) = self.keys.open(&e.path, &e.text)?;
                    Ok((e.path, ty, v))
                }
            })
            .collect()
    }

    /// Replaces every sealed value by its plaintext and removes the metadata.
    ///
    /// # Errors
    /// As [`Unlocked::values`].
    pub fn decrypt(&self, doc: &mut dyn Document) -> Result<(), StoreError> {
        for (i, (path, ty, v)) in self.values(doc)?.into_iter().enumerate() {
            if !self.is_plain(&path) {
                let text = std::str::from_utf8(v.expose_secret()).map_err(|_| StoreError::Parse {
                    format: doc.format().name(),
                    message: "sealed value is not UTF-8".into(),
                })?;
                doc.set_at(i, ty, text, false)?;
            }
        }
        doc.set_metadata(None)
    }

    /// Sets one value (sealing it unless a plain-keys rule matches) and updates the MAC; no
    /// other value's ciphertext changes.
    ///
    /// # Errors
    /// [`StoreError::InvalidPath`]; sealing errors.
    pub fn set(
        &mut self,
        doc: &mut dyn Document,
        path: &KeyPath,
        ty: ValueType,
        plaintext: &[u8],
    ) -> Result<(), StoreError> {
        let text = std::str::from_utf8(plaintext)
            .map_err(|_| StoreError::Parse { format: doc.format().name(), message: "value is not UTF-8".into() })?;
        let stored = doc.encode_value(path, text)?;
        self.seal_entry(doc, None, path, ty, stored.as_bytes())?;
        self.finish(doc)
    }

    /// Removes one value and updates the MAC.
    ///
    /// # Errors
    /// [`StoreError::NoSuchKey`] if absent.
    pub fn unset(&mut self, doc: &mut dyn Document, path: &KeyPath) -> Result<(), StoreError> {
        use envseal_core::values::PathSegment;
        // Removing a sequence item shifts the items after it; their ciphertexts are bound to
        // their index, so they are re-sealed at their new index (the others are untouched).
        let before: std::collections::HashMap<KeyPath, (ValueType, SecretBytes)> = match path.0.last() {
            Some(PathSegment::Index(_)) => self.values(doc)?.into_iter().map(|(p, t, v)| (p, (t, v))).collect(),
            _ => Default::default(),
        };
        if !doc.remove_value(path)? {
            return Err(StoreError::NoSuchKey(path.display()));
        }
        if let Some(PathSegment::Index(removed)) = path.0.last() {
            let depth = path.0.len() - 1;
            for (i, e) in doc.entries().into_iter().enumerate() {
                let shifted = e.path.0.len() > depth
                    && e.path.0[..depth] == path.0[..depth]
                    && matches!(e.path.0[depth], PathSegment::Index(j) if j >= *removed);
                if !shifted || self.is_plain(&e.path) {
                    continue;
                }
                let mut old = e.path.clone();
                if let PathSegment::Index(j) = old.0[depth] {
                    old.0[depth] = PathSegment::Index(j + 1);
                }
                let (ty, v) = before.get(&old).ok_or_else(|| StoreError::NoSuchKey(old.display()))?;
                self.seal_entry(doc, Some(i), &e.path, *ty, v.expose_secret())?;
            }
        }
        self.finish(doc)
    }

    /// Seals every value of a plaintext document (an edited copy of this file) with this
    /// file's keys: unchanged values get exactly their previous ciphertext.
    ///
    /// # Errors
    /// [`StoreError::AlreadySealed`] if `doc` carries metadata; sealing errors.
    pub fn reseal(&mut self, doc: &mut dyn Document) -> Result<(), StoreError> {
        if doc.metadata()?.is_some() {
            return Err(StoreError::AlreadySealed);
        }
        for (i, e) in doc.entries().into_iter().enumerate() {
            self.seal_entry(doc, Some(i), &e.path, e.ty, e.text.as_bytes())?;
        }
        self.finish(doc)
    }
}

fn now() -> String {
    humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string()
}

fn check_recipients(recipients: &[Recipient<'_>]) -> Result<(), StoreError> {
    if recipients.is_empty() || recipients.len() > entries::MAX_ENTRIES {
        return Err(FormatError::LimitExceeded {
            what: "recipients",
            value: recipients.len() as u64,
            max: entries::MAX_ENTRIES as u64,
        }
        .into());
    }
    Ok(())
}

/// New keys for a file: a fresh file id and data key wrapped for `recipients`, proven to open
/// (one entry unwrapped through its KMS and checked against the new commitment) before any
/// value is sealed with them.
async fn new_keys(
    recipients: &[Recipient<'_>],
    context: &EncryptionContext,
    padding: u32,
    engine: Engine,
) -> Result<(ValueKeys, [u8; values::FILE_ID_LEN], Vec<WrappedKey>, WrappedKey), StoreError> {
    check_recipients(recipients)?;
    values::check_padding(padding)?;
    let file_id: [u8; values::FILE_ID_LEN] = envseal_core::random::array();
    let kctx = values::kms_context(context, &file_id)?;
    let (dk, keys) = entries::wrap_new(recipients, &kctx).await?;
    let vk = ValueKeys::derive(engine, &dk, file_id, values::VERSION, padding)?;
    drop(dk);
    let commitment = vk.commitment_hex();
    let check = |dk: &envseal_core::DataKey| -> Result<(), envseal_core::Error> {
        Ok(ValueKeys::derive(engine, dk, file_id, values::VERSION, 0)?.check_commitment(&commitment)?)
    };
    let kmses: Vec<&dyn Kms> = recipients.iter().map(|r| r.kms).collect();
    let (_, index) = entries::unwrap_verified(&kmses, &keys, &kctx, &Trust::Discovery, &check).await?;
    let verified = keys[index].clone();
    Ok((vk, file_id, keys, verified))
}

/// Seals every value of `doc` (except those the plain-keys rule exempts) under a fresh data
/// key, in the current format (2), and adds the metadata. The new keys are proven to open before
/// any value is sealed; write the result with [`Unlocked::render_checked`].
///
/// # Errors
/// [`StoreError::AlreadySealed`]; KMS errors; [`StoreError::BadRegex`].
pub async fn seal(doc: &mut dyn Document, spec: &SealSpec<'_>) -> Result<Unlocked, StoreError> {
    if doc.metadata()?.is_some() {
        return Err(StoreError::AlreadySealed);
    }
    let plain = PlainRule::compile(&spec.plain_keys, values::VERSION as u32)?;
    let (keys, file_id, wrapped, verified) =
        new_keys(spec.recipients, &spec.context, spec.padding, spec.engine).await?;
    let meta = Metadata {
        version: values::VERSION as u32,
        file_id,
        context: spec.context.clone(),
        keys: wrapped,
        plain_keys: spec.plain_keys.clone(),
        padding: Some(spec.padding),
        commitment: keys.commitment_hex(),
        mac: String::new(),
        created: Some(now()),
        modified: None,
    };
    let mut u = Unlocked { keys, meta, plain, verified, engine: spec.engine, fixed_time: None, maced: None };
    for (i, e) in doc.entries().into_iter().enumerate() {
        u.seal_entry(doc, Some(i), &e.path, e.ty, e.text.as_bytes())?;
    }
    u.finish(doc)?;
    Ok(u)
}

impl Unlocked {
    /// Re-keys the file (FORMAT.md §10.6): a new data key and file id, wrapped for
    /// `recipients` and proven to open, every value resealed in the current format (a format-1
    /// file becomes format 2; the values it left in clear stay in clear), and a new MAC. Old
    /// wrapped keys, and anyone who kept the old data key from an old copy, open none of the
    /// values sealed from now on: this is what revokes a removed recipient.
    ///
    /// `padding` overrides the file's padding (format-1 files get [`values::DEFAULT_PADDING`]
    /// unless given). The caller writes `doc` with [`Unlocked::render_checked`].
    ///
    /// # Errors
    /// As [`seal`].
    pub async fn rekey(
        &mut self,
        doc: &mut dyn Document,
        recipients: &[Recipient<'_>],
        padding: Option<u32>,
    ) -> Result<(), StoreError> {
        let current = self.values(doc)?;
        let padding = padding.or(self.meta.padding).unwrap_or(values::DEFAULT_PADDING);
        // The same values stay in clear. A format-1 rule (any part of a dotted path) becomes the
        // exact list of those pointers, anchored, so the resealed file leaves the same ones out.
        let plain_keys = match (&self.meta.plain_keys, self.meta.version) {
            (Some(_), 1) => {
                let exact: Vec<String> = current
                    .iter()
                    .filter(|(p, _, _)| self.is_plain(p))
                    .map(|(p, _, _)| regex::escape(&p.pointer()))
                    .collect();
                (!exact.is_empty()).then(|| exact.join("|"))
            }
            (rule, _) => rule.clone(),
        };
        let (keys, file_id, wrapped, verified) = new_keys(recipients, &self.meta.context, padding, self.engine).await?;
        self.plain = PlainRule::compile(&plain_keys, values::VERSION as u32)?;
        self.keys = keys;
        self.verified = verified;
        self.meta = Metadata {
            version: values::VERSION as u32,
            file_id,
            context: self.meta.context.clone(),
            keys: wrapped,
            plain_keys,
            padding: Some(padding),
            commitment: self.keys.commitment_hex(),
            mac: String::new(),
            created: self.meta.created.clone(),
            modified: None,
        };
        for (i, (path, ty, v)) in current.into_iter().enumerate() {
            self.seal_entry(doc, Some(i), &path, ty, v.expose_secret())?;
        }
        self.finish(doc)
    }
}

/// Opens a sealed document: the entries `trust` permits are tried in order until one unwraps
/// and passes the key commitment (FORMAT.md §10.1), then the whole-file MAC is checked.
/// `expected` must be contained in the file's context (checked before any KMS call).
///
/// # Errors
/// [`StoreError::NotSealed`]; [`FormatError::WrongContext`]; the errors of
/// [`entries::unwrap_verified`] (KMS errors, [`envseal_core::Error::KeyNotAllowed`],
/// [`FormatError::CommitmentMismatch`], ...); [`FormatError::MacMismatch`].
pub async fn unlock(
    doc: &dyn Document,
    kmses: &[&dyn Kms],
    expected: &EncryptionContext,
    trust: &Trust,
    engine: Engine,
) -> Result<Unlocked, StoreError> {
    let meta = doc.metadata()?.ok_or(StoreError::NotSealed)?;
    if !meta.context.contains_all(expected) {
        return Err(FormatError::WrongContext.into());
    }
    let version = u8::try_from(meta.version).map_err(|_| FormatError::UnsupportedVersion(u8::MAX))?;
    let kctx = values::kms_context(&meta.context, &meta.file_id)?;
    let check = |dk: &envseal_core::DataKey| -> Result<(), envseal_core::Error> {
        Ok(ValueKeys::derive(engine, dk, meta.file_id, version, 0)?.check_commitment(&meta.commitment)?)
    };
    let (dk, index) = entries::unwrap_verified(kmses, &meta.keys, &kctx, trust, &check).await?;
    let keys = ValueKeys::derive(engine, &dk, meta.file_id, version, meta.padding.unwrap_or(0))?;
    drop(dk);
    let verified = meta.keys[index].clone();
    checked_mac(doc, keys, meta, verified, engine)
}

/// The last step of opening: the whole-file MAC, with the keys whose commitment was checked.
fn checked_mac(
    doc: &dyn Document,
    keys: ValueKeys,
    meta: Metadata,
    verified: WrappedKey,
    engine: Engine,
) -> Result<Unlocked, StoreError> {
    let plain = PlainRule::compile(&meta.plain_keys, meta.version)?;
    let u = Unlocked { keys, meta, plain, verified, engine, fixed_time: None, maced: None };
    if !ValueKeys::mac_matches(&u.mac(doc)?, &u.meta.mac) {
        return Err(FormatError::MacMismatch.into());
    }
    Ok(u)
}

/// Opens a sealed document with a data key obtained by other means (no KMS): checks the key
/// commitment and the whole-file MAC, as [`unlock`] does after the unwrap. For the test vectors
/// (FORMAT.md §10.7) and callers that hold the data key.
///
/// # Errors
/// As [`unlock`], without the KMS errors.
pub fn unlock_with_data_key(
    doc: &dyn Document,
    data_key: &envseal_core::DataKey,
    expected: &EncryptionContext,
    engine: Engine,
) -> Result<Unlocked, StoreError> {
    let meta = doc.metadata()?.ok_or(StoreError::NotSealed)?;
    if !meta.context.contains_all(expected) {
        return Err(FormatError::WrongContext.into());
    }
    let version = u8::try_from(meta.version).map_err(|_| FormatError::UnsupportedVersion(u8::MAX))?;
    let keys = ValueKeys::derive(engine, data_key, meta.file_id, version, meta.padding.unwrap_or(0))?;
    keys.check_commitment(&meta.commitment)?;
    let verified = meta.keys.first().cloned().ok_or(StoreError::Metadata("no wrapped-key entry".into()))?;
    checked_mac(doc, keys, meta, verified, engine)
}

/// Everything [`seal`] draws at random or from the clock, fixed: for the generator of the test
/// vectors only (FORMAT.md §10.7). Real files MUST get a fresh data key and file id.
#[doc(hidden)]
#[derive(Debug)]
pub struct FixedSeal<'a> {
    /// Format version to write (1 or 2).
    pub version: u8,
    /// The data key.
    pub data_key: &'a envseal_core::DataKey,
    /// The file id.
    pub file_id: [u8; values::FILE_ID_LEN],
    /// The entries to record (not checked: no KMS is involved).
    pub keys: Vec<WrappedKey>,
    /// The context.
    pub context: EncryptionContext,
    /// The plain-keys rule.
    pub plain_keys: Option<String>,
    /// The padding (format 2).
    pub padding: u32,
    /// `created` and `modified`.
    pub time: String,
}

/// [`seal`] with fixed inputs, for the test-vector generator.
///
/// # Errors
/// As [`seal`].
#[doc(hidden)]
pub fn seal_fixed(doc: &mut dyn Document, f: FixedSeal<'_>) -> Result<Unlocked, StoreError> {
    let padding = (f.version >= 2).then_some(f.padding);
    let keys = ValueKeys::derive(Engine::default(), f.data_key, f.file_id, f.version, f.padding)?;
    let meta = Metadata {
        version: f.version as u32,
        file_id: f.file_id,
        context: f.context,
        keys: f.keys.clone(),
        plain_keys: f.plain_keys.clone(),
        padding,
        commitment: keys.commitment_hex(),
        mac: String::new(),
        created: Some(f.time.clone()),
        modified: None,
    };
    let plain = PlainRule::compile(&f.plain_keys, f.version as u32)?;
    let verified = f.keys.first().cloned().ok_or(StoreError::Metadata("no wrapped-key entry".into()))?;
    let mut u =
        Unlocked { keys, meta, plain, verified, engine: Engine::default(), fixed_time: Some(f.time), maced: None };
    for (i, e) in doc.entries().into_iter().enumerate() {
        u.seal_entry(doc, Some(i), &e.path, e.ty, e.text.as_bytes())?;
    }
    u.finish(doc)?;
    Ok(u)
}

impl Unlocked {
    /// Recomputes the MAC over `doc` as it is, with `modified` set to `time` (test-vector
    /// generator: a defect made with the keys, that only authentication of the value catches).
    ///
    /// # Errors
    /// [`StoreError::UnsealedValue`].
    #[doc(hidden)]
    pub fn remac(&mut self, doc: &mut dyn Document, time: &str) -> Result<(), StoreError> {
        self.fixed_time = Some(time.to_string());
        self.finish(doc)
    }

    /// Seals `plaintext` for `path` with this file's keys, without storing it (test-vector
    /// generator).
    ///
    /// # Errors
    /// As [`ValueKeys::seal`].
    #[doc(hidden)]
    pub fn seal_text(&self, path: &KeyPath, ty: ValueType, plaintext: &[u8]) -> Result<String, StoreError> {
        Ok(self.keys.seal(path, ty, plaintext)?)
    }
}

/// Parses a user's key argument: `a.b[0].c`, or a JSON pointer `/a/b/0/c`.
///
/// # Errors
/// [`StoreError::InvalidPath`] for an empty path or segment.
pub fn parse_key_path(s: &str) -> Result<KeyPath, StoreError> {
    use envseal_core::values::PathSegment;
    let bad = || StoreError::InvalidPath(s.to_string());
    if s.is_empty() {
        return Err(bad());
    }
    if let Some(ptr) = s.strip_prefix('/') {
        // RFC 6901: "~1" is "/", "~0" is "~"; numeric segments address sequence items.
        let segs = ptr
            .split('/')
            .map(|seg| {
                let k = seg.replace("~1", "/").replace("~0", "~");
                match k.parse::<u64>() {
                    Ok(i) if !k.starts_with('+') && (k == "0" || !k.starts_with('0')) => PathSegment::Index(i),
                    _ => PathSegment::Key(k),
                }
            })
            .collect();
        return Ok(KeyPath(segs));
    }
    let mut segs = Vec::new();
    for part in s.split('.') {
        let (name, mut rest) = match part.find('[') {
            Some(i) => (&part[..i], &part[i..]),
            None => (part, ""),
        };
        if name.is_empty() && rest.is_empty() {
            return Err(bad());
        }
        if !name.is_empty() {
            segs.push(PathSegment::Key(name.to_string()));
        }
        while let Some(r) = rest.strip_prefix('[') {
            let end = r.find(']').ok_or_else(bad)?;
            segs.push(PathSegment::Index(r[..end].parse().map_err(|_| bad())?));
            rest = &r[end + 1..];
        }
        if !rest.is_empty() {
            return Err(bad());
        }
    }
    Ok(KeyPath(segs))
}

#[cfg(test)]
mod tests {
    use super::*;
    use envseal_core::values::PathSegment;

    #[test]
    fn key_paths() {
        assert_eq!(
            parse_key_path("db.hosts[1].name").unwrap(),
            KeyPath(vec![
                PathSegment::Key("db".into()),
                PathSegment::Key("hosts".into()),
                PathSegment::Index(1),
                PathSegment::Key("name".into())
            ])
        );
        assert_eq!(
            parse_key_path("/a~1b/0/c").unwrap(),
            KeyPath(vec![PathSegment::Key("a/b".into()), PathSegment::Index(0), PathSegment::Key("c".into())])
        );
        assert!(parse_key_path("").is_err());
        assert!(parse_key_path("a..b").is_err());
        assert!(parse_key_path("a[x]").is_err());
    }

    #[test]
    fn detection() {
        assert_eq!(Format::from_path(Path::new("x/.env")), Some(Format::Dotenv));
        assert_eq!(Format::from_path(Path::new(".env.production")), Some(Format::Dotenv));
        assert_eq!(Format::from_path(Path::new("prod.env")), Some(Format::Dotenv));
        assert_eq!(Format::from_path(Path::new("a.JSON")), Some(Format::Json));
        assert_eq!(Format::from_path(Path::new("a.yml")), Some(Format::Yaml));
        assert_eq!(Format::detect(None, b" {\"a\": 1}"), Format::Json);
        assert_eq!(Format::detect(None, b"\x00\x01"), Format::Binary);
        assert_eq!(Format::detect(Some(Path::new("a.json")), &envseal_core::container::MAGIC), Format::Binary);
    }
}
