//! PostgreSQL through `sqlx` (feature `sqlx-postgres`): sealed values and index terms are
//! `BYTEA` (bind them, decode them, `WHERE email_idx = ANY($1)` with a `Vec<IndexTerm>`); the
//! key vault and the job checkpoints are tables of the application's database.

use async_trait::async_trait;
use sqlx::encode::IsNull;
use sqlx::error::BoxDynError;
use sqlx::postgres::{PgArgumentBuffer, PgHasArrayType, PgPool, PgRow, PgTypeInfo, PgValueRef};
use sqlx::{Decode, Encode, Postgres, Row as _, Type};

use crate::error::{Error, VaultError};
use crate::keyref::KeyId;
use crate::rotate::{Checkpoint, CheckpointStore, Phase, Row, RowStore, RowUpdate};
use crate::sql::{self, VAULT_COLUMNS, VaultRow};
use crate::value::{IndexTerm, Sealed};
use crate::vault::{EntryState, KeyKind, KeyVault, VaultRecord};

fn db(e: sqlx::Error) -> Error {
    Error::Database(e.to_string())
}

fn storage(e: sqlx::Error) -> VaultError {
    // 23505: unique_violation.
    if e.as_database_error().and_then(|d| d.code()).as_deref() == Some("23505") {
        return VaultError::Conflict;
    }
    VaultError::Storage(e.to_string())
}

macro_rules! bytea {
    ($t:ty, $from:expr) => {
        impl Type<Postgres> for $t {
            fn type_info() -> PgTypeInfo {
                <Vec<u8> as Type<Postgres>>::type_info()
            }
            fn compatible(ty: &PgTypeInfo) -> bool {
                <Vec<u8> as Type<Postgres>>::compatible(ty)
            }
        }

        impl PgHasArrayType for $t {
            fn array_type_info() -> PgTypeInfo {
                <Vec<u8> as PgHasArrayType>::array_type_info()
            }
        }

        impl Encode<'_, Postgres> for $t {
            fn encode_by_ref(&self, buf: &mut PgArgumentBuffer) -> Result<IsNull, BoxDynError> {
                <&[u8] as Encode<Postgres>>::encode(self.as_bytes(), buf)
            }
        }

        impl<'r> Decode<'r, Postgres> for $t {
            fn decode(value: PgValueRef<'r>) -> Result<Self, BoxDynError> {
                Ok($from(<Vec<u8> as Decode<Postgres>>::decode(value)?))
            }
        }
    };
}

bytea!(Sealed, Sealed::from_bytes);
bytea!(IndexTerm, IndexTerm::from_bytes);

/// The key vault as a PostgreSQL table (default [`crate::vault::DEFAULT_TABLE`]).
#[derive(Clone)]
pub struct PgVault {
    pool: PgPool,
    table: String,
    quoted: String,
}

impl std::fmt::Debug for PgVault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PgVault({})", self.table)
    }
}

impl PgVault {
    /// The vault in table `table` (optionally `schema.table`).
    ///
    /// # Errors
    /// [`Error::Schema`] for an invalid name.
    pub fn new(pool: PgPool, table: &str) -> Result<Self, Error> {
        Ok(Self { quoted: sql::quote(table)?, pool, table: table.to_string() })
    }

