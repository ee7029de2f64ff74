//! Runs every vector file in `testdata/vectors/` on every AEAD engine, and checks that the files
//! are exactly what the generator produces (the frozen known answers have not changed).

use std::path::PathBuf;

use envseal_core::Engine;
use envseal_vectors::{EXPECT_OK, Format, ReadMode, diff_dir, generate, load_dir};

fn dir() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../testdata/vectors"))
}

#[test]
fn every_vector_on_every_engine() {
    let vectors = load_dir(&dir()).expect("vector folder readable");
    assert!(vectors.len() >= 100, "only {} vectors found in {}", vectors.len(), dir().display());
    let mut failures = Vec::new();
    for (path, v) in &vectors {
        for &engine in Engine::ALL {
            let modes: &[ReadMode] = match v.format {
                Format::Container => &ReadMode::ALL,
                Format::Field | Format::Text | Format::Values => &[ReadMode::Slice],
            };
            for &mode in modes {
                let result = v.check_with(engine, mode);
                if let Err(e) = result {
                    failures.push(format!("{} [{} {mode:?}]: {e}", path.display(), engine.name()));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{} failure(s):\n{}", failures.len(), failures.join("\n"));
}

#[test]
fn both_engines_are_compiled_in() {
    let names: Vec<_> = Engine::ALL.iter().map(|e| e.name()).collect();
    assert_eq!(names, ["aws-lc", "rustcrypto"]);
}

#[test]
fn files_equal_the_generator_output() {
    let diff = diff_dir(&dir(), &generate::cases()).expect("vector folder readable");
    assert!(diff.is_clean(), "run `cargo run -p envseal-vectors --bin gen-vectors` after review: {diff}");
}

#[test]
fn coverage_of_outcomes() {
    let vectors = load_dir(&dir()).expect("vector folder readable");
    for (format, expected) in [
        (
            Format::Container,
            &[
                EXPECT_OK,
                "NotSealed",
                "UnsupportedVersion",
                "UnsupportedSuite",
                "LimitExceeded",
                "Malformed",
                "Truncated",
                "WrongContext",
                "CommitmentMismatch",
                "HeaderTampered",
                "ChunkTampered",
                "TruncatedBody",
                "TrailingData",
            ][..],
        ),
        (
            Format::Field,
            &[
                EXPECT_OK,
                "NotSealed",
                "UnsupportedVersion",
                "UnsupportedSuite",
                "LimitExceeded",
                "Malformed",
                "Truncated",
                "CommitmentMismatch",
                "ValueTampered",
            ][..],
        ),
        (Format::Text, &[EXPECT_OK, "NotSealed", "Malformed"][..]),
        (
            Format::Values,
            &[
                EXPECT_OK,
                "NotSealed",
                "UnsupportedVersion",
                "Malformed",
                "WrongContext",
                "CommitmentMismatch",
                "MacMismatch",
                "ValueTampered",
            ][..],
        ),
    ] {
        for name in expected {
            assert!(
                vectors.iter().any(|(_, v)| v.format == format && v.expect == *name),
                "no {format:?} vector expects {name}"
            );
        }
    }
}
