//! One `envseal rewrap` job: the operation, and what it does to each file (read, plan, KMS
//! calls through the library's rewrap, atomic write, journal line). Which backend rewraps which
//! entries is decided by the library's planner (`envseal_core::rewrap::plan`).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Result;
use envseal_core::container::Preamble;
use envseal_core::entries::Trust;
use envseal_core::rewrap::plan::Planner;
use envseal_core::rewrap::{
    self, AddEntry, EntryReport, EntryStatus, Outcome, RemoveEntries, Rewrapper, Target, ValueFile,
};
use envseal_core::{Kms, WrappedKey};
use envseal_stores::{Format, Metadata};

use super::backends::Backends;
use super::files::{self, Loaded};
use super::journal::Journal;
use super::report::{Report, Status, entry_short, keys_json, unverifiable_lines};
use crate::backend;
use crate::exit;

/// The operation, from the mutually exclusive flags.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// `--to-latest`.
    ToLatest,
    /// `--to KEY`.
    To(String),
    /// `--add-key URI[#KEY]`.
    Add { uri: String, key: Option<String> },
    /// `--remove-key KEY_ID`.
    Remove(String),
}

impl Op {
    /// Stable name, recorded in the journal and compared by --resume.
    pub fn name(&self) -> String {
        match self {
            Op::ToLatest => "to-latest".into(),
            Op::To(k) => format!("to:{k}"),
            Op::Add { uri, key } => format!("add:{uri}#{}", key.as_deref().unwrap_or("")),
            Op::Remove(k) => format!("remove:{k}"),
        }
    }

    /// The rewrap target of the operations the planner handles.
    fn target(&self) -> Option<Target> {
        match self {
            Op::ToLatest => Some(Target::Latest),
            Op::To(k) => Some(Target::Key(k.clone())),
            Op::Add { .. } | Op::Remove(_) => None,
        }
    }
}

/// A running job: shared by the tasks of the files in flight.
pub struct Job {
    /// The operation.
    pub op: Op,
    /// `--dry-run`.
    pub dry_run: bool,
    /// `--no-rekey`.
    pub no_rekey: bool,
    /// Which rewrapper handles which entries; the job's backends.
    pub planner: Planner<Backends>,
    /// The keys whose entries may be sent to a KMS (`--allow-key`).
    pub trust: Trust,
    /// The journal (none in a dry run).
    pub journal: Option<Journal>,
    /// Whether a data key passed through this process (the note was printed).
    pub moved_notice: AtomicBool,
}

/// What `--add-key` needs for one file: the rewrapper making the entry on the destination,
/// the backends that open the existing entries, and the key.
struct Adder {
    rw: Rewrapper,
    sources: Vec<Arc<dyn Kms>>,
    key: String,
}

/// A sealed object, in the form the library's rewrap functions take.
#[derive(Clone, Copy)]
enum Form<'a> {
    Container(&'a Preamble),
    Values(&'a ValueFile<'a>),
}

impl Form<'_> {
    fn entries(&self) -> &[WrappedKey] {
        match self {
            Form::Container(p) => &p.entries,
            Form::Values(f) => f.keys,
        }
    }
}

/// What the job's operation does to a file.
enum Change {
    /// Nothing to write (the reports may list unverifiable entries).
    Unchanged(Vec<EntryReport>),
    /// New entries, every other byte unchanged.
    Entries { entries: Vec<WrappedKey>, moved: bool, report: Vec<EntryReport> },
    /// A re-keyed value-level file: new bytes, proven to open.
    Rekeyed { bytes: Vec<u8>, entries: Vec<WrappedKey> },
}

impl Change {
    fn of(out: Outcome) -> Self {
        match out.entries {
            Some(entries) => Change::Entries { entries, moved: out.moved, report: out.report },
            None => Change::Unchanged(out.report),
        }
    }
}

