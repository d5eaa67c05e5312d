# Shared by the benchmark scripts (sourced from the repository root, not run).

# need TOOL...: stops with the apt hint when one is missing; builds the release binary when there is none.
need() {
  for t in "$@"; do command -v "$t" >/dev/null || { echo "missing $t (apt-get install nginx haproxy wrk)"; exit 1; }; done
  [ -x target/release/rattan ] || cargo build --release --bin rattan >/dev/null
}

# scratch: a temporary folder $TMP, and $PIDS, every process started into it killed when the script exits.
scratch() {
  TMP=$(mktemp -d)
  PIDS=()
  trap 'for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$TMP"' EXIT
}

# serving SECONDS URL...: waits until every URL answers 2xx; if one still does not after SECONDS, says which,
# shows rattan's log ($TMP/rattan.err) and stops the script.
serving() {
  local secs=$1 u i all
  shift
  for i in $(seq 1 $((secs * 10))); do
    all=1
    for u in "$@"; do curl -fs "$u" >/dev/null 2>&1 || { all=0; break; }; done
    [ "$all" = 1 ] && return 0
    sleep 0.1
  done
  for u in "$@"; do curl -fs "$u" >/dev/null 2>&1 || { echo "no answer from $u"; cat "$TMP/rattan.err"; exit 1; }; done
}

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# nginx_conf FILE DIR <<<SERVERS: nginx as the fast backend and Marathon stand-in (one worker, no logs, endless
# keep-alive), its files in DIR, with the server blocks read from standard input.
nginx_conf() {
  local servers
  servers=$(cat)
  cat > "$1" <<NGX
worker_processes 1;
pid $2/nginx.pid;
error_log $2/nginx.err;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 10000000;
  client_body_temp_path $2; proxy_temp_path $2; fastcgi_temp_path $2; uwsgi_temp_path $2; scgi_temp_path $2;
$servers
}
NGX
}
