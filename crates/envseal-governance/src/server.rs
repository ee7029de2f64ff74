//! The hook `envseal kms serve` calls: authentication of IAM users' keys and STS sessions,
//! policy decisions, `AssumeRole`, and one audit record per request.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use envseal_audit::Event;
use envseal_iam::{AssumeRoleRequest, Flavor, KeyAccess, Policy, Principal, PrincipalKind, SessionError, StsError};
use envseal_kms_server::{
    AccessKey, Api, AssumeRoleInput, CallerIdentity, CallerKind, CredentialSource, Denied, IssuedCredentials, Lookup,
    Outcome, RequestHook, RequestInfo, StsRefusal,
};

use crate::{Access, Governance};

/// Error codes that mean "refused by policy" in either API.
const DENIAL_CODES: &[&str] = &["AccessDeniedException", "Forbidden.RAM", "AccessDenied", "NoPermission"];

/// Who made a request, resolved from its access key id.
enum Caller {
    /// A key given on the command line (`--access-key`): the account's root, allowed everything.
    Root,
    /// An IAM user's key.
    User(String),
    /// An STS session.
    Session(envseal_iam::Session),
    /// A key of the server's own list when no IAM file is in use: allowed everything, recorded
    /// under its principal name.
    Unmanaged(String),
    /// Unknown (the request failed before authentication).
    Anonymous,
}

/// [`RequestHook`] and [`CredentialSource`] of `envseal kms serve` over a [`Governance`].
pub struct ServerGovernance {
    gov: Arc<Governance>,
    root_keys: HashSet<String>,
    unmanaged: HashMap<String, String>,
    decisions: Mutex<HashMap<String, String>>,
}

impl fmt::Debug for ServerGovernance {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerGovernance").field("gov", &self.gov).finish_non_exhaustive()
    }
}

fn flavor(api: Api) -> Flavor {
    match api {
        Api::Alibaba => Flavor::Alibaba,
        _ => Flavor::Aws,
    }
}

impl ServerGovernance {
    /// A hook over `gov`; requests signed with one of `root_keys` (the server's fixed keys) are
    /// the account root's.
    pub fn new(gov: Arc<Governance>, root_keys: impl IntoIterator<Item = String>) -> Self {
        Self {
            gov,
            root_keys: root_keys.into_iter().collect(),
            unmanaged: HashMap::new(),
            decisions: Mutex::new(HashMap::new()),
        }
    }

    /// Keys (id, principal name) of a server without an IAM file: every request is allowed and
    /// recorded under the name.
    pub fn with_unmanaged(mut self, keys: impl IntoIterator<Item = (String, String)>) -> Self {
        self.unmanaged = keys.into_iter().collect();
        self
    }

    /// The governance this hook applies.
    pub fn governance(&self) -> &Arc<Governance> {
        &self.gov
    }

    fn caller(&self, r: &RequestInfo<'_>) -> Caller {
        if r.access_key_id.is_empty() {
            return Caller::Anonymous;
        }
        if self.root_keys.contains(r.access_key_id) {
            return Caller::Root;
        }
        if let Some(name) = self.unmanaged.get(r.access_key_id) {
            return Caller::Unmanaged(name.clone());
        }
        if let Some(s) = self.gov.sessions().session(r.access_key_id) {
            return Caller::Session(s);
        }
        match self.gov.iam().access_key(r.access_key_id) {
            Some((user, _)) => Caller::User(user.to_owned()),
            None => Caller::Anonymous,
        }
    }

    fn principal(&self, caller: &Caller) -> Option<(Principal, Option<bool>)> {
        match caller {
            // Without an IAM file every key is the account's own: the root.
            Caller::Root | Caller::Unmanaged(_) => Some((Principal::Root, Some(true))),
            Caller::User(u) => {
                let mfa = self.gov.iam().user(u).map(|x| x.mfa);
                Some((Principal::User(u.clone()), mfa))
            }
            Caller::Session(s) => Some((Principal::RoleSession(s.clone()), Some(s.mfa))),
            Caller::Anonymous => None,
        }
    }

    fn resource_arn(&self, r: &RequestInfo<'_>, key: Option<&str>) -> String {
        let iam = self.gov.iam();
        match (key, r.api) {
            (None, _) => "*".to_owned(),
            (Some(k), Api::Alibaba) => format!("acs:kms:{}:{}:key/{k}", r.region, iam.account()),
            (Some(k), _) => format!("arn:aws:kms:{}:{}:key/{k}", r.region, iam.account()),
        }
    }

