# Shared set-up of the single-gateway benchmarks (bench/cache_hit.sh, bench/traffic_ops.sh):
# tool check, optional release build, a private copy of the binary, an output directory, two
# free loopback ports, the simulator on the load CPU, and a cleanup trap that stops everything.
#
# The caller sets ROOT, BUILD (1/0), LOAD_CPU and NAME (the output directory prefix), optionally
# TOOLS (the commands it needs; default wrk, taskset, python3, curl), and a
# `log` function, then sources this file; afterwards BIN, RUN, WORK, PIDS, SIM_PORT and
# TG_PORT are set, `wait_http URL` and `write_config PROVIDER…` are defined, and the simulator
# is answering.

for tool in ${TOOLS:-wrk taskset python3 curl}; do
  command -v "$tool" >/dev/null || { echo "missing tool: $tool (bench/run.sh installs wrk; apt-get install valgrind)" >&2; exit 1; }
done

if [[ $BUILD == 1 ]]; then
  log "cargo build --release -p tollgate"
  (cd "$ROOT" && cargo build --release -p tollgate)
fi
BIN=${TOLLGATE_BIN:-${CARGO_TARGET_DIR:-$ROOT/target}/release/tollgate}
[[ -x $BIN ]] || { echo "no binary at $BIN (drop --no-build)" >&2; exit 1; }

RUN=$ROOT/bench/out/$NAME-$(date -u +%Y%m%dT%H%M%SZ)
mkdir -p "$RUN"
WORK=$(mktemp -d "/tmp/tollgate-$NAME-bench.XXXXXX")
cp "$BIN" "$WORK/tollgate"
BIN=$WORK/tollgate
PIDS=()
cleanup() {
  local rc=$?
  set +e
  for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null; done
  rm -rf "$WORK"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

read -r SIM_PORT TG_PORT < <(python3 -c '
import socket
s = [socket.socket() for _ in range(2)]
for x in s: x.bind(("127.0.0.1", 0))
print(" ".join(str(x.getsockname()[1]) for x in s))')
wait_http() {
  for _ in $(seq 100); do curl -fsS -o /dev/null "$1" 2>/dev/null && return 0; sleep 0.1; done
  echo "timed out waiting for $1" >&2; return 1
}

# Writes $WORK/tollgate.yaml — listen address, ledger (`storage.durability` from
# TOLLGATE_DURABILITY when set), the simulator under each PROVIDER name,
# then stdin (models and the rest) — keeps a copy in $RUN and sets KEY to a new virtual key.
write_config() {
  {
    printf 'server:\n  listen: 127.0.0.1:%s\nstorage:\n  ledger: sqlite://%s/ledger.db\n' "$TG_PORT" "$WORK"
    # Only when asked: a build from before `storage.durability` must still run these scripts.
    [[ -n ${TOLLGATE_DURABILITY:-} ]] && printf '  durability: %s\n' "$TOLLGATE_DURABILITY"
    printf 'providers:\n'
    for p in "$@"; do
      printf '  %s:\n    kind: openai\n    base_url: http://127.0.0.1:%s/v1\n' "$p" "$SIM_PORT"
    done
    cat
  } > "$WORK/tollgate.yaml"
  cp "$WORK/tollgate.yaml" "$RUN/tollgate.yaml"
  KEY=$("$BIN" keys create --name bench --tenant bench --config "$WORK/tollgate.yaml" 2>>"$RUN/tollgate.log")
}

taskset -c "$LOAD_CPU" "$BIN" mock-provider --listen "127.0.0.1:$SIM_PORT" \
  --ttft-ms 0 --chunk-delay-ms 0 --chunks 8 --completion-tokens 16 >"$RUN/sim.log" 2>&1 &
PIDS+=("$!")
wait_http "http://127.0.0.1:$SIM_PORT/_sim/config"
