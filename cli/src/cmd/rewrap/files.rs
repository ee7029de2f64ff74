//! The files of `envseal rewrap`: finding sealed files (`-r` walks), reading one (a container's
//! preamble, or a .env/JSON/YAML document with envseal metadata) with the identity it had, and
//! replacing it atomically, only if nobody changed it meanwhile (device, inode, size, mtime).

use std::collections::HashSet;
use std::fs::{self, File};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow};
use envseal_core::WrappedKey;
use envseal_core::container::{self, Preamble};
use envseal_stores::{Document, Format, Metadata};

use super::journal::JOURNAL_SUFFIX;
use crate::exit;
use crate::fsio::{self, AtomicFile};
use crate::opts::FormatArg;

/// Prefix of `fsio::AtomicFile` temp files.
const TMP_PREFIX: &str = ".envseal-tmp-";

/// Largest file of unknown name sniffed for value-level envseal metadata during `-r` walks.
const SNIFF_LIMIT: u64 = 1024 * 1024;

/// Files to process; in -r walks, files that turn out not to be sealed are ignored, not failed.
pub struct Found {
    /// Absolute paths, and whether each was named on the command line (then it must be sealed).
    pub files: Vec<(PathBuf, bool)>,
    /// Temp files a killed run left in the walked directories.
    pub stale_tmp: Vec<PathBuf>,
}

/// The files named by `paths` (directories walked with `recursive`), without the journal.
pub fn discover(paths: &[PathBuf], recursive: bool, journal: &Path) -> Result<Found> {
    let mut found = Found { files: Vec::new(), stale_tmp: Vec::new() };
    let mut seen = HashSet::new();
    for p in paths {
        let m = fs::symlink_metadata(p).with_context(|| format!("cannot read {}", p.display()))?;
        if m.is_dir() {
            if !recursive {
                return Err(exit::fail(
                    exit::Exit::Usage,
                    format!("{} is a directory", p.display()),
                    Some("pass -r to walk it"),
                ));
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

/// Identity of a file as read, to refuse replacing a file someone else changed meanwhile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signature {
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
                exit::Exit::Io,
                format!("{} changed while it was being rewrapped; left as it is", path.display()),
                Some("run the rewrap again"),
            ));
        }
        Ok(())
    }
}

/// A file as read, with its identity.
pub enum Loaded {
    /// A container: its preamble, and the open file (positioned after the `pre_len` bytes of
    /// the preamble) whose body is copied unchanged.
    Container { preamble: Preamble, file: File, pre_len: u64, sig: Signature },
    /// A .env/JSON/YAML document with envseal metadata.
    Document { doc: Box<dyn Document>, meta: Metadata, sig: Signature },
    /// Neither.
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

/// Reads a file: a container's preamble (the handle stays just after it), a sealed document,
/// or `NotSealed`.
pub fn load(path: &Path) -> Result<Loaded> {
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
    let format = crate::open::detect(path, FormatArg::Auto, &content);
    let format = if format == Format::Binary { Format::Dotenv } else { format };
    let Ok(doc) = envseal_stores::parse(format, &content) else { return Ok(Loaded::NotSealed) };
    match doc.metadata()? {
        Some(meta) => Ok(Loaded::Document { doc, meta, sig }),
        None => Ok(Loaded::NotSealed),
    }
}

/// Replaces a re-keyed document atomically (its values changed: new data key).
pub fn write_bytes(path: &Path, loaded: Loaded, bytes: &[u8]) -> Result<()> {
    let Loaded::Document { sig, .. } = loaded else {
        return Err(anyhow!("internal error: only value-level files are re-keyed here"));
    };
    let mut out = AtomicFile::create(path, 0o644)?;
    out.file().write_all(bytes).with_context(|| format!("cannot write {}", path.display()))?;
    sig.check(path)?;
    out.commit()
}

/// Replaces the file atomically: new entries, every other byte unchanged.
pub fn write(path: &Path, loaded: Loaded, entries: Vec<WrappedKey>) -> Result<()> {
    match loaded {
        Loaded::Container { preamble, mut file, pre_len, sig } => {
            let new = Preamble { entries, ..preamble }.encode()?;
            let mut out = AtomicFile::create(path, 0o644)?;
            out.file().write_all(&new).with_context(|| format!("cannot write {}", path.display()))?;
            file.seek(SeekFrom::Start(pre_len))?;
            let body = io::copy(&mut file, out.file()).with_context(|| format!("cannot write {}", path.display()))?;
            if body != sig.len - pre_len {
                return Err(exit::fail(
                    exit::Exit::Io,
                    format!("{} changed while it was being rewrapped", path.display()),
                    None,
                ));
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
