//! Evaluation: default deny, an explicit Deny wins, otherwise a matching Allow allows.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::time::SystemTime;

use serde::Serialize;

use crate::cond::{substitute, wildcard};
use crate::policy::{Effect, Policy, PrincipalSpec, Statement};

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

/// How a decision came about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub enum DecisionKind {
    /// A matching Allow and no matching Deny.
    Allow,
    /// A matching Deny.
    ExplicitDeny,
    /// No matching Allow.
    ImplicitDeny,
}

/// The statement that decided.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct StatementRef {
    /// Policy name (`session policy` for an STS session's own).
    pub policy: String,
    /// 0-based index in the document.
    pub index: usize,
    /// The statement's Sid.
    pub sid: Option<String>,
    /// Its effect.
    pub effect: Effect,
}

/// An authorization decision.
#[derive(Clone, Debug, Serialize)]
pub struct Decision {
    /// Whether the request is allowed.
    pub allowed: bool,
    /// Why.
    pub kind: DecisionKind,
    /// The deciding statement, if one decided.
    pub statement: Option<StatementRef>,
    /// A sentence about what decided.
    pub detail: String,
}

impl Decision {
    pub(crate) fn allow_all(detail: &str) -> Self {
        Self { allowed: true, kind: DecisionKind::Allow, statement: None, detail: detail.to_owned() }
    }

    pub(crate) fn deny(detail: String) -> Self {
        Self { allowed: false, kind: DecisionKind::ImplicitDeny, statement: None, detail }
    }
}

impl fmt::Display for Decision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match self.kind {
            DecisionKind::Allow => "allowed",
            DecisionKind::ExplicitDeny => "explicit deny",
            DecisionKind::ImplicitDeny => "implicit deny",
        };
        match &self.statement {
            Some(s) => {
                write!(f, "{what} by policy {:?} statement {}", s.policy, s.index)?;
                if let Some(sid) = &s.sid {
                    write!(f, " (sid {sid:?})")?;
                }
                Ok(())
            }
            None => write!(f, "{what}: {}", self.detail),
        }
    }
}

fn any_matches(patterns: &[String], value: &str, ignore_case: bool, ctx: &RequestContext, variables: bool) -> bool {
    patterns.iter().any(|p| {
        let p = if variables { substitute(p, ctx, true) } else { Some(p.clone()) };
        p.is_some_and(|p| wildcard(&p, value, ignore_case))
    })
}

pub(crate) fn statement_applies(st: &Statement, ctx: &RequestContext) -> bool {
    let (actions, not) = &st.actions;
    if any_matches(actions, &ctx.action, true, ctx, false) == *not {
        return false;
    }
    if let Some((resources, not)) = &st.resources
        && any_matches(resources, &ctx.resource, false, ctx, true) == *not
    {
        return false;
    }
    st.conditions.iter().all(|c| c.holds(ctx))
}

/// Whether a trust policy's `Principal` names the caller.
pub(crate) fn principal_matches(spec: &PrincipalSpec, caller: &PrincipalInfo, other_arn: &str) -> bool {
    match spec {
        PrincipalSpec::Any => true,
        PrincipalSpec::Service => false,
        PrincipalSpec::Accounts(list) => list.iter().any(|p| {
            if p == &caller.account
                || p == &format!("acs:ram::{}:root", caller.account)
                || p == &format!("arn:aws:iam::{}:root", caller.account)
            {
                return true;
            }
            wildcard(p, &caller.arn, false) || wildcard(p, other_arn, false)
        }),
    }
}

/// Evaluates `policies` (name, document) for `ctx`.
pub fn evaluate(policies: &[(&str, &Policy)], ctx: &RequestContext) -> Decision {
    let mut allow = None;
    for (name, p) in policies {
        for (i, st) in p.statements.iter().enumerate() {
            if !statement_applies(st, ctx) {
                continue;
            }
            let r = StatementRef { policy: (*name).to_owned(), index: i, sid: st.sid.clone(), effect: st.effect };
            match st.effect {
                Effect::Deny => {
                    return Decision {
                        allowed: false,
                        kind: DecisionKind::ExplicitDeny,
                        detail: format!("{} on {} is denied", ctx.action, ctx.resource),
                        statement: Some(r),
                    };
                }
                Effect::Allow if allow.is_none() => allow = Some(r),
                Effect::Allow => {}
            }
        }
    }
    match allow {
        Some(r) => Decision {
            allowed: true,
            kind: DecisionKind::Allow,
            detail: format!("{} on {} is allowed", ctx.action, ctx.resource),
            statement: Some(r),
        },
        None => Decision::deny(format!("no statement allows {} on {}", ctx.action, ctx.resource)),
    }
}

/// Evaluates identity policies and, for a session, its session policy: allowed only if both
/// allow; an explicit deny in either wins.
pub fn evaluate_with_session(identity: &[(&str, &Policy)], session: Option<&Policy>, ctx: &RequestContext) -> Decision {
    let id = evaluate(identity, ctx);
    let Some(sp) = session else { return id };
    let s = evaluate(&[("session policy", sp)], ctx);
    match (id.kind, s.kind) {
        (DecisionKind::ExplicitDeny, _) => id,
        (_, DecisionKind::ExplicitDeny) => s,
        (DecisionKind::Allow, DecisionKind::Allow) => id,
        (DecisionKind::Allow, _) => Decision::deny(format!(
            "the session policy does not allow {} on {} (effective permissions are the intersection)",
            ctx.action, ctx.resource
        )),
        _ => id,
    }
}
