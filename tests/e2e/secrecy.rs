//! Sealed files hide every value (no value text of 6 characters or more survives, decoded or
//! as written), while keys, comments and layout stay readable.

use crate::util::*;

/// The raw text of each single-line `KEY=value` entry, as written (quotes included), with its
/// key. Continuation lines of multi-line values have no key and are covered by the decoded
/// values.
fn raw_entries(content: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for line in content.lines() {
        let line = line.trim_end_matches('\r');
        let l = line.trim_start();
        if l.starts_with('#') || !l.contains('=') {
            continue;
        }
        let l = l.strip_prefix("export ").or_else(|| l.strip_prefix("export\t")).unwrap_or(l);
        let (key, rest) = l.split_once('=').unwrap();
        let key = key.trim().to_string();
        if key.is_empty() || key.contains(' ') || key.contains('"') {
            continue;
        }
        let rest = rest.trim_start_matches([' ', '\t']);
        let value = match rest.chars().next() {
            Some(q @ ('"' | '\'')) => match rest[1..].find(q) {
                Some(end) => rest[..end + 2].to_string(),
                None => continue, // multi-line: checked through the decoded value
            },
            Some('#') => String::new(),
            _ => {
                let cut = [" #", "\t#"].iter().filter_map(|c| rest.find(c)).min().unwrap_or(rest.len());
                rest[..cut].trim_end().to_string()
            }
        };
        out.push((key, value));
    }
    out
}

fn check_dotenv_hidden(name: &str) {
    let s = Sandbox::new();
    let original = String::from_utf8(testdata(&format!("dotenv/{name}"))).unwrap();
    let sealed = s.seal(name, &original);
    let sealed_text = String::from_utf8(sealed.clone()).unwrap();
    let hay = Haystack::new(&sealed);

    // Decoded values, as a program sees them.
    let env = parse_env0(&s.ok(&["run", "-f", name, "--pristine", "--", "env", "-0"]).stdout);
    let raw = raw_entries(&original);
    assert!(raw.len() >= 4, "{name}: parsed too few entries");
    let mut checked = 0;
    for (k, v) in &env {
        if k == "PATH" && !raw.iter().any(|(rk, _)| rk == "PATH") {
            continue;
        }
        if v.len() >= 6 {
            checked += 1;
            assert!(!hay.contains(v), "{name}: decoded value of {k} visible in the sealed file");
        }
    }
    assert!(checked >= 4, "{name}: too few values checked");
    // Values as written (quotes and escapes included).
    for (k, v) in &raw {
        if v.len() >= 6 {
            assert!(!hay.contains(v.as_bytes()), "{name}: value text of {k} ({v:?}) visible");
        }
        // Keys stay readable.
        let (k1, k2) = (format!("{k}="), format!("{k} ="));
        let readable = |n: &str| if n.len() >= 6 { hay.contains(n.as_bytes()) } else { sealed_text.contains(n) };
        assert!(readable(&k1) || readable(&k2), "{name}: key {k} not readable");
    }
    // Every comment and blank line is kept as is.
    for line in original.split_inclusive('\n') {
        if line.trim_start().starts_with('#') || line.trim().is_empty() {
            assert!(sealed_text.contains(line), "{name}: line {line:?} not kept");
        }
    }
    // Trailing comments too.
    for line in original.lines() {
        if let Some(i) = line.find(" # ").filter(|_| !line.contains('\'') && !line.contains('"')) {
            assert!(sealed_text.contains(&line[i + 1..]), "{name}: trailing comment of {line:?} lost");
        }
    }
}

#[test]
fn grammar_env_values_hidden_keys_and_comments_readable() {
    check_dotenv_hidden("grammar.env");
}

#[test]
fn big_env_values_hidden() {
    check_dotenv_hidden("big.env");
}

#[test]
fn sample_env_values_hidden() {
    check_dotenv_hidden("sample.env");
}

#[test]
fn json_values_hidden_keys_readable() {
    let s = Sandbox::new();
    let doc = r#"{
  "database": {
    "host": "db.internal.example",
    "password": "hunter2-but-longer",
    "port": 543210,
    "replicas": ["replica-one", "replica-two"],
    "flags": {"enabled": true, "ratio": 0.123456}
  },
  "api_token": "tok_abcdef123456"
}
"#;
    let sealed = String::from_utf8(s.seal("c.json", doc)).unwrap();
    for v in [
        "db.internal.example",
        "hunter2-but-longer",
        "543210",
        "replica-one",
        "replica-two",
        "0.123456",
        "tok_abcdef123456",
    ] {
        assert!(!sealed.contains(v), "{v} visible in\n{sealed}");
    }
    for k in [
        "\"database\"",
        "\"host\"",
        "\"password\"",
        "\"port\"",
        "\"replicas\"",
        "\"flags\"",
        "\"enabled\"",
        "\"api_token\"",
    ] {
        assert!(sealed.contains(k), "key {k} not readable");
    }
    // Every leaf is an ENC[...] string with its type letter.
    let v: serde_json::Value = serde_json::from_str(&sealed).unwrap();
    assert!(v["database"]["port"].as_str().unwrap().starts_with("ENC[v2:"));
    assert!(v["database"]["flags"]["enabled"].as_str().unwrap().starts_with("ENC[v2:"));
    assert!(v["database"]["replicas"][1].as_str().unwrap().starts_with("ENC[v2:"));
    assert!(v["envseal"]["mac"].is_string());
}

/// `--plain-keys` leaves matching values in clear, and they are still covered by the MAC.
#[test]
fn plain_keys_stay_readable_and_authenticated() {
    let s = Sandbox::new();
    s.write("p.env", "PUBLIC_URL=https://example.com/app\nSECRET=hush-hush-value\n");
    s.ok(&["encrypt", "p.env", "--plain-keys", "/PUBLIC_[^/]*"]);
    let sealed = s.text("p.env");
    assert!(sealed.starts_with("PUBLIC_URL=https://example.com/app\n"));
    assert!(!sealed.contains("hush-hush-value"));
    let info = s.inspect("p.env");
    assert_eq!((info["values_sealed"].as_u64(), info["values_plain"].as_u64()), (Some(1), Some(1)));
    assert_eq!(info["plain_keys"], "/PUBLIC_[^/]*");
    s.write("p.env", sealed.replace("example.com", "evil.example"));
    let err = s.fails(&["decrypt", "p.env"], 8);
    assert!(!err.contains("hush-hush"), "no value in messages");
}

/// Core dumps are off while envseal runs (RLIMIT_CORE 0, inherited by `run`'s child; the
/// non-dumpable flag itself is reset by exec and cannot be read from outside as root), unless
/// ENVSEAL_ALLOW_CORE_DUMPS=1.
#[test]
fn core_dumps_are_disabled() {
    let s = crate::util::Sandbox::new();
    s.seal(".env", "A=1\n");
    let limit = |allow: bool| {
        let mut c = s.cmd();
        if allow {
            c.env("ENVSEAL_ALLOW_CORE_DUMPS", "1");
        }
        let o = c.args(["run", "-f", ".env", "--", "sh", "-c", "grep 'core file' /proc/self/limits"]).output().unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8_lossy(&o.stdout).split_whitespace().skip(4).take(2).collect::<Vec<_>>().join(" ")
    };
    assert_eq!(limit(false), "0 0", "soft and hard core limits are 0");
    assert_ne!(limit(true), "0 0");
}
