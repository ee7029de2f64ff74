//! SQLite through `rusqlite` (feature `rusqlite`): sealed values and index terms are `BLOB`s,
//! the key vault and the job checkpoints are tables, either in the application's database or in
//! a database file of their own (a small app's key vault as one file).
//!
//! Every type here shares one connection, `Arc<Mutex<rusqlite::Connection>>`, with the
//! application. SQLite calls are synchronous and short: the async methods run them on the
//! calling task.

use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;
use rusqlite::types::{FromSql, FromSqlResult, ToSql, ToSqlOutput, ValueRef};
use rusqlite::{Connection, OptionalExtension, params};

use crate::error::{Error, VaultError};
use crate::keyref::KeyId;
use crate::rotate::{Checkpoint, CheckpointStore, Phase, Row, RowStore, RowUpdate};
use crate::sql::{self, VAULT_COLUMNS, VaultRow};
use crate::value::{IndexTerm, Sealed};
use crate::vault::{EntryState, KeyKind, KeyVault, VaultRecord};

/// A connection shared by the application and the adapters.
pub type SharedConnection = Arc<Mutex<Connection>>;

fn lock(c: &SharedConnection) -> MutexGuard<'_, Connection> {
    // A panic while holding the connection leaves SQLite consistent (each statement is atomic).
    c.lock().unwrap_or_else(|p| p.into_inner())
}

fn db(e: rusqlite::Error) -> Error {
    Error::Database(e.to_string())
}

fn storage(e: rusqlite::Error) -> VaultError {
    match e {
        rusqlite::Error::SqliteFailure(f, _) if f.code == rusqlite::ErrorCode::ConstraintViolation => {
            VaultError::Conflict
        }
        e => VaultError::Storage(e.to_string()),
    }
}

impl ToSql for Sealed {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::Borrowed(ValueRef::Blob(self.as_bytes())))
    }
}

impl FromSql for Sealed {
    fn column_result(value: ValueRef<'_>) -> FromSqlResult<Self> {
        value.as_blob().map(|b| Sealed::from_bytes(b.to_vec()))
    }
}

impl ToSql for IndexTerm {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::Borrowed(ValueRef::Blob(self.as_bytes())))
    }
}

impl FromSql for IndexTerm {
    fn column_result(value: ValueRef<'_>) -> FromSqlResult<Self> {
        value.as_blob().map(|b| IndexTerm::from_bytes(b.to_vec()))
    }
}

/// The key vault as a SQLite table (default [`crate::vault::DEFAULT_TABLE`]).
#[derive(Clone)]
pub struct SqliteVault {
    conn: SharedConnection,
    table: String,
    quoted: String,
}

impl std::fmt::Debug for SqliteVault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SqliteVault({})", self.table)
    }
}

impl SqliteVault {
    /// The vault in table `table` of `conn`.
    ///
    /// # Errors
    /// [`Error::Schema`] for an invalid table name.
    pub fn new(conn: SharedConnection, table: &str) -> Result<Self, Error> {
        Ok(Self { quoted: sql::quote(table)?, conn, table: table.to_string() })
    }

    /// Creates the table and its indexes if missing.
    ///
    /// # Errors
    /// [`Error::Database`].
    pub fn create_table(&self) -> Result<(), Error> {
        let t = &self.quoted;
        let scope = sql::index_name(&self.table, "scope");
        let generation = sql::index_name(&self.table, "index_generation");
        lock(&self.conn)
            .execute_batch(&format!(
                "CREATE TABLE IF NOT EXISTS {t} (
                    seq INTEGER PRIMARY KEY AUTOINCREMENT,
                    id BLOB NOT NULL UNIQUE CHECK (length(id) = {id_len}),
                    kind TEXT NOT NULL,
                    table_name TEXT NOT NULL,
                    name TEXT NOT NULL,
                    generation INTEGER NOT NULL,
                    state TEXT NOT NULL,
                    created_at INTEGER NOT NULL,
                    definition TEXT NOT NULL,
                    context BLOB NOT NULL,
                    envelope BLOB NOT NULL
                 );
                 CREATE INDEX IF NOT EXISTS {scope} ON {t} (kind, table_name, name);
                 CREATE UNIQUE INDEX IF NOT EXISTS {generation} ON {t} (table_name, name, generation) WHERE kind = 'index';",
                id_len = crate::keyref::KEY_ID_LEN
            ))
            .map_err(db)
    }

    fn query(&self, where_: &str, params: &[&dyn ToSql]) -> Result<Vec<VaultRecord>, VaultError> {
        let conn = lock(&self.conn);
        let mut stmt = conn
            .prepare_cached(&format!("SELECT seq, {VAULT_COLUMNS} FROM {} {where_}", self.quoted))
            .map_err(storage)?;
        let rows = stmt
            .query_map(params, |r| {
                Ok(VaultRow {
                    seq: r.get(0)?,
                    id: r.get(1)?,
                    kind: r.get(2)?,
                    table: r.get(3)?,
                    name: r.get(4)?,
                    generation: r.get(5)?,
                    state: r.get(6)?,
                    created_at: r.get(7)?,
                    definition: r.get(8)?,
                    context: r.get(9)?,
                    envelope: r.get(10)?,
                })
            })
            .map_err(storage)?;
        rows.map(|r| r.map_err(storage).and_then(VaultRow::into_record)).collect()
    }
}

