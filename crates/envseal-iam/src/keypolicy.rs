//! KMS key policies and grants, evaluated together with the identity policies (docs/IAM.md,
//! "Key policies and grants").
//!
//! Every key has one key policy (`default`). Until one is set it is the default policy, which
//! names the account: identity policies then decide alone, as before key policies existed. The
//! order, after AWS KMS's "Determining access to a KMS key":
//!
//! 1. An explicit `Deny` in the key policy (for a principal it names) or in an identity or
//!    session policy refuses the request.
//! 2. A key-policy `Allow` naming the caller (its ARN, its role's ARN for a session, or `*`)
//!    allows it: the key policy allows by itself, without any identity policy.
//! 3. A key-policy `Allow` naming the account (`arn:aws:iam::ACCOUNT:root`,
//!    `acs:ram::ACCOUNT:root`, `acs:ram::ACCOUNT:*` or the account id) lets the identity
//!    policies decide: allowed if they allow.
//! 4. A grant on the key for the caller that lists the operation (and whose encryption-context
//!    constraint the request meets) allows it.
//! 5. Otherwise the request is refused.
//!
//! A role session's session policy narrows steps 2 to 4 as it narrows identity policies.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::cond::wildcard;
use crate::context::RequestContext;
use crate::eval::{Decision, DecisionKind, StatementRef, evaluate, statement_applies};
use crate::model::{Flavor, Iam, Principal};
use crate::policy::{Effect, Policy, PrincipalSpec};

/// The name of a key's one key policy.
pub const KEY_POLICY_NAME: &str = "default";

/// Operations a grant may list (AWS `GrantOperation`).
pub const GRANT_OPERATIONS: &[&str] = &[
    "Decrypt",
    "Encrypt",
    "GenerateDataKey",
    "GenerateDataKeyWithoutPlaintext",
    "ReEncryptFrom",
    "ReEncryptTo",
    "Sign",
    "Verify",
    "GetPublicKey",
    "CreateGrant",
    "RetireGrant",
    "DescribeKey",
    "GenerateDataKeyPair",
    "GenerateDataKeyPairWithoutPlaintext",
    "GenerateMac",
    "VerifyMac",
    "DeriveSharedSecret",
];

/// Grant operations that take an encryption context (the only ones a constrained grant may
/// list, as on AWS).
pub const CONTEXT_OPERATIONS: &[&str] = &[
    "Decrypt",
    "Encrypt",
    "GenerateDataKey",
    "GenerateDataKeyWithoutPlaintext",
    "ReEncryptFrom",
    "ReEncryptTo",
    "GenerateDataKeyPair",
    "GenerateDataKeyPairWithoutPlaintext",
];

/// The default key policy in one cloud's spelling: the account may do everything, so identity
/// policies decide.
pub fn default_key_policy(account: &str, flavor: Flavor) -> String {
    match flavor {
        Flavor::Alibaba => format!(
            r#"{{"Version":"1","Statement":[{{"Sid":"Enable RAM User Permissions","Effect":"Allow","Principal":{{"RAM":["acs:ram::{account}:*"]}},"Action":["kms:*"],"Resource":["*"]}}]}}"#
        ),
        Flavor::Aws => format!(
            r#"{{"Version":"2012-10-17","Id":"key-default-1","Statement":[{{"Sid":"Enable IAM User Permissions","Effect":"Allow","Principal":{{"AWS":"arn:aws:iam::{account}:root"}},"Action":"kms:*","Resource":"*"}}]}}"#
        ),
    }
}

/// Whether every statement of `p` names a `Principal` (a key policy's must).
pub fn every_statement_has_principal(p: &Policy) -> bool {
    p.statements.iter().all(|s| s.principal.is_some())
}

/// The encryption-context constraint of a grant.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct GrantConstraints {
    /// The request's context must hold every pair (and may hold more).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encryption_context_subset: Option<BTreeMap<String, String>>,
    /// The request's context must be exactly this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encryption_context_equals: Option<BTreeMap<String, String>>,
}

