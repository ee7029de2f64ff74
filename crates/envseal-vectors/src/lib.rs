#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]
#![deny(missing_docs)]

use std::collections::BTreeMap;
use std::fmt;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use envseal_core::container::Preamble;
use envseal_core::envelope::{Envelope, FieldKey};
use envseal_core::{DataKey, EncryptionContext, Engine, Error, FormatError};
use serde::{Deserialize, Serialize};

pub mod generate;
pub mod keyref;

pub use crate::generate::{DirDiff, diff_dir};

/// The sealed forms a vector can hold (FORMAT.md §4, §5, §5.6 and §10).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// The streaming file container.
    Container,
    /// The field envelope (byte form).
    Field,
    /// The field envelope's text form (`esf1:...`; `sealed` holds the text's UTF-8 bytes).
    Text,
    /// A value-level .env/JSON/YAML file (`sealed` holds the file's bytes, `plaintext` the
    /// opened file's; `file_format` says which).
    Values,
}

impl Format {
    /// The folder of this format's vectors under `testdata/vectors/`.
    pub fn dir_name(self) -> &'static str {
        match self {
            Format::Container => "container",
            Format::Field => "field",
            Format::Text => "text",
            Format::Values => "values",
        }
    }

    /// Every format, in folder order.
    pub const ALL: [Format; 4] = [Format::Container, Format::Field, Format::Text, Format::Values];
}

/// The `expect` value of a vector that must open.
pub const EXPECT_OK: &str = "ok";

/// One test vector: a sealed input, the key and context to open it with, and the outcome.
///
/// JSON field names and encodings are the schema documented in `testdata/vectors/README.md`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Vector {
    /// What the case tests, and why the outcome is what it is.
    pub description: String,
    /// Which format `sealed` is in.
    pub format: Format,
    /// The 32-byte data key to open with (hex). No KMS is involved.
    #[serde(with = "hex_bytes")]
    pub data_key: Vec<u8>,
    /// Container: the caller's expected context (must be contained in the header's). Field
    /// envelope: the context the opener supplies (must equal the sealing context).
    pub context: BTreeMap<String, String>,
    /// The whole sealed input (hex).
    #[serde(with = "hex_bytes")]
    pub sealed: Vec<u8>,
    /// The plaintext (hex), present exactly when `expect` is `"ok"`.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "hex_opt")]
    pub plaintext: Option<Vec<u8>>,
    /// `"ok"` or the name of the expected error (a [`FormatError`] variant name).
    pub expect: String,
    /// For `ChunkTampered`, the index of the failing chunk; for `TruncatedBody`, the number of
    /// complete chunks read. Absent otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_index: Option<u64>,
    /// For `values` vectors: `dotenv`, `json` or `yaml`. Absent otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_format: Option<String>,
}

/// A failed opening, reduced to what vectors compare: the error's name and its index, if any.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Failure {
    /// The error's variant name (`"ChunkTampered"`, `"WrongContext"`, ...).
    pub name: &'static str,
    /// The chunk index or chunk count the error carries, if any.
    pub index: Option<u64>,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.index {
            Some(i) => write!(f, "{} ({i})", self.name),
            None => f.write_str(self.name),
        }
    }
}

