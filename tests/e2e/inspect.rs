//! `inspect --json`: describes sealed files without any KMS call.

use crate::util::*;

#[test]
fn inspect_dotenv_and_binary_without_a_keystore() {
    let s = Sandbox::new();
    s.write("a.env", "A=secret-alpha\nB=secret-bravo\n");
    s.ok(&["encrypt", "a.env", "--context", "app=billing"]);
    s.write("b.bin", random_bytes(100_000, 12));
    s.ok(&["encrypt", "b.bin"]);
    s.write("c.json", "{\"a\":\"secret-alpha\",\"n\":1}");
    s.ok(&["encrypt", "c.json", "--plain-keys", "/n"]);
    let key_id =
        serde_json::from_slice::<serde_json::Value>(&s.ok(&["keys", "describe", "alias/default", "--json"]).stdout)
            .unwrap()["key_id"]
            .clone();

    // ENVSEAL_HOME: an empty (and group-readable) directory with no keystore at all.
    let empty = s.root.join("empty-home");
    mkdir_mode(&empty, 0o755);
    let inspect = |f: &str| {
        let out = s.cmd().args(["inspect", f, "--json"]).env("ENVSEAL_HOME", &empty).output().unwrap();
        assert_success(&out, &["inspect", f]);
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()
    };
    let a = inspect("a.env");
    assert_eq!(a["format"], "dotenv");
    assert_eq!(a["format_version"], 2);
    assert_eq!(a["keys"][0]["backend"], "local");
    assert_eq!(a["keys"][0]["key_version"], "1");
    assert_eq!(a["keys"][0]["key_id"], key_id);
    assert_eq!(a["context"]["app"], "billing");
    assert_eq!(a["values_sealed"], 2);
    assert_eq!(a["values_plain"], 0);
    assert_eq!(a["sealed_bytes"], s.read("a.env").len());
    assert_eq!(a["file_id"].as_str().unwrap().len(), 64);
    assert!(a["created"].is_string());

    let b = inspect("b.bin");
    assert_eq!(b["format"], "binary");
    assert_eq!(b["keys"][0]["backend"], "local");
    assert_eq!(b["keys"][0]["key_version"], "1");
    assert_eq!(b["keys"][0]["key_id"], key_id);
    assert_eq!(b["plaintext_bytes"], 100_000);
    assert_eq!(b["sealed_bytes"], s.read("b.bin").len());
    assert_eq!(b["chunk_size"], 65536);
    assert_eq!(b["context"], serde_json::json!({}));

    let c = inspect("c.json");
    assert_eq!(c["format"], "json");
    assert_eq!((c["values_sealed"].as_u64(), c["values_plain"].as_u64()), (Some(1), Some(1)));
    assert_eq!(c["plain_keys"], "/n");

    assert!(std::fs::read_dir(&empty).unwrap().next().is_none(), "inspect created nothing");
    // Inspect reads stdin too; the text form lists the same facts.
    let out = s.cmd().args(["inspect", "-"]).env("ENVSEAL_HOME", &empty).write_stdin(s.read("b.bin")).output().unwrap();
    assert_success(&out, &["inspect", "-"]);
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("binary") && text.contains("local") && text.contains("version 1"), "{text}");
    // No value ever appears.
    for f in ["a.env", "c.json"] {
        let out = s.ok(&["inspect", f]);
        assert!(!contains(&out.stdout, b"secret-"), "{f}");
    }
}

#[test]
fn inspect_of_plain_or_tampered_input() {
    let s = Sandbox::new();
    s.write("plain.env", "A=1\n");
    s.fails(&["inspect", "plain.env"], 3);
    s.write("b.bin", random_bytes(1000, 13));
    s.ok(&["encrypt", "b.bin"]);
    let sealed = s.read("b.bin");
    s.write("cut.bin", &sealed[..40]);
    s.fails(&["inspect", "cut.bin"], 9);
    let mut v = sealed.clone();
    v[8] = 9;
    s.write("v9.bin", &v);
    s.fails(&["inspect", "v9.bin"], 10);
}
