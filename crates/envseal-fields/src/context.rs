//! The encryption contexts of sealed values (FORMAT.md §11.4): the application's base context
//! plus `table`, `column` and, where the record has one, `pk`.
//!
//! Sealing millions of rows rebuilds the context of every value, so a [`ColumnContext`]
//! precomputes the canonical encoding (FORMAT.md §2.3) around the one entry that changes per
//! row (`pk`) and splices the row's key in: the bytes are exactly
//! `EncryptionContext::canonical_bytes()` of the full context (a test checks this), without a
//! map or an allocation per row.

use envseal_core::EncryptionContext;
use envseal_core::context::MAX_STRING_LEN;

use crate::error::Error;

/// Context key naming the table (or record type).
pub const TABLE_KEY: &str = "table";
/// Context key naming the column (or field).
pub const COLUMN_KEY: &str = "column";
/// Context key holding the row's primary key, in its canonical text form.
pub const PK_KEY: &str = "pk";
/// Prefix of the context keys of key-vault entries (FORMAT.md §11.6).
pub const VAULT_PREFIX: &str = "keyvault:";

/// Checks that an application's base context leaves the keys this crate adds free.
///
/// # Errors
/// [`Error::Schema`] naming the key.
pub fn check_base(base: &EncryptionContext) -> Result<(), Error> {
    for (k, _) in base.iter() {
        if k == TABLE_KEY || k == COLUMN_KEY || k == PK_KEY || k.starts_with(VAULT_PREFIX) {
            return Err(Error::Schema(format!(
                "the base context may not use the key {k:?}: envseal-fields adds `table`, `column`, `pk` and `keyvault:*` itself"
            )));
        }
    }
    Ok(())
}

/// Checks a table, column or index name: 1 to 63 bytes of `[A-Za-z0-9_]`, not starting with a
/// digit, optionally one `schema.` qualifier for tables. Such names need no quoting rules of
/// their own in SQL and never collide in contexts.
///
/// # Errors
/// [`Error::Schema`] naming the problem.
pub fn check_name(what: &str, name: &str, qualified: bool) -> Result<(), Error> {
    let parts: Vec<&str> = if qualified { name.splitn(2, '.').collect() } else { vec![name] };
    let ok = parts.iter().all(|p| {
        !p.is_empty()
            && p.len() <= 63
            && p.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'_')
            && !p.as_bytes()[0].is_ascii_digit()
    });
    if ok {
        Ok(())
    } else {
        Err(Error::Schema(format!(
            "invalid {what} name {name:?}: use 1-63 characters of [A-Za-z0-9_], not starting with a digit"
        )))
    }
}

/// The precomputed context of one column: base ∪ {table, column}, ready to take a row's `pk`.
#[derive(Clone, Debug)]
pub struct ColumnContext {
    /// Entries (encoded) sorting before `pk`.
    before: Vec<u8>,
    /// Entries (encoded) sorting after `pk`.
    after: Vec<u8>,
    /// Number of entries without `pk`.
    count: u16,
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    // Bounds are enforced by EncryptionContext (keys and values ≤ 1024 bytes).
    out.extend_from_slice(&(s.len() as u16).to_be_bytes());
    out.extend_from_slice(s.as_bytes());
}

impl ColumnContext {
    /// The context of `table`.`column` under `base`.
    ///
    /// # Errors
    /// [`Error::Schema`] for a base context using reserved keys, or invalid names.
    pub fn new(base: &EncryptionContext, table: &str, column: &str) -> Result<Self, Error> {
        check_base(base)?;
        check_name("table", table, true)?;
        check_name("column", column, false)?;
        let mut ctx = base.clone();
        ctx.insert(TABLE_KEY, table)?;
        ctx.insert(COLUMN_KEY, column)?;
        if ctx.len() >= envseal_core::context::MAX_USER_ENTRIES {
            return Err(Error::Schema("the base context has too many entries to add `pk`".into()));
        }
        let (mut before, mut after) = (Vec::new(), Vec::new());
        for (k, v) in ctx.iter() {
            let out = if k.as_bytes() < PK_KEY.as_bytes() { &mut before } else { &mut after };
            put_str(out, k);
            put_str(out, v);
        }
        Ok(Self { before, after, count: ctx.len() as u16 })
    }