/// The name (and index) under which vectors record an error.
pub fn failure_of(error: &Error) -> Failure {
    let (name, index) = match error {
        Error::Format(e) => match e {
            FormatError::NotSealed => ("NotSealed", None),
            FormatError::UnsupportedVersion(_) => ("UnsupportedVersion", None),
            FormatError::UnsupportedSuite(_) => ("UnsupportedSuite", None),
            FormatError::Truncated => ("Truncated", None),
            FormatError::Malformed(_) => ("Malformed", None),
            FormatError::LimitExceeded { .. } => ("LimitExceeded", None),
            FormatError::InvalidContext(_) => ("InvalidContext", None),
            FormatError::WrongContext => ("WrongContext", None),
            FormatError::CommitmentMismatch => ("CommitmentMismatch", None),
            FormatError::HeaderTampered => ("HeaderTampered", None),
            FormatError::KeyEntryTampered { index } => ("KeyEntryTampered", Some(*index as u64)),
            FormatError::ChunkTampered { index } => ("ChunkTampered", Some(*index)),
            FormatError::TruncatedBody { chunks } => ("TruncatedBody", Some(*chunks)),
            FormatError::TrailingData => ("TrailingData", None),
            FormatError::MacMismatch => ("MacMismatch", None),
            FormatError::ValueTampered => ("ValueTampered", None),
            _ => ("UnknownFormatError", None),
        },
        Error::Kms(_) => ("Kms", None),
        Error::NoKeyOpened(_) => ("NoKeyOpened", None),
        Error::Io(_) => ("Io", None),
        _ => ("UnknownError", None),
    };
    Failure { name, index }
}

/// A vector that cannot be used at all (bad key length, invalid context), as opposed to one
/// whose outcome differs from the expected one.
#[derive(Debug)]
pub struct InvalidVector(pub String);

impl fmt::Display for InvalidVector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid vector: {}", self.0)
    }
}

impl std::error::Error for InvalidVector {}

/// How a container vector is read (field envelopes have one reader only).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadMode {
    /// [`Preamble::parse`] on the whole input, then [`Decryptor::decrypt_stream`] on the body
    /// slice.
    ///
    /// [`Decryptor::decrypt_stream`]: envseal_core::container::Decryptor::decrypt_stream
    Slice,
    /// [`Preamble::read_from`] on a reader, then [`Decryptor::decrypt_stream`] on the same
    /// reader, as a file is opened.
    ///
    /// [`Decryptor::decrypt_stream`]: envseal_core::container::Decryptor::decrypt_stream
    Stream,
    /// [`Preamble::parse`], then the one-pass in-memory [`Decryptor::decrypt_slice`].
    ///
    /// [`Decryptor::decrypt_slice`]: envseal_core::container::Decryptor::decrypt_slice
    OnePass,
    /// [`Preamble::read_from`], then the threaded [`Decryptor::decrypt_parallel`] (reader,
    /// opener and writer on separate threads), as the CLI opens files.
    ///
    /// [`Decryptor::decrypt_parallel`]: envseal_core::container::Decryptor::decrypt_parallel
    Parallel,
}

impl ReadMode {
    /// Every container read mode.
    pub const ALL: [ReadMode; 4] = [ReadMode::Slice, ReadMode::Stream, ReadMode::OnePass, ReadMode::Parallel];
}

impl Vector {
    /// The data key.
    ///
    /// # Errors
    /// [`InvalidVector`] unless `data_key` is 32 bytes.
    pub fn data_key(&self) -> Result<DataKey, InvalidVector> {
        let bytes: [u8; 32] = self
            .data_key
            .as_slice()
            .try_into()
            .map_err(|_| InvalidVector(format!("data key is {} bytes, not 32", self.data_key.len())))?;
        Ok(DataKey::from_bytes(bytes))
    }

