#!/usr/bin/env bash
# envseal-fields (issue 18 §6) in one run, for docs/PERFORMANCE.md:
#
#   bash bench/fields.sh            # 1,000,000 rows per table (about 10 minutes on 2 cores)
#   bash bench/fields.sh --quick    # 100,000 rows, shorter micro-benchmark runs
#
# 1. cargo bench -p envseal-fields --features rusqlite --bench fields: seal/open of a 64-byte field with a warm cache,
#    key-reference (Column) and self-contained (Sealer), against the raw 64-byte AES-256-GCM seal,
#    one thread, medians of 7 runs with min-max.
# 2. cargo bench -p envseal-fields --features sqlx-postgres --bench pg: a PostgreSQL started on a
#    private port (Debian's postgresql package: apt-get install postgresql); inserts of N rows with
#    3 sealed columns + 1 blind index vs the same rows in plaintext (interleaved rounds), KMS calls
#    per million rows, table sizes, vault rewrap after a key rotation, and a re-key of one column
#    while the application keeps inserting.
# Not run in CI. Output: bench/results/suite-fields.txt.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(dirname "$HERE")"
ROWS=1000000
QUICK=()
for a in "$@"; do
  case "$a" in
    --quick) ROWS=100000; QUICK=(--quick) ;;
    -h|--help) sed -n '2,15p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "fields.sh: unknown argument $a" >&2; exit 2 ;;
  esac
done
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target-bench}"
OUT="$HERE/results/suite-fields.txt"
mkdir -p "$HERE/results"
{
  echo "bench/fields.sh, $(date -u '+%Y-%m-%d %H:%M UTC'); load average $(cut -d' ' -f1-3 /proc/loadavg)"
  echo "machine: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(nproc) cores, PostgreSQL $(ls /usr/lib/postgresql 2>/dev/null | sort -n | tail -1)"
  (cd "$ROOT" && cargo bench -q -p envseal-fields --features rusqlite --bench fields -- "${QUICK[@]}" 2>/dev/null)
  echo
  (cd "$ROOT" && cargo bench -q -p envseal-fields --features sqlx-postgres --bench pg -- --rows "$ROWS" 2>/dev/null)
  echo "load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
} | tee "$OUT"
