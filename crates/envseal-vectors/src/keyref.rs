//! Vectors of the key-reference form (FORMAT.md §11), in `testdata/vectors/keyref/`:
//!
//! - `value/NAME.json`: a key-reference envelope, the data key, key id, scope context and row
//!   key to open it with, and the outcome (§11.3–§11.5);
//! - `index/NAME.json`: a blind-index term from an index key, definition and field values
//!   (§11.7);
//! - `vault/NAME.json`: a key-vault entry (a field envelope of an empty value, §11.6) and the
//!   entry fields its context is built from.
//!
//! Written by [`cases`] from fixed inputs (`cargo run -p envseal-vectors --bin gen-vectors`,
//! with the other vectors), checked by [`KeyrefVector::check`] with the public `envseal-fields`
//! and `envseal-core` APIs, on every AEAD engine. The known answers are frozen, as in
//! [`crate::generate`].

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::Path;

use envseal_core::envelope::{Envelope, FieldKey};
use envseal_core::{DataKey, EncryptionContext, Engine, Error as CoreError, WrappedKey};
use envseal_fields::index::{IndexDef, IndexKey};
use envseal_fields::keyref::{KeyId, KeyRef, ValueKey};
use envseal_fields::vault::{EntryState, KeyKind, VaultRecord};
use serde::{Deserialize, Serialize};

use crate::{EXPECT_OK, hex_bytes, hex_opt};

/// The three kinds of key-reference vectors.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// A sealed value.
    Value,
    /// A blind-index term.
    Index,
    /// A key-vault entry.
    Vault,
}

impl Kind {
    /// The folder under `keyref/`.
    pub fn dir_name(self) -> &'static str {
        match self {
            Kind::Value => "value",
            Kind::Index => "index",
            Kind::Vault => "vault",
        }
    }

    /// Every kind, in folder order.
    pub const ALL: [Kind; 3] = [Kind::Value, Kind::Index, Kind::Vault];
}

/// One vector. Which fields are present depends on `kind` (see `testdata/vectors/README.md`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyrefVector {
    /// What the case tests.
    pub description: String,
    /// Value, index or vault.
    pub kind: Kind,
    /// The data key of the vault entry (hex, 32 bytes). No KMS is involved.
    #[serde(with = "hex_bytes")]
    pub data_key: Vec<u8>,
    /// The vault entry's key id (hex, 8 bytes).
    #[serde(with = "hex_bytes")]
    pub key_id: Vec<u8>,
    /// Value: the scope context (base, `table`, `column`). Vault: the base context.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub context: BTreeMap<String, String>,
    /// Value: the row key; absent for a record without one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pk: Option<String>,
    /// Index and vault: the key generation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generation: Option<u32>,
    /// Index: the index name; vault: the entry's column or index name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Vault: the entry's table.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub table: Option<String>,
    /// Vault: `data` or `index`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entry_kind: Option<String>,
    /// Index (and index vault entries): the definition text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub definition: Option<String>,
    /// Index: the field plaintexts (hex each), in definition order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fields: Vec<String>,
    /// Value and vault: the sealed bytes (hex). Index: the expected term (hex), when `expect` is
    /// `"ok"`.
    #[serde(default, with = "hex_opt", skip_serializing_if = "Option::is_none")]
    pub sealed: Option<Vec<u8>>,
    /// Value: the plaintext (hex), present exactly when `expect` is `"ok"`.
    #[serde(default, with = "hex_opt", skip_serializing_if = "Option::is_none")]
    pub plaintext: Option<Vec<u8>>,
    /// `"ok"` or the expected error's name.
    pub expect: String,
}

/// The name under which vectors record an `envseal-fields` error.
pub fn failure_name(e: &envseal_fields::Error) -> &'static str {
    match e {
        envseal_fields::Error::Core(c) => crate::failure_of(c).name,
        envseal_fields::Error::UnknownKey { .. } => "UnknownKey",
        envseal_fields::Error::WrongScope { .. } => "WrongScope",
        envseal_fields::Error::Schema(_) => "InvalidInput",
        _ => "UnknownError",
    }
}

