//! `envseal rewrap`: replace the wrapped-key entries of many sealed files (docs/ROTATION.md).
//!
//! Each file goes through: read (blocking pool) → KMS (ReEncrypt, verification; at most `--jobs`
//! files in flight as tasks on the CLI's current-thread runtime, whose blocking pool does the file
//! I/O in parallel) → write (blocking pool: temp file, fsync, rename, fsync of the directory) →
//! journal line (fsync). A file is replaced only after its new entries were verified, and only
//! atomically, so a `kill -9` at any moment leaves it either old or new, and both open.

use std::collections::{HashMap, HashSet};
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow};
use clap::{Args, ValueEnum};
use envseal_core::container::{self, Preamble};
use envseal_core::entries::Trust;
use envseal_core::rewrap::{
    self, AddEntry, EntryReport, EntryResult, EntryStatus, Outcome, RemoveEntries, RetryPolicy, Rewrapper, Shard,
    Target, ValueFile, Verify,
};
use envseal_core::{Kms, WrappedKey};
use envseal_stores::{Document, Format, Metadata};

use crate::backend::{self, Uri};
use crate::fsio::{self, AtomicFile};
use crate::{FormatArg, exit};

/// Consecutive files failing with a retryable KMS error (after their retries) that open the
/// circuit breaker: the KMS is taken to be down, and no new file is started.
pub const BREAKER_THRESHOLD: usize = 5;

/// Name suffix of the default journal (`.<first PATH name>.envseal-rewrap.jsonl`, beside it).
const JOURNAL_SUFFIX: &str = ".envseal-rewrap.jsonl";

/// Prefix of `fsio::AtomicFile` temp files.
const TMP_PREFIX: &str = ".envseal-tmp-";

/// Largest file of unknown name sniffed for value-level envseal metadata during `-r` walks.
const SNIFF_LIMIT: u64 = 1024 * 1024;

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

/// The operation, from the mutually exclusive flags.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Op {
    ToLatest,
    To(String),
    Add { uri: String, key: Option<String> },
    Remove(String),
}

