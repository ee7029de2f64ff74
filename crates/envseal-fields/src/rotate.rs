//! Online rotation of sealed columns (docs/FIELDS.md §Rotation).
//!
//! - [`rewrap_vault`]: after a KMS key rotation (or to move to another key), ReEncrypt the
//!   wrapped key of every key-vault entry with [`Rewrapper::rewrap_envelopes`]. No value
//!   changes, and the vault has one entry per data key, so this takes seconds whatever the
//!   number of rows.
//! - [`rekey`]: new data keys for a table's columns: every value sealed under a data key that
//!   existed when the job started (or in the self-contained form) is opened and sealed again
//!   under a fresh one; blind-index terms are recomputed when the job rotates their index key.
//!
//! Both walk in order (vault `seq`, table primary key) in bounded batches with bounded
//! concurrency, store a checkpoint in the database after each batch (a job interrupted at any
//! point resumes where it stopped when run again with the same job name), and write with
//! compare-and-swap: a row is updated only if its cells still hold what the job read, so a
//! concurrent write by the application is never lost (the job sees the row again in its sweep).
//!
//! Writers that cached a data key before the job started keep sealing with it until their
//! cache's `max_age`: [`RekeySpec::settle`] makes the job wait at least that long after its start
//! before its final sweeps, and only then are the old keys marked retired.
//!
//! Storage comes from [`RowStore`] and [`CheckpointStore`], implemented for PostgreSQL and
//! SQLite by this crate's adapters.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use envseal_core::envelope::{self, Envelope};
use envseal_core::rewrap::{EntryStatus, Rewrapper, SleepFn};
use futures_util::stream::{self, StreamExt};
use serde::Serialize;
use zeroize::Zeroizing;

use crate::cipher::{Column, FieldCipher, Index};
use crate::context::check_name;
use crate::error::Error;
use crate::index::{IndexDef, generation_tag};
use crate::keyref::{self, KeyId};
use crate::vault::{self, EntryState, KeyKind, KeyVault};

/// Default name of the checkpoint table.
pub const DEFAULT_JOBS_TABLE: &str = "envseal_jobs";
/// The key under which a dry run counts rows with a cell that is not a sealed value.
pub const UNREADABLE: &str = "(unreadable)";
/// Most failed row keys / entry ids a report lists.
pub const MAX_LISTED_FAILURES: usize = 100;

/// One row as a job reads it: its primary key (canonical text) and its cells, in the store's
/// column order; `None` is SQL `NULL`.
#[derive(Clone, PartialEq, Eq)]
pub struct Row {
    /// Primary key, canonical text ([`crate::RowKey`]).
    pub pk: String,
    /// The cells.
    pub cells: Vec<Option<Vec<u8>>>,
}

impl fmt::Debug for Row {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Row").field("pk", &self.pk).field("cells", &self.cells.len()).finish()
    }
}

/// A compare-and-swap update of one row: set `new` where the cells still hold `old`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RowUpdate {
    /// Primary key.
    pub pk: String,
    /// The cells as read.
    pub old: Vec<Option<Vec<u8>>>,
    /// The cells to write.
    pub new: Vec<Option<Vec<u8>>>,
}

/// A table as rotation jobs walk it. The adapters' implementations build the SQL.
#[async_trait]
pub trait RowStore: Send + Sync {
    /// The columns, in cell order.
    fn columns(&self) -> &[String];

    /// Up to `limit` rows with a primary key greater than `after` (from the first row when
    /// `None`), in primary-key order. With `headers_only`, a non-null cell may be cut to its
    /// first [`keyref::HEADER_LEN`] (9) bytes, enough to tell which key sealed it.
    ///
    /// # Errors
    /// [`Error::Database`].
    async fn fetch(&self, after: Option<&str>, limit: usize, headers_only: bool) -> Result<Vec<Row>, Error>;

    /// The rows with these primary keys (full cells), in any order; missing rows are absent.
    ///
    /// # Errors
    /// [`Error::Database`].
    async fn fetch_pks(&self, pks: &[String]) -> Result<Vec<Row>, Error>;

    /// Applies the updates whose rows still hold their `old` cells (atomically per row) and
    /// returns the primary keys updated.
    ///
    /// # Errors
    /// [`Error::Database`].
    async fn update(&self, updates: &[RowUpdate]) -> Result<Vec<String>, Error>;
}

/// Where a job is.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum Phase {
    /// Walking the table (or vault) in order.
    #[default]
    Walk,
    /// Waiting for writers' caches to expire.
    Settle,
    /// Re-checking for rows still under old keys.
    Sweep,
    /// Finished.
    Done,
}

impl Phase {
    /// `walk`, `settle`, `sweep` or `done`.
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Walk => "walk",
            Phase::Settle => "settle",
            Phase::Sweep => "sweep",
            Phase::Done => "done",
        }
    }

    /// Parses [`Phase::as_str`].
    ///
    /// # Errors
    /// [`Error::Database`] for a value no job writes.
    pub fn parse(s: &str) -> Result<Self, Error> {
        match s {
            "walk" => Ok(Phase::Walk),
            "settle" => Ok(Phase::Settle),
            "sweep" => Ok(Phase::Sweep),
            "done" => Ok(Phase::Done),
            _ => Err(Error::Database(format!("unknown job phase {s:?} in the checkpoint table"))),
        }
    }
}

/// A job's checkpoint, stored after every batch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Checkpoint {
    /// Job name.
    pub job: String,
    /// What the job does (its spec, as text): a resumed run must be the same job.
    pub spec: String,
    /// Phase.
    pub phase: Phase,
    /// The vault's [`KeyVault::snapshot`] at the start: data keys with `seq` up to it are old.
    pub snapshot: u64,
    /// Start, Unix seconds.
    pub started_at: u64,
    /// Last primary key (or vault `seq`) done in this phase.
    pub last: Option<String>,
    /// Rows (or entries) done so far.
    pub processed: u64,
    /// Index generations the job rotated to, by index name.
    pub generations: BTreeMap<String, u32>,
}