    fn audit_principal(&self, ev: Event, r: &RequestInfo<'_>) -> Event {
        let iam = self.gov.iam();
        match self.caller(r) {
            Caller::Root => ev.principal(
                "Root",
                "root",
                Some(&iam.principal_info(&Principal::Root, flavor(r.api)).arn),
                Some(r.access_key_id),
                None,
            ),
            Caller::User(u) => {
                let info = iam.principal_info(&Principal::User(u.clone()), flavor(r.api));
                ev.principal("User", &u, Some(&info.arn), Some(r.access_key_id), None)
            }
            Caller::Unmanaged(name) => ev.principal("User", &name, None, Some(r.access_key_id), None),
            Caller::Session(s) => {
                let info = iam.principal_info(&Principal::RoleSession(s.clone()), flavor(r.api));
                ev.principal(
                    "AssumedRole",
                    &info.name,
                    Some(&info.arn),
                    Some(r.access_key_id),
                    s.session_name.as_deref(),
                )
            }
            Caller::Anonymous => {
                ev.principal("Anonymous", "", None, (!r.access_key_id.is_empty()).then_some(r.access_key_id), None)
            }
        }
    }
}

/// A stable id for a user (AWS `AIDA…`, 21 characters): from a hash of account and name.
fn user_id(account: &str, name: &str) -> String {
    format!("AIDA{}", &stable_hex(&format!("{account}:user/{name}"))[..17]).to_ascii_uppercase()
}

fn stable_hex(s: &str) -> String {
    // FNV-1a twice with different offsets: an id, not a secret.
    let a = s.bytes().fold(1469598103934665603u64, |h, b| (h ^ u64::from(b)).wrapping_mul(1099511628211));
    let b = s.bytes().rev().fold(0x6c62272e07bb0142u64, |h, b| (h ^ u64::from(b)).wrapping_mul(1099511628211));
    format!("{a:016x}{b:016x}")
}

impl CredentialSource for ServerGovernance {
    fn lookup(&self, access_key_id: &str, security_token: Option<&str>) -> Lookup {
        if access_key_id.starts_with("STS.") {
            return match self.gov.sessions().authenticate(access_key_id, security_token, SystemTime::now()) {
                Ok((session, _)) if self.gov.iam().session_revoked(&session) => Lookup::Expired,
                Ok((session, secret)) => {
                    let label =
                        format!("assumed-role/{}/{}", session.role, session.session_name.clone().unwrap_or_default());
                    let mut k = AccessKey::new(access_key_id, secret.as_str(), label);
                    if let Some(t) = security_token {
                        k = k.with_security_token(t, Some(session.expires));
                    }
                    Lookup::Found(Arc::new(k))
                }
                Err(SessionError::Expired | SessionError::Revoked) => Lookup::Expired,
                Err(_) => Lookup::Unknown,
            };
        }
        let iam = self.gov.iam();
        match iam.access_key(access_key_id) {
            Some((user, entry)) if entry.active() => {
                Lookup::Found(Arc::new(AccessKey::new(access_key_id, entry.secret(), user)))
            }
            _ => Lookup::Unknown,
        }
    }
}

impl RequestHook for ServerGovernance {
    fn authorize(&self, r: &RequestInfo<'_>) -> Result<(), Denied> {
        let caller = self.caller(r);
        // The fast path of a server without IAM file: the root, on a key with the default
        // policy, may do everything.
        if let Caller::Unmanaged(_) = caller
            && r.key_policy.is_none()
        {
            return Ok(());
        }
        let Some((who, mfa)) = self.principal(&caller) else {
            return Err(Denied { message: "the request has no authenticated principal".into() });
        };
        let access = Access {
            action: format!("kms:{}", r.operation.unwrap_or(r.action)),
            resource: self.resource_arn(r, r.resource),
            flavor: flavor(r.api),
            region: Some(r.region.to_owned()).filter(|x| !x.is_empty()),
            source_ip: r.source_ip,
            secure_transport: r.secure_transport,
            encryption_context: r.encryption_context,
            resource_tags: r.resource_tags,
        };
        let iam = self.gov.iam();
        let account = matches!(caller, Caller::Unmanaged(_)).then_some(r.account);
        let key = KeyAccess { key_policy: r.key_policy, grants: r.grants, operation: r.operation, account };
        let d = if r.resource.is_some() {
            self.gov.decide_key(&iam, &who, mfa, &access, &key)
        } else {
            self.gov.decide(&iam, &who, mfa, &access)
        };
        self.decisions.lock().unwrap_or_else(PoisonError::into_inner).insert(r.request_id.to_owned(), d.to_string());
        if d.allowed {
            Ok(())
        } else {
            let arn = iam.principal_info(&who, flavor(r.api)).arn;
            Err(Denied {
                message: format!(
                    "{arn} is not authorized to perform {} on resource {}: {d}",
                    access.action, access.resource
                ),
            })
        }
    }