fn ctx_of(map: &BTreeMap<String, String>) -> Result<EncryptionContext, String> {
    EncryptionContext::from_pairs(map.iter().map(|(k, v)| (k.as_str(), v.as_str()))).map_err(|e| e.to_string())
}

impl KeyrefVector {
    fn data_key(&self) -> Result<DataKey, String> {
        let b: [u8; 32] = self.data_key.as_slice().try_into().map_err(|_| "data key is not 32 bytes".to_string())?;
        Ok(DataKey::from_bytes(b))
    }

    fn key_id(&self) -> Result<KeyId, String> {
        KeyId::from_slice(&self.key_id).map_err(|e| e.to_string())
    }

    fn record(&self) -> Result<VaultRecord, String> {
        let kind = match self.entry_kind.as_deref() {
            Some("data") => KeyKind::Data,
            Some("index") => KeyKind::Index,
            _ => return Err("vault vector without entry_kind data|index".into()),
        };
        Ok(VaultRecord {
            id: self.key_id()?,
            seq: 0,
            kind,
            table: self.table.clone().ok_or("vault vector without table")?,
            name: self.name.clone().ok_or("vault vector without name")?,
            generation: self.generation.ok_or("vault vector without generation")?,
            state: EntryState::Active,
            created_at: 0,
            definition: self.definition.clone().unwrap_or_default(),
            context: ctx_of(&self.context)?,
            envelope: self.sealed.clone().unwrap_or_default(),
        })
    }

    /// Runs the vector on `engine`: the plaintext (value), the term (index) or the empty
    /// plaintext (vault), or the error's name.
    ///
    /// # Errors
    /// A description when the vector itself is unusable.
    pub fn run(&self, engine: Engine) -> Result<Result<Vec<u8>, &'static str>, String> {
        let dk = self.data_key()?;
        let id = self.key_id()?;
        Ok(match self.kind {
            Kind::Value => {
                let sealed = self.sealed.as_deref().ok_or("value vector without sealed")?;
                let key = ValueKey::derive(engine, &dk, id, &ctx_of(&self.context)?.canonical_bytes());
                let mut out = Vec::new();
                KeyRef::parse(sealed)
                    .and_then(|env| key.open_into(&env, self.pk.as_deref().map(str::as_bytes), &mut out))
                    .map(|()| out)
                    .map_err(|e| crate::failure_of(&CoreError::Format(e)).name)
            }
            Kind::Index => {
                let name = self.name.as_deref().ok_or("index vector without name")?;
                let text = self.definition.as_deref().ok_or("index vector without definition")?;
                let def = IndexDef::parse(name, text).map_err(|e| e.to_string())?;
                let fields: Vec<Vec<u8>> =
                    self.fields.iter().map(|f| hex::decode(f).map_err(|e| e.to_string())).collect::<Result<_, _>>()?;
                let refs: Vec<&[u8]> = fields.iter().map(Vec::as_slice).collect();
                let key = IndexKey::derive(&dk, id, self.generation.ok_or("index vector without generation")?);
                def.input(&refs).map(|input| key.term(&def, &input).into_bytes()).map_err(|e| failure_name(&e))
            }
            Kind::Vault => {
                let rec = self.record()?;
                let ctx = rec.stored_context().map_err(|e| e.to_string())?;
                let sealed = self.sealed.as_deref().ok_or("vault vector without sealed")?;
                Envelope::parse(sealed)
                    .and_then(|env| FieldKey::for_opening(engine, &dk, *env.salt).open(&env, &ctx))
                    .map(|p| p.expose_secret().to_vec())
                    .map_err(|e| crate::failure_of(&CoreError::Format(e)).name)
            }
        })
    }

    /// Checks the outcome on `engine` against `expect` (and the plaintext or term).
    ///
    /// # Errors
    /// A description of the mismatch (never of plaintext beyond its length).
    pub fn check(&self, engine: Engine) -> Result<(), String> {
        let ok = self.expect == EXPECT_OK;
        let want = match self.kind {
            Kind::Index => &self.sealed,
            Kind::Value => &self.plaintext,
            Kind::Vault => &self.plaintext,
        };
        if ok != want.is_some() {
            return Err("the expected plaintext (or term) must be present exactly when expect is \"ok\"".into());
        }
        match (self.run(engine)?, want) {
            (Ok(got), Some(w)) if &got == w => Ok(()),
            (Ok(got), Some(w)) => Err(format!("different result ({} bytes, expected {})", got.len(), w.len())),
            (Ok(got), None) => Err(format!("succeeded ({} bytes) but expected {}", got.len(), self.expect)),
            (Err(name), _) if name == self.expect => Ok(()),
            (Err(name), _) => Err(format!("failed with {name}, expected {}", self.expect)),
        }
    }

    /// The file text: pretty JSON, a final newline.
    pub fn to_json(&self) -> String {
        // Invariant: strings, maps of strings and integers always serialize.
        let mut s = serde_json::to_string_pretty(self).expect("vector serializes");
        s.push('\n');
        s
    }
}

