#!/usr/bin/env bash
# The store conformance suite (tests/test_store.c, test_store_backends.c,
# test_store_claim.c)
# against PostgreSQL:
# Debian's postgresql-15, which has no pgvector (the real[] column and the
# local index), and pglite-socket with pgvector 0.8 (the vector column and
# pgvector's HNSW index). The servers are started here on loopback ports
# and stopped at the end. Also: the fallback schema converted to pgvector
# by a later open without losing an item, and SQL injection attempts.
# A server that cannot be had is a skip tagged tool:postgresql /
# tool:pglite, which tests/run accepts only where IMGSEARCH_ALLOW_SKIP says.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/../pg/servers.sh"
trap 'pg_servers_stop; rm -rf "$T_TMP"' EXIT
TESTS=$(dirname "$BIN")/tests
for t in test_store test_store_backends test_store_claim; do
  [ -x "$TESTS/$t" ] || { bad "no $TESTS/$t (make tests)"; t_done; exit; }
done

# suite NAME URL [ENV...]: runs every case of test_store,
# test_store_backends and test_store_claim against URL
suite() {
  local name=$1 url=$2 t rc line; shift 2
  for t in test_store test_store_backends test_store_claim; do
    env "$@" IMGSEARCH_TEST_STORE="$url" "$TESTS/$t" >"$T_TMP/$name.$t.log" 2>&1
    rc=$?
    line=$(grep -Eo '[0-9]+ passed, [0-9]+ failed' "$T_TMP/$name.$t.log" | tail -n 1)
    if [ $rc -eq 0 ] && [[ $line == *" 0 failed" ]] && [[ $line != "0 passed"* ]]; then ok
    else bad "$t against $name: rc $rc, $line: $(grep -E '^FAIL' "$T_TMP/$name.$t.log" | head -n 5)"; fi
    echo "$t against $name: $line"
  done
}

# pg_cli NAME URL WANT_INDEX: the commands on a PostgreSQL store: migrate,
# index, search, items, duplicates; the same answers as the embedded store
pg_cli() {
  local name=$1 url=$2 want=$3
  t_run 2 "$BIN" migrate --store "$url"
  t_grep "$ERR" 'no store in this database'
  t_run 0 "$BIN" index --store "$url" --model "$MODEL" "$MODEL/images"
  t_grep "$OUT" '"added": 12, .*"failed": 0'
  t_run 0 "$BIN" migrate --store "$url"
  t_grep "$OUT" "\"kind\": \"postgresql\", \"index\": \"$want\""
  t_run 0 "$BIN" index --store "$T_TMP/$name.db" --model "$MODEL" "$MODEL/images"
  t_run 0 "$BIN" search --store "$url" --model "$MODEL" --image "$MODEL/images/fruits.jpg" -k 5 --json
  cut -d, -f1-3 "$OUT" >"$T_TMP/$name.pg"
  t_run 0 "$BIN" search --store "$T_TMP/$name.db" --model "$MODEL" --image "$MODEL/images/fruits.jpg" -k 5 --json
  cut -d, -f1-3 "$OUT" >"$T_TMP/$name.lite"
  if cmp -s "$T_TMP/$name.pg" "$T_TMP/$name.lite"; then ok; else
    bad "$name: search differs from the embedded store: $(diff "$T_TMP/$name.pg" "$T_TMP/$name.lite" | head -n 6)"; fi
  t_run 0 "$BIN" items --store "$url" count
  t_grep "$OUT" '"items": 12, "waiting": 0'
  t_run 0 "$BIN" duplicates --store "$url" --threshold 0.999 --json
  t_grep "$OUT" 'butterfly_exif6.jpg'
}

