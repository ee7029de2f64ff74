#!/usr/bin/env bash
# Signed-request load on `envseal kms serve` (AWS and Alibaba APIs) and on moto, in one run.
#
#   bash bench/kms-load.sh                 # 3 rounds x 5 s per (target, action, connections)
#   ROUNDS=5 SECONDS_PER_RUN=10 bash bench/kms-load.sh
#   SOAK=300 bash bench/kms-load.sh        # then 300 s of GenerateDataKey at 64 connections
#                                          # on kms serve, its RSS sampled every 10 s
#
# The generator (crates/envseal-kms-server/examples/kms_load.rs) signs every request afresh
# (SigV4 for AWS, HMAC-SHA1 RPC for Alibaba) and keeps one HTTP/1.1 connection per worker.
# Generator and servers share this machine's cores. Raw lines: bench/results/kms-load.jsonl;
# summary (median and min-max over rounds): bench/results/kms-load.md.
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS="${ROUNDS:-3}"
SECS="${SECONDS_PER_RUN:-5}"
CONNS="${CONNS:-1 16 64}"
SOAK="${SOAK:-0}"
TOOLS="${ENVSEAL_TEST_TOOLS:-${TMPDIR:-/tmp}/envseal-test-tools}"
MOTO="${MOTO_SERVER:-$TOOLS/venv/bin/moto_server}"
OUT=bench/results
mkdir -p "$OUT"

cargo build --release -q -p envseal-cli
cargo build --release -q -p envseal-kms-server --example kms_load
TARGET_DIR="$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')"
ENVSEAL="$TARGET_DIR/release/envseal"
LOAD="$TARGET_DIR/release/examples/kms_load"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
rss_kb() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }

work="$(mktemp -d)"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

AK=AKBENCHLOAD0001
SK=bench-load-secret-0001
serve_port="$(free_port)"
"$ENVSEAL" kms serve --port "$serve_port" --quiet --access-key "$AK:$SK" >"$work/serve.out" 2>&1 &
serve_pid=$!
pids+=("$serve_pid")
moto_port="$(free_port)"
if [ -x "$MOTO" ]; then
  "$MOTO" -p "$moto_port" >"$work/moto.out" 2>&1 &
  pids+=("$!")
else
  echo "moto_server not found at $MOTO (scripts/test-all.sh installs it): moto rows skipped" >&2
  moto_port=""
fi
for _ in $(seq 100); do
  grep -q '^Ready' "$work/serve.out" && { [ -z "$moto_port" ] || curl -s -o /dev/null "http://127.0.0.1:$moto_port/"; } && break
  sleep 0.1
done

moto_key=""
if [ -n "$moto_port" ]; then
  "$LOAD" --api aws --addr "127.0.0.1:$moto_port" --ak "$AK" --sk "$SK" --create-key --conns 1 --seconds 0 \
    2>"$work/moto-key" >/dev/null
  moto_key="$(sed -n 's/^kms_load: created key //p' "$work/moto-key")"
fi

raw="$OUT/kms-load.jsonl"
: >"$raw"
rss_start="$(rss_kb "$serve_pid")"
echo "load: $(cut -d' ' -f1-3 /proc/loadavg), $(nproc) CPUs; ${ROUNDS} rounds x ${SECS} s" >&2
for round in $(seq "$ROUNDS"); do
  for conns in $CONNS; do
    for op in generate decrypt; do
      run() {
        local target="$1"
        shift
        "$LOAD" "$@" --op "$op" --conns "$conns" --seconds "$SECS" |
          python3 -c 'import json,sys; r=json.loads(sys.stdin.read()); r["target"]=sys.argv[1]; r["round"]=int(sys.argv[2]); print(json.dumps(r))' \
            "$target" "$round" | tee -a "$raw" >&2
      }
      run "kms serve (AWS API)" --api aws --addr "127.0.0.1:$serve_port" --ak "$AK" --sk "$SK" --key alias/default
      run "kms serve (Alibaba API)" --api alibaba --addr "127.0.0.1:$serve_port" --ak "$AK" --sk "$SK" --key alias/default
      if [ -n "$moto_key" ]; then
        run "moto (AWS API)" --api aws --addr "127.0.0.1:$moto_port" --ak "$AK" --sk "$SK" --key "$moto_key"
      fi
    done
  done
done
rss_end="$(rss_kb "$serve_pid")"

soak_lines=""
if [ "$SOAK" -gt 0 ]; then
  "$LOAD" --api aws --addr "127.0.0.1:$serve_port" --ak "$AK" --sk "$SK" --key alias/default --op generate \
    --conns 64 --seconds "$SOAK" >"$work/soak.json" &
  soak=$!
  samples=()
  for _ in $(seq 0 10 "$SOAK"); do
    samples+=("$(rss_kb "$serve_pid")")
    sleep 10
  done
  wait "$soak"
  soak_lines="soak: $(cat "$work/soak.json")
soak RSS (KiB, every 10 s): ${samples[*]}"
fi

python3 - "$raw" "$rss_start" "$rss_end" "$ROUNDS" "$SECS" "$soak_lines" <<'EOF' | tee "$OUT/kms-load.md"
import json, statistics, sys, platform, os
raw, rss0, rss1, rounds, secs, soak = sys.argv[1:7]
rows = [json.loads(l) for l in open(raw)]
groups = {}
for r in rows:
    groups.setdefault((r["action"], r["conns"], r["target"]), []).append(r)
def fmt(vals, f="{:.0f}"):
    return f"{f.format(statistics.median(vals))} ({f.format(min(vals))}–{f.format(max(vals))})"
print(f"# kms serve load ({rounds} rounds x {secs} s; median (min–max))\n")
print(f"`bash bench/kms-load.sh` on {os.cpu_count()} CPUs, load average at the end "
      f"{open('/proc/loadavg').read().split()[0]}; generator and servers on the same machine.\n")
print("| action | connections | target | requests/s | p50 ms | p99 ms | errors | x moto (median rps) |")
print("| --- | --- | --- | --- | --- | --- | --- | --- |")
for (action, conns, target), rs in sorted(groups.items(), key=lambda kv: (kv[0][0] != "GenerateDataKey", kv[0][1], kv[0][2])):
    moto = groups.get((action, conns, "moto (AWS API)"))
    ratio = ""
    if moto and "moto" not in target:
        ratio = f"{statistics.median(r['rps'] for r in rs) / statistics.median(r['rps'] for r in moto):.0f}x"
    print(f"| {action} | {conns} | {target} | {fmt([r['rps'] for r in rs])} | "
          f"{fmt([r['p50_ms'] for r in rs], '{:.2f}')} | {fmt([r['p99_ms'] for r in rs], '{:.2f}')} | "
          f"{sum(r['errors'] for r in rs)} | {ratio} |")
print(f"\nkms serve RSS: {rss0} KiB before the runs, {rss1} KiB after.")
if soak:
    print("\n" + soak)
EOF
