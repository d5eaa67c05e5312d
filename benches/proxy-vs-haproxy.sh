#!/usr/bin/env bash
# Side-by-side benchmark: wrk -> {HAProxy 2.6, rattan} -> nginx `return 200`, on one machine, interleaved; HTTP
# (L7) and TCP (L4: HAProxy `mode tcp`, rattan's HAPROXY_0_MODE=tcp listener, wrk's HTTP over it).
# Metric: requests per proxy CPU-second (from /proc/<pid>/stat) and p50/p99 latency, per round and as median
# ratios rattan/HAProxy; also the CPU time per request split into user and system (kernel) microseconds.
# Many short rounds, because the shared machine's noise comes in bursts of seconds that can swamp one long round;
# the median of the per-round ratios is the figure, and the spread is printed beside it.
# Usage: benches/proxy-vs-haproxy.sh [seconds-per-round] [rounds] (default 3 s x 15)
# Needs: nginx, haproxy, wrk (Debian packages), a release build (built here if missing; RATTAN_BIN=path runs another
# binary, e.g. an older build, for a before/after in one run).
set -euo pipefail
cd "$(dirname "$0")/.."
DUR=${1:-3}
ROUNDS=${2:-15}
source benches/lib.sh
need nginx haproxy wrk taskset
scratch
BACKEND=$(free_port); MARATHON=$(free_port); HAP=$(free_port); RAT=$(free_port); API=$(free_port)
HAPTCP=$(free_port); RATTCP=$(free_port)
NCPU=$(nproc)
LOAD_CPU=$(( NCPU > 1 ? 1 : 0 ))

nginx_conf "$TMP/nginx.conf" "$TMP" <<NGX
  server { listen 127.0.0.1:$BACKEND; location / { return 200 "ok\n"; } }
  server { listen 127.0.0.1:$MARATHON; location = /v2/apps { default_type application/json;
    return 200 '{"apps":[{"id":"/bench","tasks":[{"id":"bench.1","host":"127.0.0.1","ports":[$BACKEND],"state":"TASK_RUNNING"}]},
      {"id":"/benchtcp","labels":{"HAPROXY_0_MODE":"tcp","HAPROXY_0_PORT":"$RATTCP"},"portDefinitions":[{"port":0}],
       "tasks":[{"id":"benchtcp.1","host":"127.0.0.1","ports":[$BACKEND],"state":"TASK_RUNNING"}]}]}'; } }
NGX
taskset -c "$LOAD_CPU" nginx -c "$TMP/nginx.conf" -g 'daemon off;' & PIDS+=($!)

cat > "$TMP/haproxy.cfg" <<HAP
global
  nbthread 1
  maxconn 4000
defaults
  mode http
  timeout connect 5s
  timeout client 50s
  timeout server 50s
  http-reuse always
frontend f
  bind 127.0.0.1:$HAP
  option forwardfor
  default_backend b
backend b
  balance leastconn
  server s1 127.0.0.1:$BACKEND
listen t
  mode tcp
  bind 127.0.0.1:$HAPTCP
  balance leastconn
  server s1 127.0.0.1:$BACKEND
HAP
haproxy -c -q -f "$TMP/haproxy.cfg"
taskset -c 0 haproxy -f "$TMP/haproxy.cfg" -db & HAP_PID=$!; PIDS+=($HAP_PID)

RATTAN_WORKERS=${RATTAN_WORKERS:-1} RUST_LOG=warn taskset -c 0 "${RATTAN_BIN:-target/release/rattan}" --marathon "http://127.0.0.1:$MARATHON" \
  --events poll --poll-interval 1h --http-bind "127.0.0.1:$RAT" --api-bind "127.0.0.1:$API" --data-dir "$TMP/data" \
  --tcp-bind-address 127.0.0.1 \
  >/dev/null 2>"$TMP/rattan.err" & RAT_PID=$!; PIDS+=($RAT_PID)

serving 10 "http://127.0.0.1:$RAT/bench" "http://127.0.0.1:$HAP/bench" "http://127.0.0.1:$RATTCP/"

