//! Error classes: exit codes, an error line and a hint line, and nothing changed on disk.

use std::os::unix::fs::symlink;

use crate::util::*;

#[test]
fn encrypt_already_sealed_is_3() {
    let s = Sandbox::new();
    s.seal("a.env", "A=secret-alpha\n");
    s.seal("c.json", "{\"a\":\"secret-alpha\"}");
    s.write("b.bin", random_bytes(1000, 1));
    s.ok(&["encrypt", "b.bin"]);
    let work = snapshot(&s.work);
    for f in ["a.env", "c.json", "b.bin"] {
        let err = s.fails(&["encrypt", f], 3);
        assert!(err.contains("already sealed"), "{err}");
        s.fails(&["encrypt", f, "-o", "other"], 3);
        let out = s.run_in(&["encrypt", "-"], s.read(f));
        assert_error(&out, 3, true);
        assert!(out.stdout.is_empty());
    }
    // Forcing a value-level format on a sealed binary file does not double-seal it either.
    s.fails(&["encrypt", "b.bin", "--format", "binary"], 3);
    assert_eq!(snapshot(&s.work), work);
}

#[test]
fn decrypt_plain_file_is_3() {
    let s = Sandbox::new();
    s.write("a.env", "A=secret-alpha\n");
    s.write("c.json", "{\"a\":\"secret-alpha\"}");
    s.write("empty.env", "");
    let work = snapshot(&s.work);
    for f in ["a.env", "c.json", "empty.env"] {
        let err = s.fails(&["decrypt", f], 3);
        assert!(err.contains("not sealed"), "{err}");
        s.fails(&["decrypt", f, "--in-place"], 3);
        s.fails(&["inspect", f], 3);
    }
    assert_eq!(snapshot(&s.work), work);
}

/// A plain binary file given to decrypt: "not sealed", and a hint that fits decrypt.
#[test]
fn decrypt_plain_binary_file_says_not_sealed() {
    let s = Sandbox::new();
    s.write("b.bin", random_bytes(1000, 2));
    let err = s.fails(&["decrypt", "b.bin"], 3);
    assert!(err.contains("not sealed"), "{err}");
    assert!(!err.contains("--format"), "{err}");
}

#[test]
fn missing_file_is_4() {
    let s = Sandbox::new();
    for args in [
        &["encrypt", "missing.env"][..],
        &["decrypt", "missing.env"],
        &["decrypt", "missing.bin", "-o", "out"],
        &["get", "missing.env", "A"],
        &["set", "missing.env", "A", "x"],
        &["edit", "missing.env"],
        &["inspect", "missing.env"],
        &["run", "-f", "missing.env", "--", "true"],
    ] {
        let err = assert_error(&s.run(args), 4, false);
        assert!(err.contains("missing."), "{args:?}: names the file: {err}");
    }
    assert!(snapshot(&s.work).is_empty(), "nothing created");
}

#[test]
fn directory_is_3() {
    let s = Sandbox::new();
    std::fs::create_dir(s.path("dir.env")).unwrap();
    for args in [
        &["encrypt", "dir.env"][..],
        &["decrypt", "dir.env"],
        &["inspect", "dir.env"],
        &["get", "dir.env", "A"],
        &["edit", "dir.env"],
    ] {
        let err = assert_error(&s.run(args), 3, false);
        assert!(err.contains("directory"), "{args:?}: {err}");
    }
    s.write("a.env", "A=secret-alpha\n");
    assert_error(&s.run(&["encrypt", "a.env", "-o", "dir.env"]), 3, false);
    assert_eq!(s.text("a.env"), "A=secret-alpha\n");
    assert!(std::fs::read_dir(s.path("dir.env")).unwrap().next().is_none());
}