    /// The context, as an [`EncryptionContext`].
    ///
    /// # Errors
    /// [`InvalidVector`] if it is not a valid user context.
    pub fn encryption_context(&self) -> Result<EncryptionContext, InvalidVector> {
        EncryptionContext::from_pairs(self.context.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .map_err(|e| InvalidVector(e.to_string()))
    }

    /// Opens the vector on `engine` with its data key (no KMS), reading a container from a slice.
    ///
    /// Container (FORMAT.md §4.5 without the KMS step): parse the preamble, check that the
    /// expected context is contained in the header's ([`FormatError::WrongContext`]), check the
    /// commitment and the header MAC, decrypt the body. Field envelope (§5.5): parse, derive
    /// the keys from the data key and the envelope's salt, open with the context.
    ///
    /// # Errors
    /// [`InvalidVector`] for an unusable vector; otherwise the outcome is in the inner result.
    pub fn open(&self, engine: Engine) -> Result<Result<Vec<u8>, Failure>, InvalidVector> {
        self.open_with(engine, ReadMode::Slice)
    }

    /// As [`Vector::open`], choosing how a container is read (field envelopes ignore `mode`).
    ///
    /// # Errors
    /// As [`Vector::open`].
    pub fn open_with(&self, engine: Engine, mode: ReadMode) -> Result<Result<Vec<u8>, Failure>, InvalidVector> {
        let dk = self.data_key()?;
        let ctx = self.encryption_context()?;
        let res = match self.format {
            Format::Container => open_container(engine, &dk, &ctx, &self.sealed, mode),
            Format::Field => open_field(engine, &dk, &ctx, &self.sealed),
            Format::Text => match std::str::from_utf8(&self.sealed) {
                Ok(t) => envseal_core::envelope::from_text(t).and_then(|b| open_field(engine, &dk, &ctx, &b)),
                Err(_) => Err(FormatError::Malformed("text is not UTF-8").into()),
            },
            Format::Values => {
                let format = match self.file_format.as_deref() {
                    Some("dotenv") => envseal_stores::Format::Dotenv,
                    Some("json") => envseal_stores::Format::Json,
                    Some("yaml") => envseal_stores::Format::Yaml,
                    other => return Err(InvalidVector(format!("file_format {other:?}"))),
                };
                return Ok(open_values(engine, &dk, &ctx, &self.sealed, format));
            }
        };
        Ok(res.map_err(|e| failure_of(&e)))
    }

    /// Checks that opening on `engine` (in `mode`) gives the expected outcome.
    ///
    /// # Errors
    /// A description of the mismatch (never of the plaintext beyond its length).
    pub fn check_with(&self, engine: Engine, mode: ReadMode) -> Result<(), String> {
        self.check_consistent()?;
        let got = self.open_with(engine, mode).map_err(|e| e.to_string())?;
        match (got, &self.plaintext) {
            (Ok(pt), Some(want)) if &pt == want => Ok(()),
            (Ok(pt), Some(want)) => {
                Err(format!("opened to a different plaintext ({} bytes, expected {})", pt.len(), want.len()))
            }
            (Ok(pt), None) => Err(format!("opened ({} bytes) but expected {}", pt.len(), self.expected_failure())),
            (Err(f), _) if f.name == self.expect && f.index == self.error_index => Ok(()),
            (Err(f), _) => Err(format!("failed with {f}, expected {}", self.expected_failure())),
        }
    }

    /// Checks that opening on `engine` gives the expected outcome, reading containers both from
    /// a slice and as a stream with the streaming body reader (the normative reader of
    /// FORMAT.md §4.6). [`ReadMode::OnePass`] is checked separately by the tests.
    ///
    /// # Errors
    /// As [`Vector::check_with`].
    pub fn check(&self, engine: Engine) -> Result<(), String> {
        self.check_with(engine, ReadMode::Slice)?;
        if self.format == Format::Container {
            self.check_with(engine, ReadMode::Stream).map_err(|e| format!("streaming read: {e}"))?;
        }
        Ok(())
    }

    /// Checks the schema rules that serde cannot: `plaintext` present exactly for `"ok"`,
    /// `error_index` only with an error that carries one.
    ///
    /// # Errors
    /// A description of the inconsistency.
    pub fn check_consistent(&self) -> Result<(), String> {
        let ok = self.expect == EXPECT_OK;
        if ok != self.plaintext.is_some() {
            return Err("`plaintext` must be present exactly when `expect` is \"ok\"".into());
        }
        let indexed = matches!(self.expect.as_str(), "ChunkTampered" | "TruncatedBody" | "KeyEntryTampered");
        if indexed != self.error_index.is_some() {
            return Err(format!("`error_index` must be present exactly for indexed errors (expect {})", self.expect));
        }
        Ok(())
    }

    fn expected_failure(&self) -> String {
        match (self.expect.as_str(), self.error_index) {
            (EXPECT_OK, _) => EXPECT_OK.to_owned(),
            (name, Some(i)) => format!("{name} ({i})"),
            (name, None) => name.to_owned(),
        }
    }

    /// The vector's JSON file text: pretty-printed, fields in schema order, a final newline.
    pub fn to_json(&self) -> String {
        // Invariant: every field is a string, a map of strings or an integer; serializing cannot
        // fail.
        let mut s = serde_json::to_string_pretty(self).expect("vector serializes to JSON");
        s.push('\n');
        s
    }

    /// Parses a vector file's text.
    ///
    /// # Errors
    /// JSON or schema errors.
    pub fn from_json(text: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(text)
    }
}

fn open_container(
    engine: Engine,
    dk: &DataKey,
    expected: &EncryptionContext,
    sealed: &[u8],
    mode: ReadMode,
) -> Result<Vec<u8>, Error> {
    let (preamble, body) = match mode {
        ReadMode::Slice | ReadMode::OnePass => {
            let (p, n) = Preamble::parse(sealed)?;
            (p, &sealed[n..])
        }
        ReadMode::Stream | ReadMode::Parallel => {
            let mut r = sealed;
            let p = Preamble::read_from(&mut r)?;
            (p, r)
        }
    };
    // FORMAT.md §4.5 step 2: the caller's context before any key is used.
    if !preamble.header.context.contains_all(expected) {
        return Err(FormatError::WrongContext.into());
    }
    let dec = preamble.open(engine, dk)?;
    // On failure, `out` may hold plaintext of earlier chunks (and, for the one-pass reader,
    // unverified bytes of the failing one); it is dropped with the error.
    if mode == ReadMode::OnePass {
        let mut out = vec![0u8; body.len()];
        let n = dec.decrypt_slice(body, &mut out)?;
        out.truncate(n);
        return Ok(out);
    }
    let mut out = Vec::new();
    if mode == ReadMode::Parallel {
        dec.decrypt_parallel(body, &mut out)?;
    } else {
        dec.decrypt_stream(body, &mut out)?;
    }
    Ok(out)
}

fn open_field(engine: Engine, dk: &DataKey, context: &EncryptionContext, sealed: &[u8]) -> Result<Vec<u8>, Error> {
    let env = Envelope::parse(sealed)?;
    let key = FieldKey::for_opening(engine, dk, *env.salt);
    Ok(key.open(&env, context)?.expose_secret().to_vec())
}

/// Opens a value-level file with its data key (FORMAT.md §10 without the KMS step): parse, check
/// the context, the commitment and the MAC, open every value, render the plaintext file.
fn open_values(
    engine: Engine,
    dk: &DataKey,
    expected: &EncryptionContext,
    sealed: &[u8],
    format: envseal_stores::Format,
) -> Result<Vec<u8>, Failure> {
    let run = || -> Result<Vec<u8>, envseal_stores::StoreError> {
        let mut doc = envseal_stores::parse(format, sealed)?;
        let u = envseal_stores::unlock_with_data_key(doc.as_ref(), dk, expected, engine)?;
        u.decrypt(doc.as_mut())?;
        Ok(doc.render())
    };
    run().map_err(|e| failure_of_store(&e))
}

/// The name under which value-level vectors record a store error: core errors by their own
/// name; invalid metadata and a value left in clear against the rule are `Malformed`; a file
/// without metadata or that does not parse is `NotSealed`.
pub fn failure_of_store(error: &envseal_stores::StoreError) -> Failure {
    use envseal_stores::StoreError as S;
    match error {
        S::Core(e) => failure_of(e),
        S::Metadata(_) | S::UnsealedValue(_) | S::BadRegex(_) => Failure { name: "Malformed", index: None },
        S::NotSealed | S::Parse { .. } => Failure { name: "NotSealed", index: None },
        _ => Failure { name: "UnknownError", index: None },
    }
}

/// The default vector folder: `testdata/vectors` at the repository root.
pub fn default_dir() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../testdata/vectors"))
}

