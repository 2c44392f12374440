# server.sh - helpers to run `imgsearch serve` from a test script (sourced
# after tests/cli/lib.sh): start on a free port, wait until ready, stop.
# Under ASan the quarantine is kept small so RSS measures mean something.

SERVE_PIDS=()

# serve_start NAME ARGS...: starts the server on 127.0.0.1:0 and reads the
# port it printed; sets PID, URL, PORT and SLOG (its stderr).
serve_start() {
  SLOG=$T_TMP/$1.log
  shift
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

# serve_stop: SIGTERM, wait for the exit; RC gets the exit code
serve_stop() {
  kill -TERM "$PID" 2>/dev/null
  wait "$PID"
  RC=$?
}

# kills what is still running (for an EXIT trap)
serve_kill_all() {
  for p in "${SERVE_PIDS[@]}"; do kill -9 "$p" 2>/dev/null; done
}
