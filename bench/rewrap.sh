#!/usr/bin/env bash
# Rewrap at scale (issue 7): N small sealed .env files, local keystore.
#
#   bash bench/rewrap.sh                # N=10000 files, sops on SOPS_N=200 files
#   N=2000 SOPS_N=100 JOBS="1 8" bash bench/rewrap.sh
#   ENVSEAL=/path/to/envseal bash bench/rewrap.sh    # skip the release build
#
# 1. Builds the release binary (unless $ENVSEAL is set), creates a private keystore and seals N
#    small .env files with `envseal encrypt`, one process per file.
# 2. For each --jobs value in $JOBS (default "1 8 32"): rotates the key (`envseal keys rotate`), then
#    times `envseal rewrap -r DIR --to-latest --jobs J` over all N files (a fresh journal each time),
#    and checks the summary says N rewrapped, 0 failed.
# 3. If sops and age are available (bench/install-peers.sh installs them from the registries into
#    $ENVSEAL_PEERS, default /tmp/envseal-peers), encrypts SOPS_N copies of the same plaintext .env
#    files with sops+age and times a loop of `sops rotate -i` over them (one process per file, as a
#    rotation script would), and extrapolates per file.
# 4. Prints per-file times and the ratio sops / envseal.
#
# Files live in $BENCH_DIR (default: a new directory under ${TMPDIR:-/tmp}); each rewrap fsyncs
# every file, its directory and the journal, so the figures depend on the filesystem.
set -euo pipefail
cd "$(dirname "$0")/.."

N="${N:-10000}"
SOPS_N="${SOPS_N:-200}"
JOBS="${JOBS:-1 8 32}"
PEERS="${ENVSEAL_PEERS:-${TMPDIR:-/tmp}/envseal-peers}"
BENCH_DIR="${BENCH_DIR:-$(mktemp -d "${TMPDIR:-/tmp}/envseal-rewrap-bench.XXXXXX")}"
log() { echo "bench/rewrap: $*" >&2; }
now() { date +%s.%N; }
# Milliseconds between two `now` stamps.
ms() { echo "$1 $2" | awk '{printf "%.1f", ($2 - $1) * 1000}'; }

if [ -z "${ENVSEAL:-}" ]; then
  log "building the release binary"
  cargo build --release -q -p envseal-cli
  ENVSEAL="${CARGO_TARGET_DIR:-target}/release/envseal"
fi
ENVSEAL="$(cd "$(dirname "$ENVSEAL")" && pwd)/$(basename "$ENVSEAL")"

export ENVSEAL_HOME="$BENCH_DIR/home"
unset ENVSEAL_KMS ENVSEAL_KEY ENVSEAL_MASTER_KEY_FILE ENVSEAL_PASSPHRASE
mkdir -p "$ENVSEAL_HOME" "$BENCH_DIR/plain" "$BENCH_DIR/files"
chmod 700 "$ENVSEAL_HOME"
"$ENVSEAL" init >/dev/null 2>&1 || true

log "writing and sealing $N .env files in $BENCH_DIR/files"
t0=$(now)
for ((i = 0; i < N; i++)); do
  printf 'DB_HOST=db%d.internal\nDB_PASSWORD=pw-%08d-secret\nAPI_KEY=sk_live_%032d\n# comment\nPORT=%d\n' \
    "$i" "$i" "$i" "$((5000 + i % 1000))" >"$BENCH_DIR/plain/f$i.env"