/// Reads every `*.json` vector under `dir/container` and `dir/field`, sorted by path.
///
/// # Errors
/// I/O errors, and JSON errors (as [`io::ErrorKind::InvalidData`], naming the file).
pub fn load_dir(dir: &Path) -> io::Result<Vec<(PathBuf, Vector)>> {
    let mut out = Vec::new();
    for path in json_files(dir)? {
        let text = fs::read_to_string(&path)?;
        let v = Vector::from_json(&text)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("{}: {e}", path.display())))?;
        out.push((path, v));
    }
    Ok(out)
}

/// The `*.json` files under `dir/container` and `dir/field`, sorted; missing folders are empty.
pub(crate) fn json_files(dir: &Path) -> io::Result<Vec<PathBuf>> {
    json_files_in(dir, &Format::ALL.map(Format::dir_name))
}

/// The `*.json` files under each `dir/SUB`, sorted; missing folders are empty.
pub(crate) fn json_files_in(dir: &Path, subdirs: &[&str]) -> io::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for sub in subdirs {
        let entries = match fs::read_dir(dir.join(sub)) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        for entry in entries {
            let path = entry?.path();
            if path.extension().is_some_and(|x| x == "json") {
                files.push(path);
            }
        }
    }
    files.sort();
    Ok(files)
}

