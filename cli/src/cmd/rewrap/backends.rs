//! The backends of one `envseal rewrap` job, opened once each from the command line: `--kms`,
//! `--add-key` URIs, and the usual environment of the backends the files' entries name. This is
//! the [`Resolver`] the library's planner (`envseal_core::rewrap::plan`) asks; which backend
//! rewraps which entries is the planner's business.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use anyhow::Result;
use envseal_core::Kms;
use envseal_core::rewrap::plan::Resolver;

use crate::backend;
use crate::exit;

/// How a backend instance is reached: by URI (`--kms`, `--add-key`), or from its usual
/// environment by backend name (as `cmd::backends_for` opens the backends of a file's entries).
/// Equal handles are the same instance, so that a rewrap stays server-side.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Handle {
    Uri(String),
    Name(String),
}

/// An opened backend and the key its URI names, if any.
pub type OpenedKms = (Arc<dyn Kms>, Option<String>);

/// Backends opened once per job.
pub struct Backends {
    /// `--kms`: the destination of --to, and the backend for entries of its backend name.
    kms: Option<String>,
    open: Mutex<HashMap<Handle, OpenedKms>>,
}

impl Backends {
    /// The backends of a job whose `--kms` is `kms` (checked by the caller).
    pub fn new(kms: Option<String>) -> Self {
        Self { kms, open: Mutex::new(HashMap::new()) }
    }

    /// The handle of a URI; the default local keystore is the one entries open by name.
    fn handle_of(u: &str) -> Result<Handle> {
        let name = backend::name_of(u)?;
        if u == backend::DEFAULT_URI {
            return Ok(Handle::Name(name.to_string()));
        }
        Ok(Handle::Uri(u.to_string()))
    }

    /// Opens (once) the backend of a handle; also returns the key its URI names, if any.
    fn open(&self, h: &Handle) -> Result<OpenedKms> {
        // Held while opening: a passphrase or PIN prompt must not run twice at once.
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(k) = open.get(h) {
            return Ok(k.clone());
        }
        let opened = match h {
            Handle::Uri(u) => {
                let o = backend::open_with_key(u)?;
                (o.kms, o.key)
            }
            Handle::Name(name) => match backend::open_by_name(name)? {
                Some(k) => (k, None),
                None => {
                    return Err(exit::fail(
                        exit::Exit::NoKey,
                        format!("no backend configured for wrapped keys of the {name:?} backend"),
                        Some("pass --kms with a URI of that backend"),
                    ));
                }
            },
        };
        open.insert(h.clone(), opened.clone());
        Ok(opened)
    }

    /// Opens (once) the backend of a URI, with the key the URI names.
    pub fn open_uri(&self, u: &str) -> Result<OpenedKms> {
        self.open(&Self::handle_of(u)?)
    }
}

impl Resolver for Backends {
    type Error = anyhow::Error;

    /// Entries of backend `name` open with `--kms` when it is of that backend, else with the
    /// backend's usual environment.
    fn source(&self, name: &str) -> Result<Arc<dyn Kms>> {
        let h = match &self.kms {
            Some(u) if backend::name_of(u)? == name => Self::handle_of(u)?,
            _ => Handle::Name(name.to_string()),
        };
        Ok(self.open(&h)?.0)
    }

    /// The destination of --to: `--kms`, else the default backend.
    fn destination(&self) -> Result<Arc<dyn Kms>> {
        let u = self.kms.as_deref().unwrap_or(backend::DEFAULT_URI);
        Ok(self.open(&Self::handle_of(u)?)?.0)
    }
}
