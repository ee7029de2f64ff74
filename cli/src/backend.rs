//! Backend URIs → KMS instances.
//!
//! | URI | backend |
//! | --- | --- |
//! | `local:` | the local keystore in `$ENVSEAL_HOME` or the XDG data dir (created on first use) |
//! | `local:/path/to/dir` | a local keystore in that directory |

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Result;
use envseal_core::Kms;
use envseal_kms_local::{LocalError, LocalKms, Unlock, UnlockMode};

use crate::exit;

/// The default backend URI.
pub const DEFAULT_URI: &str = "local:";
/// The default key.
pub const DEFAULT_KEY: &str = "alias/default";

/// A parsed backend URI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Uri {
    /// The local keystore, in the default or a given directory.
    Local(Option<PathBuf>),
}

impl Uri {
    /// Parses a URI.
    pub fn parse(s: &str) -> Result<Self> {
        if let Some(rest) = s.strip_prefix("local:") {
            let rest = rest.strip_prefix("//").unwrap_or(rest);
            return Ok(Uri::Local((!rest.is_empty()).then(|| PathBuf::from(rest))));
        }
        let scheme = s.split(':').next().unwrap_or(s);
        Err(exit::fail(
            2,
            format!("unknown or unsupported backend {scheme:?} in {s:?}"),
            Some("this build supports `local:` and `local:/path/to/keystore`"),
        ))
    }

    /// The backend name recorded in wrapped-key entries.
    pub fn backend_name(&self) -> &'static str {
        match self {
            Uri::Local(_) => "local",
        }
    }
}

/// How to unlock the local keystore, from the environment: the passphrase when the keystore
/// uses one, else the master key file (`ENVSEAL_MASTER_KEY_FILE` or the default).
fn local_unlock(dir: &std::path::Path) -> Result<Unlock> {
    if LocalKms::exists(dir) && LocalKms::unlock_mode(dir)? == UnlockMode::Passphrase {
        return passphrase("Keystore passphrase: ");
    }
    Ok(Unlock::MasterKeyFile(std::env::var_os("ENVSEAL_MASTER_KEY_FILE").map(PathBuf::from)))
}

/// The passphrase from `ENVSEAL_PASSPHRASE`, else a prompt on the terminal.
pub fn passphrase(prompt: &str) -> Result<Unlock> {
    if let Ok(p) = std::env::var("ENVSEAL_PASSPHRASE") {
        return Ok(Unlock::passphrase(p));
    }
    let p = rpassword::prompt_password(prompt).map_err(|_| {
        exit::fail(14, "the keystore needs a passphrase", Some("set ENVSEAL_PASSPHRASE or run envseal from a terminal"))
    })?;
    Ok(Unlock::passphrase(p))
}

/// The local keystore directory for a URI.
pub fn local_dir(uri: &Uri) -> Result<PathBuf> {
    match uri {
        Uri::Local(Some(d)) => Ok(d.clone()),
        Uri::Local(None) => Ok(LocalKms::default_dir()?),
    }
}

/// Opens a backend (the local keystore is created on first use).
pub fn open(uri: &Uri) -> Result<Arc<dyn Kms>> {
    match uri {
        Uri::Local(_) => {
            let dir = local_dir(uri)?;
            let unlock = local_unlock(&dir)?;
            Ok(Arc::new(LocalKms::open_or_create(&dir, unlock)?))
        }
    }
}

/// Exit code and hint for backend-specific errors.
pub fn classify(cause: &(dyn std::error::Error + 'static)) -> Option<(u8, Option<String>)> {
    let e = cause.downcast_ref::<LocalError>()?;
    Some((14, Some(local_hint(e))))
}

fn local_hint(e: &LocalError) -> String {
    match e {
        LocalError::WrongPassphrase { .. } => "check ENVSEAL_PASSPHRASE".into(),
        LocalError::WrongMasterKey { .. } => {
            "check ENVSEAL_MASTER_KEY_FILE (the master key file created with the keystore)".into()
        }
        LocalError::NotFound { .. } => "run `envseal init`, or check ENVSEAL_HOME".into(),
        LocalError::InsecurePermissions { .. } => "restrict the permissions as the message says".into(),
        _ => "see docs/CLI.md, section Keystore".into(),
    }
}
