#!/usr/bin/env bash
# soak.sh - the hardening issue's load check: 2,000 concurrent keep-alive connections through
# the proxy for 60 s (SOAK_SECS), at whatever rate this machine gives, sampling the daemon's
# RSS and open file descriptors every second. Passes when there were no errors, the RSS
# stayed under 64 MiB, and neither RSS nor fds grew between the first and the last 10 s.
# Loopback only; every run bounded by `timeout`. Writes bench/results/soak.json.
# SOAK_START_ARGS: extra `portok proxy start` flags (e.g. `--max-inflight 0` to compare).
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$HERE/.."
. "$HERE/lib.sh"
SECS=${SOAK_SECS:-60}
CONNS=${SOAK_CONNS:-2000}
cd "$ROOT"
[[ ${NO_BUILD:-0} = 1 ]] || cargo build --release -q --bin portok --example bench_backend --example bench_load
BIN="$ROOT/target/release"
# shellcheck disable=SC2086  # flags, split on purpose
soak_start soak ${SOAK_START_ARGS:-}
echo "soak: $CONNS connections for ${SECS}s through portok (pid $DPID) on 127.0.0.1:$PPORT"
: > "$WORK/samples.csv"
( for _ in $(seq 1 $((SECS + 5))); do
    rss=$(awk '/VmRSS/ {print $2}' "/proc/$DPID/status" 2>/dev/null || echo 0)
    fds=$(ls "/proc/$DPID/fd" 2>/dev/null | wc -l)
    echo "$(date +%s),$rss,$fds" >> "$WORK/samples.csv"
    sleep 1
  done ) & SAMPLER=$!
if command -v wrk >/dev/null; then
  LOADGEN=wrk
  timeout $((SECS + 30)) wrk -t2 -c"$CONNS" -d"${SECS}s" --latency -H 'Host: myapp.localhost' \
    "http://127.0.0.1:$PPORT/" > "$WORK/load.txt" 2>&1 || true
else
  LOADGEN=bench_load
  timeout $((SECS + 30)) "$BIN/examples/bench_load" "http://127.0.0.1:$PPORT/" -c "$CONNS" -d "${SECS}s" \
    -H 'Host: myapp.localhost' > "$WORK/load.txt" 2>&1 || true
fi
kill $SAMPLER 2>/dev/null || true; wait $SAMPLER 2>/dev/null || true
cat "$WORK/load.txt"
python3 - "$WORK/samples.csv" "$WORK/load.txt" "$LOADGEN" "$CONNS" "$SECS" "$HERE/results/soak.json" <<'PY'
import json, re, sys
samples, load, loadgen, conns, secs, out = sys.argv[1:]
rows = [tuple(map(int, l.split(","))) for l in open(samples) if l.strip()]
rows = [r for r in rows if r[1] > 0]
text = open(load).read()
if loadgen == "wrk":
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))
    errs = sum(int(x) for x in re.findall(r"(?:connect|read|write|timeout) (\d+)", text))
    non2xx = int((re.search(r"Non-2xx or 3xx responses: (\d+)", text) or [0, 0])[1])
else:
    j = json.loads(text.strip().splitlines()[-1]); rps = j["rps"]; errs = j.get("errors", 0); non2xx = j.get("non_2xx", 0)
first, last = rows[2:12], rows[-12:-2]
avg = lambda xs, i: sum(x[i] for x in xs) / max(1, len(xs))
res = {
    "loadgen": loadgen, "connections": int(conns), "seconds": int(secs), "rps": rps,
    "errors": errs, "non_2xx": non2xx,
    "rss_kib_max": max(r[1] for r in rows), "rss_kib_first10s": round(avg(first, 1)), "rss_kib_last10s": round(avg(last, 1)),
    "fds_first10s": round(avg(first, 2)), "fds_last10s": round(avg(last, 2)),
}
res["pass"] = (errs == 0 and non2xx == 0 and res["rss_kib_max"] < 64 * 1024
               and res["rss_kib_last10s"] <= res["rss_kib_first10s"] * 1.10 + 1024
               and res["fds_last10s"] <= res["fds_first10s"] + 16)
json.dump(res, open(out, "w"), indent=2)
print(json.dumps(res, indent=2))
sys.exit(0 if res["pass"] else 1)
PY
