//! Tamper matrix: every change to a sealed file is detected with its documented exit code, and
//! no command changes the file (decrypt, decrypt --in-place, set, run).

use crate::util::*;

/// Runs the commands that read (and might write) a sealed file; each must fail with `code`,
/// print no plaintext and leave the work directory as it was.
#[track_caller]
fn assert_rejected(s: &Sandbox, name: &str, code: i32, what: &str) {
    let work = snapshot(&s.work);
    let out = s.run(&["decrypt", name]);
    let err = assert_error(&out, code, true);
    assert!(out.stdout.is_empty(), "{what}: no plaintext on failure");
    assert!(!err.contains("secret-"), "{what}: no value in the message: {err}");
    assert_error(&s.run(&["decrypt", name, "--in-place"]), code, true);
    assert_error(&s.run(&["decrypt", name, "-o", "out.plain"]), code, true);
    assert_error(&s.run(&["set", name, "A", "x"]), code, true);
    assert_error(&s.run(&["get", name, "A"]), code, true);
    let out = s.run(&["run", "-f", name, "--", "true"]);
    assert_error(&out, code, true);
    assert_eq!(snapshot(&s.work), work, "{what}: files changed");
}

const DOTENV: &str = "A=secret-alpha\nB=secret-bravo\n# comment\nC=secret-charlie\n";

fn sealed_dotenv(s: &Sandbox) -> String {
    String::from_utf8(s.seal("orig.env", DOTENV)).unwrap()
}

#[test]
fn dotenv_tamper_matrix() {
    let s = Sandbox::new();
    let sealed = sealed_dotenv(&s);
    let ls: Vec<&str> = sealed.split_inclusive('\n').collect();
    let value = |i: usize| ls[i].split_once('=').unwrap().1;
    let meta = |field: &str| ls.iter().position(|l| l.starts_with(&format!("#ENVSEAL_{field}="))).unwrap();
    let with = |i: usize, line: String| {
        let mut v: Vec<String> = ls.iter().map(|l| l.to_string()).collect();
        v[i] = line;
        v.concat()
    };
    let key_line = ls[meta("KEY")];
    let blob_at = key_line.find("\"blob\":\"").unwrap() + 20;
    let ct_at = ls[0].find("ENC[v2:").unwrap() + 15;
    let cases: Vec<(&str, String, i32)> = vec![
        (
            "swap two values",
            {
                let mut v: Vec<String> = ls.iter().map(|l| l.to_string()).collect();
                v[0] = format!("A={}", value(1));
                v[1] = format!("B={}", value(0));
                v.concat()
            },
            8,
        ),
        ("remove a line", ls.iter().enumerate().filter(|(i, _)| *i != 1).map(|(_, l)| *l).collect(), 8),
        ("reorder lines", [ls[1], ls[0]].concat() + &ls[2..].concat(), 8),
        ("duplicate a line", [ls[0], ls[0]].concat() + &ls[1..].concat(), 8),
        ("rename a key", with(3, ls[3].replacen("C=", "D=", 1)), 8),
        ("move a value to another key", with(3, format!("C={}", value(0))), 8),
        ("edit a ciphertext character", with(0, flip_char(ls[0], ct_at)), 8),
        ("edit the MAC", with(meta("MAC"), flip_hex(ls[meta("MAC")], 15)), 8),
        ("value replaced by plaintext", with(1, "B=secret-bravo\n".into()), 7),
        ("edit the wrapped key blob", with(meta("KEY"), flip_char(key_line, blob_at)), 7),
        (
            "edit the key version",
            with(meta("KEY"), key_line.replace("\"key_version\":\"1\"", "\"key_version\":\"2\"")),
            7,
        ),
        ("garbage KEY line", with(meta("KEY"), "#ENVSEAL_KEY=not json\n".into()), 7),
        ("change the context", with(meta("CONTEXT"), "#ENVSEAL_CONTEXT={\"env\":\"prod\"}\n".into()), 7),
        ("edit the file id", with(meta("FILE_ID"), flip_hex(ls[meta("FILE_ID")], 20)), 7),
        ("edit the commitment", with(meta("COMMITMENT"), flip_hex(ls[meta("COMMITMENT")], 22)), 7),
    ];
    for (what, content, code) in cases {
        assert_ne!(content, sealed, "{what}: no change made");
        s.write("t.env", &content);
        assert_rejected(&s, "t.env", code, what);
        assert_eq!(s.text("t.env"), content, "{what}");
    }
    // Comments, blank lines and the informational dates are not authenticated (FORMAT.md §10.4).
    s.write("t.env", format!("# added on top\n\n{}", sealed.replace("# comment", "# another comment")));
    s.ok(&["decrypt", "t.env"]);
    let m = meta("CREATED");
    s.write("t.env", with(m, "#ENVSEAL_CREATED=\"2000-01-01T00:00:00Z\"\n".into()));
    s.ok(&["decrypt", "t.env"]);
}

