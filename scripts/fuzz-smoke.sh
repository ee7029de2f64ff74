#!/usr/bin/env bash
# Fuzz smoke pass (docs/FUZZING.md): builds every cargo-fuzz target, replays the saved
# regression inputs, then fuzzes each target briefly from seeds made out of testdata/.
# Fails on any crash, panic, OOM (> 2 GiB) or timeout (> 10 s for one input), and on leaks
# with FUZZ_SANITIZER=address.
#
# Environment:
#   FUZZ_SMOKE_SECONDS  seconds of fuzzing per target (default 10)
#   FUZZ_SMOKE_JOBS     targets fuzzed at once (default 2)
#   FUZZ_SANITIZER      cargo-fuzz sanitizer: none (default: a cold build takes about 2.5
#                       minutes, against about 5.5 with AddressSanitizer) or address
#   FUZZ_TARGET_DIR     build directory (default fuzz/target); point it somewhere that
#                       survives between runs to skip the cold build (about 5 minutes)
#
# Only stable Rust is installed here: cargo-fuzz needs nightly-only flags (-Zsanitizer,
# -Cpasses=sancov-module), so RUSTC_BOOTSTRAP=1 lets the stable compiler accept them.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"

SECONDS_PER_TARGET=${FUZZ_SMOKE_SECONDS:-10}
JOBS=${FUZZ_SMOKE_JOBS:-2}
SANITIZER=${FUZZ_SANITIZER:-none}
export RUSTC_BOOTSTRAP=1
# cargo-fuzz's own target dir (fuzz/target), whatever the caller's CARGO_TARGET_DIR is.
export CARGO_TARGET_DIR="${FUZZ_TARGET_DIR:-$PWD/target}"

if ! command -v cargo-fuzz >/dev/null 2>&1; then
    echo "fuzz-smoke: installing cargo-fuzz"
    cargo install cargo-fuzz --locked
fi

start=$(date +%s)
cargo fuzz build -O --sanitizer "$SANITIZER"
built=$(date +%s)
echo "fuzz-smoke: build took $((built - start)) s"

BIN="$CARGO_TARGET_DIR/$(rustc -vV | sed -n 's/^host: //p')/release"
TARGETS=$(cargo fuzz list)
./seed.sh >/dev/null

dict_for() {
    case "$1" in
        kms_*) echo dict/http.dict ;;
        *) echo dict/envseal.dict ;;
    esac
}

# container_open drives the threaded decryptor: LeakSanitizer's per-input check can run while
# a finished scoped thread is still freeing std's thread-locals, and then reports a "leak"
# that does not reproduce (docs/FUZZING.md). Leak checks stay on for every other target.
flags_for() {
    case "$1" in
        container_open) echo -detect_leaks=0 ;;
        *) echo -detect_leaks=1 ;;
    esac
}

logs=$(mktemp -d)
status=0
# 1. Every saved reproducer, once.
for t in $TARGETS; do
    if [ -d "regressions/$t" ] && [ -n "$(ls -A "regressions/$t")" ]; then
        if ! "$BIN/$t" "$(flags_for "$t")" -rss_limit_mb=2048 -timeout=10 "regressions/$t"/* >"$logs/reg-$t.log" 2>&1; then
            echo "fuzz-smoke: FAIL $t on a saved regression input"; tail -30 "$logs/reg-$t.log"; status=1
        fi
    fi
done

# 2. A short fuzzing pass per target, JOBS at a time, over a scratch copy of the seeds.
run() {
    local t=$1 work
    work=$(mktemp -d)
    cp -r "corpus/$t/." "$work/"
    mkdir -p "$logs/art-$t"
    if "$BIN/$t" "$work" "$(flags_for "$t")" -dict="$(dict_for "$t")" -max_total_time="$SECONDS_PER_TARGET" \
        -rss_limit_mb=2048 -timeout=10 -artifact_prefix="$logs/art-$t/" >"$logs/$t.log" 2>&1; then
        echo "fuzz-smoke: ok   $t $(grep -E '^#[0-9]+' "$logs/$t.log" | tail -1 | awk '{print $1, $3, $4}')"
    else
        echo "fuzz-smoke: FAIL $t (artifacts in $logs/art-$t)"; tail -40 "$logs/$t.log"
        return 1
    fi
    rm -rf "$work"
}
pids=()
for t in $TARGETS; do
    run "$t" &
    pids+=($!)
    if [ ${#pids[@]} -ge "$JOBS" ]; then
        wait "${pids[0]}" || status=1
        pids=("${pids[@]:1}")
    fi
done
for p in "${pids[@]}"; do wait "$p" || status=1; done

echo "fuzz-smoke: total $(( $(date +%s) - start )) s ($(echo "$TARGETS" | wc -w) targets, ${SECONDS_PER_TARGET} s each)"
[ "$status" -eq 0 ] && rm -rf "$logs"
exit "$status"
