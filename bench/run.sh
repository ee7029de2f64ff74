#!/usr/bin/env bash
# envseal against its peers, in one run on this machine. See bench/README.md.
#
#   bash bench/run.sh            # full run (a few minutes; dotenvx alone takes ~2)
#   bash bench/run.sh --quick    # fewer repetitions
#   bash bench/run.sh --huge     # also a 10 GiB sparse file through envseal (peak RSS stays flat)
#
# Other flags: --no-build (use the binary already in $CARGO_TARGET_DIR), --no-dotenvx (skip the
# slowest peer), --keep (leave the temp directories). Prints one table and writes it, with the
# machine and the tool versions, to bench/results/latest.md.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(dirname "$HERE")"
QUICK=0 HUGE=0 BUILD=1 DOTENVX=1 KEEP=0
for arg in "$@"; do
  case "$arg" in
    --quick) QUICK=1 ;;
    --huge) HUGE=1 ;;
    --no-build) BUILD=0 ;;
    --no-dotenvx) DOTENVX=0 ;;
    --keep) KEEP=1 ;;
    -h|--help) sed -n '2,10p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "run.sh: unknown argument: $arg (try --help)" >&2; exit 2 ;;
  esac
done

# Repetitions. Medians and minimums are reported: the machine is shared, so single runs mean little.
if [ "$QUICK" = 1 ]; then
  ENV_RUNS=10 ENV_ROUNDS=2 ENV_WARMUP=1 DX_RUNS=1 FILE_RUNS=3 FILE_WARMUP=1
else
  ENV_RUNS=40 ENV_ROUNDS=5 ENV_WARMUP=2 DX_RUNS=2 FILE_RUNS=5 FILE_WARMUP=1
fi
GIB=$((1 << 30))
BIG_ENV="$ROOT/testdata/dotenv/big.env"
PY="${PYTHON:-python3}"
TIMEIT=("$PY" "$HERE/timeit.py")
REPORT=("$PY" "$HERE/report.py")
say() { printf '\n== %s\n' "$*" >&2; }

# --- 1. Build envseal, install the peers -------------------------------------------------------
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target-bench}"
ENVSEAL="$CARGO_TARGET_DIR/release/envseal"
if [ "$BUILD" = 1 ]; then
  say "cargo build --release -p envseal-cli (CARGO_TARGET_DIR=$CARGO_TARGET_DIR)"
  (cd "$ROOT" && cargo build --release -p envseal-cli) || {
    echo "run.sh: the release build failed; fix it, or pass --no-build to measure the binary already in $CARGO_TARGET_DIR" >&2
    exit 1
  }
fi
[ -x "$ENVSEAL" ] || { echo "run.sh: no $ENVSEAL (run without --no-build)" >&2; exit 1; }

say "peers (bench/install-peers.sh)"
export ENVSEAL_PEERS="${ENVSEAL_PEERS:-${TMPDIR:-/tmp}/envseal-peers}"
PEER_VERSIONS="$(bash "$HERE/install-peers.sh")"
echo "$PEER_VERSIONS" >&2
export PATH="$ENVSEAL_PEERS/bin:$PATH"
SOPS="$ENVSEAL_PEERS/bin/sops" AGE="$ENVSEAL_PEERS/bin/age" DOTENVX_BIN="$ENVSEAL_PEERS/bin/dotenvx"
ESDK="$ENVSEAL_PEERS/bin/aws-encryption-cli" MOTO="$ENVSEAL_PEERS/bin/moto_server" PEERS_PY="$ENVSEAL_PEERS/venv/bin/python"

# The AWS Encryption SDK CLI needs an AWS KMS: moto on a free local port, one symmetric key.
MOTO_PORT="$("$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
"$MOTO" -H 127.0.0.1 -p "$MOTO_PORT" >/dev/null 2>&1 &
MOTO_PID=$!
trap 'kill "$MOTO_PID" 2>/dev/null || true' EXIT
export AWS_ENDPOINT_URL="http://127.0.0.1:$MOTO_PORT" AWS_ACCESS_KEY_ID=bench AWS_SECRET_ACCESS_KEY=bench \
  AWS_DEFAULT_REGION=us-east-1 AWS_REGION=us-east-1