#[test]
fn dotenv_moving_values_between_files_is_detected() {
    let s = Sandbox::new();
    let a = String::from_utf8(s.seal("a.env", "A=secret-one\n")).unwrap();
    let b = String::from_utf8(s.seal("b.env", "A=secret-two\n")).unwrap();
    // Same key, same plaintext length, other file: value from b.env put into a.env.
    let a_line = a.lines().next().unwrap();
    let b_line = b.lines().next().unwrap();
    s.write("t.env", a.replacen(a_line, b_line, 1));
    assert_rejected(&s, "t.env", 8, "value from another file");
    // The whole metadata of another file.
    let (a_body, _) = a.split_once("#ENVSEAL_").unwrap();
    let b_meta = &b[b.find("#ENVSEAL_").unwrap()..];
    s.write("t.env", format!("{a_body}{b_meta}"));
    assert_rejected(&s, "t.env", 8, "metadata of another file");
}

const JSON: &str = "{\n  \"a\": \"secret-alpha\",\n  \"b\": \"secret-bravo\",\n  \"list\": [\n    \"secret-one\",\n    \"secret-two\"\n  ]\n}\n";

#[test]
fn json_tamper_matrix() {
    let s = Sandbox::new();
    let sealed = String::from_utf8(s.seal("orig.json", JSON)).unwrap();
    let v: serde_json::Value = serde_json::from_str(&sealed).unwrap();
    let enc = |p: &str| v.pointer(p).unwrap().as_str().unwrap().to_string();
    let (a, b, l0) = (enc("/a"), enc("/b"), enc("/list/0"));
    let mac = v["envseal"]["mac"].as_str().unwrap().to_string();
    let blob = v["envseal"]["keys"][0]["blob"].as_str().unwrap().to_string();
    let mac2 = flip_hex(&mac, 3);
    let cases: Vec<(&str, String, i32)> = vec![
        ("swap two values", sealed.replace(&a, "@").replace(&b, &a).replace('@', &b), 8),
        ("remove a key", replace_once(&sealed, &format!("  \"b\": \"{b}\",\n"), ""), 8),
        (
            "reorder keys",
            {
                let x = format!("  \"a\": \"{a}\",\n");
                let y = format!("  \"b\": \"{b}\",\n");
                replace_once(&sealed, &format!("{x}{y}"), &format!("{y}{x}"))
            },
            8,
        ),
        ("duplicate an item", replace_once(&sealed, &format!("\"{l0}\","), &format!("\"{l0}\",\n    \"{l0}\",")), 8),
        ("edit a ciphertext character", sealed.replace(&a, &flip_char(&a, 20)), 8),
        ("edit the MAC", replace_once(&sealed, &mac, &mac2), 8),
        ("edit the wrapped key", replace_once(&sealed, &blob, &flip_char(&blob, 60)), 7),
        ("change the context", replace_once(&sealed, "\"context\": {}", "\"context\": {\"env\": \"prod\"}"), 7),
        ("value replaced by plaintext", replace_once(&sealed, &format!("\"{a}\""), "\"secret-alpha\""), 7),
        ("number instead of a sealed string", replace_once(&sealed, &format!("\"{a}\""), "42"), 7),
    ];
    for (what, content, code) in cases {
        assert_ne!(content, sealed, "{what}: no change made");
        s.write("t.json", &content);
        assert_rejected(&s, "t.json", code, what);
        assert_eq!(s.text("t.json"), content, "{what}");
    }
}

/// A binary container of `len` random bytes, sealed as `name`; returns (plaintext, sealed,
/// preamble length).
fn sealed_binary(s: &Sandbox, name: &str, len: usize) -> (Vec<u8>, Vec<u8>, usize) {
    let data = random_bytes(len, len as u64);
    s.write("plain.bin", &data);
    s.ok(&["encrypt", "plain.bin", "-o", name]);
    let sealed = s.read(name);
    let chunks = len.div_ceil(65536).max(1);
    let preamble = sealed.len() - len - 16 * chunks;
    (data, sealed, preamble)
}

