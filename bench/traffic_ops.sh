#!/usr/bin/env bash
# What traffic operations add to the request path: the same request, end to end, through two
# logical models of one gateway in front of the simulator —
#   core: one deployment, no rate limit, no cache (the core path);
#   ops:  two deployments under the `latency` strategy (plan, breaker and EWMA bookkeeping,
#         sticky-key check), a per-key rate limit with RPM and TPM (atomic reserve, token
#         estimate, settle) and the response cache on (key, lookup — a miss, since every
#         request carries a distinct prompt — and the insert of the answer).
# Runs alternate core/ops ROUNDS times at one connection; the difference of the median p50s
# is the cost of routing + rate limiting + cache lookup. Target (issue 5): ≤ 10 µs.
#
#   bench/traffic_ops.sh [--duration SECONDS] [--rounds N] [--no-build]
#   BREAKDOWN=1 bench/traffic_ops.sh …   also route-only, rate-limit-only and cache-only models
#
# Layout as bench/run.sh: Tollgate on CPU $GW_CPU (default 0), wrk and the simulator on CPU
# $LOAD_CPU (default 1). Raw output in bench/out/traffic-ops-<ts>/.
set -euo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$BENCH_DIR/.." && pwd)
DUR=8
ROUNDS=3
BUILD=1
GW_CPU=${GW_CPU:-0}
LOAD_CPU=${LOAD_CPU:-1}
while [[ $# -gt 0 ]]; do
  case "$1" in
    --duration) DUR=$2; shift 2 ;;
    --rounds) ROUNDS=$2; shift 2 ;;
    --no-build) BUILD=0; shift ;;
    -h|--help) sed -n '2,16p' "$0"; exit 0 ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
done
log() { printf '[traffic-ops %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
NAME=traffic-ops
# shellcheck source=bench/lib.sh
source "$BENCH_DIR/lib.sh"

write_config sim-a sim-b <<YAML
models:
  core:
    deployments: [{provider: sim-a, model: gpt-4o-mini}]
  ops:
    strategy: latency
    deployments: [{provider: sim-a, model: gpt-4o-mini}, {provider: sim-b, model: gpt-4o-mini}]
  route:
    strategy: latency
    deployments: [{provider: sim-a, model: gpt-4o-mini}, {provider: sim-b, model: gpt-4o-mini}]
  limit:
    deployments: [{provider: sim-a, model: gpt-4o-mini}]
  cached:
    deployments: [{provider: sim-a, model: gpt-4o-mini}]
rate_limits:
  - {name: ops, per: key, match: {model: ops}, rpm: 1000000000, tpm: 1000000000000}
  - {name: limit, per: key, match: {model: limit}, rpm: 1000000000, tpm: 1000000000000}
cache:
  models:
    ops: {ttl_secs: 3600}
    cached: {ttl_secs: 3600}
YAML
taskset -c "$GW_CPU" "$BIN" serve --config "$WORK/tollgate.yaml" >>"$RUN/tollgate.log" 2>&1 &
PIDS+=("$!")
wait_http "http://127.0.0.1:$TG_PORT/healthz"
URL=http://127.0.0.1:$TG_PORT/v1/chat/completions

# The ops path really is on: rate-limit headers and a cache miss on a fresh prompt.
curl -fsS -D "$RUN/ops-headers.txt" -o /dev/null -H 'content-type: application/json' \
  -H "authorization: Bearer $KEY" \
  -d '{"model":"ops","temperature":0,"messages":[{"role":"user","content":"check"}]}' "$URL"
grep -qi '^x-tollgate-cache: miss' "$RUN/ops-headers.txt" && grep -qi '^x-ratelimit-limit-requests' "$RUN/ops-headers.txt" \
  || { echo "the ops model is not rate limited and cached:" >&2; cat "$RUN/ops-headers.txt" >&2; exit 1; }

run() { # NAME MODEL
  BENCH_MODEL=$2 BENCH_KEY=$KEY taskset -c "$LOAD_CPU" wrk -t1 -c1 -d"${DUR}s" \
    --timeout 10s --latency -s "$BENCH_DIR/unique.lua" "$URL" > "$RUN/$1.txt"
  printf '{"run":"%s",%s\n' "$1" "$(sed -n 's/^WRKJSON {//p' "$RUN/$1.txt")" | tee "$RUN/$1.json"
}
log "warm-up"
BENCH_MODEL=core DUR=2 run warmup-core core >/dev/null
run warmup-ops ops >/dev/null
MODELS=(core ops)
[[ ${BREAKDOWN:-0} == 1 ]] && MODELS=(core route limit cached ops)
for i in $(seq "$ROUNDS"); do
  log "round $i/$ROUNDS (${DUR}s each)"
  for m in "${MODELS[@]}"; do run "$m-$i" "$m"; done
done
python3 - "$RUN" "$ROUNDS" "${MODELS[@]}" <<'PY'
import json, statistics, sys
run, rounds, models = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
def p50s(name):
    return [json.load(open(f"{run}/{name}-{i}.json"))["lat_p50_us"] for i in range(1, rounds + 1)]
out = {}
base = statistics.median(p50s("core"))
for m in models:
    v = p50s(m)
    out[m] = {"p50_us": v, "median_p50_us": statistics.median(v),
              "added_p50_us": statistics.median(v) - base}
print(json.dumps(out))
json.dump(out, open(f"{run}/summary.json", "w"))
PY
log "raw outputs in $RUN"
