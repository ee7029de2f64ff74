#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod alert;
mod key;
mod query;
mod record;
mod verify;
mod writer;

pub use crate::alert::{Alert, AlertRules, AlertSink, Alerter};
pub use crate::key::AuditKey;
pub use crate::query::{Query, format_table, parse_time, query};
pub use crate::record::{Event, Outcome, PrincipalRecord, Record, checkpoint_mac, line_hash};
pub use crate::verify::{Problem, ProblemKind, VerifyReport, verify};
pub use crate::writer::{AuditLog, AuditOptions, FailMode, FsyncPolicy};

/// Format version of records.
pub const FORMAT_VERSION: u32 = 1;

/// The `prev` of the first record of a log: 64 zeros.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Errors of the audit trail.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuditError {
    /// Reading or writing the log or the key failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// Another process writes this log.
    #[error("the audit log {0} is locked by another writer (one writer per log)")]
    Locked(String),
    /// The key file is not a 32-byte key in hex.
    #[error("the audit key file {0} is not 64 hex characters")]
    BadKey(String),
    /// The log's last record cannot be continued.
    #[error("the audit log {path} cannot be continued: {why}")]
    Corrupt {
        /// The log.
        path: String,
        /// Why.
        why: String,
    },
    /// A record could not be parsed.
    #[error("line {line}: {why}")]
    Parse {
        /// 1-based line number.
        line: u64,
        /// Why.
        why: String,
    },
}

pub(crate) fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> AuditError {
    let what = what.into();
    move |source| AuditError::Io { what, source }
}
