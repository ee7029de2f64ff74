//! `envseal audit verify | query`: check and search an audit trail written by `envseal kms
//! serve --audit-log` or by a local keystore with auditing on (docs/AUDIT.md).

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Args, Subcommand, ValueEnum};
use envseal_audit::{AuditKey, Query};

use crate::exit;
use crate::fsio::open_input;

/// `envseal audit ...`.
#[derive(Subcommand, Debug)]
pub enum AuditCmd {
    /// Check an audit log's hash chain and checkpoint MACs; name every record that was edited,
    /// deleted, inserted or reordered.
    #[command(after_help = "\
Examples:
  envseal audit verify audit.log --key ~/.local/share/envseal/audit.key
  envseal audit verify audit.log --json | jq .problems

Exit status: 0 when the log is intact, 7 when it was tampered with (each problem is listed),
3 when it is not an audit log. Without --key the hash chain is checked but not the checkpoint
MACs, so a rewrite of the whole chain would go unnoticed (said in the output).")]
    Verify(VerifyArgs),
    /// Search an audit log: by time, principal, event, key and outcome.
    #[command(after_help = "\
Examples:
  envseal audit query audit.log --since 1h --outcome denied
  envseal audit query audit.log --principal alice --event 'Generate*' --json
  envseal audit query audit.log --key alias/web --since 2026-11-01T00:00:00Z --until 2026-11-02T00:00:00Z")]
    Query(QueryArgs),
}

/// Options of `envseal audit verify`.
#[derive(Args, Debug)]
pub struct VerifyArgs {
    /// The log (`-` for stdin).
    log: PathBuf,
    /// The audit key that MACs checkpoints (never stored in the log).
    #[arg(long, value_name = "FILE", env = "ENVSEAL_AUDIT_KEY")]
    key: Option<PathBuf>,
    /// The sequence number the last record must have (an anchor kept elsewhere: detects a
    /// truncated tail).
    #[arg(long, value_name = "SEQ")]
    expect_last_seq: Option<u64>,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

/// Outcomes to filter on.
#[derive(ValueEnum, Clone, Copy, Debug)]
pub enum OutcomeArg {
    /// The operation succeeded.
    Success,
    /// Refused by a policy.
    Denied,
    /// Failed for another reason.
    Error,
}

/// Options of `envseal audit query`.
#[derive(Args, Debug)]
pub struct QueryArgs {
    /// The log (`-` for stdin).
    log: PathBuf,
    /// Records at or after this time (RFC 3339, or an age such as 30m, 1h, 2d).
    #[arg(long, value_name = "TIME")]
    since: Option<String>,
    /// Records before this time (same forms).
    #[arg(long, value_name = "TIME")]
    until: Option<String>,
    /// Principal name, ARN or access key id (`*` wildcards).
    #[arg(long, value_name = "P")]
    principal: Option<String>,
    /// Event name (`*` wildcards), e.g. `Decrypt`, `Generate*`, `CreateAccessKey`.
    #[arg(long, value_name = "E")]
    event: Option<String>,
    /// Key id or alias.
    #[arg(long, value_name = "K")]
    key: Option<String>,
    /// Outcome.
    #[arg(long, value_enum)]
    outcome: Option<OutcomeArg>,
    /// At most this many records.
    #[arg(long, value_name = "N")]
    limit: Option<usize>,
    /// One JSON record per line instead of a table.
    #[arg(long)]
    json: bool,
}

/// Runs `envseal audit ...`.
pub fn run(cmd: AuditCmd) -> Result<ExitCode> {
    match cmd {
        AuditCmd::Verify(a) => verify(a),
        AuditCmd::Query(a) => query(a),
    }
}

fn verify(a: VerifyArgs) -> Result<ExitCode> {
    let key = match &a.key {
        Some(p) => Some(AuditKey::load(p).with_context(|| format!("reading the audit key {}", p.display()))?),
        None => None,
    };
    let input = open_input(&a.log)?;
    let mut report = envseal_audit::verify(input, key.as_ref());
    if let Some(seq) = a.expect_last_seq {
        report.expect_last_seq(seq);
    }
    if a.json {
        outln!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        outln!("{report}");
        if key.is_none() {
            eprintln!("envseal: checkpoint MACs were not checked (no --key): a rewritten chain would not be detected");
        }
    }
    if report.ok() {
        Ok(ExitCode::SUCCESS)
    } else if report.records() == 0 && report.unparseable_only() {
        Err(exit::fail(exit::Exit::BadInput, format!("{} is not an envseal audit log", a.log.display()), None))
    } else {
        let _ = std::io::stdout().flush();
        Err(exit::fail(
            exit::Exit::Tampered,
            format!(
                "the audit log {} was tampered with ({} problem(s) above)",
                a.log.display(),
                report.problems().len()
            ),
            Some("compare with a backup, and find who could write the log"),
        ))
    }
}

fn query(a: QueryArgs) -> Result<ExitCode> {
    let mut q = Query::default();
    if let Some(s) = &a.since {
        q.since = Some(
            envseal_audit::parse_time(s).map_err(|e| exit::fail(exit::Exit::Usage, format!("--since: {e}"), None))?,
        );
    }
    if let Some(s) = &a.until {
        q.until = Some(
            envseal_audit::parse_time(s).map_err(|e| exit::fail(exit::Exit::Usage, format!("--until: {e}"), None))?,
        );
    }
    q.principal = a.principal.clone();
    q.event = a.event.clone();
    q.key = a.key.clone();
    q.outcome = a.outcome.map(|o| match o {
        OutcomeArg::Success => envseal_audit::Outcome::Success,
        OutcomeArg::Denied => envseal_audit::Outcome::Denied,
        OutcomeArg::Error => envseal_audit::Outcome::Error,
    });
    q.limit = a.limit;
    let input = open_input(&a.log)?;
    let mut records = Vec::new();
    for r in envseal_audit::query(input, &q) {
        let r = r.map_err(|e| exit::fail(exit::Exit::BadInput, format!("{}: {e}", a.log.display()), None))?;
        if a.json {
            outln!("{}", serde_json::to_string(&r)?);
        } else {
            records.push(r);
        }
    }
    if !a.json {
        out!("{}", envseal_audit::format_table(&records));
    }
    Ok(ExitCode::SUCCESS)
}
