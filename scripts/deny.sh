#!/usr/bin/env bash
# Supply-chain checks with cargo deny (deny.toml): licences, banned crates, sources, and the
# RustSec advisories.
#
#   scripts/deny.sh          install cargo-deny if missing, then check
#
# Licences, bans and sources need nothing but Cargo.lock and always run. Advisories need the
# RustSec database, which cargo deny fetches from GitHub: where GitHub cannot be reached (this
# project's CI machine reaches only the package registries) the advisory check is reported
# loudly as SKIPPED instead of failing, unless ENVSEAL_REQUIRE_ADVISORIES=1.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v cargo-deny >/dev/null 2>&1; then
  echo "deny: installing cargo-deny (cargo install --locked)" >&2
  cargo install --locked cargo-deny >/dev/null
fi

cargo deny --log-level error check licenses bans sources

if cargo deny --log-level error fetch db >/dev/null 2>&1; then
  cargo deny --log-level error check advisories
else
  msg="SKIPPED: cargo deny advisories: the RustSec database could not be fetched from GitHub"
  if [ "${ENVSEAL_REQUIRE_ADVISORIES:-}" = 1 ]; then
    echo "$msg (ENVSEAL_REQUIRE_ADVISORIES=1)" >&2
    exit 1
  fi
  echo "$msg; licences, bans and sources were checked" >&2
fi
