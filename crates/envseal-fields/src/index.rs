//! Blind indexes (FORMAT.md §11.7): searchable equality over sealed values.
//!
//! A blind index stores, next to the sealed value, a short keyed hash of its normalised
//! plaintext:
//!
//! ```text
//! index_key = HKDF-SHA-512(salt = key_id, IKM = index data key, info = "envseal/v1/keyref/blind-index-key", L = 32)
//! input     = u16(n) || (u32(len(field_i)) || normalize_i(field_i))*      # n ≥ 1 fields, in definition order
//! term      = u8(generation mod 256) || truncate(HMAC-SHA-256(index_key, input), bits)
//! ```
//!
//! Truncation keeps the first `⌈bits / 8⌉` bytes of the MAC with the unused low bits of the
//! last byte cleared, so about one in `2^bits` unrelated values shares a term: a query returns
//! every match plus false positives, which the caller drops after opening the rows
//! ([`IndexQuery::matches`]). What the index leaks is in `docs/FIELDS.md`: equality of values
//! (exact, up to the false positives) and therefore their frequencies — nothing else.
//!
//! The leading byte names the index key generation, so that during an index-key rotation a
//! query can ask for the term of every active generation, and a rotation job can find rows still
//! indexed under an old one.

use std::marker::PhantomData;

use envseal_core::DataKey;
use hmac::{KeyInit, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use crate::error::Error;
use crate::keyref::{KeyId, derive32};
use crate::value::IndexTerm;

/// HKDF label of an index key.
pub const LABEL_INDEX_KEY: &[u8] = b"envseal/v1/keyref/blind-index-key";
/// Fewest bits an index may keep.
pub const MIN_BITS: u16 = 1;
/// Most bits an index may keep (the whole MAC).
pub const MAX_BITS: u16 = 256;
/// Most fields in one (compound) index.
pub const MAX_FIELDS: usize = 16;

/// How a field's plaintext is normalised before it is indexed (FORMAT.md §11.7). The
/// plaintext is the field's encoded bytes ([`crate::FieldValue`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Normalize {
    /// The bytes as they are.
    None,
    /// UTF-8 text, leading and trailing white space removed, Unicode lowercase (for e-mail
    /// addresses, names).
    Lowercase,
    /// Only the ASCII digits `0-9`, in order (for phone numbers, national ids).
    Digits,
}

impl Normalize {
    /// `none`, `lowercase` or `digits`.
    pub fn as_str(self) -> &'static str {
        match self {
            Normalize::None => "none",
            Normalize::Lowercase => "lowercase",
            Normalize::Digits => "digits",
        }
    }

    /// Parses [`Normalize::as_str`].
    ///
    /// # Errors
    /// [`Error::Schema`] for another name.
    pub fn parse(s: &str) -> Result<Self, Error> {
        match s {
            "none" => Ok(Normalize::None),
            "lowercase" => Ok(Normalize::Lowercase),
            "digits" => Ok(Normalize::Digits),
            _ => Err(Error::Schema(format!("unknown normalization {s:?} (none, lowercase, digits)"))),
        }
    }

    /// Normalises `bytes`.
    ///
    /// # Errors
    /// [`Error::Schema`] when `Lowercase` meets bytes that are not UTF-8.
    pub fn apply(self, bytes: &[u8]) -> Result<Zeroizing<Vec<u8>>, Error> {
        Ok(Zeroizing::new(match self {
            Normalize::None => bytes.to_vec(),
            Normalize::Lowercase => {
                let s = std::str::from_utf8(bytes)
                    .map_err(|_| Error::Schema("the `lowercase` index normalization needs UTF-8 text".into()))?;
                s.trim().to_lowercase().into_bytes()
            }
            Normalize::Digits => bytes.iter().copied().filter(u8::is_ascii_digit).collect(),
        }))
    }
}

/// One field of an index.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct IndexField {
    /// The column whose plaintext is indexed.
    pub column: String,
    /// Its normalization.
    pub normalize: Normalize,
}