    /// Appends the canonical encoding of the column context, with `pk` when given.
    ///
    /// # Errors
    /// [`Error::Schema`] if `pk` is longer than 1024 bytes (the context bound).
    pub fn encode_into(&self, pk: Option<&str>, out: &mut Vec<u8>) -> Result<(), Error> {
        match pk {
            None => {
                out.extend_from_slice(&self.count.to_be_bytes());
                out.extend_from_slice(&self.before);
                out.extend_from_slice(&self.after);
            }
            Some(pk) => {
                if pk.len() > MAX_STRING_LEN {
                    return Err(Error::Schema(format!("a primary key is longer than {MAX_STRING_LEN} bytes")));
                }
                out.extend_from_slice(&(self.count + 1).to_be_bytes());
                out.extend_from_slice(&self.before);
                put_str(out, PK_KEY);
                put_str(out, pk);
                out.extend_from_slice(&self.after);
            }
        }
        Ok(())
    }

    /// Length of [`ColumnContext::encode_into`]'s output.
    pub fn encoded_len(&self, pk: Option<&str>) -> usize {
        2 + self.before.len() + self.after.len() + pk.map_or(0, |p| 4 + PK_KEY.len() + p.len())
    }
}

/// The full context of one value as an [`EncryptionContext`] (for the self-contained form and
/// for tests; the hot path uses [`ColumnContext`]).
///
/// # Errors
/// As [`ColumnContext::new`].
pub fn value_context(
    base: &EncryptionContext,
    table: &str,
    column: &str,
    pk: Option<&str>,
) -> Result<EncryptionContext, Error> {
    check_base(base)?;
    let mut ctx = base.clone();
    ctx.insert(TABLE_KEY, table)?;
    ctx.insert(COLUMN_KEY, column)?;
    if let Some(pk) = pk {
        ctx.insert(PK_KEY, pk)?;
    }
    Ok(ctx)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splice_equals_the_canonical_encoding() {
        for base in [
            EncryptionContext::new(),
            EncryptionContext::from_pairs([("app", "billing")]).unwrap(),
            EncryptionContext::from_pairs([("app", "billing"), ("zone", "eu"), ("q", "1"), ("pj", "x")]).unwrap(),
            EncryptionContext::from_pairs([("pl", "1"), ("pkx", "2"), ("p", "3")]).unwrap(),
        ] {
            let cc = ColumnContext::new(&base, "users", "email").unwrap();
            for pk in [None, Some(""), Some("42"), Some("ü-ñ")] {
                let mut got = Vec::new();
                cc.encode_into(pk, &mut got).unwrap();
                let want = value_context(&base, "users", "email", pk).unwrap().canonical_bytes();
                assert_eq!(got, want, "base {base:?} pk {pk:?}");
                assert_eq!(cc.encoded_len(pk), want.len());
            }
        }
    }

    #[test]
    fn reserved_and_invalid_names() {
        let bad = EncryptionContext::from_pairs([("table", "x")]).unwrap();
        assert!(ColumnContext::new(&bad, "users", "email").is_err());
        let bad = EncryptionContext::from_pairs([("keyvault:id", "x")]).unwrap();
        assert!(check_base(&bad).is_err());
        assert!(ColumnContext::new(&EncryptionContext::new(), "users;drop", "email").is_err());
        assert!(ColumnContext::new(&EncryptionContext::new(), "public.users", "email").is_ok());
        assert!(ColumnContext::new(&EncryptionContext::new(), "users", "public.email").is_err());
        assert!(check_name("column", "1abc", false).is_err());
        assert!(check_name("column", "", false).is_err());
        let cc = ColumnContext::new(&EncryptionContext::new(), "t", "c").unwrap();
        assert!(cc.encode_into(Some(&"x".repeat(1025)), &mut Vec::new()).is_err());
    }
}
