#!/usr/bin/env bash
# The HTTP service on PostgreSQL: Debian's postgresql-15 (no pgvector: the
# real[] column and each server's local index) is started here on a
# loopback port, then
#  1. the main HTTP scripts run with IMGSEARCH_TEST_PG_URL set, so that
#     serve_start (server.sh) gives each of their stores a database of that
#     server; each script's counts become this script's. Left out:
#     test_hostile_req.sh (writes rows into the store file with sqlite3,
#     which has no counterpart here), test_page.sh and test_browser.sh
#     (they drive a browser; the store plays no part there), and
#     test_hostile_conn.sh (connections only; the store plays no part, and
#     its SIGTERM-with-a-full-queue case is timing-bound: under load a
#     queued upload still sending its body at the grace's end is closed
#     with no answer, which it counts as a failure; it passes on its own);
#  2. /health names the index, and --no-migrate refuses a database without
#     the schema (exit 2, saying to run imgsearch migrate);
#  3. the database restarted under a load of PUTs and searches: the
#     server stays up, answers clean 503 JSON errors with Retry-After while
#     the database is away, recovers by itself within seconds, and every
#     PUT it acknowledged (2xx) is in the database afterwards;
#  4. on pglite-socket with pgvector (WebAssembly): /health says
#     pgvector-hnsw and PUT, search and DELETE go through pgvector's index
#     (a skip tagged tool:pglite when it cannot be had).
# Without postgresql-15 the test is a skip tagged tool:postgresql, as in
# tests/cli/test_store_pg.sh.
. "$(dirname "$0")/../cli/lib.sh"
. "$(dirname "$0")/server.sh"
. "$(dirname "$0")/../pg/servers.sh"
trap 'serve_kill_all; pg_servers_stop; rm -rf "$T_TMP"' EXIT
HERE=$(cd "$(dirname "$0")" && pwd)
IMG=$MODEL/images

if ! pg15_start; then
  t_skip tool:postgresql "$PG_WHY"
  t_done; exit
fi
export IMGSEARCH_RATE_LIMIT=0

