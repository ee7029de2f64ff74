//! Permissions: the keystore is private, new plaintext files are 0600, replaced files keep
//! their mode, and no temp file survives a command, successful or not.

use crate::util::*;

#[test]
fn keystore_created_private_on_first_use() {
    let s = Sandbox::new();
    assert!(!s.home.exists());
    s.seal("a.env", "A=secret-alpha\n");
    assert_eq!(mode(&s.home), 0o700);
    let mut names = Vec::new();
    for e in std::fs::read_dir(&s.home).unwrap() {
        let e = e.unwrap();
        names.push(e.file_name().into_string().unwrap());
        assert_eq!(mode(&e.path()), 0o600, "{:?}", e.file_name());
    }
    names.sort();
    assert!(names.contains(&"keystore.json".to_string()) && names.contains(&"master.key".to_string()), "{names:?}");
    // Nested ENVSEAL_HOME: parents are created, the keystore dir itself is 0700.
    let nested = s.root.join("a/b/envseal");
    let out = s.cmd().args(["encrypt", "a.env", "-o", "b.env"]).env("ENVSEAL_HOME", &nested).output().unwrap();
    assert_error(&out, 3, true); // a.env is sealed already; the keystore is created first anyway
    let out = s.cmd().args(["init"]).env("ENVSEAL_HOME", s.root.join("c/envseal")).output().unwrap();
    assert_success(&out, &["init"]);
    assert_eq!(mode(&s.root.join("c/envseal")), 0o700);
    // init twice: refused.
    let out = s.cmd().args(["init"]).env("ENVSEAL_HOME", s.root.join("c/envseal")).output().unwrap();
    assert!(!out.status.success());
    // The keystore does not change on reads.
    let before = snapshot(&s.home);
    s.decrypt("a.env");
    s.ok(&["keys", "list"]);
    assert_eq!(snapshot(&s.home), before);
}

#[test]
fn new_plaintext_files_are_0600() {
    let s = Sandbox::new();
    s.seal("a.env", "A=secret-alpha\n");
    s.write("b.bin", random_bytes(70000, 6));
    s.ok(&["encrypt", "b.bin"]);
    s.ok(&["decrypt", "a.env", "-o", "a.plain"]);
    s.ok(&["decrypt", "b.bin", "-o", "b.plain"]);
    s.ok_in(&["decrypt", "-", "-o", "c.plain"], s.read("a.env"));
    for f in ["a.plain", "b.plain", "c.plain"] {
        assert_eq!(mode(&s.path(f)), 0o600, "{f}");
    }
    // Replacing an existing file keeps its mode (docs/CLI.md, Safety).
    s.write("d.plain", "old");
    chmod(&s.path("d.plain"), 0o640);
    s.ok(&["decrypt", "a.env", "-o", "d.plain"]);
    assert_eq!(mode(&s.path("d.plain")), 0o640);
    assert_eq!(s.read("d.plain"), b"A=secret-alpha\n");
}

#[test]
fn in_place_writes_keep_the_mode() {
    let s = Sandbox::new();
    s.write("a.env", "A=secret-alpha\n");
    s.write("b.bin", random_bytes(1000, 7));
    s.write("c.json", "{\"a\":\"secret-alpha\"}");
    for (f, m) in [("a.env", 0o640), ("b.bin", 0o600), ("c.json", 0o604)] {
        chmod(&s.path(f), m);
        s.ok(&["encrypt", f]);
        assert_eq!(mode(&s.path(f)), m, "encrypt {f}");
        if f != "b.bin" {
            s.ok(&["set", f, "a", "new-value"]);
            assert_eq!(mode(&s.path(f)), m, "set {f}");
            let ed = s.root.join("ed.sh");
            std::fs::write(&ed, "#!/bin/sh\nsed -i 's/new-value/edited-value/' \"$1\"\n").unwrap();
            chmod(&ed, 0o755);
            assert_success(&s.cmd().args(["edit", f]).env("EDITOR", &ed).output().unwrap(), &["edit"]);
            assert_eq!(mode(&s.path(f)), m, "edit {f}");
        }
        s.ok(&["decrypt", f, "--in-place"]);
        assert_eq!(mode(&s.path(f)), m, "decrypt --in-place {f}");
    }
    assert_eq!(s.text("a.env"), "A=secret-alpha\na=edited-value\n");
    // A new sealed file from -o: ordinary permissions are fine for ciphertext.
    s.ok(&["encrypt", "a.env", "-o", "new.env"]);
    assert!(mode(&s.path("new.env")) & 0o600 == 0o600);
}

#[test]
fn no_temp_files_after_failures() {
    let s = Sandbox::new();
    s.seal("a.env", "A=secret-alpha\n");
    s.write("b.bin", random_bytes(200_000, 8));
    s.ok(&["encrypt", "b.bin"]);
    let mut bad = s.read("b.bin");
    let n = bad.len();
    bad[n - 100] ^= 1; // the last chunk fails after two chunks were written to the temp file
    s.write("bad.bin", &bad);
    let work = snapshot(&s.work);
    assert_error(&s.run(&["decrypt", "bad.bin", "-o", "out.bin"]), 7, true);
    assert_error(&s.run(&["decrypt", "bad.bin", "--in-place"]), 7, true);
    s.write("existing.bin", "keep me");
    assert_error(&s.run(&["decrypt", "bad.bin", "-o", "existing.bin"]), 7, true);
    assert_eq!(s.read("existing.bin"), b"keep me");
    std::fs::remove_file(s.path("existing.bin")).unwrap();
    assert_error(&s.run(&["decrypt", "a.env", "--in-place", "--context", "x=y"]), 5, true);
    assert_eq!(snapshot(&s.work), work);
    assert!(s.leftovers().is_empty());
}