for _ in $(seq 50); do curl -s -o /dev/null "$AWS_ENDPOINT_URL" && break; sleep 0.2; done
ESDK_KEY="$("$PEERS_PY" -c 'import boto3; print(boto3.client("kms").create_key()["KeyMetadata"]["Arn"])')"
esdk() {  # esdk encrypt|decrypt IN OUT
  "$ESDK" "--$1" --input "$2" --output "$3" --wrapping-keys "key=$ESDK_KEY" --metadata-output /dev/null
}
export -f esdk
export ESDK ESDK_KEY

# --- Scratch space: .env work on the normal temp dir, big files on tmpfs ------------------------
WORK="$(mktemp -d "${TMPDIR:-/tmp}/envseal-bench.XXXXXX")"
SHM=""
cleanup() {
  if [ "$KEEP" = 1 ]; then echo "run.sh: kept $WORK ${SHM:-}" >&2; return; fi
  rm -rf "$WORK"
  [ -z "$SHM" ] || rm -rf "$SHM"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
RESULTS="$WORK/results.jsonl" NOTES="$WORK/notes.txt"
: >"$RESULTS"; : >"$NOTES"
note() { echo "$*" >>"$NOTES"; echo "  note: $*" >&2; }

# A fresh keystore (mode 0700, created before anything is timed) and a fresh age key for sops.
unset ENVSEAL_KMS ENVSEAL_KEY ENVSEAL_MASTER_KEY_FILE ENVSEAL_PASSPHRASE
export ENVSEAL_HOME="$WORK/envseal-home"
mkdir -m 0700 "$ENVSEAL_HOME"
"$ENVSEAL" init >&2
age-keygen -o "$WORK/age.key" 2>/dev/null
AGE_RECIPIENT="$(age-keygen -y "$WORK/age.key")"
export SOPS_AGE_KEY_FILE="$WORK/age.key"

# How busy the machine is: load average, and CPU pressure (share of the last 60 s in which some task
# waited for a CPU), where the kernel has PSI.
busy() {
  local psi
  psi="$(awk '/^some/ {sub("avg60=", "", $3); print $3 "%"}' /proc/pressure/cpu 2>/dev/null || true)"
  echo "load $(cut -d' ' -f1-3 /proc/loadavg)${psi:+, CPU pressure (some, 60 s) $psi}"
}
LOAD_START="$(busy)"

# --- 2. .env with 1000 values -------------------------------------------------------------------
# Each tool works on its own copy in its own directory (dotenvx writes .env.keys beside it).
# Commands, per tool, as functions of the directory's plaintext `.env`:
#   envseal: encrypt in place (atomic replace: temp file, fsync, rename, fsync of the directory; the
#            row the target is checked on), and also to stdout (`-o -`, what sops does, no fsync);
#            decrypt to stdout; run.
#   sops:    encrypt to stdout (into sealed.env), decrypt to stdout, exec-env.
#   dotenvx: encrypt in place, decrypt --stdout, run.
# `run`'s child is `true`; stdout of every decrypt goes to /dev/null.
enc_cmd() {
  case "$1" in
    envseal) echo "$ENVSEAL encrypt .env" ;;
    sops) echo "$SOPS -e --age $AGE_RECIPIENT --input-type dotenv --output-type dotenv .env" ;;
    dotenvx) echo "$DOTENVX_BIN encrypt -f .env" ;;
  esac
}
sealed_name() { case "$1" in sops) echo sealed.env ;; *) echo .env ;; esac; }
enc_stdout() { case "$1" in sops) echo sealed.env ;; *) echo /dev/null ;; esac; }
dec_cmd() {
  case "$1" in
    envseal) echo "$ENVSEAL decrypt .env" ;;
    sops) echo "$SOPS -d --input-type dotenv --output-type dotenv sealed.env" ;;
    dotenvx) echo "$DOTENVX_BIN decrypt -f .env --stdout" ;;
  esac
}
run_cmd() {  # run_cmd TOOL CHILD...
  local t="$1"; shift
  case "$t" in
    envseal) echo "$ENVSEAL run -f .env -- $*" ;;
    sops) echo "$SOPS exec-env sealed.env '$*'" ;;   # sops takes the command as one string
    dotenvx) echo "$DOTENVX_BIN run -f .env -- $*" ;;
  esac
}

