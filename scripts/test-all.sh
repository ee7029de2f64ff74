#!/usr/bin/env bash
# Runs every check and test of the workspace: the same command for a newcomer and for CI.
# Usage: scripts/test-all.sh
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*" >&2; }

step "format"
cargo fmt --all --check

step "clippy (all targets, all features, warnings denied)"
cargo clippy --workspace --all-targets --all-features --locked -- -D warnings

step "tests, both AEAD engines compiled in (every test runs against each)"
cargo test --workspace --all-features --locked

step "the core builds with the pure-Rust engine alone (no AWS-LC, no C compiler needed)"
cargo build -p envseal-core --no-default-features --features rustcrypto --locked
if cargo tree -p envseal-core --no-default-features --features rustcrypto -e normal --prefix none | grep -q '^aws-lc'; then
  echo "aws-lc found in the pure-Rust build" >&2
  exit 1
fi