/// Storage of job checkpoints (a table in the same database).
#[async_trait]
pub trait CheckpointStore: Send + Sync {
    /// The checkpoint of `job`.
    ///
    /// # Errors
    /// [`Error::Database`].
    async fn load(&self, job: &str) -> Result<Option<Checkpoint>, Error>;

    /// Stores (inserts or replaces) a checkpoint.
    ///
    /// # Errors
    /// [`Error::Database`].
    async fn save(&self, checkpoint: &Checkpoint) -> Result<(), Error>;
}

/// Progress of a running job.
#[derive(Clone, Debug, Default, Serialize)]
#[non_exhaustive]
pub struct Progress {
    /// Phase.
    pub phase: Phase,
    /// Rows (or entries) looked at.
    pub scanned: u64,
    /// Rows re-keyed (or entries rewrapped).
    pub changed: u64,
    /// Updates lost to a concurrent write (seen again by the sweep).
    pub conflicts: u64,
    /// Rows (or entries) that failed.
    pub failed: u64,
    /// Seconds since the start of this run.
    pub elapsed_secs: f64,
}

/// A progress callback, called after every batch.
pub type ProgressFn = Arc<dyn Fn(&Progress) + Send + Sync>;

/// Sleeps on a short-lived thread and wakes the task through a oneshot channel: works under any
/// executor (only the settle wait of a job sleeps).
fn thread_sleep(d: Duration) -> Pin<Box<dyn Future<Output = ()> + Send>> {
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let spawned = std::thread::Builder::new().name("envseal-settle".into()).spawn(move || {
        std::thread::sleep(d);
        let _ = tx.send(());
    });
    Box::pin(async move {
        if spawned.is_ok() {
            let _ = rx.await;
        }
    })
}

/// An index whose key a re-key job rotates.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IndexSpec {
    /// Index name (its definition comes from the key vault).
    pub name: String,
    /// The column holding its terms.
    pub column: String,
}

/// What a re-key job does.
#[derive(Clone)]
pub struct RekeySpec {
    /// Job name: the checkpoint's key. Running a job again with the same name resumes it unless
    /// it finished.
    pub job: String,
    /// Table.
    pub table: String,
    /// Primary-key column.
    pub pk: String,
    /// Whether values are bound to the primary key (`pk` in their context; true for records
    /// with a `primary_key` field).
    pub pk_in_context: bool,
    /// Sealed columns to re-key.
    pub columns: Vec<String>,
    /// Blind indexes whose key to rotate (terms recomputed from the opened values).
    pub indexes: Vec<IndexSpec>,
    /// Rows per batch.
    pub batch: usize,
    /// Batches in flight.
    pub concurrency: usize,
    /// Least time between the job's start and its final sweeps: the writers' cache `max_age`.
    pub settle: Duration,
    /// Most sweeps after the walk.
    pub max_sweeps: u32,
    /// Count what would change; write nothing, create no key.
    pub dry_run: bool,
    /// Called after every batch.
    pub progress: Option<ProgressFn>,
    /// How to wait (default: a sleeping thread; pass `tokio::time::sleep` boxed under Tokio).
    pub sleep: SleepFn,
}

impl fmt::Debug for RekeySpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RekeySpec")
            .field("job", &self.job)
            .field("table", &self.table)
            .field("pk", &self.pk)
            .field("columns", &self.columns)
            .field("indexes", &self.indexes)
            .field("batch", &self.batch)
            .field("concurrency", &self.concurrency)
            .field("settle", &self.settle)
            .field("dry_run", &self.dry_run)
            .finish_non_exhaustive()
    }
}

impl RekeySpec {
    /// A job named `job` over `table` (primary key `pk`, bound into contexts) re-keying
    /// `columns`: batches of 1000, 4 in flight, 5 minutes of settling (the default cache
    /// `max_age`), 5 sweeps.
    pub fn new(job: impl Into<String>, table: impl Into<String>, pk: impl Into<String>, columns: Vec<String>) -> Self {
        Self {
            job: job.into(),
            table: table.into(),
            pk: pk.into(),
            pk_in_context: true,
            columns,
            indexes: Vec::new(),
            batch: 1000,
            concurrency: 4,
            settle: Duration::from_secs(300),
            max_sweeps: 5,
            dry_run: false,
            progress: None,
            sleep: Arc::new(thread_sleep),
        }
    }

    /// The store columns this job reads: the sealed columns, then the index columns.
    pub fn store_columns(&self) -> Vec<String> {
        self.columns.iter().cloned().chain(self.indexes.iter().map(|i| i.column.clone())).collect()
    }

    /// The spec as text, stored in the checkpoint.
    pub fn describe(&self) -> String {
        let idx: Vec<String> = self.indexes.iter().map(|i| format!("{}:{}", i.name, i.column)).collect();
        format!(
            "rekey table={} pk={} pk_in_context={} columns={} indexes={}",
            self.table,
            self.pk,
            self.pk_in_context,
            self.columns.join(","),
            idx.join(",")
        )
    }

    fn validate(&self, store: &dyn RowStore) -> Result<(), Error> {
        check_name("table", &self.table, true)?;
        check_name("primary key", &self.pk, false)?;
        for c in self.store_columns() {
            check_name("column", &c, false)?;
        }
        for i in &self.indexes {
            check_name("index", &i.name, false)?;
        }
        if self.columns.is_empty() {
            return Err(Error::Schema("a re-key job needs at least one sealed column".into()));
        }
        if self.job.is_empty() || self.batch == 0 || self.concurrency == 0 {
            return Err(Error::Schema("a job needs a name, a batch size and a concurrency of at least 1".into()));
        }
        if store.columns() != self.store_columns().as_slice() {
            return Err(Error::Schema(
                "the row store's columns are not the job's (sealed columns, then index columns)".into(),
            ));
        }
        Ok(())
    }
}