# A file of plain KEY=value lines derived from big.env (no quotes, comments or specials), for a
# tool that rejects big.env itself. Still 1000 values.
derive_plain_env() {
  "$PY" - "$BIG_ENV" "$1" <<'PYEOF'
import re, sys
src, dst = sys.argv[1], sys.argv[2]
out = []
for line in open(src, encoding="utf-8"):
    m = re.match(r"([A-Za-z_][A-Za-z0-9_]*)=(.*)$", line.rstrip("\n"))
    if not m:
        continue
    value = m.group(2)
    q = value[:1]
    if q in ("'", '"') and q in value[1:]:
        value = value[1:value.rindex(q)]          # the quoted part; drops a trailing comment
    else:
        value = re.sub(r"\s+#.*$", "", value)      # unquoted: drop a trailing comment
    # Same length, only characters no .env dialect treats specially.
    out.append(f"{m.group(1)}={re.sub(r'[^A-Za-z0-9_./:+=@?-]', 'x', value)}\n")
open(dst, "w", encoding="utf-8").writelines(out)
PYEOF
}

# check TOOL INPUT: one encrypt, decrypt and run (child dumps its environment), untimed. Fails if
# the tool rejects the input (non-zero exit anywhere).
check_tool() {
  local t="$1" input="$2" d="$WORK/env-$1"
  rm -rf "$d"; mkdir -p "$d"; cp "$input" "$d/.env"
  (cd "$d" && eval "$(enc_cmd "$t")" >"$(enc_stdout "$t")" 2>"$WORK/$t.check.err") &&
    (cd "$d" && eval "$(dec_cmd "$t")" >"$WORK/$t.decrypted" 2>>"$WORK/$t.check.err") &&
    (cd "$d" && export DUMP_TO="$WORK/$t.env0" && eval "$(run_cmd "$t" "$WORK/dump-env.sh")" >/dev/null 2>>"$WORK/$t.check.err")
}
# The child of the checking `run`: writes its environment, NUL-separated, to $DUMP_TO.
printf '#!/bin/sh\nexec env -0 >"$DUMP_TO"\n' >"$WORK/dump-env.sh"
chmod +x "$WORK/dump-env.sh"

ENV_TOOLS=(envseal sops)
[ "$DOTENVX" = 1 ] && ENV_TOOLS+=(dotenvx)
declare -A INPUT INPUT_NOTE
say ".env with $(grep -c '^[A-Za-z_]' "$BIG_ENV") values ($BIG_ENV): does each tool accept it?"
for t in "${ENV_TOOLS[@]}"; do
  INPUT[$t]="$BIG_ENV"; INPUT_NOTE[$t]=""
  if ! check_tool "$t" "$BIG_ENV"; then
    note "$t rejects big.env: $(head -c 300 "$WORK/$t.check.err" | tr '\n' ' ')"
    derive_plain_env "$WORK/plain.env"
    if check_tool "$t" "$WORK/plain.env"; then
      INPUT[$t]="$WORK/plain.env"
      INPUT_NOTE[$t]="rejected big.env; measured on a derived file of 1000 plain KEY=value lines (no quotes, comments or special characters)"
      note "$t: using the derived plain file instead"
    else
      note "$t rejects the derived plain file too: skipped"
      INPUT[$t]=""
    fi
  fi
done
for t in "${ENV_TOOLS[@]}"; do
  [ -n "${INPUT[$t]}" ] || continue
  if [ "$t" = envseal ]; then
    note "envseal accepts big.env (encrypt, decrypt, run: exit 0); decrypt gives back big.env byte for byte: $(cmp -s "$WORK/envseal.decrypted" "$BIG_ENV" && echo yes || echo NO)"
  elif [ -z "${INPUT_NOTE[$t]}" ]; then
    if cmp -s "$WORK/$t.decrypted" "$BIG_ENV"; then same="gives back big.env byte for byte"
    else same="differs from big.env in $({ diff "$WORK/$t.decrypted" "$BIG_ENV" || true; } | grep -c '^[<>]' || true) lines (diff's count)"; fi
    note "$t accepts big.env (encrypt, decrypt, run: exit 0); its decrypt $same; its run: $("${REPORT[@]}" compare-env "$WORK/envseal.env0" "$WORK/$t.env0")"
  fi