#[async_trait]
impl KeyVault for SqliteVault {
    async fn insert(&self, r: &VaultRecord) -> Result<u64, VaultError> {
        let conn = lock(&self.conn);
        conn.prepare_cached(&format!(
            "INSERT INTO {} ({VAULT_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
            self.quoted
        ))
        .and_then(|mut s| {
            s.execute(params![
                &r.id.0[..],
                r.kind.as_str(),
                r.table,
                r.name,
                i64::from(r.generation),
                r.state.as_str(),
                i64::try_from(r.created_at).unwrap_or(i64::MAX),
                r.definition,
                r.context.canonical_bytes(),
                r.envelope,
            ])
        })
        .map_err(storage)?;
        u64::try_from(conn.last_insert_rowid()).map_err(|_| VaultError::Corrupt("negative seq"))
    }

    async fn get(&self, id: &KeyId) -> Result<Option<VaultRecord>, VaultError> {
        Ok(self.query("WHERE id = ?1", &[&&id.0[..]])?.pop())
    }

    async fn scope(&self, kind: KeyKind, table: &str, name: &str) -> Result<Vec<VaultRecord>, VaultError> {
        self.query("WHERE kind = ?1 AND table_name = ?2 AND name = ?3 ORDER BY seq", &[&kind.as_str(), &table, &name])
    }

    async fn list(&self, after: u64, limit: usize) -> Result<Vec<VaultRecord>, VaultError> {
        let after = i64::try_from(after).unwrap_or(i64::MAX);
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.query("WHERE seq > ?1 ORDER BY seq LIMIT ?2", &[&after, &limit])
    }

    async fn snapshot(&self) -> Result<u64, VaultError> {
        // AUTOINCREMENT keeps the largest seq ever handed out in sqlite_sequence; SQLite has one
        // writer at a time, so nothing is in flight.
        let conn = lock(&self.conn);
        let name = self.table.rsplit('.').next().unwrap_or(&self.table);
        let v: Option<i64> = conn
            .query_row("SELECT seq FROM sqlite_sequence WHERE name = ?1", [name], |r| r.get(0))
            .optional()
            .map_err(storage)?;
        Ok(v.and_then(|v| u64::try_from(v).ok()).unwrap_or(0))
    }

    async fn replace_envelope(&self, id: &KeyId, old: &[u8], new: &[u8]) -> Result<bool, VaultError> {
        let n = lock(&self.conn)
            .prepare_cached(&format!("UPDATE {} SET envelope = ?1 WHERE id = ?2 AND envelope = ?3", self.quoted))
            .and_then(|mut s| s.execute(params![new, &id.0[..], old]))
            .map_err(storage)?;
        Ok(n == 1)
    }

    async fn set_state(&self, id: &KeyId, state: EntryState) -> Result<(), VaultError> {
        lock(&self.conn)
            .prepare_cached(&format!("UPDATE {} SET state = ?1 WHERE id = ?2", self.quoted))
            .and_then(|mut s| s.execute(params![state.as_str(), &id.0[..]]))
            .map_err(storage)?;
        Ok(())
    }
}

/// Job checkpoints as a SQLite table (default [`crate::rotate::DEFAULT_JOBS_TABLE`]).
#[derive(Clone)]
pub struct SqliteCheckpoints {
    conn: SharedConnection,
    quoted: String,
}

impl std::fmt::Debug for SqliteCheckpoints {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SqliteCheckpoints({})", self.quoted)
    }
}

