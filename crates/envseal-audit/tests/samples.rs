//! The committed sample trail (testdata/audit) verifies with its key, and an edit is caught.

use std::path::PathBuf;

use envseal_audit::{AuditKey, ProblemKind, verify};

fn sample(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../testdata/audit").join(name)
}

#[test]
fn the_sample_verifies_and_an_edit_is_named() {
    let key = AuditKey::load(&sample("kms-serve.key")).unwrap();
    let log = std::fs::read(sample("kms-serve.log")).unwrap();
    let r = verify(&log[..], Some(&key));
    assert!(r.ok(), "{r}");
    assert!(r.records() > 50);
    let text = String::from_utf8(log).unwrap();
    let edited = text.replacen("\"outcome\":\"denied\"", "\"outcome\":\"success\"", 1);
    assert_ne!(edited, text);
    let r = verify(edited.as_bytes(), Some(&key));
    assert!(!r.ok());
    assert_eq!(r.problems()[0].kind, ProblemKind::Edited, "{r}");
}
