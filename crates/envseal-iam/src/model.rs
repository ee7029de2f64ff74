//! The IAM file: account, users (with access keys), groups, roles and managed policies.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;
use std::time::SystemTime;

use envseal_support::atomic::{self, Mode};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::context::{PrincipalInfo, PrincipalKind, RequestContext};
use crate::eval::{Decision, evaluate_with_session};
use crate::policy::Policy;

/// Default account id.
pub const DEFAULT_ACCOUNT: &str = "1234567890123456";

/// Which cloud's ARN spelling.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Flavor {
    /// `acs:ram::ACCOUNT:user/NAME`.
    Alibaba,
    /// `arn:aws:iam::ACCOUNT:user/NAME`.
    Aws,
}

/// File syntax.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// TOML.
    Toml,
    /// JSON.
    Json,
}

/// Errors of the IAM file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IamError {
    /// Reading or writing failed.
    #[error("{0}")]
    Io(String),
    /// The file is not valid (syntax or a reference).
    #[error("{0}")]
    Invalid(String),
    /// A name that does not exist.
    #[error("{0}")]
    NotFound(String),
    /// A name that exists already.
    #[error("{0}")]
    Exists(String),
}

/// Access key status.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyStatus {
    /// Usable.
    #[default]
    Active,
    /// Refused.
    Inactive,
}

/// One access key of a user. The secret is never shown by `Debug`.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccessKeyEntry {
    /// The id.
    pub id: String,
    secret: Zeroizing<String>,
    /// Status.
    #[serde(default)]
    pub status: KeyStatus,
    /// When it was created (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
}

impl AccessKeyEntry {
    /// The secret (for signature verification).
    pub fn secret(&self) -> &str {
        &self.secret
    }

    /// Whether it may be used.
    pub fn active(&self) -> bool {
        self.status == KeyStatus::Active
    }
}

impl fmt::Debug for AccessKeyEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AccessKeyEntry").field("id", &self.id).field("status", &self.status).finish_non_exhaustive()
    }
}

/// A user.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct User {
    /// Access keys.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub access_keys: Vec<AccessKeyEntry>,
    /// Whether the user authenticates with MFA (`acs:MFAPresent` / `aws:MultiFactorAuthPresent`).
    #[serde(default)]
    pub mfa: bool,
    /// Groups.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
    /// Managed policies attached.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub policies: Vec<String>,
    /// Inline policies.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub inline: BTreeMap<String, Policy>,
    /// Tags (`aws:PrincipalTag/...`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: BTreeMap<String, String>,
}

/// A group.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Group {
    /// Managed policies attached.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub policies: Vec<String>,
    /// Inline policies.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub inline: BTreeMap<String, Policy>,
}

fn default_session() -> u64 {
    3600
}

/// A role.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Role {
    /// Who may assume it.
    pub trust_policy: Policy,
    /// Managed policies attached.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub policies: Vec<String>,
    /// Inline policies.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub inline: BTreeMap<String, Policy>,
    /// Longest session, in seconds (3600 to 43200).
    #[serde(default = "default_session")]
    pub max_session_duration: u64,
    /// Tags (principal tags of its sessions).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: BTreeMap<String, String>,
    /// Sessions issued before this time (RFC 3339) are refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoke_sessions_before: Option<String>,
}

/// What a managed policy is attached to.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Target {
    /// A user.
    User(String),
    /// A group.
    Group(String),
    /// A role.
    Role(String),
}

/// A role session.
#[derive(Clone, Debug)]
pub struct Session {
    /// Role name.
    pub role: String,
    /// Session name.
    pub session_name: Option<String>,
    /// Inline session policy narrowing the role.
    pub session_policy: Option<Policy>,
    /// Whether the caller authenticated with MFA.
    pub mfa: bool,
    /// Issue time.
    pub issued: SystemTime,
    /// Expiry.
    pub expires: SystemTime,
}

impl Session {
    /// The session's ARN.
    pub fn arn(&self, account: &str, flavor: Flavor) -> String {
        let s = self.session_name.as_deref().unwrap_or("");
        match flavor {
            Flavor::Alibaba => format!("acs:ram::{account}:assumed-role/{}/{s}", self.role),
            Flavor::Aws => format!("arn:aws:sts::{account}:assumed-role/{}/{s}", self.role),
        }
    }
}

