#!/usr/bin/env bash
# A 1 GiB AWS Encryption SDK message, encrypted and decrypted by envseal and by the ESDK's own
# CLI (aws-encryption-cli) in the same run, same machine, same KMS (`envseal kms serve`, one
# AWS KMS key), files on tmpfs. Medians with min-max of the wall time, and peak RSS.
#
#   bash bench/esdk.sh             # 5 interleaved rounds (about 3 minutes)
#   bash bench/esdk.sh --quick     # 2 rounds
#   bash bench/esdk.sh --no-build  # measure the envseal already in $CARGO_TARGET_DIR/release
#
# Writes the table to bench/results/esdk.md (raw samples: bench/results/esdk.jsonl).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(dirname "$HERE")"
ROUNDS=5 BUILD=1
for arg in "$@"; do
  case "$arg" in
    --quick) ROUNDS=2 ;;
    --no-build) BUILD=0 ;;
    -h|--help) sed -n '2,10p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "esdk.sh: unknown argument: $arg (try --help)" >&2; exit 2 ;;
  esac
done
PY="${PYTHON:-python3}"
say() { printf '\n== %s\n' "$*" >&2; }

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target-bench}"
ENVSEAL="$CARGO_TARGET_DIR/release/envseal"
if [ "$BUILD" = 1 ]; then
  say "cargo build --release -p envseal-cli --features aws (CARGO_TARGET_DIR=$CARGO_TARGET_DIR)"
  (cd "$ROOT" && cargo build --release -p envseal-cli --features aws)
fi
[ -x "$ENVSEAL" ] || { echo "esdk.sh: no $ENVSEAL" >&2; exit 1; }

say "peers (bench/install-peers.sh)"
export ENVSEAL_PEERS="${ENVSEAL_PEERS:-${TMPDIR:-/tmp}/envseal-peers}"
PEER_VERSIONS="$(bash "$HERE/install-peers.sh")"
ESDK_CLI="$ENVSEAL_PEERS/bin/aws-encryption-cli"

# Scratch: a keystore-free envseal home, big files on tmpfs.
WORK="$(mktemp -d "${TMPDIR:-/tmp}/envseal-esdk-bench.XXXXXX")"
SHM_BASE=/dev/shm
if [ ! -d "$SHM_BASE" ] || [ "$(df -Pk "$SHM_BASE" | awk 'NR==2 {print $4}')" -lt $((4 << 20)) ]; then
  SHM_BASE="${TMPDIR:-/tmp}"
  echo "esdk.sh: /dev/shm missing or under 4 GiB free: files on $SHM_BASE (not tmpfs)" >&2
fi
SHM="$(mktemp -d "$SHM_BASE/envseal-esdk-bench.XXXXXX")"
SERVE_PID=""
cleanup() {
  [ -n "$SERVE_PID" ] && kill "$SERVE_PID" 2>/dev/null || true
  rm -rf "$WORK" "$SHM"
}
trap cleanup EXIT
for v in $(env | sed -n 's/^\(ENVSEAL_[A-Z_]*\)=.*/\1/p'); do
  [ "$v" = ENVSEAL_PEERS ] || unset "$v"
done
export ENVSEAL_HOME="$WORK/home"

# The KMS: envseal kms serve (in-memory backend), one key; both tools reach it as AWS KMS.
"$ENVSEAL" kms serve --port 0 >"$WORK/serve.out" 2>"$WORK/serve.log" &
SERVE_PID=$!
for _ in $(seq 100); do grep -q '^Ready' "$WORK/serve.out" 2>/dev/null && break; sleep 0.1; done
eval "$(grep '^export ' "$WORK/serve.out")"
export AWS_SHARED_CREDENTIALS_FILE=/dev/null AWS_CONFIG_FILE=/dev/null AWS_EC2_METADATA_DISABLED=true
KEY_ID="$(awk '/^ *key:/ {print $2; exit}' "$WORK/serve.out")"
ARN="arn:aws:kms:us-east-1:111122223333:key/$KEY_ID"
export ENVSEAL ESDK_CLI ARN

