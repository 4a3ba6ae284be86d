#!/usr/bin/env bash
# Tollgate benchmark: the simulated provider direct, behind nginx, and behind Tollgate, side by
# side in one run. See BENCHMARKS.md for what every number means.
#
#   bench/run.sh [--soak SECONDS] [--duration SECONDS] [--no-build] [--quick]
#
#   --duration S   length of each wrk run at concurrency 1 and 50 (default 10)
#   --soak S       afterwards, keep Tollgate under constant load for S seconds and sample its
#                  RSS every 10 s (default: off; 300 for the 5-minute check)
#   --no-build     use the existing target/release/tollgate
#   --quick        3 s runs, 200 probes: a smoke test of the script, not a measurement
#   TOLLGATE_BIN=path overrides the binary (e.g. a debug build for testing the script)
#   TOLLGATE_DURABILITY=strict runs the gateway with `storage.durability: strict`
#   TOLLGATE_TELEMETRY=1 turns OpenTelemetry on (sampling 1.0), exporting to the simulator's
#                  OTLP sink
#   TOLLGATE_LD_PRELOAD=lib.so preloads a library into the gateway (diagnostic experiments)
#   BENCH_COMMIT=sha   names the source revision when ROOT is an export, not a git checkout
#
# Layout: the gateway under test (nginx or Tollgate) is pinned to CPU $GW_CPU (default 0); the
# load generators (wrk, bench/stream_probe.py) and the simulator share CPU $LOAD_CPU (default 1).
# Loopback only. Raw outputs go to bench/out/<timestamp>/ (bench/out/latest points at the last
# run); the markdown results table is printed and saved as results.md there.
set -euo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$BENCH_DIR/.." && pwd)
DUR=10
STREAM_DUR=5
STREAM_N=500
CHUNK_N=30
CHUNK_DELAY_MS=10
WARMUP=2
SOAK=0
BUILD=1
GW_CPU=${GW_CPU:-0}
LOAD_CPU=${LOAD_CPU:-1}

while [[ $# -gt 0 ]]; do
  case "$1" in
    --soak) SOAK=$2; shift 2 ;;
    --duration) DUR=$2; shift 2 ;;
    --no-build) BUILD=0; shift ;;
    --quick) DUR=3; STREAM_DUR=2; STREAM_N=200; CHUNK_N=5; WARMUP=1; shift ;;
    -h|--help) sed -n '2,18p' "$0"; exit 0 ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
done

