//! The journal of `envseal rewrap`: an append-only file of JSON lines, fsync'd after each, that
//! `--resume` reads to skip the files an earlier run of the same operation finished.
//!
//! The first line of a job names it (`job`, `op`, `verify`, `started`); each finished file adds
//! a line (`job`, `path`, `status`, `keys`), written after the file was renamed into place.

use std::collections::HashSet;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use anyhow::{Context, Result};
use envseal_core::rewrap::Shard;

/// Name suffix of the default journal (`.<first PATH name>.envseal-rewrap.jsonl`, beside it).
pub const JOURNAL_SUFFIX: &str = ".envseal-rewrap.jsonl";

/// The append-only journal: one JSON object per line, fsync'd after each.
pub struct Journal {
    path: PathBuf,
    file: Mutex<File>,
    /// This job's random id, on each of its lines.
    pub job: String,
}

impl Journal {
    /// Opens (creates, mode 0600) the journal and records the start of a job of operation `op`
    /// (its stable name) with verification mode `verify`.
    pub fn open(path: &Path, op: &str, verify: &str) -> Result<Self> {
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(path)
            .with_context(|| format!("cannot open the journal {}", path.display()))?;
        let job = hex::encode(envseal_core::random::array::<8>());
        let j = Self { path: path.to_path_buf(), file: Mutex::new(file), job };
        j.append(&serde_json::json!({
            "job": j.job, "op": op, "verify": verify,
            "started": humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
        }))?;
        Ok(j)
    }

    /// Appends one line.
    pub fn append(&self, v: &serde_json::Value) -> Result<()> {
        let mut line = serde_json::to_vec(v)?;
        line.push(b'\n');
        let mut f = self.file.lock().unwrap_or_else(|p| p.into_inner());
        // One write of a whole line to an O_APPEND file, then fsync: a crash loses at most the
        // last line, never mixes two.
        f.write_all(&line).and_then(|_| f.sync_data()).with_context(|| format!("cannot write {}", self.path.display()))
    }

    /// Paths recorded as done (rewrapped or already at the target) by jobs of operation `op`.
    /// Lines that do not parse (a line cut by a crash) are ignored.
    pub fn done(path: &Path, op: &str) -> Result<HashSet<PathBuf>> {
        let f = match File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(HashSet::new()),
            Err(e) => return Err(e).with_context(|| format!("cannot read the journal {}", path.display())),
        };
        let mut jobs = HashSet::new();
        let mut done = HashSet::new();
        for line in BufReader::new(f).lines() {
            let Ok(v) = serde_json::from_str::<serde_json::Value>(&line?) else { continue };
            let job = v["job"].as_str().unwrap_or_default().to_string();
            if let Some(o) = v["op"].as_str() {
                if o == op {
                    jobs.insert(job);
                }
                continue;
            }
            if jobs.contains(&job)
                && matches!(v["status"].as_str(), Some("rewrapped" | "already"))
                && let Some(p) = v["path"].as_str()
            {
                done.insert(PathBuf::from(p));
            }
        }
        Ok(done)
    }
}

/// The default journal of a job whose first PATH is `first`: `.<name>.envseal-rewrap.jsonl`
/// beside it.
pub fn default_journal(first: &Path, shard: Option<Shard>) -> Result<PathBuf> {
    // A symlink argument keeps its journal beside the link: canonicalizing it would write the
    // journal into the directory the link points to, which may be outside the tree given.
    let is_link = fs::symlink_metadata(first).is_ok_and(|m| m.file_type().is_symlink());
    let abs = if is_link { std::path::absolute(first) } else { fs::canonicalize(first) }
        .with_context(|| format!("cannot read {}", first.display()))?;
    let name = abs.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "root".into());
    let dir = abs.parent().map(Path::to_path_buf).unwrap_or_else(|| PathBuf::from("."));
    let part = shard.map(|s| format!(".shard-{}-of-{}", s.index(), s.count())).unwrap_or_default();
    Ok(dir.join(format!(".{name}{part}{JOURNAL_SUFFIX}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn journal_resume_set() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("j.jsonl");
        let op = "to-latest";
        let j = Journal::open(&p, op, "decrypt").unwrap();
        for (path, status) in [("/a", "rewrapped"), ("/b", "failed"), ("/c", "already")] {
            j.append(&serde_json::json!({"job": j.job, "path": path, "status": status})).unwrap();
        }
        let other = Journal::open(&p, "to:k", "decrypt").unwrap();
        other.append(&serde_json::json!({"job": other.job, "path": "/d", "status": "rewrapped"})).unwrap();
        // A line cut by a crash.
        OpenOptions::new().append(true).open(&p).unwrap().write_all(b"{\"job\": \"x\", \"pa").unwrap();
        let done = Journal::done(&p, op).unwrap();
        assert_eq!(done, [PathBuf::from("/a"), PathBuf::from("/c")].into_iter().collect());
        assert_eq!(Journal::done(&p, "to:k").unwrap().len(), 1);
        assert!(Journal::done(&dir.path().join("none"), op).unwrap().is_empty());
    }
}