/// What a re-key job did.
#[derive(Clone, Debug, Default, Serialize)]
#[non_exhaustive]
pub struct RekeyReport {
    /// Job name.
    pub job: String,
    /// A dry run: nothing was written.
    pub dry_run: bool,
    /// Resumed from a checkpoint.
    pub resumed: bool,
    /// Rows looked at (walk and sweeps).
    pub scanned: u64,
    /// Rows re-keyed.
    pub rekeyed: u64,
    /// Updates lost to concurrent writes (the rows were looked at again).
    pub conflicts: u64,
    /// Rows that could not be opened (tampered, or unreadable bytes); left as they were.
    pub failed: u64,
    /// Their primary keys (at most [`MAX_LISTED_FAILURES`]).
    pub failed_pks: Vec<String>,
    /// Sweeps made.
    pub sweeps: u32,
    /// Rows still under old keys at the end (0 when complete).
    pub remaining: u64,
    /// Every row is under a new key and the old keys are retired.
    pub complete: bool,
    /// Dry run: rows with a value to re-key, per column, and rows with a term, per index.
    pub stale: BTreeMap<String, u64>,
    /// Old data keys (and index generations) marked retired.
    pub retired_keys: u64,
    /// Index generations the job rotated to.
    pub generations: BTreeMap<String, u32>,
    /// Data keys the job created.
    pub data_keys_created: u64,
    /// KMS calls the job made.
    pub kms_calls: u64,
    /// Duration of this run, seconds.
    pub elapsed_secs: f64,
    /// Of which the walk in primary-key order (this run's part of it), seconds.
    pub walk_secs: f64,
    /// Rows the walk looked at (this run), including rows inserted meanwhile.
    pub walked: u64,
    /// Of which waiting for the writers' caches (`settle`), seconds.
    pub settle_secs: f64,
}

struct IndexPlan {
    cell: usize,
    fields: Vec<usize>,
    handle: Index,
    tag: u8,
}

/// Which cells are under old keys.
struct Classifier {
    old: Vec<HashSet<KeyId>>,
    /// Per index plan: the tag of the target generation.
    tags: Vec<u8>,
}

#[derive(PartialEq, Eq)]
enum Cell {
    Fresh,
    Stale,
    Unreadable,
}

impl Classifier {
    fn sealed(&self, col: usize, cell: &Option<Vec<u8>>) -> Cell {
        match cell {
            None => Cell::Fresh,
            Some(b) if b.first() == Some(&envelope::TAG) => Cell::Stale,
            Some(b) => match keyref::key_id_of(b) {
                Some(id) if self.old[col].contains(&id) => Cell::Stale,
                Some(_) => Cell::Fresh,
                None => Cell::Unreadable,
            },
        }
    }

    fn index(&self, plan: usize, p: &IndexPlan, cells: &[Option<Vec<u8>>]) -> bool {
        if p.fields.iter().any(|&f| cells[f].is_none()) {
            return false;
        }
        match &cells[p.cell] {
            None => true,
            Some(t) => t.first() != Some(&self.tags[plan]),
        }
    }

    /// Whether the row needs work, and whether it is unreadable.
    fn row(&self, plans: &[IndexPlan], cells: &[Option<Vec<u8>>], ncols: usize) -> (bool, bool) {
        let mut stale = false;
        for (i, c) in cells.iter().take(ncols).enumerate() {
            match self.sealed(i, c) {
                Cell::Stale => stale = true,
                Cell::Unreadable => return (false, true),
                Cell::Fresh => {}
            }
        }
        stale |= plans.iter().enumerate().any(|(k, p)| self.index(k, p, cells));
        (stale, false)
    }
}

#[derive(Default)]
struct Tally {
    scanned: u64,
    changed: u64,
    conflicts: u64,
    failed: u64,
    failed_pks: Vec<String>,
}

impl Tally {
    fn fail(&mut self, pk: &str) {
        self.failed += 1;
        if self.failed_pks.len() < MAX_LISTED_FAILURES {
            self.failed_pks.push(pk.to_string());
        }
    }

    fn add(&mut self, o: Tally) {
        self.scanned += o.scanned;
        self.changed += o.changed;
        self.conflicts += o.conflicts;
        for pk in o.failed_pks {
            if self.failed_pks.len() < MAX_LISTED_FAILURES {
                self.failed_pks.push(pk);
            }
        }
        self.failed += o.failed;
    }
}

struct Job<'a> {
    spec: &'a RekeySpec,
    store: &'a dyn RowStore,
    columns: Vec<Column>,
    plans: Vec<IndexPlan>,
    started: Instant,
    /// Rows that failed to open in this run: counted once, not retried by the sweeps.
    failed: std::sync::Mutex<HashSet<String>>,
}