    /// Creates the table and its indexes if missing.
    ///
    /// # Errors
    /// [`Error::Database`].
    pub async fn create_table(&self) -> Result<(), Error> {
        let t = &self.quoted;
        for stmt in [
            format!(
                "CREATE TABLE IF NOT EXISTS {t} (
                    seq BIGINT GENERATED ALWAYS AS IDENTITY UNIQUE,
                    id BYTEA PRIMARY KEY CHECK (octet_length(id) = {id_len}),
                    kind TEXT NOT NULL,
                    table_name TEXT NOT NULL,
                    name TEXT NOT NULL,
                    generation INTEGER NOT NULL,
                    state TEXT NOT NULL,
                    created_at BIGINT NOT NULL,
                    definition TEXT NOT NULL,
                    context BYTEA NOT NULL,
                    envelope BYTEA NOT NULL
                 )",
                id_len = crate::keyref::KEY_ID_LEN
            ),
            format!(
                "CREATE INDEX IF NOT EXISTS {} ON {t} (kind, table_name, name)",
                sql::index_name(&self.table, "scope")
            ),
            format!(
                "CREATE UNIQUE INDEX IF NOT EXISTS {} ON {t} (table_name, name, generation) WHERE kind = 'index'",
                sql::index_name(&self.table, "index_generation")
            ),
        ] {
            sqlx::query(&stmt).execute(&self.pool).await.map_err(db)?;
        }
        Ok(())
    }

    async fn query(&self, sql_where: &str, bind: impl FnOnce(Q<'_>) -> Q<'_>) -> Result<Vec<VaultRecord>, VaultError> {
        let text = format!("SELECT seq, {VAULT_COLUMNS} FROM {} {sql_where}", self.quoted);
        let rows = bind(sqlx::query(&text)).fetch_all(&self.pool).await.map_err(storage)?;
        rows.iter().map(|r| vault_row(r).map_err(storage).and_then(VaultRow::into_record)).collect()
    }
}

type Q<'q> = sqlx::query::Query<'q, Postgres, sqlx::postgres::PgArguments>;

fn vault_row(r: &PgRow) -> Result<VaultRow, sqlx::Error> {
    Ok(VaultRow {
        seq: r.try_get(0)?,
        id: r.try_get(1)?,
        kind: r.try_get(2)?,
        table: r.try_get(3)?,
        name: r.try_get(4)?,
        generation: i64::from(r.try_get::<i32, _>(5)?),
        state: r.try_get(6)?,
        created_at: r.try_get(7)?,
        definition: r.try_get(8)?,
        context: r.try_get(9)?,
        envelope: r.try_get(10)?,
    })
}

#[async_trait]
impl KeyVault for PgVault {
    async fn insert(&self, r: &VaultRecord) -> Result<u64, VaultError> {
        let text = format!(
            "INSERT INTO {} ({VAULT_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) RETURNING seq",
            self.quoted
        );
        let seq: i64 = sqlx::query_scalar(&text)
            .bind(&r.id.0[..])
            .bind(r.kind.as_str())
            .bind(&r.table)
            .bind(&r.name)
            .bind(i32::try_from(r.generation).map_err(|_| VaultError::Corrupt("generation out of range"))?)
            .bind(r.state.as_str())
            .bind(i64::try_from(r.created_at).unwrap_or(i64::MAX))
            .bind(&r.definition)
            .bind(r.context.canonical_bytes())
            .bind(&r.envelope)
            .fetch_one(&self.pool)
            .await
            .map_err(storage)?;
        u64::try_from(seq).map_err(|_| VaultError::Corrupt("negative seq"))
    }

    async fn get(&self, id: &KeyId) -> Result<Option<VaultRecord>, VaultError> {
        Ok(self.query("WHERE id = $1", |q| q.bind(id.0.to_vec())).await?.pop())
    }

    async fn scope(&self, kind: KeyKind, table: &str, name: &str) -> Result<Vec<VaultRecord>, VaultError> {
        let (table, name) = (table.to_string(), name.to_string());
        self.query("WHERE kind = $1 AND table_name = $2 AND name = $3 ORDER BY seq", |q| {
            q.bind(kind.as_str()).bind(table).bind(name)
        })
        .await
    }

    async fn list(&self, after: u64, limit: usize) -> Result<Vec<VaultRecord>, VaultError> {
        let after = i64::try_from(after).unwrap_or(i64::MAX);
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.query("WHERE seq > $1 ORDER BY seq LIMIT $2", |q| q.bind(after).bind(limit)).await
    }

