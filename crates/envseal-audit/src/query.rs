//! Searching a log: filters over a stream of records, and a table for people.

use std::io::{BufRead, BufReader, Read};
use std::time::{Duration, SystemTime};

use envseal_support::wildcard::{Pattern, Token};

use crate::record::Record;
use crate::{AuditError, Outcome};

/// Filters; every one given must match.
#[derive(Clone, Debug, Default)]
pub struct Query {
    /// At or after.
    pub since: Option<SystemTime>,
    /// Before.
    pub until: Option<SystemTime>,
    /// Principal name, ARN or access key id (`*` wildcards).
    pub principal: Option<String>,
    /// Event name (`*` wildcards).
    pub event: Option<String>,
    /// Key id, or a part of it or of an alias parameter.
    pub key: Option<String>,
    /// Outcome.
    pub outcome: Option<Outcome>,
    /// `kms`, `sts`, `iam`, `log`.
    pub source: Option<String>,
    /// At most this many records.
    pub limit: Option<usize>,
}

/// `*` matches any run of characters (a `?` is an ordinary character here); case-insensitive.
fn glob(pattern: &str, text: &str) -> bool {
    Pattern::with_syntax(pattern, true, |c| if c == '*' { Token::AnyRun } else { Token::Char(c) }).matches(text)
}

impl Query {
    /// Whether `r` passes every filter.
    pub fn matches(&self, r: &Record) -> bool {
        if self.since.is_some() || self.until.is_some() {
            let Ok(t) = humantime::parse_rfc3339_weak(&r.time) else { return false };
            if self.since.is_some_and(|s| t < s) || self.until.is_some_and(|u| t >= u) {
                return false;
            }
        }
        if let Some(p) = &self.principal {
            let Some(who) = &r.principal else { return false };
            let fields = [Some(&who.name), who.arn.as_ref(), who.access_key_id.as_ref()];
            if !fields.into_iter().flatten().any(|f| glob(p, f)) {
                return false;
            }
        }
        if self.event.as_ref().is_some_and(|e| !glob(e, &r.event)) {
            return false;
        }
        if let Some(k) = &self.key {
            let in_key = r.key_id.as_ref().is_some_and(|id| id.contains(k.as_str()));
            let in_params = ["KeyId", "AliasName", "TargetKeyId", "DestinationKeyId"]
                .iter()
                .any(|n| r.params.get(*n).and_then(|v| v.as_str()).is_some_and(|v| v.contains(k.as_str())));
            if !in_key && !in_params {
                return false;
            }
        }
        if self.outcome.is_some() && r.outcome != self.outcome {
            return false;
        }
        if self.source.as_ref().is_some_and(|s| *s != r.source) {
            return false;
        }
        true
    }
}

/// The records of `input` that match `q`, read one line at a time.
pub fn query<'q>(input: impl Read + 'q, q: &'q Query) -> impl Iterator<Item = Result<Record, AuditError>> + 'q {
    let lines = BufReader::new(input).lines().enumerate();
    lines
        .filter_map(move |(i, line)| {
            let line = match line {
                Ok(l) => l,
                Err(e) => return Some(Err(AuditError::Io { what: "reading the audit log".into(), source: e })),
            };
            if line.trim().is_empty() {
                return None;
            }
            match serde_json::from_str::<Record>(&line) {
                Ok(r) if q.matches(&r) => Some(Ok(r)),
                Ok(_) => None,
                Err(e) => Some(Err(AuditError::Parse { line: i as u64 + 1, why: e.to_string() })),
            }
        })
        .take(q.limit.unwrap_or(usize::MAX))
}

/// An RFC 3339 time, or an age (`30m`, `1h`, `2d`) before now.
///
/// # Errors
/// A message naming the accepted forms.
pub fn parse_time(s: &str) -> Result<SystemTime, String> {
    if let Ok(t) = humantime::parse_rfc3339_weak(s) {
        return Ok(t);
    }
    match humantime::parse_duration(s) {
        Ok(d) => Ok(SystemTime::now().checked_sub(d).unwrap_or(SystemTime::UNIX_EPOCH)),
        Err(_) => Err(format!("{s:?} is neither an RFC 3339 time (2026-11-28T10:00:00Z) nor an age (30m, 1h, 2d)")),
    }
}

/// Records as a table: time, event, principal, key, outcome.
pub fn format_table(records: &[Record]) -> String {
    let rows: Vec<[String; 5]> = records
        .iter()
        .map(|r| {
            let who = r
                .principal
                .as_ref()
                .map_or("-".to_owned(), |p| if p.name.is_empty() { p.kind.clone() } else { p.name.clone() });
            let outcome = match (r.outcome, &r.error_code) {
                (Some(Outcome::Success), _) => "success".to_owned(),
                (Some(o), Some(c)) => format!("{}: {c}", if o == Outcome::Denied { "denied" } else { "error" }),
                (Some(Outcome::Denied), None) => "denied".to_owned(),
                (Some(_), None) => "error".to_owned(),
                (None, _) => "-".to_owned(),
            };
            [r.time.clone(), r.event.clone(), who, r.key_id.clone().unwrap_or_else(|| "-".into()), outcome]
        })
        .collect();
    let head = ["TIME", "EVENT", "PRINCIPAL", "KEY", "OUTCOME"];
    let mut width = head.map(str::len);
    for row in &rows {
        for (w, c) in width.iter_mut().zip(row) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut out = String::new();
    for row in std::iter::once(head.map(str::to_owned)).chain(rows) {
        let cells: Vec<String> = row.iter().zip(width).map(|(c, w)| format!("{c:<w$}")).collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out
}

#[allow(dead_code)]
const _D: Duration = Duration::ZERO;

#[cfg(test)]
mod tests {
    use super::glob;

    #[test]
    fn globs() {
        assert!(glob("Generate*", "GenerateDataKey"));
        assert!(glob("*key*", "GenerateDataKey"));
        assert!(glob("decrypt", "Decrypt"));
        assert!(!glob("Gen*Z", "GenerateDataKey"));
        assert!(glob("*", ""));
    }
}