log() { printf '[bench %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

# ---------------------------------------------------------------- prerequisites
if ! command -v wrk >/dev/null || ! command -v nginx >/dev/null; then
  log "installing nginx-light and wrk"
  if ! DEBIAN_FRONTEND=noninteractive apt-get install -y nginx-light wrk >/dev/null; then
    apt-get update >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y nginx-light wrk >/dev/null
  fi
fi
for tool in wrk nginx taskset python3 curl getconf; do
  command -v "$tool" >/dev/null || { echo "missing tool: $tool" >&2; exit 1; }
done
if [[ $(nproc) -lt 2 ]]; then
  echo "need at least 2 CPUs (gateway on one, load generator + simulator on the other)" >&2
  exit 1
fi

if [[ $BUILD == 1 ]]; then
  log "cargo build --release -p tollgate"
  (cd "$ROOT" && cargo build --release -p tollgate)
fi
BIN=${TOLLGATE_BIN:-${CARGO_TARGET_DIR:-$ROOT/target}/release/tollgate}
[[ -x $BIN ]] || { echo "no binary at $BIN (drop --no-build)" >&2; exit 1; }

# ---------------------------------------------------------------- run directory, cleanup
STAMP=$(date -u +%Y%m%dT%H%M%SZ)
RUN=$ROOT/bench/out/$STAMP
mkdir -p "$RUN"
ln -sfn "$STAMP" "$ROOT/bench/out/latest"
WORK=$(mktemp -d /tmp/tollgate-bench.XXXXXX)
PIDS=()
# A private copy: a concurrent cargo build must not swap the binary in the middle of a run.
cp "$BIN" "$WORK/tollgate"
BIN=$WORK/tollgate

cleanup() {
  local rc=$?
  set +e
  for pid in "${PIDS[@]}"; do
    kill -TERM "$pid" 2>/dev/null
  done
  for pid in "${PIDS[@]}"; do
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null
  done
  [[ -f $WORK/nginx/error.log ]] && cp "$WORK/nginx/error.log" "$RUN/nginx-error.log"
  rm -rf "$WORK"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_ports() { # N free loopback TCP ports (bound together, then released)
  python3 - "$1" <<'PY'
import socket, sys
socks = []
for _ in range(int(sys.argv[1])):
    s = socket.socket(); s.bind(("127.0.0.1", 0)); socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
PY
}

wait_http() { # URL [extra curl args...]: wait up to 10 s for a 2xx
  local url=$1; shift
  for _ in $(seq 100); do
    curl -fsS -o /dev/null "$@" "$url" 2>/dev/null && return 0
    sleep 0.1
  done
  echo "timed out waiting for $url" >&2
  return 1
}

cpu_ticks() { # sum of utime+stime (clock ticks) over the given PIDs, all threads
  local total=0 pid t
  for pid in "$@"; do
    t=$(sed 's/^.*) //' "/proc/$pid/stat" | awk '{print $12 + $13}')
    total=$((total + t))
  done
  echo "$total"
}
status_kib() { awk -v k="$2:" '$1 == k {print $2}' "/proc/$1/status"; } # PID VmRSS|VmHWM

read -r SIM_PORT NGINX_PORT TG_PORT < <(free_ports 3)
log "ports: simulator $SIM_PORT, nginx $NGINX_PORT, tollgate $TG_PORT; run dir $RUN"

# ---------------------------------------------------------------- environment record
{
  echo "date_utc: $STAMP"
  echo "git_commit: $(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null || echo "${BENCH_COMMIT:-unknown}")$(cd "$ROOT" && [[ -n $(git status --porcelain -- crates Cargo.toml Cargo.lock 2>/dev/null) ]] && echo "+dirty")"
  echo "nproc: $(nproc)"
  echo "cpu: $(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)"
  echo "kernel: $(uname -r)"
  echo "load_before: $(cut -d' ' -f1-3 /proc/loadavg)"
  echo "wrk: $(wrk -v 2>&1 | head -1)"
  echo "nginx: $(nginx -v 2>&1)"
  echo "python: $(python3 -V 2>&1)"
  echo "tollgate: $("$BIN" --version), binary built $(date -u -r "${TOLLGATE_BIN:-${CARGO_TARGET_DIR:-$ROOT/target}/release/tollgate}" +%FT%TZ)"
  echo "gw_cpu: $GW_CPU"
  echo "load_cpu: $LOAD_CPU"
  echo "durations: c1=${DUR}s c50=${DUR}s stream_c50=${STREAM_DUR}s stream_probes=$STREAM_N warmup=${WARMUP}s"
} > "$RUN/env.txt"

# ---------------------------------------------------------------- simulator (CPU $LOAD_CPU)
taskset -c "$LOAD_CPU" "$BIN" mock-provider --listen "127.0.0.1:$SIM_PORT" \
  --ttft-ms 0 --chunk-delay-ms 0 --chunks 8 --completion-tokens 16 \
  >"$RUN/sim.log" 2>&1 &
SIM_PID=$!
PIDS+=("$SIM_PID")
wait_http "http://127.0.0.1:$SIM_PORT/_sim/config"

sim_config() { curl -fsS -o /dev/null -X POST -H 'content-type: application/json' \
  -d "$1" "http://127.0.0.1:$SIM_PORT/_sim/config"; }

# ---------------------------------------------------------------- nginx (CPU $GW_CPU)
mkdir -p "$WORK/nginx"
cat > "$WORK/nginx/nginx.conf" <<NGX
worker_processes 1;
pid $WORK/nginx/nginx.pid;
error_log $WORK/nginx/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path $WORK/nginx/client_body;
    proxy_temp_path $WORK/nginx/proxy;
    fastcgi_temp_path $WORK/nginx/fastcgi;
    uwsgi_temp_path $WORK/nginx/uwsgi;
    scgi_temp_path $WORK/nginx/scgi;
    keepalive_timeout 75s;
    keepalive_requests 1000000;
    upstream sim {
        server 127.0.0.1:$SIM_PORT;
        keepalive 64;
        keepalive_requests 1000000;
    }
    server {
        listen 127.0.0.1:$NGINX_PORT;
        location / {
            proxy_pass http://sim;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering off;
        }
    }
}
NGX
cp "$WORK/nginx/nginx.conf" "$RUN/nginx.conf"
taskset -c "$GW_CPU" nginx -e "$WORK/nginx/error.log" -p "$WORK/nginx" -c "$WORK/nginx/nginx.conf" \
  -g 'daemon off; master_process on;' >"$RUN/nginx.log" 2>&1 &
NGINX_PID=$!
PIDS+=("$NGINX_PID")
wait_http "http://127.0.0.1:$NGINX_PORT/v1/models"
nginx_pids() { echo "$NGINX_PID" $(pgrep -P "$NGINX_PID" || true); }

# ---------------------------------------------------------------- Tollgate (CPU $GW_CPU)
cat > "$WORK/tollgate.yaml" <<YAML
server:
  listen: 127.0.0.1:$TG_PORT
storage:
  ledger: sqlite://$WORK/ledger.db
providers:
  sim:
    kind: openai
    base_url: http://127.0.0.1:$SIM_PORT/v1
models:
  gpt-4o-mini:
    deployments: [{provider: sim, model: gpt-4o-mini}]
YAML
if [[ -n ${TOLLGATE_TELEMETRY:-} ]]; then
  echo "telemetry: {endpoint: \"http://127.0.0.1:$SIM_PORT\", sampling_ratio: 1.0, metrics_interval_secs: 10}" \
    >>"$WORK/tollgate.yaml"
fi
cp "$WORK/tollgate.yaml" "$RUN/tollgate.yaml"
KEY=$("$BIN" keys create --name bench --config "$WORK/tollgate.yaml" 2>>"$RUN/tollgate.log")
# TOLLGATE_LD_PRELOAD (diagnostics only): a shared object preloaded into the gateway process.
if [[ -n ${TOLLGATE_LD_PRELOAD:-} ]]; then
  echo "tollgate_ld_preload: $TOLLGATE_LD_PRELOAD" >> "$RUN/env.txt"
  LD_PRELOAD=$TOLLGATE_LD_PRELOAD taskset -c "$GW_CPU" "$BIN" serve --config "$WORK/tollgate.yaml" >>"$RUN/tollgate.log" 2>&1 &
else
  taskset -c "$GW_CPU" "$BIN" serve --config "$WORK/tollgate.yaml" >>"$RUN/tollgate.log" 2>&1 &
fi
TG_PID=$!
PIDS+=("$TG_PID")
wait_http "http://127.0.0.1:$TG_PORT/healthz"
sleep 1
echo "tollgate_rss_idle_kib: $(status_kib "$TG_PID" VmRSS)" >> "$RUN/mem.txt"
echo "nginx_worker_rss_idle_kib: $(status_kib "$(pgrep -P "$NGINX_PID" | head -1)" VmRSS)" >> "$RUN/mem.txt"
echo "tollgate_threads: $(awk '/^Threads:/ {print $2}' "/proc/$TG_PID/status")" >> "$RUN/mem.txt"
log "up: simulator pid $SIM_PID, nginx pid $NGINX_PID, tollgate pid $TG_PID"

# Memory timeline: every second, the phase, Tollgate's RSS and its ledger queue depth.
PHASE_FILE=$WORK/phase
echo idle > "$PHASE_FILE"
phase() { echo "$1" > "$PHASE_FILE"; }
(
  t0=$(date +%s)
  echo "# seconds phase tollgate_rss_kib ledger_queue_depth" > "$RUN/mem-timeline.txt"
  while kill -0 "$TG_PID" 2>/dev/null; do
    q=$(curl -s -m 1 "http://127.0.0.1:$TG_PORT/metrics" 2>/dev/null | awk '/^tollgate_ledger_queue_depth/ {print $2}')
    echo "$(( $(date +%s) - t0 )) $(cat "$PHASE_FILE" 2>/dev/null) $(status_kib "$TG_PID" VmRSS 2>/dev/null) ${q:-?}" >> "$RUN/mem-timeline.txt"
    sleep 1
  done
) &
PIDS+=("$!")

# ---------------------------------------------------------------- measurements
TARGETS=(direct nginx tollgate)
port_of() { case $1 in direct) echo "$SIM_PORT" ;; nginx) echo "$NGINX_PORT" ;; tollgate) echo "$TG_PORT" ;; esac; }
pids_of() { case $1 in direct) echo "$SIM_PID" ;; nginx) nginx_pids ;; tollgate) echo "$TG_PID" ;; esac; }