# no_migrate NAME SERVER_URL: index and serve with --no-migrate refuse a
# database without the schema, or with an older one (exit 2, saying to run
# imgsearch migrate --store URL), and run on one migrate made
no_migrate() {
  local name=$1 url=${2%%\?*} q=
  [[ $2 == *\?* ]] && q=?${2#*\?}
  psql -q -X "$2" -c "CREATE DATABASE $name" >/dev/null || { bad "CREATE DATABASE $name"; return; }
  url=${url%/*}/$name$q
  t_run 2 "$BIN" index --store "$url" --model "$MODEL" --no-migrate "$MODEL/images/fruits.jpg"
  t_grep "$ERR" "no store schema yet|no store schema and migrations are off"
  t_grep "$ERR" "run 'imgsearch migrate --store postgresql://[^']*/$name"
  t_run 2 "$BIN" serve --store "$url" --uploads "$T_TMP/$name.up" --model "$MODEL" \
    --listen 127.0.0.1:0 --no-migrate
  t_grep "$ERR" "migrations are off: run 'imgsearch migrate --store "
  # nothing was made
  t_eq "tables after a refused --no-migrate" \
    "$(psql -X -At "$url" -c "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'")" 0
  # without it, index migrates (as imgsearch migrate does); then it runs
  t_run 0 "$BIN" index --store "$url" --model "$MODEL" "$MODEL/images/fruits.jpg"
  t_run 0 "$BIN" index --store "$url" --model "$MODEL" --no-migrate "$MODEL/images/left01.jpg"
  t_grep "$OUT" '"added": 1,'
  # a schema older than this imgsearch's (the current version minus one
  # stands for one; put back after)
  cur=$(psql -q -X -tA "$url" -c 'SELECT max(version) FROM schema_version')
  psql -q -X "$url" -c "UPDATE schema_version SET version = version - 1 WHERE version = $cur" >/dev/null
  t_run 2 env IMGSEARCH_NO_MIGRATE=1 "$BIN" serve --store "$url" --uploads "$T_TMP/$name.up" \
    --model "$MODEL" --listen 127.0.0.1:0
  t_grep "$ERR" "schema version $((cur - 1)) is older than this imgsearch's \($cur\) and migrations are off: run 'imgsearch migrate --store postgresql://"
  t_run 2 "$BIN" index --store "$url" --model "$MODEL" --no-migrate "$MODEL/images/fruits.jpg"
  psql -q -X "$url" -c "UPDATE schema_version SET version = $cur WHERE version = $((cur - 1))" >/dev/null
}

# --no-migrate on the embedded store: a file without the schema is refused too
t_run 2 "$BIN" index --store "$T_TMP/nomig.db" --model "$MODEL" --no-migrate "$MODEL/images/fruits.jpg"
t_grep "$ERR" "no store schema yet and migrations are off: run 'imgsearch migrate --store .*nomig.db'"
t_run 0 "$BIN" index --store "$T_TMP/nomig.db" --model "$MODEL" "$MODEL/images/fruits.jpg"
t_run 0 "$BIN" index --store "$T_TMP/nomig.db" --model "$MODEL" --no-migrate "$MODEL/images"
if command -v sqlite3 >/dev/null; then
  # an older schema (the current version minus one stands for one)
  cur=$(sqlite3 "$T_TMP/nomig.db" 'SELECT max(version) FROM schema_version')
  sqlite3 "$T_TMP/nomig.db" "UPDATE schema_version SET version = version - 1 WHERE version = $cur"
  t_run 2 "$BIN" index --store "$T_TMP/nomig.db" --model "$MODEL" --no-migrate "$MODEL/images"
  t_grep "$ERR" "schema version $((cur - 1)) is older than this imgsearch's \($cur\) and migrations are off"
  sqlite3 "$T_TMP/nomig.db" "UPDATE schema_version SET version = $cur WHERE version = $((cur - 1))"
else
  bad "sqlite3 is not installed (scripts/install-deps)"
fi

if pg15_start; then
  no_migrate nomig "$PG15_URL"
  suite postgresql-15 "$PG15_URL" IMGSEARCH_TEST_PG_STOP="$PG15_STOP" IMGSEARCH_TEST_PG_START="$PG15_START"
  psql -q "$PG15_URL" -c 'DROP SCHEMA public CASCADE; CREATE SCHEMA public' >/dev/null 2>&1
  pg_cli pg15 "$PG15_URL" local-hnsw
  # while the server is down: exit 1 (503 for HTTP), a message that says so
  sh -c "$PG15_STOP"
  t_run 1 "$BIN" items --store "$PG15_URL" count
  t_grep "$ERR" 'database is unavailable'
  # a server that takes the connection and never answers: unavailable after
  # the default 10 s connect timeout, not after the system's TCP timeouts
  mute=$T_TMP/mute.port
  python3 -c 'import socket, sys, time
s = socket.socket(); s.bind(("127.0.0.1", 0)); s.listen(8)
open(sys.argv[1], "w").write(str(s.getsockname()[1]))
c = [s.accept() for _ in range(8)]
time.sleep(60)' "$mute" &
mpid=$!
for _ in $(seq 100); do [ -s "$mute" ] && break; sleep 0.05; done
t0=$SECONDS
t_run 1 "$BIN" items --store "postgresql://imgsearch@127.0.0.1:$(cat "$mute")/x" count
t_grep "$ERR" 'database is unavailable.*timeout'
t_le "seconds until a mute server is given up" "$((SECONDS - t0))" 20
kill "$mpid" 2>/dev/null
wait "$mpid" 2>/dev/null
else
  t_skip tool:postgresql "$PG_WHY"
fi
if pglite_start; then
  suite pglite-pgvector "$PGLITE_URL" IMGSEARCH_TEST_ONE_SESSION=1
  psql -q "$PGLITE_URL" -c 'DROP SCHEMA public CASCADE; CREATE SCHEMA public' >/dev/null 2>&1
  # made without pgvector, then converted by migrate: nothing lost
  IMGSEARCH_PG_NO_VECTOR=1 pg_cli pglite "$PGLITE_URL" local-hnsw
  t_run 0 "$BIN" migrate --store "$PGLITE_URL"
  t_grep "$OUT" '"index": "pgvector-hnsw"'
  t_run 0 "$BIN" items --store "$PGLITE_URL" count
  t_grep "$OUT" '"items": 12, "waiting": 0'
  t_run 0 "$BIN" search --store "$PGLITE_URL" --model "$MODEL" --image "$MODEL/images/fruits.jpg" -k 5 --json
  cut -d, -f1-3 "$OUT" >"$T_TMP/conv.pg"
  if cmp -s "$T_TMP/conv.pg" "$T_TMP/pglite.lite"; then ok; else
    bad "pgvector search differs from the embedded store: $(diff "$T_TMP/conv.pg" "$T_TMP/pglite.lite" | head -n 6)"; fi
  t_run 0 "$BIN" migrate --store "$PGLITE_URL" --index ivfflat --lists 2
  t_grep "$OUT" '"index": "pgvector-ivfflat"'
  t_run 0 "$BIN" search --store "$PGLITE_URL" --model "$MODEL" --text "fruit" --filter "x=1" -k 3
else
  t_skip tool:pglite "$PG_WHY"
fi
t_done
