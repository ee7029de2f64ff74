//! STS: `AssumeRole` checks (trust policy, the caller's own permission, duration, session
//! name, session policy) and the store of temporary credentials.

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use base64::Engine as _;
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use crate::context::RequestContext;
use crate::eval::{principal_matches, statement_applies};
use crate::model::{Flavor, Iam, Principal, Session};
use crate::policy::{Effect, Policy};

/// Shortest session (15 minutes).
pub const MIN_SESSION: Duration = Duration::from_secs(900);
/// Longest session (12 hours).
pub const MAX_SESSION: Duration = Duration::from_secs(43_200);
/// Default session (1 hour).
pub const DEFAULT_SESSION: Duration = Duration::from_secs(3600);
/// Largest session policy (bytes of JSON).
pub const MAX_SESSION_POLICY: usize = 2048;
/// Sessions kept at most (expired ones are dropped first).
const MAX_SESSIONS: usize = 100_000;

/// An `AssumeRole` request.
#[derive(Clone, Debug)]
pub struct AssumeRoleRequest {
    /// Role ARN (either spelling) or name.
    pub role_arn: String,
    /// `RoleSessionName`.
    pub session_name: String,
    /// Requested duration (default 1 hour).
    pub duration: Option<Duration>,
    /// Inline session policy.
    pub session_policy: Option<Policy>,
    /// Whether the caller used MFA.
    pub mfa: Option<bool>,
    /// Caller's address.
    pub source_ip: Option<IpAddr>,
    /// Time of the request.
    pub now: SystemTime,
}

/// Why `AssumeRole` was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StsError {
    /// No such role.
    #[error("the role {0} does not exist")]
    NoSuchRole(String),
    /// The role's trust policy does not name the caller.
    #[error("{0} is not trusted by role {1}")]
    NotTrusted(String, String),
    /// The caller's own policies do not allow `sts:AssumeRole` on the role.
    #[error("{0} is not authorized to perform sts:AssumeRole on {1}")]
    IdentityDenied(String, String),
    /// Duration out of range.
    #[error("DurationSeconds {0} is out of range: {1}")]
    InvalidDuration(u64, String),
    /// Bad session name.
    #[error("RoleSessionName {0:?} must be 2 to 64 characters of letters, digits and +=,.@-_")]
    InvalidSessionName(String),
    /// Session policy invalid.
    #[error("the session policy is invalid: {0}")]
    MalformedPolicy(String),
    /// Session policy too large.
    #[error("the session policy is {0} bytes, more than {MAX_SESSION_POLICY}")]
    SessionPolicyTooLarge(usize),
    /// A role session may not assume a role.
    #[error("a role session cannot assume a role (role chaining is not supported)")]
    Chaining,
}

/// What `AssumeRole` grants, before credentials are issued.
#[derive(Clone, Debug)]
pub struct SessionGrant {
    /// Account id.
    pub account: String,
    session: Session,
}

impl SessionGrant {
    /// The session (for callers that need no credentials, such as the local CLI).
    pub fn into_session(self, _now: SystemTime) -> Session {
        self.session
    }
}