    async fn snapshot(&self) -> Result<u64, VaultError> {
        // nextval() is above every value handed out before (committed or not) and below every
        // value handed out after: exactly the line a rotation job needs.
        let v: i64 = sqlx::query_scalar("SELECT nextval(pg_get_serial_sequence($1, 'seq'))")
            .bind(&self.table)
            .fetch_one(&self.pool)
            .await
            .map_err(storage)?;
        u64::try_from(v).map_err(|_| VaultError::Corrupt("negative sequence value"))
    }

    async fn replace_envelope(&self, id: &KeyId, old: &[u8], new: &[u8]) -> Result<bool, VaultError> {
        let text = format!("UPDATE {} SET envelope = $1 WHERE id = $2 AND envelope = $3", self.quoted);
        let r = sqlx::query(&text).bind(new).bind(&id.0[..]).bind(old).execute(&self.pool).await.map_err(storage)?;
        Ok(r.rows_affected() == 1)
    }

    async fn set_state(&self, id: &KeyId, state: EntryState) -> Result<(), VaultError> {
        let text = format!("UPDATE {} SET state = $1 WHERE id = $2", self.quoted);
        sqlx::query(&text).bind(state.as_str()).bind(&id.0[..]).execute(&self.pool).await.map_err(storage)?;
        Ok(())
    }
}

/// Job checkpoints as a PostgreSQL table (default [`crate::rotate::DEFAULT_JOBS_TABLE`]).
#[derive(Clone)]
pub struct PgCheckpoints {
    pool: PgPool,
    quoted: String,
}

impl std::fmt::Debug for PgCheckpoints {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PgCheckpoints({})", self.quoted)
    }
}

impl PgCheckpoints {
    /// Checkpoints in table `table`.
    ///
    /// # Errors
    /// [`Error::Schema`] for an invalid name.
    pub fn new(pool: PgPool, table: &str) -> Result<Self, Error> {
        Ok(Self { quoted: sql::quote(table)?, pool })
    }

    /// Creates the table if missing.
    ///
    /// # Errors
    /// [`Error::Database`].
    pub async fn create_table(&self) -> Result<(), Error> {
        sqlx::query(&format!(
            "CREATE TABLE IF NOT EXISTS {} (
                job TEXT PRIMARY KEY,
                spec TEXT NOT NULL,
                phase TEXT NOT NULL,
                snapshot BIGINT NOT NULL,
                started_at BIGINT NOT NULL,
                last_pk TEXT,
                processed BIGINT NOT NULL,
                generations TEXT NOT NULL,
                updated_at BIGINT NOT NULL
             )",
            self.quoted
        ))
        .execute(&self.pool)
        .await
        .map_err(db)?;
        Ok(())
    }
}

#[async_trait]
impl CheckpointStore for PgCheckpoints {
    async fn load(&self, job: &str) -> Result<Option<Checkpoint>, Error> {
        let text = format!(
            "SELECT spec, phase, snapshot, started_at, last_pk, processed, generations FROM {} WHERE job = $1",
            self.quoted
        );
        let Some(r) = sqlx::query(&text).bind(job).fetch_optional(&self.pool).await.map_err(db)? else {
            return Ok(None);
        };
        let get = |e: sqlx::Error| db(e);
        Ok(Some(Checkpoint {
            job: job.to_string(),
            spec: r.try_get(0).map_err(get)?,
            phase: Phase::parse(&r.try_get::<String, _>(1).map_err(get)?)?,
            snapshot: u64::try_from(r.try_get::<i64, _>(2).map_err(get)?).unwrap_or(0),
            started_at: u64::try_from(r.try_get::<i64, _>(3).map_err(get)?).unwrap_or(0),
            last: r.try_get(4).map_err(get)?,
            processed: u64::try_from(r.try_get::<i64, _>(5).map_err(get)?).unwrap_or(0),
            generations: sql::generations_from_text(&r.try_get::<String, _>(6).map_err(get)?)?,
        }))
    }

