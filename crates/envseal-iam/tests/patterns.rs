//! The policy patterns users copy, through the multi-team example file and small documents:
//! each case checks allow or deny and the statement that decided.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use envseal_iam::{
    AssumeRoleRequest, DecisionKind, Flavor, Format, Iam, Policy, Principal, RequestContext, SessionError,
    SessionStore, StsError, evaluate, evaluate_with_session,
};

fn example() -> Iam {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../testdata/iam/multi-team.toml");
    Iam::load(&p).unwrap()
}

fn user(u: &str) -> Principal {
    Principal::User(u.to_owned())
}

/// (allowed, sid of the deciding statement)
fn check(
    iam: &Iam,
    who: &Principal,
    action: &str,
    resource: &str,
    f: impl FnOnce(&mut RequestContext),
) -> (bool, Option<String>) {
    let mut ctx = RequestContext::new(action, resource, iam.principal_info(who, Flavor::Aws));
    ctx.mfa = match who {
        Principal::User(u) => iam.user(u).map(|x| x.mfa),
        _ => None,
    };
    f(&mut ctx);
    let d = iam.authorize(who, &ctx);
    (d.allowed, d.statement.and_then(|s| s.sid))
}

const KEY_EAST: &str = "arn:aws:kms:us-east-1:1234567890123456:key/k1";
const KEY_WEST: &str = "arn:aws:kms:eu-west-1:1234567890123456:key/k1";
const KEY_HZ: &str = "acs:kms:cn-hangzhou:1234567890123456:key/k1";

#[test]
fn region_scoped_admin() {
    let iam = example();
    let a = user("admin");
    assert_eq!(check(&iam, &a, "kms:ScheduleKeyDeletion", KEY_EAST, |_| {}), (true, Some("KeysInHomeRegions".into())));
    assert_eq!(check(&iam, &a, "kms:Decrypt", KEY_HZ, |_| {}), (true, Some("KeysInHomeRegions".into())));
    assert_eq!(check(&iam, &a, "kms:Decrypt", KEY_WEST, |_| {}), (false, None));
    let region = |r: &str| {
        let r = r.to_owned();
        move |c: &mut RequestContext| {
            c.extra.insert("aws:requestedregion".into(), vec![r]);
        }
    };
    assert_eq!(
        check(&iam, &a, "kms:CreateKey", "*", region("us-east-1")),
        (true, Some("AccountWideInHomeRegions".into()))
    );
    assert_eq!(check(&iam, &a, "kms:CreateKey", "*", region("eu-west-1")), (false, None));
}

#[test]
fn read_only() {
    let iam = example();
    let r = user("auditor");
    for a in ["kms:DescribeKey", "kms:ListKeys", "kms:ListAliases", "kms:GetKeyRotationStatus"] {
        assert_eq!(check(&iam, &r, a, KEY_EAST, |_| {}), (true, Some("ReadOnly".into())), "{a}");
    }
    for a in ["kms:Decrypt", "kms:Encrypt", "kms:GenerateDataKey", "kms:ScheduleKeyDeletion", "kms:CreateKey"] {
        assert_eq!(check(&iam, &r, a, KEY_EAST, |_| {}), (false, None), "{a}");
    }
}

#[test]
fn broad_allow_with_targeted_deny() {
    let iam = example();
    let d = user("dana");
    assert_eq!(check(&iam, &d, "kms:Decrypt", KEY_WEST, |_| {}), (true, Some("BroadKms".into())));
    assert_eq!(check(&iam, &d, "kms:CreateKey", "*", |_| {}), (true, Some("BroadKms".into())));
    for a in ["kms:ScheduleKeyDeletion", "kms:DisableKey", "kms:DeleteAlias"] {
        assert_eq!(check(&iam, &d, a, KEY_EAST, |_| {}), (false, Some("NoDestruction".into())), "{a}");
    }
}