done

bench_env() {  # bench_env TOOL RUNS WARMUP [timeit flags...]
  local t="$1" runs="$2" warm="$3"; shift 3
  local d="$WORK/env-$t" in="${INPUT[$t]}" n="${INPUT_NOTE[$t]}"
  [ -n "$in" ] || return 0
  # encrypt: a fresh plaintext copy before every run (untimed).
  local prep="cp '$in' .env"
  [ "$t" = sops ] && prep="$prep; rm -f sealed.env"
  if [ "$t" = envseal ]; then
    # First (it leaves .env in clear): the same work as sops's encrypt: sealed file to stdout (redirected to a file), no fsync.
    "${TIMEIT[@]}" --section env --op "encrypt to stdout" --tool "$t" --runs "$runs" --warmup "$warm" "$@" \
      --prep "$prep" --cwd "$d" --stdout sealed-stdout.env --note "$n" --out "$RESULTS" \
      -- "$ENVSEAL" encrypt .env -o -
  fi
  # In place, last: it leaves .env sealed for decrypt and run.
  # shellcheck disable=SC2046
  "${TIMEIT[@]}" --section env --op encrypt --tool "$t" --runs "$runs" --warmup "$warm" "$@" \
    --prep "$prep" --cwd "$d" --stdout "$(enc_stdout "$t")" --note "$n" --out "$RESULTS" \
    -- $(enc_cmd "$t")
  # shellcheck disable=SC2046
  "${TIMEIT[@]}" --section env --op decrypt --tool "$t" --runs "$runs" --warmup "$warm" "$@" \
    --cwd "$d" --note "$n" --out "$RESULTS" -- $(dec_cmd "$t")
  if [ "$t" = sops ]; then
    "${TIMEIT[@]}" --section env --op run --tool "$t" --runs "$runs" --warmup "$warm" "$@" \
      --cwd "$d" --note "$n" --out "$RESULTS" -- "$SOPS" exec-env sealed.env true
  else
    # shellcheck disable=SC2046
    "${TIMEIT[@]}" --section env --op run --tool "$t" --runs "$runs" --warmup "$warm" "$@" \
      --cwd "$d" --note "$n" --out "$RESULTS" -- $(run_cmd "$t" true)
  fi
}
# envseal and sops run in rounds, interleaved (envseal, sops, envseal, sops, ...), so that a change
# in the machine's load falls on both alike; each round has its own warm-up runs.
say ".env timings (envseal, sops: $ENV_ROUNDS rounds of $((ENV_RUNS / ENV_ROUNDS)) runs, each after $ENV_WARMUP warm-up)"
for ((round = 1; round <= ENV_ROUNDS; round++)); do
  echo "  round $round/$ENV_ROUNDS" >&2
  bench_env envseal $((ENV_RUNS / ENV_ROUNDS)) "$ENV_WARMUP"
  bench_env sops $((ENV_RUNS / ENV_ROUNDS)) "$ENV_WARMUP"
done
if [ "$DOTENVX" = 1 ]; then
  # ~10-15 s a call here: a few runs, no warm-up beyond the acceptance check, every run under
  # /usr/bin/time (its ~1 ms is noise at this scale).
  say ".env timings (dotenvx: $DX_RUNS runs, ~15 s each)"
  bench_env dotenvx "$DX_RUNS" 0 --gnu-time
else
  note "dotenvx skipped (--no-dotenvx)"
fi

# --- 3. 1 GiB random file on tmpfs ----------------------------------------------------------------
SHM_BASE=/dev/shm
avail_kib() { df -Pk "$1" 2>/dev/null | awk 'NR==2 {print $4}'; }
if [ ! -d "$SHM_BASE" ] || [ "$(avail_kib "$SHM_BASE")" -lt $((4 << 20)) ]; then
  SHM_BASE="${TMPDIR:-/tmp}"
  note "/dev/shm missing or under 4 GiB free: big files on $SHM_BASE instead (not tmpfs)"
