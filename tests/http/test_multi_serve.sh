#!/usr/bin/env bash
# Several `imgsearch serve --catalog` processes on one PostgreSQL store
# share the start-up precompute: three servers scan one catalog of a few
# hundred images at once (each file registered once) and embed it in
# leased claims; one is killed with SIGKILL while it holds a claim, and the
# others take its items over (when the lease runs out, or at once when a
# server of the same host sees the process is gone). Counted in the
# database by a test-only trigger that logs every NULL -> non-NULL
# embedding: every item embedded, none twice, none skipped. A corrupt file
# ends failed in the store with its reason (/items, /health, /metrics of
# every server), is tried once by one server only, also after a fresh
# server starts, and is embedded once it is replaced by a good image.
# Debian's postgresql-15 (tests/pg/servers.sh); without it a skip tagged
# tool:postgresql.
. "$(dirname "$0")/../cli/lib.sh"
. "$(dirname "$0")/server.sh"
. "$(dirname "$0")/../pg/servers.sh"
trap 'serve_kill_all; pg_servers_stop; rm -rf "$T_TMP"' EXIT
N=300         # catalog images
LEASE=3       # --lease-seconds
LIMIT=${MULTI_LIMIT_S:-90} # the whole precompute, on a loaded machine

command -v cjpeg >/dev/null || { t_skip tool:cjpeg "cjpeg is not installed (libjpeg-turbo-progs)"; t_done; exit; }
if ! pg15_start; then t_skip tool:postgresql "$PG_WHY"; t_done; exit; fi
DB=$PG15_URL # (serve_start sets URL)
PSQL=$PG_BIN/psql
[ -x "$PSQL" ] || PSQL=psql
sql() { "$PSQL" -X -q -At "$DB" -c "$1" 2>>"$T_TMP/psql.err"; }
# want_sql WHAT SQL VALUE: the query answers VALUE
want_sql() {
  local got; got=$(sql "$2")
  if [ "$got" = "$3" ]; then ok; else bad "$1: '$2' gave '$got', wanted '$3'"; fi
}
# wait_sql WHAT SQL VALUE SECONDS: until the query answers VALUE
wait_sql() {
  local i got
  for i in $(seq $(($4 * 10))); do
    got=$(sql "$2")
    [ "$got" = "$3" ] && { ok; return 0; }
    sleep 0.1
  done
  bad "$1: '$2' gave '$got', wanted '$3' within $4 s"
  return 1
}

# ---- a catalog of N small distinct JPEGs and one corrupt file ----
CAT=$T_TMP/catalog
mkdir -p "$CAT/ppm"
python3 - "$CAT/ppm" "$N" <<'EOF'
import random, sys
d, n = sys.argv[1], int(sys.argv[2])
for i in range(n):
    r = random.Random(i)
    a, b, c = r.randrange(256), r.randrange(256), r.randrange(256)
    px = bytearray()
    for y in range(64):
        for x in range(64):
            px += bytes(((a + x * 3 + r.randrange(40)) & 255, (b + y * 3) & 255,
                         (c + (x ^ y) * (i % 7 + 1)) & 255))
    with open("%s/img%03d.ppm" % (d, i), "wb") as f:
        f.write(b"P6 64 64 255\n" + bytes(px))