impl SqliteCheckpoints {
    /// Checkpoints in table `table` of `conn`.
    ///
    /// # Errors
    /// [`Error::Schema`] for an invalid table name.
    pub fn new(conn: SharedConnection, table: &str) -> Result<Self, Error> {
        Ok(Self { quoted: sql::quote(table)?, conn })
    }

    /// Creates the table if missing.
    ///
    /// # Errors
    /// [`Error::Database`].
    pub fn create_table(&self) -> Result<(), Error> {
        lock(&self.conn)
            .execute_batch(&format!(
                "CREATE TABLE IF NOT EXISTS {} (
                    job TEXT PRIMARY KEY,
                    spec TEXT NOT NULL,
                    phase TEXT NOT NULL,
                    snapshot INTEGER NOT NULL,
                    started_at INTEGER NOT NULL,
                    last_pk TEXT,
                    processed INTEGER NOT NULL,
                    generations TEXT NOT NULL,
                    updated_at INTEGER NOT NULL
                 )",
                self.quoted
            ))
            .map_err(db)
    }
}

#[async_trait]
impl CheckpointStore for SqliteCheckpoints {
    async fn load(&self, job: &str) -> Result<Option<Checkpoint>, Error> {
        let conn = lock(&self.conn);
        let row = conn
            .query_row(
                &format!(
                    "SELECT spec, phase, snapshot, started_at, last_pk, processed, generations FROM {} WHERE job = ?1",
                    self.quoted
                ),
                [job],
                |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, i64>(2)?,
                        r.get::<_, i64>(3)?,
                        r.get::<_, Option<String>>(4)?,
                        r.get::<_, i64>(5)?,
                        r.get::<_, String>(6)?,
                    ))
                },
            )
            .optional()
            .map_err(db)?;
        let Some((spec, phase, snapshot, started_at, last, processed, generations)) = row else { return Ok(None) };
        Ok(Some(Checkpoint {
            job: job.to_string(),
            spec,
            phase: Phase::parse(&phase)?,
            snapshot: u64::try_from(snapshot).unwrap_or(0),
            started_at: u64::try_from(started_at).unwrap_or(0),
            last,
            processed: u64::try_from(processed).unwrap_or(0),
            generations: sql::generations_from_text(&generations)?,
        }))
    }

    async fn save(&self, c: &Checkpoint) -> Result<(), Error> {
        lock(&self.conn)
            .prepare_cached(&format!(
                "INSERT INTO {} (job, spec, phase, snapshot, started_at, last_pk, processed, generations, updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
                 ON CONFLICT (job) DO UPDATE SET spec = excluded.spec, phase = excluded.phase,
                   snapshot = excluded.snapshot, started_at = excluded.started_at, last_pk = excluded.last_pk,
                   processed = excluded.processed, generations = excluded.generations, updated_at = excluded.updated_at",
                self.quoted
            ))
            .and_then(|mut s| {
                s.execute(params![
                    c.job,
                    c.spec,
                    c.phase.as_str(),
                    i64::try_from(c.snapshot).unwrap_or(i64::MAX),
                    i64::try_from(c.started_at).unwrap_or(i64::MAX),
                    c.last,
                    i64::try_from(c.processed).unwrap_or(i64::MAX),
                    sql::generations_to_text(&c.generations),
                    i64::try_from(crate::vault::unix_now()).unwrap_or(i64::MAX),
                ])
            })
            .map_err(db)?;
        Ok(())
    }
}

/// A table as a rotation job walks it ([`RowStore`]): primary key `pk`, cells `columns`.
#[derive(Clone)]
pub struct SqliteTable {
    conn: SharedConnection,
    table: String,
    pk: String,
    columns: Vec<String>,
}

impl std::fmt::Debug for SqliteTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SqliteTable({} by {}: {})", self.table, self.pk, self.columns.join(", "))
    }
}

impl SqliteTable {
    /// `table` of `conn`, walked by `pk`, with cells `columns`.
    ///
    /// # Errors
    /// [`Error::Schema`] for invalid names.
    pub fn new(conn: SharedConnection, table: &str, pk: &str, columns: Vec<String>) -> Result<Self, Error> {
        let _ = sql::quote(table)?;
        crate::context::check_name("primary key", pk, false)?;
        for c in &columns {
            crate::context::check_name("column", c, false)?;
        }
        Ok(Self { conn, table: table.to_string(), pk: pk.to_string(), columns })
    }

