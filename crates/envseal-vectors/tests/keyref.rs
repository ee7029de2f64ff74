//! The key-reference vectors in `testdata/vectors/keyref/` (FORMAT.md §11): every file on every
//! AEAD engine, the files equal to the generator's output, and the coverage of outcomes.

use std::collections::BTreeSet;

use envseal_core::Engine;
use envseal_vectors::keyref::{self, Kind};

#[test]
fn every_keyref_vector_on_every_engine() {
    let vectors = keyref::load_dir(&keyref::default_dir()).expect("vector folder readable");
    assert!(vectors.len() >= 40, "only {} key-reference vectors", vectors.len());
    let mut failures = Vec::new();
    for (path, v) in &vectors {
        for &engine in Engine::ALL {
            if let Err(e) = v.check(engine) {
                failures.push(format!("{path} [{}]: {e}", engine.name()));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn keyref_files_equal_the_generator_output() {
    let diff = keyref::diff_dir(&keyref::default_dir(), &keyref::cases()).unwrap();
    assert!(diff.is_clean(), "run `cargo run -p envseal-vectors --bin gen-vectors` after review: {diff}");
}

#[test]
fn keyref_coverage() {
    let vectors = keyref::load_dir(&keyref::default_dir()).unwrap();
    let outcomes =
        |k: Kind| vectors.iter().filter(|(_, v)| v.kind == k).map(|(_, v)| v.expect.as_str()).collect::<BTreeSet<_>>();
    for want in
        ["ok", "NotSealed", "UnsupportedVersion", "Truncated", "CommitmentMismatch", "ValueTampered", "LimitExceeded"]
    {
        assert!(outcomes(Kind::Value).contains(want), "no value vector expects {want}");
    }
    assert!(outcomes(Kind::Index).contains("ok") && outcomes(Kind::Index).contains("InvalidInput"));
    assert!(outcomes(Kind::Vault).contains("ok") && outcomes(Kind::Vault).contains("ValueTampered"));
    // The documented overhead: 29 bytes.
    let (_, v) = vectors.iter().find(|(p, _)| p == "value/ok_64_bytes_pk_42.json").unwrap();
    assert_eq!(v.sealed.as_ref().unwrap().len(), 64 + 29);
}
