#!/usr/bin/env bash
# End-to-end latency of a response-cache hit: Tollgate (cache on) in front of the simulator,
# one request primes the cache, then wrk replays the same request, so every measured request
# is a hit answered without the upstream. For comparison the same body is also measured with
# `x-tollgate-cache: bypass`: the full path to the simulator (wrk sends one fixed body, so a
# miss on every request cannot be produced; the bypass run stands in for the provider path).
#
#   bench/cache_hit.sh [--duration SECONDS] [--no-build]
#
# Target (issue): a cache hit answers in ≤ 100 µs p50 end to end. Layout as bench/run.sh:
# Tollgate pinned to CPU $GW_CPU (default 0), wrk and the simulator on CPU $LOAD_CPU (default 1).
# Prints one JSON line per run (wrk's exact percentiles, µs); raw output in bench/out/cache-<ts>/.
set -euo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$BENCH_DIR/.." && pwd)
DUR=10
BUILD=1
GW_CPU=${GW_CPU:-0}
LOAD_CPU=${LOAD_CPU:-1}
while [[ $# -gt 0 ]]; do
  case "$1" in
    --duration) DUR=$2; shift 2 ;;
    --no-build) BUILD=0; shift ;;
    -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
done
log() { printf '[cache-bench %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
NAME=cache
# shellcheck source=bench/lib.sh
source "$BENCH_DIR/lib.sh"

write_config sim <<YAML
models:
  gpt-4o-mini:
    deployments: [{provider: sim, model: gpt-4o-mini}]
cache:
  default: {ttl_secs: 3600}
YAML
taskset -c "$GW_CPU" "$BIN" serve --config "$WORK/tollgate.yaml" >>"$RUN/tollgate.log" 2>&1 &
TG_PID=$!
PIDS+=("$TG_PID")
wait_http "http://127.0.0.1:$TG_PORT/healthz"

URL=http://127.0.0.1:$TG_PORT/v1/chat/completions
BODY='{"model":"gpt-4o-mini","temperature":0,"messages":[{"role":"user","content":"Hello from the Tollgate benchmark"}]}'
BODY_STREAM='{"model":"gpt-4o-mini","temperature":0,"messages":[{"role":"user","content":"Hello from the Tollgate benchmark"}],"stream":true,"stream_options":{"include_usage":true}}'
prime() {
  curl -fsS -D "$RUN/prime-headers.txt" -o /dev/null -H 'content-type: application/json' \
    -H "authorization: Bearer $KEY" -d "$BODY" "$URL"
  curl -fsS -D "$RUN/hit-headers.txt" -o "$RUN/hit-body.json" -H 'content-type: application/json' \
    -H "authorization: Bearer $KEY" -d "$BODY" "$URL"
  grep -qi '^x-tollgate-cache: hit' "$RUN/hit-headers.txt" \
    || { echo "second request was not a cache hit:" >&2; cat "$RUN/hit-headers.txt" >&2; exit 1; }
}
prime

run() { # NAME BODY CONNS [extra wrk args]
  local name=$1 body=$2 conns=$3; shift 3
  BENCH_BODY=$body BENCH_KEY=$KEY taskset -c "$LOAD_CPU" wrk -t1 -c"$conns" -d"${DUR}s" \
    --timeout 10s --latency -s "$BENCH_DIR/chat.lua" "$@" "$URL" > "$RUN/$name.txt"
  printf '{"run":"%s",%s\n' "$name" "$(sed -n 's/^WRKJSON {//p' "$RUN/$name.txt")" | tee "$RUN/$name.json"
}
log "warm-up"
run warmup "$BODY" 10 >/dev/null
log "hits, ${DUR}s each"
run hit-c1 "$BODY" 1
run hit-c50 "$BODY" 50
run hit-stream-c1 "$BODY_STREAM" 1
log "bypass (provider path, same body), ${DUR}s"
run bypass-c1 "$BODY" 1 -H 'x-tollgate-cache: bypass'
curl -fsS "http://127.0.0.1:$TG_PORT/metrics" | grep '^tollgate_cache_' > "$RUN/metrics.txt"
cat "$RUN/metrics.txt" >&2
log "raw outputs in $RUN"