BODY_PLAIN='{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Hello from the Tollgate benchmark"}]}'
BODY_STREAM='{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Hello from the Tollgate benchmark"}],"stream":true,"stream_options":{"include_usage":true}}'

# Sanity: every target answers the same request with 200 (Tollgate checks the key).
for t in "${TARGETS[@]}"; do
  curl -fsS -o "$RUN/sample-$t.json" -H 'content-type: application/json' \
    -H "authorization: Bearer $KEY" -d "$BODY_PLAIN" "http://127.0.0.1:$(port_of "$t")/v1/chat/completions"
done

wrk_run() { # NAME TARGET BODY CONNS SECONDS → $RUN/NAME.json (wrk summary + CPU of target and simulator)
  local name=$1 t=$2 body=$3 conns=$4 secs=$5 pids c0 c1 s0 s1
  pids=$(pids_of "$t")
  # shellcheck disable=SC2086
  c0=$(cpu_ticks $pids); s0=$(cpu_ticks "$SIM_PID")
  BENCH_BODY=$body BENCH_KEY=$KEY taskset -c "$LOAD_CPU" wrk -t1 -c"$conns" -d"${secs}s" \
    --timeout 10s --latency -s "$BENCH_DIR/chat.lua" \
    "http://127.0.0.1:$(port_of "$t")/v1/chat/completions" > "$RUN/$name.txt"
  # shellcheck disable=SC2086
  c1=$(cpu_ticks $pids); s1=$(cpu_ticks "$SIM_PID")
  sed -n 's/^WRKJSON //p' "$RUN/$name.txt" | python3 -c '
import json, sys
d = json.load(sys.stdin)
d.update(target_cpu_ticks=int(sys.argv[1]), sim_cpu_ticks=int(sys.argv[2]), clk_tck=int(sys.argv[3]),
         conns=int(sys.argv[4]))
print(json.dumps(d))' "$((c1 - c0))" "$((s1 - s0))" "$(getconf CLK_TCK)" "$conns" > "$RUN/$name.json"
}

