//! Atomic file replacement: the one way envseal writes a file.
//!
//! A file is written to a unique temp file in the target's own directory (so the rename below
//! never crosses a filesystem), with its permissions set before any byte is written; then it is
//! fsync'd, renamed over the target, and the directory is fsync'd so the rename itself is
//! durable. A reader sees the old file or the new one, never a mix. An [`AtomicFile`] dropped
//! before [`AtomicFile::commit`] (an error, a panic, Ctrl-C handled by the caller) removes its
//! temp file and leaves the target untouched.
//!
//! Policies that differ between callers stay with them: whether a symlink or a non-regular
//! target is refused (the CLI refuses both, the keystore checks its own files), and what an
//! interrupted command does.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// The permissions of the new file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Mode {
    /// Exactly these permission bits (e.g. `0o600` for keys and credentials).
    Fixed(u32),
    /// The permission bits of the file being replaced, or these when there is none yet.
    KeepExisting {
        /// Permission bits of a new file.
        default: u32,
    },
}

impl Mode {
    /// The bits the new file gets for `target`.
    fn resolve(self, target: &Path) -> u32 {
        match self {
            Mode::Fixed(mode) => mode,
            Mode::KeepExisting { default } => existing_mode(target).unwrap_or(default),
        }
    }
}

#[cfg(unix)]
fn existing_mode(target: &Path) -> Option<u32> {
    use std::os::unix::fs::PermissionsExt;
    fs::metadata(target).ok().map(|m| m.permissions().mode() & 0o7777)
}

#[cfg(not(unix))]
fn existing_mode(_target: &Path) -> Option<u32> {
    None
}

/// A file being replaced atomically (see the [module documentation](self)).
#[derive(Debug)]
pub struct AtomicFile {
    tmp: tempfile::NamedTempFile,
    target: PathBuf,
}

impl AtomicFile {
    /// Prepares to replace `target`: a temp file `.NAME.XXXXXX.tmp` in its directory, with
    /// `mode`'s permissions.
    ///
    /// # Errors
    /// Creating the temp file or setting its permissions.
    pub fn create(target: &Path, mode: Mode) -> io::Result<Self> {
        let name = target.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        Self::build(target, mode, &format!(".{name}."), ".tmp")
    }

    /// As [`AtomicFile::create`], with temp files named `PREFIX` + random characters (so a
    /// caller can recognise and clean up the temp files a killed process left behind).
    ///
    /// # Errors
    /// As [`AtomicFile::create`].
    pub fn create_with_prefix(target: &Path, mode: Mode, prefix: &str) -> io::Result<Self> {
        Self::build(target, mode, prefix, "")
    }

    fn build(target: &Path, mode: Mode, prefix: &str, suffix: &str) -> io::Result<Self> {
        let bits = mode.resolve(target);
        let mut builder = tempfile::Builder::new();
        builder.prefix(prefix).suffix(suffix);
        // Private from the start: nothing is written before the final permissions are set.
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            builder.permissions(fs::Permissions::from_mode(0o600));
        }
        let tmp = builder.tempfile_in(parent_of(target))?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            tmp.as_file().set_permissions(fs::Permissions::from_mode(bits))?;
        }
        #[cfg(not(unix))]
        let _ = bits;
        Ok(Self { tmp, target: target.to_path_buf() })
    }

    /// The temp file, for writing.
    pub fn file(&mut self) -> &mut File {
        self.tmp.as_file_mut()
    }

    /// The temp file's path (for error messages).
    pub fn temp_path(&self) -> &Path {
        self.tmp.path()
    }

    /// The file this replaces.
    pub fn target(&self) -> &Path {
        &self.target
    }

    /// Fsyncs the temp file, renames it over the target and fsyncs the directory. Returns the
    /// open file, now at the target's path.
    ///
    /// # Errors
    /// Fsync or rename (the temp file is removed, the target untouched), or the directory fsync
    /// (the target is replaced but the rename may not survive a crash).
    pub fn commit(self) -> io::Result<File> {
        self.finish(false)
    }

    /// As [`AtomicFile::commit`], but fails with [`io::ErrorKind::AlreadyExists`] (and removes
    /// the temp file) if the target exists: creates a file that was not there.
    ///
    /// # Errors
    /// As [`AtomicFile::commit`], and `AlreadyExists`.
    pub fn commit_new(self) -> io::Result<File> {
        self.finish(true)
    }

    fn finish(mut self, new: bool) -> io::Result<File> {
        self.tmp.as_file_mut().flush()?;
        self.tmp.as_file().sync_all()?;
        let file = if new {
            self.tmp.persist_noclobber(&self.target).map_err(|e| e.error)?
        } else {
            self.tmp.persist(&self.target).map_err(|e| e.error)?
        };
        sync_dir(parent_of(&self.target))?;
        Ok(file)
    }
}