impl GrantConstraints {
    /// A constraint from its two optional parts.
    pub fn new(subset: Option<BTreeMap<String, String>>, equals: Option<BTreeMap<String, String>>) -> GrantConstraints {
        GrantConstraints { encryption_context_subset: subset, encryption_context_equals: equals }
    }

    /// Whether there is any constraint.
    pub fn is_empty(&self) -> bool {
        self.encryption_context_subset.is_none() && self.encryption_context_equals.is_none()
    }

    /// Whether `context` meets the constraint.
    pub fn allows(&self, context: &BTreeMap<String, String>) -> bool {
        let subset_ok =
            self.encryption_context_subset.as_ref().is_none_or(|s| s.iter().all(|(k, v)| context.get(k) == Some(v)));
        subset_ok && self.encryption_context_equals.as_ref().is_none_or(|e| e == context)
    }
}

/// A grant: permission for one principal to use one key for some operations, next to the key
/// policy (AWS KMS `CreateGrant`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Grant {
    /// 64 hex digits.
    pub grant_id: String,
    /// The grant token callers may pass in `GrantTokens` (not a secret: it names the grant).
    pub grant_token: String,
    /// The key's canonical id.
    pub key_id: String,
    /// Optional name (CreateGrant is idempotent for one name and the same parameters).
    #[serde(default)]
    pub name: String,
    /// Who may use it: a user, role or account root ARN (either cloud's spelling).
    pub grantee_principal: String,
    /// Who may retire it, besides the grantee (with `RetireGrant`) and the account.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retiring_principal: Option<String>,
    /// Allowed operations (from [`GRANT_OPERATIONS`]).
    pub operations: Vec<String>,
    /// Encryption-context constraint.
    #[serde(default)]
    pub constraints: GrantConstraints,
    /// The account that created it.
    pub issuing_account: String,
    /// Creation time, unix seconds.
    pub created: u64,
}

impl Grant {
    /// A grant from its parts (the caller draws the id and the token).
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        grant_id: String,
        grant_token: String,
        key_id: String,
        name: String,
        grantee_principal: String,
        retiring_principal: Option<String>,
        operations: Vec<String>,
        constraints: GrantConstraints,
        issuing_account: String,
        created: u64,
    ) -> Grant {
        Grant {
            grant_id,
            grant_token,
            key_id,
            name,
            grantee_principal,
            retiring_principal,
            operations,
            constraints,
            issuing_account,
            created,
        }
    }

    /// Whether it lets `who` do `operation` (a grant operation name) with `context`.
    fn allows(&self, names: &Names, operation: &str, context: &BTreeMap<String, String>) -> bool {
        names.is(&self.grantee_principal)
            && self.operations.iter().any(|o| o == operation)
            && self.constraints.allows(context)
    }
}

/// Every name a caller answers to: its ARN in both spellings and, for a role session, its
/// role's ARNs.
struct Names {
    account: String,
    arns: Vec<String>,
    root: bool,
}

impl Names {
    fn of(iam: &Iam, who: &Principal, account: Option<&str>) -> Names {
        let acc = account.unwrap_or(iam.account());
        let mut arns = match (who, account) {
            (Principal::Root, Some(a)) => vec![format!("arn:aws:iam::{a}:root"), format!("acs:ram::{a}:root")],
            _ => vec![iam.principal_info(who, Flavor::Aws).arn, iam.principal_info(who, Flavor::Alibaba).arn],
        };
        if let Principal::RoleSession(s) = who {
            arns.push(format!("arn:aws:iam::{acc}:role/{}", s.role));
            arns.push(format!("acs:ram::{acc}:role/{}", s.role));
        }
        Names { account: acc.to_owned(), arns, root: matches!(who, Principal::Root) }
    }

    /// Whether `name` is exactly one of the caller's ARNs (grantees are exact).
    fn is(&self, name: &str) -> bool {
        self.arns.iter().any(|a| a == name)
    }

