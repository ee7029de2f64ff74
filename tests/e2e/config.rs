//! `.envseal.toml` rules: `config explain`, and `encrypt` using a rule's key and context.

use crate::util::*;

const CONFIG: &str = r#"
[[rule]]
path = "prod/**/*.env"
key = "alias/prod"
context = { env = "prod", app = "billing" }
plain_keys = "/PUBLIC_[^/]*"

[[rule]]
path = "**"
key = "alias/default"
"#;

#[test]
fn explain_and_encrypt_follow_the_rule() {
    let s = Sandbox::new();
    s.write(".envseal.toml", CONFIG);
    let prod_id = serde_json::from_slice::<serde_json::Value>(
        &s.ok(&["keys", "create", "--alias", "alias/prod", "--json"]).stdout,
    )
    .unwrap()["key_id"]
        .clone();
    s.write("prod/app/x.env", "PUBLIC_URL=https://example.com/x\nSECRET=secret-prod-value\n");
    s.write("dev.env", "SECRET=secret-dev-value\n");

    // Text form.
    let text = String::from_utf8(s.ok(&["config", "explain", "prod/app/x.env"]).stdout).unwrap();
    assert!(text.contains(".envseal.toml"), "{text}");
    assert!(text.contains("#1") && text.contains("prod/**/*.env"), "{text}");
    assert!(text.contains("alias/prod (config)"), "{text}");
    assert!(text.contains("app=billing, env=prod"), "{text}");
    assert!(text.contains("/PUBLIC_[^/]*"), "{text}");
    // JSON form.
    let j: serde_json::Value =
        serde_json::from_slice(&s.ok(&["config", "explain", "prod/app/x.env", "--json"]).stdout).unwrap();
    assert_eq!(j["rule"]["index"], 1);
    assert_eq!(j["rule"]["path"], "prod/**/*.env");
    assert_eq!(j["key"], serde_json::json!({"value": "alias/prod", "source": "config"}));
    assert_eq!(j["kms"]["source"], "default");
    assert_eq!(j["context"], serde_json::json!({"env": "prod", "app": "billing"}));
    assert!(j["config"].as_str().unwrap().ends_with(".envseal.toml"));
    let d: serde_json::Value =
        serde_json::from_slice(&s.ok(&["config", "explain", "dev.env", "--json"]).stdout).unwrap();
    assert_eq!(d["rule"]["index"], 2);
    assert_eq!(d["context"], serde_json::json!({}));
    // encrypt picks up the rule: key, context, plain keys.
    s.ok(&["encrypt", "prod/app/x.env"]);
    let i = s.inspect("prod/app/x.env");
    assert_eq!(i["context"], serde_json::json!({"app": "billing", "env": "prod"}));
    assert_eq!(i["keys"][0]["key_id"], prod_id);
    assert_eq!(i["plain_keys"], "/PUBLIC_[^/]*");
    let sealed = s.read("prod/app/x.env");
    assert!(sealed.starts_with(b"PUBLIC_URL=https://example.com/x\n"));
    assert!(!contains(&sealed, b"secret-prod-value"));
    // The same from another working directory.
    let out = s.cmd().args(["decrypt", "x.env"]).current_dir(s.path("prod/app")).output().unwrap();
    assert_success(&out, &["decrypt"]);
    assert!(contains(&out.stdout, b"SECRET=secret-prod-value"));
    // A conflicting --context fails 5; the rule's own context opens it.
    let err = s.fails(&["decrypt", "prod/app/x.env", "--context", "env=dev"], 5);
    assert!(err.contains("inspect"), "{err}");
    s.ok(&["decrypt", "prod/app/x.env", "--context", "env=prod"]);
    // Flags win over the rule: an extra context entry.
    s.write("prod/app/y.env", "SECRET=secret-y\n");
    s.ok(&["encrypt", "prod/app/y.env", "--context", "env=staging", "--context", "team=core"]);
    assert_eq!(
        s.inspect("prod/app/y.env")["context"],
        serde_json::json!({"app": "billing", "env": "staging", "team": "core"})
    );
    // The catch-all rule: default key, no context.
    s.ok(&["encrypt", "dev.env"]);
    assert_eq!(s.inspect("dev.env")["context"], serde_json::json!({}));
}

#[test]
fn no_config_and_broken_config() {
    let s = Sandbox::new();
    s.write("a.env", "A=secret-alpha\n");
    let text = String::from_utf8(s.ok(&["config", "explain", "a.env"]).stdout).unwrap();
    assert!(text.contains("none found"), "{text}");
    assert!(text.contains("alias/default (default)"), "{text}");
    s.write(".envseal.toml", "[[rule]]\npath = 3\n");
    let err = s.fails(&["config", "explain", "a.env"], 3);
    assert!(err.contains(".envseal.toml"), "{err}");
    s.fails(&["encrypt", "a.env"], 3);
    assert_eq!(s.text("a.env"), "A=secret-alpha\n");
    s.write(".envseal.toml", "[[rule]]\npath = \"*.json\"\n");
    let text = String::from_utf8(s.ok(&["config", "explain", "a.env"]).stdout).unwrap();
    assert!(text.contains("no rule matches"), "{text}");
}

/// `config explain` shows "the settings that result" for a file; with ENVSEAL_KEY /
/// ENVSEAL_KMS set, encrypt uses them over the rule, but explain still reports the rule's.
#[test]
fn explain_reports_environment_overrides() {
    let s = Sandbox::new();
    s.write(".envseal.toml", CONFIG);
    s.write("prod/app/x.env", "SECRET=secret-prod-value\n");
    let out =
        s.cmd().args(["config", "explain", "prod/app/x.env", "--json"]).env("ENVSEAL_KEY", "alias/x").output().unwrap();
    assert_success(&out, &["config", "explain"]);
    let k: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(k["key"], serde_json::json!({"value": "alias/x", "source": "flag/env"}));
}