/// A principal as authorization sees it.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum Principal {
    /// The account root: everything is allowed.
    Root,
    /// An IAM user.
    User(String),
    /// An STS role session.
    RoleSession(Session),
}

/// A new access key: the only time its secret is returned.
pub struct NewAccessKey {
    /// The id.
    pub id: String,
    /// The secret.
    pub secret: Zeroizing<String>,
}

impl fmt::Debug for NewAccessKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NewAccessKey").field("id", &self.id).finish_non_exhaustive()
    }
}

/// Counts, for `iam validate`.
#[derive(Clone, Debug, Serialize)]
pub struct Summary {
    /// Account.
    pub account: String,
    /// Users.
    pub users: usize,
    /// Access keys (active).
    pub access_keys: usize,
    /// Groups.
    pub groups: usize,
    /// Roles.
    pub roles: usize,
    /// Managed policies.
    pub policies: usize,
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "account {}: {} users ({} active access keys), {} groups, {} roles, {} managed policies",
            self.account, self.users, self.access_keys, self.groups, self.roles, self.policies
        )
    }
}

fn default_account() -> String {
    DEFAULT_ACCOUNT.to_owned()
}

/// An IAM configuration.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Iam {
    /// Account id.
    #[serde(default = "default_account")]
    account: String,
    /// Users by name.
    #[serde(default)]
    users: BTreeMap<String, User>,
    /// Groups by name.
    #[serde(default)]
    groups: BTreeMap<String, Group>,
    /// Roles by name.
    #[serde(default)]
    roles: BTreeMap<String, Role>,
    /// Managed policies by name.
    #[serde(default)]
    policies: BTreeMap<String, Policy>,
}

impl Default for Iam {
    fn default() -> Self {
        Self {
            account: default_account(),
            users: BTreeMap::new(),
            groups: BTreeMap::new(),
            roles: BTreeMap::new(),
            policies: BTreeMap::new(),
        }
    }
}

fn valid_name(n: &str) -> bool {
    !n.is_empty() && n.len() <= 64 && n.chars().all(|c| c.is_ascii_alphanumeric() || "+=,.@_-".contains(c))
}

fn random_string(alphabet: &[u8], n: usize) -> String {
    let mut bytes = vec![0u8; n];
    getrandom::fill(&mut bytes).expect("OS random number generator failed");
    bytes.iter().map(|b| char::from(alphabet[usize::from(*b) % alphabet.len()])).collect()
}

impl Iam {
    /// Parses and validates an IAM file's text.
    ///
    /// # Errors
    /// [`IamError::Invalid`]: a syntax error (position only: the file holds secrets) or a
    /// reference to a missing group, policy or role, a bad policy, a duplicate access key.
    pub fn parse(text: &str, format: Format) -> Result<Iam, IamError> {
        let iam: Iam = match format {
            Format::Json => serde_json::from_str(text).map_err(|e| {
                let msg = e.to_string();
                // serde_json's messages name fields and positions, not values; policy errors
                // come through unchanged.
                IamError::Invalid(msg)
            })?,
            Format::Toml => {
                toml::from_str(text).map_err(|e| IamError::Invalid(e.message().to_owned() + &toml_at(text, &e)))?
            }
        };
        iam.validate()?;
        Ok(iam)
    }

    /// Reads a file (`.toml` or `.json`; other names are sniffed).
    ///
    /// # Errors
    /// [`IamError::Io`] or those of [`Iam::parse`].
    pub fn load(path: &Path) -> Result<Iam, IamError> {
        let text = Zeroizing::new(
            std::fs::read_to_string(path).map_err(|e| IamError::Io(format!("cannot read {}: {e}", path.display())))?,
        );
        Self::parse(&text, format_of(path, &text))
    }

    /// The file's text.
    ///
    /// # Errors
    /// [`IamError::Invalid`] if it cannot be serialized.
    pub fn to_string(&self, format: Format) -> Result<Zeroizing<String>, IamError> {
        let s = match format {
            Format::Json => serde_json::to_string_pretty(self).map_err(|e| IamError::Invalid(e.to_string()))?,
            Format::Toml => toml::to_string(self).map_err(|e| IamError::Invalid(e.to_string()))?,
        };
        Ok(Zeroizing::new(s))
    }

