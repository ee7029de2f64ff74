//! Typed records: `#[derive(Record)]` seals the marked fields of a struct into a companion
//! struct whose sealed fields are [`Sealed`] (`BYTEA`/`BLOB`) and adds a column per blind index.
//!
//! ```
//! use envseal_fields::{Json, Record};
//!
//! #[derive(Record, Clone, Debug, PartialEq)]
//! #[envseal(table = "users")]
//! struct User {
//!     #[envseal(primary_key)]
//!     id: i64,
//!     name: String,
//!     #[envseal(encrypt, index = "email_idx", normalize = "lowercase", bits = 16)]
//!     email: String,
//!     #[envseal(encrypt, index = "phone_idx", normalize = "digits", bits = 16)]
//!     phone: String,
//!     #[envseal(encrypt)]
//!     ssn: Option<String>,
//!     #[envseal(encrypt)]
//!     address: Json<Vec<String>>,
//! }
//!
//! // Generated: `UserSealed { id: i64, name: String, email: Sealed, phone: Sealed,
//! // ssn: Option<Sealed>, address: Sealed, email_idx: IndexTerm, phone_idx: IndexTerm }`
//! // (serde Serialize + Deserialize, Clone, Debug), `impl Record for User`, and the query helpers
//! // `User::email_idx(&cipher, &email)` and `User::phone_idx(&cipher, &phone)`.
//! fn columns(s: &UserSealed) -> (&envseal_fields::Sealed, &envseal_fields::IndexTerm) {
//!     (&s.email, &s.email_idx)
//! }
//! assert_eq!(User::TABLE, "users");
//! ```
//!
//! Attributes:
//!
//! | where | attribute | meaning |
//! | --- | --- | --- |
//! | struct | `table = "users"` | table (or record type) bound into every value's context (required) |
//! | struct | `sealed = "UserRow"` | name of the companion struct (default: the struct's name + `Sealed`) |
//! | struct | `derive(sqlx::FromRow)` | extra derives for the companion struct |
//! | struct | `index(name = "n", fields("a", "b"), bits = 16)` | a compound index (each field's `normalize` applies) |
//! | field | `primary_key` | bound into every value's context as `pk` ([`RowKey`](crate::RowKey)) |
//! | field | `encrypt` | sealed ([`FieldValue`](crate::FieldValue)); `Option<T>` stays `None` (SQL `NULL`) |
//! | field | `index = "email_idx"` | a blind index of this field (column named after the index) |
//! | field | `normalize = "lowercase"` | `none` (default), `lowercase`, `digits` |
//! | field | `bits = 16` | bits of the field's index (default 32) |
//! | field | `column = "e_mail"` | column name in the context (default: the field name) |
//!
//! Index fields must be sealed and not `Option`. Plain fields are copied (`Clone`).

use std::future::Future;

use crate::cipher::FieldCipher;
use crate::error::Error;
use crate::value::FieldValue;

/// A struct with sealed fields (implemented by `#[derive(Record)]`).
pub trait Record: Sized {
    /// The companion struct holding sealed fields and index terms.
    type Sealed;

    /// The table bound into every value's context.
    const TABLE: &'static str;

    /// Seals the marked fields and computes the index terms.
    ///
    /// # Errors
    /// KMS and vault errors when keys must be made or loaded.
    fn seal(&self, cipher: &FieldCipher) -> impl Future<Output = Result<Self::Sealed, Error>> + Send;

    /// Opens the sealed fields.
    ///
    /// # Errors
    /// As [`crate::Column::open_value`].
    fn open(sealed: &Self::Sealed, cipher: &FieldCipher) -> impl Future<Output = Result<Self, Error>> + Send;
}

/// Support code for `#[derive(Record)]`; not a stable API.
#[doc(hidden)]
pub mod __private {
    pub use zeroize::Zeroizing;

    use super::*;

    /// The plaintext bytes of a field.
    pub fn encode<T: FieldValue>(v: &T) -> Zeroizing<Vec<u8>> {
        let mut out = Zeroizing::new(Vec::new());
        v.encode(&mut out);
        out
    }
}