    fn is_account(&self, p: &str) -> bool {
        let acc = &self.account;
        p == acc
            || *p == format!("arn:aws:iam::{acc}:root")
            || *p == format!("acs:ram::{acc}:root")
            || *p == format!("acs:ram::{acc}:*")
    }

    /// How a key-policy `Principal` names the caller.
    fn naming(&self, spec: &PrincipalSpec) -> Naming {
        match spec {
            PrincipalSpec::Any => Naming::Direct,
            PrincipalSpec::Service => Naming::None,
            PrincipalSpec::Accounts(list) => {
                let mut out = Naming::None;
                for p in list {
                    if self.is_account(p) {
                        // The root is the account itself: named directly.
                        out = out.max(if self.root { Naming::Direct } else { Naming::Account });
                    } else if self.arns.iter().any(|a| wildcard(p, a, false)) {
                        out = Naming::Direct;
                    }
                }
                out
            }
        }
    }
}

/// How a key-policy statement names the caller.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Naming {
    None,
    /// Through its account: identity policies decide.
    Account,
    /// Directly (its ARN, its role, `*`, or the root itself).
    Direct,
}

/// What a key brings to a decision: its key policy and grants.
#[derive(Clone, Copy, Debug, Default)]
pub struct KeyAccess<'a> {
    /// The key policy; `None` is the default policy (the account may do everything).
    pub key_policy: Option<&'a Policy>,
    /// The key's grants.
    pub grants: &'a [Grant],
    /// The grant operation the request needs (`ReEncryptFrom` for the source of a ReEncrypt,
    /// ...); `None` when the action name is the operation.
    pub operation: Option<&'a str>,
    /// The account the key belongs to, when it is not the IAM configuration's (a server
    /// without IAM file, whose two APIs have their own account ids).
    pub account: Option<&'a str>,
}

impl Iam {
    /// Authorizes `ctx` on a KMS key for `who`: identity policies, the key policy and grants
    /// together, in the order of the [module documentation](self).
    pub fn authorize_key(&self, who: &Principal, ctx: &RequestContext, key: &KeyAccess<'_>) -> Decision {
        let identity = self.authorize(who, ctx);
        if identity.kind == DecisionKind::ExplicitDeny {
            return identity;
        }
        let names = Names::of(self, who, key.account);
        let (mut account_allowed, mut direct) = (key.key_policy.is_none(), None);
        if let Some(policy) = key.key_policy {
            for (i, st) in policy.statements.iter().enumerate() {
                let naming = st.principal.as_ref().map_or(Naming::None, |p| names.naming(p));
                if naming == Naming::None || !statement_applies(st, ctx) {
                    continue;
                }
                let r =
                    StatementRef { policy: "key policy".to_owned(), index: i, sid: st.sid.clone(), effect: st.effect };
                match (st.effect, naming) {
                    (Effect::Deny, _) => {
                        return Decision {
                            allowed: false,
                            kind: DecisionKind::ExplicitDeny,
                            detail: format!("{} on {} is denied by the key policy", ctx.action, ctx.resource),
                            statement: Some(r),
                        };
                    }
                    (Effect::Allow, Naming::Direct) => direct = direct.or(Some(r)),
                    (Effect::Allow, _) => account_allowed = true,
                }
            }
        }
        // A role session's session policy narrows what the key policy and grants give.
        let session_allows = match who {
            Principal::RoleSession(s) => s.session_policy.as_ref().is_none_or(|sp| {
                let d = evaluate(&[("session policy", sp)], ctx);
                d.allowed
            }),
            _ => true,
        };
        if let Some(r) = direct
            && session_allows
        {
            return Decision {
                allowed: true,
                kind: DecisionKind::Allow,
                detail: format!("{} on {} is allowed by the key policy", ctx.action, ctx.resource),
                statement: Some(r),
            };
        }
        if account_allowed && identity.allowed {
            return identity;
        }
        let operation = key.operation.unwrap_or_else(|| ctx.action.strip_prefix("kms:").unwrap_or(&ctx.action));
        if session_allows
            && let Some(g) = key.grants.iter().find(|g| g.allows(&names, operation, &ctx.encryption_context))
        {
            return Decision {
                allowed: true,
                kind: DecisionKind::Allow,
                detail: format!("{operation} on {} is allowed by grant {}", ctx.resource, g.grant_id),
                statement: None,
            };
        }
        let why = if account_allowed {
            identity.to_string()
        } else {
            "the key policy does not name the caller or its account, and no grant allows it".to_owned()
        };
        Decision::deny(format!("{} on {}: {why}", ctx.action, ctx.resource))
    }