#[test]
fn mfa_required_except_to_set_it_up() {
    let iam = example();
    let (olga, oscar) = (user("olga"), user("oscar"));
    // No catch-22: without MFA, setting MFA up is still allowed.
    assert_eq!(check(&iam, &olga, "iam:EnableMFADevice", "*", |_| {}), (true, Some("ManageOwnMfa".into())));
    assert_eq!(check(&iam, &olga, "iam:CreateVirtualMFADevice", "*", |_| {}), (true, Some("ManageOwnMfa".into())));
    assert_eq!(
        check(&iam, &olga, "kms:Decrypt", KEY_EAST, |_| {}),
        (false, Some("DenyAllExceptMfaSetupWithoutMfa".into()))
    );
    assert_eq!(check(&iam, &oscar, "kms:Decrypt", KEY_EAST, |_| {}), (true, Some("Operate".into())));
    // MFA unknown (the key absent): BoolIfExists treats it as without MFA.
    assert_eq!(
        check(&iam, &oscar, "kms:Decrypt", KEY_EAST, |c| c.mfa = None),
        (false, Some("DenyAllExceptMfaSetupWithoutMfa".into()))
    );
}

#[test]
fn abac_team_tags() {
    let iam = example();
    let f = user("frank");
    let tagged = |team: &str| {
        let team = team.to_owned();
        move |c: &mut RequestContext| {
            c.resource_tags.insert("team".into(), team);
        }
    };
    assert_eq!(
        check(&iam, &f, "kms:GenerateDataKey", KEY_EAST, tagged("frontend")),
        (true, Some("OwnTeamKeys".into()))
    );
    assert_eq!(check(&iam, &f, "kms:GenerateDataKey", KEY_EAST, tagged("payments")), (false, None));
    assert_eq!(check(&iam, &f, "kms:GenerateDataKey", KEY_EAST, |_| {}), (false, None), "an untagged key");
}

fn assume(iam: &Iam, who: &str, role: &str, secs: Option<u64>) -> Result<envseal_iam::SessionGrant, StsError> {
    iam.assume_role(
        &user(who),
        AssumeRoleRequest {
            role_arn: role.to_owned(),
            session_name: "build-1".into(),
            duration: secs.map(Duration::from_secs),
            session_policy: None,
            mfa: Some(false),
            source_ip: None,
            now: SystemTime::now(),
        },
    )
}

#[test]
fn trust_policies_durations_and_role_permissions() {
    let iam = example();
    let ci = "arn:aws:iam::1234567890123456:role/ci";
    let g = assume(&iam, "dana", ci, None).unwrap();
    let s = g.into_session(SystemTime::now());
    assert_eq!(s.expires.duration_since(s.issued).unwrap(), Duration::from_secs(3600));
    assert!(assume(&iam, "dana", "acs:ram::1234567890123456:role/ci", Some(900)).is_ok());
    assert!(matches!(assume(&iam, "auditor", ci, None), Err(StsError::NotTrusted(..))));
    assert!(matches!(assume(&iam, "frank", ci, None), Err(StsError::NotTrusted(..))));
    assert!(matches!(
        assume(&iam, "dana", "arn:aws:iam::1234567890123456:role/nope", None),
        Err(StsError::NoSuchRole(_))
    ));
    assert!(matches!(assume(&iam, "dana", "arn:aws:iam::999999999999:role/ci", None), Err(StsError::NoSuchRole(_))));
    for bad in [899, 3601, 43_201] {
        assert!(matches!(assume(&iam, "dana", ci, Some(bad)), Err(StsError::InvalidDuration(..))), "{bad}");
    }
    // The session's permissions: only with the encryption context stage=ci.
    let who = Principal::RoleSession(s);
    let ctx = |stage: &str| {
        let mut c = RequestContext::new("kms:GenerateDataKey", KEY_EAST, iam.principal_info(&who, Flavor::Aws));
        c.encryption_context.insert("stage".into(), stage.into());
        c
    };
    assert!(iam.authorize(&who, &ctx("ci")).allowed);
    assert!(!iam.authorize(&who, &ctx("prod")).allowed);
}

#[test]
fn session_policy_is_an_intersection() {
    let iam = example();
    let narrow = Policy::parse(
        r#"{"Version":"1","Statement":{"Effect":"Allow","Action":"kms:GenerateDataKey","Resource":"*"}}"#,
    )
    .unwrap();
    let mut g = assume(&iam, "dana", "role/ci", None);
    assert!(g.is_err(), "a bare role name is looked up by name only when it is not an ARN");
    g = iam.assume_role(
        &user("dana"),
        AssumeRoleRequest {
            role_arn: "ci".into(),
            session_name: "narrow".into(),
            duration: None,
            session_policy: Some(narrow),
            mfa: None,
            source_ip: None,
            now: SystemTime::now(),
        },
    );
    let who = Principal::RoleSession(g.unwrap().into_session(SystemTime::now()));
    let mut c = RequestContext::new("kms:GenerateDataKey", KEY_EAST, iam.principal_info(&who, Flavor::Aws));
    c.encryption_context.insert("stage".into(), "ci".into());
    assert!(iam.authorize(&who, &c).allowed);
    c.action = "kms:Decrypt".into();
    let d = iam.authorize(&who, &c);
    assert!(!d.allowed && d.to_string().contains("session policy"), "{d}");
}

