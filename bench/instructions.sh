#!/usr/bin/env bash
# Instructions the gateway executes per request, counted by valgrind's callgrind: a number that
# does not move with the machine's load or CPU steal, so two builds can be compared on a noisy
# shared machine where wall-clock latency cannot tell a few per cent apart.
#
#   bench/instructions.sh [--requests N] [--no-build]          # the current build
#   TOLLGATE_BIN=/path/to/other/tollgate bench/instructions.sh --no-build
#   TOLLGATE_TELEMETRY=1 bench/instructions.sh --no-build      # OpenTelemetry on, sampling 1.0
#   KEEP_CALLGRIND=1 …                                           # keep the dumps (profiles)
#
# Tollgate runs under `valgrind --tool=callgrind` in front of the simulator (which is not under
# valgrind). For each case the counters are zeroed (`callgrind_control -z`), N requests are sent
# one after another over one keep-alive connection, and the counters are dumped: instructions ÷
# N is the cost of one request in the gateway, every thread included (request path, ledger
# writer, background loops over those seconds). Cases, all gpt-4o-mini on the simulator:
#   core          non-streaming chat, one deployment, no rate limit, no cache
#   core-stream   the same, streamed (8 chunks)
#   ops           non-streaming chat on two deployments (latency strategy) with an RPM+TPM rate
#                 limit and the response cache (every prompt distinct: a miss that is stored)
#   messages      /v1/messages translated to the OpenAI-format simulator
# Prints one JSON line per case; raw outputs in bench/out/instructions-<ts>/.
set -euo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$BENCH_DIR/.." && pwd)
N=400
BUILD=1
LOAD_CPU=${LOAD_CPU:-1}
while [[ $# -gt 0 ]]; do
  case "$1" in
    --requests) N=$2; shift 2 ;;
    --no-build) BUILD=0; shift ;;
    -h|--help) sed -n '2,19p' "$0"; exit 0 ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
done
log() { printf '[instructions %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
NAME=instructions
TOOLS="valgrind callgrind_control taskset python3 curl"
# shellcheck source=bench/lib.sh
source "$BENCH_DIR/lib.sh"

# TOLLGATE_TELEMETRY=1: telemetry on (sampling 1.0), exporting to the simulator's OTLP sink.
TELEMETRY_YAML=""
if [[ -n ${TOLLGATE_TELEMETRY:-} ]]; then
  TELEMETRY_YAML="telemetry: {endpoint: \"http://127.0.0.1:$SIM_PORT\", sampling_ratio: 1.0, metrics_interval_secs: 10}"
fi
write_config sim-a sim-b <<YAML
$TELEMETRY_YAML
models:
  core:
    deployments: [{provider: sim-a, model: gpt-4o-mini}]
  ops:
    strategy: latency
    deployments: [{provider: sim-a, model: gpt-4o-mini}, {provider: sim-b, model: gpt-4o-mini}]
rate_limits:
  - {name: ops, per: key, match: {model: ops}, rpm: 1000000000, tpm: 1000000000000}
cache:
  models:
    ops: {ttl_secs: 3600}
YAML
OUT=$WORK/callgrind.out
valgrind --tool=callgrind --callgrind-out-file="$OUT" --dump-instr=no --collect-jumps=no \
  "$BIN" serve --config "$WORK/tollgate.yaml" >>"$RUN/tollgate.log" 2>&1 &
TG_PID=$!
PIDS+=("$TG_PID")
# Not wait_http: start-up under valgrind takes far longer than its 10 s.
for _ in $(seq 600); do curl -fsS -o /dev/null "http://127.0.0.1:$TG_PORT/healthz" 2>/dev/null && break; sleep 0.1; done

send() { # CASE COUNT
  python3 - "$TG_PORT" "$KEY" "$1" "$2" <<'PY'
import http.client, json, sys
port, key, case, n = int(sys.argv[1]), sys.argv[2], sys.argv[3], int(sys.argv[4])
c = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
for i in range(n):
    prompt = f"instruction count {case} {i}"
    if case == "messages":
        path = "/v1/messages"
        body = {"model": "core", "max_tokens": 64, "messages": [{"role": "user", "content": prompt}]}
    else:
        path = "/v1/chat/completions"
        body = {"model": "ops" if case == "ops" else "core", "temperature": 0,
                "messages": [{"role": "user", "content": prompt}]}
        if case == "core-stream":
            body["stream"] = True
    c.request("POST", path, json.dumps(body),
              {"authorization": f"Bearer {key}", "content-type": "application/json"})
    r = c.getresponse()
    r.read()
    assert r.status == 200, (r.status, case)
PY
}
total_ir() { # the summary line of the newest dump
  local f
  f=$(ls -t "$OUT"* | head -1)
  sed -n 's/^summary: //p;s/^totals: //p' "$f" | head -1 | awk '{print $1}'
}

log "warm-up (under valgrind: slow)"
for c in core core-stream ops messages; do send "$c" 20; done
for c in core core-stream ops messages; do
  callgrind_control -z "$TG_PID" >/dev/null
  send "$c" "$N"
  callgrind_control -d "$c" "$TG_PID" >/dev/null
  ir=$(total_ir)
  printf '{"case":"%s","requests":%d,"instructions":%s,"per_request":%d}\n' \
    "$c" "$N" "$ir" "$((ir / N))" | tee -a "$RUN/summary.jsonl"
done
# KEEP_CALLGRIND=1 keeps the dumps for `callgrind_annotate --inclusive=yes`.
[[ -n ${KEEP_CALLGRIND:-} ]] && cp "$OUT"* "$RUN/"
log "raw outputs in $RUN"