# user and system clock ticks of a process (all its threads)
cpu_ticks() { awk '{print $14, $15}' "/proc/$1/stat"; }
TCK=$(getconf CLK_TCK)
# run NAME PID PORT -> prints "name rps req/cpu-s p50 p99 user-us/req sys-us/req"
run() {
  local name=$1 pid=$2 port=$3 before after out
  before=$(cpu_ticks "$pid")
  out=$(taskset -c "$LOAD_CPU" wrk -t1 -c20 -d"${DUR}s" --latency "http://127.0.0.1:$port/bench")
  after=$(cpu_ticks "$pid")
  echo "$out" | awk -v name="$name" -v before="$before" -v after="$after" -v tck="$TCK" '
    /requests in/ {reqs=$1}
    /Requests\/sec/ {rps=$2}
    /^ +50%/ {p50=$2} /^ +99%/ {p99=$2}
    /Non-2xx|Socket errors/ {err=err $0}
    END { split(before, b, " "); split(after, a, " "); user=(a[1]-b[1])/tck; sys=(a[2]-b[2])/tck; cpu=user+sys
      printf "%-8s %10.0f %12.0f %8s %8s %8.1f %8.1f %s\n", name, rps, (cpu>0? reqs/cpu : 0), p50, p99,
        (reqs>0? user*1e6/reqs : 0), (reqs>0? sys*1e6/reqs : 0), err }'
}
echo "wrk -t1 -c20 -d${DUR}s, nginx backend; proxies pinned to CPU 0, wrk and nginx to CPU $LOAD_CPU ($NCPU CPUs)"
run warmup "$HAP_PID" "$HAP" >/dev/null; run warmup "$RAT_PID" "$RAT" >/dev/null
median() { sort -n | awk '{v[NR]=$1} END {print v[int((NR+1)/2)]}'; }
# compare MODE HAPROXY_PORT RATTAN_PORT GOAL: interleaved rounds, then median ratios and their spread.
compare() {
  local mode=$1 hport=$2 rport=$3 goal=$4 RESULTS=() h t
  echo "== $mode"
  printf "%-8s %10s %12s %8s %8s %8s %8s\n" proxy req/s req/cpu-s p50 p99 user-us sys-us
  for r in $(seq 1 "$ROUNDS"); do
    h=$(run haproxy "$HAP_PID" "$hport"); echo "$h"; RESULTS+=("$h")
    t=$(run rattan "$RAT_PID" "$rport"); echo "$t"; RESULTS+=("$t")
  done
  # Per-round ratios, then their medians (plain awk: Debian's mawk has no asort).
  local ratios
  ratios=$(printf '%s\n' "${RESULTS[@]}" | awk '
    function ms(v) { if (v ~ /us$/) return v/1000; if (v ~ /ms$/) return v+0; if (v ~ /s$/) return v*1000; return v }
    $1=="haproxy" {h[++nh]=$3; hr[nh]=$2; hp[nh]=ms($4); hq[nh]=ms($5)}
    $1=="rattan" {t[++nt]=$3; tr[nt]=$2; tp[nt]=ms($4); tq[nt]=ms($5)}
    END { for (i=1;i<=nh;i++) printf "%f %f %f %f\n", t[i]/h[i], tp[i]/hp[i], tr[i]/hr[i], tq[i]/hq[i] }')
  local cpu
  cpu=$(echo "$ratios" | awk '{print $1}')
  printf "%s median ratio rattan/haproxy: req per CPU-second %.2fx, req/s %.2fx, p50 %.2fx, p99 %.2fx (latencies: lower is better)\n" "$mode" \
    "$(echo "$cpu" | median)" "$(echo "$ratios" | awk '{print $3}' | median)" \
    "$(echo "$ratios" | awk '{print $2}' | median)" "$(echo "$ratios" | awk '{print $4}' | median)"
  echo "$cpu" | sort -n | awk -v mode="$mode" -v goal="$goal" '{v[NR]=$1; if ($1 >= goal) met++}
    END { printf "%s req per CPU-second, per round: min %.2fx, quartiles %.2fx %.2fx, max %.2fx; %d of %d rounds >= %.1fx (the goal)\n",
      mode, v[1], v[int((NR+3)/4)], v[int((3*NR+3)/4)], v[NR], met, NR, goal }'
}
compare http "$HAP" "$RAT" 1.2
compare tcp "$HAPTCP" "$RATTCP" 1.0