#[test]
fn sessions_expire_and_can_be_revoked() {
    let iam = example();
    let store = SessionStore::default();
    let now = SystemTime::now();
    let c = store.issue(assume(&iam, "dana", "ci", Some(900)).unwrap());
    assert!(c.access_key_id.starts_with("STS."));
    assert!(store.authenticate(&c.access_key_id, Some(&c.security_token), now).is_ok());
    assert_eq!(store.authenticate(&c.access_key_id, None, now).unwrap_err(), SessionError::MissingToken);
    assert_eq!(store.authenticate(&c.access_key_id, Some("x"), now).unwrap_err(), SessionError::InvalidToken);
    assert_eq!(
        store.authenticate(&c.access_key_id, Some(&c.security_token), now + Duration::from_secs(901)).unwrap_err(),
        SessionError::Expired
    );
    assert_eq!(store.revoke_role_sessions("ci", now + Duration::from_secs(1)), 1);
    assert_eq!(store.authenticate(&c.access_key_id, Some(&c.security_token), now).unwrap_err(), SessionError::Revoked);
    // Revocation through the IAM file.
    let mut iam2 = iam.clone();
    let s = assume(&iam, "dana", "ci", None).unwrap().into_session(now);
    assert!(!iam2.session_revoked(&s));
    iam2.revoke_sessions("ci", now + Duration::from_secs(5)).unwrap();
    assert!(iam2.session_revoked(&s));
    let who = Principal::RoleSession(s);
    assert!(
        !iam2.authorize(&who, &RequestContext::new("kms:Decrypt", "*", iam2.principal_info(&who, Flavor::Aws))).allowed
    );
    let dbg = format!("{c:?} {store:?} {:?}", iam.access_key("LTAIdanaTESTKEY00001"));
    assert!(
        !dbg.contains(c.secret.as_str())
            && !dbg.contains(c.security_token.as_str())
            && !dbg.contains("dana-test-secret")
    );
}

fn doc(s: &str) -> Policy {
    Policy::parse(s).unwrap_or_else(|e| panic!("{e}"))
}

fn ctx() -> RequestContext {
    let iam = Iam::default();
    RequestContext::new("kms:Decrypt", KEY_EAST, iam.principal_info(&Principal::Root, Flavor::Aws))
}

#[test]
fn conditions_ip_dates_context() {
    let p = doc(r#"{"Version":"1","Statement":[{"Effect":"Allow","Action":"kms:*","Resource":"*","Condition":{
            "IpAddress":{"acs:SourceIp":["10.0.0.0/8","2001:db8::/32"]},
            "DateLessThan":{"acs:CurrentTime":"2099-01-01T00:00:00Z"},
            "DateGreaterThan":{"aws:CurrentTime":"2020-01-01"},
            "StringLike":{"kms:EncryptionContext:app":"web-*"},
            "ForAllValues:StringEquals":{"kms:EncryptionContextKeys":["app","tenant"]}}}]}"#);
    let run = |f: &dyn Fn(&mut RequestContext)| {
        let mut c = ctx();
        c.source_ip = Some("10.1.2.3".parse::<IpAddr>().unwrap());
        c.encryption_context = BTreeMap::from([("app".into(), "web-1".into())]);
        f(&mut c);
        evaluate(&[("p", &p)], &c).allowed
    };
    assert!(run(&|_| {}));
    assert!(run(&|c| c.source_ip = Some("2001:db8::7".parse().unwrap())));
    assert!(!run(&|c| c.source_ip = Some("192.168.1.1".parse().unwrap())));
    assert!(!run(&|c| c.source_ip = None), "a missing key fails a positive operator");
    assert!(!run(&|c| c.current_time = humantime::parse_rfc3339("2100-01-01T00:00:00Z").unwrap()));
    assert!(!run(&|c| c.current_time = humantime::parse_rfc3339("2019-01-01T00:00:00Z").unwrap()));
    assert!(!run(&|c| {
        c.encryption_context.insert("app".into(), "api-1".into());
    }));
    assert!(!run(&|c| {
        c.encryption_context.insert("other".into(), "x".into());
    }));
    let neg = doc(
        r#"{"Version":"1","Statement":{"Effect":"Deny","Action":"kms:*","Resource":"*","Condition":{"NotIpAddress":{"aws:SourceIp":"10.0.0.0/8"}}}}"#,
    );
    let mut c = ctx();
    c.source_ip = Some("8.8.8.8".parse().unwrap());
    assert_eq!(evaluate(&[("n", &neg)], &c).kind, DecisionKind::ExplicitDeny);
    c.source_ip = Some("10.0.0.1".parse().unwrap());
    assert_eq!(evaluate(&[("n", &neg)], &c).kind, DecisionKind::ImplicitDeny);
}

