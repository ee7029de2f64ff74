//! Column values: [`Sealed`] (a sealed value, `BYTEA`/`BLOB`), [`IndexTerm`] (a blind-index
//! term), [`FieldValue`] (how a Rust type becomes plaintext bytes) and [`RowKey`] (how a primary
//! key enters the context).

use std::borrow::Cow;
use std::fmt;

use envseal_core::SecretBytes;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::keyref;

/// A sealed value as stored in a column: a key-reference envelope (FORMAT.md §11) or a
/// self-contained field envelope (§5). Not secret; `Debug` shows its length only.
///
/// With serde it serializes as bytes in binary formats and as its text form (`esk1:...` or
/// `esf1:...`) in human-readable ones (JSON, YAML).
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Sealed(Vec<u8>);

/// `from_bytes`, `as_bytes`, `into_bytes` of a stored byte string.
macro_rules! stored_bytes {
    ($t:ident) => {
        impl $t {
            /// Wraps stored bytes (checked when used).
            pub fn from_bytes(bytes: Vec<u8>) -> Self {
                Self(bytes)
            }

            /// The bytes.
            pub fn as_bytes(&self) -> &[u8] {
                &self.0
            }

            /// The bytes, owned.
            pub fn into_bytes(self) -> Vec<u8> {
                self.0
            }
        }
    };
}

stored_bytes!(Sealed);
stored_bytes!(IndexTerm);

impl Sealed {
    /// The text form: `esk1:` + base64url for the key-reference form, `esf1:` + base64url for
    /// the self-contained one.
    pub fn to_text(&self) -> String {
        if self.0.first() == Some(&envseal_core::envelope::TAG) {
            envseal_core::envelope::to_text(&self.0)
        } else {
            keyref::to_text(&self.0)
        }
    }

    /// Parses either text form.
    ///
    /// # Errors
    /// [`crate::Error`] for text that is neither form or not canonical base64url.
    pub fn from_text(text: &str) -> Result<Self, crate::Error> {
        if text.starts_with(envseal_core::envelope::TEXT_PREFIX) {
            Ok(Self(envseal_core::envelope::from_text(text)?))
        } else {
            Ok(Self(keyref::from_text(text)?))
        }
    }
}

impl fmt::Debug for Sealed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Sealed({} bytes)", self.0.len())
    }
}

impl Serialize for Sealed {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() { s.serialize_str(&self.to_text()) } else { s.serialize_bytes(&self.0) }
    }
}

impl<'de> Deserialize<'de> for Sealed {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        if d.is_human_readable() {
            let s = String::deserialize(d)?;
            Sealed::from_text(&s).map_err(serde::de::Error::custom)
        } else {
            Ok(Sealed(serde_bytes_vec(d)?))
        }
    }
}

/// A blind-index term as stored in its column (`BYTEA`/`BLOB`): a generation byte and the
/// truncated MAC (FORMAT.md §11.7). Serializes like [`Sealed`] (bytes, or lowercase hex in
/// human-readable formats).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct IndexTerm(Vec<u8>);

impl IndexTerm {
    /// The generation tag (first byte), if any.
    pub fn generation_tag(&self) -> Option<u8> {
        self.0.first().copied()
    }
}

impl fmt::Debug for IndexTerm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "IndexTerm({})", hex::encode(&self.0))
    }
}

impl Serialize for IndexTerm {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() { s.serialize_str(&hex::encode(&self.0)) } else { s.serialize_bytes(&self.0) }
    }
}

impl<'de> Deserialize<'de> for IndexTerm {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        if d.is_human_readable() {
            let s = String::deserialize(d)?;
            hex::decode(&s).map(IndexTerm).map_err(serde::de::Error::custom)
        } else {
            Ok(IndexTerm(serde_bytes_vec(d)?))
        }
    }
}

fn serde_bytes_vec<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
    struct V;
    impl<'de> serde::de::Visitor<'de> for V {
        type Value = Vec<u8>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("bytes")
        }
        fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<Vec<u8>, E> {
            Ok(v.to_vec())
        }
        fn visit_byte_buf<E: serde::de::Error>(self, v: Vec<u8>) -> Result<Vec<u8>, E> {
            Ok(v)
        }
        fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<u8>, A::Error> {
            let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(4096));
            while let Some(b) = seq.next_element::<u8>()? {
                out.push(b);
            }
            Ok(out)
        }
    }
    d.deserialize_byte_buf(V)
}

/// How a field type becomes plaintext bytes and back. Implemented for `String`, `Vec<u8>`,
/// [`SecretBytes`], `bool`, the integer types (big-endian, fixed width) and [`Json<T>`] (any
/// serde type, as JSON). The encoding is also what blind indexes normalise and hash.
pub trait FieldValue: Sized {
    /// The type's name in decode errors.
    const TYPE_NAME: &'static str;

    /// Appends the plaintext bytes.
    fn encode(&self, out: &mut Vec<u8>);

    /// Decodes plaintext bytes; `None` if they are not a value of this type.
    fn decode(bytes: &[u8]) -> Option<Self>;
}