/// Writes `bytes` to `target` atomically (see [`AtomicFile`]).
///
/// # Errors
/// As [`AtomicFile::create`] and [`AtomicFile::commit`].
pub fn write(target: &Path, bytes: &[u8], mode: Mode) -> io::Result<File> {
    let mut f = AtomicFile::create(target, mode)?;
    f.file().write_all(bytes)?;
    f.commit()
}

/// Creates `target` with `bytes` atomically, failing with [`io::ErrorKind::AlreadyExists`] if
/// it exists (see [`AtomicFile::commit_new`]).
///
/// # Errors
/// As [`AtomicFile::create`] and [`AtomicFile::commit_new`].
pub fn write_new(target: &Path, bytes: &[u8], mode: Mode) -> io::Result<File> {
    let mut f = AtomicFile::create(target, mode)?;
    f.file().write_all(bytes)?;
    f.commit_new()
}

/// The directory a path lives in (`.` for a bare file name).
fn parent_of(path: &Path) -> &Path {
    path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."))
}

/// Fsyncs a directory so a rename in it is durable. A directory that cannot be opened for
/// reading, or a filesystem that refuses fsync on directories, is not an error: there is
/// nothing more a writer can do there.
fn sync_dir(dir: &Path) -> io::Result<()> {
    let refused = |e: &io::Error| {
        matches!(e.kind(), io::ErrorKind::PermissionDenied | io::ErrorKind::InvalidInput | io::ErrorKind::Unsupported)
    };
    match File::open(dir).and_then(|d| d.sync_all()) {
        Err(e) if !refused(&e) => Err(e),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listing(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> =
            fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        names.sort();
        names
    }

    #[cfg(unix)]
    fn mode_of(p: &Path) -> u32 {
        use std::os::unix::fs::PermissionsExt;
        fs::metadata(p).unwrap().permissions().mode() & 0o7777
    }

    #[test]
    fn replaces_and_leaves_no_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.txt");
        write(&p, b"one", Mode::Fixed(0o600)).unwrap();
        write(&p, b"two", Mode::Fixed(0o600)).unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"two");
        assert_eq!(listing(dir.path()), ["a.txt"]);
    }

    #[cfg(unix)]
    #[test]
    fn modes_fixed_and_kept() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        write(&p, b"x", Mode::KeepExisting { default: 0o640 }).unwrap();
        assert_eq!(mode_of(&p), 0o640);
        fs::set_permissions(&p, fs::Permissions::from_mode(0o604)).unwrap();
        write(&p, b"y", Mode::KeepExisting { default: 0o640 }).unwrap();
        assert_eq!(mode_of(&p), 0o604, "the replaced file's mode is kept");
        write(&p, b"z", Mode::Fixed(0o600)).unwrap();
        assert_eq!(mode_of(&p), 0o600);
    }

    #[test]
    fn dropped_without_commit_leaves_the_target() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("keep");
        fs::write(&p, b"old").unwrap();
        {
            let mut f = AtomicFile::create_with_prefix(&p, Mode::Fixed(0o600), ".envseal-tmp-").unwrap();
            f.file().write_all(b"new, never committed").unwrap();
            let name = f.temp_path().file_name().unwrap().to_string_lossy().into_owned();
            assert!(name.starts_with(".envseal-tmp-"), "{name}");
            assert_eq!(f.temp_path().parent(), Some(dir.path()), "the temp file is beside the target");
        }
        assert_eq!(fs::read(&p).unwrap(), b"old");
        assert_eq!(listing(dir.path()), ["keep"]);
    }

    #[test]
    fn write_new_refuses_an_existing_target() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("n");
        write_new(&p, b"first", Mode::Fixed(0o600)).unwrap();
        let e = write_new(&p, b"second", Mode::Fixed(0o600)).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(fs::read(&p).unwrap(), b"first");
        assert_eq!(listing(dir.path()), ["n"]);
    }

    #[test]
    fn temp_names_are_unique() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("t");
        let a = AtomicFile::create(&p, Mode::Fixed(0o600)).unwrap();
        let b = AtomicFile::create(&p, Mode::Fixed(0o600)).unwrap();
        assert_ne!(a.temp_path(), b.temp_path());
        let name = a.temp_path().file_name().unwrap().to_string_lossy().into_owned();
        assert!(name.starts_with(".t.") && name.ends_with(".tmp"), "{name}");
    }

    #[test]
    fn missing_directory_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("no/such/dir/f");
        assert_eq!(write(&p, b"x", Mode::Fixed(0o600)).unwrap_err().kind(), io::ErrorKind::NotFound);
    }

    #[test]
    fn bare_file_names_use_the_current_directory() {
        assert_eq!(parent_of(Path::new("f")), Path::new("."));
        assert_eq!(parent_of(Path::new("/f")), Path::new("/"));
        assert_eq!(parent_of(Path::new("a/f")), Path::new("a"));
    }
}