EOF
for f in "$CAT"/ppm/*.ppm; do
  b=$(basename "$f" .ppm)
  cjpeg -quality 85 "$f" >"$CAT/$b.jpg" || break
done
rm -rf "$CAT/ppm"
# a JPEG by its first bytes, then garbage: registered, fails to decode
{ printf '\xff\xd8\xff\xe0\x00\x10JFIF\x00'; head -c 3000 /dev/urandom; } >"$CAT/corrupt.jpg"
if [ "$(ls "$CAT" | wc -l)" -eq $((N + 1)) ]; then ok; else bad "catalog: $(ls "$CAT" | wc -l) files"; fi

# ---- the store, and the test's triggers: every embedding, every failure ----
mkdir -p "$T_TMP/empty"
t_run 0 "$BIN" index --store "$DB" --model "$MODEL" "$T_TMP/empty"
sql "CREATE TABLE test_embed_log(seq bigint NOT NULL, owner text);
     CREATE TABLE test_failed_log(seq bigint NOT NULL, reason text);
     CREATE FUNCTION test_log() RETURNS trigger LANGUAGE plpgsql AS \$f\$
     BEGIN
       IF NEW.embedding IS NOT NULL AND (TG_OP = 'INSERT' OR OLD.embedding IS NULL) THEN
         INSERT INTO test_embed_log
           VALUES (NEW.seq, CASE WHEN TG_OP = 'UPDATE' THEN OLD.lease_owner END);
       END IF;
       IF NEW.failed IS NOT NULL AND (TG_OP = 'INSERT' OR OLD.failed IS NULL) THEN
         INSERT INTO test_failed_log VALUES (NEW.seq, NEW.failed);
       END IF;
       RETURN NEW;
     END \$f\$;
     CREATE TRIGGER test_log AFTER INSERT OR UPDATE ON items FOR EACH ROW
       EXECUTE FUNCTION test_log();"
want_sql "the test's trigger" "SELECT count(*) FROM pg_trigger WHERE tgname = 'test_log'" 1

# ---- three servers at once, one killed while it holds a claim ----
OPTS=(--store "$DB" --model "$MODEL" --catalog "$CAT" --lease-seconds $LEASE
      --max-batch 4 --precompute-pause-ms 150 --rate-limit 0 --access-log off
      --uploads "$T_TMP/uploads")
declare -a PIDS URLS
for k in 1 2 3; do
  serve_start "s$k" "${OPTS[@]}"
  PIDS[$k]=$PID URLS[$k]=$URL
done
if [ -n "${URLS[1]}" ] && [ -n "${URLS[2]}" ] && [ -n "${URLS[3]}" ]; then ok; else
  bad "a server did not start"; t_done; exit; fi
VICTIM=${PIDS[3]}
# its claim: waiting items leased to host:PID:random
leased_q="SELECT count(*) FROM items WHERE embedding IS NULL AND lease_owner LIKE '%:$VICTIM:%'
          AND lease_until > (extract(epoch FROM now()) * 1000)::bigint"
# mid-way: once a fifth of the catalog is embedded
wait_sql "a fifth embedded" "SELECT count(*) >= $((N / 5)) FROM test_embed_log" t "$LIMIT"
held=0
for _ in $(seq 600); do
  held=$(sql "$leased_q")
  [ "${held:-0}" -gt 0 ] && break
  sleep 0.05
done
kill -9 "$VICTIM"
wait "$VICTIM" 2>/dev/null
sql "CREATE TABLE test_victim AS SELECT seq FROM items
     WHERE embedding IS NULL AND lease_owner LIKE '%:$VICTIM:%'"
victim_n=$(sql "SELECT count(*) FROM test_victim")
if [ "${victim_n:-0}" -gt 0 ]; then ok; else
  bad "the killed server held no claim (held $held, then $victim_n)"; fi
left=$(sql "SELECT count(*) FROM items WHERE embedding IS NULL")
echo "killed server $VICTIM with $victim_n leased items; $left items waited then"
if [ "${left:-0}" -gt "$victim_n" ]; then ok; else
  bad "the kill came too late to be mid-way: $left waiting, $victim_n leased"; fi

# ---- the others finish: every item once, the victim's claim redone ----
wait_sql "every good image embedded" \
  "SELECT count(*) FROM items WHERE embedding IS NULL AND failed IS NULL" 0 "$LIMIT"
want_sql "items: one per file (registration is idempotent)" \
  "SELECT count(*), count(DISTINCT source) FROM items" "$((N + 1))|$((N + 1))"
want_sql "embeddings: one per good image" \
  "SELECT count(*) FROM items WHERE embedding IS NOT NULL" "$N"
want_sql "no item embedded twice" \
  "SELECT count(*), count(DISTINCT seq) FROM test_embed_log" "$N|$N"
want_sql "the killed server's claim redone by the others" \
  "SELECT count(*) FROM test_victim v JOIN test_embed_log l USING (seq)
   WHERE l.owner NOT LIKE '%:$VICTIM:%'" "$victim_n"
if grep -q "gave back the claim of .*:$VICTIM:" "$T_TMP/s1.log" "$T_TMP/s2.log"; then
  echo "the killed server's claim was given back by a server of this host (its process gone)"
else
  echo "the killed server's claim was taken over when its lease ran out"
fi
want_sql "the work was shared" \
  "SELECT count(DISTINCT split_part(owner, ':', 2)) >= 2 FROM test_embed_log" t
want_sql "no lease left" "SELECT count(*) FROM items WHERE lease_owner IS NOT NULL" 0

# ---- the corrupt file: failed once, in the store, seen by every server ----
want_sql "the corrupt file is failed with its reason" \
  "SELECT failed IS NOT NULL, embedding IS NULL FROM items WHERE id = 'corrupt.jpg'" "t|t"
want_sql "it was tried once" "SELECT count(*) FROM test_failed_log" 1
for k in 1 2; do
  URL=${URLS[$k]}
  curl -s "$URL/items/corrupt.jpg" >"$OUT"
  t_grep "$OUT" '"state": ?"failed"'
  t_grep "$OUT" '"error": ?"[^"]+'
  curl -s "$URL/items?limit=500" >"$OUT"
  if [ "$(grep -o '"state": *"failed"' "$OUT" | wc -l)" -eq 1 ]; then ok; else
    bad "s$k: /items lists $(grep -o '"state": *"failed"' "$OUT" | wc -l) failed items"; fi
  wait_health=0
  for _ in $(seq $((LEASE * 40))); do # refreshed by the next claim at most a lease later
    curl -s "$URL/health" | python3 -c 'import json,sys; sys.exit(json.load(sys.stdin).get("failed") != 1)' 2>/dev/null &&
      { wait_health=1; break; }
    sleep 0.1
  done
  [ $wait_health = 1 ] && ok || bad "s$k: /health does not count 1 failed: $(curl -s "$URL/health")"
  curl -s "$URL/metrics" >"$OUT"
  t_grep "$OUT" '^imgsearch_items_failed 1$'
done
# the command line sees the same state
t_run 0 "$BIN" items --store "$DB" show corrupt.jpg
t_grep "$OUT" '"state": "failed", "error": "[^"]+'
# a fresh server scans the same catalog: nothing new, the failure stands
serve_start s4 "${OPTS[@]}"
if serve_ready; then ok; else bad "s4 did not get ready: $(tail -n 5 "$SLOG")"; fi
sleep $((LEASE + 1)) # past a lease: the others have polled again too
want_sql "nothing embedded again after a restart" "SELECT count(*) FROM test_embed_log" "$N"
want_sql "the corrupt file not tried again" "SELECT count(*) FROM test_failed_log" 1
want_sql "no item added by the fresh scan" "SELECT count(*) FROM items" "$((N + 1))"

# ---- replaced by a good image: embedded once, found by search ----
cp "$MODEL/images/fruits.jpg" "$CAT/corrupt.jpg.tmp" && mv "$CAT/corrupt.jpg.tmp" "$CAT/corrupt.jpg"
wait_sql "the replaced file is embedded" \
  "SELECT failed IS NULL AND embedding IS NOT NULL FROM items WHERE id = 'corrupt.jpg'" t 30
want_sql "... once" "SELECT count(*), count(DISTINCT seq) FROM test_embed_log" \
  "$((N + 1))|$((N + 1))"
want_sql "no failed item left" "SELECT failed FROM counts" 0
URL=${URLS[1]}
curl -s -F "image=@$MODEL/images/fruits.jpg" -F k=1 "$URL/search" >"$OUT"
t_grep "$OUT" '"id": ?"corrupt.jpg"'
for k in 1 2; do
  PID=${PIDS[$k]}
  serve_stop
  if [ "$RC" -eq 0 ]; then ok; else bad "s$k exited $RC: $(tail -n 3 "$T_TMP/s$k.log")"; fi
done
t_done