/// One generated vector and its path under `keyref/` (`value/NAME.json`, ...).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Case {
    /// Path relative to the `keyref/` folder.
    pub path: String,
    /// The vector.
    pub vector: KeyrefVector,
}

// ---------------------------------------------------------------------------------------------
// Fixed inputs.

fn seq<const N: usize>(start: u8) -> [u8; N] {
    std::array::from_fn(|i| start.wrapping_add(i as u8))
}

/// Data key of every vector: `40 41 ... 5f` (as the field vectors).
const DK: u8 = 0x40;
/// Key id: `50 51 ... 57`.
const KEY_ID: u8 = 0x50;

fn plaintext(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8).collect()
}

fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

fn email_scope() -> BTreeMap<String, String> {
    map(&[("app", "vectors"), ("table", "users"), ("column", "email")])
}

fn base_vector(kind: Kind, description: String) -> KeyrefVector {
    KeyrefVector {
        description,
        kind,
        data_key: seq::<32>(DK).to_vec(),
        key_id: seq::<8>(KEY_ID).to_vec(),
        context: BTreeMap::new(),
        pk: None,
        generation: None,
        name: None,
        table: None,
        entry_kind: None,
        definition: None,
        fields: Vec::new(),
        sealed: None,
        plaintext: None,
        expect: EXPECT_OK.into(),
    }
}

/// Seals a value vector's plaintext (default engine; the bytes do not depend on it).
fn seal_value(scope: &BTreeMap<String, String>, pk: Option<&str>, counter: u64, pt: &[u8]) -> Vec<u8> {
    let scope = ctx_of(scope).expect("fixed scope");
    let key = ValueKey::derive(
        Engine::default(),
        &DataKey::from_bytes(seq(DK)),
        KeyId(seq(KEY_ID)),
        &scope.canonical_bytes(),
    );
    key.seal(counter, pt, pk.map(str::as_bytes)).expect("fixed inputs seal")
}

#[derive(Default)]
struct Builder {
    cases: Vec<Case>,
}

impl Builder {
    fn push(&mut self, kind: Kind, name: &str, v: KeyrefVector) {
        let path = format!("{}/{name}.json", kind.dir_name());
        assert!(!self.cases.iter().any(|c| c.path == path), "duplicate case {path}");
        self.cases.push(Case { path, vector: v });
    }

    #[allow(clippy::too_many_arguments)]
    fn value(
        &mut self,
        name: &str,
        description: &str,
        scope: BTreeMap<String, String>,
        pk: Option<&str>,
        sealed: Vec<u8>,
        plaintext: Option<Vec<u8>>,
        expect: &str,
    ) {
        let mut v = base_vector(Kind::Value, description.to_string());
        v.context = scope;
        v.pk = pk.map(str::to_string);
        v.sealed = Some(sealed);
        v.plaintext = plaintext;
        v.expect = expect.to_string();
        self.push(Kind::Value, name, v);
    }
}