fi
SHM="$(mktemp -d "$SHM_BASE/envseal-bench.XXXXXX")"
say "1 GiB random file in $SHM ($FILE_RUNS rounds of one run each, after $FILE_WARMUP warm-up, under /usr/bin/time)"
head -c "$GIB" /dev/urandom >"$SHM/data.bin"
bench_file() {  # bench_file OP TOOL WARMUP OUTPUT -- CMD...
  local op="$1" t="$2" warm="$3" out="$4"; shift 5
  "${TIMEIT[@]}" --section file --op "$op" --tool "$t" --runs 1 --warmup "$warm" \
    --gnu-time --prep "rm -f '$out'" --cwd "$SHM" --out "$RESULTS" -- "$@"
}
verify() {  # verify ORIGINAL COPY WHAT
  if cmp -s "$1" "$2"; then echo "  $3: round trip verified" >&2
  else note "$3: output DIFFERS from the input"; fi
}
# One run of each per round, interleaved; warm-up runs in the first round only. Outputs are removed
# as soon as they are no longer needed (3 GiB of tmpfs at most); the last round checks the round trips.
for ((round = 1; round <= FILE_RUNS; round++)); do
  echo "  round $round/$FILE_RUNS" >&2
  w=0; [ "$round" = 1 ] && w="$FILE_WARMUP"
  bench_file copy cp "$w" "$SHM/copy.bin" -- cp data.bin copy.bin
  rm -f "$SHM/copy.bin"
  bench_file encrypt envseal "$w" "$SHM/data.sealed" -- "$ENVSEAL" encrypt data.bin -o data.sealed
  bench_file decrypt envseal "$w" "$SHM/data.out" -- "$ENVSEAL" decrypt data.sealed -o data.out
  [ "$round" = "$FILE_RUNS" ] && verify "$SHM/data.bin" "$SHM/data.out" "envseal 1 GiB"
  rm -f "$SHM/data.sealed" "$SHM/data.out"
  bench_file encrypt age "$w" "$SHM/data.age" -- "$AGE" -r "$AGE_RECIPIENT" -o data.age data.bin
  bench_file decrypt age "$w" "$SHM/data.out" -- "$AGE" -d -i "$WORK/age.key" -o data.out data.age
  [ "$round" = "$FILE_RUNS" ] && verify "$SHM/data.bin" "$SHM/data.out" "age 1 GiB"
  rm -f "$SHM/data.age" "$SHM/data.out"
  bench_file encrypt esdk "$w" "$SHM/data.esdk" -- bash -c 'esdk encrypt data.bin data.esdk'
  bench_file decrypt esdk "$w" "$SHM/data.out" -- bash -c 'esdk decrypt data.esdk data.out'
  [ "$round" = "$FILE_RUNS" ] && verify "$SHM/data.bin" "$SHM/data.out" "ESDK CLI 1 GiB"
  rm -f "$SHM/data.esdk" "$SHM/data.out"