#[track_caller]
fn assert_binary_rejected(s: &Sandbox, content: &[u8], code: i32, what: &str) -> String {
    s.write("t.sealed", content);
    let work = snapshot(&s.work);
    let err = assert_error(&s.run(&["decrypt", "t.sealed", "-o", "out.bin"]), code, true);
    assert!(!s.path("out.bin").exists(), "{what}: no output file on failure");
    assert_error(&s.run(&["decrypt", "t.sealed", "--in-place"]), code, true);
    let out = s.run_in(&["decrypt", "-"], content.to_vec());
    assert_error(&out, code, true);
    assert_eq!(snapshot(&s.work), work, "{what}: files changed");
    err
}

#[test]
fn binary_tamper_matrix() {
    let s = Sandbox::new();
    let (_, two, pre) = sealed_binary(&s, "two.sealed", 65536 + 1000);
    let flip = |data: &[u8], at: usize| {
        let mut d = data.to_vec();
        d[at] ^= 0x01;
        d
    };
    let mut appended = two.clone();
    appended.extend_from_slice(b"extra");
    let cases: Vec<(&str, Vec<u8>, i32)> = vec![
        ("flip a salt byte", flip(&two, 20), 7),
        ("flip the chunk size", flip(&two, 13), 7),
        ("flip a wrapped-key byte", flip(&two, pre - 100), 7),
        ("flip the commitment", flip(&two, pre - 40), 7),
        ("flip the header MAC", flip(&two, pre - 1), 7),
        ("flip a byte of chunk 0", flip(&two, pre + 10), 7),
        ("flip a tag byte of chunk 0", flip(&two, pre + 65536 + 3), 7),
        ("flip a byte of the final chunk", flip(&two, two.len() - 30), 7),
        ("cut inside chunk 0", two[..pre + 1000].to_vec(), 7),
        ("cut inside the final chunk", two[..two.len() - 1].to_vec(), 7),
        ("append after a short final chunk", appended, 7),
        ("swap the two chunks", [&two[..pre], &two[pre + 65552..], &two[pre..pre + 65552]].concat(), 7),
        ("cut at the chunk boundary", two[..pre + 65552].to_vec(), 9),
        ("cut right after the preamble", two[..pre].to_vec(), 9),
        ("cut inside the preamble", two[..pre - 10].to_vec(), 9),
        (
            "version 2",
            {
                let mut d = two.clone();
                d[8] = 2;
                d
            },
            10,
        ),
        (
            "suite 2",
            {
                let mut d = two.clone();
                d[10] = 2;
                d
            },
            10,
        ),
    ];
    for (what, content, code) in cases {
        assert_binary_rejected(&s, &content, code, what);
    }
    // A full-size final chunk followed by more data.
    let (_, full, _) = sealed_binary(&s, "full.sealed", 65536);
    let mut extra = full.clone();
    extra.push(0);
    assert_binary_rejected(&s, &extra, 7, "append after a full final chunk");
    // A chunk from another file with the same layout.
    let (_, other, pre2) = sealed_binary(&s, "other.sealed", 65536 + 1000);
    assert_eq!(pre, pre2);
    let spliced = [&two[..pre], &other[pre..pre + 65552], &two[pre + 65552..]].concat();
    assert_binary_rejected(&s, &spliced, 7, "chunk from another file");
    // A broken magic is not a container at all.
    let err = assert_binary_rejected(&s, &flip(&two, 3), 3, "flip a magic byte");
    assert!(err.contains("not"), "{err}");
}

/// Truncation messages count chunks like the tamper messages do (from 0), or say how many
/// complete chunks there were, without an off-by-one.
#[test]
fn truncation_message_counts_chunks_consistently() {
    let s = Sandbox::new();
    let (_, two, pre) = sealed_binary(&s, "two.sealed", 65536 + 1000);
    let err = assert_binary_rejected(&s, &two[..pre], 9, "after the preamble");
    assert!(!err.contains("after chunk 0"), "there is no chunk 0 in this file: {err}");
    let err = assert_binary_rejected(&s, &two[..pre + 65552], 9, "after chunk 0");
    assert!(!err.contains("after chunk 1"), "only chunk 0 is there: {err}");
}