impl Job {
    /// Dry run: how each entry stands, from read-only describe calls.
    async fn describe(&self, entries: &[WrappedKey]) -> Result<(bool, Vec<String>)> {
        let mut lines = Vec::new();
        let mut changes = false;
        match &self.op {
            Op::Add { uri, key } => {
                let (dest, key) = self.add_dest(uri, key)?;
                let key = &key;
                let present = match dest.key_manager() {
                    Some(km) => {
                        let id = km.describe_key(key).await?.key_id;
                        entries.iter().any(|e| e.backend == dest.backend() && e.key_id == id)
                    }
                    None => entries.iter().any(|e| e.backend == dest.backend() && e.key_id == *key),
                };
                changes = !present;
                lines.push(if present {
                    format!("has {} {key}", dest.backend())
                } else {
                    format!("+ {} {key}", dest.backend())
                });
            }
            Op::Remove(id) => {
                let n = entries.iter().filter(|e| e.key_id == *id).count();
                changes = n > 0;
                if n == entries.len() {
                    return Err(refuse_last(id));
                }
                lines.extend(entries.iter().filter(|e| e.key_id == *id).map(|e| format!("- {}", entry_short(e))));
            }
            Op::ToLatest | Op::To(_) => {
                let target = self.op.target().unwrap_or(Target::Latest);
                let rws = self.planner.plan(&target, entries)?;
                for e in entries {
                    let mut line = format!("{} (other backend, unchanged)", entry_short(e));
                    for rw in &rws {
                        match rw.status(e).await? {
                            EntryStatus::OtherBackend => continue,
                            EntryStatus::AtTarget => line = format!("{} (at target)", entry_short(e)),
                            EntryStatus::Behind { key_id, key_version } => {
                                changes = true;
                                line = format!(
                                    "{} -> {} {key_id} v{}",
                                    entry_short(e),
                                    rw.destination().backend(),
                                    key_version.as_deref().unwrap_or("latest")
                                );
                            }
                            _ => {}
                        }
                        break;
                    }
                    lines.push(line);
                }
            }
        }
        Ok((changes, lines))
    }

    async fn change_container(&self, p: &Preamble) -> Result<Change> {
        match &self.op {
            Op::ToLatest | Op::To(_) => {
                let target = self.op.target().unwrap_or(Target::Latest);
                Ok(Change::of(self.planner.rewrap_preamble(&target, p).await?))
            }
            Op::Add { uri, key } => Ok(Change::of(self.add(uri, key, Form::Container(p)).await?)),
            Op::Remove(id) => Ok(Change::of(self.remove(id, Form::Container(p)).await?.0)),
        }
    }

    async fn change_document(&self, path: &Path, doc: (Format, Vec<u8>), meta: &Metadata) -> Result<Change> {
        let file = meta.file_ref()?;
        match &self.op {
            Op::ToLatest | Op::To(_) => {
                let target = self.op.target().unwrap_or(Target::Latest);
                Ok(Change::of(self.planner.rewrap_value_keys(&target, &file).await?))
            }
            Op::Add { uri, key } => Ok(Change::of(self.add(uri, key, Form::Values(&file)).await?)),
            Op::Remove(id) => {
                let (out, sources) = self.remove(id, Form::Values(&file)).await?;
                let Some(kept) = out.entries else { return Ok(Change::Unchanged(out.report)) };
                if self.no_rekey {
                    return Ok(Change::Entries { entries: kept, moved: false, report: out.report });
                }
                // Revocation: the removed key's holder may have kept the data key; a new one,
                // for the remaining (verified) recipients only, shuts them out of later values.
                self.rekey_document(path, doc, &sources, kept).await
            }
        }
    }

    /// Adds the entry of --add-key to an object.
    async fn add(&self, uri: &str, key: &Option<String>, form: Form<'_>) -> Result<Outcome> {
        let a = self.adder(uri, key, form.entries())?;
        let refs: Vec<&dyn Kms> = a.sources.iter().map(|k| k.as_ref()).collect();
        let add = AddEntry { sources: &refs, rewrapper: &a.rw, key: &a.key };
        Ok(match form {
            Form::Container(p) => rewrap::add_entry_to_preamble(&add, p).await?,
            Form::Values(f) => rewrap::add_entry_to_value_keys(&add, f).await?,
        })
    }