    /// The ARNs `who` answers to (for grantee and retiring-principal checks): its own in both
    /// spellings and, for a role session, its role's.
    pub fn principal_names(&self, who: &Principal) -> Vec<String> {
        Names::of(self, who, None).arns
    }
}

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use super::*;
    use crate::model::Format;

    const IAM: &str = r#"
account = "111122223333"
[users.alice]
policies = ["KmsAll"]
[users.bob]
[roles.ci]
trust_policy = '{"Version":"1","Statement":[{"Effect":"Allow","Action":"sts:AssumeRole","Principal":{"AWS":"*"}}]}'
[policies]
KmsAll = '{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"kms:*","Resource":"*"}]}'
"#;

    fn ctx(iam: &Iam, who: &Principal, action: &str, context: &[(&str, &str)]) -> RequestContext {
        let mut c = RequestContext::new(
            action,
            "arn:aws:kms:us-east-1:111122223333:key/k1",
            iam.principal_info(who, Flavor::Aws),
        );
        c.encryption_context = context.iter().map(|(a, b)| ((*a).to_owned(), (*b).to_owned())).collect();
        c
    }

    fn session(role: &str) -> Principal {
        let now = SystemTime::now();
        Principal::RoleSession(crate::model::Session {
            role: role.into(),
            session_name: Some("s".into()),
            session_policy: None,
            mfa: false,
            issued: now,
            expires: now + std::time::Duration::from_secs(600),
        })
    }

    #[test]
    fn default_policy_lets_identity_policies_decide() {
        let iam = Iam::parse(IAM, Format::Toml).unwrap();
        let alice = Principal::User("alice".into());
        let bob = Principal::User("bob".into());
        let none = KeyAccess::default();
        assert!(iam.authorize_key(&alice, &ctx(&iam, &alice, "kms:Decrypt", &[]), &none).allowed);
        assert!(!iam.authorize_key(&bob, &ctx(&iam, &bob, "kms:Decrypt", &[]), &none).allowed);
        assert!(iam.authorize_key(&Principal::Root, &ctx(&iam, &Principal::Root, "kms:Decrypt", &[]), &none).allowed);
        // The default documents parse and mean the same.
        for f in [Flavor::Aws, Flavor::Alibaba] {
            let p = Policy::parse(&default_key_policy("111122223333", f)).unwrap();
            let k = KeyAccess { key_policy: Some(&p), ..KeyAccess::default() };
            assert!(iam.authorize_key(&alice, &ctx(&iam, &alice, "kms:Decrypt", &[]), &k).allowed, "{f:?}");
            assert!(!iam.authorize_key(&bob, &ctx(&iam, &bob, "kms:Decrypt", &[]), &k).allowed, "{f:?}");
        }
    }

    #[test]
    fn a_key_policy_allows_and_denies_by_itself() {
        let iam = Iam::parse(IAM, Format::Toml).unwrap();
        let alice = Principal::User("alice".into());
        let bob = Principal::User("bob".into());
        // Names bob directly (no identity policy needed), denies alice, and leaves out the
        // account: alice's identity policy no longer counts.
        let p = Policy::parse(
            r#"{"Version":"2012-10-17","Statement":[
              {"Effect":"Allow","Principal":{"AWS":"arn:aws:iam::111122223333:user/bob"},"Action":"kms:Decrypt","Resource":"*"},
              {"Sid":"NoAlice","Effect":"Deny","Principal":{"AWS":"arn:aws:iam::111122223333:user/alice"},"Action":"kms:*","Resource":"*"},
              {"Effect":"Allow","Principal":{"AWS":"arn:aws:iam::111122223333:role/ci"},"Action":"kms:GenerateDataKey","Resource":"*"}]}"#,
        )
        .unwrap();
        let k = KeyAccess { key_policy: Some(&p), ..KeyAccess::default() };
        assert!(iam.authorize_key(&bob, &ctx(&iam, &bob, "kms:Decrypt", &[]), &k).allowed);
        assert!(!iam.authorize_key(&bob, &ctx(&iam, &bob, "kms:Encrypt", &[]), &k).allowed);
        let d = iam.authorize_key(&alice, &ctx(&iam, &alice, "kms:Decrypt", &[]), &k);
        assert_eq!(d.kind, DecisionKind::ExplicitDeny);
        assert_eq!(d.statement.unwrap().sid.as_deref(), Some("NoAlice"));
        // A session of role ci is named through its role.
        let s = session("ci");
        assert!(iam.authorize_key(&s, &ctx(&iam, &s, "kms:GenerateDataKey", &[]), &k).allowed);
        // The root is refused by a key policy that names neither it nor the account.
        assert!(!iam.authorize_key(&Principal::Root, &ctx(&iam, &Principal::Root, "kms:Decrypt", &[]), &k).allowed);
    }

    #[test]
    fn grants_allow_their_operations_under_their_constraints() {
        let iam = Iam::parse(IAM, Format::Toml).unwrap();
        let bob = Principal::User("bob".into());
        let subset: BTreeMap<String, String> = [("app".to_owned(), "web".to_owned())].into();
        let g = Grant::new(
            "g1".into(),
            "t1".into(),
            "k1".into(),
            String::new(),
            "arn:aws:iam::111122223333:user/bob".into(),
            None,
            vec!["Decrypt".into(), "ReEncryptFrom".into()],
            GrantConstraints::new(Some(subset), None),
            "111122223333".into(),
            0,
        );
        let grants = [g];
        let k = KeyAccess { grants: &grants, ..KeyAccess::default() };
        let d = iam.authorize_key(&bob, &ctx(&iam, &bob, "kms:Decrypt", &[("app", "web"), ("x", "1")]), &k);
        assert!(d.allowed && d.detail.contains("grant g1"), "{d}");
        assert!(!iam.authorize_key(&bob, &ctx(&iam, &bob, "kms:Decrypt", &[("app", "api")]), &k).allowed);
        assert!(!iam.authorize_key(&bob, &ctx(&iam, &bob, "kms:Encrypt", &[("app", "web")]), &k).allowed);
        let from = KeyAccess { operation: Some("ReEncryptFrom"), ..k };
        assert!(iam.authorize_key(&bob, &ctx(&iam, &bob, "kms:ReEncryptFrom", &[("app", "web")]), &from).allowed);
        // An explicit deny in the key policy beats a grant.
        let p = Policy::parse(
            r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"AWS":"111122223333"},"Action":"kms:*","Resource":"*"},
               {"Effect":"Deny","Principal":"*","Action":"kms:Decrypt","Resource":"*"}]}"#,
        )
        .unwrap();
        let k = KeyAccess { key_policy: Some(&p), grants: &grants, ..KeyAccess::default() };
        assert!(!iam.authorize_key(&bob, &ctx(&iam, &bob, "kms:Decrypt", &[("app", "web")]), &k).allowed);
        assert!(GrantConstraints::default().allows(&BTreeMap::new()));
        let eq = GrantConstraints::new(None, Some(BTreeMap::new()));
        assert!(eq.allows(&BTreeMap::new()) && !eq.allows(&[("a".to_owned(), "b".to_owned())].into()));
    }
}
