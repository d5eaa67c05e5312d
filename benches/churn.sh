#!/usr/bin/env bash
# Churn: wrk keeps a steady load while the app is scaled between 2 and 4 backends every 100 ms, CHANGES times.
#   rattan:  reads each change from Marathon (/v2/apps polled every 50 ms) and swaps its table; no reload.
#   HAProxy: driven as Bamboo drives it: rewrite haproxy.cfg, then its default reload command
#            `haproxy -f cfg -p pid -D -sf $(cat pid)` after every change.
# Prints failed requests (wrk's socket errors + non-2xx) for both. Usage: benches/churn.sh [changes] [interval-s]
# Needs: nginx, haproxy, wrk (Debian packages), a release build (built here if missing).
set -euo pipefail
cd "$(dirname "$0")/.."
CHANGES=${1:-1000}
EVERY=${2:-0.1}
source benches/lib.sh
need nginx haproxy wrk
TMP=$(mktemp -d)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  [ -f "$TMP/haproxy.pid" ] && kill $(cat "$TMP/haproxy.pid") 2>/dev/null || true
  pkill -f "$TMP/haproxy.cfg" 2>/dev/null || true
  rm -rf "$TMP"
}
trap cleanup EXIT
B=($(free_port) $(free_port) $(free_port) $(free_port))
MARATHON=$(free_port); HAP=$(free_port); RAT=$(free_port); API=$(free_port)

nginx_conf "$TMP/nginx.conf" "$TMP" <<NGX
  server { listen 127.0.0.1:${B[0]}; listen 127.0.0.1:${B[1]}; listen 127.0.0.1:${B[2]}; listen 127.0.0.1:${B[3]};
           location / { return 200 "ok\n"; } }
  server { listen 127.0.0.1:$MARATHON; location = /v2/apps { default_type application/json; alias $TMP/apps.json; } }
NGX

apps_json() { # n -> Marathon /v2/apps body with n running tasks
  local n=$1 tasks="" i
  for ((i=0; i<n; i++)); do
    tasks+="${tasks:+,}{\"id\":\"churn.$i\",\"host\":\"127.0.0.1\",\"ports\":[${B[$i]}],\"state\":\"TASK_RUNNING\"}"
  done
  echo "{\"apps\":[{\"id\":\"/churn\",\"instances\":$n,\"tasks\":[$tasks]}]}"
}
haproxy_cfg() { # n -> haproxy.cfg with n servers, as a Bamboo template would render it
  local n=$1 i
  cat <<HAP
global
  maxconn 4000
defaults
  mode http
  timeout connect 5s
  timeout client 50s
  timeout server 50s
  http-reuse always
frontend f
  bind 127.0.0.1:$HAP
  default_backend b
backend b
  balance leastconn
HAP
  for ((i=0; i<n; i++)); do echo "  server s$i 127.0.0.1:${B[$i]}"; done
}
write() { echo "$2" > "$1.tmp" && mv "$1.tmp" "$1"; }

write "$TMP/apps.json" "$(apps_json 2)"
nginx -c "$TMP/nginx.conf" -g 'daemon off;' & PIDS+=($!)
write "$TMP/haproxy.cfg" "$(haproxy_cfg 2)"
haproxy -f "$TMP/haproxy.cfg" -p "$TMP/haproxy.pid" -D
RUST_LOG=warn target/release/rattan --marathon "http://127.0.0.1:$MARATHON" --events poll --poll-interval 50ms \
  --http-bind "127.0.0.1:$RAT" --api-bind "127.0.0.1:$API" --data-dir "$TMP/data" >/dev/null 2>"$TMP/rattan.err" &
PIDS+=($!)
serving 10 "http://127.0.0.1:$RAT/churn" "http://127.0.0.1:$HAP/churn"

# churn NAME: one change every $EVERY s, CHANGES times, under wrk; prints the summary line.
churn() {
  local name=$1 port=$2 secs out i n
  secs=$(awk -v c="$CHANGES" -v e="$EVERY" 'BEGIN { printf "%d", c * e + 2 }')
  wrk -t1 -c20 -d"${secs}s" "http://127.0.0.1:$port/churn" > "$TMP/wrk.$name" 2>&1 &
  local wrk_pid=$!
  sleep 1
  for ((i=1; i<=CHANGES; i++)); do
    n=$(( i % 2 ? 4 : 2 ))
    if [ "$name" = rattan ]; then
      write "$TMP/apps.json" "$(apps_json $n)"
    else
      write "$TMP/haproxy.cfg" "$(haproxy_cfg $n)"
      haproxy -f "$TMP/haproxy.cfg" -p "$TMP/haproxy.pid" -D -sf $(cat "$TMP/haproxy.pid") 2>>"$TMP/haproxy.err" || true
    fi
    sleep "$EVERY"
  done
  wait "$wrk_pid" || true
  awk -v name="$name" '
    /requests in/ {reqs=$1}
    /Socket errors/ {gsub(",", ""); sock=$4+$6+$8+$10}
    /Non-2xx/ {non2xx=$5}
    END { printf "%-8s %10d %10d %10d %10d\n", name, reqs, sock+0, non2xx+0, sock+non2xx }' "$TMP/wrk.$name"
}
echo "wrk -t1 -c20, $CHANGES changes (2 <-> 4 backends) every ${EVERY}s"
printf "%-8s %10s %10s %10s %10s\n" proxy requests sock-errs non-2xx failed
churn rattan "$RAT"
churn haproxy "$HAP"
# The changes really reached rattan: its table holds the last change.
sleep 0.5
echo "rattan's final table: $(curl -fs "http://127.0.0.1:$API/api/state" | grep -o '"Host"' | wc -l) tasks (last change: $(( CHANGES % 2 ? 4 : 2 )))"
