#!/usr/bin/env bash
# Instructions per gRPC call in portok's daemon, counted by callgrind: a figure that repeats
# from run to run (within about 1%), where calls/s on this shared 2-core machine move by
# 10%. Use it to compare two builds of the proxy path; bench/run.sh gives the rates.
#
#   bash bench/grpc_instructions.sh                       # target/release/portok
#   bash bench/grpc_instructions.sh OLD_BIN NEW_BIN ...   # each build in turn
#   DAEMON_ARGS="--no-inspect" bash bench/grpc_instructions.sh
#   KEEP=1 bash bench/grpc_instructions.sh   # keep the callgrind files (callgrind_annotate)
#
# The tonic example (examples/grpc.rs) serves on a free port; each daemon runs under
# `valgrind --tool=callgrind` with a state dir of its own and an h2 route to it. `grpc load`
# makes unary calls one at a time: 2 s to warm up, then CALL_SECS (10) counted. The line per
# build: its calls and instructions per call. With BARE=1 the same count is taken of
# examples/bare_h2_proxy.rs (hyper's h2 server and an h2 client, nothing else) as a
# yardstick of the two HTTP/2 stacks alone. Each proxy runs on one core (`taskset -c 0`, as
# bench/run.sh pins the servers), so portok's daemon runs tokio's single-threaded scheduler
# as it does in the bench; PIN=0 leaves it on every core (the multi-threaded one, which
# reads the clock more: 3-4% more instructions). CACHE_SIM=1 adds callgrind's cache model:
# first-level cache misses per call, for code and for data (slower to count).
#
# Needs valgrind (apt-get install -y valgrind) and a release build:
#   cargo build --release --bin portok --example grpc --example bare_h2_proxy
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
REL=${CARGO_TARGET_DIR:-$ROOT/target}/release
CALL_SECS=${CALL_SECS:-10}
command -v valgrind >/dev/null || { echo "grpc_instructions.sh: needs valgrind (apt-get install -y valgrind)" >&2; exit 2; }
BARE=${BARE:-0}
PIN=${PIN:-1}
PIN_CMD=()
if [[ $PIN == 1 ]]; then
  command -v taskset >/dev/null || { echo "grpc_instructions.sh: PIN=1 needs taskset (util-linux); PIN=0 runs unpinned" >&2; exit 2; }
  PIN_CMD=(taskset -c 0)
fi
CACHE_SIM_ARGS=()
if [[ ${CACHE_SIM:-0} == 1 ]]; then
  CACHE_SIM_ARGS=(--cache-sim=yes)
fi
bins=("$REL/examples/grpc")
[[ $BARE == 1 ]] && bins+=("$REL/examples/bare_h2_proxy")
for b in "${bins[@]}"; do
  [[ -x $b ]] || { echo "grpc_instructions.sh: no $b; cargo build --release --example $(basename "$b")" >&2; exit 2; }
done
BINS=("$@")
(( ${#BINS[@]} )) || BINS=("$REL/portok")
WORK=$(mktemp -d)
PIDS=()
cleanup() { kill "${PIDS[@]}" 2>/dev/null || true; if [[ -n ${KEEP:-} ]]; then echo "kept: $WORK"; else rm -rf "$WORK"; fi; }
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 1 300); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.1; done; return 1; }

app=$(free_port)
(cd "$WORK" && PORT=$app exec "$REL/examples/grpc") > "$WORK/app.log" 2>&1 &
PIDS+=($!)
wait_port "$app" || { echo "the tonic example did not start: $(tail -3 "$WORK/app.log")" >&2; exit 1; }

dump() {
  timeout 60 callgrind_control -d "$1" > "$2" 2>&1 \
    || { echo "callgrind_control -d $1 failed: $(tail -3 "$2")" >&2; return 1; }
}

# count KEY LABEL PORT AUTHORITY CMD...: run CMD under callgrind, load it through PORT, print
# LABEL's instructions per call. With ALIAS_BIN set, CMD is that portok's daemon, and the
# route to the app is made once it listens.
count() {
  local name=$1 label=$2 port=$3 authority=$4; shift 4
  local out=$WORK/$name.cg
  ${PIN_CMD[@]+"${PIN_CMD[@]}"} valgrind --tool=callgrind ${CACHE_SIM_ARGS[@]+"${CACHE_SIM_ARGS[@]}"} --callgrind-out-file="$out" "$@" > "$WORK/$name.log" 2>&1 &
  local vg=$!
  PIDS+=("$vg")
  wait_port "$port" || { echo "$name did not listen: $(tail -3 "$WORK/$name.log")" >&2; return 1; }
  if [[ -n ${ALIAS_BIN:-} ]]; then
    "$ALIAS_BIN" alias grpcbench "$app" --upstream h2 > "$WORK/$name.alias" 2>&1 \
      || { echo "$label: no route: $(cat "$WORK/$name.alias")" >&2; return 1; }
  fi
  "$REL/examples/grpc" load "http://127.0.0.1:$port" "$authority" -c 1 -m 1 -d 2 > /dev/null
  # The warm-up's counts go to a file of their own. (callgrind_control reaches the process
  # through vgdb; bounded, should ptrace be refused.)
  dump "$vg" "$WORK/$name.ctl" || return 1
  "$REL/examples/grpc" load "http://127.0.0.1:$port" "$authority" -c 1 -m 1 -d "$CALL_SECS" \
    | tail -1 > "$WORK/$name.json"
  dump "$vg" "$WORK/$name.ctl" || return 1
  kill "$vg"; wait "$vg" 2>/dev/null || true
  python3 - "$label" "$WORK/$name.json" "$out.2" <<'PY'
import json, sys
name, load, cg = sys.argv[1:4]
calls = json.load(open(load))["requests"]
events = next(l for l in open(cg) if l.startswith("events:")).split()[1:]
totals = dict(zip(events, map(int, next(l for l in open(cg) if l.startswith("summary:")).split()[1:])))
per = {k: v // max(calls, 1) for k, v in totals.items()}
errors = json.load(open(load))["errors"]
misses = ""
if "I1mr" in per:
    misses = f"; first-level cache misses per call: code {per['I1mr']:,}, data {per['D1mr'] + per['D1mw']:,}"
print(f"{name}: {calls} calls ({errors} failed), {per['Ir']:,} instructions per call{misses}")
PY
}

i=0
for bin in "${BINS[@]}"; do
  i=$((i + 1))
  port=$(free_port)
  export PORTOK_STATE_DIR=$WORK/state$i HOME=$WORK/home$i PORTOK_PORT=$port
  mkdir -p "$HOME"
  # shellcheck disable=SC2086 # DAEMON_ARGS: flags, one word each
  ALIAS_BIN=$bin \
    count "portok$i" "$bin ${DAEMON_ARGS:-}" "$port" "grpcbench.localhost:$port" \
    "$bin" __daemon --port "$port" ${DAEMON_ARGS:-}
done
if [[ $BARE == 1 ]]; then
  port=$(free_port)
  ALIAS_BIN="" count bare "examples/bare_h2_proxy" "$port" "127.0.0.1:$port" "$REL/examples/bare_h2_proxy" "$port" "$app"
fi
