//! Verification: one pass over the log in constant memory, naming every record that was
//! edited, deleted, inserted or reordered.
//!
//! For each line, with `seq` the record's number and `expected` one more than the highest
//! number seen so far:
//! - `seq == expected` and `prev` is the hash of the line before: intact.
//! - `seq == expected` but `prev` is not that hash: if `prev` is the hash of the line two
//!   before, the line before was **inserted**; otherwise the line before was **edited**.
//! - `seq > expected`: records `expected..seq` are missing — **deleted**, unless they turn up
//!   later, in which case they were **reordered**.
//! - `seq < expected`: a number seen already means an **inserted** line; one reported missing
//!   means a **reordered** one.
//!
//! With the audit key, each checkpoint's MAC over (its seq, its prev) is checked: a chain
//! rewritten after an edit (every later `prev` recomputed) fails at the next checkpoint.

use std::collections::BTreeMap;
use std::fmt;
use std::io::{BufRead, BufReader, Read};

use serde::Serialize;

use crate::record::{Record, checkpoint_mac, line_hash};
use crate::{AuditKey, FORMAT_VERSION, GENESIS};

/// Longest line read (a record is far smaller); longer lines are reported unparseable.
const MAX_LINE: usize = 1 << 20;

/// What is wrong with a record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ProblemKind {
    /// Not a record.
    Unparseable,
    /// A format version this reader does not know.
    BadVersion,
    /// The record was modified after it was written.
    Edited,
    /// Records are missing.
    Deleted,
    /// A record that the writer did not write in this place.
    Inserted,
    /// A record out of order.
    Reordered,
    /// A checkpoint whose MAC does not match: the chain before it was rewritten.
    BadCheckpointMac,
    /// A checkpoint made with another audit key.
    UnknownCheckpointKey,
    /// Fewer records than the anchor given (`--expect-last-seq`): the tail was cut.
    Truncated,
}

/// One finding.
#[derive(Clone, Debug, Serialize)]
pub struct Problem {
    /// 1-based line number.
    pub line: u64,
    /// The record's sequence number, if it has one.
    pub seq: Option<u64>,
    /// What.
    pub kind: ProblemKind,
    /// A sentence that says which record and why.
    pub message: String,
}

/// The result of [`verify`].
#[derive(Clone, Debug, Serialize)]
pub struct VerifyReport {
    ok: bool,
    records: u64,
    checkpoints: u64,
    macs_checked: bool,
    last_seq: u64,
    first_time: Option<String>,
    last_time: Option<String>,
    /// Records after the last checkpoint (not yet covered by a MAC).
    unsealed_tail: u64,
    /// The last line has no newline (a write was cut; the writer repairs it on open).
    torn_last_line: bool,
    problems: Vec<Problem>,
}

impl VerifyReport {
    /// Whether no problem was found.
    pub fn ok(&self) -> bool {
        self.ok
    }

    /// Lines read.
    pub fn records(&self) -> u64 {
        self.records
    }

    /// The problems, in line order.
    pub fn problems(&self) -> &[Problem] {
        &self.problems
    }

    /// Whether every line was unparseable (not an audit log at all).
    pub fn unparseable_only(&self) -> bool {
        !self.problems.is_empty() && self.problems.iter().all(|p| p.kind == ProblemKind::Unparseable)
    }

    /// Checks the log against an anchor kept elsewhere: its last record must be at least `seq`.
    pub fn expect_last_seq(&mut self, seq: u64) {
        if self.last_seq < seq {
            self.problems.push(Problem {
                line: self.records,
                seq: None,
                kind: ProblemKind::Truncated,
                message: format!(
                    "records seq {}..={seq} are missing at the end: the log was truncated after line {}",
                    self.last_seq + 1,
                    self.records
                ),
            });
            self.ok = false;
        }
    }
}

impl fmt::Display for VerifyReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for p in &self.problems {
            writeln!(f, "line {}: {:?}: {}", p.line, p.kind, p.message)?;
        }
        write!(
            f,
            "{}: {} records, {} checkpoints ({}), last seq {}",
            if self.ok { "OK" } else { "TAMPERED" },
            self.records,
            self.checkpoints,
            if self.macs_checked { "MACs checked" } else { "MACs NOT checked: no key" },
            self.last_seq
        )?;
        if let (Some(a), Some(b)) = (&self.first_time, &self.last_time) {
            write!(f, ", {a} .. {b}")?;
        }
        if self.unsealed_tail > 0 {
            write!(
                f,
                "\nnote: the last {} record(s) follow the last checkpoint and are not covered by a MAC yet",
                self.unsealed_tail
            )?;
        }
        if self.torn_last_line {
            write!(
                f,
                "\nnote: the last line is incomplete (a write was cut short); the writer removes it when it reopens the log"
            )?;
        }
        Ok(())
    }
}

