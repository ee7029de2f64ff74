#!/usr/bin/env bash
# `envseal rewrap --shard I/4` by 4 workers at once against `envseal kms serve --throttle QPS`
# (Alibaba API, envseal's own Alibaba backend): total KMS request rate against the limit, and
# every file rewrapped exactly once.
#
#   bash bench/rewrap-shards.sh            # 400 .env files, limit 200 requests/s
#   FILES=1000 QPS=400 bash bench/rewrap-shards.sh
#   ENVSEAL_BIN=target/debug/envseal FILES=40 bash bench/rewrap-shards.sh   # a quick check
#
# Writes bench/results/rewrap-shards.md.
set -euo pipefail
cd "$(dirname "$0")/.."

FILES="${FILES:-400}"
QPS="${QPS:-200}"
SHARDS="${SHARDS:-4}"
OUT="$PWD/bench/results"
mkdir -p "$OUT"

# ENVSEAL_BIN: measure this binary instead of building one.
if [ -z "${ENVSEAL_BIN:-}" ]; then
  cargo build --release -q -p envseal-cli
  TARGET_DIR="$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')"
  ENVSEAL_BIN="$TARGET_DIR/release/envseal"
fi
ENVSEAL="$ENVSEAL_BIN"

work="$(mktemp -d)"
serve_pid=""
cleanup() {
  [ -n "$serve_pid" ] && kill "$serve_pid" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
"$ENVSEAL" kms serve --port "$port" --access-key AKSHARDBENCH:shard-bench-secret --throttle "$QPS" \
  >"$work/serve.out" 2>"$work/serve.log" &
serve_pid=$!
for _ in $(seq 100); do grep -q '^Ready' "$work/serve.out" && break; sleep 0.1; done

export ENVSEAL_HOME="$work/home" HOME="$work"
export ALIBABA_CLOUD_ACCESS_KEY_ID=AKSHARDBENCH ALIBABA_CLOUD_ACCESS_KEY_SECRET=shard-bench-secret
export ALIBABA_CLOUD_REGION_ID=cn-hangzhou ENVSEAL_ALIBABA_KMS_ENDPOINT="http://127.0.0.1:$port"
unset ENVSEAL_KMS ENVSEAL_KEY ALIBABA_CLOUD_SECURITY_TOKEN
KMS="alibaba-kms:cn-hangzhou/alias/default"
mkdir -p "$work/files"
cd "$work"
for i in $(seq "$FILES"); do
  printf 'DB_PASSWORD=pw-%s\nAPI_KEY=key-%s\n' "$i" "$i" >"files/app-$i.env"
done
# Sealing is throttled too: done before the measured part, with the CLI's retries.
for f in files/app-*.env; do
  "$ENVSEAL" encrypt --kms "$KMS" "$f" >/dev/null 2>"$work/encrypt.log" || {
    cat "$work/encrypt.log" >&2
    exit 1
  }
done
"$ENVSEAL" keys rotate alias/default --kms "$KMS" >/dev/null
log_before="$(wc -l <"$work/serve.log")"

start="$(date +%s.%N)"
pids=()
for i in $(seq 0 $((SHARDS - 1))); do
  "$ENVSEAL" rewrap -r files --to-latest --kms "$KMS" --shard "$i/$SHARDS" --json >"$work/shard-$i.json" 2>"$work/shard-$i.err" &
  pids+=("$!")
done
rc=0
for p in "${pids[@]}"; do wait "$p" || rc=1; done
end="$(date +%s.%N)"
if [ "$rc" != 0 ]; then
  cat "$work"/shard-*.err >&2
  exit 1
fi

python3 - "$work" "$SHARDS" "$FILES" "$QPS" "$start" "$end" "$log_before" <<'EOF' | tee "$OUT/rewrap-shards.md"
import json, sys, collections
work, shards, files, qps, start, end, before = sys.argv[1:8]
shards, files, qps, before = int(shards), int(files), float(qps), int(before)
wall = float(end) - float(start)
taken = collections.Counter()
per = []
for i in range(shards):
    v = json.load(open(f"{work}/shard-{i}.json"))
    per.append((i, v["rewrapped"], v["failed"]))
    for f in v["files"]:
        if f["status"] == "rewrapped":
            taken[f["path"]] += 1
lines = open(f"{work}/serve.log").read().splitlines()[before:]
ok = sum(1 for l in lines if "-> 200" in l)
throttled = sum(1 for l in lines if "Throttling" in l)
print(f"# rewrap --shard I/{shards} against kms serve --throttle {qps:g}\n")
print(f"`FILES={files} QPS={qps:g} bash bench/rewrap-shards.sh`\n")
print(f"- wall time {wall:.2f} s; files rewrapped per shard: {', '.join(f'{i}: {n}' for i, n, _ in per)}; failed: {sum(f for *_, f in per)}")
print(f"- every file rewrapped exactly once: {len(taken) == files and all(c == 1 for c in taken.values())} ({len(taken)} of {files} files)")
print(f"- KMS requests answered 200: {ok} ({ok / wall:.1f}/s, {100 * ok / wall / qps:.0f}% of the limit); refused as throttled (then retried): {throttled}")
EOF