/// Hex (lowercase) for byte fields.
mod hex_bytes {
    use serde::{Deserialize, Deserializer, Serializer};

    pub(crate) fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(bytes))
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let s = String::deserialize(d)?;
        if s.bytes().any(|c| c.is_ascii_uppercase()) {
            return Err(serde::de::Error::custom("hex must be lowercase"));
        }
        hex::decode(&s).map_err(serde::de::Error::custom)
    }
}

/// Hex for an optional byte field.
mod hex_opt {
    use serde::{Deserializer, Serializer};

    pub(crate) fn serialize<S: Serializer>(bytes: &Option<Vec<u8>>, s: S) -> Result<S::Ok, S::Error> {
        match bytes {
            Some(b) => super::hex_bytes::serialize(b, s),
            None => s.serialize_none(),
        }
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<u8>>, D::Error> {
        super::hex_bytes::deserialize(d).map(Some)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vector {
        Vector {
            description: "d".into(),
            format: Format::Field,
            data_key: vec![1; 32],
            context: BTreeMap::from([("a".into(), "ü".into())]),
            sealed: vec![0xe5, 0x01],
            plaintext: None,
            expect: "ChunkTampered".into(),
            error_index: Some(3),
            file_format: None,
        }
    }

    #[test]
    fn json_round_trip_and_schema() {
        let v = sample();
        let text = v.to_json();
        assert!(text.contains("\"sealed\": \"e501\""), "{text}");
        assert!(!text.contains("plaintext"));
        assert_eq!(Vector::from_json(&text).unwrap(), v);
        // Unknown fields and uppercase hex are rejected.
        assert!(Vector::from_json(&text.replace("\"expect\"", "\"other\": 1, \"expect\"")).is_err());
        assert!(Vector::from_json(&text.replace("e501", "E501")).is_err());
    }

    #[test]
    fn consistency_rules() {
        let mut v = sample();
        v.format = Format::Container;
        assert!(v.check_consistent().is_ok());
        v.error_index = None;
        assert!(v.check_consistent().is_err());
        v.expect = EXPECT_OK.into();
        assert!(v.check_consistent().is_err());
        v.plaintext = Some(Vec::new());
        assert!(v.check_consistent().is_ok());
    }

    #[test]
    fn unusable_vectors_are_reported_as_such() {
        let mut v = sample();
        v.data_key = vec![1; 31];
        assert!(v.open(Engine::default()).is_err());
        let mut v = sample();
        v.context = BTreeMap::from([("envseal:container".into(), "x".into())]);
        assert!(v.open(Engine::default()).is_err());
    }
}
