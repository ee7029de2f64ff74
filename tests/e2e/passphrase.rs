//! A passphrase-protected keystore (Argon2id, 64 MiB: about 1.5 s per command in a debug build,
//! so few commands).

use crate::util::*;

const PASS: &str = "correct horse battery staple 42";

#[test]
fn passphrase_keystore() {
    let s = Sandbox::new();
    let out = s.cmd().args(["init", "--passphrase"]).env("ENVSEAL_PASSPHRASE", PASS).output().unwrap();
    assert_success(&out, &["init", "--passphrase"]);
    assert_eq!(mode(&s.home), 0o700);
    assert!(!s.home.join("master.key").exists(), "no master key file with a passphrase");
    let ks = std::fs::read(s.home.join("keystore.json")).unwrap();
    assert!(!contains(&ks, PASS.as_bytes()));

    s.write("a.env", "A=secret-alpha\n");
    let out = s.cmd().args(["encrypt", "a.env"]).env("ENVSEAL_PASSPHRASE", PASS).output().unwrap();
    assert_success(&out, &["encrypt"]);
    let sealed = s.read("a.env");
    assert!(!contains(&sealed, b"secret-alpha"));
    let out = s.cmd().args(["decrypt", "a.env"]).env("ENVSEAL_PASSPHRASE", PASS).output().unwrap();
    assert_success(&out, &["decrypt"]);
    assert_eq!(out.stdout, b"A=secret-alpha\n");

    // Wrong passphrase: 14, and the message never echoes what was typed.
    let wrong = "wrong-passphrase-xyzzy";
    let out = s.cmd().args(["decrypt", "a.env", "--in-place"]).env("ENVSEAL_PASSPHRASE", wrong).output().unwrap();
    let err = assert_error(&out, 14, true);
    assert!(err.contains("passphrase"), "{err}");
    assert!(!err.contains(wrong) && !err.contains(PASS), "{err}");
    assert_eq!(s.read("a.env"), sealed);
    // No passphrase and no terminal: 14 with a hint, no prompt hanging. (Skipped when this
    // test runs inside a terminal: the prompt would open /dev/tty.)
    if std::fs::File::open("/dev/tty").is_err() {
        let err = s.fails(&["decrypt", "a.env"], 14);
        assert!(err.contains("ENVSEAL_PASSPHRASE"), "{err}");
    }
    // inspect needs no passphrase at all.
    assert_eq!(s.inspect("a.env")["keys"][0]["backend"], "local");
}
