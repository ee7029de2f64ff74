#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod local;
mod server;

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant, SystemTime};

use envseal_audit::{AuditLog, Event};
use envseal_iam::{Decision, Flavor, Iam, Principal, PrincipalInfo, RequestContext};

pub use crate::local::{GovernedKms, LocalPrincipal};
pub use crate::server::ServerGovernance;

/// How often the IAM file's modification time is checked for a reload.
const RELOAD_CHECK: Duration = Duration::from_secs(1);

/// Errors of the governance layer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GovernanceError {
    /// The IAM file could not be read or is invalid.
    #[error("IAM file {path}: {message}")]
    Iam {
        /// The file.
        path: PathBuf,
        /// Why (never a secret).
        message: String,
    },
    /// The audit trail could not be written (the operation fails: fail closed).
    #[error("the audit trail could not be written: {0}")]
    Audit(String),
}

/// One request as policies see it.
#[derive(Clone, Debug)]
pub struct Access<'a> {
    /// `kms:Decrypt`, `sts:AssumeRole`, ...
    pub action: String,
    /// The resource's ARN, or `*`.
    pub resource: String,
    /// Which cloud's names (ARNs, condition keys) the request used.
    pub flavor: Flavor,
    /// The region the request named (`aws:RequestedRegion`, `acs:RequestedRegion`).
    pub region: Option<String>,
    /// The client's address.
    pub source_ip: Option<IpAddr>,
    /// Whether the request came over TLS.
    pub secure_transport: bool,
    /// The encryption context of the request.
    pub encryption_context: &'a BTreeMap<String, String>,
    /// The resource's tags, if known.
    pub resource_tags: Option<&'a BTreeMap<String, String>>,
}

struct Watched {
    path: PathBuf,
    state: Mutex<WatchState>,
}

struct WatchState {
    modified: Option<SystemTime>,
    checked: Instant,
}

/// Policies, sessions and the audit trail, shared by every request.
pub struct Governance {
    iam: RwLock<Arc<Iam>>,
    watched: Option<Watched>,
    sessions: envseal_iam::SessionStore,
    audit: Option<AuditLog>,
}

impl fmt::Debug for Governance {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Governance")
            .field("iam_file", &self.watched.as_ref().map(|w| &w.path))
            .field("audit", &self.audit.is_some())
            .finish_non_exhaustive()
    }
}

/// The OS user running this process, for records of local changes.
fn os_user() -> String {
    std::env::var("USER").or_else(|_| std::env::var("LOGNAME")).unwrap_or_else(|_| "unknown".to_owned())
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

impl Governance {
    /// Governance over a fixed IAM configuration.
    pub fn new(iam: Iam) -> Self {
        Self { iam: RwLock::new(Arc::new(iam)), watched: None, sessions: Default::default(), audit: None }
    }

    /// Governance over an IAM file, reloaded when it changes (checked at most once a second);
    /// each reload's changes are recorded in the audit trail.
    ///
    /// # Errors
    /// [`GovernanceError::Iam`] when the file cannot be read or is invalid.
    pub fn from_file(path: &Path) -> Result<Self, GovernanceError> {
        let m = modified(path);
        let iam =
            Iam::load(path).map_err(|e| GovernanceError::Iam { path: path.to_owned(), message: e.to_string() })?;
        let mut g = Self::new(iam);
        g.watched = Some(Watched {
            path: path.to_owned(),
            state: Mutex::new(WatchState { modified: m, checked: Instant::now() }),
        });
        Ok(g)
    }

    /// Records every request and IAM change in `log`.
    pub fn with_audit(mut self, log: AuditLog) -> Self {
        self.audit = Some(log);
        self
    }

    /// The audit trail, if any.
    pub fn audit(&self) -> Option<&AuditLog> {
        self.audit.as_ref()
    }

    /// STS sessions issued so far.
    pub fn sessions(&self) -> &envseal_iam::SessionStore {
        &self.sessions
    }

    /// The current IAM configuration (reloaded first if the file changed).
    pub fn iam(&self) -> Arc<Iam> {
        self.maybe_reload();
        self.iam.read().unwrap_or_else(PoisonError::into_inner).clone()
    }

    fn maybe_reload(&self) {
        let Some(w) = &self.watched else { return };
        let mut st = w.state.lock().unwrap_or_else(PoisonError::into_inner);
        if st.checked.elapsed() < RELOAD_CHECK {
            return;
        }
        st.checked = Instant::now();
        let m = modified(&w.path);
        if m == st.modified {
            return;
        }
        st.modified = m;
        match Iam::load(&w.path) {
            Ok(new) => {
                let old =
                    std::mem::replace(&mut *self.iam.write().unwrap_or_else(PoisonError::into_inner), Arc::new(new));
                let new = self.iam.read().unwrap_or_else(PoisonError::into_inner).clone();
                for change in diff::changes(&old, &new) {
                    let ev = Event::new(change.event, "iam")
                        .principal_local(&os_user())
                        .param("target", change.target.clone());
                    let _ = self.record(ev);
                }
                eprintln!("envseal: reloaded the IAM file {}", w.path.display());
            }
            Err(e) => {
                eprintln!(
                    "envseal: the IAM file {} was changed but is invalid; keeping the previous one: {e}",
                    w.path.display()
                );
                let ev = Event::new("IamReloadFailed", "iam")
                    .principal_local(&os_user())
                    .failed("InvalidIamFile", &e.to_string());
                let _ = self.record(ev);
            }
        }
    }

    /// Appends one record to the audit trail (nothing without one).
    ///
    /// # Errors
    /// [`GovernanceError::Audit`] when it could not be written and the log fails closed.
    pub fn record(&self, event: Event) -> Result<(), GovernanceError> {
        match &self.audit {
            Some(log) => log.append(event).map(drop).map_err(|e| GovernanceError::Audit(e.to_string())),
            None => Ok(()),
        }
    }

    /// Evaluates `access` on a KMS key for `who`: identity policies with the key's policy and
    /// grants ([`Iam::authorize_key`]).
    pub fn decide_key(
        &self,
        iam: &Iam,
        who: &Principal,
        mfa: Option<bool>,
        access: &Access<'_>,
        key: &envseal_iam::KeyAccess<'_>,
    ) -> Decision {
        iam.authorize_key(who, &self.context(iam, who, mfa, access), key)
    }

    /// Evaluates `access` for `who`.
    pub fn decide(&self, iam: &Iam, who: &Principal, mfa: Option<bool>, access: &Access<'_>) -> Decision {
        iam.authorize(who, &self.context(iam, who, mfa, access))
    }

    fn context(&self, iam: &Iam, who: &Principal, mfa: Option<bool>, access: &Access<'_>) -> RequestContext {
        let info: PrincipalInfo = iam.principal_info(who, access.flavor);
        let mut ctx = RequestContext::new(&access.action, &access.resource, info);
        ctx.mfa = mfa;
        ctx.source_ip = access.source_ip;
        ctx.secure_transport = Some(access.secure_transport);
        ctx.current_time = SystemTime::now();
        ctx.encryption_context = access.encryption_context.clone();
        if let Some(t) = access.resource_tags {
            ctx.resource_tags = t.clone();
        }
        if let Some(r) = &access.region {
            ctx.extra.insert("aws:requestedregion".into(), vec![r.clone()]);
            ctx.extra.insert("acs:requestedregion".into(), vec![r.clone()]);
        }
        ctx
    }
}

mod diff;
