//! The local keystore as a registered backend (`local:` / `local:DIR`).
//!
//! Environment: `ENVSEAL_HOME` (the default directory, else `$XDG_DATA_HOME/envseal`, else
//! `~/.local/share/envseal`), `ENVSEAL_MASTER_KEY_FILE` (the master key file of a keystore
//! unlocked by one), `ENVSEAL_PASSPHRASE` (the passphrase of a passphrase-protected keystore;
//! otherwise the prompter asks).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use envseal_core::backend::{BackendFactory, OpenEnv, OpenError, Opened};

use crate::error::LocalError;
use crate::kms::BACKEND;
use crate::store::LocalKms;
use crate::unlock::{Unlock, UnlockMode};

/// URI prefix of the local keystore.
pub const SCHEME: &str = "local:";

/// The local keystore's [`BackendFactory`].
#[derive(Clone, Copy, Debug, Default)]
pub struct LocalFactory;

/// The directory a `local:` URI names (`local:` alone: the default one).
///
/// # Errors
/// [`LocalError`] when there is no default directory (no home).
pub fn dir_of(uri: &str) -> Result<PathBuf, LocalError> {
    let rest = uri.strip_prefix(SCHEME).unwrap_or(uri);
    let rest = rest.strip_prefix("//").unwrap_or(rest);
    if rest.is_empty() { LocalKms::default_dir() } else { Ok(PathBuf::from(rest)) }
}

/// How to unlock the keystore in `dir`: its passphrase when it uses one (from
/// `ENVSEAL_PASSPHRASE`, else the prompter), else its master key file.
fn unlock(dir: &Path, env: &OpenEnv) -> Result<Unlock, LocalError> {
    if LocalKms::exists(dir) && LocalKms::unlock_mode(dir)? == UnlockMode::Passphrase {
        if let Ok(p) = std::env::var("ENVSEAL_PASSPHRASE") {
            return Ok(Unlock::passphrase(p));
        }
        return match env.prompter.secret("Keystore passphrase: ") {
            Some(p) => Ok(Unlock::passphrase(p.as_str())),
            None => Err(LocalError::PassphraseNeeded { dir: dir.to_path_buf() }),
        };
    }
    Ok(Unlock::MasterKeyFile(std::env::var_os("ENVSEAL_MASTER_KEY_FILE").map(PathBuf::from)))
}

fn open_dir(dir: PathBuf, env: &OpenEnv) -> Result<Opened, OpenError> {
    let unlock = unlock(&dir, env)?;
    let kms = if env.create { LocalKms::open_or_create(&dir, unlock)? } else { LocalKms::open(&dir, unlock)? };
    Ok(Opened { kms: Arc::new(kms), key: None, store: Some(dir) })
}

impl BackendFactory for LocalFactory {
    fn name(&self) -> &'static str {
        BACKEND
    }

    fn claims(&self, uri: &str) -> bool {
        uri.starts_with(SCHEME)
    }

    fn usage(&self) -> &'static str {
        "local:[DIR]"
    }

    fn key_in_uri(&self, _uri: &str) -> Option<String> {
        None
    }

    fn open(&self, uri: &str, env: &OpenEnv) -> Result<Opened, OpenError> {
        open_dir(dir_of(uri)?, env)
    }

    fn open_default(&self, env: &OpenEnv) -> Result<Option<Opened>, OpenError> {
        open_dir(LocalKms::default_dir()?, env).map(Some)
    }
}