done
cp "$BENCH_DIR"/plain/*.env "$BENCH_DIR/files/" 2>/dev/null ||
  find "$BENCH_DIR/plain" -name '*.env' -exec cp -t "$BENCH_DIR/files/" {} +
find "$BENCH_DIR/files" -name '*.env' -print0 | xargs -0 -n 1 -P "$(nproc)" "$ENVSEAL" encrypt 2>/dev/null
log "sealed $N files in $(ms "$t0" "$(now)") ms"

declare -A PER_FILE
for j in $JOBS; do
  "$ENVSEAL" keys rotate alias/default 2>/dev/null
  journal="$BENCH_DIR/journal-$j.jsonl"
  rm -f "$journal"
  t0=$(now)
  "$ENVSEAL" rewrap -r "$BENCH_DIR/files" --to-latest --jobs "$j" --journal "$journal" --json >"$BENCH_DIR/summary-$j.json"
  t1=$(now)
  total_ms=$(ms "$t0" "$t1")
  read -r rewrapped failed < <(python3 -c 'import json,sys; v=json.load(open(sys.argv[1])); print(v["rewrapped"], v["failed"])' "$BENCH_DIR/summary-$j.json")
  if [ "$rewrapped" != "$N" ] || [ "$failed" != 0 ]; then
    log "unexpected summary for --jobs $j: rewrapped $rewrapped, failed $failed"
    exit 1
  fi
  PER_FILE[$j]=$(echo "$total_ms $N" | awk '{printf "%.4f", $1 / $2}')
  printf 'envseal rewrap --jobs %-3s %6d files  %9.1f ms total  %7.4f ms/file  %8.0f files/s\n' \
    "$j" "$N" "$total_ms" "${PER_FILE[$j]}" "$(echo "$total_ms $N" | awk '{print $2 / ($1 / 1000)}')"
done
# The files open after all the runs (sample).
"$ENVSEAL" decrypt "$BENCH_DIR/files/f0.env" >/dev/null
"$ENVSEAL" decrypt "$BENCH_DIR/files/f$((N - 1)).env" >/dev/null

SOPS="$PEERS/bin/sops"
AGE_KEYGEN="$PEERS/bin/age-keygen"
if [ ! -x "$SOPS" ] && [ -f bench/install-peers.sh ]; then
  log "installing sops and age with bench/install-peers.sh"
  ENVSEAL_PEERS="$PEERS" bash bench/install-peers.sh >/dev/null || true
fi
if [ -x "$SOPS" ] && [ -x "$AGE_KEYGEN" ]; then
  mkdir -p "$BENCH_DIR/sops"
  "$AGE_KEYGEN" -o "$BENCH_DIR/age.key" 2>/dev/null
  export SOPS_AGE_KEY_FILE="$BENCH_DIR/age.key"
  recipient=$(grep -o 'age1[0-9a-z]*' "$BENCH_DIR/age.key" | head -1)
  for ((i = 0; i < SOPS_N; i++)); do
    "$SOPS" encrypt --age "$recipient" --input-type dotenv --output-type dotenv \
      "$BENCH_DIR/plain/f$i.env" >"$BENCH_DIR/sops/f$i.env"
  done
  t0=$(now)
  for ((i = 0; i < SOPS_N; i++)); do
    "$SOPS" rotate -i --input-type dotenv --output-type dotenv "$BENCH_DIR/sops/f$i.env" 2>/dev/null
  done
  t1=$(now)
  sops_ms=$(ms "$t0" "$t1")
  sops_per=$(echo "$sops_ms $SOPS_N" | awk '{printf "%.4f", $1 / $2}')
  "$SOPS" decrypt "$BENCH_DIR/sops/f0.env" >/dev/null
  printf 'sops rotate -i (age)    %6d files  %9.1f ms total  %7.4f ms/file  (extrapolated to %d files: %.1f s)\n' \
    "$SOPS_N" "$sops_ms" "$sops_per" "$N" "$(echo "$sops_per $N" | awk '{print $1 * $2 / 1000}')"
  for j in $JOBS; do
    printf 'ratio sops / envseal --jobs %-3s %8.1fx\n' "$j" "$(echo "$sops_per ${PER_FILE[$j]}" | awk '{print $1 / $2}')"
  done
  echo "sops $("$SOPS" --version --disable-version-check 2>/dev/null | head -1 | awk '{print $2}')"
else
  log "sops/age not available: skipped the comparison (bash bench/install-peers.sh installs them)"
fi
echo "machine: $(nproc) cores, files on $(df -T "$BENCH_DIR" | awk 'NR==2 {print $2}') ($BENCH_DIR)"
[ -n "${KEEP:-}" ] || rm -rf "$BENCH_DIR"
