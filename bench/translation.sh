#!/usr/bin/env bash
# Translation overhead: the same gateway serving one OpenAI-format deployment and one
# Anthropic-format deployment of the simulator, measured side by side. The difference between
# the two rows is what translating OpenAI ingress ↔ Anthropic upstream costs (request mapping,
# event-by-event stream translation, usage conversion).
#
#   bench/translation.sh            (needs target/release/tollgate, wrk, python3)
#
# Gateway pinned to CPU 0, simulator and load generators to CPU 1, loopback only.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BIN=${TOLLGATE_BIN:-$ROOT/target/release/tollgate}
TMP=$(mktemp -d)
SIM_PORT=${SIM_PORT:-48512}
GW_PORT=${GW_PORT:-48511}
pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$TMP"; }
trap cleanup EXIT
cat > "$TMP/cfg.yaml" <<YAML
server:
  listen: 127.0.0.1:$GW_PORT
storage:
  ledger: sqlite://$TMP/ledger.db
providers:
  sim: {kind: openai, base_url: "http://127.0.0.1:$SIM_PORT/v1"}
  sim-anthropic: {kind: anthropic, base_url: "http://127.0.0.1:$SIM_PORT"}
models:
  gpt-4o-mini: {deployments: [{provider: sim, model: gpt-4o-mini}]}
  claude-sonnet-4-6: {deployments: [{provider: sim-anthropic, model: claude-sonnet-4-6}]}
YAML
KEY=$("$BIN" keys create --name bench --config "$TMP/cfg.yaml" 2>/dev/null)
taskset -c 1 "$BIN" mock-provider --listen "127.0.0.1:$SIM_PORT" >/dev/null 2>&1 & pids+=($!)
RUST_LOG=warn taskset -c 0 "$BIN" serve --config "$TMP/cfg.yaml" >/dev/null 2>&1 & pids+=($!)
sleep 1
echo "| upstream | non-streaming p50 / p99, c=1 (µs) | stream first event p50 / p99, c=1 (µs) |"
echo "|---|---:|---:|"
for model in gpt-4o-mini claude-sonnet-4-6; do
  export BENCH_KEY=$KEY
  export BENCH_BODY="{\"model\":\"$model\",\"max_tokens\":16,\"messages\":[{\"role\":\"user\",\"content\":\"Hello from the Tollgate benchmark\"}]}"
  taskset -c 1 wrk -t1 -c1 -d2s -s "$ROOT/bench/chat.lua" "http://127.0.0.1:$GW_PORT/v1/chat/completions" >/dev/null 2>&1
  w=$(taskset -c 1 wrk -t1 -c1 -d8s -s "$ROOT/bench/chat.lua" "http://127.0.0.1:$GW_PORT/v1/chat/completions" | grep WRKJSON | sed 's/^WRKJSON //')
  s=$(taskset -c 1 python3 "$ROOT/bench/stream_probe.py" --port "$GW_PORT" --key "$KEY" --model "$model" -n 400)
  python3 - "$model" "$w" "$s" <<'PY'
import json, sys
model, w, s = sys.argv[1], json.loads(sys.argv[2]), json.loads(sys.argv[3])
up = "OpenAI format (pass-through)" if model.startswith("gpt") else "Anthropic format (translated)"
print(f"| {up} | {w['lat_p50_us']} / {w['lat_p99_us']} | {s.get('ttfe_p50_us')} / {s.get('ttfe_p99_us')} |")
PY
done
