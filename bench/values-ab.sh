#!/usr/bin/env bash
# Value-level files, before and after: two envseal binaries on the same .env with 1000 values
# (testdata/dotenv/big.env), interleaved round by round so that a change in the machine's load
# hits both alike. Medians and min-max from bench/timeit.py.
#
#   bench/values-ab.sh OLD_BINARY NEW_BINARY [ROUNDS]
#
# Each binary gets its own keystore. Operations: encrypt (in place, from the plaintext), decrypt
# (to stdout), run (secrets into `true`'s environment), set (one value). Results go to
# bench/results/values-ab.jsonl and a table on stdout.
set -euo pipefail
cd "$(dirname "$0")/.."
OLD="$(realpath "$1")" NEW="$(realpath "$2")" ROUNDS="${3:-10}"
BIG="$PWD/testdata/dotenv/big.env"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/envseal-ab.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT
OUT="$PWD/bench/results/values-ab.jsonl"
rm -f "$OUT"
for t in old new; do
  mkdir -p "$WORK/$t/home" "$WORK/$t/work"
  chmod 700 "$WORK/$t/home"
done
bin() { if [ "$1" = old ]; then echo "$OLD"; else echo "$NEW"; fi; }
for t in old new; do
  ENVSEAL_HOME="$WORK/$t/home" "$(bin $t)" init >/dev/null 2>&1
  cp "$BIG" "$WORK/$t/work/sealed.env"
  ENVSEAL_HOME="$WORK/$t/home" "$(bin $t)" encrypt "$WORK/$t/work/sealed.env" 2>/dev/null
done
time_it() { # tool op prep cmd...
  local t="$1" op="$2" prep="$3"; shift 3
  ENVSEAL_HOME="$WORK/$t/home" python3 bench/timeit.py --section values-ab --op "$op" --tool "$t" \
    --runs 5 --warmup 1 --rss-runs 0 --prep "$prep" --cwd "$WORK/$t/work" --out "$OUT" -- "$@" >/dev/null
}
for _ in $(seq "$ROUNDS"); do
  for t in old new; do
    b="$(bin $t)"
    time_it "$t" encrypt "cp '$BIG' '$WORK/$t/work/.env'" "$b" encrypt .env
    time_it "$t" decrypt "true" "$b" decrypt sealed.env
    time_it "$t" run "true" "$b" run -f sealed.env -- true
    time_it "$t" set "cp sealed.env set.env" "$b" set set.env NEW_VALUE hello-world
  done
done
python3 - "$OUT" <<'PY'
import json, statistics, sys
rows = {}
for line in open(sys.argv[1]):
    r = json.loads(line)
    rows.setdefault((r["op"], r["tool"]), []).extend(r["samples_s"])
print("| operation | before (median, min-max) | after (median, min-max) | after / before |")
print("| --- | --: | --: | --: |")
for op in ["encrypt", "decrypt", "run", "set"]:
    o, n = rows[(op, "old")], rows[(op, "new")]
    mo, mn = statistics.median(o), statistics.median(n)
    print(f"| {op} | {mo*1e3:.1f} ms ({min(o)*1e3:.1f}-{max(o)*1e3:.1f}) | {mn*1e3:.1f} ms ({min(n)*1e3:.1f}-{max(n)*1e3:.1f}) | {mn/mo:.2f} |")
PY