    async fn save(&self, c: &Checkpoint) -> Result<(), Error> {
        let text = format!(
            "INSERT INTO {} (job, spec, phase, snapshot, started_at, last_pk, processed, generations, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
             ON CONFLICT (job) DO UPDATE SET spec = EXCLUDED.spec, phase = EXCLUDED.phase,
               snapshot = EXCLUDED.snapshot, started_at = EXCLUDED.started_at, last_pk = EXCLUDED.last_pk,
               processed = EXCLUDED.processed, generations = EXCLUDED.generations, updated_at = EXCLUDED.updated_at",
            self.quoted
        );
        sqlx::query(&text)
            .bind(&c.job)
            .bind(&c.spec)
            .bind(c.phase.as_str())
            .bind(sql::i64_of(c.snapshot, "snapshot")?)
            .bind(sql::i64_of(c.started_at, "start time")?)
            .bind(&c.last)
            .bind(sql::i64_of(c.processed, "row count")?)
            .bind(sql::generations_to_text(&c.generations))
            .bind(sql::i64_of(crate::vault::unix_now(), "time")?)
            .execute(&self.pool)
            .await
            .map_err(db)?;
        Ok(())
    }
}

/// A table as a rotation job walks it ([`RowStore`]): primary key `pk`, `BYTEA` cells
/// `columns`. Batches are read with one `SELECT ... ORDER BY pk LIMIT n` and written with one
/// `UPDATE ... FROM UNNEST(...)` whose condition compares every cell with what was read.
#[derive(Clone)]
pub struct PgTable {
    pool: PgPool,
    table: String,
    pk: String,
    pk_type: String,
    columns: Vec<String>,
}

impl std::fmt::Debug for PgTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PgTable({} by {} {}: {})", self.table, self.pk, self.pk_type, self.columns.join(", "))
    }
}

impl PgTable {
    /// `table`, walked by `pk`, with cells `columns`. Reads the catalog: the columns must exist
    /// and be `BYTEA`.
    ///
    /// # Errors
    /// [`Error::Schema`] for invalid names, missing columns or wrong types;
    /// [`Error::Database`].
    pub async fn new(pool: PgPool, table: &str, pk: &str, columns: Vec<String>) -> Result<Self, Error> {
        let quoted = sql::quote(table)?;
        crate::context::check_name("primary key", pk, false)?;
        for c in &columns {
            crate::context::check_name("column", c, false)?;
        }
        let types: Vec<(String, String)> = sqlx::query_as(
            "SELECT a.attname::text, format_type(a.atttypid, a.atttypmod)
             FROM pg_attribute a WHERE a.attrelid = $1::regclass AND a.attnum > 0 AND NOT a.attisdropped",
        )
        .bind(&quoted)
        .fetch_all(&pool)
        .await
        .map_err(db)?;
        let type_of = |c: &str| types.iter().find(|(n, _)| n == c).map(|(_, t)| t.clone());
        let pk_type = type_of(pk).ok_or_else(|| Error::Schema(format!("table {table} has no column {pk}")))?;
        // Types come from the catalog; they are spliced into casts, so allow only what type
        // names look like.
        if !pk_type.bytes().all(|c| c.is_ascii_alphanumeric() || b" _(),\".".contains(&c)) {
            return Err(Error::Schema(format!("unsupported primary-key type {pk_type}")));
        }
        for c in &columns {
            match type_of(c).as_deref() {
                Some("bytea") => {}
                Some(t) => return Err(Error::Schema(format!("column {table}.{c} is {t}, not bytea"))),
                None => return Err(Error::Schema(format!("table {table} has no column {c}"))),
            }
        }
        Ok(Self { pool, table: table.to_string(), pk: pk.to_string(), pk_type, columns })
    }

    fn select(&self, headers_only: bool) -> String {
        let cols: Vec<String> = self
            .columns
            .iter()
            .map(|c| {
                if headers_only {
                    format!("substring(t.\"{c}\" from 1 for {})", crate::keyref::HEADER_LEN)
                } else {
                    format!("t.\"{c}\"")
                }
            })
            .collect();
        // Invariant: the table name was checked in `new`.
        let t = sql::quote(&self.table).unwrap_or_default();
        // The key's text gets an alias of its own: `ORDER BY t."pk"` must sort by the column's
        // type, not by its text (an output column named like the key would win in ORDER BY).
        format!("SELECT (t.\"{}\")::text AS envseal_pk, {} FROM {t} AS t", self.pk, cols.join(", "))
    }