# ---- 1. the HTTP scripts on PostgreSQL: their counts become ours ---------------
SCRIPTS=${HTTP_PG_SCRIPTS:-test_serve.sh test_uploads.sh test_compat.sh test_cors.sh test_reqlog.sh test_openapi.sh test_sync.sh test_thumbs.sh}
for s in $SCRIPTS; do
  log=$T_TMP/$s.log
  IMGSEARCH_TEST_PG_URL=$PG15_URL bash "$HERE/$s" >"$log" 2>&1
  rc=$?
  line=$(grep -Eo '[0-9]+ passed, [0-9]+ failed(, [0-9]+ skipped)?' "$log" | tail -n 1)
  if [ -z "$line" ]; then
    bad "$s on PostgreSQL printed no counts (exit code $rc): $(tail -n 5 "$log")"
    continue
  fi
  np=${line%% passed*} nf=${line#*passed, } ns=0
  nf=${nf%% failed*}
  [[ $line == *skipped ]] && { ns=${line##*failed, }; ns=${ns%% skipped}; }
  T_PASS=$((T_PASS + np)) T_FAIL=$((T_FAIL + nf)) T_SKIP=$((T_SKIP + ns))
  echo "$s on PostgreSQL: $line"
  # its failures and skips, as its own lines (tests/run reads the SKIP tags)
  grep -E '^(FAIL|SKIP) ' "$log"
  [ "$rc" -eq 0 ] || [ "$nf" -gt 0 ] || bad "$s on PostgreSQL exited $rc with no failed case"
done
# the scripts really ran on the server: one database per store they used
ndb=$(psql -X -At "$PG15_URL" -c "SELECT count(*) FROM pg_database WHERE datname LIKE 't\_%'")
t_ge "databases the scripts made" "$ndb" "$(echo $SCRIPTS | wc -w)"

# ---- 2. /health's index; --no-migrate ---------------------------------------------
DB=$(T_TMP=$T_TMP IMGSEARCH_TEST_PG_URL=$PG15_URL serve_pg_url "$T_TMP/nomig.db")
t_run 2 "$BIN" serve --store "$DB" --uploads "$T_TMP/up" --model "$MODEL" --listen 127.0.0.1:0 \
  --no-migrate
t_grep "$ERR" "no store schema.*run 'imgsearch migrate --store postgresql://imgsearch@127.0.0.1:[0-9]+/t_nomig"
t_run 2 env IMGSEARCH_NO_MIGRATE=1 "$BIN" index --store "$DB" --model "$MODEL" "$IMG/fruits.jpg" \
  --no-migrate
t_grep "$ERR" "migrations are off: run 'imgsearch migrate --store "
t_run 0 "$BIN" migrate --store "$DB" --model-id x --dim 1
t_grep "$OUT" '"index": "local-hnsw"'
# (a store of another model is still refused as such)
t_run 2 "$BIN" index --store "$DB" --model "$MODEL" --no-migrate "$IMG/fruits.jpg"
t_grep "$ERR" "holds embeddings of model 'x'"

# ---- 3. the database restarted under load --------------------------------------------
# (with a password in the URL: the server trusts any, and no answer may
# show the URL, even with the password hidden)
STORE=$(T_TMP=$T_TMP IMGSEARCH_TEST_PG_URL=$PG15_URL serve_pg_url "$T_TMP/restart.db")
STORE=${STORE/:\/\/imgsearch@/://imgsearch:s3cret@}
serve_start restart --store "$STORE" --uploads "$T_TMP/restart.images" --model "$MODEL" \
  --threads 4
serve_ready || bad "the server on PostgreSQL did not become ready"
SPID=$PID
h GET /health
t_grep "$OUT" '"store":\{"kind":"postgres","index":"local-hnsw"\}'
STOP=$T_TMP/stop
ms() { date +%s%3N; }
# put_loop N: PUTs w<N>_<i> until $STOP exists; one line per answer:
# "TIME_MS CODE RETRY_AFTER ID", error bodies in $T_TMP/bodies.<N>
put_loop() {
  local i=0 id code ra imgs=("$IMG"/*.jpg)
  while [ ! -e "$STOP" ]; do
    id=w$1_$i
    code=$(curl -s --max-time 30 -o "$T_TMP/put.$1" -D "$T_TMP/puth.$1" -w '%{http_code}' \
      -X PUT -F "image=@${imgs[i % ${#imgs[@]}]}" -F "metadata={\"w\":$1}" "$URL/items/$id")
    ra=$(grep -i '^Retry-After:' "$T_TMP/puth.$1" | tr -dc '0-9')
    echo "$(ms) $code ${ra:--} $id" >>"$T_TMP/puts.$1"
    [[ $code == 2* ]] || { cat "$T_TMP/put.$1"; echo; } >>"$T_TMP/bodies.$1"
    i=$((i + 1))
  done
}
# search_loop N: POST /search by text and by vector, same record
search_loop() {
  local code ra q
  while [ ! -e "$STOP" ]; do
    q='{"text": "fruit", "k": 5}'
    [ $((RANDOM % 2)) = 0 ] && q='{"id": "w0_0", "k": 5}'
    code=$(curl -s --max-time 30 -o "$T_TMP/s.$1" -D "$T_TMP/sh.$1" -w '%{http_code}' \
      -X POST -H 'Content-Type: application/json' -d "$q" "$URL/search")
    ra=$(grep -i '^Retry-After:' "$T_TMP/sh.$1" | tr -dc '0-9')
    echo "$(ms) $code ${ra:--} search" >>"$T_TMP/searches.$1"
    [[ $code == 2* ]] || { cat "$T_TMP/s.$1"; echo; } >>"$T_TMP/bodies.s$1"
  done
}
curl -s -o /dev/null -X PUT -F "image=@$IMG/fruits.jpg" "$URL/items/w0_0"
loops=()
for n in 1 2 3; do put_loop "$n" & loops+=($!); done
for n in 1 2; do search_loop "$n" & loops+=($!); done
sleep 3
t_down=$(ms)
sh -c "$PG15_STOP" || bad "PG15_STOP failed"
sleep 3
sh -c "$PG15_START" || bad "PG15_START failed: $(tail -n 3 "$PG15_DIR/log")"
t_up=$(ms)
sleep 8
touch "$STOP"
wait "${loops[@]}"
if kill -0 "$SPID" 2>/dev/null; then ok; else bad "the server died: $(tail -n 20 "$SLOG")"; fi
cat "$T_TMP"/puts.* >"$T_TMP/puts"
cat "$T_TMP"/searches.* >"$T_TMP/searches"
cat "$T_TMP"/puts "$T_TMP"/searches | sort -n >"$T_TMP/all"
cat "$T_TMP"/bodies.* >"$T_TMP/bodies" 2>/dev/null || : >"$T_TMP/bodies"
total=$(wc -l <"$T_TMP/all")
acked=$(awk '$2 ~ /^2/' "$T_TMP/puts" | wc -l)
n503=$(awk '$2 == 503' "$T_TMP/all" | wc -l)
echo "restart under load: $total answers ($acked PUTs acknowledged), $n503 answers 503;" \
     "the database was away $((t_up - t_down)) ms"
# every answer is a 2xx or a 503 with Retry-After; the 503s were seen
t_eq "answers neither 2xx nor 503" "$(awk '$2 !~ /^2/ && $2 != 503' "$T_TMP/all" | head -n 3)" ""
t_eq "503s without Retry-After" "$(awk '$2 == 503 && $3 == "-"' "$T_TMP/all" | head -n 3)" ""
t_ge "503 answers while the database was away" "$n503" 1
t_ge "PUTs acknowledged" "$acked" 10
# each error body is the one error shape, code unavailable
bad_bodies=$(grep -Evc '^\{"error":\{"code":"unavailable","message":"([^"\\]|\\.)+"\}(,"[a-z_]+":"([^"\\]|\\.)*")*\}$' "$T_TMP/bodies")
t_eq "error bodies not a JSON unavailable error" "$bad_bodies" 0
echo "a 503 while the database was away: $(head -n 1 "$T_TMP/bodies")"
t_nogrep "$T_TMP/bodies" 'postgres(ql)?://|s3cret|imgsearch:'
# the first 2xx after the database came back, for PUTs and searches
for f in puts searches; do
  first=$(awk -v t="$t_up" '$1 > t && $2 ~ /^2/ {print $1; exit}' <(sort -n "$T_TMP/$f"))
  echo "first 2xx of $f $((${first:-999999} - t_up)) ms after the database's return"
  t_lt "ms from the database's return to the first 2xx of $f" "$((${first:-999999} - t_up))" 4000
done
# and nothing but 2xx once recovered (3 s after): no dead connection left
late=$(awk -v t="$((t_up + 3000))" '$1 > t && $2 !~ /^2/' "$T_TMP/all" | wc -l)
t_eq "non-2xx answers from 3 s after the database's return" "$late" 0
t_ge "answers from 3 s after the database's return" \
  "$(awk -v t="$((t_up + 3000))" '$1 > t' "$T_TMP/all" | wc -l)" 10
# every acknowledged PUT is in the database
awk '$2 ~ /^2/ {print $4}' "$T_TMP/puts" | sort -u >"$T_TMP/acked"
psql -X -At "$STORE" -c 'SELECT id FROM items' | sort -u >"$T_TMP/stored"
t_eq "acknowledged PUTs missing from the database" \
  "$(comm -23 "$T_TMP/acked" "$T_TMP/stored" | head -n 5 | tr '\n' ' ')" ""
# and searchable: the server's index caught up with them
h POST /search -H 'Content-Type: application/json' -d '{"id": "w0_0", "k": 1}'
t_code 200
h GET /ready
t_code 200
serve_stop
t_eq "exit code after SIGTERM" "$RC" 0

# ---- the database down when serve starts: it waits for it ------------------------
# /health answers (loading), /ready is 503 until the database is up, then
# the service is ready by itself; SIGTERM while it waits ends it at once.
sh -c "$PG15_STOP" || bad "PG15_STOP failed"
serve_start waitdb --store "$STORE" --uploads "$T_TMP/restart.images" --model "$MODEL"
sleep 1.5
h GET /health
t_code 200
t_grep "$OUT" '"status":"loading"'
h GET /ready
t_code 503
t_grep "$SLOG" 'the database is unavailable.*waiting for the database'
t_nogrep "$SLOG" 's3cret'
sh -c "$PG15_START" || bad "PG15_START failed: $(tail -n 3 "$PG15_DIR/log")"
t_up=$(ms)
for _ in $(seq 100); do
  h GET /ready
  [ "$CODE" = 200 ] && break
  sleep 0.1
done
t_code 200
echo "ready $(($(ms) - t_up)) ms after the database came up"
t_lt "ms from the database's start to /ready 200" "$(($(ms) - t_up))" 6000
h POST /search -H 'Content-Type: application/json' -d '{"id": "w0_0", "k": 1}'
t_code 200
serve_stop
t_eq "exit code after SIGTERM (waited for the database)" "$RC" 0
sh -c "$PG15_STOP" || bad "PG15_STOP failed"
serve_start waitterm --store "$STORE" --uploads "$T_TMP/restart.images" --model "$MODEL"
sleep 1
t0=$(ms)
kill -TERM "$PID"
serve_wait
t_lt "ms from SIGTERM to exit while waiting for the database" "$(($(ms) - t0))" 3000
t_eq "exit code after SIGTERM while waiting for the database" "$RC" 1
t_grep "$SLOG" 'the database is unavailable'
sh -c "$PG15_START" || bad "PG15_START failed"
pg_servers_stop

# ---- 4. pgvector (pglite-socket: PostgreSQL + pgvector in WebAssembly) -----------
# /health names pgvector's index, and the service answers from it. pglite
# runs every connection in one session, so requests go one at a time here.
if pglite_start; then
  serve_start pglite --store "$PGLITE_URL" --uploads "$T_TMP/pglite.images" --model "$MODEL" \
    --threads 1
  serve_ready || bad "the server on pglite did not become ready"
  h GET /health
  t_grep "$OUT" '"store":\{"kind":"postgres","index":"pgvector-hnsw"\}'
  for f in fruits.jpg chelsea.png coffee.png; do
    h PUT "/items/$f" -F "image=@$IMG/$f"
    t_code 201
  done
  h POST /search -F "image=@$IMG/coffee.png" -F k=2
  t_code 200
  t_grep "$OUT" '"results":\[\{"id":"coffee.png","score":(1|0\.99[0-9]*)'
  h DELETE /items/coffee.png
  t_code 200
  h POST /search -F "image=@$IMG/coffee.png" -F k=1
  t_nogrep "$OUT" '"id":"coffee.png"'
  serve_stop
  t_eq "exit code after SIGTERM (pglite)" "$RC" 0
else
  t_skip tool:pglite "$PG_WHY"
fi
t_done