done
rm -f "$SHM"/*

# --- 3b. Throughput by size: envseal, age, ESDK CLI on 1, 16 and 128 MiB (1 GiB: section 3) ------
say "throughput by file size: 1, 16, 128 MiB ($FILE_RUNS runs each)"
for mib in 1 16 128; do
  head -c $((mib << 20)) /dev/urandom >"$SHM/s.bin"
  sz() {  # sz OP TOOL OUT -- CMD...
    local op="$1" t="$2" out="$3"; shift 4
    "${TIMEIT[@]}" --section sizes --op "$op $mib MiB" --tool "$t" --runs "$FILE_RUNS" --warmup 1 \
      --prep "rm -f '$out'" --cwd "$SHM" --out "$RESULTS" -- "$@"
  }
  sz encrypt envseal "$SHM/s.sealed" -- "$ENVSEAL" encrypt s.bin -o s.sealed
  sz decrypt envseal "$SHM/s.out" -- "$ENVSEAL" decrypt s.sealed -o s.out
  sz encrypt age "$SHM/s.age" -- "$AGE" -r "$AGE_RECIPIENT" -o s.age s.bin
  sz decrypt age "$SHM/s.out" -- "$AGE" -d -i "$WORK/age.key" -o s.out s.age
  sz encrypt esdk "$SHM/s.esdk" -- bash -c 'esdk encrypt s.bin s.esdk'
  sz decrypt esdk "$SHM/s.out" -- bash -c 'esdk decrypt s.esdk s.out'
  rm -f "$SHM"/s.*
done
"$PEERS_PY" "$HERE/plot.py" "$RESULTS" "$ROOT/docs/perf-throughput.png" || note "the throughput plot could not be drawn"

# --- Optional: 10 GiB sparse file, envseal only, streamed through a pipe --------------------------
if [ "$HUGE" = 1 ]; then
  say "10 GiB sparse-ish file: envseal encrypt | envseal decrypt | cmp (one run)"
  # Holes cost no memory on tmpfs; a random MiB at the start and at the end keeps it honest.
  truncate -s $((10 * GIB)) "$SHM/huge.bin"
  head -c $((1 << 20)) /dev/urandom | dd of="$SHM/huge.bin" conv=notrunc status=none
  head -c $((1 << 20)) /dev/urandom | dd of="$SHM/huge.bin" bs=1M seek=$((10 * 1024 - 1)) conv=notrunc status=none
  # Nothing sealed or decrypted reaches the disk: each process streams. Peak RSS is the largest of
  # the pipeline's processes (bash, both envseals, cmp), as /usr/bin/time reports for `bash -c`.
  "${TIMEIT[@]}" --section huge --op "encrypt | decrypt | cmp" --tool envseal --runs 1 --gnu-time \
    --cwd "$SHM" --out "$RESULTS" \
    --note "one pipeline: envseal encrypt huge.bin -o - | envseal decrypt - -o - | cmp - huge.bin; peak RSS is the largest process in it" \
    -- bash -c "set -o pipefail; '$ENVSEAL' encrypt --format binary huge.bin -o - | '$ENVSEAL' decrypt - -o - | cmp - huge.bin"
  rm -f "$SHM/huge.bin"
fi

LOAD_END="$(busy)"

# --- 4. Report ----------------------------------------------------------------------------------
{
  echo "envseal $("$ENVSEAL" --version | awk '{print $2}') (release build of $(date -u -r "$ENVSEAL" '+%Y-%m-%d %H:%M UTC')$([ "$BUILD" = 0 ] && echo ', not rebuilt: --no-build'); work tree at run time: $(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null || echo '?')$(cd "$ROOT" && [ -n "$(git status --porcelain 2>/dev/null)" ] && echo ', uncommitted changes'))"
  echo "$PEER_VERSIONS" | grep -v '^ENVSEAL_PEERS='
  echo "cp $(cp --version | head -1 | awk '{print $NF}') (GNU coreutils)"
  echo "python $("$PY" -c 'import platform; print(platform.python_version())') (timing harness)"
} >"$WORK/versions.txt"
MODE=full; [ "$QUICK" = 1 ] && MODE=quick
mkdir -p "$HERE/results"
say "results"
"${REPORT[@]}" table --results "$RESULTS" --versions "$WORK/versions.txt" --notes "$NOTES" \
  --setting "mode=$MODE (.env: $ENV_RUNS runs in $ENV_ROUNDS interleaved rounds, each after $ENV_WARMUP warm-up; dotenvx $DX_RUNS; 1 GiB: $FILE_RUNS interleaved rounds after $FILE_WARMUP warm-up)" \
  --setting "how busy (load average 1, 5, 15 min)=$LOAD_START at the start; $LOAD_END at the end" \
  --setting "big files on=$SHM_BASE ($(df -P "$SHM_BASE" | awk 'NR==2 {print $1}'))" \
  --markdown "$HERE/results/latest.md"
cp "$RESULTS" "$HERE/results/latest.jsonl"
echo >&2
echo "written: bench/results/latest.md, bench/results/latest.jsonl" >&2
