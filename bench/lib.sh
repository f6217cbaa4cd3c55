# shellcheck shell=bash
# Helpers shared by bench/run.sh and bench/guard.sh (sourced, not run).
# Everything here talks to 127.0.0.1 only.

# The exact 100-byte body of the nginx backend (examples/bench_backend.rs serves the same).
BENCH_BODY="hello world 01234567890123456789012345678901234567890123456789012345678901234567890123456789abcdefgh"

# Is something accepting on 127.0.0.1:PORT? (bash's /dev/tcp: no ss/netstat needed)
port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# Wait until 127.0.0.1:PORT accepts (up to ~10 s).
wait_port() {
  local _
  for _ in $(seq 1 200); do port_busy "$1" && return 0; sleep 0.05; done
  echo "nothing accepts on 127.0.0.1:$1" >&2
  return 1
}

# A port that nothing listens on, from 20000 up to the ephemeral range (32768 by default):
# a port in that range can be taken at any time as the local end of an outgoing connection,
# and a server told to listen there then fails to bind.
pick_port() {
  local p _ lo=20000 hi=40000 eph
  read -r eph _ < /proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || eph=0
  (( eph > lo + 1000 )) && hi=$eph
  for _ in $(seq 1 200); do
    p=$((lo + RANDOM % (hi - lo)))
    port_busy "$p" || { echo "$p"; return 0; }
  done
  echo "no free port found" >&2
  return 1
}

# "2s" / "500ms" / "3" -> seconds (for h2load -D and timeouts)
dur_secs() {
  case $1 in
    *ms) awk -v v="${1%ms}" 'BEGIN{printf "%g", v/1000}' ;;
    *s) echo "${1%s}" ;;
    *m) echo $(( ${1%m} * 60 )) ;;
    *) echo "$1" ;;
  esac
}

# utime+stime (clock ticks) summed over the given pids, from /proc/PID/stat.
cpu_ticks() {
  local s=0 p f
  for p in "$@"; do
    f=$(cat "/proc/$p/stat" 2>/dev/null) || continue
    f=${f##*) }
    # shellcheck disable=SC2086
    set -- $f
    s=$((s + ${12} + ${13}))
  done
  echo "$s"
}

# VmRSS in KiB summed over the given pids.
rss_kib() {
  local s=0 p v
  for p in "$@"; do
    v=$(awk '/^VmRSS:/{print $2}' "/proc/$p/status" 2>/dev/null) || v=0
    s=$((s + ${v:-0}))
  done
  echo "$s"
}

# pid and its direct children (nginx master + worker)
tree_pids() { echo "$1 $(ps -o pid= --ppid "$1" 2>/dev/null | tr -s ' \n' ' ')" | tr -s ' ' | sed 's/ $//'; }

# run_load TOOL URL HOST DURATION CONNS OUTFILE
#   TOOL: wrk | bench_load | h2load | bench_load_h2
#   Uses ${PIN_LG[@]} (may be empty), $BIN_LOAD, $THREADS (wrk -t), $H2_CONNS, $H2_STREAMS.
#   Every run is bounded by `timeout`.
run_load() {
  local tool=$1 url=$2 host=$3 dur=$4 conns=$5 out=$6 secs
  secs=$(dur_secs "$dur")
  local cap=$(( ${secs%.*} + 30 ))
  case $tool in
    wrk)
      timeout "$cap" ${PIN_LG[@]+"${PIN_LG[@]}"} wrk -t"${THREADS:-1}" -c"$conns" -d"$dur" --latency \
        -H "Host: $host" "$url" > "$out" 2>&1 || true ;;
    bench_load)
      timeout "$cap" ${PIN_LG[@]+"${PIN_LG[@]}"} "$BIN_LOAD" "$url" -c "$conns" -d "$dur" \
        -H "Host: $host" > "$out" 2>"$out.err" || true ;;
    h2load)
      # h2 needs the name in :authority: the URL is https://HOST:PORT/ with HOST resolving or not,
      # so connect to 127.0.0.1 and pass the authority with -H ':authority: ...' (SNI follows the URL host).
      timeout "$cap" ${PIN_LG[@]+"${PIN_LG[@]}"} h2load -t1 -c "${H2_CONNS:-1}" -m "${H2_STREAMS:-50}" -D "$secs" \
        -H ":authority: $host" --log-file="$out.log" "$url" > "$out" 2>&1 || true ;;
    bench_load_h2)
      timeout "$cap" ${PIN_LG[@]+"${PIN_LG[@]}"} "$BIN_LOAD" "$url" --h2 -c "${H2_CONNS:-1}" -m "${H2_STREAMS:-50}" \
        -d "$dur" -H "Host: $host" > "$out" 2>"$out.err" || true ;;
    *) echo "unknown load tool $tool" >&2; return 1 ;;
  esac
}