fn value_cases(b: &mut Builder) {
    let scope = email_scope();
    let unicode = map(&[("app", "vectors"), ("tenant", "Zürich ☃"), ("table", "kunden"), ("column", "straße")]);
    let long_pk = "k".repeat(1024);
    // (name, description, scope, row key, nonce counter, plaintext length)
    type Ok<'a> = (&'a str, &'a str, &'a BTreeMap<String, String>, Option<&'a str>, u64, usize);
    let oks: [Ok<'_>; 7] = [
        ("ok_empty_no_pk", "An empty value of a record without a primary key (row = 0x00).", &scope, None, 0, 0),
        ("ok_1_byte_pk_1", "A 1-byte value in row \"1\".", &scope, Some("1"), 1, 1),
        ("ok_64_bytes_pk_42", "A 64-byte value in row \"42\": 93 bytes, 29 of overhead.", &scope, Some("42"), 2, 64),
        ("ok_empty_pk", "Row key \"\" (row = 0x01 0x0000), which differs from no row key.", &scope, Some(""), 3, 5),
        (
            "ok_unicode_scope_and_pk",
            "Non-ASCII scope and row key (UTF-8, never normalised).",
            &unicode,
            Some("ключ-7"),
            4,
            20,
        ),
        ("ok_pk_1024_bytes", "The longest row key, 1024 bytes.", &scope, Some(long_pk.as_str()), 5, 16),
        (
            "ok_counter_large",
            "Nonce counter 0xfffffffe (the largest is 2^32 - 1): stored as fffffffe, the nonce is 0000000000000000 fffffffe.",
            &scope,
            Some("9"),
            0xffff_fffe,
            8,
        ),
    ];
    for (name, d, sc, pk, counter, len) in oks {
        let pt = plaintext(len);
        b.value(name, d, sc.clone(), pk, seal_value(sc, pk, counter, &pt), Some(pt), EXPECT_OK);
    }

    let base = seal_value(&scope, Some("42"), 2, &plaintext(64));
    let flip = |i: usize| {
        let mut x = base.clone();
        x[i] ^= 0x01;
        x
    };
    let neg = |b: &mut Builder,
               name: &str,
               d: &str,
               sealed: Vec<u8>,
               scope: BTreeMap<String, String>,
               pk: Option<&str>,
               expect: &str| {
        b.value(name, d, scope, pk, sealed, None, expect);
    };
    neg(b, "not_sealed_empty", "An empty input.", Vec::new(), scope.clone(), Some("42"), "NotSealed");
    neg(
        b,
        "not_sealed_self_contained_tag",
        "First byte 0xE5: a self-contained field envelope (§5), not this form.",
        [&[0xE5][..], &base[1..]].concat(),
        scope.clone(),
        Some("42"),
        "NotSealed",
    );
    neg(
        b,
        "not_sealed_text_form",
        "The text form's bytes (`esk1:...`) instead of the envelope.",
        b"esk1:5lBRUlNUVVZXWFlaW1xdXl8".to_vec(),
        scope.clone(),
        Some("42"),
        "NotSealed",
    );
    neg(
        b,
        "unsupported_version_e7",
        "First byte 0xE7: a later version of this form.",
        [&[0xE7][..], &base[1..]].concat(),
        scope.clone(),
        Some("42"),
        "UnsupportedVersion",
    );
    neg(
        b,
        "truncated_28_bytes",
        "28 bytes: shorter than tag byte, key id, counter and tag.",
        base[..28].to_vec(),
        scope.clone(),
        Some("42"),
        "Truncated",
    );
    neg(
        b,
        "truncated_header",
        "The tag byte and half a key id.",
        base[..5].to_vec(),
        scope.clone(),
        Some("42"),
        "Truncated",
    );
    neg(
        b,
        "commitment_mismatch_key_id_bit_flipped",
        "Bit 0 of key id byte 0 (offset 1) flipped: the value names another data key than the one given \
         (through a vault, the lookup finds no such key).",
        flip(1),
        scope.clone(),
        Some("42"),
        "CommitmentMismatch",
    );
    for (name, off, what) in
        [("counter", 12, "nonce counter"), ("ciphertext", 13, "ciphertext"), ("tag", base.len() - 1, "tag")]
    {
        neg(
            b,
            &format!("value_tampered_{name}_bit_flipped"),
            &format!("Bit 0 of the {what} (offset {off}) flipped."),
            flip(off),
            scope.clone(),
            Some("42"),
            "ValueTampered",
        );
    }
    neg(
        b,
        "value_tampered_appended_byte",
        "One byte appended: the tag is read from the wrong place.",
        [&base[..], &[0][..]].concat(),
        scope.clone(),
        Some("42"),
        "ValueTampered",
    );
    neg(
        b,
        "value_tampered_last_byte_removed",
        "The last byte removed.",
        base[..base.len() - 1].to_vec(),
        scope.clone(),
        Some("42"),
        "ValueTampered",
    );
    neg(
        b,
        "value_tampered_other_row",
        "Opened as row \"43\" (a value copied to another row).",
        base.clone(),
        scope.clone(),
        Some("43"),
        "ValueTampered",
    );
    neg(
        b,
        "value_tampered_no_row",
        "Opened without a row key: row 0x00 instead of \"42\".",
        base.clone(),
        scope.clone(),
        None,
        "ValueTampered",
    );
    neg(
        b,
        "value_tampered_empty_row",
        "Opened with row key \"\" instead of \"42\".",
        base.clone(),
        scope.clone(),
        Some(""),
        "ValueTampered",
    );
    let mut other_col = scope.clone();
    other_col.insert("column".into(), "phone".into());
    neg(
        b,
        "value_tampered_other_column",
        "Opened with the scope of column `phone`: another value key.",
        base.clone(),
        other_col,
        Some("42"),
        "ValueTampered",
    );
    let mut other_app = scope.clone();
    other_app.insert("app".into(), "other".into());
    neg(
        b,
        "value_tampered_other_base_context",
        "Opened under another base context: another value key.",
        base.clone(),
        other_app,
        Some("42"),
        "ValueTampered",
    );
    let mut wrong_key = base_vector(Kind::Value, "Opened with the wrong data key (80 81 ... 9f).".into());
    wrong_key.data_key = seq::<32>(0x80).to_vec();
    wrong_key.context = scope.clone();
    wrong_key.pk = Some("42".into());
    wrong_key.sealed = Some(base.clone());
    wrong_key.expect = "ValueTampered".into();
    b.push(Kind::Value, "value_tampered_wrong_data_key", wrong_key);
    neg(
        b,
        "limit_row_key_1025_bytes",
        "A row key of 1025 bytes: over the bound of 1024.",
        base,
        scope,
        Some(&"k".repeat(1025)),
        "LimitExceeded",
    );
}