/// Regression: a set qualifier applies to the negated per-value test, so "deny any encryption context key
/// other than app" denies {app, evil}; it used to compute `!any(value in list)` and let that through.
#[test]
fn negated_operators_with_set_qualifiers() {
    let deny_other_keys = doc(r#"{"Version":"2012-10-17","Statement":[
            {"Sid":"OnlyApp","Effect":"Deny","Action":"kms:*","Resource":"*",
             "Condition":{"ForAnyValue:StringNotEquals":{"kms:EncryptionContextKeys":["app"]}}},
            {"Sid":"Use","Effect":"Allow","Action":"kms:*","Resource":"*"}]}"#);
    let all_outside = doc(r#"{"Version":"2012-10-17","Statement":{"Effect":"Allow","Action":"kms:*","Resource":"*",
            "Condition":{"ForAllValues:StringNotEquals":{"kms:EncryptionContextKeys":["admin","root"]}}}}"#);
    let unqualified = doc(r#"{"Version":"2012-10-17","Statement":{"Effect":"Allow","Action":"kms:*","Resource":"*",
            "Condition":{"StringNotEquals":{"kms:EncryptionContextKeys":["admin"]}}}}"#);
    let with_keys = |keys: &[&str]| {
        let mut c = ctx();
        c.encryption_context = keys.iter().map(|k| ((*k).to_owned(), "v".to_owned())).collect();
        c
    };
    let deny = |keys: &[&str]| evaluate(&[("p", &deny_other_keys)], &with_keys(keys));
    let d = deny(&["app", "evil"]);
    assert_eq!(d.kind, DecisionKind::ExplicitDeny, "{d}");
    assert_eq!(d.statement.as_ref().and_then(|s| s.sid.as_deref()), Some("OnlyApp"));
    assert_eq!(deny(&["evil"]).kind, DecisionKind::ExplicitDeny);
    let d = deny(&["app"]);
    assert_eq!((d.kind, d.statement.and_then(|s| s.sid)), (DecisionKind::Allow, Some("Use".to_owned())));
    assert_eq!(deny(&[]).kind, DecisionKind::Allow, "ForAnyValue on a missing key is false: the Deny does not apply");

    let allowed = |p: &Policy, keys: &[&str]| evaluate(&[("p", p)], &with_keys(keys)).allowed;
    assert!(allowed(&all_outside, &["app", "tenant"]));
    assert!(!allowed(&all_outside, &["app", "admin"]), "one value inside the list fails ForAllValues:...NotEquals");
    assert!(allowed(&all_outside, &[]), "ForAllValues holds on a missing key");
    assert!(allowed(&unqualified, &["app"]));
    assert!(!allowed(&unqualified, &["app", "admin"]));
    assert!(allowed(&unqualified, &[]), "a negated operator holds on a missing key");
}

