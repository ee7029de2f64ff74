//! Which [`Rewrapper`] handles which entries of an object: the backend planning of a rewrap job
//! (docs/ROTATION.md, "Several backends").
//!
//! An object (a container, a value-level file) may carry entries of several backends. The plan
//! for a [`Target`]:
//!
//! - [`Target::Latest`]: the entries of each backend go to the newest version of their own key,
//!   on their own backend (ReEncrypt: the data key never leaves the KMS). One rewrapper per
//!   backend name among the entries, in the order the names first appear.
//! - [`Target::Key`]: the key lives on one backend, the [`Resolver::destination`]. An object
//!   with entries of that backend is rewrapped there (server-side); an object with none is moved
//!   from the backend of its first entry: the source decrypts the data key and the destination
//!   encrypts it, so **the data key passes through this process** ([`Outcome::moved`]).
//!
//! The planner opens nothing itself and knows no URI: a [`Resolver`] hands it the backend that
//! opens the entries of a backend name, and the destination ([`KmsSet`] is a ready one over
//! already-opened backends). It keeps one [`Rewrapper`] per (source, destination, target) for
//! the whole job, so each key is described once per job and the counters add up.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};

use super::{Outcome, Rewrapper, Target, ValueFile};
use crate::container::Preamble;
use crate::error::{Error, FormatError};
use crate::kms::{Kms, WrappedKey};

/// Gives a [`Planner`] the backends of a job.
///
/// The planner compares backends by name ([`Kms::backend`]), and caches what it builds from
/// them per job; a resolver that opens backends on demand should open each one once (a
/// passphrase or PIN prompt must not run once per object) and return the same instance for the
/// same backend, so that a rewrap within one backend stays on the server.
pub trait Resolver: Send + Sync {
    /// Errors of opening a backend. The planner's and the rewrappers' errors convert into it,
    /// so a front end keeps its own error type (with `anyhow`, `anyhow::Error`).
    type Error: From<Error>;

    /// The backend that opens (and, for [`Target::Latest`], rewraps) the entries whose backend
    /// name is `backend`. When it is the destination's backend, return the destination.
    ///
    /// # Errors
    /// The backend cannot be opened, or none is configured for that name.
    fn source(&self, backend: &str) -> Result<Arc<dyn Kms>, Self::Error>;

    /// The backend that new entries of a [`Target::Key`] job are made on.
    ///
    /// # Errors
    /// The backend cannot be opened.
    fn destination(&self) -> Result<Arc<dyn Kms>, Self::Error>;
}

/// A [`Resolver`] over backends opened beforehand: the sources by their backend name, and an
/// optional destination (also the source of its backend's entries).
#[derive(Clone, Debug, Default)]
pub struct KmsSet {
    sources: Vec<Arc<dyn Kms>>,
    destination: Option<Arc<dyn Kms>>,
}

impl KmsSet {
    /// A set of source backends (the first of each backend name counts), without a destination:
    /// enough for [`Target::Latest`].
    pub fn new(sources: impl IntoIterator<Item = Arc<dyn Kms>>) -> Self {
        Self { sources: sources.into_iter().collect(), destination: None }
    }

    /// Sets the destination of [`Target::Key`] jobs; it also opens the entries of its backend.
    pub fn with_destination(mut self, destination: Arc<dyn Kms>) -> Self {
        self.destination = Some(destination);
        self
    }
}

impl Resolver for KmsSet {
    type Error = Error;

    /// # Errors
    /// [`Error::NoBackend`] when the set has no backend of that name.
    fn source(&self, backend: &str) -> Result<Arc<dyn Kms>, Error> {
        self.destination
            .iter()
            .chain(&self.sources)
            .find(|k| k.backend() == backend)
            .cloned()
            .ok_or_else(|| Error::NoBackend { backend: backend.to_string() })
    }

    /// # Errors
    /// [`Error::NoBackend`] (with an empty name) when the set has no destination.
    fn destination(&self) -> Result<Arc<dyn Kms>, Error> {
        self.destination.clone().ok_or_else(|| Error::NoBackend { backend: String::new() })
    }
}

/// What a cached rewrapper does, independent of the object: the key of the per-job cache.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Role {
    /// The entries of this backend, rewrapped on it.
    Own(String),
    /// The destination's own entries, rewrapped on it.
    Destination,
    /// The entries of this backend, moved to the destination.
    Moved(String),
}

/// How each new rewrapper of a [`Planner`] is set up (see [`Planner::with_setup`]).
type Setup = Box<dyn Fn(Rewrapper) -> Rewrapper + Send + Sync>;

/// Plans and runs the rewrap of objects whose entries may belong to several backends. See the
/// [module documentation](self).
pub struct Planner<R> {
    backends: R,
    setup: Setup,
    rewrappers: Mutex<HashMap<(Role, Target), Arc<Rewrapper>>>,
}