impl FieldValue for String {
    const TYPE_NAME: &'static str = "UTF-8 text";
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self.as_bytes());
    }
    fn decode(bytes: &[u8]) -> Option<Self> {
        String::from_utf8(bytes.to_vec()).ok()
    }
}

impl FieldValue for Vec<u8> {
    const TYPE_NAME: &'static str = "bytes";
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self);
    }
    fn decode(bytes: &[u8]) -> Option<Self> {
        Some(bytes.to_vec())
    }
}

impl FieldValue for SecretBytes {
    const TYPE_NAME: &'static str = "bytes";
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self.expose_secret());
    }
    fn decode(bytes: &[u8]) -> Option<Self> {
        Some(SecretBytes::copy_from(bytes))
    }
}

impl FieldValue for bool {
    const TYPE_NAME: &'static str = "a boolean (one byte, 0 or 1)";
    fn encode(&self, out: &mut Vec<u8>) {
        out.push(u8::from(*self));
    }
    fn decode(bytes: &[u8]) -> Option<Self> {
        match bytes {
            [0] => Some(false),
            [1] => Some(true),
            _ => None,
        }
    }
}

macro_rules! int_field_value {
    ($($t:ty),*) => {$(
        impl FieldValue for $t {
            const TYPE_NAME: &'static str = concat!(stringify!($t), " (big-endian)");
            fn encode(&self, out: &mut Vec<u8>) {
                out.extend_from_slice(&self.to_be_bytes());
            }
            fn decode(bytes: &[u8]) -> Option<Self> {
                bytes.try_into().ok().map(<$t>::from_be_bytes)
            }
        }
    )*};
}
int_field_value!(i8, i16, i32, i64, i128, u8, u16, u32, u64, u128);

/// Seals any serde type as its JSON text: `#[envseal(encrypt)] address: Json<Address>`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Default)]
pub struct Json<T>(pub T);

impl<T: Serialize + DeserializeOwned> FieldValue for Json<T> {
    const TYPE_NAME: &'static str = "JSON";
    fn encode(&self, out: &mut Vec<u8>) {
        // A type whose Serialize fails (a map with non-string keys) is a programming error that
        // would lose data silently if we stored something else: store `null`, which then fails
        // to decode as T and is reported on open.
        if serde_json::to_writer(&mut *out, &self.0).is_err() {
            out.extend_from_slice(b"null");
        }
    }
    fn decode(bytes: &[u8]) -> Option<Self> {
        serde_json::from_slice(bytes).ok().map(Json)
    }
}

impl<T: Serialize> Serialize for Json<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(s)
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Json<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        T::deserialize(d).map(Json)
    }
}

/// A primary key, as it enters the `pk` entry of a value's context: its canonical text
/// (decimal for integers, the string itself for text). Must equal what the database shows for
/// `pk::text` (PostgreSQL) or `CAST(pk AS TEXT)` (SQLite), so that rotation jobs rebuild it.
pub trait RowKey {
    /// The canonical text.
    fn row_key(&self) -> Cow<'_, str>;
}

impl RowKey for String {
    fn row_key(&self) -> Cow<'_, str> {
        Cow::Borrowed(self)
    }
}

impl RowKey for str {
    fn row_key(&self) -> Cow<'_, str> {
        Cow::Borrowed(self)
    }
}

impl<T: RowKey + ?Sized> RowKey for &T {
    fn row_key(&self) -> Cow<'_, str> {
        (**self).row_key()
    }
}

macro_rules! int_row_key {
    ($($t:ty),*) => {$(
        impl RowKey for $t {
            fn row_key(&self) -> Cow<'_, str> {
                Cow::Owned(self.to_string())
            }
        }
    )*};
}
int_row_key!(i16, i32, i64, u16, u32, u64);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codecs_round_trip() {
        fn rt<T: FieldValue + PartialEq + fmt::Debug>(v: T) {
            let mut b = Vec::new();
            v.encode(&mut b);
            assert_eq!(T::decode(&b), Some(v));
        }
        rt(String::from("ü"));
        rt(vec![0u8, 255]);
        rt(true);
        rt(-5i64);
        rt(u16::MAX);
        rt(Json(vec![1, 2, 3]));
        assert_eq!(String::decode(&[0xff]), None);
        assert_eq!(i32::decode(&[0, 0, 1]), None);
        assert_eq!(bool::decode(&[2]), None);
        assert_eq!(42i64.row_key(), "42");
        assert_eq!("x".row_key(), "x");
    }

    #[test]
    fn serde_text_and_bytes() {
        let s = Sealed::from_bytes(vec![keyref::TAG; 29]);
        let j = serde_json::to_string(&s).unwrap();
        assert!(j.starts_with("\"esk1:"));
        assert_eq!(serde_json::from_str::<Sealed>(&j).unwrap(), s);
        let t = IndexTerm::from_bytes(vec![1, 0xab]);
        assert_eq!(serde_json::to_string(&t).unwrap(), "\"01ab\"");
        assert_eq!(serde_json::from_str::<IndexTerm>("\"01ab\"").unwrap(), t);
        assert_eq!(format!("{s:?}"), "Sealed(29 bytes)");
    }
}
