//! Opening backends from the command line. Which backends exist, which URI names which, and how
//! each one opens are the registry's business (`envseal-backends`, one factory per backend
//! crate); this module adds only what a terminal front end does: asking for passphrases and
//! PINs on the terminal, and applying a local keystore's governance (its policies and audit
//! trail) to the backend it opened.

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use anyhow::Result;
use envseal_backends::{Registry, UnknownBackend};
use envseal_core::backend::{OpenEnv, OpenError, Opened, Prompter};
use envseal_core::{Kms, KmsError};
use envseal_kms_local::{LocalError, Unlock};
use zeroize::Zeroizing;

use crate::exit;

/// The default backend URI.
pub const DEFAULT_URI: &str = envseal_kms_local::SCHEME;
/// The default key.
pub const DEFAULT_KEY: &str = "alias/default";

/// The backends of this build.
pub fn registry() -> &'static Registry {
    static REGISTRY: OnceLock<Registry> = OnceLock::new();
    REGISTRY.get_or_init(Registry::standard)
}

/// Asks on the controlling terminal, without echo.
struct Terminal;

impl Prompter for Terminal {
    fn secret(&self, prompt: &str) -> Option<Zeroizing<String>> {
        rpassword::prompt_password(prompt).ok().map(Zeroizing::new)
    }
}

fn env(create: bool) -> OpenEnv {
    OpenEnv { prompter: Arc::new(Terminal), create }
}

/// The entry name of the backend a URI names (`local`, `vault-transit`, ...), checking that this
/// build has it.
///
/// # Errors
/// A usage error naming the supported URI forms.
pub fn name_of(uri: &str) -> Result<&'static str> {
    Ok(registry().for_uri(uri)?.name())
}

/// The key a URI names by itself (`aws-kms:alias/app`, a Transit key), if any.
pub fn key_in_uri(uri: &str) -> Option<String> {
    registry().for_uri(uri).ok().and_then(|b| b.key_in_uri(uri))
}

/// The keystore directory of a `local:` URI.
pub fn local_dir(uri: &str) -> Result<PathBuf> {
    Ok(envseal_kms_local::dir_of(uri)?)
}

/// Opens a backend for sealing and key management (a local keystore is created on first use),
/// under the governance its keystore configures.
pub fn open_with_key(uri: &str) -> Result<Opened> {
    governed(registry().open(uri, &env(true)).map_err(concrete)?)
}

/// Opens a backend, without the key its URI names.
pub fn open(uri: &str) -> Result<Arc<dyn Kms>> {
    Ok(open_with_key(uri)?.kms)
}

/// Opens a backend without a keystore's governance (`kms serve`, which applies its own).
pub fn open_ungoverned(uri: &str) -> Result<Opened> {
    registry().open(uri, &env(true)).map_err(concrete)
}

/// Opens the backend whose entries carry `name` from its usual environment, for opening files
/// when no URI was given; `None` when this build lacks it or its environment names none.
pub fn open_by_name(name: &str) -> Result<Option<Arc<dyn Kms>>> {
    let Some(factory) = registry().named(name) else { return Ok(None) };
    match factory.open_default(&env(true)).map_err(concrete)? {
        Some(o) => Ok(Some(governed(o)?.kms)),
        None => Ok(None),
    }
}

/// Keeps the concrete type of a backend's error (a keystore problem, a KMS error, an unknown
/// scheme), so that the exit-code classifier (`exit.rs`) finds it in the chain.
fn concrete(e: OpenError) -> anyhow::Error {
    let e = match e.downcast::<LocalError>() {
        Ok(e) => return anyhow::Error::new(*e),
        Err(e) => e,
    };
    let e = match e.downcast::<KmsError>() {
        Ok(e) => return anyhow::Error::new(*e),
        Err(e) => e,
    };
    match e.downcast::<UnknownBackend>() {
        Ok(e) => anyhow::Error::new(*e),
        Err(e) => anyhow::Error::from_boxed(e),
    }
}

/// A local keystore's settings (policies for `--profile`, its audit trail) around the backend.
fn governed(o: Opened) -> Result<Opened> {
    match &o.store {
        Some(dir) => {
            let kms = crate::governance::wrap_local(o.kms.clone(), dir, crate::governance::profile())?;
            Ok(Opened { kms, ..o })
        }
        None => Ok(o),
    }
}

/// A new keystore passphrase from `ENVSEAL_PASSPHRASE`, else a prompt on the terminal.
pub fn passphrase(prompt: &str) -> Result<Unlock> {
    if let Ok(p) = std::env::var("ENVSEAL_PASSPHRASE") {
        return Ok(Unlock::passphrase(p));
    }
    match Terminal.secret(prompt) {
        Some(p) => Ok(Unlock::passphrase(p.as_str())),
        None => Err(exit::fail(
            exit::Exit::Keystore,
            "the keystore needs a passphrase",
            Some("set ENVSEAL_PASSPHRASE or run envseal from a terminal"),
        )),
    }
}
