//! Governance of the local keystore: its settings file (`governance.toml` in the keystore
//! directory), profiles (`--profile`, `ENVSEAL_PROFILE`), and the audit log and key.
//!
//! ```toml
//! # <keystore>/governance.toml
//! iam = "iam.toml"              # policies every CLI operation is checked against (needs --profile)
//! flavor = "alibaba"            # ARNs of local keys: acs:kms:local:ACCOUNT:key/ID ("aws": arn:aws:kms:local:...)
//!
//! [audit]
//! log = "audit.log"             # one record per operation (relative paths: to the keystore)
//! key = "/secure/audit.key"     # checkpoint MAC key (default $XDG_DATA_HOME/envseal/audit.key)
//! fsync = "always"              # always | never | a duration such as "1s"
//! on_failure = "closed"         # closed: an operation that cannot be recorded fails; open: warn
//! ```
//!
//! Profiles live in `$XDG_CONFIG_HOME/envseal/profiles.toml` (`ENVSEAL_PROFILES` overrides):
//!
//! ```toml
//! [profile.alice]
//! access_key_id = "LTAI..."
//! secret = "..."
//!
//! [profile.ci]                  # assume a role with alice's key
//! source_profile = "alice"
//! role_arn = "acs:ram::1234567890123456:role/ci"
//! session_name = "ci"
//! duration_seconds = 3600
//! ```

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result};
use envseal_audit::{AuditKey, AuditLog, AuditOptions, FailMode, FsyncPolicy};
use envseal_core::Kms;
use envseal_governance::{Governance, GovernedKms, LocalPrincipal};
use envseal_iam::{AssumeRoleRequest, Flavor, Principal};
use serde::Deserialize;
use zeroize::Zeroizing;

use crate::exit;

static PROFILE: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();

/// Records `--profile` / `ENVSEAL_PROFILE` for the whole run.
pub fn set_profile(p: Option<String>) {
    let _ = PROFILE.set(p);
}

/// The profile given, if any.
pub fn profile() -> Option<&'static str> {
    PROFILE.get().and_then(|p| p.as_deref())
}

/// Name of the settings file in a keystore directory.
pub const SETTINGS_FILE: &str = "governance.toml";

