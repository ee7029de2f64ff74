//! How a front end finds a backend: each backend crate exports one [`BackendFactory`] that
//! claims its URI scheme and opens a [`Kms`] from a URI, or from its usual environment for the
//! wrapped-key entries that carry its name. A registry (the `envseal-backends` crate) lists the
//! factories; nothing else needs to know which backends exist.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use zeroize::Zeroizing;

use crate::kms::Kms;

/// Errors of opening a backend: the backend's own error type (a keystore problem, an invalid
/// URI, a KMS error), kept whole so that a front end can tell them apart.
pub type OpenError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Asks the user for a secret a backend needs (a keystore passphrase, a token PIN).
pub trait Prompter: Send + Sync {
    /// The secret, or `None` when nobody can be asked (no terminal).
    fn secret(&self, prompt: &str) -> Option<Zeroizing<String>>;
}

/// A prompter that never asks: backends fall back to their environment variables.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoPrompt;

impl Prompter for NoPrompt {
    fn secret(&self, _prompt: &str) -> Option<Zeroizing<String>> {
        None
    }
}

/// What opening a backend may use besides the URI.
#[derive(Clone)]
pub struct OpenEnv {
    /// Asks for passphrases and PINs.
    pub prompter: Arc<dyn Prompter>,
    /// Whether a backend that keeps its keys in a local store may create it (sealing: yes;
    /// opening sealed data: no, since a new store holds none of its keys).
    pub create: bool,
}

impl OpenEnv {
    /// An environment that never prompts.
    pub fn unattended(create: bool) -> Self {
        Self { prompter: Arc::new(NoPrompt), create }
    }
}

impl fmt::Debug for OpenEnv {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OpenEnv").field("create", &self.create).finish_non_exhaustive()
    }
}

/// An opened backend, and the key its URI names (if it names one).
#[derive(Clone)]
pub struct Opened {
    /// The backend.
    pub kms: Arc<dyn Kms>,
    /// The key the URI names (`vault-transit://HOST/MOUNT/KEY`, `aws-kms:arn:...`), if any.
    pub key: Option<String>,
    /// The directory of a backend that keeps its keys in local files (the local keystore), for
    /// a front end that applies settings kept there.
    pub store: Option<PathBuf>,
}

impl fmt::Debug for Opened {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Opened")
            .field("backend", &self.kms.backend())
            .field("key", &self.key)
            .field("store", &self.store)
            .finish()
    }
}

/// One backend, as a front end sees it. Implemented by each backend crate.
pub trait BackendFactory: Send + Sync {
    /// The name recorded in wrapped-key entries (`local`, `vault-transit`, ...).
    fn name(&self) -> &'static str;

    /// Whether `uri` is this backend's (`local:...`, `vault-transit://...`).
    fn claims(&self, uri: &str) -> bool;

    /// The URI forms, for help and error messages (`local:[DIR]`).
    fn usage(&self) -> &'static str;

    /// The key a URI names, read from the URI alone without opening the backend
    /// (`aws-kms:alias/app` → `alias/app`, `vault-transit://HOST/transit/app` → `app`): `None`
    /// when the URI names no key (`local:`) or is malformed ([`BackendFactory::open`] reports
    /// that).
    fn key_in_uri(&self, uri: &str) -> Option<String>;

    /// Opens the backend a URI names.
    ///
    /// # Errors
    /// The backend's own errors (invalid URI, unreachable store, wrong passphrase, ...).
    fn open(&self, uri: &str, env: &OpenEnv) -> Result<Opened, OpenError>;

    /// Opens the backend from its usual environment (for entries of [`BackendFactory::name`]
    /// when no URI was given), or `None` when the environment does not say where it is.
    ///
    /// # Errors
    /// As [`BackendFactory::open`].
    fn open_default(&self, env: &OpenEnv) -> Result<Option<Opened>, OpenError>;
}