    fn read_row(&self, r: &PgRow) -> Result<Row, Error> {
        let pk: String = r.try_get(0).map_err(db)?;
        let cells = (0..self.columns.len())
            .map(|i| r.try_get::<Option<Vec<u8>>, _>(i + 1).map_err(db))
            .collect::<Result<_, _>>()?;
        Ok(Row { pk, cells })
    }
}

#[async_trait]
impl RowStore for PgTable {
    fn columns(&self) -> &[String] {
        &self.columns
    }

    async fn fetch(&self, after: Option<&str>, limit: usize, headers_only: bool) -> Result<Vec<Row>, Error> {
        let (pk, ty) = (&self.pk, &self.pk_type);
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = match after {
            Some(a) => {
                let text = format!(
                    "{} WHERE t.\"{pk}\" > CAST($1 AS {ty}) ORDER BY t.\"{pk}\" LIMIT $2",
                    self.select(headers_only)
                );
                sqlx::query(&text).bind(a).bind(limit).fetch_all(&self.pool).await
            }
            None => {
                let text = format!("{} ORDER BY t.\"{pk}\" LIMIT $1", self.select(headers_only));
                sqlx::query(&text).bind(limit).fetch_all(&self.pool).await
            }
        }
        .map_err(db)?;
        rows.iter().map(|r| self.read_row(r)).collect()
    }

    async fn fetch_pks(&self, pks: &[String]) -> Result<Vec<Row>, Error> {
        let text = format!("{} WHERE t.\"{}\" = ANY(CAST($1 AS {}[]))", self.select(false), self.pk, self.pk_type);
        let rows = sqlx::query(&text).bind(pks).fetch_all(&self.pool).await.map_err(db)?;
        rows.iter().map(|r| self.read_row(r)).collect()
    }

    async fn update(&self, updates: &[RowUpdate]) -> Result<Vec<String>, Error> {
        if updates.is_empty() {
            return Ok(Vec::new());
        }
        let n = self.columns.len();
        let set: Vec<String> = self.columns.iter().enumerate().map(|(i, c)| format!("\"{c}\" = u.n{i}")).collect();
        let cond: Vec<String> =
            self.columns.iter().enumerate().map(|(i, c)| format!("t.\"{c}\" IS NOT DISTINCT FROM u.o{i}")).collect();
        let mut arrays = vec!["$1::text[]".to_string()];
        let mut names = vec!["pk".to_string()];
        for i in 0..n {
            arrays.push(format!("${}::bytea[]", 2 + 2 * i));
            arrays.push(format!("${}::bytea[]", 3 + 2 * i));
            names.push(format!("o{i}"));
            names.push(format!("n{i}"));
        }
        let text = format!(
            "UPDATE {} AS t SET {} FROM UNNEST({}) AS u({}) WHERE t.\"{}\" = CAST(u.pk AS {}) AND {} RETURNING (t.\"{}\")::text",
            sql::quote(&self.table)?,
            set.join(", "),
            arrays.join(", "),
            names.join(", "),
            self.pk,
            self.pk_type,
            cond.join(" AND "),
            self.pk
        );
        let mut q =
            sqlx::query_scalar::<_, String>(&text).bind(updates.iter().map(|u| u.pk.clone()).collect::<Vec<_>>());
        for i in 0..n {
            q = q.bind(updates.iter().map(|u| u.old[i].clone()).collect::<Vec<Option<Vec<u8>>>>());
            q = q.bind(updates.iter().map(|u| u.new[i].clone()).collect::<Vec<Option<Vec<u8>>>>());
        }
        q.fetch_all(&self.pool).await.map_err(db)
    }
}
