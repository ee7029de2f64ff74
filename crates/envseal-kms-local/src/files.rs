//! File-system rules of the keystore: private permissions, no symlinks, atomic writes, locks.

use std::fs::{self, DirBuilder, File, Metadata, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::time::SystemTime;

use envseal_support::atomic::{self, Mode};

use crate::error::LocalError;

/// Permission bits that must be clear on the keystore directory and its files.
const GROUP_OTHER: u32 = 0o077;

/// Largest keystore file read (a guard against a runaway or hostile file).
pub(crate) const MAX_KEYSTORE_LEN: u64 = 64 * 1024 * 1024;

/// Refuses a directory that is not one, or that group or others can access.
pub(crate) fn check_dir(dir: &Path) -> Result<(), LocalError> {
    let meta = fs::metadata(dir).map_err(|e| LocalError::io(dir, e))?;
    if !meta.is_dir() {
        return Err(LocalError::NotRegular { path: dir.to_path_buf(), expected: "directory" });
    }
    let mode = meta.permissions().mode() & 0o7777;
    if mode & GROUP_OTHER != 0 {
        return Err(LocalError::InsecurePermissions { path: dir.to_path_buf(), mode, is_dir: true });
    }
    Ok(())
}

/// Refuses a symlink, a non-regular file, or a file that group or others can access.
pub(crate) fn check_file_meta(path: &Path, meta: &Metadata) -> Result<(), LocalError> {
    if meta.file_type().is_symlink() {
        return Err(LocalError::Symlink { path: path.to_path_buf() });
    }
    if !meta.is_file() {
        return Err(LocalError::NotRegular { path: path.to_path_buf(), expected: "regular file" });
    }
    let mode = meta.permissions().mode() & 0o7777;
    if mode & GROUP_OTHER != 0 {
        return Err(LocalError::InsecurePermissions { path: path.to_path_buf(), mode, is_dir: false });
    }
    Ok(())
}

/// [`check_file_meta`] on a path that may not exist (`Ok(false)` then).
pub(crate) fn check_file(path: &Path) -> Result<bool, LocalError> {
    match fs::symlink_metadata(path) {
        Ok(meta) => check_file_meta(path, &meta).map(|()| true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(LocalError::io(path, e)),
    }
}

/// Identity of one version of a file: a writer replaces the file (new inode) and changes its
/// mtime and usually its size, so an unchanged stamp means an unchanged file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Stamp {
    mtime: Option<SystemTime>,
    ctime: (i64, i64),
    len: u64,
    ino: u64,
    dev: u64,
}

impl Stamp {
    fn of(meta: &Metadata) -> Self {
        Self {
            mtime: meta.modified().ok(),
            ctime: (meta.ctime(), meta.ctime_nsec()),
            len: meta.len(),
            ino: meta.ino(),
            dev: meta.dev(),
        }
    }
}

/// The stamp of `path` without reading it; `None` if it does not exist.
pub(crate) fn stamp(path: &Path) -> Result<Option<Stamp>, LocalError> {
    match fs::symlink_metadata(path) {
        Ok(meta) => Ok(Some(Stamp::of(&meta))),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(LocalError::io(path, e)),
    }
}

/// Reads a keystore file after the symlink and permission checks; returns its bytes and the
/// stamp of the very file read. `Ok(None)` if it does not exist.
pub(crate) fn read_checked(path: &Path) -> Result<Option<(Vec<u8>, Stamp)>, LocalError> {
    if !check_file(path)? {
        return Ok(None);
    }
    let f = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(LocalError::io(path, e)),
    };
    let meta = f.metadata().map_err(|e| LocalError::io(path, e))?;
    // Checked again on the open handle: the file read is the file checked.
    check_file_meta(path, &meta)?;
    if meta.len() > MAX_KEYSTORE_LEN {
        return Err(LocalError::corrupt(path, format!("larger than {MAX_KEYSTORE_LEN} bytes")));
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    f.take(MAX_KEYSTORE_LEN + 1).read_to_end(&mut bytes).map_err(|e| LocalError::io(path, e))?;
    Ok(Some((bytes, Stamp::of(&meta))))
}

/// Creates the keystore directory (mode 0700) if needed; its parents get the default mode.
pub(crate) fn ensure_dir(dir: &Path) -> Result<(), LocalError> {
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        fs::create_dir_all(parent).map_err(|e| LocalError::io(parent, e))?;
    }
    match DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(LocalError::io(dir, e)),
    }
}

/// Opens (creating, mode 0600) the lock file. The returned handle is a fresh open file
/// description, so `flock` excludes other handles of this process as well as other processes.
pub(crate) fn open_lock(path: &Path) -> Result<File, LocalError> {
    check_file(path)?;
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(path)
        .map_err(|e| LocalError::io(path, e))
}

/// An exclusive lock on the lock file, released on drop (closing the handle).
pub(crate) fn lock_exclusive(path: &Path) -> Result<File, LocalError> {
    let f = open_lock(path)?;
    f.lock().map_err(|e| LocalError::io(path, e))?;
    Ok(f)
}

/// A shared lock on the lock file, released on drop.
pub(crate) fn lock_shared(path: &Path) -> Result<File, LocalError> {
    let f = open_lock(path)?;
    f.lock_shared().map_err(|e| LocalError::io(path, e))?;
    Ok(f)
}

/// Replaces `path` atomically with mode 0600 ([`envseal_support::atomic`]: temp file in the same
/// directory, write, fsync, rename over `path`, fsync the directory; on any error the temp file
/// is removed). Returns the stamp of the new file.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<Stamp, LocalError> {
    let file = atomic::write(path, bytes, Mode::Fixed(0o600)).map_err(|e| LocalError::io(path, e))?;
    let meta = file.metadata().map_err(|e| LocalError::io(path, e))?;
    // Take the stamp of the file now at `path` (the rename changed its ctime), unless another
    // writer already replaced it.
    match stamp(path)? {
        Some(s) if s.ino == meta.ino() => Ok(s),
        _ => Ok(Stamp::of(&meta)),
    }
}

/// Creates `path` with `bytes` (mode 0600) atomically, failing if it already exists.
pub(crate) fn write_new(path: &Path, bytes: &[u8]) -> Result<(), LocalError> {
    atomic::write_new(path, bytes, Mode::Fixed(0o600)).map(drop).map_err(|e| LocalError::io(path, e))
}
