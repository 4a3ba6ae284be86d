#!/usr/bin/env bash
# FOCUS export of a large ledger: time, rows/s and peak RSS, for the whole range and for a
# tenth of it (peak memory must not grow with the number of rows).
#
#   bench/focus_export.sh [--rows N] [--no-build]      # default 10,000,000 rows
#
# Seeds a fresh SQLite ledger with N synthetic rows over 30 days (the `seed_ledger` example:
# 50 tenants, 4 teams, 3 features, 4 models, every token class, 5 % rejected), then runs
# `tollgate export focus` under /usr/bin/time for 3 days and for the 30 days. Needs ~0.4 GB of
# disk per million rows under /tmp. Prints one JSON line per export; raw outputs in
# bench/out/focus-export-<ts>/.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
ROWS=10000000
BUILD=1
while [[ $# -gt 0 ]]; do
  case "$1" in
    --rows) ROWS=$2; shift 2 ;;
    --no-build) BUILD=0; shift ;;
    -h|--help) sed -n '2,11p' "$0"; exit 0 ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
done
[[ -x /usr/bin/time ]] || { echo "missing tool: /usr/bin/time (apt-get install time)" >&2; exit 1; }
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
if [[ $BUILD == 1 ]]; then
  (cd "$ROOT" && cargo build --release -p tollgate --bin tollgate --example seed_ledger)
fi
RUN=$ROOT/bench/out/focus-export-$(date -u +%Y%m%dT%H%M%SZ)
mkdir -p "$RUN"
WORK=$(mktemp -d /tmp/tollgate-focus-bench.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
printf 'storage:\n  ledger: sqlite://%s/ledger.db\n' "$WORK" > "$WORK/c.yaml"

echo "[focus-export] seeding $ROWS rows" >&2
"$TARGET/release/examples/seed_ledger" "$ROWS" "sqlite://$WORK/ledger.db" 2> "$RUN/seed.log"
cat "$RUN/seed.log" >&2

for range in "2026-06-01 2026-06-04 3-days" "2026-06-01 2026-07-01 30-days"; do
  read -r from to label <<< "$range"
  /usr/bin/time -v "$TARGET/release/tollgate" export focus --from "$from" --to "$to" \
    -o "$WORK/focus.csv" --config "$WORK/c.yaml" 2> "$RUN/export-$label.log"
  python3 - "$RUN/export-$label.log" "$label" "$WORK/focus.csv" <<'PY'
import json, os, re, sys
log = open(sys.argv[1]).read()
rows = re.search(r"(\d+) ledger rows → (\d+) rows", log)
wall = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): (\S+)", log).group(1)
parts = [float(p) for p in wall.split(":")]
secs = sum(p * 60 ** i for i, p in enumerate(reversed(parts)))
rss = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", log).group(1))
ledger, focus = int(rows.group(1)), int(rows.group(2))
print(json.dumps({
    "range": sys.argv[2], "ledger_rows": ledger, "focus_rows": focus,
    "seconds": round(secs, 1), "ledger_rows_per_s": round(ledger / secs) if secs else None,
    "peak_rss_mib": round(rss / 1024, 1), "file_mib": round(os.path.getsize(sys.argv[3]) / 2**20, 1),
}))
PY
done | tee "$RUN/results.jsonl"
echo "[focus-export] raw outputs in $RUN" >&2
