#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod cipher;
pub mod context;
pub mod error;
pub mod index;
pub mod keyref;
#[cfg(feature = "sqlx-postgres")]
pub mod pg;
pub mod record;
pub mod rotate;
#[cfg(any(feature = "rusqlite", feature = "sqlx-postgres"))]
mod sql;
#[cfg(feature = "rusqlite")]
pub mod sqlite;
pub mod value;
pub mod vault;

pub use cipher::{Column, FieldCipher, FieldCipherBuilder, FieldStats, Form, Index};
pub use envseal_core::{CachePolicy, EncryptionContext};
#[cfg(feature = "derive")]
pub use envseal_fields_derive::Record;
pub use error::{Error, VaultError};
pub use index::{IndexDef, IndexQuery, Normalize};
pub use keyref::KeyId;
pub use record::Record;
pub use value::{FieldValue, IndexTerm, Json, RowKey, Sealed};
pub use vault::{EntryState, KeyKind, KeyVault, VaultRecord};

/// serde, for the code `#[derive(Record)]` generates.
#[doc(hidden)]
pub use serde;