/// Verifies a log read from `input`. See the module documentation for what is detected.
pub fn verify(input: impl Read, key: Option<&AuditKey>) -> VerifyReport {
    let mut reader = BufReader::new(input);
    let mut problems = Vec::new();
    let mut records = 0u64;
    let mut checkpoints = 0u64;
    let mut expected = 1u64;
    let mut hashes = [GENESIS.to_owned(), String::new()]; // [line before, line two before]
    // Numbers reported missing and not seen yet: start -> (end inclusive, line of the gap).
    let mut missing: BTreeMap<u64, (u64, u64)> = BTreeMap::new();
    let (mut first_time, mut last_time) = (None, None);
    let mut since_checkpoint = 0u64;
    let mut last_seq = 0u64;
    let mut torn = false;
    let mut buf = Vec::new();
    loop {
        buf.clear();
        let n = match reader.by_ref().take(MAX_LINE as u64 + 1).read_until(b'\n', &mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) => {
                problems.push(Problem {
                    line: records + 1,
                    seq: None,
                    kind: ProblemKind::Unparseable,
                    message: format!("read error: {e}"),
                });
                break;
            }
        };
        records += 1;
        let line_no = records;
        if buf.last() == Some(&b'\n') {
            buf.pop();
        } else if n <= MAX_LINE {
            torn = true;
        }
        let hash = line_hash(&buf);
        let r: Record = match serde_json::from_slice(&buf) {
            Ok(r) => r,
            Err(e) => {
                if !(torn && line_no > 1) {
                    problems.push(Problem {
                        line: line_no,
                        seq: None,
                        kind: ProblemKind::Unparseable,
                        message: format!("line {line_no} is not an audit record ({e})"),
                    });
                }
                hashes = [hash, std::mem::take(&mut hashes[0])];
                continue;
            }
        };
        torn = false;
        if r.v != FORMAT_VERSION {
            problems.push(Problem {
                line: line_no,
                seq: Some(r.seq),
                kind: ProblemKind::BadVersion,
                message: format!("line {line_no} has format version {} (this envseal reads {FORMAT_VERSION})", r.v),
            });
        }
        let p = |kind, message| Problem { line: line_no, seq: Some(r.seq), kind, message };
        if r.seq == expected {
            if r.prev != hashes[0] {
                if r.prev == hashes[1] && line_no > 1 {
                    problems.push(Problem {
                        line: line_no - 1,
                        seq: None,
                        kind: ProblemKind::Inserted,
                        message: format!(
                            "line {} is not part of the chain: seq {} follows the line before it",
                            line_no - 1,
                            r.seq
                        ),
                    });
                } else {
                    problems.push(Problem {
                        line: line_no.saturating_sub(1),
                        seq: r.seq.checked_sub(1),
                        kind: ProblemKind::Edited,
                        message: format!(
                            "line {} (seq {}) was modified: its hash does not match prev of seq {}",
                            line_no - 1,
                            r.seq - 1,
                            r.seq
                        ),
                    });
                }
            }
            expected = r.seq + 1;
        } else if r.seq > expected {
            missing.insert(expected, (r.seq - 1, line_no));
            expected = r.seq + 1;
        } else if let Some((&start, &(end, gap_line))) =
            missing.range(..=r.seq).next_back().filter(|(_, (end, _))| *end >= r.seq)
        {
            // A number reported missing turns up later: reordered.
            missing.remove(&start);
            if start < r.seq {
                missing.insert(start, (r.seq - 1, gap_line));
            }
            if r.seq < end {
                missing.insert(r.seq + 1, (end, gap_line));
            }
            problems.push(p(
                ProblemKind::Reordered,
                format!("line {line_no}: seq {} appears after seq {}", r.seq, expected - 1),
            ));
        } else {
            problems.push(p(
                ProblemKind::Inserted,
                format!("line {line_no} is not part of the chain: seq {} was already used", r.seq),
            ));
        }
        if r.event == "Checkpoint" && r.source == "log" {
            checkpoints += 1;
            since_checkpoint = 0;
            if let Some(k) = key {
                if r.mac_key_id.as_deref() != Some(k.id().as_str()) {
                    problems.push(p(
                        ProblemKind::UnknownCheckpointKey,
                        format!(
                            "line {line_no}: checkpoint made with audit key {} (given key {})",
                            r.mac_key_id.as_deref().unwrap_or("?"),
                            k.id()
                        ),
                    ));
                } else if r.mac.as_deref().map(str::as_bytes) != Some(checkpoint_mac(k, r.seq, &r.prev).as_bytes()) {
                    problems.push(p(
                        ProblemKind::BadCheckpointMac,
                        format!("line {line_no}: checkpoint seq {} does not authenticate the records before it: the chain was rewritten", r.seq),
                    ));
                }
            }
        } else {
            since_checkpoint += 1;
        }
        if first_time.is_none() {
            first_time = Some(r.time.clone());
        }
        last_time = Some(r.time.clone());
        last_seq = last_seq.max(r.seq);
        hashes = [hash, std::mem::take(&mut hashes[0])];
    }
    for (start, (end, line)) in missing {
        let range =
            if start == end { format!("record seq {start} is") } else { format!("records seq {start}..={end} are") };
        problems.push(Problem {
            line,
            seq: Some(start),
            kind: ProblemKind::Deleted,
            message: format!("{range} missing between line {} and line {line}", line - 1),
        });
    }
    problems.sort_by_key(|p| p.line);
    VerifyReport {
        ok: problems.is_empty(),
        records,
        checkpoints,
        macs_checked: key.is_some(),
        last_seq,
        first_time,
        last_time,
        unsealed_tail: since_checkpoint,
        torn_last_line: torn,
        problems,
    }
}
