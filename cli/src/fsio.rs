//! File I/O rules: atomic replacement (temp file in the same directory, fsync, rename, fsync the
//! directory), no writing through symlinks, permissions kept, `-` for stdin/stdout.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::Path;

use anyhow::{Context, Result};
use envseal_support::atomic::{self, Mode};

use crate::exit;

/// Prefix of the temp files [`AtomicFile`] writes beside its target (`rewrap` cleans up those a
/// killed run left).
pub const TEMP_PREFIX: &str = ".envseal-tmp-";

/// Largest .env/JSON/YAML file read whole into memory (value-level formats).
pub const MAX_DOCUMENT: u64 = 64 * 1024 * 1024;

/// True for the `-` path.
pub fn is_std(path: &Path) -> bool {
    path.as_os_str() == "-"
}

/// Refuses targets that are symlinks, directories or other non-regular files.
pub fn check_target(path: &Path) -> Result<()> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_symlink() => Err(exit::fail(
            3,
            format!("refusing to write through a symlink: {}", path.display()),
            Some("pass the path of the real file, or -o to write elsewhere"),
        )),
        Ok(m) if m.is_dir() => Err(exit::fail(3, format!("{} is a directory", path.display()), None)),
        Ok(m) if !m.is_file() => Err(exit::fail(
            3,
            format!("{} is not a regular file", path.display()),
            Some("use `-` and a pipe for streams"),
        )),
        _ => Ok(()),
    }
}

/// Opens an input file (regular files and `-` only; FIFOs and devices are read through `-`).
pub fn open_input(path: &Path) -> Result<Box<dyn Read + Send>> {
    if is_std(path) {
        return Ok(Box::new(io::stdin()));
    }
    let m = fs::metadata(path).with_context(|| format!("cannot read {}", path.display()))?;
    if m.is_dir() {
        return Err(exit::fail(3, format!("{} is a directory", path.display()), None));
    }
    if !m.is_file() {
        return Err(exit::fail(
            3,
            format!("{} is not a regular file", path.display()),
            Some("pipe it in instead: `envseal ... - < FILE`"),
        ));
    }
    Ok(Box::new(File::open(path).with_context(|| format!("cannot read {}", path.display()))?))
}

/// Reads a whole (value-level) document, bounded.
pub fn read_document(path: &Path) -> Result<Vec<u8>> {
    let mut r = open_input(path)?.take(MAX_DOCUMENT + 1);
    let mut buf = Vec::new();
    r.read_to_end(&mut buf).with_context(|| format!("cannot read {}", path.display()))?;
    if buf.len() as u64 > MAX_DOCUMENT {
        return Err(exit::fail(
            3,
            format!("{} is larger than 64 MiB", path.display()),
            Some("seal it with --format binary"),
        ));
    }
    Ok(buf)
}

/// A file being replaced atomically ([`envseal_support::atomic`]): written to a temp file
/// `.envseal-tmp-*` beside the target, then renamed over it on [`AtomicFile::commit`]. Dropped
/// without commit (error, Ctrl-C), the temp file is removed and the target is untouched.
pub struct AtomicFile(atomic::AtomicFile);

impl AtomicFile {
    /// Prepares to replace `target`. The new file gets the target's permissions if it exists,
    /// else `new_mode`.
    pub fn create(target: &Path, new_mode: u32) -> Result<Self> {
        check_target(target)?;
        let f = atomic::AtomicFile::create_with_prefix(target, Mode::KeepExisting { default: new_mode }, TEMP_PREFIX)
            .with_context(|| format!("cannot create a temporary file beside {}", target.display()))?;
        Ok(Self(f))
    }

    /// The temp file, for writing (and reading back: it is open read-write).
    pub fn file(&mut self) -> &mut File {
        self.0.file()
    }

    /// A second handle on the temp file, from its start, for reading what was written.
    pub fn reopen(&self) -> Result<File> {
        File::open(self.0.temp_path()).context("cannot read back the temporary file")
    }

    /// Fsyncs, renames over the target and fsyncs the directory (unless Ctrl-C was pressed).
    pub fn commit(self) -> Result<()> {
        if exit::interrupted() {
            return Err(anyhow::Error::new(exit::Interrupted));
        }
        let target = self.0.target().to_path_buf();
        self.0.commit().with_context(|| format!("cannot replace {}", target.display()))?;
        Ok(())
    }
}

/// Writes `bytes` to `path` atomically (or to stdout for `-`).
pub fn write_output(path: &Path, bytes: &[u8], new_mode: u32) -> Result<()> {
    if is_std(path) {
        let mut out = io::stdout().lock();
        out.write_all(bytes)?;
        out.flush()?;
        return Ok(());
    }
    let mut f = AtomicFile::create(path, new_mode)?;
    f.file().write_all(bytes).with_context(|| format!("cannot write {}", path.display()))?;
    f.commit()
}

/// A writer that fails once Ctrl-C was pressed, so streaming stops between chunks.
pub struct Interruptible<W>(pub W);

impl<W: Write> Write for Interruptible<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if exit::interrupted() {
            return Err(io::Error::new(io::ErrorKind::Interrupted, "interrupted"));
        }
        self.0.write(buf)
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        if exit::interrupted() {
            return Err(io::Error::other("interrupted"));
        }
        self.0.write_all(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

/// Reads a small text file whole (`-` for stdin).
pub fn read_text(path: &Path) -> Result<String> {
    let mut s = String::new();
    open_input(path)?.read_to_string(&mut s).with_context(|| format!("cannot read {} as text", path.display()))?;
    Ok(s)
}