    /// Writes the file atomically ([`envseal_support::atomic`]: temp file in the same directory,
    /// fsync, rename, fsync the directory), mode 0600.
    ///
    /// # Errors
    /// [`IamError::Io`].
    pub fn save(&self, path: &Path) -> Result<(), IamError> {
        let existing = Zeroizing::new(std::fs::read_to_string(path).unwrap_or_default());
        let text = self.to_string(format_of(path, &existing))?;
        atomic::write(path, text.as_bytes(), Mode::Fixed(0o600))
            .map(drop)
            .map_err(|e| IamError::Io(format!("cannot write {}: {e}", path.display())))
    }

    fn validate(&self) -> Result<(), IamError> {
        let bad = |m: String| Err(IamError::Invalid(m));
        if self.account.is_empty() || !self.account.chars().all(|c| c.is_ascii_digit()) {
            return bad(format!("account: {:?} is not an account id (digits)", self.account));
        }
        let mut ids = BTreeMap::new();
        for (name, u) in &self.users {
            if !valid_name(name) {
                return bad(format!("users.{name}: invalid user name"));
            }
            for g in &u.groups {
                if !self.groups.contains_key(g) {
                    return bad(format!("users.{name}.groups: unknown group {g:?}"));
                }
            }
            for p in &u.policies {
                if !self.policies.contains_key(p) {
                    return bad(format!("users.{name}.policies: unknown policy {p:?}"));
                }
            }
            for k in &u.access_keys {
                if k.id.len() < 8 || k.id.len() > 128 || !k.id.chars().all(|c| c.is_ascii_alphanumeric() || c == '.') {
                    return bad(format!(
                        "users.{name}.access_keys: id {:?} must be 8 to 128 letters, digits or dots",
                        k.id
                    ));
                }
                if k.id.starts_with("STS.") {
                    return bad(format!(
                        "users.{name}.access_keys: id {:?}: the STS. prefix is for temporary credentials",
                        k.id
                    ));
                }
                if k.secret.len() < 8 {
                    return bad(format!("users.{name}.access_keys[{}]: the secret is shorter than 8 characters", k.id));
                }
                if let Some(other) = ids.insert(k.id.clone(), name.clone()) {
                    return bad(format!("access key {:?} is listed for both {other} and {name}", k.id));
                }
            }
        }
        for (name, g) in &self.groups {
            for p in &g.policies {
                if !self.policies.contains_key(p) {
                    return bad(format!("groups.{name}.policies: unknown policy {p:?}"));
                }
            }
        }
        for (name, r) in &self.roles {
            if !valid_name(name) {
                return bad(format!("roles.{name}: invalid role name"));
            }
            for p in &r.policies {
                if !self.policies.contains_key(p) {
                    return bad(format!("roles.{name}.policies: unknown policy {p:?}"));
                }
            }
            if !(3600..=43_200).contains(&r.max_session_duration) {
                return bad(format!(
                    "roles.{name}.max_session_duration: {} is not between 3600 and 43200",
                    r.max_session_duration
                ));
            }
            if r.trust_policy.statements.iter().any(|s| s.principal.is_none()) {
                return bad(format!("roles.{name}.trust_policy: every statement needs a Principal"));
            }
            if let Some(t) = &r.revoke_sessions_before
                && humantime::parse_rfc3339_weak(t).is_err()
            {
                return bad(format!("roles.{name}.revoke_sessions_before: {t:?} is not RFC 3339"));
            }
        }
        Ok(())
    }

    /// Account id.
    pub fn account(&self) -> &str {
        &self.account
    }

    /// Counts.
    pub fn summary(&self) -> Summary {
        Summary {
            account: self.account.clone(),
            users: self.users.len(),
            access_keys: self.users.values().flat_map(|u| &u.access_keys).filter(|k| k.active()).count(),
            groups: self.groups.len(),
            roles: self.roles.len(),
            policies: self.policies.len(),
        }
    }

    /// The user owning access key `id`, and the key.
    pub fn access_key(&self, id: &str) -> Option<(&str, &AccessKeyEntry)> {
        self.users.iter().find_map(|(n, u)| u.access_keys.iter().find(|k| k.id == id).map(|k| (n.as_str(), k)))
    }

