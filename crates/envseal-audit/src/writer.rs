//! The writer: one process appends to a log, each record chained to the one before, with
//! periodic MACed checkpoints.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::record::{Event, Record, checkpoint_mac, line_hash, now_rfc3339};
use crate::{Alerter, AuditError, AuditKey, GENESIS, io};

/// When appended records are flushed to stable storage.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum FsyncPolicy {
    /// After every record, before `append` returns: an acknowledged record survives a crash
    /// or power loss.
    Always,
    /// At most this long after a record (checked on the next append and on close): a crash
    /// may lose the records of the last interval; a killed process loses none (they are in
    /// the OS page cache).
    Interval(Duration),
    /// Left to the OS.
    Never,
}

/// What a failed append does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum FailMode {
    /// `append` returns the error and the caller fails the operation (the default).
    Closed,
    /// `append` warns on stderr (at most once a minute) and returns `Ok(0)`.
    Open,
}

/// Options of a log.
#[derive(Clone, Debug)]
pub struct AuditOptions {
    /// Flush policy.
    pub fsync: FsyncPolicy,
    /// Failure policy.
    pub on_failure: FailMode,
    /// A checkpoint after this many records.
    pub checkpoint_every: u64,
    /// A checkpoint when this much time passed since the last one (checked on append).
    pub checkpoint_interval: Duration,
}

impl Default for AuditOptions {
    fn default() -> Self {
        Self {
            fsync: FsyncPolicy::Always,
            on_failure: FailMode::Closed,
            checkpoint_every: 100,
            checkpoint_interval: Duration::from_secs(60),
        }
    }
}

struct State {
    file: File,
    /// Length of the file up to the last record written whole.
    len: u64,
    seq: u64,
    prev: String,
    /// First sequence number not yet covered by a checkpoint.
    uncovered_from: u64,
    last_checkpoint: Instant,
    last_sync: Instant,
    unsynced: bool,
    warned: Option<Instant>,
}

/// An open audit log.
pub struct AuditLog {
    path: PathBuf,
    key: AuditKey,
    opts: AuditOptions,
    state: Mutex<State>,
    alerter: Option<Alerter>,
}

impl std::fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditLog").field("path", &self.path).field("key", &self.key).finish_non_exhaustive()
    }
}

/// Reads the last whole line of `file` and removes a torn tail. Returns (seq, prev, len,
/// removed bytes).
fn tail(file: &mut File, path: &Path) -> Result<(u64, String, u64, u64), AuditError> {
    let len = file.metadata().map_err(io(format!("reading {}", path.display())))?.len();
    if len == 0 {
        return Ok((0, GENESIS.to_owned(), 0, 0));
    }
    let window = len.min(1 << 20);
    file.seek(SeekFrom::Start(len - window)).map_err(io("seeking the audit log"))?;
    let mut buf = Vec::with_capacity(window as usize);
    file.read_to_end(&mut buf).map_err(io("reading the audit log"))?;
    let corrupt = |why: &str| AuditError::Corrupt { path: path.display().to_string(), why: why.to_owned() };
    let mut good_len = len;
    let mut removed = 0;
    if buf.last() != Some(&b'\n') {
        // A torn last line (crash mid-write): keep it only if it is a whole record.
        let start = buf.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
        if serde_json::from_slice::<Record>(&buf[start..]).is_ok() {
            file.write_all(b"\n").map_err(io("repairing the audit log"))?;
            buf.push(b'\n');
            good_len = len + 1;
        } else {
            removed = (buf.len() - start) as u64;
            good_len = len - removed;
            file.set_len(good_len).map_err(io("truncating a torn audit record"))?;
            buf.truncate(start);
            if buf.is_empty() && good_len == 0 {
                return Ok((0, GENESIS.to_owned(), 0, removed));
            }
        }
    }
    let body = &buf[..buf.len() - 1];
    let start = body.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
    if start == 0 && window < len {
        return Err(corrupt("its last record is longer than 1 MiB"));
    }
    let line = &body[start..];
    let r: Record = serde_json::from_slice(line).map_err(|_| corrupt("its last line is not an audit record"))?;
    Ok((r.seq, line_hash(line), good_len, removed))
}