impl Iam {
    /// Checks an `AssumeRole` by `caller`.
    ///
    /// # Errors
    /// [`StsError`].
    pub fn assume_role(&self, caller: &Principal, req: AssumeRoleRequest) -> Result<SessionGrant, StsError> {
        let (role_name, role) =
            self.role_by_arn(&req.role_arn).ok_or_else(|| StsError::NoSuchRole(req.role_arn.clone()))?;
        let name_ok = (2..=64).contains(&req.session_name.len())
            && req.session_name.chars().all(|c| c.is_ascii_alphanumeric() || "+=,.@-_".contains(c));
        if !name_ok {
            return Err(StsError::InvalidSessionName(req.session_name));
        }
        let duration = req.duration.unwrap_or(DEFAULT_SESSION.min(Duration::from_secs(role.max_session_duration)));
        if duration < MIN_SESSION || duration > MAX_SESSION {
            return Err(StsError::InvalidDuration(
                duration.as_secs(),
                "it must be between 900 and 43200 seconds".into(),
            ));
        }
        if duration.as_secs() > role.max_session_duration {
            return Err(StsError::InvalidDuration(
                duration.as_secs(),
                format!("the role's max_session_duration is {}", role.max_session_duration),
            ));
        }
        if let Some(p) = &req.session_policy {
            let len = p.to_string().len();
            if len > MAX_SESSION_POLICY {
                return Err(StsError::SessionPolicyTooLarge(len));
            }
        }
        if matches!(caller, Principal::RoleSession(_)) {
            return Err(StsError::Chaining);
        }
        // The trust policy, evaluated with the caller as principal, in both ARN spellings.
        let info = self.principal_info(caller, Flavor::Alibaba);
        let other = self.principal_info(caller, Flavor::Aws).arn;
        let role_arn = format!("acs:ram::{}:role/{role_name}", self.account());
        let mut ctx = RequestContext::new("sts:AssumeRole", &role_arn, info.clone());
        ctx.mfa = req.mfa;
        ctx.source_ip = req.source_ip;
        ctx.current_time = req.now;
        ctx.extra.insert("sts:rolesessionname".into(), vec![req.session_name.clone()]);
        let mut trusted = false;
        for st in &role.trust_policy.statements {
            let names = st.principal.as_ref().is_some_and(|p| principal_matches(p, &info, &other));
            if names && statement_applies(st, &ctx) {
                match st.effect {
                    Effect::Deny => return Err(StsError::NotTrusted(info.arn, role_arn)),
                    Effect::Allow => trusted = true,
                }
            }
        }
        if !trusted {
            return Err(StsError::NotTrusted(info.arn, role_arn));
        }
        if let Principal::User(_) = caller {
            let mut allowed = false;
            for arn in [role_arn.clone(), format!("arn:aws:iam::{}:role/{role_name}", self.account())] {
                ctx.resource = arn;
                let d = self.authorize(caller, &ctx);
                if d.kind == crate::DecisionKind::ExplicitDeny {
                    return Err(StsError::IdentityDenied(info.arn, role_arn));
                }
                allowed |= d.allowed;
            }
            if !allowed {
                return Err(StsError::IdentityDenied(info.arn, role_arn));
            }
        }
        Ok(SessionGrant {
            account: self.account().to_owned(),
            session: Session {
                role: role_name.to_owned(),
                session_name: Some(req.session_name),
                session_policy: req.session_policy,
                mfa: req.mfa.unwrap_or(false),
                issued: req.now,
                expires: req.now + duration,
            },
        })
    }
}

/// Temporary credentials: returned once, to the caller of `AssumeRole`.
pub struct TemporaryCredentials {
    /// `STS.` + random.
    pub access_key_id: String,
    /// Secret.
    pub secret: Zeroizing<String>,
    /// Security token.
    pub security_token: Zeroizing<String>,
    /// Expiry.
    pub expiration: SystemTime,
    /// `arn:aws:sts::ACCOUNT:assumed-role/ROLE/SESSION`.
    pub assumed_role_arn: String,
    /// `acs:ram::ACCOUNT:assumed-role/ROLE/SESSION`.
    pub assumed_role_arn_alibaba: String,
    /// `ROLEID:SESSION`.
    pub assumed_role_id: String,
}

impl fmt::Debug for TemporaryCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TemporaryCredentials")
            .field("access_key_id", &self.access_key_id)
            .field("expiration", &self.expiration)
            .field("assumed_role_arn", &self.assumed_role_arn)
            .finish_non_exhaustive()
    }
}

/// Why temporary credentials were refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SessionError {
    /// No such access key.
    #[error("unknown temporary access key")]
    Unknown,
    /// The token was not sent.
    #[error("the security token is missing")]
    MissingToken,
    /// The token does not match.
    #[error("the security token is invalid")]
    InvalidToken,
    /// Past its expiry.
    #[error("the security token has expired")]
    Expired,
    /// Revoked.
    #[error("the session was revoked")]
    Revoked,
}

struct Entry {
    session: Session,
    secret: Zeroizing<String>,
    token: Zeroizing<String>,
    revoked: bool,
}