    /// A user.
    pub fn user(&self, name: &str) -> Option<&User> {
        self.users.get(name)
    }

    /// A role.
    pub fn role(&self, name: &str) -> Option<&Role> {
        self.roles.get(name)
    }

    /// A role named by ARN (`acs:ram::ACCOUNT:role/NAME`, `arn:aws:iam::ACCOUNT:role/NAME`) or
    /// by name.
    pub fn role_by_arn(&self, arn: &str) -> Option<(&str, &Role)> {
        let name = if let Some(rest) = arn.strip_prefix("acs:ram::").or_else(|| arn.strip_prefix("arn:aws:iam::")) {
            let (account, res) = rest.split_once(':')?;
            if account != self.account {
                return None;
            }
            res.strip_prefix("role/")?
        } else {
            arn
        };
        self.roles.get_key_value(name).map(|(n, r)| (n.as_str(), r))
    }

    /// The ARN of a principal.
    pub fn principal_info(&self, p: &Principal, flavor: Flavor) -> PrincipalInfo {
        let acc = &self.account;
        let (kind, name, arn, tags, session_name, issued) = match p {
            Principal::Root => (
                PrincipalKind::Root,
                "root".to_owned(),
                match flavor {
                    Flavor::Alibaba => format!("acs:ram::{acc}:root"),
                    Flavor::Aws => format!("arn:aws:iam::{acc}:root"),
                },
                BTreeMap::new(),
                None,
                None,
            ),
            Principal::User(u) => (
                PrincipalKind::User,
                u.clone(),
                match flavor {
                    Flavor::Alibaba => format!("acs:ram::{acc}:user/{u}"),
                    Flavor::Aws => format!("arn:aws:iam::{acc}:user/{u}"),
                },
                self.users.get(u).map(|x| x.tags.clone()).unwrap_or_default(),
                None,
                None,
            ),
            Principal::RoleSession(s) => {
                let sn = s.session_name.clone().unwrap_or_default();
                (
                    PrincipalKind::AssumedRole,
                    format!("{}/{sn}", s.role),
                    s.arn(acc, flavor),
                    self.roles.get(&s.role).map(|x| x.tags.clone()).unwrap_or_default(),
                    s.session_name.clone(),
                    Some(s.issued),
                )
            }
        };
        PrincipalInfo { kind, name, arn, account: acc.clone(), tags, session_name, token_issue_time: issued }
    }