    /// Removes the entries of key id `id` from an object (never its last entry); also returns
    /// the backends that open the object.
    async fn remove(&self, id: &str, form: Form<'_>) -> Result<(Outcome, Vec<Arc<dyn Kms>>)> {
        refuse_removing_all(form.entries(), id)?;
        let sources = self.planner.sources(form.entries());
        let refs: Vec<&dyn Kms> = sources.iter().map(|k| k.as_ref()).collect();
        let matches = |e: &WrappedKey| e.key_id == *id;
        let spec = RemoveEntries {
            sources: &refs,
            trust: &self.trust,
            engine: envseal_core::Engine::default(),
            matches: &matches,
        };
        let out = match form {
            Form::Container(p) => rewrap::remove_entries_from_preamble(&spec, p).await?,
            Form::Values(f) => rewrap::remove_entries_from_value_keys(&spec, f).await?,
        };
        Ok((out, sources))
    }

    /// Re-keys a value-level file for the recipients among `keep` that verify; returns the new
    /// bytes (proven to open).
    async fn rekey_document(
        &self,
        path: &Path,
        (format, bytes): (Format, Vec<u8>),
        sources: &[Arc<dyn Kms>],
        keep: Vec<WrappedKey>,
    ) -> Result<Change> {
        let refs: Vec<&dyn Kms> = sources.iter().map(|k| k.as_ref()).collect();
        let mut doc = envseal_stores::parse(format, &bytes)?;
        let engine = envseal_core::Engine::default();
        let empty = envseal_core::EncryptionContext::new();
        let mut u = envseal_stores::unlock(doc.as_ref(), &refs, &empty, &self.trust, engine).await?;
        let meta = u.meta.clone();
        let file = ValueFile { keys: &keep, ..meta.file_ref()? };
        let check = file.check(engine);
        let reading = crate::trust::Reading {
            expected: empty.clone(),
            trust: self.trust.clone(),
            source: "rewrap".into(),
            opened: Vec::new(),
        };
        let good =
            crate::cmd::rekey::verified_recipients(path, sources, &keep, &file.kms_context()?, &reading, &check, false)
                .await?;
        let recipients: Vec<envseal_core::entries::Recipient<'_>> = good
            .iter()
            .filter_map(|e| {
                let kms = sources.iter().find(|k| k.backend() == e.backend)?;
                Some(envseal_core::entries::Recipient { kms: kms.as_ref(), key: &e.key_id })
            })
            .collect();
        u.rekey(doc.as_mut(), &recipients, None).await?;
        let bytes = u.render_checked(doc.as_ref())?;
        Ok(Change::Rekeyed { bytes, entries: u.meta.keys.clone() })
    }

    /// The destination backend of --add-key and the key: from `URI#KEY`, else the key the URI
    /// names, else `ENVSEAL_KEY`, else the default key.
    pub fn add_dest(&self, uri: &str, key: &Option<String>) -> Result<(Arc<dyn Kms>, String)> {
        let (kms, uri_key) = self.planner.backends().open_uri(uri)?;
        let key = key
            .clone()
            .or(uri_key)
            .or_else(|| std::env::var("ENVSEAL_KEY").ok().filter(|k| !k.is_empty()))
            .unwrap_or_else(|| backend::DEFAULT_KEY.to_string());
        Ok((kms, key))
    }

    fn adder(&self, uri: &str, key: &Option<String>, entries: &[WrappedKey]) -> Result<Adder> {
        let (dest, key) = self.add_dest(uri, key)?;
        let sources = self.planner.sources(entries);
        let rw = self.planner.rewrapper(dest, Target::Latest);
        Ok(Adder { rw, sources, key })
    }

    fn notice_move(&self, quiet: bool) {
        if !self.moved_notice.swap(true, Ordering::SeqCst) && !quiet {
            eprintln!(
                "envseal: note: moving wrapped keys across backends: each data key is decrypted by the source \
                 KMS and encrypted by the destination, so it passes through this process (zeroized after use)"
            );
        }
    }