#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
struct Settings {
    iam: Option<PathBuf>,
    flavor: Option<String>,
    audit: Option<AuditSettings>,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct AuditSettings {
    log: PathBuf,
    key: Option<PathBuf>,
    fsync: Option<String>,
    on_failure: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Profiles {
    #[serde(default)]
    profile: std::collections::BTreeMap<String, ProfileEntry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ProfileEntry {
    access_key_id: Option<String>,
    secret: Option<Zeroizing<String>>,
    source_profile: Option<String>,
    role_arn: Option<String>,
    session_name: Option<String>,
    /// Session length in seconds.
    duration_seconds: Option<u64>,
}

/// The OS user running this process.
pub fn os_user() -> String {
    std::env::var("USER").or_else(|_| std::env::var("LOGNAME")).unwrap_or_else(|_| "unknown".to_owned())
}

fn default_audit_key() -> Result<PathBuf> {
    let base = match std::env::var_os("XDG_DATA_HOME").filter(|v| !v.is_empty()) {
        Some(d) => PathBuf::from(d),
        None => PathBuf::from(std::env::var_os("HOME").context("HOME is not set")?).join(".local/share"),
    };
    Ok(base.join("envseal").join("audit.key"))
}

/// Opens (or creates) an audit log with its key (created if missing).
pub fn open_audit_log(log: &Path, key: Option<&Path>) -> Result<AuditLog> {
    open_audit(log, key, AuditOptions::default())
}

pub fn open_audit(log: &Path, key: Option<&Path>, opts: AuditOptions) -> Result<AuditLog> {
    let key_path = match key {
        Some(k) => k.to_owned(),
        None => default_audit_key()?,
    };
    let key = if key_path.exists() {
        AuditKey::load(&key_path).with_context(|| format!("reading the audit key {}", key_path.display()))?
    } else {
        if let Some(dir) = key_path.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let k = AuditKey::generate();
        k.save(&key_path).with_context(|| format!("writing the audit key {}", key_path.display()))?;
        eprintln!("envseal: created the audit key {} (keep it apart from the log)", key_path.display());
        k
    };
    AuditLog::open(log, key, opts)
        .map_err(|e| exit::fail(exit::Exit::Io, format!("cannot open the audit log {}: {e}", log.display()), None))
}

/// Audit options of a kms serve / settings file.
pub fn audit_options(fsync: Option<&str>, on_failure: Option<&str>) -> Result<AuditOptions> {
    let mut o = AuditOptions::default();
    match fsync {
        None | Some("always") => o.fsync = FsyncPolicy::Always,
        Some("never") => o.fsync = FsyncPolicy::Never,
        Some(d) => {
            let d: Duration = humantime::parse_duration(d).map_err(|_| {
                exit::fail(
                    exit::Exit::Usage,
                    format!("audit fsync must be always, never or a duration, not {d:?}"),
                    None,
                )
            })?;
            o.fsync = FsyncPolicy::Interval(d);
        }
    }
    o.on_failure = match on_failure {
        None | Some("closed") => FailMode::Closed,
        Some("open") => FailMode::Open,
        Some(other) => {
            return Err(exit::fail(
                exit::Exit::Usage,
                format!("audit on_failure must be closed or open, not {other:?}"),
                None,
            ));
        }
    };
    Ok(o)
}

fn profiles_path() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("ENVSEAL_PROFILES").filter(|v| !v.is_empty()) {
        return Ok(PathBuf::from(p));
    }
    let base = match std::env::var_os("XDG_CONFIG_HOME").filter(|v| !v.is_empty()) {
        Some(d) => PathBuf::from(d),
        None => PathBuf::from(std::env::var_os("HOME").context("HOME is not set")?).join(".config"),
    };
    Ok(base.join("envseal").join("profiles.toml"))
}

fn load_profiles() -> Result<Profiles> {
    let path = profiles_path()?;
    let text = Zeroizing::new(std::fs::read_to_string(&path).map_err(|e| {
        exit::fail(
            exit::Exit::Denied,
            format!("cannot read the profiles file {}: {e}", path.display()),
            Some("create it (docs/IAM.md, Local keystore), or set ENVSEAL_PROFILES"),
        )
    })?);
    // The file holds secrets: only the position of a syntax error is reported.
    toml::from_str(&text).map_err(|e| {
        let at = e.span().map(|s| format!(" at byte {}", s.start)).unwrap_or_default();
        exit::fail(exit::Exit::BadInput, format!("the profiles file {} is not valid{at}", path.display()), None)
    })
}

/// Authenticates `profile` against `gov`'s IAM: a user's key, or a role assumed with one.
fn authenticate(gov: &Governance, profiles: &Profiles, profile: &str, depth: usize) -> Result<LocalPrincipal> {
    let denied = |m: String| {
        exit::fail(
            exit::Exit::Denied,
            m,
            Some("check the profile's access key in profiles.toml and the keystore's IAM file"),
        )
    };
    let p =
        profiles.profile.get(profile).ok_or_else(|| denied(format!("no profile {profile:?} in the profiles file")))?;
    let iam = gov.iam();
    if let Some(role) = &p.role_arn {
        if depth > 0 {
            return Err(denied(format!("profile {profile:?}: a role profile's source_profile must be a user profile")));
        }
        let source = p
            .source_profile
            .as_deref()
            .ok_or_else(|| denied(format!("profile {profile:?}: role_arn needs source_profile")))?;
        let caller = authenticate(gov, profiles, source, depth + 1)?;
        let req = AssumeRoleRequest {
            role_arn: role.clone(),
            session_name: p.session_name.clone().unwrap_or_else(|| format!("envseal-{}", os_user())),
            duration: p.duration_seconds.map(Duration::from_secs),
            session_policy: None,
            mfa: caller.mfa,
            source_ip: None,
            now: SystemTime::now(),
        };
        let grant = iam.assume_role(&caller.principal, req).map_err(|e| denied(format!("profile {profile:?}: {e}")))?;
        let session = grant.into_session(SystemTime::now());
        return Ok(LocalPrincipal {
            mfa: Some(session.mfa),
            principal: Principal::RoleSession(session),
            access_key_id: caller.access_key_id,
            profile: profile.to_owned(),
        });
    }
    let (id, secret) = match (&p.access_key_id, &p.secret) {
        (Some(id), Some(s)) => (id, s),
        _ => {
            return Err(denied(format!(
                "profile {profile:?} needs access_key_id and secret (or role_arn and source_profile)"
            )));
        }
    };
    let Some((user, entry)) = iam.access_key(id) else {
        return Err(denied(format!("profile {profile:?}: access key {id} is not in the keystore's IAM file")));
    };
    if !entry.active() || !envseal_iam::ct_eq(entry.secret(), secret) {
        return Err(denied(format!("profile {profile:?}: access key {id} is inactive or its secret is wrong")));
    }
    let mfa = iam.user(user).map(|u| u.mfa);
    Ok(LocalPrincipal {
        principal: Principal::User(user.to_owned()),
        mfa,
        access_key_id: id.clone(),
        profile: profile.to_owned(),
    })
}

/// Wraps the local keystore `kms` of `dir` in its governance, if `dir` has a settings file.
pub fn wrap_local(kms: Arc<dyn Kms>, dir: &Path, profile: Option<&str>) -> Result<Arc<dyn Kms>> {
    let path = dir.join(SETTINGS_FILE);
    if !path.exists() {
        return Ok(kms);
    }
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let s: Settings = toml::from_str(&text)
        .map_err(|e| exit::fail(exit::Exit::Keystore, format!("{}: {e}", path.display()), None))?;
    let rel = |p: &Path| if p.is_absolute() { p.to_owned() } else { dir.join(p) };
    let flavor = match s.flavor.as_deref() {
        None | Some("alibaba") => Flavor::Alibaba,
        Some("aws") => Flavor::Aws,
        Some(other) => {
            return Err(exit::fail(
                exit::Exit::Keystore,
                format!("{}: flavor must be alibaba or aws, not {other:?}", path.display()),
                None,
            ));
        }
    };
    let mut gov = match &s.iam {
        Some(iam) => {
            Governance::from_file(&rel(iam)).map_err(|e| exit::fail(exit::Exit::Keystore, e.to_string(), None))?
        }
        None => Governance::new(envseal_iam::Iam::default()),
    };
    if let Some(a) = &s.audit {
        let opts = audit_options(a.fsync.as_deref(), a.on_failure.as_deref())?;
        gov = gov.with_audit(open_audit(&rel(&a.log), a.key.as_deref().map(rel).as_deref(), opts)?);
    }
    let gov = Arc::new(gov);
    let who = match (&s.iam, profile) {
        (Some(_), Some(p)) => authenticate(&gov, &load_profiles()?, p, 0)?,
        (Some(_), None) => {
            return Err(exit::fail(
                exit::Exit::Denied,
                format!("the keystore {} enforces IAM policies: say who you are", dir.display()),
                Some("pass --profile NAME or set ENVSEAL_PROFILE (profiles: $XDG_CONFIG_HOME/envseal/profiles.toml)"),
            ));
        }
        // Auditing only: the OS user, with every permission.
        (None, _) => {
            LocalPrincipal { principal: Principal::Root, mfa: None, access_key_id: String::new(), profile: os_user() }
        }
    };
    Ok(Arc::new(GovernedKms::new(kms, gov, who, flavor)))
}
