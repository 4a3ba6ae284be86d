#!/usr/bin/env bash
# Runs the cargo-fuzz (libFuzzer) targets in fuzz/ for a while each and prints a Markdown table:
# target | executions | seconds | crashes | corpus size (files).
#
#   bench/fuzz.sh [SECONDS_PER_TARGET] [TARGET[:SECONDS]...]     default: 20 s, every target
#
# A target given as `name:SECONDS` runs for that long instead (e.g. `bench/fuzz.sh 600 openai
# config_load:180`).
#
# Builds once (`cargo +nightly fuzz build -O -a`: optimised, with debug assertions and overflow
# checks, AddressSanitizer on) into fuzz/target, then runs the targets one after another under
# `nice -n 10`, each on a scratch copy of its committed seeds (fuzz/corpus/<target>) in /tmp, so
# corpus growth never touches the repository. A crash stops that target's run; its input is kept
# in fuzz/artifacts/<target>/ (reproduce with `cargo +nightly fuzz run -O -a <target> <file>`) and
# the script exits 1 after the table. Needs the nightly toolchain and a C++ compiler (libFuzzer
# is built from source); installs cargo-fuzz if it is missing.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
FUZZ=$ROOT/fuzz
SECS=${1:-20}
shift || true
usage() { echo "usage: $0 [SECONDS_PER_TARGET] [TARGET[:SECONDS]...]" >&2; exit 2; }
[[ $SECS =~ ^[0-9]+$ && $SECS -gt 0 ]] || usage

log() { echo "[fuzz] $*" >&2; }

rustup toolchain list 2>/dev/null | grep -q '^nightly' \
  || { echo "the nightly toolchain is needed: rustup toolchain install nightly" >&2; exit 2; }
command -v c++ >/dev/null || command -v clang++ >/dev/null \
  || { echo "a C++ compiler is needed to build libFuzzer: apt-get install g++" >&2; exit 2; }
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
  log "installing cargo-fuzz"
  cargo install cargo-fuzz --locked
fi

# The build stays in fuzz/target (or FUZZ_TARGET_DIR) whatever the caller's CARGO_TARGET_DIR:
# the sanitizer build must not share the main workspace's artifacts.
export CARGO_TARGET_DIR=${FUZZ_TARGET_DIR:-$FUZZ/target}
cd "$ROOT"
ALL=$(cargo +nightly fuzz list)
TARGETS=()
declare -A SECONDS_OF
[[ $# -gt 0 ]] || set -- $ALL
for arg in "$@"; do
  t=${arg%%:*}
  s=$SECS
  [[ $arg == *:* ]] && s=${arg#*:}
  [[ $s =~ ^[0-9]+$ && $s -gt 0 ]] || usage
  grep -qx "$t" <<<"$ALL" || { echo "unknown target '$t'; targets:" $ALL >&2; exit 2; }
  TARGETS+=("$t")
  SECONDS_OF[$t]=$s
done

build_start=$(date +%s)
log "cargo +nightly fuzz build -O -a"
nice -n 10 cargo +nightly fuzz build -O -a >&2
log "built in $(($(date +%s) - build_start)) s"
HOST=$(rustc +nightly -vV | sed -n 's/^host: //p')
BIN=$CARGO_TARGET_DIR/$HOST/release

WORK=$(mktemp -d /tmp/tollgate-fuzz.XXXXXX)
log "scratch corpora and logs in $WORK"

rows=()
failed=0
for t in "${TARGETS[@]}"; do
  corpus=$WORK/corpus/$t
  artifacts=$FUZZ/artifacts/$t
  mkdir -p "$corpus" "$artifacts"
  if [[ -d $FUZZ/corpus/$t ]]; then
    cp -r "$FUZZ/corpus/$t/." "$corpus/"
  fi
  before=$(find "$artifacts" -type f | wc -l)
  secs=${SECONDS_OF[$t]}
  log "$t: ${secs}s"
  start=$(date +%s%N)
  set +e
  nice -n 10 "$BIN/$t" "$corpus" \
    -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
    -artifact_prefix="$artifacts/" >"$WORK/$t.log" 2>&1
  rc=$?
  set -e
  seconds=$((($(date +%s%N) - start + 500000000) / 1000000000))
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$WORK/$t.log" | tail -1)
  if [[ -z $execs ]]; then
    execs=$(grep -oE '^#[0-9]+' "$WORK/$t.log" | tail -1 | tr -d '#')
  fi
  crashes=$(($(find "$artifacts" -type f | wc -l) - before))
  if [[ $rc -ne 0 && $crashes -eq 0 ]]; then
    crashes=1 # died without leaving an input (e.g. out of memory in the harness itself)
  fi
  if [[ $crashes -gt 0 ]]; then
    failed=1
    log "$t: CRASH (exit $rc), see $WORK/$t.log and $artifacts/"
    grep -m1 -A4 -E 'panicked at|ERROR: (libFuzzer|AddressSanitizer)' "$WORK/$t.log" >&2 || true
  fi
  files=$(find "$corpus" -type f | wc -l)
  rows+=("| $t | ${execs:-0} | $seconds | $crashes | $files |")
done

echo
echo "| target | executions | seconds | crashes | corpus size (files) |"
echo "|---|---:|---:|---:|---:|"
printf '%s\n' "${rows[@]}"
echo
log "logs: $WORK/*.log; scratch corpora: $WORK/corpus (not committed)"
exit $failed
