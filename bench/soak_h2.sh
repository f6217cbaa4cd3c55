#!/usr/bin/env bash
# soak_h2.sh - HTTP/2 under many streams: 200 TLS h2 connections x 20 streams (h2load) for
# SOAK_ROUNDS rounds of SOAK_SECS s, alternating a 100-byte and a 3,000-byte answer, then three
# clients killed mid-run. After each round: the daemon's RSS and open fds. Passes when no
# request failed, the daemon still answers, and 6 s after the last client its RSS is within
# 4 MiB of where it was after the first round (nothing kept per stream or per connection).
# Needs h2load (apt-get install -y nghttp2-client). Loopback only; every run bounded.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$HERE/.."
. "$HERE/lib.sh"
ROUNDS=${SOAK_ROUNDS:-6}
SECS=${SOAK_SECS:-8}
command -v h2load >/dev/null || { echo "soak_h2: h2load not found (apt-get install -y nghttp2-client); skipped"; exit 0; }
cd "$ROOT"
[[ ${NO_BUILD:-0} = 1 ]] || cargo build --release -q --bin portok --example bench_backend
BIN="$ROOT/target/release"
soak_start soak-h2
rss() { awk '/VmRSS/ {print $2}' "/proc/$DPID/status"; }
fds() { ls "/proc/$DPID/fd" | wc -l; }
URL="https://myapp.localhost:$PPORT"
echo "soak_h2: $ROUNDS x ${SECS}s, 200 h2 connections x 20 streams, through portok (pid $DPID); start: rss $(rss) KiB, $(fds) fds"
failed=0; base=0
for i in $(seq 1 "$ROUNDS"); do
  path=/; (( i % 2 == 0 )) && path="/bytes?n=3000"
  out=$(timeout $((SECS + 30)) h2load -t1 -c200 -m20 -D "$SECS" "$URL$path" --connect-to="127.0.0.1:$PPORT" 2>&1 || true)
  line=$(grep -oP 'requests: .*' <<<"$out" | head -1)
  ok=$(grep -oP '\d+(?= succeeded)' <<<"$line" || echo 0)
  bad=$(( $(grep -oP '\d+(?= failed)' <<<"$line" || echo 1) + $(grep -oP '\d+(?= errored)' <<<"$line" || echo 0) ))
  failed=$((failed + bad)); sleep 1
  (( i == 1 )) && base=$(rss)
  echo "round $i $path: $ok succeeded, $bad failed or errored; rss $(rss) KiB, $(fds) fds"
done
for i in 1 2 3; do
  # In a subshell, so the shell's "Killed" notice goes nowhere.
  ( timeout -s KILL 2 h2load -t1 -c200 -m20 -D "$SECS" "$URL/bytes?n=3000" \
      --connect-to="127.0.0.1:$PPORT" >/dev/null 2>&1 || true ) 2>/dev/null
  sleep 1
  echo "client killed mid-run $i: rss $(rss) KiB, $(fds) fds"
done
sleep 6
end=$(rss)
code=$(curl -sk --http2 --max-time 5 --resolve "myapp.localhost:$PPORT:127.0.0.1" "$URL/" -o /dev/null -w '%{http_code}' || echo 000)
echo "6 s later: rss $end KiB (after round 1: $base KiB), $(fds) fds; a new h2 request: $code"
if (( failed == 0 )) && [[ $code == 200 ]] && (( end <= base + 4096 )); then
  echo "soak_h2: OK"
else
  echo "soak_h2: FAILED ($failed failed requests, answer $code, rss $end vs $base KiB)"; exit 1
fi
