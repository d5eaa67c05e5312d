#!/usr/bin/env bash
# User-space instructions per proxied request, counted by callgrind: repeatable whatever else the machine does
# (wall-clock figures on shared cores swing by 5-10% between runs). rattan (--workers 1) runs under
# `valgrind --tool=callgrind` in front of nginx `return 200`; wrk sends keep-alive requests (c=20) for SECONDS;
# the whole run, start-up included (~2 M instructions, negligible), is divided by the requests served. Prints the
# total and the functions above 1% of it. Usage: benches/proxy-instructions.sh [seconds] [top-n]
# Needs: nginx, wrk, valgrind (Debian packages), a release build (built here if missing).
set -euo pipefail
cd "$(dirname "$0")/.."
DUR=${1:-8}
TOP=${2:-25}
source benches/lib.sh
need nginx wrk valgrind callgrind_annotate
scratch
BACKEND=$(free_port); MARATHON=$(free_port); RAT=$(free_port); API=$(free_port)

nginx_conf "$TMP/nginx.conf" "$TMP" <<NGX
  server { listen 127.0.0.1:$BACKEND; location / { return 200 "ok\n"; } }
  server { listen 127.0.0.1:$MARATHON; location = /v2/apps { default_type application/json;
    return 200 '{"apps":[{"id":"/bench","tasks":[{"id":"bench.1","host":"127.0.0.1","ports":[$BACKEND],"state":"TASK_RUNNING"}]}]}'; } }
NGX
nginx -c "$TMP/nginx.conf" -g 'daemon off;' & PIDS+=($!)

RATTAN_WORKERS=1 RUST_LOG=warn valgrind --tool=callgrind --callgrind-out-file="$TMP/cg.out" \
  target/release/rattan --marathon "http://127.0.0.1:$MARATHON" --events poll --poll-interval 1h \
  --http-bind "127.0.0.1:$RAT" --api-bind "127.0.0.1:$API" --data-dir "$TMP/data" >/dev/null 2>"$TMP/rattan.err" &
VG=$!; PIDS+=($VG)
# Slow to start under valgrind.
serving 30 "http://127.0.0.1:$RAT/bench"
REQS=$(wrk -t1 -c20 -d"${DUR}s" "http://127.0.0.1:$RAT/bench" | awk '/requests in/ {print $1}')
kill -INT "$VG"; wait "$VG" 2>/dev/null || true
echo "requests: $REQS (wrk -t1 -c20 -d${DUR}s, under callgrind)"
callgrind_annotate "$TMP/cg.out" 2>/dev/null | awk -v r="$REQS" -v top="$TOP" '
  /PROGRAM TOTALS/ { v=$1; gsub(",", "", v); total=v+0; printf "instructions per request: %.0f\n", v/r; next }
  /^ *[0-9,]+ \(/ && total && shown < top {
    v=$1; gsub(",", "", v); v += 0; if (v < total/100) next
    sub(/^ *[0-9,]+ \([ 0-9.]+%\) +/, ""); sub(/ \[.*$/, ""); printf "%8.0f  %s\n", v/r, $0; shown++ }'