/// Issued sessions, in memory (they end with the process).
#[derive(Default)]
pub struct SessionStore {
    inner: Mutex<HashMap<String, Entry>>,
}

impl fmt::Debug for SessionStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.inner.lock().unwrap_or_else(PoisonError::into_inner).len();
        f.debug_struct("SessionStore").field("sessions", &n).finish()
    }
}

fn random(n: usize) -> Vec<u8> {
    let mut b = vec![0u8; n];
    getrandom::fill(&mut b).expect("OS random number generator failed");
    b
}

/// Constant-time comparison of two secrets.
pub fn ct_eq(a: &str, b: &str) -> bool {
    a.len() == b.len() && bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

/// A stable numeric id for a role name, 18 digits (what a RoleId, and the first part of an
/// assumed role's UserId, look like): FNV-1a of the name. An id, not a secret.
pub fn role_id(role: &str) -> String {
    let h = role.bytes().fold(1469598103934665603u64, |h, b| (h ^ u64::from(b)).wrapping_mul(1099511628211));
    format!("{:018}", h % 10u64.pow(18))
}

impl SessionStore {
    /// Issues credentials for `grant`.
    pub fn issue(&self, grant: SessionGrant) -> TemporaryCredentials {
        const ALNUM: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
        let pick = |n| random(n).iter().map(|b| char::from(ALNUM[usize::from(*b) % ALNUM.len()])).collect::<String>();
        let id = format!("STS.{}", pick(24));
        let secret = Zeroizing::new(pick(40));
        let token = Zeroizing::new(base64::engine::general_purpose::STANDARD.encode(random(48)));
        let s = grant.session;
        let creds = TemporaryCredentials {
            access_key_id: id.clone(),
            secret: secret.clone(),
            security_token: token.clone(),
            expiration: s.expires,
            assumed_role_arn: s.arn(&grant.account, Flavor::Aws),
            assumed_role_arn_alibaba: s.arn(&grant.account, Flavor::Alibaba),
            assumed_role_id: format!("{}:{}", role_id(&s.role), s.session_name.as_deref().unwrap_or("")),
        };
        let mut m = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        if m.len() >= MAX_SESSIONS {
            let now = SystemTime::now();
            m.retain(|_, e| e.session.expires > now && !e.revoked);
            if m.len() >= MAX_SESSIONS
                && let Some(oldest) = m.iter().min_by_key(|(_, e)| e.session.issued).map(|(k, _)| k.clone())
            {
                m.remove(&oldest);
            }
        }
        m.insert(id, Entry { session: s, secret, token, revoked: false });
        creds
    }

    /// The session of `access_key_id`, if it exists (expired or not).
    pub fn session(&self, access_key_id: &str) -> Option<Session> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner).get(access_key_id).map(|e| e.session.clone())
    }

    /// Checks `token` for `access_key_id` at `now`; returns the session and its secret.
    ///
    /// # Errors
    /// [`SessionError`].
    pub fn authenticate(
        &self,
        access_key_id: &str,
        token: Option<&str>,
        now: SystemTime,
    ) -> Result<(Session, Zeroizing<String>), SessionError> {
        let m = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        let e = m.get(access_key_id).ok_or(SessionError::Unknown)?;
        let token = token.ok_or(SessionError::MissingToken)?;
        if !ct_eq(&e.token, token) {
            return Err(SessionError::InvalidToken);
        }
        if e.revoked {
            return Err(SessionError::Revoked);
        }
        if now >= e.session.expires {
            return Err(SessionError::Expired);
        }
        Ok((e.session.clone(), e.secret.clone()))
    }

    /// Revokes one session.
    pub fn revoke(&self, access_key_id: &str) -> bool {
        let mut m = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        m.get_mut(access_key_id).map(|e| e.revoked = true).is_some()
    }

    /// Revokes every session of `role` issued before `before`; returns how many.
    pub fn revoke_role_sessions(&self, role: &str, before: SystemTime) -> usize {
        let mut m = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        let mut n = 0;
        for e in m.values_mut().filter(|e| e.session.role == role && e.session.issued < before && !e.revoked) {
            e.revoked = true;
            n += 1;
        }
        n
    }
}