impl Job<'_> {
    fn progress(&self, phase: Phase, t: &Tally) {
        if let Some(p) = &self.spec.progress {
            p(&Progress {
                phase,
                scanned: t.scanned,
                changed: t.changed,
                conflicts: t.conflicts,
                failed: t.failed,
                elapsed_secs: self.started.elapsed().as_secs_f64(),
            });
        }
    }

    /// Re-keys the stale rows of a batch of full rows and writes them back.
    async fn process(&self, cls: &Classifier, rows: Vec<Row>) -> Result<Tally, Error> {
        let mut t = Tally { scanned: rows.len() as u64, ..Tally::default() };
        let ncols = self.columns.len();
        let mut updates = Vec::new();
        'rows: for row in rows {
            if self.failed.lock().unwrap_or_else(|p| p.into_inner()).contains(&row.pk) {
                continue;
            }
            let (stale, unreadable) = cls.row(&self.plans, &row.cells, ncols);
            if unreadable {
                t.fail(&row.pk);
                self.failed.lock().unwrap_or_else(|p| p.into_inner()).insert(row.pk);
                continue;
            }
            if !stale {
                continue;
            }
            let pk = self.spec.pk_in_context.then_some(row.pk.as_str());
            let stale_cols: Vec<bool> = (0..ncols).map(|i| cls.sealed(i, &row.cells[i]) == Cell::Stale).collect();
            let stale_idx: Vec<bool> =
                self.plans.iter().enumerate().map(|(k, p)| cls.index(k, p, &row.cells)).collect();
            let mut needed = stale_cols.clone();
            for (p, _) in self.plans.iter().zip(&stale_idx).filter(|(_, s)| **s) {
                for &f in &p.fields {
                    needed[f] = true;
                }
            }
            let mut plain: Vec<Option<Zeroizing<Vec<u8>>>> = vec![None; ncols];
            for i in (0..ncols).filter(|&i| needed[i]) {
                if let Some(bytes) = &row.cells[i] {
                    match self.columns[i].open(bytes, pk).await {
                        Ok(p) => plain[i] = Some(p.into_zeroizing()),
                        Err(e) if row_failure(&e) => {
                            t.fail(&row.pk);
                            self.failed.lock().unwrap_or_else(|p| p.into_inner()).insert(row.pk);
                            continue 'rows;
                        }
                        // A KMS or key-vault problem (wrong base context, access denied, KMS
                        // down, a tampered vault entry) is not this row's: stop, resumable.
                        Err(e) => return Err(e),
                    }
                }
            }
            let mut new = row.cells.clone();
            for i in (0..ncols).filter(|&i| stale_cols[i]) {
                if let Some(p) = &plain[i] {
                    new[i] = Some(self.columns[i].seal(p, pk).await?.into_bytes());
                }
            }
            for (p, _) in self.plans.iter().zip(&stale_idx).filter(|(_, s)| **s) {
                let inputs: Vec<&[u8]> =
                    p.fields.iter().filter_map(|&f| plain[f].as_deref().map(Vec::as_slice)).collect();
                if inputs.len() == p.fields.len() {
                    new[p.cell] = Some(p.handle.term(&inputs).await?.into_bytes());
                }
            }
            if new != row.cells {
                updates.push(RowUpdate { pk: row.pk, old: row.cells, new });
            }
        }
        if !updates.is_empty() {
            let done = self.store.update(&updates).await?;
            t.changed += done.len() as u64;
            t.conflicts += (updates.len() - done.len().min(updates.len())) as u64;
        }
        Ok(t)
    }

    /// Primary keys of the rows still needing work (a headers-only scan).
    async fn scan(
        &self,
        cls: &Classifier,
        counts: Option<&mut BTreeMap<String, u64>>,
    ) -> Result<(Vec<String>, u64), Error> {
        let ncols = self.columns.len();
        let mut out = Vec::new();
        let mut after: Option<String> = None;
        let mut scanned = 0;
        let mut counts = counts;
        loop {
            let rows = self.store.fetch(after.as_deref(), self.spec.batch, true).await?;
            let Some(last) = rows.last() else { break };
            after = Some(last.pk.clone());
            scanned += rows.len() as u64;
            for row in rows {
                let (stale, unreadable) = cls.row(&self.plans, &row.cells, ncols);
                if unreadable {
                    if let Some(c) = counts.as_deref_mut() {
                        *c.entry(UNREADABLE.to_string()).or_default() += 1;
                    }
                    continue;
                }
                if let Some(c) = counts.as_deref_mut() {
                    for (i, name) in self.spec.columns.iter().enumerate() {
                        if cls.sealed(i, &row.cells[i]) == Cell::Stale {
                            *c.entry(name.clone()).or_default() += 1;
                        }
                    }
                    for (k, p) in self.plans.iter().enumerate() {
                        if cls.index(k, p, &row.cells) {
                            *c.entry(self.spec.indexes[k].name.clone()).or_default() += 1;
                        }
                    }
                }
                if stale {
                    out.push(row.pk);
                }
            }
        }
        Ok((out, scanned))
    }
}

/// Whether an error opening a cell is the row's own (its bytes), as opposed to a problem with
/// the key, the KMS or the vault, which stops the job.
fn row_failure(e: &Error) -> bool {
    use envseal_core::FormatError as F;
    match e {
        Error::UnknownKey { .. } | Error::WrongScope { .. } | Error::Decode { .. } => true,
        Error::Core(envseal_core::Error::Format(f)) => matches!(
            f,
            F::ValueTampered
                | F::NotSealed
                | F::UnsupportedVersion(_)
                | F::UnsupportedSuite(_)
                | F::Truncated
                | F::LimitExceeded { .. }
        ),
        _ => false,
    }
}

/// The data keys of each column that are old for a job with this snapshot.
async fn classifier(vault: &dyn KeyVault, spec: &RekeySpec, snapshot: u64, tags: Vec<u8>) -> Result<Classifier, Error> {
    let mut old = Vec::with_capacity(spec.columns.len());
    for c in &spec.columns {
        let recs = vault.scope(KeyKind::Data, &spec.table, c).await?;
        old.push(recs.into_iter().filter(|r| r.seq <= snapshot).map(|r| r.id).collect());
    }
    Ok(Classifier { old, tags })
}