impl AuditLog {
    /// Opens (or creates, mode 0600) the log at `path` for appending, continuing its chain,
    /// and records a `LogOpened` event.
    ///
    /// # Errors
    /// [`AuditError::Locked`] if another process writes it; [`AuditError::Io`];
    /// [`AuditError::Corrupt`] if its last line is not a record.
    pub fn open(path: &Path, key: AuditKey, opts: AuditOptions) -> Result<Self, AuditError> {
        let mut o = OpenOptions::new();
        o.read(true).append(true).create(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut o, 0o600);
        let mut file = o.open(path).map_err(io(format!("opening {}", path.display())))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => return Err(AuditError::Locked(path.display().to_string())),
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(AuditError::Io { what: format!("locking {}", path.display()), source: e });
            }
        }
        let (seq, prev, len, removed) = tail(&mut file, path)?;
        let now = Instant::now();
        let log = Self {
            path: path.to_owned(),
            key,
            opts,
            state: Mutex::new(State {
                file,
                len,
                seq,
                prev,
                uncovered_from: seq + 1,
                last_checkpoint: now,
                last_sync: now,
                unsynced: false,
                warned: None,
            }),
            alerter: None,
        };
        let mut ev = Event::new("LogOpened", "log")
            .param("writer", concat!("envseal-audit/", env!("CARGO_PKG_VERSION")))
            .param("pid", std::process::id())
            .param("audit_key_id", log.key.id());
        if removed > 0 {
            ev = ev.param("recovered_torn_bytes", removed);
        }
        let mut st = log.state.lock().unwrap_or_else(PoisonError::into_inner);
        log.write(&mut st, ev.record)?;
        drop(st);
        Ok(log)
    }

    /// Sends every record appended from now on to `alerter`.
    pub fn with_alerter(mut self, alerter: Alerter) -> Self {
        self.alerter = Some(alerter);
        self
    }

    /// The log's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes one record (seq, time and prev filled in) with one `write_all`, then syncs per
    /// the policy. On failure the file is cut back to its last whole record.
    fn write(&self, st: &mut State, mut r: Record) -> Result<Record, AuditError> {
        r.seq = st.seq + 1;
        r.time = now_rfc3339();
        r.prev = st.prev.clone();
        let mut line = serde_json::to_vec(&r).map_err(|e| AuditError::Parse { line: r.seq, why: e.to_string() })?;
        let hash = line_hash(&line);
        line.push(b'\n');
        let result = st.file.write_all(&line).and_then(|()| match self.opts.fsync {
            FsyncPolicy::Always => st.file.sync_data(),
            FsyncPolicy::Interval(d) if st.last_sync.elapsed() >= d => st.file.sync_data(),
            _ => Ok(()),
        });
        if let Err(e) = result {
            // Never leave a torn record for the next one to be appended to.
            let _ = st.file.set_len(st.len);
            return Err(AuditError::Io { what: format!("appending to {}", self.path.display()), source: e });
        }
        match self.opts.fsync {
            FsyncPolicy::Always => st.last_sync = Instant::now(),
            FsyncPolicy::Interval(d) if st.last_sync.elapsed() >= d => {
                st.last_sync = Instant::now();
                st.unsynced = false;
            }
            FsyncPolicy::Interval(_) => st.unsynced = true,
            _ => {}
        }
        st.len += line.len() as u64;
        st.seq = r.seq;
        st.prev = hash;
        Ok(r)
    }

    fn checkpoint(&self, st: &mut State) -> Result<(), AuditError> {
        let mut ev = Event::new("Checkpoint", "log");
        ev.record.first_seq = Some(st.uncovered_from);
        ev.record.last_seq = Some(st.seq);
        ev.record.mac_key_id = Some(self.key.id());
        // The MAC covers this record's seq and prev (the hash of everything before it).
        let seq = st.seq + 1;
        ev.record.mac = Some(checkpoint_mac(&self.key, seq, &st.prev));
        self.write(st, ev.record)?;
        st.uncovered_from = st.seq + 1;
        st.last_checkpoint = Instant::now();
        Ok(())
    }

    /// Appends `event`; returns its sequence number once it is written (and synced under
    /// [`FsyncPolicy::Always`]). Writes a checkpoint after it when one is due.
    ///
    /// # Errors
    /// Under [`FailMode::Closed`], the write error (the caller must fail the operation).
    pub fn append(&self, event: Event) -> Result<u64, AuditError> {
        let mut st = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let result = self.write(&mut st, event.record).and_then(|r| {
            let due = st.seq + 1 - st.uncovered_from >= self.opts.checkpoint_every
                || st.last_checkpoint.elapsed() >= self.opts.checkpoint_interval;
            if due {
                self.checkpoint(&mut st)?;
            }
            Ok(r)
        });
        match result {
            Ok(r) => {
                drop(st);
                if let Some(a) = &self.alerter {
                    a.observe(&r);
                }
                Ok(r.seq)
            }
            Err(e) if self.opts.on_failure == FailMode::Open => {
                if st.warned.is_none_or(|w| w.elapsed() >= Duration::from_secs(60)) {
                    st.warned = Some(Instant::now());
                    eprintln!("envseal: WARNING: audit record not written (fail-open): {e}");
                }
                Ok(0)
            }
            Err(e) => Err(e),
        }
    }

    /// Writes a checkpoint now if records were written since the last one, and syncs.
    ///
    /// # Errors
    /// The write error.
    pub fn flush_checkpoint(&self) -> Result<(), AuditError> {
        let mut st = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if st.seq >= st.uncovered_from {
            self.checkpoint(&mut st)?;
        }
        st.file.sync_data().map_err(io(format!("syncing {}", self.path.display())))
    }

    /// The sequence number of the last record written.
    pub fn last_seq(&self) -> u64 {
        self.state.lock().unwrap_or_else(PoisonError::into_inner).seq
    }
}

impl Drop for AuditLog {
    fn drop(&mut self) {
        // A clean close seals the tail with a checkpoint.
        let _ = self.flush_checkpoint();
    }
}

#[allow(dead_code)]
fn _value(_: Value) {}
