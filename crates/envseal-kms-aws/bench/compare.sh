#!/usr/bin/env bash
# Starts one moto on a free port, creates one key, and runs examples/latency.rs (release) and
# boto3_loop.py against it, one after the other. Needs `pip install 'moto[server]'` (boto3 comes
# with it). Usage: crates/envseal-kms-aws/bench/compare.sh   (ENVSEAL_BENCH_N, ..._CONCURRENCY apply)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
command -v moto_server >/dev/null || { echo "moto_server not found: pip install 'moto[server]'" >&2; exit 1; }
port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
log="$(mktemp)"
moto_server -H 127.0.0.1 -p "$port" >"$log" 2>&1 &
pid=$!
trap 'kill "$pid" 2>/dev/null; rm -f "$log"' EXIT
for _ in $(seq 1 150); do
  python3 - "$port" <<'PY' 2>/dev/null && break
import sys, urllib.request
urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/moto-api/", timeout=1)
PY
  kill -0 "$pid" || { cat "$log" >&2; exit 1; }
  sleep 0.2
done
export AWS_ENDPOINT_URL="http://127.0.0.1:$port" AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing \
  AWS_REGION=us-east-1 AWS_DEFAULT_REGION=us-east-1
ENVSEAL_BENCH_KEY="$(python3 -c 'import boto3; print(boto3.client("kms").create_key()["KeyMetadata"]["Arn"])')"
export ENVSEAL_BENCH_KEY
echo "moto on $AWS_ENDPOINT_URL, key $ENVSEAL_BENCH_KEY"
(cd "$here/../../.." && cargo run -q --release -p envseal-kms-aws --example latency)
python3 "$here/boto3_loop.py"