if awk '{exit !($1 > 1.0)}' /proc/loadavg; then
  log "WARNING: load average $(cut -d' ' -f1 /proc/loadavg) > 1 before measuring: numbers will be noisy"
fi
grep '^cpu' /proc/stat > "$RUN/proc-stat-before.txt"   # steal time: is the hypervisor taking CPU?
phase warmup
log "warm-up (${WARMUP}s at concurrency 50 per target)"
for t in "${TARGETS[@]}"; do
  wrk_run "warmup-$t" "$t" "$BODY_PLAIN" 50 "$WARMUP"
done

phase c1
log "non-streaming, concurrency 1, ${DUR}s per target"
for t in "${TARGETS[@]}"; do wrk_run "c1-$t" "$t" "$BODY_PLAIN" 1 "$DUR"; done

phase c50
log "non-streaming, concurrency 50, ${DUR}s per target"
for t in "${TARGETS[@]}"; do wrk_run "c50-$t" "$t" "$BODY_PLAIN" 50 "$DUR"; done

phase stream-c50
log "streaming, concurrency 50, ${STREAM_DUR}s per target"
for t in "${TARGETS[@]}"; do wrk_run "stream-c50-$t" "$t" "$BODY_STREAM" 50 "$STREAM_DUR"; done

phase ttfb
log "streaming time to first byte, $STREAM_N sequential streams per target"
for t in "${TARGETS[@]}"; do
  taskset -c "$LOAD_CPU" python3 "$BENCH_DIR/stream_probe.py" --port "$(port_of "$t")" \
    --key "$KEY" -n "$STREAM_N" --warmup 50 > "$RUN/ttfb-$t.json"
