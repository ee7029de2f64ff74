//! `envseal iam`, `envseal audit`, and a local keystore that enforces IAM policies for a
//! `--profile` and keeps an audit trail (issue 6).

use std::fs;

use crate::util::Sandbox;

const MULTI_TEAM: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../testdata/iam/multi-team.toml");

fn stdout(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn iam_validate_and_simulate() {
    let s = Sandbox::new();
    // A denial is an answer, not an error: DENY on stdout, exit 11, nothing on stderr.
    let denied = |args: &[&str]| {
        let o = s.run(args);
        assert_eq!(o.status.code(), Some(11), "{}", stdout(&o));
        assert!(stdout(&o).starts_with("DENY: ") && o.stderr.is_empty(), "{}", stdout(&o));
    };
    let out = stdout(&s.ok(&["iam", "validate", MULTI_TEAM]));
    assert!(out.contains("valid") && out.contains("7 users"), "{out}");
    let bad = s.write("bad.toml", "[users.a]\ngroups = [\"nope\"]\n");
    let err = s.fails(&["iam", "validate", bad.to_str().unwrap()], 3);
    assert!(err.contains("users.a.groups: unknown group \"nope\""), "{err}");
    let bad = s.write("bad2.toml", "[policies]\nP = '{\"Version\":\"1\",\"Statement\":[{\"Effect\":\"Alow\",\"Action\":\"kms:*\",\"Resource\":\"*\"}]}'\n");
    let err = s.fails(&["iam", "validate", bad.to_str().unwrap()], 3);
    assert!(err.contains("unknown effect \"Alow\""), "{err}");

    // Broad allow, targeted deny: denied with the statement named, exit 11.
    let o = s.run(&["iam", "simulate", MULTI_TEAM, "--principal", "user/dana", "--action", "kms:ScheduleKeyDeletion"]);
    assert_eq!(o.status.code(), Some(11));
    assert!(
        stdout(&o).contains("DENY: explicit deny by policy \"Developer\" statement 1 (sid \"NoDestruction\")"),
        "{}",
        stdout(&o)
    );
    // MFA: setting it up is allowed without MFA, the rest only with it.
    let o =
        s.ok(&["iam", "simulate", MULTI_TEAM, "--principal", "user/olga", "--action", "iam:EnableMFADevice", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!((v["allowed"].as_bool(), v["statement"]["sid"].as_str()), (Some(true), Some("ManageOwnMfa")));
    denied(&["iam", "simulate", MULTI_TEAM, "--principal", "user/olga", "--action", "kms:Decrypt"]);
    s.ok(&["iam", "simulate", MULTI_TEAM, "--principal", "user/olga", "--action", "kms:Decrypt", "--mfa"]);
    // ABAC, encryption context, source IP and time flags.
    let key = "arn:aws:kms:us-east-1:1234567890123456:key/k1";
    s.ok(&[
        "iam",
        "simulate",
        MULTI_TEAM,
        "--principal",
        "user/frank",
        "--action",
        "kms:Decrypt",
        "--resource",
        key,
        "--resource-tag",
        "team=frontend",
        "--flavor",
        "aws",
    ]);
    denied(&[
        "iam",
        "simulate",
        MULTI_TEAM,
        "--principal",
        "user/frank",
        "--action",
        "kms:Decrypt",
        "--resource",
        key,
        "--resource-tag",
        "team=payments",
    ]);
    s.ok(&[
        "iam",
        "simulate",
        MULTI_TEAM,
        "--principal",
        "role/ci",
        "--action",
        "kms:GenerateDataKey",
        "--context",
        "stage=ci",
        "--source-ip",
        "10.0.0.1",
        "--time",
        "2026-11-28T12:00:00Z",
    ]);
    denied(&[
        "iam",
        "simulate",
        MULTI_TEAM,
        "--principal",
        "role/ci",
        "--action",
        "kms:GenerateDataKey",
        "--context",
        "stage=prod",
    ]);
    s.fails(&["iam", "simulate", MULTI_TEAM, "--principal", "user/nobody", "--action", "kms:Decrypt"], 2);
}

#[test]
fn iam_changes_show_the_secret_once_and_are_audited() {
    let s = Sandbox::new();
    let iam = s.path("iam.toml");
    fs::copy(MULTI_TEAM, &iam).unwrap();
    let f = iam.to_str().unwrap();
    let log = s.path("audit.log");
    let key = s.root.join("audit.key");
    let audit = ["--audit-log", log.to_str().unwrap(), "--audit-key", key.to_str().unwrap()];
    let mut args = vec!["iam", "create-user", f, "erin", "--group", "developers"];
    args.extend(audit);
    s.ok(&args);
    let mut args = vec!["iam", "create-access-key", f, "erin", "--json"];
    args.extend(audit);
    let o = s.ok(&args);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let secret = v["AccessKeySecret"].as_str().unwrap().to_owned();
    assert!(secret.len() >= 30);
    assert!(String::from_utf8_lossy(&o.stderr).contains("shown this once"));
    // Never again: not by validate, not in the trail.
    let again = s.ok(&["iam", "validate", f, "--json"]);
    assert!(!String::from_utf8_lossy(&again.stdout).contains(&secret));
    let trail = fs::read_to_string(&log).unwrap();
    assert!(
        trail.contains("\"CreateUser\"") && trail.contains("\"CreateAccessKey\"") && !trail.contains(&secret),
        "{trail}"
    );
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(fs::metadata(&iam).unwrap().permissions().mode() & 0o777, 0o600);
    s.ok(&["audit", "verify", log.to_str().unwrap(), "--key", key.to_str().unwrap()]);
    // A policy from a file, attached, detached; a bad one is refused.
    let doc = s
        .write("p.json", r#"{"Version":"1","Statement":[{"Effect":"Allow","Action":"kms:Describe*","Resource":"*"}]}"#);
    s.ok(&["iam", "put-policy", f, "Describe", doc.to_str().unwrap()]);
    s.ok(&["iam", "attach-policy", f, "Describe", "--user", "erin"]);
    s.ok(&["iam", "detach-policy", f, "Describe", "--user", "erin"]);
    let bad =
        s.write("bad.json", r#"{"Version":"1","Statement":[{"Effect":"Allow","Action":"kms:*","Resource":"arn:x"}]}"#);
    let err = s.fails(&["iam", "put-policy", f, "Bad", bad.to_str().unwrap()], 3);
    assert!(err.contains("not a valid ARN"), "{err}");
    s.fails(&["iam", "create-access-key", f, "nobody"], 3);
}

fn governed(s: &Sandbox) {
    // A keystore exists once something was sealed.
    s.seal("first.env", "A=1\n");
    fs::copy(MULTI_TEAM, s.home.join("iam.toml")).unwrap();
    fs::write(s.root.join("audit.key"), "ab".repeat(32)).unwrap();
    fs::write(
        s.home.join("governance.toml"),
        "iam = \"iam.toml\"\n[audit]\nlog = \"audit.log\"\nkey = \"../audit.key\"\n",
    )
    .unwrap();
    let config = s.root.join("user/.config/envseal");
    fs::create_dir_all(&config).unwrap();
    fs::write(
        config.join("profiles.toml"),
        "[profile.dana]\naccess_key_id = \"LTAIdanaTESTKEY00001\"\nsecret = \"dana-test-secret-00001\"\n\n\
         [profile.auditor]\naccess_key_id = \"LTAIauditorTESTKEY01\"\nsecret = \"auditor-test-secret-01\"\n\n\
         [profile.wrong]\naccess_key_id = \"LTAIdanaTESTKEY00001\"\nsecret = \"not-the-secret\"\n\n\
         [profile.ci]\nsource_profile = \"dana\"\nrole_arn = \"acs:ram::1234567890123456:role/ci\"\n",
    )
    .unwrap();
}

#[test]
fn a_local_keystore_enforces_policies_for_a_profile_and_audits() {
    let s = Sandbox::new();
    governed(&s);
    s.write("app.env", "DB_PASSWORD=hunter2\n");
    // Who you are must be said.
    let err = s.fails(&["encrypt", "app.env"], 11);
    assert!(err.contains("--profile"), "{err}");
    // A read-only auditor cannot seal; a wrong secret is refused; both leave the file alone.
    let err = s.fails(&["--profile", "auditor", "encrypt", "app.env"], 11);
    assert!(err.contains("kms:GenerateDataKey"), "{err}");
    s.fails(&["--profile", "wrong", "encrypt", "app.env"], 11);
    assert_eq!(s.text("app.env"), "DB_PASSWORD=hunter2\n");
    // A developer can; ENVSEAL_PROFILE works like --profile.
    s.ok(&["--profile", "dana", "encrypt", "app.env"]);
    let o = s.cmd().env("ENVSEAL_PROFILE", "dana").args(["get", "app.env", "DB_PASSWORD"]).output().unwrap();
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), "hunter2");
    // The CI role, assumed with dana's key: only with the context stage=ci.
    s.write("ci.env", "TOKEN=t\n");
    s.fails(&["--profile", "ci", "encrypt", "ci.env"], 11);
    s.ok(&["--profile", "ci", "encrypt", "ci.env", "--context", "stage=ci"]);
    // Everything is in the keystore's trail, which verifies.
    let log = s.home.join("audit.log");
    let trail = fs::read_to_string(&log).unwrap();
    assert!(
        trail.contains("\"denied\"") && trail.contains("\"AssumedRole\"") && trail.contains("\"api\":\"local\""),
        "{trail}"
    );
    assert!(!trail.contains("hunter2") && !trail.contains("dana-test-secret"));
    let key = s.root.join("audit.key");
    let v = s.ok(&["audit", "verify", log.to_str().unwrap(), "--key", key.to_str().unwrap(), "--json"]);
    let report: serde_json::Value = serde_json::from_slice(&v.stdout).unwrap();
    assert_eq!(report["ok"], true);
    let q = s.ok(&["audit", "query", log.to_str().unwrap(), "--outcome", "denied"]);
    assert!(stdout(&q).contains("auditor"), "{}", stdout(&q));
}
