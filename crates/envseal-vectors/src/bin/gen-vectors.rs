//! `gen-vectors`: writes envseal's test vectors to `testdata/vectors/` (the key-reference ones to
//! `testdata/vectors/keyref/`), or checks them.
//!
//! ```text
//! gen-vectors [--check] [--overwrite] [--dir PATH]
//! ```
//!
//! Every case is verified on every AEAD engine before anything is written. Without flags, missing
//! files are written and existing identical ones are left alone; a file whose bytes differ is a
//! frozen known answer that changed, so the run fails unless `--overwrite` is given. `--check`
//! writes nothing and fails if any file is missing, differs, or is not produced by the generator.

#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;
use std::{env, fs};

use envseal_vectors::{default_dir, diff_dir, generate};

struct Args {
    check: bool,
    overwrite: bool,
    dir: PathBuf,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args { check: false, overwrite: false, dir: default_dir() };
    let mut it = env::args().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--check" => args.check = true,
            "--overwrite" => args.overwrite = true,
            "--dir" => args.dir = it.next().ok_or("--dir needs a path")?.into(),
            "-h" | "--help" => {
                return Err("usage: gen-vectors [--check] [--overwrite] [--dir PATH]".into());
            }
            other => return Err(format!("unknown argument {other:?}; try --help")),
        }
    }
    if args.check && args.overwrite {
        return Err("--check and --overwrite exclude each other".into());
    }
    Ok(args)
}

fn run(args: &Args) -> Result<String, String> {
    let cases = generate::cases();
    generate::verify(&cases).map_err(|e| format!("generated vectors fail verification:\n{}", e.join("\n")))?;
    let diff = diff_dir(&args.dir, &cases).map_err(|e| format!("{}: {e}", args.dir.display()))?;
    if args.check {
        return if diff.is_clean() {
            Ok(format!("{} vectors match {}", diff.same, args.dir.display()))
        } else {
            Err(format!("vectors on disk differ from the generator: {diff}"))
        };
    }
    if !diff.changed.is_empty() && !args.overwrite {
        return Err(format!(
            "frozen vectors would change ({}): the format changed? Rerun with --overwrite only if that is intended",
            diff.changed.join(", ")
        ));
    }
    let mut written = 0;
    for case in &cases {
        if diff.missing.contains(&case.path) || diff.changed.contains(&case.path) {
            let path = args.dir.join(&case.path);
            if let Some(parent) = path.parent() {
                fs::create_dir_all(parent).map_err(|e| format!("{}: {e}", parent.display()))?;
            }
            fs::write(&path, case.vector.to_json()).map_err(|e| format!("{}: {e}", path.display()))?;
            written += 1;
        }
    }
    let mut report = format!("{written} written, {} unchanged in {}", diff.same, args.dir.display());
    if !diff.stale.is_empty() {
        report.push_str(&format!("; not produced by the generator (left in place): {}", diff.stale.join(", ")));
    }
    Ok(report)
}

fn main() -> ExitCode {
    // The key-reference vectors (FORMAT.md §11) live in `keyref/` and have their own generator
    // module (envseal_vectors::keyref).
    let result = parse_args().and_then(|a| {
        let main = run(&a)?;
        let keyref = envseal_vectors::keyref::generate_into(&a.dir.join("keyref"), a.check, a.overwrite)?;
        Ok(format!("{main}\n{keyref}"))
    });
    match result {
        Ok(report) => {
            println!("{report}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("gen-vectors: {e}");
            ExitCode::FAILURE
        }
    }
}
