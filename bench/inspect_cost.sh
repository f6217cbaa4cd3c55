#!/usr/bin/env bash
# inspect_cost.sh - what the request inspector costs, counted rather than timed: the daemon
# runs under callgrind with the inspector on, then off (--no-inspect); after a warm-up that
# fills the ring, its counters are zeroed, N requests are sent (HTTP/1.1, then h2 over TLS)
# and the instructions are dumped. Prints instructions per request on and off and the
# difference. Deterministic for HTTP/1.1; h2's count also moves with how its streams are
# batched (compare several runs). User space only: the kernel's share is not counted.
# Needs valgrind (callgrind_control) and h2load (nghttp2-client). Loopback only.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$HERE/.."
. "$HERE/lib.sh"
N=${N:-4000}
cd "$ROOT"
[[ ${NO_BUILD:-0} = 1 ]] || cargo build --release -q --bin portok --example bench_backend
for tool in valgrind callgrind_control h2load; do
  command -v "$tool" >/dev/null || { echo "inspect_cost.sh needs $tool (apt-get install valgrind nghttp2-client)"; exit 2; }
done
BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release"
WORK=$(mktemp -d /tmp/portok-icost.XXXXXX)
DAEMON_PID=""
cleanup() {
  [[ -n $DAEMON_PID ]] && kill "$DAEMON_PID" 2>/dev/null || true
  kill "$BACKEND_PID" 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT
BPORT=$(pick_port)
"$BIN/examples/bench_backend" --port "$BPORT" >/dev/null 2>&1 & BACKEND_PID=$!
wait_port "$BPORT"
load() { # proto port count
  if [[ $1 = h1 ]]; then
    timeout 300 h2load --h1 -n "$3" -c 10 -H ':authority: myapp.localhost' "http://127.0.0.1:$2/"
  else
    timeout 300 h2load -n "$3" -c 1 -m 10 -H ':authority: myapp.localhost' "https://127.0.0.1:$2/"
  fi | awk '/^requests:/ {print $8}'
}
declare -A IR
for s in on off; do
  port=$(pick_port)
  flag=(); [[ $s = off ]] && flag=(--no-inspect)
  mkdir -p "$WORK/$s"
  HOME=$WORK PORTOK_STATE_DIR=$WORK/$s valgrind --tool=callgrind \
    --callgrind-out-file="$WORK/$s.%p.out" "$BIN/portok" __daemon --port "$port" "${flag[@]}" \
    >"$WORK/$s.log" 2>&1 &
  DAEMON_PID=$!
  for _ in $(seq 600); do port_busy "$port" && break; sleep 0.1; done
  HOME=$WORK PORTOK_STATE_DIR=$WORK/$s PORTOK_PORT=$port "$BIN/portok" alias myapp "$BPORT" >/dev/null 2>&1
  for proto in h1 h2; do
    load "$proto" "$port" 600 >/dev/null   # warm-up: the ring goes round, the spares fill
    callgrind_control -z "$DAEMON_PID" >/dev/null 2>&1
    ok=$(load "$proto" "$port" "$N")
    [[ $ok = "$N" ]] || { echo "$s $proto: only $ok of $N requests succeeded" >&2; exit 1; }
    callgrind_control -d "$s-$proto" "$DAEMON_PID" >/dev/null 2>&1
    sleep 1
    dump=$(grep -l "^desc: Trigger: dump $s-$proto\$" "$WORK"/$s.*.out.* | head -1)
    IR[$s-$proto]=$(awk '/^summary:/ {print $2}' "$dump")
  done
  kill "$DAEMON_PID"; wait "$DAEMON_PID" 2>/dev/null || true; DAEMON_PID=""
done
for proto in h1 h2; do
  on=${IR[on-$proto]}; off=${IR[off-$proto]}
  python3 -c "
on, off, n = $on / $N, $off / $N, $N
print(f'$proto: {on:,.0f} instructions per request with the inspector, {off:,.0f} without: {on - off:+,.0f} ({(on - off) / off:+.1%}), over {n} requests')"
done
