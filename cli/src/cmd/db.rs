//! `envseal db rewrap|rekey`: rotation of sealed database columns (envseal-fields, PostgreSQL).
//!
//! `rewrap` ReEncrypts the wrapped keys of the key-vault table (after a KMS key rotation, or to
//! another key): the sealed columns are not touched. `rekey` gives a table's columns new data
//! keys online: values are opened and sealed again in primary-key order, in batches, with
//! compare-and-swap updates, a checkpoint in the database after each batch, and a settle period
//! for writers that cached a key before the job. Both are the library's jobs
//! (`envseal_fields::rotate`); this module parses arguments, connects, and reports.

use std::io::IsTerminal;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use clap::{Args, Subcommand};
use envseal_core::rewrap::{RetryPolicy, Rewrapper, Target, Verify};
use envseal_core::{CachePolicy, Kms};
use envseal_fields::pg::{PgCheckpoints, PgTable, PgVault};
use envseal_fields::rotate::{self, IndexSpec, Progress, ProgressFn, RekeySpec, RewrapSpec};
use envseal_fields::{FieldCipher, KeyVault};
use sqlx::postgres::PgPoolOptions;

use super::rewrap::VerifyArg;
use crate::backend;
use crate::exit;
use crate::opts::{KmsOpts, split_key};

const REWRAP_HELP: &str = "\
Examples:
  envseal keys rotate alias/default
  envseal db rewrap --url postgres://app@db/app --to-latest
  envseal db rewrap --url postgres://app@db/app --dry-run --json
  envseal db rewrap --url \"$DATABASE_URL\" --to alias/new --kms local:

Only the key-vault table changes (one entry per data key); the sealed columns are untouched.
Resumable: an interrupted job continues when the same command (same --job) runs again.
See docs/FIELDS.md.";

const REKEY_HELP: &str = "\
Examples:
  envseal db rekey --url postgres://app@db/app --table users --pk id --column email --column phone --column ssn
  envseal db rekey --url \"$DATABASE_URL\" --table users --pk id --column email --rotate-index email_idx --dry-run
  envseal db rekey --url \"$DATABASE_URL\" --table users --pk id --column ssn --settle 10m --jobs 8 --json