/// Sealed with keystore A, opened with keystore B (which has its own key): refused, with a
/// hint, and nothing written.
#[test]
fn wrong_keystore_is_refused_with_a_hint() {
    let s = Sandbox::new();
    s.seal("a.env", "A=secret-alpha\n");
    s.write("b.bin", random_bytes(5000, 3));
    s.ok(&["encrypt", "b.bin"]);
    let other = s.root.join("other-home");
    let in_b = |args: &[&str]| s.cmd().args(args).env("ENVSEAL_HOME", &other).output().unwrap();
    assert!(in_b(&["init"]).status.success());
    let work = snapshot(&s.work);
    for args in
        [&["decrypt", "a.env"][..], &["decrypt", "b.bin"], &["decrypt", "a.env", "--in-place"], &["get", "a.env", "A"]]
    {
        let out = in_b(args);
        assert!(!out.status.success(), "{args:?}");
        assert!(out.stdout.is_empty());
        let code = out.status.code().unwrap();
        assert_error(&out, code, true);
        assert!([6, 7].contains(&code), "{args:?}: {code}");
    }
    assert_eq!(snapshot(&s.work), work);
}

/// The hint for a file sealed with another keystore should point at the keystore
/// (ENVSEAL_HOME), not tell the user to restore a file that is intact. exit.rs has such a hint
/// for KmsError::InvalidCiphertext, but the core reports KeyEntryTampered, whose hint says
/// "the file was altered or corrupted: restore it from a good copy".
#[test]
fn wrong_keystore_hint_names_the_keystore() {
    let s = Sandbox::new();
    s.seal("a.env", "A=secret-alpha\n");
    let other = s.root.join("other-home");
    assert!(s.cmd().args(["init"]).env("ENVSEAL_HOME", &other).output().unwrap().status.success());
    let out = s.cmd().args(["decrypt", "a.env"]).env("ENVSEAL_HOME", &other).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    let hint = err.lines().find(|l| l.starts_with("envseal: hint: ")).unwrap_or("");
    assert!(hint.contains("keystore") || hint.contains("ENVSEAL_HOME"), "{err}");
    assert!(!hint.contains("restore"), "{err}");
}

#[test]
fn keystore_dir_group_readable_is_14_with_chmod_hint() {
    let s = Sandbox::new();
    s.seal("a.env", "A=secret-alpha\n");
    s.write("p.env", "P=plain-value\n");
    let work = snapshot(&s.work);
    chmod(&s.home, 0o755);
    for args in
        [&["decrypt", "a.env"][..], &["encrypt", "p.env"], &["keys", "list"], &["run", "-f", "a.env", "--", "true"]]
    {
        let err = s.fails(args, 14);
        assert!(err.contains("chmod 700"), "{args:?}: {err}");
        assert!(err.contains("0755"), "{err}");
    }
    chmod(&s.home, 0o700);
    for f in ["keystore.json", "master.key"] {
        chmod(&s.home.join(f), 0o640);
        let err = s.fails(&["decrypt", "a.env"], 14);
        assert!(err.contains("chmod 600"), "{f}: {err}");
        chmod(&s.home.join(f), 0o600);
    }
    // A keystore file that is a symlink is refused too.
    let ks = s.home.join("keystore.json");
    std::fs::rename(&ks, s.root.join("keystore.json")).unwrap();
    symlink(s.root.join("keystore.json"), &ks).unwrap();
    s.fails(&["decrypt", "a.env"], 14);
    std::fs::remove_file(&ks).unwrap();
    std::fs::rename(s.root.join("keystore.json"), &ks).unwrap();
    assert_eq!(snapshot(&s.work), work);
    assert_eq!(s.decrypt("a.env"), b"A=secret-alpha\n");
}