/// Re-keys `spec.columns` of a table online: see the [module docs](self). `cipher` gives the
/// KMS, KMS key, vault, base context and cache policy; the job seals with a cipher of its own,
/// so no key cached before the job is reused.
///
/// # Errors
/// [`Error::Schema`] for an invalid spec, or a store whose columns differ; [`Error::Database`]
/// and vault errors (the checkpoint keeps what was done: run again to resume); KMS errors.
/// Rows that cannot be opened are not errors: they are counted and listed in the report.
pub async fn rekey(
    cipher: &FieldCipher,
    store: &dyn RowStore,
    checkpoints: &dyn CheckpointStore,
    spec: &RekeySpec,
) -> Result<RekeyReport, Error> {
    spec.validate(store)?;
    let started = Instant::now();
    let job_cipher = FieldCipher::builder(cipher.kms().clone(), cipher.kms_key(), cipher.vault().clone())
        .context(cipher.context().clone())
        .cache(*cipher.policy())
        .engine(cipher.engine())
        .build()?;
    let vault = cipher.vault().as_ref();
    let ncols = spec.columns.len();
    let columns = spec.columns.iter().map(|c| job_cipher.column(&spec.table, c)).collect::<Result<Vec<_>, _>>()?;
    let mut plans = Vec::new();
    for (k, ix) in spec.indexes.iter().enumerate() {
        let recs = vault.scope(KeyKind::Index, &spec.table, &ix.name).await?;
        let Some(rec) = recs.iter().filter(|r| r.state == EntryState::Active).max_by_key(|r| r.generation) else {
            return Err(Error::Schema(format!("index {}.{} has no key in the vault yet", spec.table, ix.name)));
        };
        let def = IndexDef::parse(&ix.name, &rec.definition)?;
        let mut fields = Vec::new();
        for f in &def.fields {
            let Some(i) = spec.columns.iter().position(|c| c == &f.column) else {
                return Err(Error::Schema(format!(
                    "index {} indexes column {}: add it to the job's sealed columns",
                    ix.name, f.column
                )));
            };
            fields.push(i);
        }
        plans.push(IndexPlan { cell: ncols + k, fields, handle: job_cipher.index(&spec.table, &def)?, tag: 0 });
    }
    let mut job = Job { spec, store, columns, plans, started, failed: std::sync::Mutex::new(HashSet::new()) };
    let mut report = RekeyReport { job: spec.job.clone(), dry_run: spec.dry_run, ..RekeyReport::default() };

    if spec.dry_run {
        // Every term would be recomputed under a new generation: count the rows with one.
        let tags = vec![0u8; job.plans.len()];
        let snapshot = vault.snapshot().await?;
        let mut cls = classifier(vault, spec, snapshot, tags).await?;
        // No tag can match "the generation after the current one" before it exists: use one
        // that no row has, by construction.
        for (k, p) in job.plans.iter().enumerate() {
            cls.tags[k] = generation_tag(p.handle.current_generation().await? + 1);
        }
        let mut stale = BTreeMap::new();
        let (pks, scanned) = job.scan(&cls, Some(&mut stale)).await?;
        report.scanned = scanned;
        report.remaining = pks.len() as u64;
        report.stale = stale;
        report.kms_calls = job_cipher.stats().kms_calls;
        report.elapsed_secs = started.elapsed().as_secs_f64();
        return Ok(report);
    }

    let spec_text = spec.describe();
    let mut cp = match checkpoints.load(&spec.job).await? {
        Some(cp) if cp.phase != Phase::Done => {
            if cp.spec != spec_text {
                return Err(Error::Schema(format!(
                    "job {} was started with another spec ({}); finish it, or use another job name",
                    spec.job, cp.spec
                )));
            }
            report.resumed = true;
            cp
        }
        _ => Checkpoint {
            job: spec.job.clone(),
            spec: spec_text,
            phase: Phase::Walk,
            snapshot: vault.snapshot().await?,
            started_at: vault::unix_now(),
            last: None,
            processed: 0,
            generations: BTreeMap::new(),
        },
    };
    // Rotate each index once per job (a crash between the rotation and the checkpoint costs an
    // extra generation, nothing else).
    for (k, p) in job.plans.iter_mut().enumerate() {
        let name = &spec.indexes[k].name;
        let generation = match cp.generations.get(name) {
            Some(g) => *g,
            None => {
                p.handle.rotate().await?;
                let g = p.handle.current_generation().await?;
                cp.generations.insert(name.clone(), g);
                g
            }
        };
        p.tag = generation_tag(generation);
    }
    checkpoints.save(&cp).await?;
    report.generations = cp.generations.clone();
    let tags: Vec<u8> = job.plans.iter().map(|p| p.tag).collect();

    let mut total = Tally::default();
    let walk_started = Instant::now();
    if cp.phase == Phase::Walk {
        let cls = classifier(vault, spec, cp.snapshot, tags.clone()).await?;
        let batches = stream::unfold(Some(cp.last.clone()), |state| async move {
            let after = state?;
            match store.fetch(after.as_deref(), spec.batch, false).await {
                Ok(rows) if rows.is_empty() => None,
                Ok(rows) => {
                    // Invariant: `rows` is not empty.
                    let last = rows.last().map(|r| r.pk.clone()).expect("non-empty batch");
                    Some((Ok((rows, last.clone())), Some(Some(last))))
                }
                Err(e) => Some((Err(e), None)),
            }
        });
        let (job_ref, cls_ref) = (&job, &cls);
        let done = batches
            .map(|b| async move {
                let (rows, last) = b?;
                Ok::<_, Error>((job_ref.process(cls_ref, rows).await?, last))
            })
            .buffered(spec.concurrency);
        let mut done = std::pin::pin!(done);
        while let Some(r) = done.next().await {
            let (t, last) = r?;
            cp.processed += t.scanned;
            cp.last = Some(last);
            total.add(t);
            checkpoints.save(&cp).await?;
            job.progress(Phase::Walk, &total);
        }
        cp.phase = Phase::Sweep;
        cp.last = None;
        checkpoints.save(&cp).await?;
    }

    report.walk_secs = walk_started.elapsed().as_secs_f64();
    report.walked = total.scanned;
    // Settle: writers may still hold a data key cached before the start.
    let until = cp.started_at.saturating_add(spec.settle.as_secs());
    let now = vault::unix_now();
    if now < until {
        job.progress(Phase::Settle, &total);
        let t = Instant::now();
        (spec.sleep)(Duration::from_secs(until - now)).await;
        report.settle_secs = t.elapsed().as_secs_f64();
    }
    let mut remaining = 0;
    let mut sweeps = 0;
    while sweeps < spec.max_sweeps {
        // Rebuilt each time: a key inserted just before the snapshot may have become visible.
        let cls = classifier(vault, spec, cp.snapshot, tags.clone()).await?;
        let (pks, scanned) = job.scan(&cls, None).await?;
        sweeps += 1;
        total.scanned += scanned;
        remaining = pks.len() as u64;
        // A row that failed to open stays under its old key: stop when only those remain.
        let todo: Vec<String> = {
            let failed = job.failed.lock().unwrap_or_else(|p| p.into_inner());
            pks.into_iter().filter(|p| !failed.contains(p)).collect()
        };
        if todo.is_empty() {
            break;
        }
        for chunk in todo.chunks(spec.batch) {
            let rows = store.fetch_pks(chunk).await?;
            total.add(job.process(&cls, rows).await?);
            job.progress(Phase::Sweep, &total);
        }
    }
    report.sweeps = sweeps;
    report.remaining = remaining;
    if remaining == 0 {
        // Retire the old data keys and index generations: nothing is sealed under them now.
        for c in &spec.columns {
            for r in vault.scope(KeyKind::Data, &spec.table, c).await? {
                if r.seq <= cp.snapshot && r.state == EntryState::Active {
                    vault.set_state(&r.id, EntryState::Retired).await?;
                    report.retired_keys += 1;
                }
            }
        }
        for (k, p) in job.plans.iter().enumerate() {
            let g = cp.generations[&spec.indexes[k].name];
            report.retired_keys += u64::from(p.handle.retire_before(g).await?);
        }
        cp.phase = Phase::Done;
        report.complete = true;
    }
    checkpoints.save(&cp).await?;
    job.progress(if report.complete { Phase::Done } else { Phase::Sweep }, &total);
    let stats = job_cipher.stats();
    report.scanned = total.scanned;
    report.rekeyed = total.changed;
    report.conflicts = total.conflicts;
    report.failed = total.failed;
    report.failed_pks = total.failed_pks;
    report.data_keys_created = stats.data_keys_created;
    report.kms_calls = stats.kms_calls;
    report.elapsed_secs = started.elapsed().as_secs_f64();
    Ok(report)
}