done

phase chunks
log "streaming hold-back check: chunk delay ${CHUNK_DELAY_MS} ms, $CHUNK_N streams per target"
sim_config "{\"chunk_delay_ms\": $CHUNK_DELAY_MS}"
for t in "${TARGETS[@]}"; do
  taskset -c "$LOAD_CPU" python3 "$BENCH_DIR/stream_probe.py" --port "$(port_of "$t")" \
    --key "$KEY" -n "$CHUNK_N" --warmup 2 --chunk-delay-ms "$CHUNK_DELAY_MS" > "$RUN/chunks-$t.json"
done
# One stream the client abandons mid-way (50 ms into a ~120 ms stream): the gateway must bill
# it from a local token count, which loads the tokenizer tables. Done on purpose so that the
# "RSS idle after the runs" figure always includes that path rather than depending on whether
# wrk happened to cut a stream when its run ended.
curl -s -o /dev/null --max-time 0.05 -H 'content-type: application/json' -H "authorization: Bearer $KEY" \
  -d "$BODY_STREAM" "http://127.0.0.1:$TG_PORT/v1/chat/completions" || true
sim_config '{"chunk_delay_ms": 0}'

grep '^cpu' /proc/stat > "$RUN/proc-stat-after.txt"
phase after
sleep 1
{
  echo "tollgate_rss_after_kib: $(status_kib "$TG_PID" VmRSS)"
  echo "tollgate_hwm_kib: $(status_kib "$TG_PID" VmHWM)"
  echo "nginx_worker_hwm_kib: $(status_kib "$(pgrep -P "$NGINX_PID" | head -1)" VmHWM)"
  echo "sim_hwm_kib: $(status_kib "$SIM_PID" VmHWM)"
} >> "$RUN/mem.txt"

# ---------------------------------------------------------------- optional soak (Tollgate only)
if [[ $SOAK -gt 0 ]]; then
  log "soak: ${SOAK}s of constant load on Tollgate (25 plain + 25 streaming connections), RSS every 10 s"
  phase soak
  : > "$RUN/soak-rss.txt"
  BENCH_BODY=$BODY_PLAIN BENCH_KEY=$KEY taskset -c "$LOAD_CPU" wrk -t1 -c25 -d"${SOAK}s" --timeout 10s \
    -s "$BENCH_DIR/chat.lua" "http://127.0.0.1:$TG_PORT/v1/chat/completions" > "$RUN/soak-plain.txt" &
  W1=$!
  BENCH_BODY=$BODY_STREAM BENCH_KEY=$KEY taskset -c "$LOAD_CPU" wrk -t1 -c25 -d"${SOAK}s" --timeout 10s \
    -s "$BENCH_DIR/chat.lua" "http://127.0.0.1:$TG_PORT/v1/chat/completions" > "$RUN/soak-stream.txt" &
  W2=$!
  PIDS+=("$W1" "$W2")
  start=$(date +%s)
  while kill -0 "$W1" 2>/dev/null || kill -0 "$W2" 2>/dev/null; do
    echo "$(( $(date +%s) - start )) $(status_kib "$TG_PID" VmRSS)" >> "$RUN/soak-rss.txt"
    sleep 10
  done
  wait "$W1" "$W2" || true
  phase after-soak
  sleep 1
  echo "idle $(status_kib "$TG_PID" VmRSS)" >> "$RUN/soak-rss.txt"
  echo "tollgate_hwm_after_soak_kib: $(status_kib "$TG_PID" VmHWM)" >> "$RUN/mem.txt"
  for f in soak-plain soak-stream; do sed -n 's/^WRKJSON //p' "$RUN/$f.txt" > "$RUN/$f.json"; done
fi

echo "load_after: $(cut -d' ' -f1-3 /proc/loadavg)" >> "$RUN/env.txt"
ls -l "$WORK"/ledger.db* > "$RUN/ledger-files.txt" 2>&1 || true

# ---------------------------------------------------------------- report
python3 "$BENCH_DIR/report.py" "$RUN" | tee "$RUN/results.md"
log "raw outputs in $RUN"