#[test]
fn context_mismatch_is_5() {
    let s = Sandbox::new();
    s.write("a.env", "A=secret-alpha\n");
    s.ok(&["encrypt", "a.env", "--context", "app=billing", "--context", "env=prod"]);
    s.write("b.bin", random_bytes(70000, 4));
    s.ok(&["encrypt", "b.bin", "--context", "app=billing"]);
    s.write("c.json", "{\"a\":\"secret-alpha\"}");
    s.ok(&["encrypt", "c.json", "--context", "app=billing"]);
    let work = snapshot(&s.work);
    for f in ["a.env", "b.bin", "c.json"] {
        let err = s.fails(&["decrypt", f, "--context", "app=other"], 5);
        assert!(err.contains("inspect"), "the hint says where to see the context: {err}");
        s.fails(&["decrypt", f, "--context", "missing=1"], 5);
        s.fails(&["decrypt", f, "--in-place", "--context", "app=other"], 5);
        // The right context, or a subset of it, opens it; none at all too.
        s.ok(&["decrypt", f, "--context", "app=billing"]);
        s.ok(&["decrypt", f]);
    }
    s.ok(&["decrypt", "a.env", "--context", "env=prod", "--context", "app=billing"]);
    assert_eq!(snapshot(&s.work), work);
    // Invalid context keys are usage errors.
    s.fails(&["encrypt", "a.env", "-o", "x", "--context", "envseal:x=1"], 2);
    s.fails(&["encrypt", "a.env", "-o", "x", "--context", "=1"], 2);
    assert_eq!(s.run(&["encrypt", "a.env", "-o", "x", "--context", "novalue"]).status.code(), Some(2));
    assert!(!s.path("x").exists());
}

#[test]
fn disabled_key_is_13_and_enable_restores() {
    let s = Sandbox::new();
    s.seal("a.env", "A=secret-alpha\n");
    s.write("b.bin", random_bytes(100, 5));
    s.ok(&["encrypt", "b.bin"]);
    s.write("p.env", "P=plain-value\n");
    s.ok(&["keys", "disable", "alias/default"]);
    let work = snapshot(&s.work);
    for args in [
        &["decrypt", "a.env"][..],
        &["decrypt", "b.bin"],
        &["get", "a.env", "A"],
        &["set", "a.env", "A", "x"],
        &["run", "-f", "a.env", "--", "true"],
        &["encrypt", "p.env"],
    ] {
        let err = s.fails(args, 13);
        assert!(err.contains("keys enable"), "{args:?}: {err}");
    }
    assert_eq!(snapshot(&s.work), work);
    let info: serde_json::Value =
        serde_json::from_slice(&s.ok(&["keys", "describe", "alias/default", "--json"]).stdout).unwrap();
    assert_eq!(info["state"], "Disabled");
    s.ok(&["keys", "enable", "alias/default"]);
    assert_eq!(s.decrypt("a.env"), b"A=secret-alpha\n");
    assert_eq!(s.decrypt("b.bin"), random_bytes(100, 5));
    s.ok(&["encrypt", "p.env"]);
}

#[test]
fn symlink_targets_are_never_written_in_place() {
    let s = Sandbox::new();
    s.seal("sealed.env", "A=secret-alpha\n");
    s.write("plain.env", "P=plain-value\n");
    symlink("sealed.env", s.path("sealed-link.env")).unwrap();
    symlink("plain.env", s.path("plain-link.env")).unwrap();
    let work = snapshot(&s.work);
    for args in [
        &["encrypt", "plain-link.env"][..],
        &["decrypt", "sealed-link.env", "--in-place"],
        &["set", "sealed-link.env", "A", "x"],
        &["unset", "sealed-link.env", "A"],
        &["encrypt", "plain.env", "-o", "sealed-link.env"],
    ] {
        let err = s.fails(args, 3);
        assert!(err.contains("symlink"), "{args:?}: {err}");
    }
    assert_eq!(snapshot(&s.work), work);
    // Reading through a symlink is fine, and -o elsewhere works.
    assert_eq!(s.decrypt("sealed-link.env"), b"A=secret-alpha\n");
    s.ok(&["encrypt", "plain-link.env", "-o", "out.env"]);
    assert_eq!(s.decrypt("out.env"), b"P=plain-value\n");
    assert_eq!(s.text("plain.env"), "P=plain-value\n");
}

