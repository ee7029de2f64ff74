//! `--state DIR`: what the emulator keeps beside the backend's keys (key policies, grants,
//! secrets) survives a restart. The file is `DIR/state.json` (mode 0600, the directory
//! 0700), rewritten atomically after each change (temp file, fsync, rename): a crash leaves
//! the old or the new state, never a mix.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};

use envseal_support::atomic::{self, Mode};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::keys;

/// The state file's name.
pub const STATE_FILE: &str = "state.json";

/// Format version of the state file.
const FORMAT: u32 = 1;

/// What is saved.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Saved {
    pub format: u32,
    #[serde(default)]
    pub keys: keys::Snapshot,
}

/// The state directory.
#[derive(Debug)]
pub(crate) struct StateDir {
    file: PathBuf,
    /// Serializes writers (each writes the whole state).
    write: Mutex<()>,
}

impl StateDir {
    /// Opens (creating) `dir` with mode 0700.
    pub(crate) fn open(dir: &Path) -> io::Result<StateDir> {
        std::fs::create_dir_all(dir)?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
        }
        Ok(StateDir { file: dir.join(STATE_FILE), write: Mutex::new(()) })
    }

    /// The saved state (empty if there is none yet).
    pub(crate) fn load(&self) -> io::Result<Saved> {
        let bytes = match std::fs::read(&self.file) {
            Ok(b) => Zeroizing::new(b),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Saved { format: FORMAT, ..Saved::default() }),
            Err(e) => return Err(e),
        };
        let saved: Saved = serde_json::from_slice(&bytes).map_err(|e| {
            // Category and position only: the file holds secrets.
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "{} is not a valid state file ({:?} error at line {})",
                    self.file.display(),
                    e.classify(),
                    e.line()
                ),
            )
        })?;
        if saved.format != FORMAT {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{} has format {}; this build reads {FORMAT}", self.file.display(), saved.format),
            ));
        }
        Ok(saved)
    }

    /// Writes `saved` atomically, mode 0600.
    pub(crate) fn save(&self, saved: &Saved) -> io::Result<()> {
        let _w = self.write.lock().unwrap_or_else(PoisonError::into_inner);
        let bytes = Zeroizing::new(serde_json::to_vec_pretty(saved).map_err(io::Error::other)?);
        atomic::write(&self.file, &bytes, Mode::Fixed(0o600)).map(drop)
    }
}