impl<R> fmt::Debug for Planner<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Planner").field("rewrappers", &lock(&self.rewrappers).len()).finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Recovers a poisoned mutex: the map behind it only ever holds complete entries.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl<R: Resolver> Planner<R> {
    /// A planner over `backends`, whose rewrappers have [`Rewrapper::new`]'s defaults.
    pub fn new(backends: R) -> Self {
        Self { backends, setup: Box::new(|rw| rw), rewrappers: Mutex::new(HashMap::new()) }
    }

    /// Sets up each new rewrapper: verification, trust, dropping, retries, engine (the
    /// `Rewrapper::with_*` calls; not the destination, which is the plan's).
    pub fn with_setup(mut self, setup: impl Fn(Rewrapper) -> Rewrapper + Send + Sync + 'static) -> Self {
        self.setup = Box::new(setup);
        self
    }

    /// The resolver.
    pub fn backends(&self) -> &R {
        &self.backends
    }

    /// A new rewrapper on `kms`, set up like the planned ones, outside the plan and its cache:
    /// for jobs the plan does not cover, such as adding an entry ([`super::AddEntry`]).
    pub fn rewrapper(&self, kms: Arc<dyn Kms>, target: Target) -> Rewrapper {
        (self.setup)(Rewrapper::new(kms, target))
    }

    /// The cached rewrapper of a role, built on first use.
    fn cached(&self, role: Role, target: &Target) -> Result<Arc<Rewrapper>, R::Error> {
        let key = (role, target.clone());
        if let Some(rw) = lock(&self.rewrappers).get(&key) {
            return Ok(rw.clone());
        }
        // Built outside the lock: opening a backend may prompt for a passphrase.
        let rw = match &key.0 {
            Role::Own(name) => self.rewrapper(self.backends.source(name)?, target.clone()),
            Role::Destination => self.rewrapper(self.backends.destination()?, target.clone()),
            Role::Moved(name) => self
                .rewrapper(self.backends.source(name)?, target.clone())
                .with_destination(self.backends.destination()?),
        };
        Ok(lock(&self.rewrappers).entry(key).or_insert_with(|| Arc::new(rw)).clone())
    }

    /// The rewrappers that take `entries` to `target`, in the order to apply them (see the
    /// [module documentation](self)); each leaves the entries of other backends alone.
    ///
    /// # Errors
    /// The resolver's errors; for [`Target::Key`], [`FormatError::LimitExceeded`] when there
    /// is no entry to move.
    pub fn plan(&self, target: &Target, entries: &[WrappedKey]) -> Result<Vec<Arc<Rewrapper>>, R::Error> {
        let mut names: Vec<&str> = Vec::new();
        for e in entries {
            if !names.contains(&e.backend.as_str()) {
                names.push(&e.backend);
            }
        }
        match target {
            Target::Latest => names.iter().map(|n| self.cached(Role::Own(n.to_string()), target)).collect(),
            Target::Key(_) => {
                // Entries on the destination backend are rewrapped there (ReEncrypt); an object
                // with none is moved from the backend of its first entry.
                let dest = self.backends.destination()?;
                if names.contains(&dest.backend()) {
                    Ok(vec![self.cached(Role::Destination, target)?])
                } else {
                    let first = names.first().ok_or_else(|| Error::from(no_entry()))?;
                    Ok(vec![self.cached(Role::Moved(first.to_string()), target)?])
                }
            }
        }
    }

    /// Rewraps a container's entries to `target` with the [plan](Planner::plan): each planned
    /// rewrapper in turn, on the entries the previous one left. `Outcome::entries` is set when
    /// any step changed them; the report lists the entries each step examined (indexes as that
    /// step read them), without the other backends' entries it skipped.
    ///
    /// # Errors
    /// As [`Planner::plan`] and [`Rewrapper::rewrap_preamble`]; nothing is returned for a
    /// failed object, so the caller leaves it as it is.
    pub async fn rewrap_preamble(&self, target: &Target, preamble: &Preamble) -> Result<Outcome, R::Error> {
        let mut cur = preamble.clone();
        let mut acc = Steps::default();
        for rw in self.plan(target, &preamble.entries)? {
            if let Some(entries) = acc.add(rw.rewrap_preamble(&cur).await?) {
                cur = Preamble { entries, ..cur };
            }
        }
        Ok(acc.finish(cur.entries))
    }

    /// Rewraps a value-level file's keys to `target` with the [plan](Planner::plan), as
    /// [`Planner::rewrap_preamble`] does.
    ///
    /// # Errors
    /// As [`Planner::rewrap_preamble`].
    pub async fn rewrap_value_keys(&self, target: &Target, file: &ValueFile<'_>) -> Result<Outcome, R::Error> {
        let mut keys = file.keys.to_vec();
        let mut acc = Steps::default();
        for rw in self.plan(target, file.keys)? {
            if let Some(entries) = acc.add(rw.rewrap_value_keys(&ValueFile { keys: &keys, ..*file }).await?) {
                keys = entries;
            }
        }
        Ok(acc.finish(keys))
    }

    /// The backends that may open `entries`, one per instance, in entry order. Backends the
    /// resolver cannot open are left out: another entry may open the object.
    pub fn sources(&self, entries: &[WrappedKey]) -> Vec<Arc<dyn Kms>> {
        let mut out: Vec<Arc<dyn Kms>> = Vec::new();
        for e in entries {
            if let Ok(k) = self.backends.source(&e.backend)
                && !out.iter().any(|o| Arc::ptr_eq(o, &k))
            {
                out.push(k);
            }
        }
        out
    }
}

/// The error of a [`Target::Key`] plan for an object without entries (parsers reject such
/// objects; this is for entries set by hand).
fn no_entry() -> FormatError {
    FormatError::LimitExceeded { what: "wrapped-key entries", value: 0, max: crate::container::MAX_ENTRIES as u64 }
}

/// The outcomes of the steps of a plan, merged.
#[derive(Default)]
struct Steps {
    changed: bool,
    moved: bool,
    report: Vec<super::EntryReport>,
}

impl Steps {
    /// Adds one step's outcome; returns its new entries, if it changed them.
    fn add(&mut self, out: Outcome) -> Option<Vec<WrappedKey>> {
        self.report.extend(out.report.into_iter().filter(|r| r.result != super::EntryResult::OtherBackend));
        let entries = out.entries?;
        self.changed = true;
        self.moved |= out.moved;
        Some(entries)
    }

    fn finish(self, entries: Vec<WrappedKey>) -> Outcome {
        Outcome { entries: self.changed.then_some(entries), report: self.report, moved: self.moved }
    }
}