fn index_cases(b: &mut Builder) {
    let mut push = |name: &str, d: &str, iname: &str, def: &str, generation: u32, fields: &[&[u8]], expect: &str| {
        let mut v = base_vector(Kind::Index, d.to_string());
        v.name = Some(iname.into());
        v.definition = Some(def.into());
        v.generation = Some(generation);
        v.fields = fields.iter().map(hex::encode).collect();
        v.expect = expect.into();
        if expect == EXPECT_OK {
            // Invariant: the fixed definitions parse and the fields match them.
            let d = IndexDef::parse(iname, def).expect("fixed definition");
            let k = IndexKey::derive(&DataKey::from_bytes(seq(DK)), KeyId(seq(KEY_ID)), generation);
            v.sealed = Some(k.term(&d, &d.input(fields).expect("fixed fields")).into_bytes());
        }
        b.push(Kind::Index, name, v);
    };
    let email = b"Alice@Example.COM ";
    for bits in [1u16, 7, 8, 16, 32, 256] {
        push(
            &format!("ok_email_lowercase_{bits}_bits"),
            &format!("E-mail, lowercase normalization, {bits} bits: 1 + {} bytes.", usize::from(bits).div_ceil(8)),
            "email_idx",
            &format!("v1;bits={bits};fields=email:lowercase"),
            1,
            &[email],
            EXPECT_OK,
        );
    }
    push(
        "ok_email_normalised_alike",
        "\" alice@example.com\" gives the same 16-bit term as \"Alice@Example.COM \".",
        "email_idx",
        "v1;bits=16;fields=email:lowercase",
        1,
        &[b" alice@example.com"],
        EXPECT_OK,
    );
    push(
        "ok_phone_digits",
        "Digits normalization: \"+1 (555) 010-9999\" is indexed as \"15550109999\".",
        "phone_idx",
        "v1;bits=24;fields=phone:digits",
        1,
        &[b"+1 (555) 010-9999"],
        EXPECT_OK,
    );
    push(
        "ok_none_normalization_bytes",
        "No normalization, non-UTF-8 bytes.",
        "blob_idx",
        "v1;bits=32;fields=blob:none",
        1,
        &[&[0xff, 0x00, 0x80]],
        EXPECT_OK,
    );
    push(
        "ok_compound_two_fields",
        "A compound index: (\"Doe\", 19700101 as i64 big-endian), length-prefixed, so (\"ab\",\"c\") and (\"a\",\"bc\") differ.",
        "name_dob_idx",
        "v1;bits=20;fields=last_name:lowercase,dob:none",
        1,
        &[b"Doe", &19_700_101i64.to_be_bytes()],
        EXPECT_OK,
    );
    push(
        "ok_generation_258_tag_2",
        "Generation 258: the tag byte is 258 mod 256 = 2.",
        "email_idx",
        "v1;bits=16;fields=email:lowercase",
        258,
        &[email],
        EXPECT_OK,
    );
    push(
        "invalid_input_lowercase_not_utf8",
        "The lowercase normalization refuses bytes that are not UTF-8.",
        "email_idx",
        "v1;bits=16;fields=email:lowercase",
        1,
        &[&[0xff, 0xfe]],
        "InvalidInput",
    );
    push(
        "invalid_input_wrong_field_count",
        "Two values for a one-field index.",
        "email_idx",
        "v1;bits=16;fields=email:lowercase",
        1,
        &[b"a", b"b"],
        "InvalidInput",
    );
}