#[test]
fn validation_errors_are_clear() {
    let bad = |s: &str, want: &str| {
        let e = Policy::parse(s).unwrap_err().to_string();
        assert!(e.contains(want), "{e:?} should contain {want:?}");
    };
    bad(
        r#"{"Version":"1","Statement":[{"Sid":"X","Effect":"Alow","Action":"kms:*","Resource":"*"}]}"#,
        r#"Statement[0] (sid "X"): Effect: unknown effect "Alow""#,
    );
    bad(
        r#"{"Version":"1","Statement":[{"Effect":"Allow","Action":"kms:*","Resource":"acs:kms:key"}]}"#,
        "is not a valid ARN",
    );
    bad(
        r#"{"Version":"1","Statement":[{"Effect":"Allow","Action":"kms:*","Resource":"*","Condition":{"StringEqualz":{"a":"b"}}}]}"#,
        "unknown condition operator \"StringEqualz\"",
    );
    bad(
        r#"{"Version":"1","Statement":[{"effect":"Allow","Action":"kms:*","Resource":"*"}]}"#,
        "did you mean `Effect`?",
    );
    bad(r#"{"Version":"3","Statement":[]}"#, "unsupported version");
    bad(r#"{"Version":"1","Statement":[{"Effect":"Allow","Action":"decrypt","Resource":"*"}]}"#, "service:Action");
    bad(r#"{"Version":"1","Statement":[{"Effect":"Allow","Action":"kms:*"}]}"#, "Resource (or NotResource) is missing");
    bad(
        r#"{"Version":"1","Statement":[{"Effect":"Allow","Action":"kms:*","Resource":"*","Condition":{"IpAddress":{"acs:SourceIp":"nope"}}}]}"#,
        "not a valid value",
    );
    let e = Iam::parse("[users.a]\ngroups = [\"nope\"]\n", Format::Toml).unwrap_err().to_string();
    assert!(e.contains("users.a.groups: unknown group \"nope\""), "{e}");
    let e = Iam::parse("[users.a]\nbogus = 1\n", Format::Toml).unwrap_err().to_string();
    assert!(e.contains("bogus"), "{e}");
}

#[test]
fn changes_round_trip_through_the_file() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("iam.toml");
    std::fs::copy(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../testdata/iam/multi-team.toml"), &p).unwrap();
    let mut iam = Iam::load(&p).unwrap();
    iam.create_user("erin", &["developers".into()]).unwrap();
    let k = iam.create_access_key("erin").unwrap();
    iam.save(&p).unwrap();
    let mut again = Iam::load(&p).unwrap();
    let (u, e) = again.access_key(&k.id).unwrap();
    assert_eq!((u, e.secret()), ("erin", k.secret.as_str()));
    assert!(again.create_access_key("nobody").is_err());
    #[cfg(unix)]
    assert_eq!(std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&p).unwrap().permissions()) & 0o777, 0o600);
    let json = d.path().join("iam.json");
    std::fs::write(&json, again.to_string(Format::Json).unwrap().as_bytes()).unwrap();
    assert_eq!(Iam::load(&json).unwrap().summary().users, 8);
}

proptest::proptest! {
    /// However statements are ordered, a matching Deny wins over any number of Allows.
    #[test]
    fn explicit_deny_always_wins(allows in 0usize..5, position in 0usize..6, wildcard in proptest::bool::ANY) {
        let deny = format!(r#"{{"Effect":"Deny","Action":"{}","Resource":"*"}}"#, if wildcard { "kms:*" } else { "kms:Decrypt" });
        let mut sts: Vec<String> = (0..allows).map(|_| r#"{"Effect":"Allow","Action":"kms:*","Resource":"*"}"#.to_owned()).collect();
        sts.insert(position.min(sts.len()), deny);
        let p = doc(&format!(r#"{{"Version":"1","Statement":[{}]}}"#, sts.join(",")));
        let d = evaluate_with_session(&[("p", &p)], None, &ctx());
        proptest::prop_assert_eq!(d.kind, DecisionKind::ExplicitDeny);
    }
}

#[test]
fn dollar_star_is_a_literal_star() {
    // `${*}` matches a literal `*`, not anything (IAM's meaning).
    let p = doc(
        r#"{"Version":"1","Statement":{"Effect":"Allow","Action":"kms:*","Resource":"arn:aws:kms:us-east-1:1:key/a${*}b"}}"#,
    );
    let iam = Iam::default();
    let ctx = |r: &str| RequestContext::new("kms:Decrypt", r, iam.principal_info(&Principal::Root, Flavor::Aws));
    assert!(evaluate(&[("p", &p)], &ctx("arn:aws:kms:us-east-1:1:key/a*b")).allowed);
    assert!(!evaluate(&[("p", &p)], &ctx("arn:aws:kms:us-east-1:1:key/aXXb")).allowed);
    let c = doc(
        r#"{"Version":"1","Statement":{"Effect":"Allow","Action":"kms:*","Resource":"*","Condition":{"StringEquals":{"kms:EncryptionContext:app":"x${?}"}}}}"#,
    );
    let mut q = ctx("*");
    q.encryption_context.insert("app".into(), "x?".into());
    assert!(evaluate(&[("c", &c)], &q).allowed);
    q.encryption_context.insert("app".into(), "xy".into());
    assert!(!evaluate(&[("c", &c)], &q).allowed);
}
