# server.sh - helpers to run `imgsearch serve` from a test script (sourced
# after tests/cli/lib.sh): start on a free port, wait until ready, stop.
# Under ASan the quarantine is kept small so RSS measures mean something.

#
# With IMGSEARCH_TEST_PG_URL set (a PostgreSQL server's URL, as
# tests/http/test_http_pg.sh sets it), serve_start runs every server on
# PostgreSQL instead: each `--store FILE` becomes a database of that server
# (serve_pg_url), created the first time FILE is used, so a restart on the
# same FILE finds its items; and, unless --uploads or IMGSEARCH_UPLOADS
# says otherwise, uploads go to FILE.images, where the embedded store keeps
# them. Scripts that read FILE themselves (sqlite3, CLI commands on it)
# cannot run this way.

. "$(dirname "${BASH_SOURCE[0]}")/../hang.sh"
SERVE_PIDS=()

# serve_pg_url FILE: the URL of FILE's database on $IMGSEARCH_TEST_PG_URL's
# server (created when missing): "t_" + the file's name + a hash of its
# absolute path, so two scripts' store.db are two databases
serve_pg_url() {
  local url=$IMGSEARCH_TEST_PG_URL abs base name q
  abs=$(realpath -m -- "$1")
  base=$(basename -- "$abs" | tr -c 'a-zA-Z0-9_\n' '_' | tr 'A-Z' 'a-z' | head -c 30)
  name=t_${base}_$(printf '%s' "$abs" | md5sum | head -c 10)
  q=
  [[ $url == *\?* ]] && q=?${url#*\?}
  url=${url%%\?*}
  url=${url%/*}/$name$q
  if ! grep -qx -- "$name" "$T_TMP/pg-databases" 2>/dev/null; then
    psql -q -X "$IMGSEARCH_TEST_PG_URL" -c "CREATE DATABASE $name" >/dev/null 2>"$T_TMP/pg-create.err" ||
      grep -q 'already exists' "$T_TMP/pg-create.err" ||
      echo "serve_pg_url: CREATE DATABASE $name: $(cat "$T_TMP/pg-create.err")" >&2
    echo "$name" >>"$T_TMP/pg-databases"
  fi
  echo "$url"
}

# serve_pg_args ARGS...: ARGS with each --store FILE (or --store=FILE) made a
# database URL, and --uploads FILE.images added (see above); the result in
# SERVE_ARGS
serve_pg_args() {
  SERVE_ARGS=()
  local a store= uploads=${IMGSEARCH_UPLOADS:-}
  while [ $# -gt 0 ]; do
    a=$1; shift
    case $a in
      --store) store=$1; SERVE_ARGS+=(--store "$(serve_pg_url "$1")"); shift ;;
      --store=*) store=${a#--store=}; SERVE_ARGS+=(--store "$(serve_pg_url "$store")") ;;
      --uploads|--uploads=*) uploads=1; SERVE_ARGS+=("$a") ;;
      *) SERVE_ARGS+=("$a") ;;
    esac
  done
  if [ -z "$store" ] && [ -n "${IMGSEARCH_STORE:-}" ] && ! [[ $IMGSEARCH_STORE == *://* ]]; then
    store=$IMGSEARCH_STORE
    SERVE_ARGS+=(--store "$(serve_pg_url "$store")")
  fi
  if [ -n "$store" ] && [ -z "$uploads" ]; then SERVE_ARGS+=(--uploads "$store.images"); fi
}

# serve_start NAME ARGS...: starts the server on 127.0.0.1:0 and reads the
# port it printed; sets PID, URL, PORT and SLOG (its stderr).
serve_start() {
  SLOG=$T_TMP/$1.log
  shift
  if [ -n "${IMGSEARCH_TEST_PG_URL:-}" ]; then serve_pg_args "$@"; set -- "${SERVE_ARGS[@]}"; fi
  ASAN_OPTIONS=${ASAN_OPTIONS:+$ASAN_OPTIONS:}quarantine_size_mb=16 \
    "$BIN" serve --listen 127.0.0.1:0 "$@" 2>"$SLOG" &
  PID=$!
  SERVE_PIDS+=("$PID")
  URL=
  for _ in $(seq 400); do
    URL=$(grep -o 'listening on http://[0-9.]*:[0-9]*' "$SLOG" | head -n 1 | sed 's/listening on //')
    [ -n "$URL" ] && break
    kill -0 "$PID" 2>/dev/null || break
    sleep 0.025
  done
  PORT=${URL##*:}
  [ -n "$URL" ] || echo "the server did not start: $(cat "$SLOG")"
}

# serve_ready: waits (20 s at most) for /health to say "ok" with the
# start-up precompute idle
serve_ready() {
  local h=$T_TMP/ready.json
  for _ in $(seq 800); do
    curl -s "$URL/health" >"$h" 2>/dev/null
    grep -q '"status":"ok"' "$h" && grep -q '"state":"idle"' "$h" && return 0
    sleep 0.025
  done
  echo "not ready: $(cat "$h")"
  return 1
}

# serve_stop: SIGTERM, then serve_wait
serve_stop() {
  kill -TERM "$PID" 2>/dev/null
  serve_wait
}

# serve_wait: waits for the server to exit (60 s at most); RC gets the exit
# code. A server still running then is a failed case with its threads'
# backtraces (tests/hang.sh), killed, RC 124.
serve_wait() {
  wait_bounded "$PID" 60 >"$T_TMP/stop-hang.txt"
  RC=$?
  if [ "$RC" -eq 124 ]; then
    bad "the server ($PID) did not exit within 60 s: $(cat "$T_TMP/stop-hang.txt")"
    kill -KILL "$PID" 2>/dev/null
    wait "$PID" 2>/dev/null
  fi
}

# kills what is still running (for an EXIT trap)
serve_kill_all() {
  for p in "${SERVE_PIDS[@]}"; do kill -9 "$p" 2>/dev/null; done
}
