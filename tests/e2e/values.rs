//! `get`, `set`, `unset`: one value at a time; every other line keeps its exact bytes.

use crate::util::*;

#[test]
fn set_by_argument_changes_only_that_line() {
    let s = Sandbox::new();
    let before = s.seal("s.env", testdata("dotenv/sample.env"));
    let out = s.ok(&["set", "s.env", "API_KEY", "sk_live_new-value-123"]);
    assert!(out.stdout.is_empty());
    let after = s.read("s.env");
    let changed = changed_lines(&before, &after);
    assert_eq!(changed.len(), 1, "{changed:?}");
    assert!(changed[0].starts_with("API_KEY=\"ENC[v2:"), "quoting kept: {changed:?}");
    assert!(!contains(&after, b"sk_live_new-value-123"));
    assert_eq!(s.ok(&["get", "s.env", "API_KEY"]).stdout, b"sk_live_new-value-123");
    // Every other line of the plaintext is as it was.
    let original = String::from_utf8(testdata("dotenv/sample.env")).unwrap();
    let plain = String::from_utf8(s.decrypt("s.env")).unwrap();
    let (o, p): (Vec<&str>, Vec<&str>) = (original.lines().collect(), plain.lines().collect());
    assert_eq!(o.len(), p.len());
    for (a, b) in o.iter().zip(&p) {
        if a.starts_with("API_KEY=") {
            assert!(b.starts_with("API_KEY=") && b.contains("sk_live_new-value-123"), "{b}");
        } else {
            assert_eq!(a, b);
        }
    }
}

/// envseal-dotenv's `set_value` keeps an entry's quoting when it can hold the new value (its
/// README, "Writing values"); `envseal set` re-encodes the value as for a new line instead, so
/// the decrypted file loses the quotes (`API_KEY="..."` becomes `API_KEY=...`).
#[test]
fn set_keeps_the_entry_quoting() {
    let s = Sandbox::new();
    s.seal("s.env", testdata("dotenv/sample.env"));
    s.ok(&["set", "s.env", "API_KEY", "sk_live_new-value-123"]);
    s.ok(&["set", "s.env", "SMTP_PASSWORD", "new horse battery staple"]);
    let expected = String::from_utf8(testdata("dotenv/sample.env"))
        .unwrap()
        .replace("sk_test_51Hx9fakefakefake", "sk_live_new-value-123")
        .replace("correct horse", "new horse");
    assert_eq!(String::from_utf8(s.decrypt("s.env")).unwrap(), expected);
}

#[test]
fn set_from_stdin_keeps_exact_bytes() {
    let s = Sandbox::new();
    let before = s.seal("s.env", testdata("dotenv/grammar.env"));
    let value = "line one\nline \"two\" $HOME ${X} \\ 'q'\n  trailing spaces  \nüñí 🔑";
    s.ok_in(&["set", "s.env", "PLAIN", "-"], value);
    let after = s.read("s.env");
    let changed = changed_lines(&before, &after);
    assert_eq!(changed.len(), 1, "{changed:?}");
    assert!(changed[0].starts_with("PLAIN="));
    assert_eq!(String::from_utf8(s.ok(&["get", "s.env", "PLAIN"]).stdout).unwrap(), value);
    let out = s.ok(&["run", "-f", "s.env", "--", "sh", "-c", "printf %s \"$PLAIN\""]);
    assert_eq!(String::from_utf8(out.stdout).unwrap(), value);
    // A trailing newline from stdin is part of the value (use printf %s).
    s.ok_in(&["set", "s.env", "PLAIN", "-"], "with-newline\n");
    assert_eq!(s.ok(&["get", "s.env", "PLAIN"]).stdout, b"with-newline\n");
    // Empty value.
    s.ok_in(&["set", "s.env", "PLAIN", "-"], "");
    assert_eq!(s.ok(&["get", "s.env", "PLAIN"]).stdout, b"");
    // Everything else still decrypts to the original.
    let mut rest = s.decrypt("s.env");
    let original = testdata("dotenv/grammar.env");
    let (i, j) = (find(&rest, b"\nPLAIN=") + 1, find(&original, b"\nPLAIN=") + 1);
    rest.drain(i..i + rest[i..].iter().position(|b| *b == b'\n').unwrap());
    let mut orig = original.clone();
    orig.drain(j..j + orig[j..].iter().position(|b| *b == b'\n').unwrap());
    assert_eq!(rest, orig);
}

fn find(hay: &[u8], needle: &[u8]) -> usize {
    hay.windows(needle.len()).position(|w| w == needle).unwrap()
}

