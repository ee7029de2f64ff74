#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod cond;
mod context;
mod eval;
mod keypolicy;
mod model;
mod policy;
mod sts;

pub use crate::context::{PrincipalInfo, PrincipalKind, RequestContext};
pub use crate::eval::{Decision, DecisionKind, StatementRef, evaluate, evaluate_with_session};
pub use crate::keypolicy::{
    CONTEXT_OPERATIONS, GRANT_OPERATIONS, Grant, GrantConstraints, KEY_POLICY_NAME, KeyAccess, default_key_policy,
    every_statement_has_principal,
};
pub use crate::model::{
    AccessKeyEntry, DEFAULT_ACCOUNT, Flavor, Format, Group, Iam, IamError, KeyStatus, NewAccessKey, Principal, Role,
    Session, Summary, Target, User,
};
pub use crate::policy::{Effect, MAX_POLICY_BYTES, MAX_STATEMENTS, Policy, PolicyError};
pub use crate::sts::{
    AssumeRoleRequest, DEFAULT_SESSION, MAX_SESSION, MAX_SESSION_POLICY, MIN_SESSION, SessionError, SessionGrant,
    SessionStore, StsError, TemporaryCredentials, ct_eq, role_id,
};