    fn named<'a>(
        &'a self,
        names: &'a [String],
        inline: &'a BTreeMap<String, Policy>,
        out: &mut Vec<(&'a str, &'a Policy)>,
    ) {
        out.extend(names.iter().filter_map(|n| self.policies.get(n).map(|p| (n.as_str(), p))));
        out.extend(inline.iter().map(|(n, p)| (n.as_str(), p)));
    }

    /// The policies that apply to a user (its own and its groups').
    pub(crate) fn user_policies<'a>(&'a self, name: &str) -> Vec<(&'a str, &'a Policy)> {
        let mut out = Vec::new();
        if let Some(u) = self.users.get(name) {
            self.named(&u.policies, &u.inline, &mut out);
            for g in &u.groups {
                if let Some(g) = self.groups.get(g) {
                    self.named(&g.policies, &g.inline, &mut out);
                }
            }
        }
        out
    }

    /// Whether a role session was revoked (`revoke_sessions_before`) or its role removed.
    pub fn session_revoked(&self, s: &Session) -> bool {
        match self.roles.get(&s.role) {
            None => true,
            Some(r) => r
                .revoke_sessions_before
                .as_deref()
                .and_then(|t| humantime::parse_rfc3339_weak(t).ok())
                .is_some_and(|before| s.issued < before),
        }
    }

    /// Authorizes `ctx` for `p`.
    pub fn authorize(&self, p: &Principal, ctx: &RequestContext) -> Decision {
        match p {
            Principal::Root => Decision::allow_all("the account root may do everything"),
            Principal::User(u) => {
                if !self.users.contains_key(u) {
                    return Decision::deny(format!("no user {u:?}"));
                }
                evaluate_with_session(&self.user_policies(u), None, ctx)
            }
            Principal::RoleSession(s) => {
                if self.session_revoked(s) {
                    return Decision::deny(format!("the sessions of role {:?} were revoked", s.role));
                }
                if SystemTime::now() >= s.expires && ctx.current_time >= s.expires {
                    return Decision::deny("the session has expired".into());
                }
                let r = &self.roles[&s.role];
                let mut pol = Vec::new();
                self.named(&r.policies, &r.inline, &mut pol);
                evaluate_with_session(&pol, s.session_policy.as_ref(), ctx)
            }
        }
    }

    /// Parses `user/NAME`, `role/NAME[/SESSION]`, `root` or an access key id.
    ///
    /// # Errors
    /// [`IamError::NotFound`].
    pub fn parse_principal(&self, s: &str, session_policy: Option<Policy>, mfa: bool) -> Result<Principal, IamError> {
        if s == "root" {
            return Ok(Principal::Root);
        }
        if let Some(u) = s.strip_prefix("user/") {
            return if self.users.contains_key(u) {
                Ok(Principal::User(u.to_owned()))
            } else {
                Err(IamError::NotFound(format!("no user {u:?}")))
            };
        }
        if let Some(r) = s.strip_prefix("role/") {
            let (role, session) = r.split_once('/').unwrap_or((r, "simulated"));
            if !self.roles.contains_key(role) {
                return Err(IamError::NotFound(format!("no role {role:?}")));
            }
            let now = SystemTime::now();
            return Ok(Principal::RoleSession(Session {
                role: role.to_owned(),
                session_name: Some(session.to_owned()),
                session_policy,
                mfa,
                issued: now,
                expires: now + std::time::Duration::from_secs(3600),
            }));
        }
        match self.access_key(s) {
            Some((u, _)) => Ok(Principal::User(u.to_owned())),
            None => {
                Err(IamError::NotFound(format!("{s:?} is not user/NAME, role/NAME, root or a known access key id")))
            }
        }
    }

    // ---- Changes (the CLI's `envseal iam ...`).

    /// Adds a user.
    ///
    /// # Errors
    /// [`IamError::Exists`], or [`IamError::NotFound`] for an unknown group.
    pub fn create_user(&mut self, name: &str, groups: &[String]) -> Result<(), IamError> {
        if !valid_name(name) {
            return Err(IamError::Invalid(format!(
                "{name:?} is not a valid user name (letters, digits, +=,.@_-; at most 64)"
            )));
        }
        if self.users.contains_key(name) {
            return Err(IamError::Exists(format!("user {name:?} exists already")));
        }
        if let Some(g) = groups.iter().find(|g| !self.groups.contains_key(*g)) {
            return Err(IamError::NotFound(format!("no group {g:?}")));
        }
        self.users.insert(name.to_owned(), User { groups: groups.to_vec(), ..User::default() });
        Ok(())
    }

    /// Removes a user and its keys.
    ///
    /// # Errors
    /// [`IamError::NotFound`].
    pub fn delete_user(&mut self, name: &str) -> Result<(), IamError> {
        self.users.remove(name).map(drop).ok_or_else(|| IamError::NotFound(format!("no user {name:?}")))
    }

    /// Sets a user's MFA flag.
    ///
    /// # Errors
    /// [`IamError::NotFound`].
    pub fn set_user_mfa(&mut self, name: &str, mfa: bool) -> Result<(), IamError> {
        self.users.get_mut(name).map(|u| u.mfa = mfa).ok_or_else(|| IamError::NotFound(format!("no user {name:?}")))
    }

    /// Creates an access key for `user` (at most 2 per user, as both clouds allow).
    ///
    /// # Errors
    /// [`IamError::NotFound`], or [`IamError::Invalid`] past two keys.
    pub fn create_access_key(&mut self, user: &str) -> Result<NewAccessKey, IamError> {
        let u = self.users.get_mut(user).ok_or_else(|| IamError::NotFound(format!("no user {user:?}")))?;
        if u.access_keys.len() >= 2 {
            return Err(IamError::Invalid(format!("user {user:?} has 2 access keys already (delete one first)")));
        }
        const ID: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
        let id = format!("LTAI{}", random_string(ID, 20));
        let secret = Zeroizing::new(random_string(ID, 30));
        u.access_keys.push(AccessKeyEntry {
            id: id.clone(),
            secret: secret.clone(),
            status: KeyStatus::Active,
            created: Some(humantime::format_rfc3339_seconds(SystemTime::now()).to_string()),
        });
        Ok(NewAccessKey { id, secret })
    }

    fn key_mut(&mut self, id: &str) -> Result<(&String, &mut User), IamError> {
        self.users
            .iter_mut()
            .find(|(_, u)| u.access_keys.iter().any(|k| k.id == id))
            .ok_or_else(|| IamError::NotFound(format!("no access key {id:?}")))
    }

    /// Activates or deactivates an access key.
    ///
    /// # Errors
    /// [`IamError::NotFound`].
    pub fn set_access_key_status(&mut self, id: &str, active: bool) -> Result<(), IamError> {
        let (_, u) = self.key_mut(id)?;
        for k in u.access_keys.iter_mut().filter(|k| k.id == id) {
            k.status = if active { KeyStatus::Active } else { KeyStatus::Inactive };
        }
        Ok(())
    }

    /// Deletes an access key.
    ///
    /// # Errors
    /// [`IamError::NotFound`].
    pub fn delete_access_key(&mut self, id: &str) -> Result<(), IamError> {
        let (_, u) = self.key_mut(id)?;
        u.access_keys.retain(|k| k.id != id);
        Ok(())
    }

    /// Adds or replaces a managed policy.
    ///
    /// # Errors
    /// [`IamError::Invalid`] for a bad name.
    pub fn put_policy(&mut self, name: &str, policy: Policy) -> Result<(), IamError> {
        if !valid_name(name) {
            return Err(IamError::Invalid(format!("{name:?} is not a valid policy name")));
        }
        self.policies.insert(name.to_owned(), policy);
        Ok(())
    }

    fn attached(&mut self, target: &Target) -> Result<&mut Vec<String>, IamError> {
        let nf = |k: &str, n: &str| IamError::NotFound(format!("no {k} {n:?}"));
        match target {
            Target::User(n) => self.users.get_mut(n).map(|u| &mut u.policies).ok_or_else(|| nf("user", n)),
            Target::Group(n) => self.groups.get_mut(n).map(|g| &mut g.policies).ok_or_else(|| nf("group", n)),
            Target::Role(n) => self.roles.get_mut(n).map(|r| &mut r.policies).ok_or_else(|| nf("role", n)),
        }
    }

    /// Attaches managed policy `name` to `target`.
    ///
    /// # Errors
    /// [`IamError::NotFound`] for an unknown policy or target.
    pub fn attach_policy(&mut self, target: &Target, name: &str) -> Result<(), IamError> {
        if !self.policies.contains_key(name) {
            return Err(IamError::NotFound(format!("no policy {name:?}")));
        }
        let list = self.attached(target)?;
        if !list.iter().any(|p| p == name) {
            list.push(name.to_owned());
        }
        Ok(())
    }

    /// Detaches managed policy `name` from `target`.
    ///
    /// # Errors
    /// [`IamError::NotFound`] if it was not attached.
    pub fn detach_policy(&mut self, target: &Target, name: &str) -> Result<(), IamError> {
        let list = self.attached(target)?;
        let before = list.len();
        list.retain(|p| p != name);
        if list.len() == before {
            return Err(IamError::NotFound(format!("policy {name:?} is not attached there")));
        }
        Ok(())
    }

    /// Refuses every session of `role` issued before `when`.
    ///
    /// # Errors
    /// [`IamError::NotFound`].
    pub fn revoke_sessions(&mut self, role: &str, when: SystemTime) -> Result<(), IamError> {
        let r = self.roles.get_mut(role).ok_or_else(|| IamError::NotFound(format!("no role {role:?}")))?;
        r.revoke_sessions_before = Some(humantime::format_rfc3339_seconds(when).to_string());
        Ok(())
    }
}

fn format_of(path: &Path, text: &str) -> Format {
    match path.extension().and_then(|e| e.to_str()) {
        Some("json") => Format::Json,
        Some("toml") => Format::Toml,
        _ if text.trim_start().starts_with('{') => Format::Json,
        _ => Format::Toml,
    }
}

fn toml_at(text: &str, e: &toml::de::Error) -> String {
    match e.span() {
        Some(s) => {
            let line = text[..s.start.min(text.len())].matches('\n').count() + 1;
            format!(" (line {line})")
        }
        None => String::new(),
    }
}