RESULTS="$HERE/results/esdk.jsonl"
mkdir -p "$HERE/results"
: >"$RESULTS"
say "1 GiB random file in $SHM: $ROUNDS interleaved rounds, one run of each per round, under /usr/bin/time"
head -c $((1 << 30)) /dev/urandom >"$SHM/data.bin"
t() {  # t OP TOOL OUTPUT -- CMD...
  local op="$1" tool="$2" out="$3"; shift 4
  "$PY" "$HERE/timeit.py" --section esdk --op "$op" --tool "$tool" --runs 1 --warmup 0 \
    --gnu-time --prep "rm -f '$out'" --cwd "$SHM" --out "$RESULTS" -- "$@"
}
verify() { cmp -s "$SHM/data.bin" "$1" || { echo "esdk.sh: $2: output DIFFERS from the input" >&2; exit 1; }; }
for ((round = 1; round <= ROUNDS; round++)); do
  echo "  round $round/$ROUNDS" >&2
  t encrypt "envseal esdk 0x0578 (signed)" "$SHM/e.esdk" -- "$ENVSEAL" encrypt data.bin --format esdk --kms "aws-kms:$ARN" -o e.esdk
  t decrypt "envseal esdk 0x0578 (signed)" "$SHM/e.out" -- "$ENVSEAL" decrypt e.esdk -o e.out
  [ "$round" = "$ROUNDS" ] && verify "$SHM/e.out" "envseal signed"
  rm -f "$SHM/e.out"
  t encrypt "envseal esdk 0x0478 (unsigned)" "$SHM/u.esdk" -- "$ENVSEAL" encrypt data.bin --format esdk --esdk-algorithm AES_256_GCM_HKDF_SHA512_COMMIT_KEY --kms "aws-kms:$ARN" -o u.esdk
  t decrypt "envseal esdk 0x0478 (unsigned)" "$SHM/u.out" -- "$ENVSEAL" decrypt u.esdk -o u.out
  [ "$round" = "$ROUNDS" ] && verify "$SHM/u.out" "envseal unsigned"
  rm -f "$SHM/u.esdk" "$SHM/u.out"
  t encrypt "aws-encryption-cli 0x0578 (signed)" "$SHM/c.esdk" -- "$ESDK_CLI" --encrypt --input data.bin --output c.esdk --wrapping-keys "key=$ARN" --metadata-output /dev/null
  t decrypt "aws-encryption-cli 0x0578 (signed)" "$SHM/c.out" -- "$ESDK_CLI" --decrypt --input c.esdk --output c.out --wrapping-keys "key=$ARN" --metadata-output /dev/null
  [ "$round" = "$ROUNDS" ] && verify "$SHM/c.out" "ESDK CLI"
  t decrypt "envseal reads the ESDK CLI's message" "$SHM/c2.out" -- "$ENVSEAL" decrypt c.esdk -o c2.out
  [ "$round" = "$ROUNDS" ] && verify "$SHM/c2.out" "envseal reading the ESDK CLI's message"
  rm -f "$SHM/c2.out"
  t decrypt "aws-encryption-cli reads envseal's message" "$SHM/x.out" -- "$ESDK_CLI" --decrypt --input e.esdk --output x.out --wrapping-keys "key=$ARN" --metadata-output /dev/null
  [ "$round" = "$ROUNDS" ] && verify "$SHM/x.out" "ESDK CLI reading envseal's message"
  rm -f "$SHM/c.out" "$SHM/x.out"
  t copy "cp (baseline)" "$SHM/copy.bin" -- cp data.bin copy.bin
  rm -f "$SHM/copy.bin"
done

say "results"
"$PY" - "$RESULTS" "$HERE/results/esdk.md" "$ROUNDS" "$PEER_VERSIONS" <<'PYEOF'
import json, os, platform, statistics, sys, datetime
res, out, rounds, versions = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
recs = [json.loads(l) for l in open(res) if l.strip()]
def cpu():
    try:
        return next(l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name"))
    except Exception:
        return platform.processor()
lines = [
    "# 1 GiB AWS Encryption SDK message: envseal vs aws-encryption-cli",
    "",
    f"{datetime.date.today()}, {os.cpu_count()} cores, {cpu()}, load {os.getloadavg()[0]:.2f}; `bash bench/esdk.sh`, "
    f"{rounds} interleaved rounds; KMS: `envseal kms serve`; files on tmpfs. Wall time median (min-max), peak RSS the largest of the runs.",
    "",
    "| operation | tool | median s | min-max s | GiB/s (median) | peak RSS MiB (max) |",
    "| --- | --- | --- | --- | --- | --- |",
]
for r in recs:
    secs = r["samples_s"]
    med = statistics.median(secs)
    rss_mib = f"{r['peak_rss_kib'] / 1024:.0f}" if r.get("peak_rss_kib") else "?"
    lines.append(f"| {r['op']} | {r['tool']} | {med:.2f} | {min(secs):.2f}-{max(secs):.2f} | {1 / med:.2f} | {rss_mib} |")
lines += ["", "Versions:", "", "```", versions.strip(), "```", ""]
open(out, "w").write("\n".join(lines))
print("\n".join(lines))
PYEOF
