//! Evaluation: default deny, an explicit Deny wins, otherwise a matching Allow allows.

use std::fmt;

use serde::Serialize;

use crate::cond::{substitute, wildcard};
use crate::context::{PrincipalInfo, RequestContext};
use crate::policy::{Effect, Policy, PrincipalSpec, Statement};

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
