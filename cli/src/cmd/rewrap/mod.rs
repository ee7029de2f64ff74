//! `envseal rewrap`: replace the wrapped-key entries of many sealed files (docs/ROTATION.md).
//!
//! Each file goes through: read (blocking pool) → KMS (ReEncrypt, verification; at most `--jobs`
//! files in flight as tasks on the CLI's current-thread runtime, whose blocking pool does the file
//! I/O in parallel) → write (blocking pool: temp file, fsync, rename, fsync of the directory) →
//! journal line (fsync). A file is replaced only after its new entries were verified, and only
//! atomically, so a `kill -9` at any moment leaves it either old or new, and both open.
//!
//! The domain decisions live in the library (`envseal_core::rewrap`): which backend rewraps which
//! entries (`plan`), the checks before an entry set is returned, and the circuit breaker
//! (`breaker`). Here: the arguments and the loop over files (this file), the job's backends
//! (`backends`), one file's processing (`job`), finding, reading and writing files (`files`), the
//! journal (`journal`), and progress and summary (`report`).

mod backends;
mod files;
mod job;
mod journal;
mod report;

use std::collections::HashSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use anyhow::{Context, Result, anyhow};
use clap::{Args, ValueEnum};
use envseal_core::rewrap::breaker::Breaker;
use envseal_core::rewrap::plan::{Planner, Resolver};
use envseal_core::rewrap::{RetryPolicy, Shard, Verify};

use self::backends::Backends;
use self::job::{Job, Op};
use self::journal::Journal;
use self::report::{Progress, Report, Status, Summary};
use crate::backend;
use crate::exit;

/// How to check new entries before replacing a file.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum VerifyArg {
    /// Unwrap the new entry and check the file's key commitment (needs Decrypt permission).
    Decrypt,
    /// Check backend, key id, version and blob without decrypting (ReEncrypt-only principals).
    Structure,
}

/// Arguments of `envseal rewrap`.
#[derive(Args, Debug)]
pub struct RewrapArgs {
    /// Sealed files, or directories with -r.
    #[arg(required = true, value_name = "PATH")]
    pub paths: Vec<PathBuf>,
    /// Walk directories for sealed files (containers by magic bytes; .env/JSON/YAML with envseal
    /// metadata).
    #[arg(short, long)]
    pub recursive: bool,
    /// Rewrap to this key (id or alias) at its newest version, on the --kms backend.
    #[arg(long, value_name = "KEY", group = "op")]
    pub to: Option<String>,
    /// Rewrap every entry to the newest version of its own key (the default operation).
    #[arg(long, group = "op")]
    pub to_latest: bool,
    /// Add a wrapped-key entry for KEY on the backend URI (decrypts the data key once, unless
    /// the backend can re-encrypt an existing entry itself).
    #[arg(long, value_name = "URI#KEY", group = "op")]
    pub add_key: Option<String>,
    /// Remove the entries of this key id (never the last entry of a file), after proving that a
    /// remaining entry opens the file. A .env/JSON/YAML file is then re-keyed (new data key,
    /// values resealed) so the removed key's holder cannot open later values; see --no-rekey.
    #[arg(long, value_name = "KEY_ID", group = "op")]
    pub remove_key: Option<String>,
    /// With --remove-key: only drop the entry, without re-keying (the removed key's holder,
    /// with an old copy, can still open every value).
    #[arg(long, requires = "remove_key")]
    pub no_rekey: bool,
    /// Drop entries that cannot be verified (they do not unwrap to this file's data key);
    /// by default they are reported and kept.
    #[arg(long)]
    pub drop_unverifiable: bool,
    /// Send only entries wrapped under these keys (`URI#KEY`) to a KMS; the others are left as
    /// they are (default: every entry of the backends in play).
    #[arg(long = "allow-key", env = "ENVSEAL_ALLOW_KEYS", value_name = "URI#KEY", value_delimiter = ',')]
    pub allow_key: Vec<String>,
    /// Backend of the --to key (default `local:`); also opens entries of its backend. A --to key
    /// on another backend than a file's entries moves the data key through this process.
    #[arg(long = "kms", value_name = "URI")]
    pub kms: Option<String>,
    /// Files in flight at once (each with its KMS calls).
    #[arg(short, long, default_value_t = 8, value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub jobs: u16,
    /// List what would change (file, current key/version → target) without KMS writes or file
    /// changes.
    #[arg(long)]
    pub dry_run: bool,
    /// Skip the files the journal records as done by an earlier run of the same operation (and
    /// remove `.envseal-tmp-*` files a killed run left in the walked directories).
    #[arg(long)]
    pub resume: bool,
    /// Journal file (JSON lines; default: `.<name>.envseal-rewrap.jsonl` beside the first PATH).
    #[arg(long, value_name = "FILE")]
    pub journal: Option<PathBuf>,
    /// How new entries are checked before a file is replaced.
    #[arg(long, value_enum, default_value_t = VerifyArg::Decrypt)]
    pub verify: VerifyArg,
    /// Take only shard I of N (0 <= I < N) of the files: N workers given the same PATHs from the
    /// same directory (a Kubernetes indexed Job, a CI matrix) split one job, each file going to
    /// exactly one of them (by the SHA-256 of its path relative to the current directory). Each
    /// shard keeps its own default journal.
    #[arg(long, value_name = "I/N", value_parser = parse_shard)]
    pub shard: Option<Shard>,
    /// Print a JSON summary on stdout at the end.
    #[arg(long)]
    pub json: bool,
}