fn vault_cases(b: &mut Builder) {
    let base = map(&[("app", "vectors")]);
    let entry = WrappedKey {
        backend: "test".into(),
        key_id: "test-key".into(),
        key_version: "1".into(),
        blob: seq::<48>(0xb0).to_vec(),
    };
    let record = |kind: &str, name: &str, generation: u32, definition: Option<&str>| {
        let mut v = base_vector(Kind::Vault, String::new());
        v.context = base.clone();
        v.entry_kind = Some(kind.into());
        v.table = Some("users".into());
        v.name = Some(name.into());
        v.generation = Some(generation);
        v.definition = definition.map(str::to_string);
        v
    };
    let seal = |v: &KeyrefVector, pt: &[u8]| {
        // Invariant: fixed record fields make a valid context.
        let ctx = v.record().and_then(|r| r.stored_context().map_err(|e| e.to_string())).expect("fixed record");
        let fk = FieldKey::new(Engine::default(), &DataKey::from_bytes(seq(DK)), seq::<16>(0x60), &entry)
            .expect("fixed entry");
        fk.seal(0, pt, &ctx).expect("fixed inputs seal")
    };
    let mut data = record("data", "email", 0, None);
    data.description =
        "The vault entry of a data key of users.email: a field envelope (§5) of an empty value under the \
                        context app=vectors plus keyvault:id/kind/table/name/generation."
            .into();
    let data_env = seal(&data, b"");
    data.sealed = Some(data_env.clone());
    data.plaintext = Some(Vec::new());
    b.push(Kind::Vault, "ok_data_key_entry", data.clone());

    let mut idx = record("index", "email_idx", 3, Some("v1;bits=16;fields=email:lowercase"));
    idx.description = "The vault entry of generation 3 of index users.email_idx: its definition is in the context \
                       (keyvault:index)."
        .into();
    idx.sealed = Some(seal(&idx, b""));
    idx.plaintext = Some(Vec::new());
    b.push(Kind::Vault, "ok_index_key_entry", idx.clone());

    let moved = |b: &mut Builder, name: &str, d: &str, f: &dyn Fn(&mut KeyrefVector)| {
        let mut v = data.clone();
        f(&mut v);
        v.description = d.into();
        v.plaintext = None;
        v.expect = "ValueTampered".into();
        b.push(Kind::Vault, name, v);
    };
    moved(b, "value_tampered_other_key_id", "The entry of key 5051…57 presented as key 5151…57.", &|v| {
        v.key_id[0] ^= 1
    });
    moved(b, "value_tampered_other_column", "The entry presented as a key of users.phone.", &|v| {
        v.name = Some("phone".into())
    });
    moved(b, "value_tampered_other_kind", "The data-key entry presented as an index key.", &|v| {
        v.entry_kind = Some("index".into())
    });
    moved(b, "value_tampered_other_base_context", "The entry opened under the base context app=other.", &|v| {
        v.context.insert("app".into(), "other".into());
    });
    let mut v = idx.clone();
    v.generation = Some(4);
    v.description = "The generation-3 index entry presented as generation 4.".into();
    v.plaintext = None;
    v.expect = "ValueTampered".into();
    b.push(Kind::Vault, "value_tampered_other_generation", v);
    let mut v = idx;
    v.definition = Some("v1;bits=8;fields=email:lowercase".into());
    v.description = "The index entry presented with another definition (8 bits instead of 16).".into();
    v.plaintext = None;
    v.expect = "ValueTampered".into();
    b.push(Kind::Vault, "value_tampered_other_definition", v);
}

