//! The fixed inputs every generator module shares: data keys, salts, wrapped-key entries,
//! contexts, the sealed field helper, and the [`Builder`] that collects [`Case`]s.

use std::collections::BTreeMap;

use envseal_core::envelope::{Envelope, FieldKey};
use envseal_core::{DataKey, EncryptionContext, Engine, WrappedKey};

use crate::{EXPECT_OK, Format, Vector};

/// One generated vector and its path relative to the vector folder
/// (`container/NAME.json` or `field/NAME.json`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Case {
    /// Relative path, `/`-separated.
    pub path: String,
    /// The vector.
    pub vector: Vector,
}

// ---------------------------------------------------------------------------------------------
// Fixed inputs.

/// `N` bytes counting up from `start` (wrapping): readable in hex, distinct per `start`.
pub(super) fn seq<const N: usize>(start: u8) -> [u8; N] {
    std::array::from_fn(|i| start.wrapping_add(i as u8))
}

/// The data key of every container vector: `00 01 02 ... 1f`.
pub(super) const CONTAINER_DK: u8 = 0x00;
/// The data key of every field vector: `40 41 ... 5f`.
pub(super) const FIELD_DK: u8 = 0x40;
/// A wrong data key: `80 81 ... 9f`.
pub(super) const WRONG_DK: u8 = 0x80;

/// The container salt number `n`: `n, n+7, n+14, ...` (mod 256).
pub(super) fn container_salt(n: u8) -> [u8; 32] {
    std::array::from_fn(|i| n.wrapping_add((i as u8).wrapping_mul(7)))
}

/// Plaintext of `len` bytes: `i mod 251`, so chunks of a multiple of 64 never repeat.
pub(super) fn plaintext(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8).collect()
}

/// The wrapped-key entry of every vector (the blob is arbitrary: no KMS opens it here).
pub(super) fn entry() -> WrappedKey {
    WrappedKey {
        backend: "test".into(),
        key_id: "test-key".into(),
        key_version: "1".into(),
        blob: seq::<48>(0xb0).to_vec(),
    }
}

/// The second entry of the two-entry container.
pub(super) fn entry2() -> WrappedKey {
    WrappedKey {
        backend: "test-2".into(),
        key_id: "arn:test:key/second".into(),
        key_version: "7".into(),
        blob: seq::<64>(0x10).to_vec(),
    }
}

pub(super) type Ctx = BTreeMap<String, String>;

pub(super) fn ctx(pairs: &[(&str, &str)]) -> Ctx {
    pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
}

pub(super) fn encryption_context(c: &Ctx) -> EncryptionContext {
    // Invariant: the generator's contexts are valid user contexts.
    EncryptionContext::from_pairs(c.iter().map(|(k, v)| (k.as_str(), v.as_str()))).expect("valid fixed context")
}

/// The unicode context: mixed case, non-ASCII keys and values, an empty value. Bytewise order is
/// `Zone` < `app` < `empty` < `région` < `tenant` (`Z` = 0x5a sorts before `a` = 0x61).
pub(super) fn unicode_context() -> Ctx {
    ctx(&[
        ("tenant", "Zürich ☃"),
        ("app", "billing"),
        ("région", "Île-de-France"),
        ("Zone", "eu-west-1"),
        ("empty", ""),
    ])
}

// ---------------------------------------------------------------------------------------------
// Case assembly.

pub(super) enum Outcome {
    Ok(Vec<u8>),
    Err(&'static str),
    ErrAt(&'static str, u64),
}

pub(super) struct Input {
    pub(super) data_key: [u8; 32],
    pub(super) context: Ctx,
    pub(super) sealed: Vec<u8>,
}

#[derive(Default)]
pub(super) struct Builder {
    pub(super) cases: Vec<Case>,
}

impl Builder {
    pub(super) fn push(&mut self, format: Format, name: &str, description: &str, input: Input, outcome: Outcome) {
        let path = format!("{}/{name}.json", format.dir_name());
        assert!(!self.cases.iter().any(|c| c.path == path), "duplicate vector name {path}");
        let (expect, plaintext, error_index) = match outcome {
            Outcome::Ok(pt) => (EXPECT_OK.to_owned(), Some(pt), None),
            Outcome::Err(name) => (name.to_owned(), None, None),
            Outcome::ErrAt(name, i) => (name.to_owned(), None, Some(i)),
        };
        let vector = Vector {
            description: description.to_owned(),
            format,
            data_key: input.data_key.to_vec(),
            context: input.context,
            sealed: input.sealed,
            plaintext,
            expect,
            error_index,
            file_format: None,
        };
        self.cases.push(Case { path, vector });
    }

    pub(super) fn container(&mut self, name: &str, description: &str, input: Input, outcome: Outcome) {
        self.push(Format::Container, name, description, input, outcome);
    }

    pub(super) fn field(&mut self, name: &str, description: &str, input: Input, outcome: Outcome) {
        self.push(Format::Field, name, description, input, outcome);
    }
}

// ---------------------------------------------------------------------------------------------
// Field envelopes (FORMAT.md §5).

/// The salt of every field vector: `60 61 ... 6f`.
pub(super) const FIELD_SALT: u8 = 0x60;

pub(super) fn field_key() -> FieldKey {
    // Invariant: the fixed entry is within every bound.
    FieldKey::new(Engine::default(), &DataKey::from_bytes(seq(FIELD_DK)), seq(FIELD_SALT), &entry())
        .expect("valid field entry")
}

pub(super) struct Field {
    pub(super) bytes: Vec<u8>,
    pub(super) context: Ctx,
    pub(super) plaintext: Vec<u8>,
}

pub(super) fn seal_field(counter: u64, len: usize, context: &Ctx) -> Field {
    let pt = plaintext(len);
    // Invariant: the fixed plaintexts are far below the field limit.
    let bytes = field_key().seal(counter, &pt, &encryption_context(context)).expect("sealable value");
    Field { bytes, context: context.clone(), plaintext: pt }
}

impl Field {
    pub(super) fn input(&self) -> Input {
        self.input_with(|_| {})
    }

    pub(super) fn input_with(&self, f: impl FnOnce(&mut Vec<u8>)) -> Input {
        let mut sealed = self.bytes.clone();
        f(&mut sealed);
        Input { data_key: seq(FIELD_DK), context: self.context.clone(), sealed }
    }

    pub(super) fn ok(&self) -> Outcome {
        Outcome::Ok(self.plaintext.clone())
    }

    pub(super) fn entry_len(&self) -> usize {
        // Invariant: the generator's envelopes parse.
        Envelope::parse(&self.bytes).expect("valid envelope").entry_bytes.len()
    }

    pub(super) fn nonce_at(&self) -> usize {
        51 + self.entry_len()
    }

    pub(super) fn ciphertext_at(&self) -> usize {
        self.nonce_at() + 12
    }
}
