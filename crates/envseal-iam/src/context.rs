//! The request as policies see it: who ([`PrincipalInfo`]), what and on which resource, and
//! the condition keys ([`RequestContext::lookup`]).

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::SystemTime;

use serde::Serialize;

/// What kind of principal.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub enum PrincipalKind {
    /// The account root.
    Root,
    /// An IAM user.
    User,
    /// A role session (STS).
    AssumedRole,
    /// Nobody authenticated.
    Anonymous,
}

/// The principal as conditions see it.
#[derive(Clone, Debug, Serialize)]
pub struct PrincipalInfo {
    /// Kind.
    pub kind: PrincipalKind,
    /// User name, `ROLE/SESSION`, or `root`.
    pub name: String,
    /// ARN.
    pub arn: String,
    /// Account id.
    pub account: String,
    /// Tags (the user's, or the role's for a session).
    pub tags: BTreeMap<String, String>,
    /// Session name of a role session.
    pub session_name: Option<String>,
    /// When the session's credentials were issued.
    #[serde(skip)]
    pub token_issue_time: Option<SystemTime>,
}

/// One request, as policies see it.
#[derive(Clone, Debug)]
pub struct RequestContext {
    /// `kms:Decrypt`, `sts:AssumeRole`, ...
    pub action: String,
    /// The resource's ARN, or `*`.
    pub resource: String,
    /// Who.
    pub principal: PrincipalInfo,
    /// Whether MFA was used (`None`: unknown, the key is absent).
    pub mfa: Option<bool>,
    /// Client address.
    pub source_ip: Option<IpAddr>,
    /// TLS.
    pub secure_transport: Option<bool>,
    /// Time of the request.
    pub current_time: SystemTime,
    /// Encryption context of the request.
    pub encryption_context: BTreeMap<String, String>,
    /// Tags of the resource.
    pub resource_tags: BTreeMap<String, String>,
    /// Other condition keys (lower-case names).
    pub extra: BTreeMap<String, Vec<String>>,
}

impl RequestContext {
    /// A context for `principal` doing `action` on `resource`, now, with nothing else known.
    pub fn new(action: &str, resource: &str, principal: PrincipalInfo) -> Self {
        Self {
            action: action.to_owned(),
            resource: resource.to_owned(),
            principal,
            mfa: None,
            source_ip: None,
            secure_transport: None,
            current_time: SystemTime::now(),
            encryption_context: BTreeMap::new(),
            resource_tags: BTreeMap::new(),
            extra: BTreeMap::new(),
        }
    }

    /// The values of condition key `key` (case-insensitive name), `None` when absent.
    pub fn lookup(&self, key: &str) -> Option<Vec<String>> {
        let k = key.to_ascii_lowercase();
        let one = |s: String| Some(vec![s]);
        let tag = |tags: &BTreeMap<String, String>, name: &str| {
            tags.iter().find(|(t, _)| t.eq_ignore_ascii_case(name)).map(|(_, v)| vec![v.clone()])
        };
        for prefix in ["acs:principaltag/", "aws:principaltag/"] {
            if let Some(name) = k.strip_prefix(prefix) {
                return tag(&self.principal.tags, name);
            }
        }
        for prefix in ["acs:resourcetag/", "aws:resourcetag/", "kms:resourcetag/"] {
            if let Some(name) = k.strip_prefix(prefix) {
                return tag(&self.resource_tags, name);
            }
        }
        if let Some(name) = k.strip_prefix("kms:encryptioncontext:") {
            let original = &key[key.len() - name.len()..];
            return self
                .encryption_context
                .iter()
                .find(|(c, _)| c.as_str() == original || c.eq_ignore_ascii_case(name))
                .map(|(_, v)| vec![v.clone()]);
        }
        match k.as_str() {
            "acs:mfapresent" | "aws:multifactorauthpresent" => self.mfa.and_then(|m| one(m.to_string())),
            "acs:sourceip" | "aws:sourceip" => self.source_ip.and_then(|ip| one(ip.to_string())),
            "acs:currenttime" | "aws:currenttime" => {
                one(humantime::format_rfc3339_seconds(self.current_time).to_string())
            }
            "aws:epochtime" => one(self
                .current_time
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0)
                .to_string()),
            "acs:securetransport" | "aws:securetransport" => self.secure_transport.and_then(|s| one(s.to_string())),
            "acs:principalarn" | "aws:principalarn" => one(self.principal.arn.clone()),
            "aws:username" | "acs:username" | "ram:username" => {
                (self.principal.kind == PrincipalKind::User).then(|| vec![self.principal.name.clone()])
            }
            "aws:userid" | "acs:userid" => one(self.principal.name.clone()),
            "aws:principalaccount" | "acs:principalaccount" | "kms:calleraccount" => {
                one(self.principal.account.clone())
            }
            "aws:principaltype" | "acs:principaltype" => one(format!("{:?}", self.principal.kind)),
            "sts:rolesessionname" | "acs:rolesessionname" => self.principal.session_name.clone().map(|s| vec![s]),
            "aws:tokenissuetime" => {
                self.principal.token_issue_time.map(|t| vec![humantime::format_rfc3339_seconds(t).to_string()])
            }
            "kms:encryptioncontextkeys" => Some(self.encryption_context.keys().cloned().collect()),
            _ => self.extra.get(&k).cloned(),
        }
    }
}
