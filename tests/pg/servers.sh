# servers.sh - throwaway PostgreSQL servers for tests, on loopback ports,
# sourced by tests/cli scripts (after lib.sh, which provides T_TMP).
#   pg15_start   Debian's postgresql-15 (no pgvector): initdb in $T_TMP, as
#                an unprivileged user when run as root (postgres refuses
#                root); sets PG15_URL, or returns 1 with PG_WHY set
#   pglite_start PostgreSQL + pgvector compiled to WebAssembly (npm
#                @electric-sql/pglite-socket + pglite-pgvector, installed
#                from package-lock.json when missing); sets PGLITE_URL
#                (PG15_STOP / PG15_START: shell lines that stop and start it)
#   pg_servers_stop  stops whatever was started (also on EXIT via the trap
#                the caller sets)
PG_BIN=${PG_BIN:-/usr/lib/postgresql/15/bin}
PG_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
PG15_DIR= PGLITE_PID= PG_WHY=

pg_free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# as_pg CMD...: runs CMD as the unprivileged user when root, from /tmp (the
# checkout may sit where that user cannot enter, and initdb and postgres
# refuse to start in a folder they cannot read)
as_pg() {
  if [ "$(id -u)" -ne 0 ]; then "$@"; return; fi
  if command -v runuser >/dev/null; then (cd /tmp && runuser -u nobody -- "$@")
  else (cd /tmp && setpriv --reuid=nobody --regid=nogroup --clear-groups "$@"); fi
}

pg15_start() {
  [ -x "$PG_BIN/initdb" ] || { PG_WHY="no $PG_BIN/initdb (apt-get install postgresql-15)"; return 1; }
  PG15_DIR=$(mktemp -d /tmp/imgsearch-pg15.XXXXXX)
  chmod 755 "$PG15_DIR"
  [ "$(id -u)" -ne 0 ] || chown nobody "$PG15_DIR"
  local port; port=$(pg_free_port)
  as_pg "$PG_BIN/initdb" -D "$PG15_DIR/data" -A trust -U imgsearch -E UTF8 --no-sync \
    >"$PG15_DIR/initdb.log" 2>&1 || { PG_WHY="initdb failed: $(tail -n 2 "$PG15_DIR/initdb.log")"; return 1; }
  # the commands as one shell line each (test_store's restart case runs them)
  local as=
  [ "$(id -u)" -ne 0 ] || as="cd /tmp && runuser -u nobody --"
  PG15_START="$as $PG_BIN/pg_ctl -D $PG15_DIR/data -l $PG15_DIR/log -w -t 60 start -o '-k $PG15_DIR -c listen_addresses=127.0.0.1 -p $port -c fsync=off -c max_connections=200' >/dev/null 2>&1"
  PG15_STOP="$as $PG_BIN/pg_ctl -D $PG15_DIR/data -m fast -w stop >/dev/null 2>&1"
  sh -c "$PG15_START" || { PG_WHY="pg_ctl start failed: $(tail -n 3 "$PG15_DIR/log")"; return 1; }
  PG15_URL="postgresql://imgsearch@127.0.0.1:$port/postgres"
}

pglite_start() {
  command -v node >/dev/null || { PG_WHY="node is not installed"; return 1; }
  local srv=$PG_ROOT/node_modules/@electric-sql/pglite-socket/dist/scripts/server.js
  if [ ! -f "$srv" ] || [ ! -d "$PG_ROOT/node_modules/@electric-sql/pglite-pgvector" ]; then
    command -v npm >/dev/null || { PG_WHY="npm is not installed"; return 1; }
    (cd "$PG_ROOT" && npm ci --no-audit --no-fund) >"$T_TMP/npm.log" 2>&1 ||
      { PG_WHY="npm ci failed: $(tail -n 3 "$T_TMP/npm.log" | tr '\n' ' ')"; return 1; }
  fi
  local port; port=$(pg_free_port)
  (cd "$PG_ROOT" && exec node "$srv" -p "$port" -e @electric-sql/pglite-pgvector:vector -m 64) \
    >"$T_TMP/pglite.log" 2>&1 &
  PGLITE_PID=$!
  PGLITE_URL="postgresql://postgres@127.0.0.1:$port/postgres?sslmode=disable"
  # WebAssembly start-up takes seconds to a minute on a busy machine
  local i
  for i in $(seq 1 240); do
    "$PG_BIN/pg_isready" -q -h 127.0.0.1 -p "$port" -t 1 && return 0
    kill -0 "$PGLITE_PID" 2>/dev/null || break
    sleep 0.5
  done
  PG_WHY="pglite-socket did not start: $(tail -n 3 "$T_TMP/pglite.log" | tr '\n' ' ')"
  return 1
}

pg_servers_stop() {
  if [ -n "$PG15_DIR" ] && [ -d "$PG15_DIR/data" ]; then
    as_pg "$PG_BIN/pg_ctl" -D "$PG15_DIR/data" -m immediate -w stop >/dev/null 2>&1
  fi
  [ -n "$PG15_DIR" ] && rm -rf "$PG15_DIR"
  PG15_DIR=
  if [ -n "$PGLITE_PID" ]; then kill "$PGLITE_PID" 2>/dev/null; wait "$PGLITE_PID" 2>/dev/null; fi
  PGLITE_PID=
}
