//! What `envseal rewrap` tells: one report per file, the progress (a bar on a terminal, else one
//! line per file on stderr), and the summary at the end (text on stderr, or `--json` on
//! stdout), with the exit code.

use std::io;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Result;
use envseal_core::WrappedKey;
use envseal_core::rewrap::breaker::Breaker;
use envseal_core::rewrap::{EntryReport, EntryResult};

use crate::exit::{self, Exit};

/// How one file ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Rewrapped,
    Already,
    WouldChange,
    NotSealed,
    Resumed,
    Failed,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Rewrapped => "rewrapped",
            Status::Already => "already",
            Status::WouldChange => "would-change",
            Status::NotSealed => "not-sealed",
            Status::Resumed => "resumed",
            Status::Failed => "failed",
        }
    }
}

/// What happened to one file.
pub struct Report {
    /// The file.
    pub path: PathBuf,
    /// How it ended.
    pub status: Status,
    /// Its entries as read.
    pub before: Vec<WrappedKey>,
    /// Its entries as written (or as read, when unchanged).
    pub after: Vec<WrappedKey>,
    /// Dry run: what each entry would become.
    pub plan: Vec<String>,
    /// Whether its data key passed through this process (a move across backends).
    pub moved: bool,
    /// Entries that could not be verified (kept, or dropped with --drop-unverifiable).
    pub unverifiable: Vec<String>,
    /// Re-keyed (new data key) after a removal.
    pub rekeyed: bool,
    /// Why it failed.
    pub error: Option<anyhow::Error>,
}

impl Report {
    pub fn new(path: PathBuf, status: Status) -> Self {
        Self {
            path,
            status,
            before: Vec::new(),
            after: Vec::new(),
            plan: Vec::new(),
            moved: false,
            unverifiable: Vec::new(),
            rekeyed: false,
            error: None,
        }
    }

    pub fn failed(path: PathBuf, e: anyhow::Error) -> Self {
        Self { error: Some(e), ..Self::new(path, Status::Failed) }
    }

    pub fn retryable(&self) -> bool {
        self.error.as_ref().is_some_and(|e| {
            e.chain().any(|c| {
                c.downcast_ref::<envseal_core::Error>().is_some_and(|e| e.is_retryable())
                    || c.downcast_ref::<envseal_core::KmsError>().is_some_and(|e| e.is_retryable())
            })
        })
    }
}

pub fn entry_short(e: &WrappedKey) -> String {
    format!("{} {} v{}", e.backend, e.key_id, e.key_version)
}

pub fn keys_json(keys: &[WrappedKey]) -> serde_json::Value {
    keys.iter().map(crate::opts::entry_json).collect()
}

/// Lines for the entries a job could not verify.
pub fn unverifiable_lines(report: &[EntryReport]) -> Vec<String> {
    report
        .iter()
        .filter_map(|r| match &r.result {
            EntryResult::Unverifiable { reason, dropped } => Some(format!(
                "entry {} ({} {} v{}) could not be verified, {}: {reason}",
                r.index.unwrap_or(0),
                r.backend,
                r.key_id,
                r.key_version,
                if *dropped { "dropped" } else { "kept" }
            )),
            _ => None,
        })
        .collect()
}

/// Progress on stderr.
pub enum Progress {
    Bar(indicatif::ProgressBar),
    Lines { quiet: bool },
}

impl Progress {
    pub fn new(total: u64, json: bool) -> Self {
        use std::io::IsTerminal;
        if io::stderr().is_terminal() {
            let bar = indicatif::ProgressBar::new(total);
            if let Ok(style) = indicatif::ProgressStyle::with_template(
                "{spinner} [{elapsed_precise}] {wide_bar} {pos}/{len} files  {per_sec}  ETA {eta}  {msg}",
            ) {
                bar.set_style(style);
            }
            bar.enable_steady_tick(Duration::from_millis(200));
            Progress::Bar(bar)
        } else {
            Progress::Lines { quiet: json }
        }
    }

    pub fn file(&self, r: &Report, failures: usize) {
        let line = match r.status {
            Status::Rewrapped => format!(
                "{}: {} -> {}",
                r.path.display(),
                r.before.iter().map(entry_short).collect::<Vec<_>>().join(", "),
                r.after.iter().map(entry_short).collect::<Vec<_>>().join(", ")
            ),
            Status::Already => format!("{}: already at the target", r.path.display()),
            Status::WouldChange => format!("{}: would rewrap: {}", r.path.display(), r.plan.join(", ")),
            Status::Resumed => format!("{}: done in an earlier run (journal)", r.path.display()),
            Status::NotSealed => return,
            Status::Failed => format!(
                "{}: FAILED: {}",
                r.path.display(),
                r.error.as_ref().map(|e| format!("{e:#}")).unwrap_or_default()
            ),
        };
        match self {
            Progress::Bar(bar) => {
                if r.status == Status::Failed || r.status == Status::WouldChange {
                    bar.println(format!("envseal: {line}"));
                }
                if failures > 0 {
                    bar.set_message(format!("{failures} failed"));
                }
                bar.inc(1);
            }
            Progress::Lines { quiet } => {
                if !quiet || r.status == Status::Failed {
                    eprintln!("envseal: {line}");
                }
            }
        }
    }

    pub fn finish(&self) {
        if let Progress::Bar(bar) = self {
            bar.finish_and_clear();
        }
    }
}