/// The definition of a blind index. It is stored with the index key in the key vault and bound
/// to it, so that every writer and reader computes the same terms: a definition that differs
/// from the stored one is refused ([`Error::Schema`]).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct IndexDef {
    /// Index name (also the column that stores the terms, by convention).
    pub name: String,
    /// Fields, in order.
    pub fields: Vec<IndexField>,
    /// Bits kept of the MAC.
    pub bits: u16,
}

impl IndexDef {
    /// An index named `name` over `fields` keeping `bits` bits.
    ///
    /// # Errors
    /// [`Error::Schema`] for invalid names, no or too many fields, or bits out of
    /// [`MIN_BITS`]..=[`MAX_BITS`].
    pub fn new<I, S>(name: &str, fields: I, bits: u16) -> Result<Self, Error>
    where
        I: IntoIterator<Item = (S, Normalize)>,
        S: Into<String>,
    {
        crate::context::check_name("index", name, false)?;
        let fields: Vec<IndexField> =
            fields.into_iter().map(|(c, normalize)| IndexField { column: c.into(), normalize }).collect();
        if fields.is_empty() || fields.len() > MAX_FIELDS {
            return Err(Error::Schema(format!("index {name}: 1 to {MAX_FIELDS} fields")));
        }
        for f in &fields {
            crate::context::check_name("column", &f.column, false)?;
        }
        if !(MIN_BITS..=MAX_BITS).contains(&bits) {
            return Err(Error::Schema(format!("index {name}: bits must be {MIN_BITS} to {MAX_BITS}")));
        }
        Ok(Self { name: name.to_string(), fields, bits })
    }

    /// The canonical text stored in the key vault: `v1;bits=B;fields=col:norm,col:norm`.
    pub fn encode(&self) -> String {
        let fields: Vec<String> =
            self.fields.iter().map(|f| format!("{}:{}", f.column, f.normalize.as_str())).collect();
        format!("v1;bits={};fields={}", self.bits, fields.join(","))
    }

    /// Parses [`IndexDef::encode`]'s text for the index `name`.
    ///
    /// # Errors
    /// [`Error::Schema`] for anything that is not exactly such a text.
    pub fn parse(name: &str, text: &str) -> Result<Self, Error> {
        let bad = || Error::Schema(format!("index {name}: unreadable definition in the key vault"));
        let rest = text.strip_prefix("v1;bits=").ok_or_else(bad)?;
        let (bits, fields) = rest.split_once(";fields=").ok_or_else(bad)?;
        let bits: u16 = bits.parse().map_err(|_| bad())?;
        let mut parsed = Vec::new();
        for f in fields.split(',') {
            let (c, n) = f.split_once(':').ok_or_else(bad)?;
            parsed.push((c.to_string(), Normalize::parse(n)?));
        }
        let def = Self::new(name, parsed, bits)?;
        if def.encode() != text {
            return Err(bad());
        }
        Ok(def)
    }

    /// Length of a term: the generation byte and `⌈bits / 8⌉` bytes.
    pub fn term_len(&self) -> usize {
        1 + usize::from(self.bits).div_ceil(8)
    }

    /// The chance that an unrelated value has a given term: `2^-bits`.
    pub fn false_positive_rate(&self) -> f64 {
        0.5f64.powi(i32::from(self.bits))
    }

    /// The normalised index input of one record's field plaintexts (FORMAT.md §11.7).
    ///
    /// # Errors
    /// [`Error::Schema`] for a wrong number of fields or a failed normalization.
    pub fn input(&self, fields: &[&[u8]]) -> Result<Zeroizing<Vec<u8>>, Error> {
        if fields.len() != self.fields.len() {
            return Err(Error::Schema(format!(
                "index {}: {} field(s) given, the definition has {}",
                self.name,
                fields.len(),
                self.fields.len()
            )));
        }
        let mut out = Zeroizing::new(Vec::with_capacity(2 + fields.iter().map(|f| 4 + f.len()).sum::<usize>()));
        out.extend_from_slice(&(fields.len() as u16).to_be_bytes());
        for (f, def) in fields.iter().zip(&self.fields) {
            let n = def.normalize.apply(f)?;
            let len = u32::try_from(n.len()).map_err(|_| Error::Schema("indexed value over 4 GiB".into()))?;
            out.extend_from_slice(&len.to_be_bytes());
            out.extend_from_slice(&n);
        }
        Ok(out)
    }
}

