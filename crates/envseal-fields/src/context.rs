//! The encryption contexts of sealed values (FORMAT.md §11.4): the application's base context
//! plus `table` and `column` (the **scope**, bound through the value key's derivation) and,
//! where the record has one, the row's primary key (bound as associated data).

use envseal_core::EncryptionContext;

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

/// The scope context of a column: `base` ∪ {`table`, `column`} (FORMAT.md §11.4). Its
/// canonical encoding goes into the derivation of the column's value keys.
///
/// # Errors
/// [`Error::Schema`] for a base context using reserved keys, or invalid names.
pub fn scope_context(base: &EncryptionContext, table: &str, column: &str) -> Result<EncryptionContext, Error> {
    check_base(base)?;
    check_name("table", table, true)?;
    check_name("column", column, false)?;
    let mut ctx = base.clone();
    ctx.insert(TABLE_KEY, table)?;
    ctx.insert(COLUMN_KEY, column)?;
    Ok(ctx)
}

/// The full context of one value as an [`EncryptionContext`]: the scope plus `pk`. The
/// self-contained form (FORMAT.md §5) binds this whole context as its AAD and KMS context.
///
/// # Errors
/// As [`scope_context`].
pub fn value_context(
    base: &EncryptionContext,
    table: &str,
    column: &str,
    pk: Option<&str>,
) -> Result<EncryptionContext, Error> {
    let mut ctx = scope_context(base, table, column)?;
    if let Some(pk) = pk {
        ctx.insert(PK_KEY, pk)?;
    }
    Ok(ctx)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scope_and_value_contexts() {
        let base = EncryptionContext::from_pairs([("app", "billing")]).unwrap();
        let scope = scope_context(&base, "users", "email").unwrap();
        assert_eq!(scope.get("table"), Some("users"));
        assert_eq!(scope.get("column"), Some("email"));
        let v = value_context(&base, "users", "email", Some("42")).unwrap();
        assert_eq!(v.get("pk"), Some("42"));
        assert!(v.contains_all(&scope));
    }

    #[test]
    fn reserved_and_invalid_names() {
        let bad = EncryptionContext::from_pairs([("table", "x")]).unwrap();
        assert!(scope_context(&bad, "users", "email").is_err());
        let bad = EncryptionContext::from_pairs([("keyvault:id", "x")]).unwrap();
        assert!(check_base(&bad).is_err());
        let none = EncryptionContext::new();
        assert!(scope_context(&none, "users;drop", "email").is_err());
        assert!(scope_context(&none, "public.users", "email").is_ok());
        assert!(scope_context(&none, "users", "public.email").is_err());
        assert!(check_name("column", "1abc", false).is_err());
        assert!(check_name("column", "", false).is_err());
        assert!(value_context(&none, "t", "c", Some(&"x".repeat(1025))).is_err());
    }
}
