//! Backend URIs → KMS instances. One place maps a URI scheme to a backend crate.
//!
//! | URI | backend |
//! | --- | --- |
//! | `local:` / `local:/path/to/dir` | the local keystore (default dir, or that dir) |
//! | `vault-transit://HOST[:PORT]/MOUNT/KEY` (`vault-transit+http://` for plain HTTP) | Vault / OpenBao Transit |

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
    /// Vault / OpenBao Transit (the whole URI, parsed by the backend).
    Vault(String),
}

impl Uri {
    /// Parses a URI.
    pub fn parse(s: &str) -> Result<Self> {
        if let Some(rest) = s.strip_prefix("local:") {
            let rest = rest.strip_prefix("//").unwrap_or(rest);
            return Ok(Uri::Local((!rest.is_empty()).then(|| PathBuf::from(rest))));
        }
        if s.starts_with("vault-transit://") || s.starts_with("vault-transit+http://") {
            return Ok(Uri::Vault(s.to_string()));
        }
        let scheme = s.split(':').next().unwrap_or(s);
        Err(exit::fail(
            2,
            format!("unknown or unsupported backend {scheme:?} in {s:?}"),
            Some("supported: local:[DIR], vault-transit://HOST/MOUNT/KEY (see docs/CLI.md)"),
        ))
    }

    /// The backend name recorded in wrapped-key entries.
    pub fn backend_name(&self) -> &'static str {
        match self {
            Uri::Local(_) => "local",
            Uri::Vault(_) => "vault-transit",
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
        _ => Ok(LocalKms::default_dir()?),
    }
}

/// An opened backend, and the key its URI names (if it names one).
pub struct Opened {
    /// The backend.
    pub kms: Arc<dyn Kms>,
    /// The key named in the URI.
    pub key: Option<String>,
}

/// Opens a backend (the local keystore is created on first use).
pub fn open(uri: &Uri) -> Result<Arc<dyn Kms>> {
    Ok(open_with_key(uri)?.kms)
}

/// Opens a backend, also returning the key its URI names.
pub fn open_with_key(uri: &Uri) -> Result<Opened> {
    match uri {
        Uri::Local(_) => {
            let dir = local_dir(uri)?;
            let unlock = local_unlock(&dir)?;
            Ok(Opened { kms: Arc::new(LocalKms::open_or_create(&dir, unlock)?), key: None })
        }
        Uri::Vault(u) => {
            let (kms, key) = envseal_kms_vault::VaultKms::from_uri(u)?;
            Ok(Opened { kms: Arc::new(kms), key: Some(key) })
        }
    }
}

/// Opens the backend named `backend` from its usual environment (for opening files whose
/// entries name it when no URI was given).
pub fn open_by_name(backend: &str) -> Result<Option<Arc<dyn Kms>>> {
    Ok(match backend {
        "local" => Some(open(&Uri::Local(None))?),
        "vault-transit" => Some(Arc::new(envseal_kms_vault::VaultKms::from_env()?)),
        _ => None,
    })
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