# parse_load TOOL OUTFILE -> "rps p50_ms p99_ms requests bad" (bad = non-2xx + socket errors)
parse_load() {
  local tool=$1 out=$2
  case $tool in
    wrk)
      awk '
        function ms(v) { if (v ~ /us$/) return v / 1000; if (v ~ /ms$/) return v + 0; if (v ~ /s$/) return v * 1000; return v + 0 }
        /^Requests\/sec/ { rps = $2 }
        $1 == "50%" { p50 = ms($2) }
        $1 == "99%" { p99 = ms($2) }
        / requests in / { req = $1 }
        /Non-2xx or 3xx responses:/ { bad += $NF }
        /Socket errors:/ { gsub(/,/, ""); bad += $4 + $6 + $8 + $10 }
        END { printf "%s %s %s %s %d\n", rps + 0, p50 + 0, p99 + 0, req + 0, bad }' "$out" ;;
    bench_load|bench_load_h2)
      local j; j=$(tail -1 "$out")
      field() { sed -n "s/.*\"$1\":\([0-9.eE+-]*\).*/\1/p" <<<"$j"; }
      echo "$(field rps) $(field p50_ms) $(field p99_ms) $(field requests) $(( $(field non2xx) + $(field errors) ))" ;;
    h2load)
      local rps req ok pct
      rps=$(sed -n 's/^finished in [^,]*, \([0-9.]*\) req\/s.*/\1/p' "$out")
      req=$(awk '/^requests:/{print $8}' "$out")     # done
      ok=$(awk '/^status codes:/{print $3}' "$out")  # 2xx
      # per-request log: start(us) status duration(us)
      pct=$(awk -F'\t' '{print $3}' "$out.log" 2>/dev/null | sort -n | awk '{v[NR]=$1} END {
              if (NR == 0) { print "0 0"; exit }
              i50 = int(NR * 0.50 + 0.999999); i99 = int(NR * 0.99 + 0.999999)
              printf "%.3f %.3f\n", v[i50] / 1000, v[i99] / 1000 }')
      rm -f "$out.log"
      echo "${rps:-0} ${pct% *} ${pct#* } ${req:-0} $(( ${req:-0} - ${ok:-0} ))" ;;
  esac
}

# Percent of all CPUs busy over the next N seconds (from /proc/stat).
cpu_busy_pct() {
  local a b
  a=$(awk '/^cpu /{print $2+$3+$4+$7+$8+$9, $2+$3+$4+$5+$6+$7+$8+$9}' /proc/stat)
  sleep "${1:-3}"
  b=$(awk '/^cpu /{print $2+$3+$4+$7+$8+$9, $2+$3+$4+$5+$6+$7+$8+$9}' /proc/stat)
  awk -v a="$a" -v b="$b" 'BEGIN{split(a,x," "); split(b,y," "); t=y[2]-x[2]; printf "%.0f", (t > 0) ? 100 * (y[1] - x[1]) / t : 0}'
}

# Wait up to $1 seconds until the machine is quiet (< $2 % busy over 3 s); 0 if it became quiet.
wait_quiet() {
  local limit=$1 max=${2:-10} waited=0 busy
  while :; do
    busy=$(cpu_busy_pct 3)
    (( busy < max )) && return 0
    (( waited >= limit )) && { echo "machine still ${busy}% busy after ${waited}s; measuring anyway" >&2; return 1; }
    echo "machine ${busy}% busy (other work); waiting for it to settle (WAIT_QUIET=$limit)" >&2
    sleep 7; waited=$((waited + 10))
  done
}

# soak_start NAME [proxy start flags...]: a soak's set-up, shared by soak.sh and soak_h2.sh.
# Needs $BIN (target/release). Sets WORK (removed on exit, with the daemon and backend
# stopped), BPORT (examples/bench_backend), PPORT and DPID (a portok daemon with its own
# state dir and HOME, route myapp.localhost -> the backend), and raises the fd limit.
soak_start() {
  local name=$1; shift
  WORK=$(mktemp -d "/tmp/portok-$name.XXXXXX")
  trap 'PORTOK_STATE_DIR=$WORK/state "$BIN/portok" proxy stop >/dev/null 2>&1 || true; kill $BACKEND_PID 2>/dev/null || true; rm -rf "$WORK"' EXIT
  ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
  BPORT=$(pick_port); PPORT=$(pick_port)
  "$BIN/examples/bench_backend" --port "$BPORT" >/dev/null 2>&1 & BACKEND_PID=$!
  wait_port "$BPORT"
  export PORTOK_STATE_DIR=$WORK/state PORTOK_PORT=$PPORT HOME=$WORK
  "$BIN/portok" proxy start "$@" >/dev/null 2>&1
  "$BIN/portok" alias myapp "$BPORT" >/dev/null 2>&1
  DPID=$(cat "$WORK/state/proxy.pid")
}
