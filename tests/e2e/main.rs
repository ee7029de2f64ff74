//! End-to-end tests of the `envseal` binary: every test runs the real binary in its own sandbox
//! (temp dir, keystore, TMPDIR), with the settings of the developer's environment scrubbed.
//!
//! Tests marked `#[ignore = "bug: ..."]` pin product bugs found while writing this suite: they
//! fail today and should pass once the bug is fixed (`cargo test -p envseal-cli --test e2e --
//! --ignored`).

mod cli_surface;
mod config;
mod edit;
mod errors;
mod governance;
mod inspect;
mod keys;
mod keystore;
mod passphrase;
mod perms;
mod roundtrip;
mod run;
mod safety;
mod secrecy;
mod tamper;
mod trust;
mod util;
mod values;
mod yaml;