#[test]
fn set_new_key_and_unset() {
    let s = Sandbox::new();
    let before = s.seal("s.env", testdata("dotenv/sample.env"));
    s.ok(&["set", "s.env", "NEW_KEY", "brand-new-value"]);
    let after = s.read("s.env");
    let (b, a) = (lines(&before), lines(&after));
    assert_eq!(a.len(), b.len() + 1);
    let new: Vec<_> = a.iter().filter(|l| !b.contains(l)).map(|l| String::from_utf8_lossy(l).into_owned()).collect();
    assert!(new.iter().any(|l| l.starts_with("NEW_KEY=ENC[v2:")), "{new:?}");
    assert!(
        new.iter().all(|l| l.starts_with("NEW_KEY=")
            || l.starts_with("#ENVSEAL_MAC=")
            || l.starts_with("#ENVSEAL_MODIFIED=")),
        "{new:?}"
    );
    assert_eq!(s.ok(&["get", "s.env", "NEW_KEY"]).stdout, b"brand-new-value");
    // unset removes exactly that line again.
    s.ok(&["unset", "s.env", "NEW_KEY"]);
    assert!(changed_lines(&before, &s.read("s.env")).is_empty());
    assert_eq!(s.decrypt("s.env"), testdata("dotenv/sample.env"));
    // Unset an original key.
    s.ok(&["unset", "s.env", "SMTP_PASSWORD"]);
    let text = String::from_utf8(s.decrypt("s.env")).unwrap();
    assert!(!text.contains("SMTP_PASSWORD"));
    assert!(text.contains("API_KEY=\"sk_test_51Hx9fakefakefake\""));
}

#[test]
fn unknown_key_is_3_and_file_unchanged() {
    let s = Sandbox::new();
    s.seal("s.env", testdata("dotenv/sample.env"));
    s.seal("c.json", r#"{"a":{"b":["x"]}}"#);
    let work = snapshot(&s.work);
    for args in [
        &["get", "s.env", "NOPE"][..],
        &["unset", "s.env", "NOPE"],
        &["get", "c.json", "a.c"],
        &["get", "c.json", "a.b[5]"],
        &["get", "c.json", "/a/b/9"],
        &["unset", "c.json", "zz"],
    ] {
        let out = s.run(args);
        assert_error(&out, 3, false);
        assert!(out.stdout.is_empty(), "{args:?}");
    }
    assert_eq!(snapshot(&s.work), work);
}

#[test]
fn set_on_a_plain_file_is_3_and_file_unchanged() {
    let s = Sandbox::new();
    s.write("plain.env", "A=alpha\n");
    s.write("plain.json", "{\"a\":1}");
    let work = snapshot(&s.work);
    s.fails(&["set", "plain.env", "A", "x"], 3);
    s.fails(&["set", "plain.json", "a", "x"], 3);
    s.fails(&["unset", "plain.env", "A"], 3);
    s.fails(&["get", "plain.env", "A"], 3);
    assert_eq!(snapshot(&s.work), work);
}

#[test]
fn json_nested_paths_and_pointers() {
    let s = Sandbox::new();
    let doc = "{\n  \"a\": {\n    \"b\": [\n      \"first-item\",\n      {\n        \"c\": \"deep-value\"\n      }\n    ]\n  },\n  \"n\": 42,\n  \"t\": true,\n  \"z\": null,\n  \"we/ird~key\": \"escaped-pointer\"\n}\n";
    let before = String::from_utf8(s.seal("c.json", doc)).unwrap();
    for (path, want) in [
        ("a.b[0]", "first-item"),
        ("/a/b/0", "first-item"),
        ("a.b[1].c", "deep-value"),
        ("/a/b/1/c", "deep-value"),
        ("n", "42"),
        ("t", "true"),
        ("/we~1ird~0key", "escaped-pointer"),
    ] {
        assert_eq!(String::from_utf8(s.ok(&["get", "c.json", path]).stdout).unwrap(), want, "get {path}");
    }
    // set a nested value: other ENC texts are untouched.
    s.ok(&["set", "c.json", "a.b[1].c", "new-deep"]);
    s.ok(&["set", "c.json", "/n", "43", "--type", "number"]);
    s.ok(&["set", "c.json", "t", "false", "--type", "bool"]);
    let after = String::from_utf8(s.read("c.json")).unwrap();
    let (bv, av): (serde_json::Value, serde_json::Value) =
        (serde_json::from_str(&before).unwrap(), serde_json::from_str(&after).unwrap());
    assert_eq!(bv["a"]["b"][0], av["a"]["b"][0], "unchanged values keep their ciphertext");
    assert_eq!(bv["z"], av["z"]);
    assert_eq!(bv["we/ird~key"], av["we/ird~key"]);
    assert_ne!(bv["a"]["b"][1]["c"], av["a"]["b"][1]["c"]);
    let plain: serde_json::Value = serde_json::from_slice(&s.decrypt("c.json")).unwrap();
    assert_eq!(plain["a"]["b"][1]["c"], "new-deep");
    assert_eq!(plain["n"], 43);
    assert_eq!(plain["t"], false);
    assert_eq!(plain["a"]["b"][0], "first-item");
    // .env values are strings only.
    s.seal("e.env", "A=1\n");
    let out = s.run(&["set", "e.env", "A", "2", "--type", "number"]);
    assert_error(&out, 2, true);
    // A set on a binary container is refused.
    s.write("b.bin", random_bytes(100, 9));
    s.ok(&["encrypt", "b.bin"]);
    let b = s.read("b.bin");
    s.fails(&["set", "b.bin", "A", "x"], 3);
    assert_eq!(s.read("b.bin"), b);
}
