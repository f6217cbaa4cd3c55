#!/usr/bin/env bash
# metrics_cost.sh - what per-request counting costs: two daemons side by side, one started
# with --no-metrics, the same backend behind both, wrk rounds interleaved (A B A B ...),
# same pinning as run.sh. Prints requests/s per round and the median ratio (target: counting
# costs <= 3%, i.e. ratio >= 0.97). Loopback only; every load run bounded by `timeout`.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$HERE/.."
. "$HERE/lib.sh"
ROUNDS=${ROUNDS:-5}
DURATION=${DURATION:-5s}
cd "$ROOT"
[[ ${NO_BUILD:-0} = 1 ]] || cargo build --release -q --bin portok --example bench_backend
command -v wrk >/dev/null || { echo "metrics_cost.sh needs wrk (apt-get install wrk)"; exit 2; }
BIN="$ROOT/target/release"
WORK=$(mktemp -d /tmp/portok-mcost.XXXXXX)
cleanup() {
  for s in on off; do PORTOK_STATE_DIR=$WORK/$s "$BIN/portok" proxy stop >/dev/null 2>&1 || true; done
  kill "$BACKEND_PID" 2>/dev/null || true; rm -rf "$WORK"
}
trap cleanup EXIT
BPORT=$(pick_port)
taskset -c 0 "$BIN/examples/bench_backend" --port "$BPORT" >/dev/null 2>&1 & BACKEND_PID=$!
wait_port "$BPORT"
declare -A PORT
for s in on off; do
  PORT[$s]=$(pick_port)
  flag=(); [[ $s = off ]] && flag=(--no-metrics)
  HOME=$WORK PORTOK_STATE_DIR=$WORK/$s PORTOK_PORT=${PORT[$s]} taskset -c 0 "$BIN/portok" proxy start "${flag[@]}" >/dev/null 2>&1
  HOME=$WORK PORTOK_STATE_DIR=$WORK/$s PORTOK_PORT=${PORT[$s]} "$BIN/portok" alias myapp "$BPORT" >/dev/null 2>&1
done
rps() { timeout 60 taskset -c 1 wrk -t1 -c50 -d"$DURATION" -H 'Host: myapp.localhost' "http://127.0.0.1:$1/" | awk '/Requests\/sec/ {print $2}'; }
for s in on off; do rps "${PORT[$s]}" >/dev/null; done   # warm-up
ratios=()
for r in $(seq 1 "$ROUNDS"); do
  on=$(rps "${PORT[on]}"); off=$(rps "${PORT[off]}")
  ratio=$(python3 -c "print(round($on/$off, 4))")
  ratios+=("$ratio")
  echo "round $r: metrics on $on req/s, off $off req/s, ratio $ratio"
done
python3 - "${ratios[@]}" <<'PY'
import statistics, sys
r = sorted(map(float, sys.argv[1:]))
m = statistics.median(r)
print(f"median ratio on/off: {m:.4f} (cost {100*(1-m):.1f}%); target >= 0.97: {'PASS' if m >= 0.97 else 'MISS'}")
PY