impl Op {
    /// Stable name, recorded in the journal and compared by --resume.
    fn name(&self) -> String {
        match self {
            Op::ToLatest => "to-latest".into(),
            Op::To(k) => format!("to:{k}"),
            Op::Add { uri, key } => format!("add:{uri}#{}", key.as_deref().unwrap_or("")),
            Op::Remove(k) => format!("remove:{k}"),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Circuit breaker

/// Stops a job when the KMS looks down: `threshold` consecutive files failed with a retryable
/// error (throttling, unavailable) after their own retries. A success closes the count again;
/// failures that are not retryable (a tampered file, a denied key) say nothing about the KMS
/// and leave it as it is.
#[derive(Debug)]
pub struct Breaker {
    threshold: usize,
    consecutive: AtomicUsize,
    open: AtomicBool,
}

impl Breaker {
    /// A closed breaker.
    pub fn new(threshold: usize) -> Self {
        Self { threshold: threshold.max(1), consecutive: AtomicUsize::new(0), open: AtomicBool::new(false) }
    }

    /// Records one finished file: `None` for a success, `Some(retryable)` for a failure.
    pub fn record(&self, failure: Option<bool>) {
        match failure {
            None => self.consecutive.store(0, Ordering::SeqCst),
            Some(true) => {
                if self.consecutive.fetch_add(1, Ordering::SeqCst) + 1 >= self.threshold {
                    self.open.store(true, Ordering::SeqCst);
                }
            }
            Some(false) => {}
        }
    }

    /// Whether the breaker opened (stays open for the rest of the job).
    pub fn is_open(&self) -> bool {
        self.open.load(Ordering::SeqCst)
    }
}

// ---------------------------------------------------------------------------------------------
// Journal

/// The append-only journal: one JSON object per line, fsync'd after each.
struct Journal {
    path: PathBuf,
    file: Mutex<File>,
    job: String,
}

impl Journal {
    fn open(path: &Path, op: &Op, verify: VerifyArg) -> Result<Self> {
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(path)
            .with_context(|| format!("cannot open the journal {}", path.display()))?;
        let job = hex::encode(envseal_core::random::array::<8>());
        let j = Self { path: path.to_path_buf(), file: Mutex::new(file), job };
        j.append(&serde_json::json!({
            "job": j.job, "op": op.name(), "verify": format!("{verify:?}").to_lowercase(),
            "started": humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
        }))?;
        Ok(j)
    }

    fn append(&self, v: &serde_json::Value) -> Result<()> {
        let mut line = serde_json::to_vec(v)?;
        line.push(b'\n');
        let mut f = self.file.lock().unwrap_or_else(|p| p.into_inner());
        // One write of a whole line to an O_APPEND file, then fsync: a crash loses at most the
        // last line, never mixes two.
        f.write_all(&line).and_then(|_| f.sync_data()).with_context(|| format!("cannot write {}", self.path.display()))
    }

    /// Paths recorded as done (rewrapped or already at the target) by jobs of `op`. Lines that
    /// do not parse (a line cut by a crash) are ignored.
    fn done(path: &Path, op: &Op) -> Result<HashSet<PathBuf>> {
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
                if o == op.name() {
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

fn default_journal(first: &Path, shard: Option<Shard>) -> Result<PathBuf> {
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

// ---------------------------------------------------------------------------------------------
// Discovery

/// Files to process; in -r walks, files that turn out not to be sealed are ignored, not failed.
struct Found {
    files: Vec<(PathBuf, bool)>,
    stale_tmp: Vec<PathBuf>,
}

fn discover(paths: &[PathBuf], recursive: bool, journal: &Path) -> Result<Found> {
    let mut found = Found { files: Vec::new(), stale_tmp: Vec::new() };
    let mut seen = HashSet::new();
    for p in paths {
        let m = fs::symlink_metadata(p).with_context(|| format!("cannot read {}", p.display()))?;
        if m.is_dir() {
            if !recursive {
                return Err(exit::fail(2, format!("{} is a directory", p.display()), Some("pass -r to walk it")));
            }
            walk(p, journal, &mut found, &mut seen)?;
        } else {
            let abs = std::path::absolute(p)?;
            if seen.insert(abs.clone()) {
                found.files.push((abs, true));
            }
        }
    }
    Ok(found)
}

fn walk(dir: &Path, journal: &Path, found: &mut Found, seen: &mut HashSet<PathBuf>) -> Result<()> {
    let mut entries: Vec<_> = fs::read_dir(dir)
        .with_context(|| format!("cannot read {}", dir.display()))?
        .collect::<io::Result<_>>()
        .with_context(|| format!("cannot read {}", dir.display()))?;
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let path = std::path::absolute(e.path())?;
        let name = e.file_name().to_string_lossy().into_owned();
        let ft = e.file_type()?;
        if ft.is_symlink() {
            continue; // never written through; name the real path to rewrap it
        }
        if ft.is_dir() {
            if name != ".git" {
                walk(&path, journal, found, seen)?;
            }
            continue;
        }
        if !ft.is_file() || name.ends_with(JOURNAL_SUFFIX) || path == journal {
            continue;
        }
        if name.starts_with(TMP_PREFIX) {
            found.stale_tmp.push(path);
            continue;
        }
        if is_candidate(&path, &name) && seen.insert(path.clone()) {
            found.files.push((path, false));
        }
    }
    Ok(())
}

/// Cheap pre-filter: a container by its magic bytes, a .env/JSON/YAML name, or a small file of
/// another name that mentions envseal metadata. The read decides.
fn is_candidate(path: &Path, name: &str) -> bool {
    if Format::from_path(Path::new(name)).is_some() {
        return true;
    }
    let Ok(mut f) = File::open(path) else { return false };
    let mut head = [0u8; 8];
    if f.read_exact(&mut head).is_ok() && container::is_container(&head) {
        return true;
    }
    let small = f.metadata().map(|m| m.len() <= SNIFF_LIMIT).unwrap_or(false);
    let mut content = Vec::new();
    small
        && f.seek(SeekFrom::Start(0)).is_ok()
        && f.read_to_end(&mut content).is_ok()
        && [&b"#ENVSEAL_VERSION="[..], b"\"file_id\"", b"file_id:"]
            .iter()
            .any(|needle| content.windows(needle.len()).any(|w| w == *needle))
}

// ---------------------------------------------------------------------------------------------
// Backends

/// How a backend instance is reached: by URI (`--kms`, `--add-key`), or from its usual
/// environment by backend name (as `cmd::backends_for` opens the backends of a file's entries).
/// Equal handles are the same instance, so that a rewrap stays server-side.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Handle {
    Uri(String),
    Name(String),
}

/// An opened backend and the key its URI names, if any.
type OpenedKms = (Arc<dyn Kms>, Option<String>);

/// Backends opened once per job.
struct Backends {
    /// `--kms`: the destination of --to, and the backend for entries of its backend name.
    kms: Option<Uri>,
    open: Mutex<HashMap<Handle, OpenedKms>>,
    rewrappers: Mutex<HashMap<String, Arc<Rewrapper>>>,
    verify: Verify,
    trust: Trust,
    drop_unverifiable: bool,
}

impl Backends {
    /// The handle of a URI; the default local keystore is the one entries open by name.
    fn handle_of(u: &Uri) -> Result<Handle> {
        if *u == Uri::parse(backend::DEFAULT_URI)? {
            return Ok(Handle::Name(u.backend_name().to_string()));
        }
        Ok(Handle::Uri(format!("{u:?}")))
    }

    /// Opens (once) the backend of a handle; also returns the key its URI names, if any.
    fn open(&self, h: &Handle, uri: Option<&Uri>) -> Result<OpenedKms> {
        // Held while opening: a passphrase or PIN prompt must not run twice at once.
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(k) = open.get(h) {
            return Ok(k.clone());
        }
        let opened = match (h, uri) {
            (Handle::Uri(_), Some(u)) => {
                let o = backend::open_with_key(u)?;
                (o.kms, o.key)
            }
            (Handle::Name(name), _) => match backend::open_by_name(name)? {
                Some(k) => (k, None),
                None => {
                    return Err(exit::fail(
                        6,
                        format!("no backend configured for wrapped keys of the {name:?} backend"),
                        Some("pass --kms with a URI of that backend"),
                    ));
                }
            },
            (Handle::Uri(u), None) => return Err(anyhow!("internal error: no URI for backend {u}")),
        };
        open.insert(h.clone(), opened.clone());
        Ok(opened)
    }

    fn open_uri(&self, u: &Uri) -> Result<OpenedKms> {
        self.open(&Self::handle_of(u)?, Some(u))
    }

    /// The handle that opens entries of backend `name`: `--kms` when it is of that backend, else
    /// the backend's usual environment.
    fn source(&self, name: &str) -> Result<Handle> {
        match &self.kms {
            Some(u) if u.backend_name() == name => Self::handle_of(u),
            _ => Ok(Handle::Name(name.to_string())),
        }
    }

    /// The destination of --to: `--kms`, else the default backend.
    fn dest(&self) -> Result<Handle> {
        match &self.kms {
            Some(u) => Self::handle_of(u),
            None => Self::handle_of(&Uri::parse(backend::DEFAULT_URI)?),
        }
    }

    fn kms_of(&self, h: &Handle) -> Result<Arc<dyn Kms>> {
        Ok(self.open(h, self.kms.as_ref())?.0)
    }

    fn retry() -> RetryPolicy {
        RetryPolicy::default().with_sleep(Arc::new(|d| Box::pin(tokio::time::sleep(d))))
    }

    fn rewrapper(&self, source: &Handle, dest: &Handle, target: Target) -> Result<Arc<Rewrapper>> {
        let key = format!("{source:?}|{dest:?}|{target:?}");
        if let Some(r) = self.rewrappers.lock().unwrap_or_else(|p| p.into_inner()).get(&key) {
            return Ok(r.clone());
        }
        let mut rw = Rewrapper::new(self.kms_of(source)?, target)
            .with_verify(self.verify)
            .with_trust(self.trust.clone())
            .with_drop_unverifiable(self.drop_unverifiable)
            .with_retry(Self::retry());
        if source != dest {
            rw = rw.with_destination(self.kms_of(dest)?);
        }
        let rw = Arc::new(rw);
        self.rewrappers.lock().unwrap_or_else(|p| p.into_inner()).insert(key, rw.clone());
        Ok(rw)
    }

    /// The rewrappers that take `entries` to the target, in order.
    fn plan(&self, op: &Op, entries: &[WrappedKey]) -> Result<Vec<Arc<Rewrapper>>> {
        let mut names: Vec<&str> = Vec::new();
        for e in entries {
            if !names.contains(&e.backend.as_str()) {
                names.push(&e.backend);
            }
        }
        match op {
            Op::ToLatest => names
                .iter()
                .map(|n| {
                    let h = self.source(n)?;
                    self.rewrapper(&h, &h, Target::Latest)
                })
                .collect(),
            Op::To(key) => {
                // Entries on the destination backend are rewrapped there (ReEncrypt); a file
                // with none is moved from the backend of its first entry.
                let dest = self.dest()?;
                let dest_name = match &self.kms {
                    Some(u) => u.backend_name(),
                    None => Uri::parse(backend::DEFAULT_URI)?.backend_name(),
                };
                let target = Target::Key(key.clone());
                if names.contains(&dest_name) {
                    Ok(vec![self.rewrapper(&dest, &dest, target)?])
                } else {
                    let first = names.first().ok_or_else(|| anyhow!("no wrapped-key entry"))?;
                    Ok(vec![self.rewrapper(&self.source(first)?, &dest, target)?])
                }
            }
            Op::Add { .. } | Op::Remove(_) => Ok(Vec::new()),
        }
    }

    /// The backends that may open `entries` (those that cannot be set up are skipped: another
    /// entry may open the file).
    fn sources(&self, entries: &[WrappedKey]) -> Vec<Arc<dyn Kms>> {
        let mut out: Vec<Arc<dyn Kms>> = Vec::new();
        for e in entries {
            if let Ok(k) = self.source(&e.backend).and_then(|h| self.kms_of(&h))
                && !out.iter().any(|o| Arc::ptr_eq(o, &k))
            {
                out.push(k);
            }
        }
        out
    }
}

// ---------------------------------------------------------------------------------------------
// One file

/// Identity of a file as read, to refuse replacing a file someone else changed meanwhile.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Signature {
    dev: u64,
    ino: u64,
    len: u64,
    mtime: (i64, i64),
}

impl Signature {
    fn of(m: &fs::Metadata) -> Self {
        Self { dev: m.dev(), ino: m.ino(), len: m.len(), mtime: (m.mtime(), m.mtime_nsec()) }
    }

    fn check(&self, path: &Path) -> Result<()> {
        let now = fs::symlink_metadata(path).with_context(|| format!("cannot read {}", path.display()))?;
        if Signature::of(&now) != *self {
            return Err(exit::fail(
                4,
                format!("{} changed while it was being rewrapped; left as it is", path.display()),
                Some("run the rewrap again"),
            ));
        }
        Ok(())
    }
}

enum Loaded {
    Container { preamble: Preamble, file: File, pre_len: u64, sig: Signature },
    Document { doc: Box<dyn Document>, meta: Metadata, sig: Signature },
    NotSealed,
}

/// Counts the bytes a reader gave (the exact preamble length, however it was encoded).
struct Counting<R> {
    inner: R,
    n: u64,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.n += n as u64;
        Ok(n)
    }
}

fn load(path: &Path) -> Result<Loaded> {
    fsio::check_target(path)?;
    let mut file = File::open(path).with_context(|| format!("cannot read {}", path.display()))?;
    let sig = Signature::of(&file.metadata()?);
    let mut head = Vec::with_capacity(8);
    (&mut file).take(8).read_to_end(&mut head).with_context(|| format!("cannot read {}", path.display()))?;
    if container::is_container(&head) {
        file.seek(SeekFrom::Start(0))?;
        // Unbuffered, so that the handle stands exactly after the preamble.
        let mut c = Counting { inner: &mut file, n: 0 };
        let preamble = Preamble::read_from(&mut c)?;
        let pre_len = c.n;
        return Ok(Loaded::Container { preamble, file, pre_len, sig });
    }
    if sig.len > fsio::MAX_DOCUMENT {
        return Ok(Loaded::NotSealed);
    }
    let mut content = head;
    file.read_to_end(&mut content).with_context(|| format!("cannot read {}", path.display()))?;
    let format = super::detect(path, FormatArg::Auto, &content);
    let format = if format == Format::Binary { Format::Dotenv } else { format };
    let Ok(doc) = envseal_stores::parse(format, &content) else { return Ok(Loaded::NotSealed) };
    match doc.metadata()? {
        Some(meta) => Ok(Loaded::Document { doc, meta, sig }),
        None => Ok(Loaded::NotSealed),
    }
}

/// What happened to one file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Status {
    Rewrapped,
    Already,
    WouldChange,
    NotSealed,
    Resumed,
    Failed,
}

impl Status {
    fn as_str(self) -> &'static str {
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

struct Report {
    path: PathBuf,
    status: Status,
    before: Vec<WrappedKey>,
    after: Vec<WrappedKey>,
    /// Dry run: what each entry would become.
    plan: Vec<String>,
    moved: bool,
    /// Entries that could not be verified (kept, or dropped with --drop-unverifiable).
    unverifiable: Vec<String>,
    /// Re-keyed (new data key) after a removal.
    rekeyed: bool,
    error: Option<anyhow::Error>,
}

impl Report {
    fn new(path: PathBuf, status: Status) -> Self {
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

    fn failed(path: PathBuf, e: anyhow::Error) -> Self {
        Self { error: Some(e), ..Self::new(path, Status::Failed) }
    }

    fn retryable(&self) -> bool {
        self.error.as_ref().is_some_and(|e| {
            e.chain().any(|c| {
                c.downcast_ref::<envseal_core::Error>().is_some_and(|e| e.is_retryable())
                    || c.downcast_ref::<envseal_core::KmsError>().is_some_and(|e| e.is_retryable())
            })
        })
    }
}

fn entry_short(e: &WrappedKey) -> String {
    format!("{} {} v{}", e.backend, e.key_id, e.key_version)
}

fn keys_json(keys: &[WrappedKey]) -> serde_json::Value {
    keys.iter().map(super::encrypt::entry_json).collect()
}

struct Job {
    op: Op,
    dry_run: bool,
    no_rekey: bool,
    backends: Backends,
    journal: Option<Journal>,
    moved_notice: AtomicBool,
}

/// What `--add-key` needs for one file: the rewrapper making the entry on the destination,
/// the backends that open the existing entries, and the key.
struct Adder {
    rw: Rewrapper,
    sources: Vec<Arc<dyn Kms>>,
    key: String,
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

/// Lines for the entries a job could not verify.
fn unverifiable_lines(report: &[EntryReport]) -> Vec<String> {
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
                let rws = self.backends.plan(&self.op, entries)?;
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
                let mut cur = p.clone();
                let mut changed = false;
                let mut moved = false;
                let mut report = Vec::new();
                for rw in self.backends.plan(&self.op, &p.entries)? {
                    let out = rw.rewrap_preamble(&cur).await?;
                    report.extend(out.report.into_iter().filter(|r| r.result != EntryResult::OtherBackend));
                    if let Some(n) = out.entries {
                        cur = Preamble { entries: n, ..cur };
                        changed = true;
                        moved |= out.moved;
                    }
                }
                Ok(if changed {
                    Change::Entries { entries: cur.entries, moved, report }
                } else {
                    Change::Unchanged(report)
                })
            }
            Op::Add { uri, key } => {
                let a = self.adder(uri, key, &p.entries)?;
                let refs: Vec<&dyn Kms> = a.sources.iter().map(|k| k.as_ref()).collect();
                let add = AddEntry { sources: &refs, rewrapper: &a.rw, key: &a.key };
                Ok(Change::of(rewrap::add_entry_to_preamble(&add, p).await?))
            }
            Op::Remove(id) => {
                refuse_removing_all(&p.entries, id)?;
                let sources = self.backends.sources(&p.entries);
                let refs: Vec<&dyn Kms> = sources.iter().map(|k| k.as_ref()).collect();
                let matches = |e: &WrappedKey| e.key_id == *id;
                let spec = RemoveEntries {
                    sources: &refs,
                    trust: &self.backends.trust,
                    engine: envseal_core::Engine::default(),
                    matches: &matches,
                };
                Ok(Change::of(rewrap::remove_entries_from_preamble(&spec, p).await?))
            }
        }
    }

    async fn change_document(&self, path: &Path, doc: (Format, Vec<u8>), meta: &Metadata) -> Result<Change> {
        let file = ValueFile {
            version: u8::try_from(meta.version).unwrap_or(u8::MAX),
            context: &meta.context,
            file_id: &meta.file_id,
            keys: &meta.keys,
            commitment: &meta.commitment,
        };
        match &self.op {
            Op::ToLatest | Op::To(_) => {
                let mut keys = meta.keys.clone();
                let mut changed = false;
                let mut moved = false;
                let mut report = Vec::new();
                for rw in self.backends.plan(&self.op, &meta.keys)? {
                    let out = rw.rewrap_value_keys(&ValueFile { keys: &keys, ..file }).await?;
                    report.extend(out.report.into_iter().filter(|r| r.result != EntryResult::OtherBackend));
                    if let Some(n) = out.entries {
                        keys = n;
                        changed = true;
                        moved |= out.moved;
                    }
                }
                Ok(if changed { Change::Entries { entries: keys, moved, report } } else { Change::Unchanged(report) })
            }
            Op::Add { uri, key } => {
                let a = self.adder(uri, key, &meta.keys)?;
                let refs: Vec<&dyn Kms> = a.sources.iter().map(|k| k.as_ref()).collect();
                let add = AddEntry { sources: &refs, rewrapper: &a.rw, key: &a.key };
                Ok(Change::of(rewrap::add_entry_to_value_keys(&add, &file).await?))
            }
            Op::Remove(id) => {
                refuse_removing_all(&meta.keys, id)?;
                let sources = self.backends.sources(&meta.keys);
                let refs: Vec<&dyn Kms> = sources.iter().map(|k| k.as_ref()).collect();
                let matches = |e: &WrappedKey| e.key_id == *id;
                let spec = RemoveEntries {
                    sources: &refs,
                    trust: &self.backends.trust,
                    engine: envseal_core::Engine::default(),
                    matches: &matches,
                };
                let out = rewrap::remove_entries_from_value_keys(&spec, &file).await?;
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
        let mut u = envseal_stores::unlock(doc.as_ref(), &refs, &empty, &self.backends.trust, engine).await?;
        let meta = u.meta.clone();
        let file = ValueFile {
            version: u8::try_from(meta.version).unwrap_or(u8::MAX),
            context: &meta.context,
            file_id: &meta.file_id,
            keys: &keep,
            commitment: &meta.commitment,
        };
        let check = file.check(engine);
        let reading = crate::trust::Reading {
            expected: empty.clone(),
            trust: self.backends.trust.clone(),
            source: "rewrap".into(),
            opened: Vec::new(),
        };
        let good =
            super::rekey::verified_recipients(path, sources, &keep, &file.kms_context()?, &reading, &check, false)
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
    fn add_dest(&self, uri: &str, key: &Option<String>) -> Result<(Arc<dyn Kms>, String)> {
        let (kms, uri_key) = self.backends.open_uri(&Uri::parse(uri)?)?;
        let key = key
            .clone()
            .or(uri_key)
            .or_else(|| std::env::var("ENVSEAL_KEY").ok().filter(|k| !k.is_empty()))
            .unwrap_or_else(|| backend::DEFAULT_KEY.to_string());
        Ok((kms, key))
    }

    fn adder(&self, uri: &str, key: &Option<String>, entries: &[WrappedKey]) -> Result<Adder> {
        let (dest, key) = self.add_dest(uri, key)?;
        let sources = self.backends.sources(entries);
        let rw = Rewrapper::new(dest, Target::Latest)
            .with_verify(self.backends.verify)
            .with_trust(self.backends.trust.clone())
            .with_drop_unverifiable(self.backends.drop_unverifiable)
            .with_retry(Backends::retry());
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

    async fn process(self: Arc<Self>, path: PathBuf, explicit: bool, quiet: bool) -> Report {
        match self.process_inner(&path, explicit, quiet).await {
            Ok(r) => r,
            Err(e) => Report::failed(path, e),
        }
    }

    async fn process_inner(self: &Arc<Self>, path: &Path, explicit: bool, quiet: bool) -> Result<Report> {
        let p = path.to_path_buf();
        let loaded = tokio::task::spawn_blocking(move || load(&p)).await??;
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
                tokio::task::spawn_blocking(move || write(&p, loaded, entries)).await??;
                report.status = Status::Rewrapped;
            }
            Change::Rekeyed { bytes, entries } => {
                report.after = entries;
                report.rekeyed = true;
                let p = path.to_path_buf();
                tokio::task::spawn_blocking(move || write_bytes(&p, loaded, &bytes)).await??;
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

/// Replaces a re-keyed document atomically (its values changed: new data key).
fn write_bytes(path: &Path, loaded: Loaded, bytes: &[u8]) -> Result<()> {
    let Loaded::Document { sig, .. } = loaded else {
        return Err(anyhow!("internal error: only value-level files are re-keyed here"));
    };
    let mut out = AtomicFile::create(path, 0o644)?;
    out.file().write_all(bytes).with_context(|| format!("cannot write {}", path.display()))?;
    sig.check(path)?;
    out.commit()
}

fn refuse_last(id: &str) -> anyhow::Error {
    exit::fail(
        2,
        format!("refusing to remove the last wrapped-key entry ({id}): the file could not be opened any more"),
        Some("add another entry first (--add-key URI#KEY)"),
    )
}

/// Replaces the file atomically: new entries, every other byte unchanged.
fn write(path: &Path, loaded: Loaded, entries: Vec<WrappedKey>) -> Result<()> {
    match loaded {
        Loaded::Container { preamble, mut file, pre_len, sig } => {
            let new = Preamble { entries, ..preamble }.encode()?;
            let mut out = AtomicFile::create(path, 0o644)?;
            out.file().write_all(&new).with_context(|| format!("cannot write {}", path.display()))?;
            file.seek(SeekFrom::Start(pre_len))?;
            let body = io::copy(&mut file, out.file()).with_context(|| format!("cannot write {}", path.display()))?;
            if body != sig.len - pre_len {
                return Err(exit::fail(4, format!("{} changed while it was being rewrapped", path.display()), None));
            }
            sig.check(path)?;
            out.commit()
        }
        Loaded::Document { mut doc, mut meta, sig } => {
            let values = doc.entries();
            meta.keys = entries;
            doc.set_metadata(Some(&meta))?;
            let bytes = doc.render();
            // The store must have changed the keys and nothing else (FORMAT.md §10.5).
            let check = envseal_stores::parse(doc.format(), &bytes)?;
            if check.metadata()?.as_ref() != Some(&meta) || check.entries() != values {
                return Err(anyhow!(
                    "internal error: rewriting the metadata of {} changed more than its keys",
                    path.display()
                ));
            }
            let mut out = AtomicFile::create(path, 0o644)?;
            out.file().write_all(&bytes).with_context(|| format!("cannot write {}", path.display()))?;
            sig.check(path)?;
            out.commit()
        }
        Loaded::NotSealed => Ok(()),
    }
}

// ---------------------------------------------------------------------------------------------
// Progress

enum Progress {
    Bar(indicatif::ProgressBar),
    Lines { quiet: bool },
}

impl Progress {
    fn new(total: u64, json: bool) -> Self {
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

    fn file(&self, r: &Report, failures: usize) {
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

    fn finish(&self) {
        if let Progress::Bar(bar) = self {
            bar.finish_and_clear();
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The command

fn op_of(a: &RewrapArgs) -> Result<Op> {
    if let Some(k) = &a.to {
        return Ok(Op::To(k.clone()));
    }
    if let Some(spec) = &a.add_key {
        let (uri, key) = super::encrypt::split_key(spec);
        Uri::parse(uri)?;
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
    let kms = a.kms.as_deref().map(Uri::parse).transpose()?;
    let journal_path = match &a.journal {
        Some(j) => std::path::absolute(j)?,
        None => default_journal(&a.paths[0], a.shard)?,
    };
    let mut found = discover(&a.paths, a.recursive, &journal_path)?;
    if let Some(shard) = a.shard {
        found.files.retain(|(p, _)| shard.owns(&shard_name(p)));
    }
    let done = if a.resume { Journal::done(&journal_path, &op)? } else { HashSet::new() };
    if a.resume && !a.dry_run {
        for t in &found.stale_tmp {
            // Left by a killed run: never a target (targets are only renamed over).
            let _ = fs::remove_file(t);
        }
    }
    let journal = if a.dry_run { None } else { Some(Journal::open(&journal_path, &op, a.verify)?) };
    let verify = match a.verify {
        VerifyArg::Decrypt => Verify::Decrypt,
        VerifyArg::Structure => Verify::Structure,
    };
    let job = Arc::new(Job {
        op: op.clone(),
        dry_run: a.dry_run,
        no_rekey: a.no_rekey,
        backends: Backends {
            kms,
            open: Mutex::new(HashMap::new()),
            rewrappers: Mutex::new(HashMap::new()),
            verify,
            trust: crate::trust::from_allow(&a.allow_key).await?,
            drop_unverifiable: a.drop_unverifiable,
        },
        journal,
        moved_notice: AtomicBool::new(false),
    });

    // Fail fast on a destination key that does not exist (instead of once per file).
    if !found.files.is_empty() {
        let dest = match &op {
            Op::To(k) => Some((job.backends.kms_of(&job.backends.dest()?)?, k.clone())),
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
    let breaker = Breaker::new(BREAKER_THRESHOLD);
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
        breaker.record(match r.status {
            Status::Failed => Some(r.retryable()),
            // A file that is not sealed tells nothing about the KMS.
            Status::NotSealed => Some(false),
            _ => None,
        });
        if r.status == Status::Failed {
            failures += 1;
        }
        progress.file(&r, failures);
        reports.push(r);
    }
    not_started.extend(queue.map(|(p, _)| p));
    progress.finish();

    summarize(&a, &op, &reports, &not_started, &breaker, started.elapsed(), &job, &journal_path)
}

#[allow(clippy::too_many_arguments)]
fn summarize(
    a: &RewrapArgs,
    op: &Op,
    reports: &[Report],
    not_started: &[PathBuf],
    breaker: &Breaker,
    elapsed: Duration,
    job: &Job,
    journal: &Path,
) -> Result<ExitCode> {
    let count = |s: Status| reports.iter().filter(|r| r.status == s).count();
    let failed: Vec<&Report> = reports.iter().filter(|r| r.status == Status::Failed).collect();
    let interrupted = exit::interrupted();
    let code: u8 = if interrupted {
        130
    } else if breaker.is_open() {
        12
    } else if failed.is_empty() {
        0
    } else {
        let codes: Vec<u8> = failed.iter().filter_map(|r| r.error.as_ref()).map(|e| exit::classify(e).0).collect();
        match codes.first() {
            Some(c) if codes.iter().all(|x| x == c) => *c,
            _ => 1,
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
        if !a.drop_unverifiable {
            eprintln!("envseal: hint: --drop-unverifiable removes them (each file keeps at least one verified entry)");
        }
    }

    if a.json {
        let files: Vec<serde_json::Value> = reports
            .iter()
            .filter(|r| r.status != Status::NotSealed)
            .map(|r| {
                serde_json::json!({
                    "path": r.path, "status": r.status.as_str(),
                    "before": keys_json(&r.before), "after": keys_json(&r.after),
                    "plan": if a.dry_run { Some(&r.plan) } else { None },
                    "data_key_passed_through": r.moved,
                    "rekeyed": r.rekeyed,
                    "unverifiable": r.unverifiable,
                    "error": r.error.as_ref().map(|e| format!("{e:#}")),
                    "exit_code": r.error.as_ref().map(|e| exit::classify(e).0),
                })
            })
            .collect();
        let v = serde_json::json!({
            "operation": op.name(),
            "dry_run": a.dry_run,
            "journal": if a.dry_run { None } else { Some(journal) },
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
            "data_key_passed_through": job.moved_notice.load(Ordering::SeqCst),
            "seconds": elapsed.as_secs_f64(),
            "files_per_second": rate,
            "exit_code": code,
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
        eprintln!(
            "envseal: rewrap {}: {} in {:.2} s ({rate:.0} files/s)",
            op.name(),
            parts.join(", "),
            elapsed.as_secs_f64()
        );
        if !failed.is_empty() {
            eprintln!("envseal: failed files:");
            for r in &failed {
                eprintln!("  {}: {}", r.path.display(), r.error.as_ref().map(|e| format!("{e:#}")).unwrap_or_default());
            }
        }
        if breaker.is_open() {
            eprintln!(
                "envseal: error: the KMS looks unavailable ({BREAKER_THRESHOLD} files in a row failed after retries); \
                 stopped, {} files not started",
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
    Ok(ExitCode::from(code))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn breaker_opens_after_consecutive_retryable_failures_only() {
        let b = Breaker::new(3);
        b.record(Some(true));
        b.record(Some(true));
        assert!(!b.is_open());
        b.record(None); // a success closes the count
        b.record(Some(true));
        b.record(Some(false)); // not about the KMS: neutral
        b.record(Some(true));
        assert!(!b.is_open());
        b.record(Some(true));
        assert!(b.is_open());
        b.record(None);
        assert!(b.is_open(), "stays open for the rest of the job");
        let b = Breaker::new(0);
        b.record(Some(true));
        assert!(b.is_open(), "a threshold of 0 acts as 1");
    }

    #[test]
    fn breaker_under_concurrency() {
        let b = Arc::new(Breaker::new(BREAKER_THRESHOLD));
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let b = b.clone();
                std::thread::spawn(move || b.record(Some(true)))
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert!(b.is_open());
    }

    #[test]
    fn journal_resume_set() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("j.jsonl");
        let op = Op::ToLatest;
        let j = Journal::open(&p, &op, VerifyArg::Decrypt).unwrap();
        for (path, status) in [("/a", "rewrapped"), ("/b", "failed"), ("/c", "already")] {
            j.append(&serde_json::json!({"job": j.job, "path": path, "status": status})).unwrap();
        }
        let other = Journal::open(&p, &Op::To("k".into()), VerifyArg::Decrypt).unwrap();
        other.append(&serde_json::json!({"job": other.job, "path": "/d", "status": "rewrapped"})).unwrap();
        // A line cut by a crash.
        OpenOptions::new().append(true).open(&p).unwrap().write_all(b"{\"job\": \"x\", \"pa").unwrap();
        let done = Journal::done(&p, &op).unwrap();
        assert_eq!(done, [PathBuf::from("/a"), PathBuf::from("/c")].into_iter().collect());
        assert_eq!(Journal::done(&p, &Op::To("k".into())).unwrap().len(), 1);
        assert!(Journal::done(&dir.path().join("none"), &op).unwrap().is_empty());
    }

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