/// What a vault rewrap does.
#[derive(Clone)]
pub struct RewrapSpec {
    /// Job name (checkpoint key).
    pub job: String,
    /// Only entries of this table, if set.
    pub table: Option<String>,
    /// Only entries of this column or index name, if set.
    pub name: Option<String>,
    /// Entries per batch.
    pub batch: usize,
    /// Data keys in the KMS at a time.
    pub concurrency: usize,
    /// Report what is behind the target; write nothing.
    pub dry_run: bool,
    /// Called after every batch.
    pub progress: Option<ProgressFn>,
}

impl fmt::Debug for RewrapSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RewrapSpec")
            .field("job", &self.job)
            .field("table", &self.table)
            .field("name", &self.name)
            .field("batch", &self.batch)
            .field("concurrency", &self.concurrency)
            .field("dry_run", &self.dry_run)
            .finish_non_exhaustive()
    }
}

impl RewrapSpec {
    /// Every entry, batches of 500, 8 in flight.
    pub fn new(job: impl Into<String>) -> Self {
        Self { job: job.into(), table: None, name: None, batch: 500, concurrency: 8, dry_run: false, progress: None }
    }

    fn describe(&self, rw: &Rewrapper) -> String {
        format!(
            "rewrap target={:?} backend={} table={} name={}",
            rw.target(),
            rw.destination().backend(),
            self.table.as_deref().unwrap_or("*"),
            self.name.as_deref().unwrap_or("*")
        )
    }
}

/// What a vault rewrap did.
#[derive(Clone, Debug, Default, Serialize)]
#[non_exhaustive]
pub struct RewrapReport {
    /// Job name.
    pub job: String,
    /// A dry run.
    pub dry_run: bool,
    /// Resumed from a checkpoint.
    pub resumed: bool,
    /// Entries looked at.
    pub entries: u64,
    /// Entries rewrapped (dry run: behind the target).
    pub rewrapped: u64,
    /// Entries already at the target.
    pub at_target: u64,
    /// Entries of another backend (left alone).
    pub other_backend: u64,
    /// Entries replaced concurrently by another job (left as they were).
    pub conflicts: u64,
    /// Entries that failed.
    pub failed: u64,
    /// Their ids (at most [`MAX_LISTED_FAILURES`]), with the error.
    pub failures: Vec<(String, String)>,
    /// KMS calls retried.
    pub retries: u64,
    /// Duration, seconds.
    pub elapsed_secs: f64,
}