/// The key of one index generation.
pub struct IndexKey {
    generation: u32,
    id: KeyId,
    mac: hmac::Hmac<Sha256>,
}

impl std::fmt::Debug for IndexKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IndexKey").field("generation", &self.generation).field("id", &self.id).finish_non_exhaustive()
    }
}

impl IndexKey {
    /// Derives the index key of generation `generation` from its vault entry's data key and id.
    pub fn derive(data_key: &DataKey, id: KeyId, generation: u32) -> Self {
        let k = derive32(data_key, &id.0, LABEL_INDEX_KEY);
        // Invariant: HMAC accepts keys of any length.
        let mac = <hmac::Hmac<Sha256> as KeyInit>::new_from_slice(&k[..]).expect("HMAC takes any key length");
        Self { generation, id, mac }
    }

    /// The generation.
    pub fn generation(&self) -> u32 {
        self.generation
    }

    /// The vault id of this generation's key.
    pub fn id(&self) -> KeyId {
        self.id
    }

    /// The term of an index input ([`IndexDef::input`]) under this key.
    pub fn term(&self, def: &IndexDef, input: &[u8]) -> IndexTerm {
        let mut m = self.mac.clone();
        m.update(input);
        let mac: [u8; 32] = m.finalize().into_bytes().into();
        let n = usize::from(def.bits).div_ceil(8);
        let mut out = Vec::with_capacity(1 + n);
        out.push(generation_tag(self.generation));
        out.extend_from_slice(&mac[..n]);
        let rem = def.bits % 8;
        if rem != 0 {
            // Keep the top `rem` bits of the last byte.
            let last = out.len() - 1;
            out[last] &= 0xFFu8 << (8 - rem);
        }
        IndexTerm::from_bytes(out)
    }
}

/// The leading byte of a term under `generation`.
pub fn generation_tag(generation: u32) -> u8 {
    (generation % 256) as u8
}

/// A prepared equality query over a blind index: the terms to look up (one per active
/// generation) and the normalised input, to drop false positives after opening the rows.
pub struct IndexQuery<R> {
    def: IndexDef,
    terms: Vec<IndexTerm>,
    input: Zeroizing<Vec<u8>>,
    extract: fn(&R) -> Vec<Zeroizing<Vec<u8>>>,
    _record: PhantomData<fn(&R)>,
}

impl<R> std::fmt::Debug for IndexQuery<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IndexQuery")
            .field("index", &self.def.name)
            .field("terms", &self.terms.len())
            .finish_non_exhaustive()
    }
}

impl<R> IndexQuery<R> {
    /// Used by [`crate::Index::query`] and the derive.
    pub(crate) fn new(
        def: IndexDef,
        terms: Vec<IndexTerm>,
        input: Zeroizing<Vec<u8>>,
        extract: fn(&R) -> Vec<Zeroizing<Vec<u8>>>,
    ) -> Self {
        Self { def, terms, input, extract, _record: PhantomData }
    }

    /// The terms to match: bind them as an array (`WHERE email_idx = ANY($1)` in PostgreSQL,
    /// `IN (?, ?)` in SQLite). One per active index generation: usually one.
    pub fn terms(&self) -> &[IndexTerm] {
        &self.terms
    }

