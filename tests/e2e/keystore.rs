//! Keystore locations and unlock: `ENVSEAL_MASTER_KEY_FILE`, `local:DIR` URIs, several
//! wrapped-key entries per file.

use crate::util::*;

#[test]
fn master_key_file_kept_elsewhere() {
    let s = Sandbox::new();
    let keydir = s.root.join("keys");
    mkdir_mode(&keydir, 0o700);
    let mk = keydir.join("master.key");
    let with_mk = |args: &[&str]| s.cmd().args(args).env("ENVSEAL_MASTER_KEY_FILE", &mk).output().unwrap();
    s.write("a.env", "A=secret-alpha\n");
    assert_success(&with_mk(&["encrypt", "a.env"]), &["encrypt"]);
    assert!(mk.exists());
    assert_eq!(mode(&mk), 0o600);
    assert!(!s.home.join("master.key").exists(), "the master key is not beside the keystore");
    let out = with_mk(&["decrypt", "a.env"]);
    assert_success(&out, &["decrypt"]);
    assert_eq!(out.stdout, b"A=secret-alpha\n");
    // Without it: the keystore cannot be unlocked.
    s.fails(&["decrypt", "a.env"], 14);
    // A wrong master key: 14, with a hint naming the variable.
    let wrong = keydir.join("wrong.key");
    std::fs::write(&wrong, random_bytes(32, 30)).unwrap();
    chmod(&wrong, 0o600);
    let out = s.cmd().args(["decrypt", "a.env"]).env("ENVSEAL_MASTER_KEY_FILE", &wrong).output().unwrap();
    let err = assert_error(&out, 14, true);
    assert!(err.contains("ENVSEAL_MASTER_KEY_FILE"), "{err}");
    // A group-readable master key file is refused.
    chmod(&mk, 0o640);
    let err = assert_error(&with_mk(&["decrypt", "a.env"]), 14, true);
    assert!(err.contains("chmod 600"), "{err}");
}

#[test]
fn several_keystores_any_entry_opens() {
    let s = Sandbox::new();
    let (a, b) = (s.root.join("ks-a"), s.root.join("ks-b"));
    let (ua, ub) = (format!("local:{}", a.display()), format!("local:{}", b.display()));
    s.write("x.env", "A=secret-alpha\n");
    s.ok(&["encrypt", "x.env", "--kms", &ua, "--kms", &ub]);
    s.write("x.bin", random_bytes(5000, 31));
    s.ok(&["encrypt", "x.bin", &format!("--kms={ua},{ub}")]);
    s.ok(&["init"]);
    for f in ["x.env", "x.bin"] {
        let info = s.inspect(f);
        let keys = info["keys"].as_array().unwrap();
        assert_eq!(keys.len(), 2, "{f}");
        assert_ne!(keys[0]["key_id"], keys[1]["key_id"]);
        for k in [&ua, &ub] {
            s.ok(&["decrypt", f, "--kms", k]);
        }
        // Either keystore as the default one works too.
        for home in [&a, &b] {
            let out = s.cmd().args(["decrypt", f]).env("ENVSEAL_HOME", home).output().unwrap();
            assert_success(&out, &["decrypt", f]);
        }
        // The default keystore (a third one) holds neither key.
        let out = s.run(&["decrypt", f]);
        assert!(!out.status.success() && out.stdout.is_empty());
    }
    // Deleting one keystore: the other still opens the file.
    std::fs::remove_dir_all(&a).unwrap();
    assert_eq!(s.ok(&["decrypt", "x.env", "--kms", &ub]).stdout, b"A=secret-alpha\n");
}

/// `keys create --alias A` with an alias that exists fails, but has already created the key:
/// an orphan key without alias is left in the keystore.
#[test]
fn failed_create_leaves_no_orphan_key() {
    let s = Sandbox::new();
    s.ok(&["keys", "create", "--alias", "alias/app"]);
    let before: serde_json::Value = serde_json::from_slice(&s.ok(&["keys", "list", "--json"]).stdout).unwrap();
    let out = s.run(&["keys", "create", "--alias", "alias/app"]);
    assert!(!out.status.success());
    let after: serde_json::Value = serde_json::from_slice(&s.ok(&["keys", "list", "--json"]).stdout).unwrap();
    assert_eq!(after.as_array().unwrap().len(), before.as_array().unwrap().len(), "{after:#}");
}

#[test]
fn values_that_cannot_be_environment_variables() {
    let s = Sandbox::new();
    s.seal("nul.json", "{\"a\":\"x\\u0000y\",\"b\":\"secret-bravo\"}");
    let marker = s.path("ran");
    let err = assert_error(&s.run(&["run", "-f", "nul.json", "--", "touch", marker.to_str().unwrap()]), 3, false);
    assert!(err.contains("\"a\""), "{err}");
    assert!(!marker.exists());
    // get still prints it exactly.
    assert_eq!(s.ok(&["get", "nul.json", "a"]).stdout, b"x\0y");
}

/// A plain JSON/YAML file that uses the reserved top-level key `envseal` is bad input (3), not
/// a tampered sealed file (7, "restore it from version control").
#[test]
fn reserved_key_in_a_plain_file_is_bad_input() {
    let s = Sandbox::new();
    s.write("r.json", "{\"envseal\":\"mine\",\"a\":\"secret-alpha\"}");
    s.write("r.yaml", "envseal: mine\na: secret-alpha\n");
    for f in ["r.json", "r.yaml"] {
        let err = s.fails(&["encrypt", f], 3);
        assert!(!err.contains("restore"), "{err}");
    }
}