#[test]
fn unparsable_input_is_3() {
    let s = Sandbox::new();
    s.write("bad.json", "{\"a\": ");
    s.write("list.json", "[1, 2]");
    s.write("bad.env", "A=\"unterminated\n");
    let work = snapshot(&s.work);
    for f in ["bad.json", "list.json", "bad.env"] {
        let err = s.fails(&["encrypt", f], 3);
        assert!(err.contains("--format binary"), "encrypt suggests sealing as bytes: {err}");
    }
    assert_eq!(snapshot(&s.work), work);
    // ... which works.
    s.ok(&["encrypt", "bad.env", "--format", "binary"]);
    assert_eq!(s.decrypt("bad.env"), b"A=\"unterminated\n");
}

#[test]
fn usage_errors_are_2() {
    let s = Sandbox::new();
    for args in
        [&["encrypt"][..], &["frobnicate"], &["encrypt", "a", "--format", "xml"], &["keys", "schedule-deletion"]]
    {
        let out = s.run(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
    }
    s.write("a.env", "A=1\n");
    s.fails(&["encrypt", "a.env", "--kms", "nope://x"], 2);
    let err = assert_error(&s.run(&["encrypt", "a.env", "--plain-keys", "("]), 2, false);
    assert!(err.contains("regular expression"), "{err}");
    assert_eq!(s.text("a.env"), "A=1\n");
}

#[test]
fn unknown_key_alias_is_6() {
    let s = Sandbox::new();
    s.write("a.env", "A=secret-alpha\n");
    let err = s.fails(&["encrypt", "a.env", "--key", "alias/nope"], 6);
    assert!(err.contains("alias/nope"), "{err}");
    let err = s.cmd().args(["encrypt", "a.env"]).env("ENVSEAL_KEY", "alias/nope").output().unwrap();
    assert_error(&err, 6, true);
    assert_eq!(s.text("a.env"), "A=secret-alpha\n");
}

/// docs/CLI.md lists exit code 127 for `run`; `envseal help-exit-codes` should too.
#[test]
fn help_exit_codes_lists_127() {
    let s = Sandbox::new();
    let out = String::from_utf8(s.ok(&["help-exit-codes"]).stdout).unwrap();
    assert!(out.lines().any(|l| l.trim_start().starts_with("127")), "{out}");
}

#[test]
fn help_exit_codes_matches_docs() {
    let s = Sandbox::new();
    let out = String::from_utf8(s.ok(&["help-exit-codes"]).stdout).unwrap();
    for code in 0..=14 {
        assert!(out.lines().any(|l| l.trim_start().starts_with(&format!("{code} "))), "{code} missing:\n{out}");
    }
    assert!(out.contains("130"));
}

/// docs/ARCHITECTURE.md, Conventions 4: one documented exit code per error class, an error line and a hint line.
/// These errors print no hint line.
#[test]
fn every_error_has_a_hint_line() {
    let s = Sandbox::new();
    s.seal("a.env", "A=secret-alpha\n");
    std::fs::create_dir(s.path("dir")).unwrap();
    let ed = s.root.join("fail.sh");
    std::fs::write(&ed, "#!/bin/sh\nexit 1\n").unwrap();
    chmod(&ed, 0o755);
    let mut missing = Vec::new();
    let cases: Vec<(&str, std::process::Output)> = vec![
        ("missing file", s.run(&["decrypt", "missing.env"])),
        ("directory", s.run(&["decrypt", "dir"])),
        ("unknown key", s.run(&["get", "a.env", "NOPE"])),
        ("bad --days", s.run(&["keys", "schedule-deletion", "alias/default", "--days", "6"])),
        ("failing editor", s.cmd().args(["edit", "a.env"]).env("EDITOR", &ed).output().unwrap()),
    ];
    for (what, out) in cases {
        assert!(!out.status.success(), "{what}");
        if !String::from_utf8_lossy(&out.stderr).lines().any(|l| l.starts_with("envseal: hint: ")) {
            missing.push(what);
        }
    }
    assert!(missing.is_empty(), "no hint line for {missing:?}");
}