    fn select(&self, headers_only: bool) -> String {
        let cols: Vec<String> = self
            .columns
            .iter()
            .map(|c| {
                if headers_only {
                    format!("substr(t.\"{c}\", 1, {})", crate::keyref::HEADER_LEN)
                } else {
                    format!("t.\"{c}\"")
                }
            })
            .collect();
        // Invariant: the table name was checked in `new`.
        let t = sql::quote(&self.table).unwrap_or_default();
        // As in the PostgreSQL adapter: an alias of its own for the key's text, so that
        // `ORDER BY t."pk"` sorts by the column.
        format!("SELECT CAST(t.\"{pk}\" AS TEXT) AS envseal_pk, {} FROM {t} AS t", cols.join(", "), pk = self.pk)
    }

    fn read_row(&self, r: &rusqlite::Row<'_>) -> rusqlite::Result<Row> {
        let mut cells = Vec::with_capacity(self.columns.len());
        for i in 0..self.columns.len() {
            cells.push(match r.get_ref(i + 1)? {
                ValueRef::Null => None,
                ValueRef::Blob(b) => Some(b.to_vec()),
                // Not a sealed value: an empty cell classifies as unreadable.
                _ => Some(Vec::new()),
            });
        }
        Ok(Row { pk: r.get(0)?, cells })
    }
}

#[async_trait]
impl RowStore for SqliteTable {
    fn columns(&self) -> &[String] {
        &self.columns
    }

    async fn fetch(&self, after: Option<&str>, limit: usize, headers_only: bool) -> Result<Vec<Row>, Error> {
        let conn = lock(&self.conn);
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let pk = &self.pk;
        // A bound parameter has no type affinity, so against an INTEGER key SQLite compares the
        // text `after` numerically.
        let sql = match after {
            Some(_) => format!("{} WHERE t.\"{pk}\" > ?1 ORDER BY t.\"{pk}\" LIMIT ?2", self.select(headers_only)),
            None => format!("{} ORDER BY t.\"{pk}\" LIMIT ?2", self.select(headers_only)),
        };
        let mut stmt = conn.prepare_cached(&sql).map_err(db)?;
        let rows = stmt.query_map(params![after, limit], |r| self.read_row(r)).map_err(db)?;
        rows.collect::<rusqlite::Result<Vec<_>>>().map_err(db)
    }

    async fn fetch_pks(&self, pks: &[String]) -> Result<Vec<Row>, Error> {
        let conn = lock(&self.conn);
        let mut stmt =
            conn.prepare_cached(&format!("{} WHERE t.\"{}\" = ?1", self.select(false), self.pk)).map_err(db)?;
        let mut out = Vec::with_capacity(pks.len());
        for pk in pks {
            if let Some(r) = stmt.query_row([pk], |r| self.read_row(r)).optional().map_err(db)? {
                out.push(r);
            }
        }
        Ok(out)
    }

    async fn update(&self, updates: &[RowUpdate]) -> Result<Vec<String>, Error> {
        let mut conn = lock(&self.conn);
        let n = self.columns.len();
        let set: Vec<String> = self.columns.iter().enumerate().map(|(i, c)| format!("\"{c}\" = ?{}", i + 1)).collect();
        // `IS` is SQLite's null-safe equality: the compare-and-swap condition.
        let cond: Vec<String> =
            self.columns.iter().enumerate().map(|(i, c)| format!("\"{c}\" IS ?{}", n + 2 + i)).collect();
        let sql = format!(
            "UPDATE {} SET {} WHERE \"{}\" = ?{} AND {}",
            sql::quote(&self.table)?,
            set.join(", "),
            self.pk,
            n + 1,
            cond.join(" AND ")
        );
        let tx = conn.transaction().map_err(db)?;
        let mut done = Vec::new();
        {
            let mut stmt = tx.prepare_cached(&sql).map_err(db)?;
            for u in updates {
                let mut p: Vec<&dyn ToSql> = Vec::with_capacity(2 * n + 1);
                p.extend(u.new.iter().map(|c| c as &dyn ToSql));
                p.push(&u.pk);
                p.extend(u.old.iter().map(|c| c as &dyn ToSql));
                if stmt.execute(p.as_slice()).map_err(db)? == 1 {
                    done.push(u.pk.clone());
                }
            }
        }
        tx.commit().map_err(db)?;
        Ok(done)
    }
}