fn parse_shard(s: &str) -> Result<Shard, String> {
    Shard::parse(s).map_err(|e| e.to_string())
}

/// The name a file is sharded by: its path relative to the current directory when it is below
/// it (so workers in different checkouts agree), else its absolute path.
fn shard_name(path: &Path) -> Vec<u8> {
    let rel = std::env::current_dir().ok().and_then(|cwd| path.strip_prefix(cwd).ok().map(Path::to_path_buf));
    rel.as_deref().unwrap_or(path).as_os_str().as_encoded_bytes().to_vec()
}

fn op_of(a: &RewrapArgs) -> Result<Op> {
    if let Some(k) = &a.to {
        return Ok(Op::To(k.clone()));
    }
    if let Some(spec) = &a.add_key {
        let (uri, key) = crate::opts::split_key(spec);
        backend::name_of(uri)?;
        return Ok(Op::Add { uri: uri.to_string(), key: key.map(str::to_string) });
    }
    if let Some(k) = &a.remove_key {
        return Ok(Op::Remove(k.clone()));
    }
    Ok(Op::ToLatest)
}

/// `envseal rewrap`.
pub async fn run(a: RewrapArgs) -> Result<ExitCode> {
    let started = Instant::now();
    let op = op_of(&a)?;
    let kms = a.kms.clone();
    if let Some(u) = &kms {
        backend::name_of(u)?;
    }
    let journal_path = match &a.journal {
        Some(j) => std::path::absolute(j)?,
        None => journal::default_journal(&a.paths[0], a.shard)?,
    };
    let mut found = files::discover(&a.paths, a.recursive, &journal_path)?;
    if let Some(shard) = a.shard {
        found.files.retain(|(p, _)| shard.owns(&shard_name(p)));
    }
    let done = if a.resume { Journal::done(&journal_path, &op.name())? } else { HashSet::new() };
    if a.resume && !a.dry_run {
        for t in &found.stale_tmp {
            // Left by a killed run: never a target (targets are only renamed over).
            let _ = fs::remove_file(t);
        }
    }
    let journal = if a.dry_run {
        None
    } else {
        Some(Journal::open(&journal_path, &op.name(), &format!("{:?}", a.verify).to_lowercase())?)
    };
    let verify = match a.verify {
        VerifyArg::Decrypt => Verify::Decrypt,
        VerifyArg::Structure => Verify::Structure,
    };
    let trust = crate::trust::from_allow(&a.allow_key).await?;
    let retry = RetryPolicy::default().with_sleep(Arc::new(|d| Box::pin(tokio::time::sleep(d))));
    let (setup_trust, drop_unverifiable) = (trust.clone(), a.drop_unverifiable);
    let planner = Planner::new(Backends::new(kms)).with_setup(move |rw| {
        rw.with_verify(verify)
            .with_trust(setup_trust.clone())
            .with_drop_unverifiable(drop_unverifiable)
            .with_retry(retry.clone())
    });
    let job = Arc::new(Job {
        op: op.clone(),
        dry_run: a.dry_run,
        no_rekey: a.no_rekey,
        planner,
        trust,
        journal,
        moved_notice: AtomicBool::new(false),
    });

    // Fail fast on a destination key that does not exist (instead of once per file).
    if !found.files.is_empty() {
        let dest = match &op {
            Op::To(k) => Some((job.planner.backends().destination()?, k.clone())),
            Op::Add { uri, key } => Some(job.add_dest(uri, key)?),
            _ => None,
        };
        if let Some((kms, key)) = dest
            && let Some(km) = kms.key_manager()
        {
            km.describe_key(&key).await.with_context(|| format!("destination key {key}"))?;
        }
    }
    let total = found.files.len();
    let progress = Progress::new(total as u64, a.json);
    let breaker = Breaker::default();
    let mut reports: Vec<Report> = Vec::with_capacity(total);
    let mut failures = 0usize;
    let mut queue = found.files.into_iter();
    let mut set = tokio::task::JoinSet::new();
    let jobs = usize::from(a.jobs);
    let mut not_started = Vec::new();
    loop {
        while set.len() < jobs && !breaker.is_open() && !exit::interrupted() {
            let Some((path, explicit)) = queue.next() else { break };
            if done.contains(&path) {
                let r = Report::new(path, Status::Resumed);
                progress.file(&r, failures);
                reports.push(r);
                continue;
            }
            set.spawn(job.clone().process(path, explicit, a.json));
        }
        let Some(joined) = set.join_next().await else { break };
        let r = joined.unwrap_or_else(|e| Report::failed(PathBuf::from("?"), anyhow!("task failed: {e}")));
        match r.status {
            Status::Failed => breaker.failure(r.retryable()),
            // A file that is not sealed tells nothing about the KMS.
            Status::NotSealed => breaker.failure(false),
            _ => breaker.success(),
        }
        if r.status == Status::Failed {
            failures += 1;
        }
        progress.file(&r, failures);
        reports.push(r);
    }
    not_started.extend(queue.map(|(p, _)| p));
    progress.finish();

    let summary = Summary {
        op: &op.name(),
        json: a.json,
        dry_run: a.dry_run,
        drop_unverifiable: a.drop_unverifiable,
        journal: &journal_path,
        moved: job.moved_notice.load(Ordering::SeqCst),
        elapsed: started.elapsed(),
        breaker: &breaker,
    };
    report::summarize(&summary, &reports, &not_started)
}