/// Every key-reference vector, in a fixed order.
///
/// # Panics
/// If two cases share a name, or a fixed input is rejected: both are bugs in this generator.
pub fn cases() -> Vec<Case> {
    let mut b = Builder::default();
    value_cases(&mut b);
    index_cases(&mut b);
    vault_cases(&mut b);
    b.cases
}

/// Checks every case on every engine (the generator writes nothing it cannot verify).
///
/// # Errors
/// One line per failing case and engine.
pub fn verify(cases: &[Case]) -> Result<(), Vec<String>> {
    let mut errors = Vec::new();
    for c in cases {
        for &engine in Engine::ALL {
            if let Err(e) = c.vector.check(engine) {
                errors.push(format!("{} on {}: {e}", c.path, engine.name()));
            }
        }
    }
    if errors.is_empty() { Ok(()) } else { Err(errors) }
}

/// The default folder: `testdata/vectors/keyref`.
pub fn default_dir() -> std::path::PathBuf {
    crate::default_dir().join("keyref")
}

/// Reads every `*.json` under `dir/{value,index,vault}`, sorted by path.
///
/// # Errors
/// I/O and JSON errors (naming the file).
pub fn load_dir(dir: &Path) -> io::Result<Vec<(String, KeyrefVector)>> {
    let mut out = Vec::new();
    for path in crate::json_files_in(dir, &Kind::ALL.map(Kind::dir_name))? {
        let text = fs::read_to_string(&path)?;
        let v: KeyrefVector = serde_json::from_str(&text)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("{}: {e}", path.display())))?;
        out.push((crate::generate::relative(dir, &path), v));
    }
    Ok(out)
}

/// Compares the generated cases with the files under `dir`.
///
/// # Errors
/// I/O and JSON errors.
pub fn diff_dir(dir: &Path, cases: &[Case]) -> io::Result<crate::DirDiff> {
    let on_disk = load_dir(dir)?.into_iter().map(|(p, _)| p).collect();
    crate::generate::diff_texts(dir, cases.iter().map(|c| (c.path.as_str(), c.vector.to_json())), on_disk)
}

/// What `gen-vectors` does for the key-reference folder: verify, then check (`check`) or write
/// the missing files (and, with `overwrite`, the changed ones). Returns a one-line report.
///
/// # Errors
/// A description of what failed or differs.
pub fn generate_into(dir: &Path, check: bool, overwrite: bool) -> Result<String, String> {
    let cases = cases();
    verify(&cases).map_err(|e| format!("generated key-reference vectors fail verification:\n{}", e.join("\n")))?;
    let diff = diff_dir(dir, &cases).map_err(|e| format!("{}: {e}", dir.display()))?;
    if check {
        return if diff.is_clean() {
            Ok(format!("{} key-reference vectors match {}", diff.same, dir.display()))
        } else {
            Err(format!("key-reference vectors on disk differ from the generator: {diff}"))
        };
    }
    if !diff.changed.is_empty() && !overwrite {
        return Err(format!(
            "frozen key-reference vectors would change ({}): the format changed? Rerun with --overwrite only if that is intended",
            diff.changed.join(", ")
        ));
    }
    let mut written = 0;
    for c in cases.iter().filter(|c| diff.missing.contains(&c.path) || diff.changed.contains(&c.path)) {
        let path = dir.join(&c.path);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).map_err(|e| format!("{}: {e}", parent.display()))?;
        }
        fs::write(&path, c.vector.to_json()).map_err(|e| format!("{}: {e}", path.display()))?;
        written += 1;
    }
    Ok(format!("{written} key-reference vectors written, {} unchanged in {}", diff.same, dir.display()))
}