    /// Processes one file (`explicit`: named on the command line, so it must be sealed).
    pub async fn process(self: Arc<Self>, path: PathBuf, explicit: bool, quiet: bool) -> Report {
        match self.process_inner(&path, explicit, quiet).await {
            Ok(r) => r,
            Err(e) => Report::failed(path, e),
        }
    }

    async fn process_inner(self: &Arc<Self>, path: &Path, explicit: bool, quiet: bool) -> Result<Report> {
        let p = path.to_path_buf();
        let loaded = tokio::task::spawn_blocking(move || files::load(&p)).await??;
        let before = match &loaded {
            Loaded::Container { preamble, .. } => preamble.entries.clone(),
            Loaded::Document { meta, .. } => meta.keys.clone(),
            Loaded::NotSealed if explicit => {
                return Err(anyhow::Error::new(envseal_stores::StoreError::NotSealed)
                    .context(format!("{} is not sealed", path.display())));
            }
            Loaded::NotSealed => return Ok(Report::new(path.to_path_buf(), Status::NotSealed)),
        };
        let mut report = Report {
            before: before.clone(),
            after: before.clone(),
            ..Report::new(path.to_path_buf(), Status::Already)
        };
        if self.dry_run {
            let (changes, plan) = self.describe(&before).await?;
            report.plan = plan;
            report.status = if changes { Status::WouldChange } else { Status::Already };
            return Ok(report);
        }
        let change = match &loaded {
            Loaded::Container { preamble, .. } => self.change_container(preamble).await?,
            Loaded::Document { doc, meta, .. } => {
                let bytes = (doc.format(), doc.render());
                self.change_document(path, bytes, meta).await?
            }
            Loaded::NotSealed => Change::Unchanged(Vec::new()),
        };
        match change {
            Change::Unchanged(r) => report.unverifiable = unverifiable_lines(&r),
            Change::Entries { entries, moved, report: r } => {
                if moved {
                    self.notice_move(quiet);
                }
                report.unverifiable = unverifiable_lines(&r);
                report.after = entries.clone();
                report.moved = moved;
                let p = path.to_path_buf();
                tokio::task::spawn_blocking(move || files::write(&p, loaded, entries)).await??;
                report.status = Status::Rewrapped;
            }
            Change::Rekeyed { bytes, entries } => {
                report.after = entries;
                report.rekeyed = true;
                let p = path.to_path_buf();
                tokio::task::spawn_blocking(move || files::write_bytes(&p, loaded, &bytes)).await??;
                report.status = Status::Rewrapped;
            }
        }
        if let Some(j) = &self.journal {
            // After the rename: a crash in between only makes --resume look at the file again,
            // and find it at the target.
            let line = serde_json::json!({
                "job": j.job, "path": path, "status": report.status.as_str(), "keys": keys_json(&report.after),
            });
            let job = self.clone();
            tokio::task::spawn_blocking(move || job.journal.as_ref().map(|j| j.append(&line)).transpose()).await??;
        }
        Ok(report)
    }
}

fn refuse_removing_all(entries: &[WrappedKey], id: &str) -> Result<()> {
    if !entries.is_empty() && entries.iter().all(|e| e.key_id == id) {
        return Err(refuse_last(id));
    }
    Ok(())
}

fn refuse_last(id: &str) -> anyhow::Error {
    exit::fail(
        exit::Exit::Usage,
        format!("refusing to remove the last wrapped-key entry ({id}): the file could not be opened any more"),
        Some("add another entry first (--add-key URI#KEY)"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remove_refuses_the_last_entry() {
        let e = |id: &str| WrappedKey {
            backend: "local".into(),
            key_id: id.into(),
            key_version: "1".into(),
            blob: vec![1; 50],
        };
        assert!(refuse_removing_all(&[e("a")], "b").is_ok());
        assert!(refuse_removing_all(&[e("a")], "a").is_err());
        assert!(refuse_removing_all(&[e("a"), e("a")], "a").is_err());
        assert!(refuse_removing_all(&[e("a"), e("b")], "a").is_ok());
    }
}