    /// Whether an opened record really has the queried value (a term matches about one
    /// unrelated value in `2^bits`). Constant-time in the compared bytes.
    ///
    /// # Errors
    /// A normalization failure of the record's fields.
    pub fn matches(&self, record: &R) -> Result<bool, Error> {
        let fields = (self.extract)(record);
        let refs: Vec<&[u8]> = fields.iter().map(|f| f.as_slice()).collect();
        let input = self.def.input(&refs)?;
        Ok(input.len() == self.input.len() && bool::from(input.ct_eq(&self.input)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn def(bits: u16) -> IndexDef {
        IndexDef::new("email_idx", [("email", Normalize::Lowercase)], bits).unwrap()
    }

    #[test]
    fn definition_text_round_trips_and_is_strict() {
        let d = IndexDef::new("name_dob", [("last_name", Normalize::Lowercase), ("dob", Normalize::None)], 16).unwrap();
        assert_eq!(d.encode(), "v1;bits=16;fields=last_name:lowercase,dob:none");
        assert_eq!(IndexDef::parse("name_dob", &d.encode()).unwrap(), d);
        for bad in [
            "v1;bits=016;fields=a:none",
            "v2;bits=8;fields=a:none",
            "v1;bits=8;fields=a:upper",
            "v1;bits=0;fields=a:none",
            "v1;bits=8;fields=",
        ] {
            assert!(IndexDef::parse("x", bad).is_err(), "{bad}");
        }
        assert!(IndexDef::new("x", [("a", Normalize::None)], 257).is_err());
        assert!(IndexDef::new("x", Vec::<(String, Normalize)>::new(), 8).is_err());
        assert_eq!(def(32).term_len(), 5);
        assert_eq!(def(1).term_len(), 2);
        assert_eq!(def(16).false_positive_rate(), 1.0 / 65536.0);
    }

    #[test]
    fn normalizations() {
        assert_eq!(&*Normalize::Lowercase.apply(" Alice@Example.COM\n".as_bytes()).unwrap(), b"alice@example.com");
        assert_eq!(&*Normalize::Digits.apply(b"+1 (555) 010-9999").unwrap(), b"15550109999");
        assert_eq!(&*Normalize::None.apply(b" A ").unwrap(), b" A ");
        assert!(Normalize::Lowercase.apply(&[0xff]).is_err());
    }

    #[test]
    fn terms_truncate_tag_and_separate_fields() {
        let k = IndexKey::derive(&DataKey::from_bytes([9; 32]), KeyId([1; 8]), 258);
        let d = def(12);
        let t = k.term(&d, &d.input(&[b"a@b.c"]).unwrap());
        assert_eq!(t.as_bytes().len(), 3);
        assert_eq!(t.as_bytes()[0], 2, "generation 258 mod 256");
        assert_eq!(t.as_bytes()[2] & 0x0f, 0, "low 4 bits cleared");
        assert_eq!(t, k.term(&d, &d.input(&[b" A@B.C "]).unwrap()));
        // Compound inputs are length-prefixed: ("ab", "c") and ("a", "bc") differ.
        let c = IndexDef::new("c", [("x", Normalize::None), ("y", Normalize::None)], 256).unwrap();
        assert_ne!(k.term(&c, &c.input(&[b"ab", b"c"]).unwrap()), k.term(&c, &c.input(&[b"a", b"bc"]).unwrap()));
        assert!(c.input(&[b"ab"]).is_err());
        // Another key, another term (at 256 bits a collision would be a bug).
        let k2 = IndexKey::derive(&DataKey::from_bytes([9; 32]), KeyId([2; 8]), 258);
        assert_ne!(k.term(&c, &c.input(&[b"ab", b"c"]).unwrap()), k2.term(&c, &c.input(&[b"ab", b"c"]).unwrap()));
    }

    #[test]
    fn false_positive_rate_is_about_two_to_the_minus_bits() {
        // 8 bits: 20,000 random-ish values against one term; expect ~78 collisions.
        let k = IndexKey::derive(&DataKey::from_bytes([5; 32]), KeyId([3; 8]), 1);
        let d = IndexDef::new("i", [("v", Normalize::None)], 8).unwrap();
        let target = k.term(&d, &d.input(&[b"needle"]).unwrap());
        let hits =
            (0..20_000u32).filter(|i| k.term(&d, &d.input(&[format!("hay{i}").as_bytes()]).unwrap()) == target).count();
        assert!((40..=130).contains(&hits), "{hits} collisions of 20000 at 8 bits");
    }
}
