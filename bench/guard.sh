#!/usr/bin/env bash
# bench/guard.sh - CI regression guard for portok's proxy throughput (about 15 s).
#
# Starts examples/bench_backend and a portok daemon (temporary state dir, free ports, all on
# 127.0.0.1), then loads "direct" (the backend itself) and "portok" (plain HTTP/1.1 through
# the daemon) with the same load generator, interleaved: wrk -t1 -c50 when installed, else
# examples/bench_load. It prints each round and the ratio portok/direct, and exits 1 only on a
# gross regression: the best round's ratio below GUARD_MIN_RATIO (0.15), or any failed
# request through portok. It never compares against absolute numbers, so a slow or shared CI
# machine does not fail it. Healthy figures on 2 cores are about 0.3-0.5.
#
# Knobs (env): GUARD_MIN_RATIO=0.15 GUARD_ROUNDS=3 GUARD_DURATION=2s CONNS=50
#              LOADGEN=auto|wrk|bench_load  PIN_MODE=split|none (split when >= 2 CPUs and taskset)
#              GUARD_NO_BUILD=1 (use the existing target/release binaries)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=bench/lib.sh
. "$ROOT/bench/lib.sh"

MIN_RATIO=${GUARD_MIN_RATIO:-0.15}
ROUNDS=${GUARD_ROUNDS:-3}
DURATION=${GUARD_DURATION:-2s}
CONNS=${CONNS:-50}
LOADGEN=${LOADGEN:-auto}
THREADS=1
REL="${CARGO_TARGET_DIR:-$ROOT/target}/release"
BIN_PORTOK="$REL/portok"
BIN_BACKEND="$REL/examples/bench_backend"
BIN_LOAD="$REL/examples/bench_load"

if [[ ${GUARD_NO_BUILD:-0} != 1 ]]; then
  echo "guard: cargo build --release (portok, bench_backend, bench_load)"
  (cd "$ROOT" && cargo build --release --quiet --bin portok --example bench_backend --example bench_load)
fi
for b in "$BIN_PORTOK" "$BIN_BACKEND" "$BIN_LOAD"; do
  [[ -x $b ]] || { echo "guard: missing $b (build it or unset GUARD_NO_BUILD)" >&2; exit 2; }
done

if [[ $LOADGEN == auto ]]; then
  if command -v wrk >/dev/null 2>&1; then LOADGEN=wrk; else LOADGEN=bench_load; fi
fi
if [[ -z ${PIN_MODE:-} ]]; then
  if [[ $(nproc) -ge 2 ]] && command -v taskset >/dev/null 2>&1; then PIN_MODE=split; else PIN_MODE=none; fi
fi
case $PIN_MODE in
  split) PIN_SRV=(taskset -c 0); PIN_LG=(taskset -c 1) ;;
  none)  PIN_SRV=(); PIN_LG=() ;;
  *) echo "guard: PIN_MODE must be split or none" >&2; exit 2 ;;
esac

WORK=$(mktemp -d /tmp/portok-guard.XXXXXX)
export PORTOK_STATE_DIR="$WORK/state"
P_BACKEND=$(pick_port)
PORTOK_PORT=$(pick_port)
while [[ $PORTOK_PORT == "$P_BACKEND" ]]; do PORTOK_PORT=$(pick_port); done
export PORTOK_PORT
BACKEND_PID=""
cleanup() {
  "$BIN_PORTOK" proxy stop >/dev/null 2>&1 || true
  if [[ -n $BACKEND_PID ]]; then kill "$BACKEND_PID" 2>/dev/null || true; wait "$BACKEND_PID" 2>/dev/null || true; fi
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

${PIN_SRV[@]+"${PIN_SRV[@]}"} "$BIN_BACKEND" --port "$P_BACKEND" 2>"$WORK/backend.log" &
BACKEND_PID=$!
wait_port "$P_BACKEND"
${PIN_SRV[@]+"${PIN_SRV[@]}"} "$BIN_PORTOK" proxy start >"$WORK/start.log" 2>&1 ||
  { cat "$WORK/start.log" >&2; exit 2; }
"$BIN_PORTOK" alias myapp "$P_BACKEND" >/dev/null 2>&1

declare -A URL=([direct]="http://127.0.0.1:$P_BACKEND/" [portok]="http://127.0.0.1:$PORTOK_PORT/")
HOST=myapp.localhost

# Preflight: portok must answer 200 with the backend's body (a fast 404 would look "fast").
"$BIN_LOAD" "${URL[portok]}" -c 1 -d 200ms -H "Host: $HOST" >"$WORK/pre.json" 2>/dev/null || true
read -r _ _ _ pre_req pre_bad <<<"$(parse_load bench_load "$WORK/pre.json")"
if [[ ${pre_req:-0} -eq 0 || ${pre_bad:-1} -ne 0 ]]; then
  echo "guard: FAIL: portok does not proxy to the backend: $(cat "$WORK/pre.json")" >&2
  exit 1
fi

echo "guard: loadgen=$LOADGEN pin=$PIN_MODE conns=$CONNS rounds=$ROUNDS duration=$DURATION min_ratio=$MIN_RATIO"
for t in direct portok; do run_load "$LOADGEN" "${URL[$t]}" "$HOST" 1s "$CONNS" "$WORK/warm-$t.out"; done

ratios=()
fail_bad=0
for r in $(seq 1 "$ROUNDS"); do
  declare -A RPS=()
  for t in direct portok; do
    run_load "$LOADGEN" "${URL[$t]}" "$HOST" "$DURATION" "$CONNS" "$WORK/r$r-$t.out"
    read -r rps p50 p99 req bad <<<"$(parse_load "$LOADGEN" "$WORK/r$r-$t.out")"
    RPS[$t]=$rps
    printf 'guard: round %s %-7s %10.0f req/s  p50 %.3f ms  p99 %.3f ms  requests %s  failed %s\n' \
      "$r" "$t" "$rps" "$p50" "$p99" "$req" "$bad"
    if [[ $t == portok && $bad -ne 0 ]]; then fail_bad=1; fi
  done
  ratios+=("$(awk -v a="${RPS[portok]}" -v b="${RPS[direct]}" 'BEGIN{printf "%.3f", (b > 0) ? a / b : 0}')")
done

best=$(printf '%s\n' "${ratios[@]}" | sort -g | tail -1)
median=$(printf '%s\n' "${ratios[@]}" | sort -g | awk '{v[NR]=$1} END{print (NR % 2) ? v[(NR+1)/2] : (v[NR/2]+v[NR/2+1])/2}')
echo "guard: portok/direct ratio per round: ${ratios[*]}  (median $median, best $best, threshold $MIN_RATIO)"
if [[ $fail_bad -ne 0 ]]; then
  echo "guard: FAIL: requests through portok failed (non-2xx or socket errors)" >&2
  exit 1
fi
if awk -v b="$best" -v m="$MIN_RATIO" 'BEGIN{exit !(b < m)}'; then
  echo "guard: FAIL: portok is below $MIN_RATIO x direct throughput in every round (best $best)" >&2
  exit 1
fi
echo "guard: OK"