Safe while the application writes: rows are updated only if unchanged since they were read, and
the job waits --settle (the application's data-key cache max_age) before its final sweeps.
Resumable: run the same command (same --job) again after an interruption. See docs/FIELDS.md.";

/// `envseal db` subcommands.
#[derive(Subcommand, Debug)]
pub enum DbCmd {
    /// Rewrap the key vault (ReEncrypt each data key's wrapped copy); no sealed value changes.
    #[command(after_help = REWRAP_HELP)]
    Rewrap(RewrapArgs),
    /// Give a table's sealed columns new data keys, online (values resealed in place).
    #[command(after_help = REKEY_HELP)]
    Rekey(RekeyArgs),
}

/// Options of both subcommands.
#[derive(Args, Debug)]
pub struct DbOpts {
    /// PostgreSQL URL (`postgres://user[:password]@host[:port]/db`; no TLS in this build).
    #[arg(long, env = "ENVSEAL_DB_URL", value_name = "URL", hide_env_values = true)]
    pub url: String,
    /// The key-vault table.
    #[arg(long, default_value = envseal_fields::vault::DEFAULT_TABLE, value_name = "TABLE")]
    pub vault_table: String,
    /// The table of job checkpoints (created if missing).
    #[arg(long, default_value = rotate::DEFAULT_JOBS_TABLE, value_name = "TABLE")]
    pub jobs_table: String,
    /// Job name: the checkpoint's key (default: derived from the command).
    #[arg(long, value_name = "NAME")]
    pub job: Option<String>,
    /// Count what would change; write nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Print the report as JSON on stdout.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub kms: KmsOpts,
}

/// Arguments of `envseal db rewrap`.
#[derive(Args, Debug)]
pub struct RewrapArgs {
    #[command(flatten)]
    pub db: DbOpts,
    /// Rewrap every entry to the newest version of its own KMS key (the default).
    #[arg(long, conflicts_with = "to")]
    pub to_latest: bool,
    /// Rewrap to this key (id or alias) at its newest version.
    #[arg(long, value_name = "KEY")]
    pub to: Option<String>,
    /// Only the entries of this table.
    #[arg(long, value_name = "TABLE")]
    pub table: Option<String>,
    /// Only the entries of this column or index.
    #[arg(long, value_name = "NAME", requires = "table")]
    pub column: Option<String>,
    /// How each new entry is checked before it replaces the old one.
    #[arg(long, value_enum, default_value_t = VerifyArg::Decrypt)]
    pub verify: VerifyArg,
    /// Data keys in the KMS at once.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub jobs: u16,
}

/// Arguments of `envseal db rekey`.
#[derive(Args, Debug)]
pub struct RekeyArgs {
    #[command(flatten)]
    pub db: DbOpts,
    /// The table.
    #[arg(long, value_name = "TABLE")]
    pub table: String,
    /// Its primary-key column (one column; bound into every value's context).
    #[arg(long, value_name = "COLUMN")]
    pub pk: String,
    /// The values are not bound to the primary key (records without a `primary_key` field).
    #[arg(long)]
    pub no_pk_context: bool,
    /// A sealed column to re-key (repeatable).
    #[arg(long = "column", value_name = "COLUMN", required = true)]
    pub columns: Vec<String>,
    /// Also rotate this blind index's key and recompute its terms (`NAME` or `NAME:COLUMN` when
    /// its column is named otherwise; repeatable). Its fields must be among --column.
    #[arg(long = "rotate-index", value_name = "NAME[:COLUMN]")]
    pub rotate_index: Vec<String>,
    /// The application's base context entry (repeatable): the same as the application's.
    #[arg(long = "context", value_name = "K=V", value_parser = crate::opts::parse_kv)]
    pub context: Vec<(String, String)>,
    /// Least time between the job's start and its final sweeps: the application's data-key
    /// cache max_age.
    #[arg(long, default_value = "5m", value_parser = humantime::parse_duration, value_name = "DURATION")]
    pub settle: Duration,
    /// Rows per batch.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub batch: u32,
    /// Batches in flight.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=256))]
    pub jobs: u16,
}

/// Runs a subcommand.
pub async fn run(cmd: DbCmd) -> Result<ExitCode> {
    match cmd {
        DbCmd::Rewrap(a) => rewrap(a).await,
        DbCmd::Rekey(a) => rekey(a).await,
    }
}

/// The KMS of `--kms` (first URI; default `local:`) and the key (`--key`, `URI#KEY`, or
/// `alias/default`).
fn kms(opts: &KmsOpts) -> Result<(Arc<dyn Kms>, String)> {
    let spec = opts.kms.first().map(String::as_str).unwrap_or(backend::DEFAULT_URI);
    let (uri, key_in_uri) = split_key(spec);
    let opened = backend::open_with_key(uri)?;
    let key = opts
        .key
        .clone()
        .or_else(|| key_in_uri.map(str::to_string))
        .or(opened.key)
        .unwrap_or_else(|| backend::DEFAULT_KEY.to_string());
    Ok((opened.kms, key))
}

async fn connect(db: &DbOpts) -> Result<(sqlx::PgPool, Arc<PgVault>, PgCheckpoints)> {
    let pool = PgPoolOptions::new().max_connections(8).connect(&db.url).await.map_err(|e| {
        exit::fail(
            exit::Exit::Other,
            format!("cannot connect to the database: {e}"),
            Some("check --url (ENVSEAL_DB_URL) and that the server accepts the connection"),
        )
    })?;
    let vault = Arc::new(PgVault::new(pool.clone(), &db.vault_table).map_err(fields)?);
    let jobs = PgCheckpoints::new(pool.clone(), &db.jobs_table).map_err(fields)?;
    if !db.dry_run {
        jobs.create_table().await.map_err(fields)?;
    }
    Ok((pool, vault, jobs))
}

/// Maps a library error to the CLI's classes: core errors keep theirs (exit.rs), the rest get
/// a class and a hint here.
fn fields(e: envseal_fields::Error) -> anyhow::Error {
    use envseal_fields::Error as E;
    match e {
        E::Core(c) => anyhow::Error::new(c),
        E::Schema(m) => {
            exit::fail(exit::Exit::Usage, m, Some("check --table, --pk, --column, --rotate-index and --context"))
        }
        E::Database(m) => exit::fail(
            exit::Exit::Other,
            format!("database: {m}"),
            Some("the job's checkpoint keeps what was done: run the same command again to resume"),
        ),
        E::Vault(v) => exit::fail(
            exit::Exit::Other,
            v.to_string(),
            Some("check --vault-table and the database; run again to resume"),
        ),
        E::UnknownKey { key } => exit::fail(
            exit::Exit::NoKey,
            format!("data key {key} is not in the key vault"),
            Some("check --vault-table"),
        ),
        e => exit::fail(exit::Exit::Other, e.to_string(), None),
    }
}

/// A progress line on stderr when it is a terminal.
fn progress(what: &'static str) -> Option<ProgressFn> {
    if !std::io::stderr().is_terminal() {
        return None;
    }
    Some(Arc::new(move |p: &Progress| {
        eprint!(
            "\r{what}: {} {} looked at, {} changed, {} conflicts, {} failed ({:.1} s)   ",
            p.phase.as_str(),
            p.scanned,
            p.changed,
            p.conflicts,
            p.failed,
            p.elapsed_secs
        );
    }))
}

async fn rewrap(a: RewrapArgs) -> Result<ExitCode> {
    let (kms, _key) = kms(&a.db.kms)?;
    let (_pool, vault, jobs) = connect(&a.db).await?;
    let target = match &a.to {
        Some(k) => Target::Key(k.clone()),
        None => Target::Latest,
    };
    let verify = match a.verify {
        VerifyArg::Decrypt => Verify::Decrypt,
        VerifyArg::Structure => Verify::Structure,
    };
    let retry = RetryPolicy::default().with_sleep(Arc::new(|d| Box::pin(tokio::time::sleep(d))));
    let rw = Rewrapper::new(kms, target).with_verify(verify).with_retry(retry);
    let mut spec = RewrapSpec::new(a.db.job.clone().unwrap_or_else(|| "envseal-db-rewrap".into()));
    spec.table = a.table.clone();
    spec.name = a.column.clone();
    spec.concurrency = usize::from(a.jobs);
    spec.dry_run = a.db.dry_run;
    spec.progress = progress("rewrap");
    let report = rotate::rewrap_vault(vault.as_ref() as &dyn KeyVault, &rw, &jobs, &spec).await.map_err(fields)?;
    if spec.progress.is_some() {
        eprintln!();
    }
    if a.db.json {
        outln!("{}", serde_json::to_string_pretty(&report)?);
    } else if report.dry_run {
        outln!(
            "{} key-vault entries: {} to rewrap, {} at the target, {} of other backends, {} failed",
            report.entries,
            report.rewrapped,
            report.at_target,
            report.other_backend,
            report.failed
        );
    } else {
        outln!(
            "{} key-vault entries: {} rewrapped, {} already at the target, {} of other backends, {} failed, {} changed concurrently ({:.2} s)",
            report.entries,
            report.rewrapped,
            report.at_target,
            report.other_backend,
            report.failed,
            report.conflicts,
            report.elapsed_secs
        );
    }
    for (id, e) in &report.failures {
        eprintln!("envseal: entry {id}: {e}");
    }
    if report.failed > 0 {
        return Err(exit::fail(
            exit::Exit::Tampered,
            format!(
                "{} key-vault entries could not be rewrapped (they keep their old wrapped key, which still opens)",
                report.failed
            ),
            Some("fix the cause shown above and run the same command again"),
        ));
    }
    Ok(ExitCode::SUCCESS)
}

async fn rekey(a: RekeyArgs) -> Result<ExitCode> {
    let (kms, key) = kms(&a.db.kms)?;
    let (pool, vault, jobs) = connect(&a.db).await?;
    let base = crate::settings::context(&a.context.iter().cloned().collect())?;
    let cipher =
        FieldCipher::builder(kms, key, vault).context(base).cache(CachePolicy::default()).build().map_err(fields)?;
    let indexes = a
        .rotate_index
        .iter()
        .map(|s| match s.split_once(':') {
            Some((n, c)) => IndexSpec { name: n.to_string(), column: c.to_string() },
            None => IndexSpec { name: s.clone(), column: s.clone() },
        })
        .collect();
    let job = a.db.job.clone().unwrap_or_else(|| format!("envseal-db-rekey:{}:{}", a.table, a.columns.join(",")));
    let mut spec = RekeySpec::new(job, a.table.clone(), a.pk.clone(), a.columns.clone());
    spec.pk_in_context = !a.no_pk_context;
    spec.indexes = indexes;
    spec.batch = a.batch as usize;
    spec.concurrency = usize::from(a.jobs);
    spec.settle = a.settle;
    spec.dry_run = a.db.dry_run;
    spec.progress = progress("rekey");
    spec.sleep = Arc::new(|d| Box::pin(tokio::time::sleep(d)));
    let table = PgTable::new(pool, &a.table, &a.pk, spec.store_columns()).await.map_err(fields)?;
    if !spec.dry_run && spec.settle > Duration::ZERO && spec.progress.is_some() {
        eprintln!(
            "rekey: the final sweeps wait until {} after the start (--settle)",
            humantime::format_duration(spec.settle)
        );
    }
    let report = rotate::rekey(&cipher, &table, &jobs, &spec).await.map_err(fields)?;
    if spec.progress.is_some() {
        eprintln!();
    }
    if a.db.json {
        outln!("{}", serde_json::to_string_pretty(&report)?);
    } else if report.dry_run {
        let per: Vec<String> = report.stale.iter().map(|(k, v)| format!("{k}: {v}")).collect();
        outln!("{} rows looked at, {} to re-key ({})", report.scanned, report.remaining, per.join(", "));
    } else {
        outln!(
            "{} rows re-keyed ({} looked at, {} sweeps, {} changed concurrently and redone), {} failed, {} old keys retired, {} new data keys ({:.2} s){}",
            report.rekeyed,
            report.scanned,
            report.sweeps,
            report.conflicts,
            report.failed,
            report.retired_keys,
            report.data_keys_created,
            report.elapsed_secs,
            if report.resumed { ", resumed" } else { "" }
        );
    }
    if report.failed > 0 {
        let listed = report.failed_pks.len() as u64;
        let more = if report.failed > listed { format!(" and {} more", report.failed - listed) } else { String::new() };
        return Err(exit::fail(
            exit::Exit::Tampered,
            format!(
                "{} rows could not be opened (altered, or not sealed values) and were left as they were: {}{more}",
                report.failed,
                report.failed_pks.join(", ")
            ),
            Some("inspect those rows; every other row is re-keyed"),
        ));
    }
    if !report.dry_run && !report.complete {
        return Err(exit::fail(
            exit::Exit::Other,
            format!("{} rows are still under old keys after {} sweeps", report.remaining, report.sweeps),
            Some(
                "an application instance may still be sealing with a key cached before the job: run the same command again later",
            ),
        ));
    }
    Ok(ExitCode::SUCCESS)
}
