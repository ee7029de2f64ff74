//! YAML files (sealed value by value): round trips of the samples in testdata/yaml, hidden
//! values, paths, tampering, and documents refused rather than sealed partially.

use crate::util::*;

const SAMPLES: &[&str] = &["app.yaml", "blocks.yaml", "kubernetes-secret.yaml", "quoting.yaml", "lossy.yaml"];

#[test]
fn samples_round_trip() {
    let s = Sandbox::new();
    for name in SAMPLES {
        let original = testdata(&format!("yaml/{name}"));
        let expected = std::fs::read(format!("{TESTDATA}/yaml/expected/{name}")).unwrap_or_else(|_| original.clone());
        let sealed = s.seal(name, &original);
        assert_eq!(s.inspect(name)["format"], "yaml");
        assert_eq!(String::from_utf8(s.decrypt(name)).unwrap(), String::from_utf8(expected.clone()).unwrap(), "{name}");
        // Decoded values never appear in the sealed file.
        let env = parse_env0(&s.ok(&["run", "-f", name, "--pristine", "--", "env", "-0"]).stdout);
        for (k, v) in env.iter().filter(|(k, _)| k != "PATH") {
            if v.len() >= 6 {
                assert!(!contains(&sealed, v), "{name}: value of {k} visible");
            }
        }
        // -o elsewhere, under a YAML name.
        s.ok(&["encrypt", &format!("{TESTDATA}/yaml/{name}"), "-o", "copy.yml"]);
        assert_eq!(s.decrypt("copy.yml"), expected, "{name} via -o");
        // Comments stay readable.
        let text = String::from_utf8(original).unwrap();
        let sealed_text = String::from_utf8(sealed).unwrap();
        for l in text.lines().filter(|l| l.trim_start().starts_with("# ")) {
            assert!(sealed_text.contains(l), "{name}: comment {l:?} lost");
        }
    }
}

#[test]
fn paths_values_and_run_names() {
    let s = Sandbox::new();
    s.seal("app.yaml", testdata("yaml/app.yaml"));
    for (path, want) in [
        ("database.password", "hunter2: not really"),
        ("/database/password", "hunter2: not really"),
        ("database.replicas[1].host", "r2.internal.example"),
        ("/database/replicas/2/host", "r3.internal.example"),
        ("api_keys[0]", "sk_test_4eC39HqLyjWDarjtT1zdp7dc"),
        ("feature_flags.owner", "team-a"),
        ("zip_code", "0123"),
        ("yes_is_a_string", "yes"),
        ("unicode", "Grüße, 日本語, émoji 🙂"),
    ] {
        assert_eq!(String::from_utf8(s.ok(&["get", "app.yaml", path]).stdout).unwrap(), want, "{path}");
    }
    let out = s.ok(&[
        "run",
        "-f",
        "app.yaml",
        "--",
        "sh",
        "-c",
        "printf '%s|%s' \"$database_password\" \"$database_replicas_0_host\"",
    ]);
    assert_eq!(out.stdout, "hunter2: not really|r1.internal.example".as_bytes());
    // set keeps every other value's ciphertext.
    let before = s.read("app.yaml");
    s.ok(&["set", "app.yaml", "database.user", "new_user"]);
    let after = s.read("app.yaml");
    let changed = changed_lines(&before, &after);
    assert!(
        changed.iter().all(|l| l.contains("user:")
            || l.trim_start().starts_with("mac:")
            || l.trim_start().starts_with("modified:")),
        "{changed:?}"
    );
    assert_eq!(s.ok(&["get", "app.yaml", "database.user"]).stdout, b"new_user");
}

#[test]
fn tampered_yaml_is_rejected() {
    let s = Sandbox::new();
    let sealed = String::from_utf8(s.seal("k.yaml", testdata("yaml/kubernetes-secret.yaml"))).unwrap();
    let line = |k: &str| sealed.lines().find(|l| l.trim_start().starts_with(k)).unwrap().to_string();
    let (a, b) = (line("STRIPE_KEY:"), line("DATABASE_URL:"));
    let va = a.split_once(": ").unwrap().1;
    let vb = b.split_once(": ").unwrap().1;
    let swapped = sealed.replace(&a, "@@A").replace(&b, &b.replace(vb, va)).replace("@@A", &a.replace(va, vb));
    let removed = sealed.replace(&format!("{a}\n"), "");
    for (what, content) in [("swap", swapped), ("remove", removed)] {
        assert_ne!(content, sealed);
        s.write("t.yaml", &content);
        let work = snapshot(&s.work);
        let err = s.fails(&["decrypt", "t.yaml"], 8);
        assert!(!err.contains("sk_test"), "{what}");
        s.fails(&["decrypt", "t.yaml", "--in-place"], 8);
        assert_eq!(snapshot(&s.work), work, "{what}");
    }
}

#[test]
fn unsupported_yaml_is_refused_not_sealed_partially() {
    let s = Sandbox::new();
    for (name, doc) in [
        ("dup.yaml", "a: secret-one\na: secret-two\n"),
        ("anchor.yaml", "base: &b\n  x: secret-x\nother: *b\n"),
        ("multi.yaml", "a: secret-one\n---\nb: secret-two\n"),
        ("list.yaml", "- secret-one\n- secret-two\n"),
    ] {
        s.write(name, doc);
        let err = s.fails(&["encrypt", name], 3);
        assert!(!err.contains("secret-"), "{name}: no value in the message: {err}");
        assert_eq!(s.text(name), doc, "{name}");
    }
}

/// A sealed YAML document whose name says nothing (`encrypt x.yaml -o x.sealed`, or a pipe)
/// cannot be opened: decrypt/get/run/inspect detect the format from the content, do not
/// recognise sealed YAML, parse it as .env and fail with exit 3; decrypt has no --format.
#[test]
fn sealed_yaml_opens_whatever_its_name() {
    let s = Sandbox::new();
    let original = testdata("yaml/app.yaml");
    let piped = s.ok_in(&["encrypt", "-", "--format", "yaml"], original.clone()).stdout;
    assert_eq!(s.ok_in(&["decrypt", "-"], piped).stdout, original, "through pipes");
    s.write("app.yaml", &original);
    s.ok(&["encrypt", "app.yaml", "-o", "app.sealed"]);
    assert_eq!(s.decrypt("app.sealed"), original, "-o app.sealed");
    assert_eq!(s.ok(&["get", "app.sealed", "database.user"]).stdout, b"app_user");
    assert_eq!(s.inspect("app.sealed")["format"], "yaml");
}