/// The job as a whole, for the summary.
pub struct Summary<'a> {
    /// The operation's stable name (`to-latest`, `to:KEY`, ...).
    pub op: &'a str,
    /// `--json`.
    pub json: bool,
    /// `--dry-run`.
    pub dry_run: bool,
    /// `--drop-unverifiable`.
    pub drop_unverifiable: bool,
    /// The journal file.
    pub journal: &'a Path,
    /// Whether some data key passed through this process.
    pub moved: bool,
    /// How long the job took.
    pub elapsed: Duration,
    /// The job's circuit breaker.
    pub breaker: &'a Breaker,
}

/// Prints the summary (stderr, or JSON on stdout) and returns the exit code of the job.
pub fn summarize(s: &Summary<'_>, reports: &[Report], not_started: &[PathBuf]) -> Result<ExitCode> {
    let Summary { op, dry_run, journal, breaker, elapsed, .. } = *s;
    let count = |st: Status| reports.iter().filter(|r| r.status == st).count();
    let failed: Vec<&Report> = reports.iter().filter(|r| r.status == Status::Failed).collect();
    let interrupted = exit::interrupted();
    let code = if interrupted {
        Exit::Interrupted
    } else if breaker.is_open() {
        Exit::Unavailable
    } else if failed.is_empty() {
        Exit::Success
    } else {
        let codes: Vec<Exit> = failed.iter().filter_map(|r| r.error.as_ref()).map(|e| exit::classify(e).0).collect();
        match codes.first() {
            Some(c) if codes.iter().all(|x| x == c) => *c,
            _ => Exit::Other,
        }
    };
    let processed = reports.iter().filter(|r| r.status != Status::Resumed).count();
    let rate = processed as f64 / elapsed.as_secs_f64().max(1e-9);
    // A warning, even with --json (data on stdout, messages on stderr).
    let unverifiable: Vec<&Report> = reports.iter().filter(|r| !r.unverifiable.is_empty()).collect();
    if !unverifiable.is_empty() {
        eprintln!("envseal: warning: entries that could not be verified (they do not open their file):");
        for r in &unverifiable {
            for l in &r.unverifiable {
                eprintln!("  {}: {l}", r.path.display());
            }
        }
        if !s.drop_unverifiable {
            eprintln!("envseal: hint: --drop-unverifiable removes them (each file keeps at least one verified entry)");
        }
    }

    if s.json {
        let files: Vec<serde_json::Value> = reports
            .iter()
            .filter(|r| r.status != Status::NotSealed)
            .map(|r| {
                serde_json::json!({
                    "path": r.path, "status": r.status.as_str(),
                    "before": keys_json(&r.before), "after": keys_json(&r.after),
                    "plan": if dry_run { Some(&r.plan) } else { None },
                    "data_key_passed_through": r.moved,
                    "rekeyed": r.rekeyed,
                    "unverifiable": r.unverifiable,
                    "error": r.error.as_ref().map(|e| format!("{e:#}")),
                    "exit_code": r.error.as_ref().map(|e| exit::classify(e).0.code()),
                })
            })
            .collect();
        let v = serde_json::json!({
            "operation": op,
            "dry_run": dry_run,
            "journal": if dry_run { None } else { Some(journal) },
            "total": reports.len() + not_started.len() - count(Status::NotSealed),
            "rewrapped": count(Status::Rewrapped),
            "would_change": count(Status::WouldChange),
            "already_at_target": count(Status::Already),
            "resumed": count(Status::Resumed),
            "failed": failed.len(),
            "unverifiable_entries": reports.iter().map(|r| r.unverifiable.len()).sum::<usize>(),
            "not_started": not_started,
            "ignored_not_sealed": count(Status::NotSealed),
            "circuit_breaker_open": breaker.is_open(),
            "interrupted": interrupted,
            "data_key_passed_through": s.moved,
            "seconds": elapsed.as_secs_f64(),
            "files_per_second": rate,
            "exit_code": code.code(),
            "files": files,
        });
        outln!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        let mut parts: Vec<String> = Vec::new();
        for (n, label) in [
            (count(Status::Rewrapped), "rewrapped"),
            (count(Status::WouldChange), "would change"),
            (count(Status::Already), "already at the target"),
            (count(Status::Resumed), "done earlier (journal)"),
            (failed.len(), "failed"),
            (not_started.len(), "not started"),
        ] {
            if n > 0 || label == "failed" {
                parts.push(format!("{n} {label}"));
            }
        }
        eprintln!("envseal: rewrap {}: {} in {:.2} s ({rate:.0} files/s)", op, parts.join(", "), elapsed.as_secs_f64());
        if !failed.is_empty() {
            eprintln!("envseal: failed files:");
            for r in &failed {
                eprintln!("  {}: {}", r.path.display(), r.error.as_ref().map(|e| format!("{e:#}")).unwrap_or_default());
            }
        }
        if breaker.is_open() {
            eprintln!(
                "envseal: error: the KMS looks unavailable ({} files in a row failed after retries); \
                 stopped, {} files not started",
                breaker.threshold(),
                not_started.len()
            );
            eprintln!("envseal: hint: retry later with --resume (journal {})", journal.display());
        } else if interrupted {
            eprintln!("envseal: interrupted; files in flight were left unchanged; --resume continues");
        } else if !failed.is_empty() {
            let hint = failed.first().and_then(|r| r.error.as_ref()).and_then(|e| exit::classify(e).1);
            if let Some(h) = hint {
                eprintln!("envseal: hint: {h}");
            }
        }
    }
    Ok(code.status())
}