/// Rewraps the key vault with `rewrapper` (ReEncrypt of each entry's wrapped key, verified per
/// its [`envseal_core::rewrap::Verify`] mode): see the [module docs](self).
///
/// # Errors
/// Vault and checkpoint storage errors (the checkpoint keeps what was done). Entries that fail
/// are counted and listed in the report; they keep their old wrapped key, which still opens.
pub async fn rewrap_vault(
    vault: &dyn KeyVault,
    rewrapper: &Rewrapper,
    checkpoints: &dyn CheckpointStore,
    spec: &RewrapSpec,
) -> Result<RewrapReport, Error> {
    let started = Instant::now();
    if spec.job.is_empty() || spec.batch == 0 || spec.concurrency == 0 {
        return Err(Error::Schema("a job needs a name, a batch size and a concurrency of at least 1".into()));
    }
    let mut report = RewrapReport { job: spec.job.clone(), dry_run: spec.dry_run, ..RewrapReport::default() };
    let spec_text = spec.describe(rewrapper);
    let stored = if spec.dry_run { None } else { checkpoints.load(&spec.job).await? };
    let mut cp = match stored {
        Some(cp) if cp.phase != Phase::Done && cp.spec == spec_text => {
            report.resumed = true;
            cp
        }
        Some(cp) if cp.phase != Phase::Done => {
            return Err(Error::Schema(format!(
                "job {} was started with another spec ({}); finish it, or use another job name",
                spec.job, cp.spec
            )));
        }
        _ => Checkpoint {
            job: spec.job.clone(),
            spec: spec_text,
            phase: Phase::Walk,
            snapshot: 0,
            started_at: vault::unix_now(),
            last: None,
            processed: 0,
            generations: BTreeMap::new(),
        },
    };
    let mut after: u64 = match &cp.last {
        Some(s) => s.parse().map_err(|_| Error::Database("unreadable vault position in the checkpoint".into()))?,
        None => 0,
    };
    let fail = |report: &mut RewrapReport, id: &KeyId, e: &dyn fmt::Display| {
        report.failed += 1;
        if report.failures.len() < MAX_LISTED_FAILURES {
            report.failures.push((id.to_hex(), e.to_string()));
        }
    };
    loop {
        let recs = vault.list(after, spec.batch).await?;
        let Some(last) = recs.last() else { break };
        let last_seq = last.seq;
        let recs: Vec<_> = recs
            .into_iter()
            .filter(|r| spec.table.as_deref().is_none_or(|t| t == r.table))
            .filter(|r| spec.name.as_deref().is_none_or(|n| n == r.name))
            .collect();
        report.entries += recs.len() as u64;
        if spec.dry_run {
            for r in &recs {
                let status = Envelope::parse(&r.envelope).and_then(|e| e.entry()).map_err(envseal_core::Error::from);
                match status {
                    Ok(entry) => match rewrapper.status(&entry).await {
                        Ok(EntryStatus::AtTarget) => report.at_target += 1,
                        Ok(EntryStatus::OtherBackend) => report.other_backend += 1,
                        Ok(_) => report.rewrapped += 1,
                        Err(e) => fail(&mut report, &r.id, &e),
                    },
                    Err(e) => fail(&mut report, &r.id, &e),
                }
            }
        } else {
            let mut items = Vec::with_capacity(recs.len());
            for (i, r) in recs.iter().enumerate() {
                match r.stored_context() {
                    Ok(ctx) => items.push((i, r.envelope.clone(), ctx)),
                    Err(e) => fail(&mut report, &r.id, &e),
                }
            }
            for (i, result) in rewrapper.rewrap_envelopes(items, spec.concurrency).await {
                let r = &recs[i];
                match result {
                    Ok(new) if new == r.envelope => {
                        let other = Envelope::parse(&r.envelope)
                            .and_then(|e| e.entry())
                            .is_ok_and(|e| e.backend != rewrapper.source().backend());
                        if other { report.other_backend += 1 } else { report.at_target += 1 }
                    }
                    Ok(new) => {
                        if vault.replace_envelope(&r.id, &r.envelope, &new).await? {
                            report.rewrapped += 1;
                        } else {
                            report.conflicts += 1;
                        }
                    }
                    Err(e) => fail(&mut report, &r.id, &e),
                }
            }
        }
        after = last_seq;
        cp.last = Some(after.to_string());
        cp.processed = report.entries;
        if !spec.dry_run {
            checkpoints.save(&cp).await?;
        }
        if let Some(p) = &spec.progress {
            p(&Progress {
                phase: Phase::Walk,
                scanned: report.entries,
                changed: report.rewrapped,
                conflicts: report.conflicts,
                failed: report.failed,
                elapsed_secs: started.elapsed().as_secs_f64(),
            });
        }
    }
    if !spec.dry_run {
        cp.phase = if report.failed == 0 { Phase::Done } else { Phase::Walk };
        if report.failed > 0 {
            // Run again to retry the failed entries: start over (entries at the target are
            // skipped without a KMS write).
            cp.last = None;
        }
        checkpoints.save(&cp).await?;
    }
    report.retries = rewrapper.stats().retries;
    report.elapsed_secs = started.elapsed().as_secs_f64();
    Ok(report)
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use envseal_core::kms::KeyManager;
    use envseal_core::rewrap::Target;
    use envseal_kms_mock::MockKms;

    use super::*;
    use crate::index::Normalize;
    use crate::vault::memory::MemoryVault;

    /// A table in memory: primary key → cells.
    struct MemTable {
        columns: Vec<String>,
        rows: Mutex<BTreeMap<i64, Vec<Option<Vec<u8>>>>>,
    }

    #[async_trait]
    impl RowStore for MemTable {
        fn columns(&self) -> &[String] {
            &self.columns
        }
        async fn fetch(&self, after: Option<&str>, limit: usize, headers_only: bool) -> Result<Vec<Row>, Error> {
            let after: i64 = after.map(|a| a.parse().unwrap()).unwrap_or(i64::MIN);
            let rows = self.rows.lock().unwrap();
            Ok(rows
                .range(after.saturating_add(1)..)
                .take(limit)
                .map(|(k, v)| Row {
                    pk: k.to_string(),
                    cells: v
                        .iter()
                        .map(|c| {
                            c.as_ref().map(|b| {
                                if headers_only { b[..b.len().min(keyref::HEADER_LEN)].to_vec() } else { b.clone() }
                            })
                        })
                        .collect(),
                })
                .collect())
        }
        async fn fetch_pks(&self, pks: &[String]) -> Result<Vec<Row>, Error> {
            let rows = self.rows.lock().unwrap();
            Ok(pks
                .iter()
                .filter_map(|p| rows.get(&p.parse().unwrap()).map(|c| Row { pk: p.clone(), cells: c.clone() }))
                .collect())
        }
        async fn update(&self, updates: &[RowUpdate]) -> Result<Vec<String>, Error> {
            let mut rows = self.rows.lock().unwrap();
            let mut done = Vec::new();
            for u in updates {
                let row = rows.get_mut(&u.pk.parse().unwrap()).unwrap();
                if *row == u.old {
                    *row = u.new.clone();
                    done.push(u.pk.clone());
                }
            }
            Ok(done)
        }
    }

    #[derive(Default)]
    struct MemCheckpoints(Mutex<BTreeMap<String, Checkpoint>>);

    #[async_trait]
    impl CheckpointStore for MemCheckpoints {
        async fn load(&self, job: &str) -> Result<Option<Checkpoint>, Error> {
            Ok(self.0.lock().unwrap().get(job).cloned())
        }
        async fn save(&self, c: &Checkpoint) -> Result<(), Error> {
            self.0.lock().unwrap().insert(c.job.clone(), c.clone());
            Ok(())
        }
    }

    #[tokio::test]
    async fn rekey_reseals_stale_rows_rotates_the_index_and_is_idempotent() {
        let kms = Arc::new(MockKms::new());
        let key = kms.create_default_key();
        let vault = Arc::new(MemoryVault::default());
        let app = FieldCipher::builder(kms.clone(), key, vault.clone()).build().unwrap();
        let email = app.column("users", "email").unwrap();
        let def = IndexDef::new("email_idx", [("email", Normalize::Lowercase)], 16).unwrap();
        let idx = app.index("users", &def).unwrap();
        let table = MemTable { columns: vec!["email".into(), "email_idx".into()], rows: Mutex::new(BTreeMap::new()) };
        for i in 0..50i64 {
            let v = format!("U{i}@x.org");
            let s = email.seal(v.as_bytes(), Some(&i.to_string())).await.unwrap();
            let t = idx.term(&[v.as_bytes()]).await.unwrap();
            table.rows.lock().unwrap().insert(i, vec![Some(s.into_bytes()), Some(t.into_bytes())]);
        }
        table.rows.lock().unwrap().insert(50, vec![None, None]);
        table.rows.lock().unwrap().insert(51, vec![Some(vec![keyref::TAG, 1, 2]), None]);
        let before = table.rows.lock().unwrap().clone();
        let cps = MemCheckpoints::default();
        let mut spec = RekeySpec::new("j1", "users", "id", vec!["email".into()]);
        spec.indexes = vec![IndexSpec { name: "email_idx".into(), column: "email_idx".into() }];
        spec.batch = 7;
        spec.settle = Duration::ZERO;

        let mut dry = spec.clone();
        dry.dry_run = true;
        let r = rekey(&app, &table, &cps, &dry).await.unwrap();
        assert_eq!(r.stale["email"], 50);
        assert_eq!(r.stale["email_idx"], 50);
        assert_eq!(r.stale[UNREADABLE], 1);
        assert_eq!(*table.rows.lock().unwrap(), before, "a dry run writes nothing");

        let r = rekey(&app, &table, &cps, &spec).await.unwrap();
        assert!(r.complete, "{r:?}");
        assert_eq!(r.rekeyed, 50);
        assert_eq!(r.failed, 1);
        assert_eq!(r.failed_pks, ["51"]);
        assert_eq!(r.generations["email_idx"], 2);
        let rows = table.rows.lock().unwrap().clone();
        // The application reloads its index keys after its cache's max_age; here, at once.
        app.clear_cache();
        for i in 0..50i64 {
            let v = format!("U{i}@x.org");
            let cells = &rows[&i];
            assert_ne!(cells[0], before[&i][0]);
            assert_eq!(
                email.open(cells[0].as_ref().unwrap(), Some(&i.to_string())).await.unwrap().expose_secret(),
                v.as_bytes()
            );
            let terms = idx.terms(&[v.as_bytes()]).await.unwrap();
            assert_eq!(terms.len(), 1, "the old generation is retired");
            assert_eq!(cells[1].as_deref(), Some(terms[0].as_bytes()));
        }
        assert!(
            vault.0.lock().unwrap().iter().filter(|r| r.kind == KeyKind::Data).any(|r| r.state == EntryState::Retired)
        );
        assert_eq!(cps.0.lock().unwrap()["j1"].phase, Phase::Done);
    }

    #[tokio::test]
    async fn rewrap_touches_only_the_vault() {
        let kms = Arc::new(MockKms::new());
        let key = kms.create_default_key();
        let vault = Arc::new(MemoryVault::default());
        let app = FieldCipher::builder(kms.clone(), key.clone(), vault.clone())
            .cache(envseal_core::CachePolicy { max_messages: 5, ..Default::default() })
            .build()
            .unwrap();
        let col = app.column("t", "c").unwrap();
        let mut values = Vec::new();
        for i in 0..20 {
            values.push(col.seal(b"v", Some(&i.to_string())).await.unwrap());
        }
        kms.rotate_key(&key).await.unwrap();
        let rw = Rewrapper::new(kms.clone(), Target::Latest);
        let cps = MemCheckpoints::default();
        let mut spec = RewrapSpec::new("rw");
        spec.batch = 3;
        spec.dry_run = true;
        let r = rewrap_vault(vault.as_ref(), &rw, &cps, &spec).await.unwrap();
        assert_eq!((r.entries, r.rewrapped), (4, 4));
        spec.dry_run = false;
        let r = rewrap_vault(vault.as_ref(), &rw, &cps, &spec).await.unwrap();
        assert_eq!((r.entries, r.rewrapped, r.failed), (4, 4, 0));
        for rec in vault.0.lock().unwrap().iter() {
            assert_eq!(Envelope::parse(&rec.envelope).unwrap().entry().unwrap().key_version, "2");
        }
        // Values open with a fresh cipher through the rewrapped vault.
        let fresh = FieldCipher::builder(kms.clone(), key, vault.clone()).build().unwrap();
        let col = fresh.column("t", "c").unwrap();
        for (i, v) in values.iter().enumerate() {
            assert_eq!(col.open(v.as_bytes(), Some(&i.to_string())).await.unwrap().expose_secret(), b"v");
        }
        let r =
            rewrap_vault(vault.as_ref(), &Rewrapper::new(kms.clone(), Target::Latest), &cps, &RewrapSpec::new("rw2"))
                .await
                .unwrap();
        assert_eq!((r.rewrapped, r.at_target), (0, 4));
    }
}