    fn completed(&self, r: &RequestInfo<'_>, o: &Outcome<'_>) -> Result<(), Denied> {
        let decision = self.decisions.lock().unwrap_or_else(PoisonError::into_inner).remove(r.request_id);
        if self.gov.audit().is_none() {
            return Ok(());
        }
        let source = if r.action == "AssumeRole" || r.action == "GetCallerIdentity" { "sts" } else { "kms" };
        let mut ev = Event::new(if r.action.is_empty() { "Unknown" } else { r.action }, source)
            .api(r.api.as_str())
            .request_id(r.request_id)
            .user_agent(r.user_agent);
        if let Some(ip) = r.source_ip {
            ev = ev.source_ip(&ip.to_string());
        }
        if let Some(k) = r.resource {
            ev = ev.key_id(k);
        }
        ev = self.audit_principal(ev, r);
        for (k, v) in r.params {
            ev = ev.param(k, v.clone());
        }
        if !r.encryption_context.is_empty() {
            ev = ev.param("EncryptionContext", serde_json::to_value(r.encryption_context).unwrap_or_default());
        }
        if let Some(d) = decision {
            ev = ev.decision(&d);
        }
        ev = match o.error_code {
            None => ev.succeeded(),
            Some(code) if DENIAL_CODES.contains(&code) => ev.denied(code),
            Some(code) => ev.failed(code, ""),
        };
        self.gov.record(ev).map_err(|e| Denied { message: e.to_string() })
    }

    fn wants_resource_tags(&self) -> bool {
        true
    }

    fn caller_identity(&self, r: &RequestInfo<'_>) -> Option<CallerIdentity> {
        let caller = self.caller(r);
        if let Caller::Unmanaged(_) = caller {
            // The server's own answer: its accounts, not the IAM configuration's.
            return None;
        }
        let (who, _) = self.principal(&caller)?;
        let iam = self.gov.iam();
        let info = iam.principal_info(&who, flavor(r.api));
        Some(match info.kind {
            PrincipalKind::Root => CallerIdentity::new(info.arn, iam.account().to_owned(), CallerKind::Root),
            PrincipalKind::User => CallerIdentity::new(info.arn, user_id(iam.account(), &info.name), CallerKind::User),
            _ => {
                let role = match &who {
                    Principal::RoleSession(s) => s.role.clone(),
                    _ => String::new(),
                };
                let session = info.session_name.clone().unwrap_or_default();
                CallerIdentity::new(
                    info.arn,
                    format!("{}:{session}", envseal_iam::role_id(&role)),
                    CallerKind::AssumedRole,
                )
            }
        })
    }

    fn caller_names(&self, r: &RequestInfo<'_>) -> Option<Vec<String>> {
        let caller = self.caller(r);
        if let Caller::Unmanaged(_) = caller {
            return None;
        }
        let (who, _) = self.principal(&caller)?;
        Some(self.gov.iam().principal_names(&who))
    }

    fn assume_role(&self, r: &RequestInfo<'_>, input: &AssumeRoleInput<'_>) -> Result<IssuedCredentials, StsRefusal> {
        let caller = self.caller(r);
        let Some((who, mfa)) = self.principal(&caller) else {
            return Err(StsRefusal::AccessDenied("the request has no authenticated principal".into()));
        };
        let policy = match input.policy {
            Some(text) => Some(Policy::parse(text).map_err(|e| StsRefusal::MalformedPolicy(e.to_string()))?),
            None => None,
        };
        let iam = self.gov.iam();
        let req = AssumeRoleRequest {
            role_arn: input.role_arn.to_owned(),
            session_name: input.session_name.to_owned(),
            duration: input.duration_seconds.map(Duration::from_secs),
            session_policy: policy,
            mfa,
            source_ip: r.source_ip,
            now: SystemTime::now(),
        };
        let grant = iam.assume_role(&who, req).map_err(|e| match e {
            StsError::NoSuchRole(..) => StsRefusal::NoSuchRole(e.to_string()),
            StsError::InvalidDuration(..) => StsRefusal::InvalidParameter("DurationSeconds", e.to_string()),
            StsError::InvalidSessionName(..) => StsRefusal::InvalidParameter("RoleSessionName", e.to_string()),
            StsError::MalformedPolicy(..) => StsRefusal::MalformedPolicy(e.to_string()),
            StsError::SessionPolicyTooLarge(..) => StsRefusal::PolicyTooLarge(e.to_string()),
            _ => StsRefusal::AccessDenied(e.to_string()),
        })?;
        let c = self.gov.sessions().issue(grant);
        let arn = match r.api {
            Api::Alibaba => c.assumed_role_arn_alibaba.clone(),
            _ => c.assumed_role_arn.clone(),
        };
        Ok(IssuedCredentials::new(
            c.access_key_id.clone(),
            c.secret.clone(),
            c.security_token.clone(),
            c.expiration,
            arn,
            c.assumed_role_id.clone(),
        ))
    }
}
