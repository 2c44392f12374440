#!/usr/bin/env bash
# `imgsearch serve` over real HTTP on loopback: every endpoint and every
# error of the API, the three input encodings of each image endpoint, the
# API key, limits and timeouts, loading (503), restarts (persistence and
# precompute resume), graceful shutdown, and the 16 x 200 concurrency test
# with the server's memory measured before and after.
. "$(dirname "$0")/../cli/lib.sh"

IMG=$MODEL/images
BAD=$FIX/bad
LOAD=${IMGSEARCH_LOAD_BIN:-$(dirname "$BIN")/tests/http/load}
if ! command -v curl >/dev/null; then
  bad "curl is not installed (scripts/install-deps)"
  t_done
  exit
fi
. "$(dirname "$0")/server.sh"
trap 'serve_kill_all; rm -rf "$T_TMP"' EXIT
# the per-address rate limit of inference would stop the load tests (all on
# 127.0.0.1); it has its own test in test_hostile_conn.sh
export IMGSEARCH_RATE_LIMIT=0
first_id() { grep -o '"results":\[{"id":"[^"]*"' "$1" | sed 's/.*"id":"//; s/"$//'; }
nresults() { grep -o '"score":' "$1" | wc -l; }
b64json() { # KEY FILE...: {"KEY": "<b64>"} or {"KEY": ["<b64>", ...]} with several files
  local k=$1
  shift
  if [ $# -eq 1 ]; then printf '{"%s": "%s"}' "$k" "$(base64 -w0 "$1")"; else
    printf '{"%s": [' "$k"
    local sep=
    for f in "$@"; do printf '%s"%s"' "$sep" "$(base64 -w0 "$f")"; sep=,; done
    printf ']}'
  fi
}
rss_kb() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }

CAT=$T_TMP/catalog
mkdir -p "$CAT"
cp "$IMG"/* "$CAT"/
chmod -R u+w "$CAT"
STORE=$T_TMP/store.db

# ---- usage errors ----
t_run 0 "$BIN" serve --help
t_grep "$OUT" 'usage: imgsearch serve'
t_grep "$OUT" 'IMGSEARCH_API_KEY'
t_run 2 env -u IMGSEARCH_STORE "$BIN" serve --model "$MODEL"
t_grep "$ERR" 'store PATH is required'
t_run 2 "$BIN" serve --store "$STORE" --model "$MODEL" --bogus
t_grep "$ERR" "unknown option"
t_run 2 "$BIN" serve --store "$STORE" --model "$MODEL" --listen nowhere
t_grep "$ERR" "not HOST:PORT"
t_run 2 "$BIN" serve --store "$STORE" --model "$MODEL" --max-batch 0
t_run 2 "$BIN" serve --store postgres://x/y --model "$MODEL"
# a model that cannot load: the listener was up, the exit code says why
t_run 2 "$BIN" serve --store "$T_TMP/none.db" --model /nonexistent --listen 127.0.0.1:0
t_grep "$ERR" 'listening on http://127.0.0.1:[0-9]+'
t_grep "$ERR" 'no such model'

# ---- loading: the listener answers before the model is there ----
serve_start loading --store "$STORE" --model "$MODEL" --catalog "$CAT" --load-delay-ms 1500 --batch-limit 5
h GET /health
t_code 200
t_grep "$OUT" '"status":"loading"'
t_grep "$OUT" '"version":"[0-9.]+"'
h POST /search -H 'Content-Type: application/json' -d '{"text": "a cat"}'
t_err 503 unavailable
t_grep "$HDR" '^Retry-After: 1'
h GET /items
t_err 503 unavailable
h GET /metrics
t_code 200
t_grep "$OUT" '^imgsearch_loading 1$'
h GET /
t_code 200
serve_ready || bad "the server did not become ready"
h GET /health
t_grep "$OUT" '"status":"ok"'
t_grep "$OUT" '"items":12,"waiting":0'
t_grep "$OUT" '"dim":64'
# the store, and the index that serves its searches (test_http_pg.sh runs
# this script on PostgreSQL without pgvector: the local index too)
if [ -n "${IMGSEARCH_TEST_PG_URL:-}" ]; then
  t_grep "$OUT" '"store":\{"kind":"postgres","index":"local-hnsw"\}'
else
  t_grep "$OUT" '"store":\{"kind":"embedded","name":"store.db","index":"local-hnsw"\}'
fi
t_grep "$OUT" '"model":"tiny-clip@[0-9a-f]+"'
t_grep "$OUT" '"precompute":\{"state":"idle","catalogs":1,"files":12,"added":12,"changed":0,"unchanged":0,"waiting_at_start":12,"embedded":12,"failed":0'
CODE=$(curl -s -I -o "$OUT" -w '%{http_code}' "$URL/health")
t_code 200

# ---- /extract-features: three encodings, equal to `imgsearch embed` ----
"$BIN" embed --model "$MODEL" "$IMG/fruits.jpg" >"$T_TMP/embed.json"
h POST /extract-features -F "image=@$IMG/fruits.jpg"
t_code 200
t_grep "$OUT" '^\{"features":\[-?[0-9]'
t_grep "$OUT" '"dimension":64,"model":"tiny-clip@'
t_ge "multipart vs embed" "$(cos "$OUT" "$T_TMP/embed.json")" 0.9999
cp "$OUT" "$T_TMP/f_multipart.json"
h POST /extract-features -H 'Content-Type: image/jpeg' --data-binary "@$IMG/fruits.jpg"
t_code 200
t_ge "raw vs embed" "$(cos "$OUT" "$T_TMP/embed.json")" 0.9999
b64json image "$IMG/fruits.jpg" >"$T_TMP/fruits.b64.json"
h POST /extract-features -H 'Content-Type: application/json' --data-binary "@$T_TMP/fruits.b64.json"
t_code 200
t_ge "base64 vs embed" "$(cos "$OUT" "$T_TMP/embed.json")" 0.9999
norm=$(vec "$OUT" | awk '{s += $1 * $1} END {printf "%.4f", sqrt(s)}')
t_eq "L2 norm" "$norm" 1.0000
# a data URL works too
printf '{"image": "data:image/jpeg;base64,%s"}' "$(base64 -w0 "$IMG/fruits.jpg")" >"$T_TMP/dataurl.json"
h POST /extract-features -H 'Content-Type: application/json' --data-binary "@$T_TMP/dataurl.json"
t_code 200
# errors
h POST /extract-features -H 'Content-Type: application/json' -d '{}'
t_err 400 invalid_argument
t_grep "$OUT" 'no image'
h POST /extract-features -H 'Content-Type: application/json' -d '{"image": "@@@"}'
t_err 400 invalid_argument
t_grep "$OUT" 'base64'
h POST /extract-features -H 'Content-Type: application/json' -d '{"image": 42}'
t_err 400 invalid_argument
h POST /extract-features -H 'Content-Type: application/json' -d '{"image": '
t_err 400 invalid_argument
t_grep "$OUT" 'not valid JSON'
h POST /extract-features -H 'Content-Type: image/jpeg' --data-binary "@$BAD/text.jpg"
t_err 415 unsupported_format
h POST /extract-features -F "image=@$BAD/truncated.jpg"
t_err 422 decode_failed
h POST /extract-features -H 'Content-Type: image/png' --data-binary "@$BAD/huge_header.png"
t_err 413 too_large
h POST /extract-features -H 'Content-Type: text/plain' --data-binary "@$IMG/fruits.jpg"
t_err 415 unsupported_format
t_grep "$OUT" 'Content-Type text/plain is not accepted'
h POST /extract-features -H 'Content-Type:' --data-binary "@$IMG/fruits.jpg"
t_err 415 unsupported_format
h POST /extract-features -F "other=@$IMG/fruits.jpg"
t_err 400 invalid_argument
h POST /extract-features -H 'Content-Type: multipart/form-data' --data-binary 'x'
t_err 400 invalid_argument
t_grep "$OUT" 'boundary'

# ---- /extract-features-batch ----
h POST /extract-features-batch -F "images=@$IMG/fruits.jpg" -F "images=@$BAD/text.jpg" -F "images=@$IMG/left01.jpg"
t_code 200
t_grep "$OUT" '"features":\[\[-?[0-9][^]]*\],\{"error":\{"code":"unsupported_format","message":"image 2: [^"]*"\}\},\[-?[0-9]'
t_grep "$OUT" '"dimension":64,"count":3'
t_ge "batch slot 1 vs embed" "$(cos "$OUT" "$T_TMP/embed.json")" 0.9999
b64json images "$IMG/fruits.jpg" "$IMG/HappyFish.jpg" >"$T_TMP/batch.json"
sed -i 's/\]}$/, "not base64!"]}/' "$T_TMP/batch.json"
h POST /extract-features-batch -H 'Content-Type: application/json' --data-binary "@$T_TMP/batch.json"
t_code 200
t_grep "$OUT" '"count":3'
t_grep "$OUT" '\],\{"error":\{"code":"invalid_argument","message":"image 3: base64: [^"]*"\}\}\],'
t_ge "json batch slot 1 vs embed" "$(cos "$OUT" "$T_TMP/embed.json")" 0.9999
h POST /extract-features-batch -H 'Content-Type: image/jpeg' --data-binary "@$IMG/fruits.jpg"
t_code 200
t_grep "$OUT" '"count":1'
args=()
for i in 1 2 3 4 5 6; do args+=(-F "images=@$IMG/HappyFish.jpg"); done
h POST /extract-features-batch "${args[@]}"
t_err 413 too_large
t_grep "$OUT" '6 images in one request; at most 5'
h POST /extract-features-batch -H 'Content-Type: application/json' -d '{"images": []}'
t_err 400 invalid_argument
h POST /extract-features-batch -H 'Content-Type: application/json' -d '{"images": "x"}'
t_err 400 invalid_argument

# ---- /search: image (three encodings), text, vector, id ----
h POST '/search?k=3' -F "image=@$IMG/HappyFish.jpg"
t_code 200
t_eq "multipart image search" "$(first_id "$OUT")" HappyFish.jpg
t_ge "multipart image search: self score" "$(field score "$OUT")" 0.999
t_eq "multipart image search: results with k=3" "$(nresults "$OUT")" 3
t_grep "$OUT" '"image_url":"/items/HappyFish.jpg/image"'
t_grep "$OUT" '"took_ms":[0-9.]+'
h POST '/search?k=2' -H 'Content-Type: image/jpeg' --data-binary "@$IMG/left01.jpg"
t_code 200
t_eq "raw image search" "$(first_id "$OUT")" left01.jpg
t_eq "raw image search: results with k=2" "$(nresults "$OUT")" 2
b64json image "$IMG/fruits.jpg" | sed 's/}$/, "k": 4}/' >"$T_TMP/s.json"
h POST /search -H 'Content-Type: application/json' --data-binary "@$T_TMP/s.json"
t_code 200
t_eq "base64 image search" "$(first_id "$OUT")" fruits.jpg
t_eq "base64 image search: results" "$(nresults "$OUT")" 4
h POST /search -H 'Content-Type: application/json' -d '{"text": "a photo of a cat", "k": 5}'
t_code 200
t_eq "JSON text search: results with k=5" "$(nresults "$OUT")" 5
h POST '/search?text=a+photo+of+a+cat&k=5' -F 'k=5' -F 'text=a photo of a cat'
t_code 200
t_eq "multipart text search: results with k=5" "$(nresults "$OUT")" 5
vec=$(vec "$T_TMP/f_multipart.json" | paste -sd, -)
h POST /search -H 'Content-Type: application/json' -d "{\"vector\": [$vec], \"k\": 3}"
t_code 200
t_eq "vector search" "$(first_id "$OUT")" fruits.jpg
h POST /search -H 'Content-Type: application/json' -d '{"id": "fruits.jpg", "k": 3}'
t_code 200
t_eq "search by id: results with k=3" "$(nresults "$OUT")" 3
t_nogrep "$OUT" '"id":"fruits.jpg"'
t_grep "$OUT" '"id":"coffee.(png|gif)"'
# k, offset, min_score
h POST '/search?k=3' -H 'Content-Type: image/jpeg' --data-binary "@$IMG/fruits.jpg"
ids3=$(grep -o '"id":"[^"]*"' "$OUT" | tr '\n' ' ')
h POST '/search?k=2&offset=1' -H 'Content-Type: image/jpeg' --data-binary "@$IMG/fruits.jpg"
t_code 200
t_eq "offset" "$(grep -o '"id":"[^"]*"' "$OUT" | tr '\n' ' ')" "$(echo "$ids3" | cut -d' ' -f2-3) "
h POST /search -H 'Content-Type: application/json' -d '{"text": "fruit", "k": 12, "min_score": 0.999}'
t_code 200
t_eq "min_score drops everything for a random text" "$(nresults "$OUT")" 0
h POST '/search?k=12&min_score=0.999' -H 'Content-Type: image/jpeg' --data-binary "@$IMG/fruits.jpg"
t_eq "min_score keeps the image itself" "$(nresults "$OUT")" 1
# search errors
h POST /search -H 'Content-Type: application/json' -d '{}'
t_err 400 invalid_argument
t_grep "$OUT" 'nothing to search with'
h POST /search -H 'Content-Type: application/json' -d '{"text": "x", "id": "fruits.jpg"}'
t_err 400 invalid_argument
t_grep "$OUT" 'only one of'
h POST /search -H 'Content-Type: application/json' -d '{"text": "x", "k": 0}'
t_err 400 invalid_argument
h POST /search -H 'Content-Type: application/json' -d '{"text": "x", "k": 1001}'
t_err 400 invalid_argument
t_grep "$OUT" 'k must be an integer in \[1, 1000\]'
h POST /search -H 'Content-Type: application/json' -d '{"text": "x", "min_score": "high"}'
t_err 400 invalid_argument
h POST /search -H 'Content-Type: application/json' -d '{"vector": [1, 2, 3]}'
t_err 400 invalid_argument
t_grep "$OUT" 'array of 64 numbers'
h POST /search -H 'Content-Type: application/json' -d '{"id": "no-such-item"}'
t_err 404 not_found
h POST /search -H 'Content-Type: application/json' -d '{"text": "x", "filter": {"a": [1]}}'
t_err 400 invalid_argument
h POST '/search?filter=novalue' -H 'Content-Type: application/json' -d '{"text": "x"}'
t_err 400 invalid_argument
h POST /search -H 'Content-Type: image/jpeg' --data-binary "@$BAD/truncated.jpg"
t_err 422 decode_failed

# ---- items: PUT (three encodings), GET, image, filter, DELETE, paging ----
h PUT /items/shoe-1 -F "image=@$IMG/HappyFish.jpg" -F 'metadata={"category": "shoes", "size": 42}'
t_code 201
t_grep "$OUT" '^\{"id":"shoe-1",'
t_grep "$OUT" '"metadata":\{"category":"shoes","size":42\}'
t_grep "$OUT" '"has_embedding":true'
t_grep "$OUT" '"sha256":"[0-9a-f]{64}"'
t_grep "$OUT" '"image_url":"/items/shoe-1/image"'
h PUT /items/shoe-1 -F "image=@$IMG/left01.jpg" -F 'metadata={"category": "shoes", "size": 43}'
t_code 200
b64json image "$IMG/left01.jpg" | sed 's/}$/, "metadata": {"category": "bags"}}/' >"$T_TMP/put.json"
h PUT /items/bag%2F1 -H 'Content-Type: application/json' --data-binary "@$T_TMP/put.json"
t_code 201
t_grep "$OUT" '"id":"bag/1"'
t_grep "$OUT" '"image_url":"/items/bag%2F1/image"'
h PUT '/items/raw-1?metadata=%7B%22category%22%3A%22shoes%22%7D' -H 'Content-Type: image/jpeg' --data-binary "@$IMG/left01.jpg"
t_code 201
t_grep "$OUT" '"metadata":\{"category":"shoes"\}'
h GET /items/shoe-1
t_code 200
t_grep "$OUT" '"metadata":\{"category":"shoes","size":43\}'
t_nogrep "$OUT" '"embedding"'
h GET '/items/shoe-1?embedding=1'
t_grep "$OUT" '"embedding":\[-?[0-9]'
h GET /items/bag%2F1/image
t_code 200
t_grep "$HDR" '^Content-Type: image/jpeg'
if cmp -s "$OUT" "$IMG/left01.jpg"; then ok; else bad "the stored image differs from the upload"; fi
h GET /items/fruits.jpg/image
t_code 200
if cmp -s "$OUT" "$IMG/fruits.jpg"; then ok; else bad "catalog image differs"; fi
h GET /items/chelsea.webp/image
t_grep "$HDR" '^Content-Type: image/webp'
# filters: the catalog items have no category; left01 is first for itself
h POST '/search?k=10&filter=category=shoes' -H 'Content-Type: image/jpeg' --data-binary "@$IMG/left01.jpg"
t_code 200
t_eq "filter" "$(grep -o '"id":"[^"]*"' "$OUT" | sort | tr '\n' ' ')" '"id":"raw-1" "id":"shoe-1" '
h POST /search -H 'Content-Type: application/json' -d '{"text": "x", "k": 10, "filter": {"category": "shoes", "size": 43}}'
t_eq "two filters, a number" "$(grep -o '"id":"[^"]*"' "$OUT" | tr '\n' ' ')" '"id":"shoe-1" '
h POST /search -F "image=@$IMG/left01.jpg" -F 'filter={"category": "bags"}' -F k=10
t_eq "multipart filter" "$(grep -o '"id":"[^"]*"' "$OUT" | tr '\n' ' ')" '"id":"bag/1" '
# item errors
h PUT /items/bad-1 -H 'Content-Type: image/jpeg' --data-binary "@$BAD/text.jpg"
t_err 415 unsupported_format
h PUT /items/bad-1 -F "image=@$BAD/truncated.jpg"
t_err 422 decode_failed
h PUT /items/bad-1 -F 'metadata={}'
t_err 400 invalid_argument
h PUT /items/bad-1 -F "image=@$IMG/left01.jpg" -F 'metadata=[1,2]'
t_err 400 invalid_argument
t_grep "$OUT" 'metadata must be a JSON object'
h GET /items/bad-1
t_err 404 not_found
h PUT "/items/$(head -c 1100 /dev/zero | tr '\0' a)" -F "image=@$IMG/left01.jpg"
t_err 400 invalid_argument
# asynchronous put: 202, then the precompute embeds it
h PUT '/items/later?async=1' -H 'Content-Type: image/jpeg' --data-binary "@$IMG/butterfly.jpg"
t_code 202
t_grep "$OUT" '"has_embedding":false'
for _ in $(seq 200); do
  h GET /items/later
  grep -q '"has_embedding":true' "$OUT" && break
  sleep 0.025
done
t_grep "$OUT" '"has_embedding":true'
# delete
h DELETE /items/raw-1
t_code 200
t_grep "$OUT" '^\{"id":"raw-1","deleted":true\}$'
h DELETE /items/raw-1
t_err 404 not_found
h GET /items/raw-1/image
t_err 404 not_found
# paging: 12 catalog items + shoe-1, bag/1, later = 15
h GET '/items?limit=6'
t_code 200
t_grep "$OUT" '"count":6,"total":15,"next_cursor":"[0-9]+"'
seen=$(grep -o '"id":"[^"]*"' "$OUT" | wc -l)
cur=$(grep -o '"next_cursor":"[0-9]*"' "$OUT" | grep -o '[0-9]*')
pages=1
while [ -n "$cur" ] && [ "$pages" -lt 10 ]; do
  h GET "/items?limit=6&cursor=$cur"
  seen=$((seen + $(grep -o '"id":"[^"]*"' "$OUT" | wc -l)))
  cur=$(grep -o '"next_cursor":"[0-9]*"' "$OUT" | grep -o '[0-9]*')
  pages=$((pages + 1))
done
t_eq "items/pages" "$seen/$pages" 15/3
t_grep "$OUT" '"next_cursor":null'
h GET '/items?limit=0'
t_err 400 invalid_argument
h GET '/items?cursor=abc'
t_err 400 invalid_argument
# path traversal: ids are looked up, never joined to a path
h GET /items/../../etc/passwd/image --path-as-is
t_err 404 not_found
h GET /items/..%2F..%2F..%2Fetc%2Fpasswd/image
t_err 404 not_found
h GET /items/bad%zz
t_err 400 invalid_argument

# ---- /classify ----
h POST /classify -F "image=@$IMG/fruits.jpg" -F 'labels=fruit, a cat, a car'
t_code 200
t_grep "$OUT" '^\{"labels":\[\{"label":"[a-z ]+","prob":[0-9.e-]+,"logit":[-0-9.e]+\}'
probs=$(grep -o '"prob":[0-9.e-]*' "$OUT" | cut -d: -f2)
t_eq "classify: labels" "$(echo "$probs" | wc -l | tr -d ' ')" 3
t_eq "probabilities" "$(echo "$probs" | awk '{s += $1} END {printf "%.4f", s}')" 1.0000
t_eq "order" "$(echo "$probs" | sort -gr | tr '\n' ' ')" "$(echo "$probs" | tr '\n' ' ')"
cp "$OUT" "$T_TMP/classify1.json"
b64json image "$IMG/fruits.jpg" | sed 's/}$/, "labels": ["fruit", "a cat", "a car"], "top": 2}/' >"$T_TMP/c.json"
h POST /classify -H 'Content-Type: application/json' --data-binary "@$T_TMP/c.json"
t_code 200
t_eq "top" "$(grep -o '"prob":' "$OUT" | wc -l | tr -d ' ')" 2
t_eq "same best label" "$(grep -o '"label":"[^"]*"' "$OUT" | head -n 1)" "$(grep -o '"label":"[^"]*"' "$T_TMP/classify1.json" | head -n 1)"
h POST '/classify?labels=fruit,a%20cat,a%20car' -H 'Content-Type: image/jpeg' --data-binary "@$IMG/fruits.jpg"
t_code 200
t_eq "classify with labels in the query string: labels" "$(grep -o '"prob":' "$OUT" | wc -l | tr -d ' ')" 3
h POST '/classify?labels=only' -H 'Content-Type: image/jpeg' --data-binary "@$IMG/fruits.jpg"
t_err 400 invalid_argument
h POST /classify -H 'Content-Type: application/json' -d '{"labels": ["a", "b"]}'
t_err 400 invalid_argument
h POST '/classify?labels=a,b' -H 'Content-Type: image/jpeg' --data-binary "@$BAD/text.jpg"
t_err 415 unsupported_format

# ---- routes, methods, the page, metrics ----
h GET /nope
t_err 404 not_found
h GET /search
t_err 405 method_not_allowed
t_grep "$HDR" '^Allow: POST'
h DELETE /health
t_err 405 method_not_allowed
h GET /
t_code 200
t_grep "$HDR" '^Content-Type: text/html'
t_grep "$OUT" '<title>imgsearch</title>'
t_grep "$OUT" 'id="file" type="file"'
t_nogrep "$OUT" '(src|href)="(https?:)?//'
h GET /metrics
t_code 200
t_grep "$HDR" '^Content-Type: text/plain; version=0.0.4'
t_grep "$OUT" '^imgsearch_http_requests_total\{route="/search",status="200"\} [0-9]+$'
t_grep "$OUT" '^imgsearch_http_requests_total\{route="/extract-features",status="415"\} [0-9]+$'
t_grep "$OUT" '^imgsearch_http_requests_total\{route="other",status="404"\} 1$'
t_grep "$OUT" '^imgsearch_http_request_duration_seconds_bucket\{route="/search",le="\+Inf"\} [0-9]+$'
t_grep "$OUT" '^imgsearch_embeddings_computed_total\{kind="image"\} [1-9][0-9]*$'
t_grep "$OUT" '^imgsearch_embeddings_computed_total\{kind="text"\} [1-9][0-9]*$'
t_grep "$OUT" '^imgsearch_batch_size_count [1-9][0-9]*$'
t_grep "$OUT" '^imgsearch_batch_queue_depth 0$'
t_grep "$OUT" '^imgsearch_items 15$'
t_grep "$OUT" '^imgsearch_precompute_embedded_total 13$'
t_grep "$OUT" '^imgsearch_loading 0$'

# ---- concurrency: 16 clients x 200 mixed requests, memory flat ----
if [ -x "$LOAD" ]; then
  NAMES=HappyFish.jpg,left01.jpg,Blender_Suzanne1.jpg,butterfly.jpg,fruits.jpg
  "$LOAD" check --url "$URL" --images "$IMG" --names "$NAMES" --clients 16 --requests 20 >"$T_TMP/warm.log" 2>&1 ||
    bad "warm-up load: $(tail -n 5 "$T_TMP/warm.log")"
  rss0=$(rss_kb "$PID")
  "$LOAD" check --url "$URL" --images "$IMG" --names "$NAMES" --clients 16 --requests 200 >"$T_TMP/load.log" 2>&1
  rc=$?
  rss1=$(rss_kb "$PID")
  cat "$T_TMP/load.log" | grep -v '^load: [0-9]* passed' | head -n 25
  t_eq "load exit code" "$rc" 0
  t_grep "$T_TMP/load.log" '^load: 3200 passed, 0 failed$'
  # allocator caches and (under ASan) the quarantine settle during the
  # warm-up; a leak of even 1 KB per request would add 3 MB
  margin=${SERVE_RSS_MARGIN_KB:-24576}
  echo "concurrency: server RSS ${rss0} kB -> ${rss1} kB ($(((rss1 - rss0))) kB; margin $margin kB)"
  if [ $((rss1 - rss0)) -lt "$margin" ]; then ok; else bad "server RSS grew from $rss0 to $rss1 kB"; fi
  h GET /health
  t_grep "$OUT" '"items":15,'
else
  bad "no load client at $LOAD (make $(dirname "$BIN")/tests/http/load)"
fi

# ---- graceful shutdown: the index is written ----
serve_stop
t_eq "exit code after SIGTERM" "$RC" 0
t_grep "$SLOG" 'SIGTERM: shutting down'
t_grep "$SLOG" 'stopped; the store is closed'
# (a PostgreSQL store, under test_http_pg.sh, keeps no index file)
if [ -n "${IMGSEARCH_TEST_PG_URL:-}" ]; then t_nogrep "$SLOG" 'index.*(fail|error)'
elif [ -s "$STORE.hnsw" ]; then ok; else bad "no index file $STORE.hnsw after shutdown"; fi

# ---- restart: items persist, nothing is embedded twice; API key for writes ----
serve_start keyed --store "$STORE" --model "$MODEL" --catalog "$CAT" --api-key s3cret
serve_ready || bad "keyed server not ready"
h GET /health
t_grep "$OUT" '"items":15,"waiting":0'
t_grep "$OUT" '"files":12,"added":0,"changed":0,"unchanged":12,"waiting_at_start":0,"embedded":0,"failed":0'
h GET /items/shoe-1
t_code 200
h DELETE /items/shoe-1
t_err 401 unauthorized
t_grep "$HDR" '^WWW-Authenticate: Bearer'
h DELETE /items/shoe-1 -H 'Authorization: Bearer wrong'
t_err 401 unauthorized
h PUT /items/k-1 -H 'Content-Type: image/jpeg' --data-binary "@$IMG/left01.jpg"
t_err 401 unauthorized
h PUT /items/k-1 -H 'Content-Type: image/jpeg' -H 'X-API-Key: s3cret' --data-binary "@$IMG/left01.jpg"
t_code 201
h DELETE /items/shoe-1 -H 'Authorization: Bearer s3cret'
t_code 200
h POST /search -H 'Content-Type: application/json' -d '{"text": "x"}'
t_code 200
serve_stop
t_eq "exit code after SIGTERM" "$RC" 0

# ---- --api-key-all guards reads; environment variables configure it ----
IMGSEARCH_STORE=$STORE IMGSEARCH_MODEL=$MODEL IMGSEARCH_API_KEY=s3cret IMGSEARCH_API_KEY_ALL=1 \
  IMGSEARCH_MAX_BATCH=3 IMGSEARCH_BATCH_WAIT_MS=2 serve_start envcfg
for _ in $(seq 400); do curl -s "$URL/health" | grep -q '"status":"ok"' && break; sleep 0.025; done
h GET /health
t_code 200
t_grep "$OUT" '"batcher":\{"max_batch":3,"max_wait_ms":2,'
h GET /
t_code 200
h GET /items
t_err 401 unauthorized
h GET /metrics
t_err 401 unauthorized
h POST /search -H 'Content-Type: application/json' -d '{"text": "x"}'
t_err 401 unauthorized
h GET /items -H 'Authorization: Bearer s3cret'
t_code 200
h GET /items/k-1/image -H 'X-API-Key: s3cret'
t_code 200
serve_stop

# ---- catalog roots: items outside the served roots are not served ----
mkdir -p "$T_TMP/other"
cp "$IMG/left01.jpg" "$T_TMP/other/"
ln -s "$IMG/fruits.jpg" "$T_TMP/other/link.jpg"
serve_start roots --store "$STORE" --model "$MODEL" --catalog "$T_TMP/other"
serve_ready || bad "roots server not ready"
h GET /items/left01.jpg
t_code 200
h GET /items/left01.jpg/image
t_code 200
h GET /items/fruits.jpg/image # indexed from $CAT, which is no root now
t_err 404 not_found
h GET /items/link.jpg # symbolic links are not indexed
t_err 404 not_found
h GET /items/k-1/image # uploads are always served
t_code 200

# ---- limits: body size (declared and chunked), connections, timeouts ----
serve_stop
serve_start limits --store "$STORE" --model "$MODEL" --max-body-mb 1 --max-connections 3 \
  --timeout-s 2 --request-timeout-s 1 --poll-threads 1
serve_ready || bad "limits server not ready"
head -c 1500000 /dev/urandom >"$T_TMP/big.bin"
h POST /extract-features -H 'Content-Type: image/jpeg' --data-binary "@$T_TMP/big.bin"
t_err 413 too_large
t_grep "$OUT" 'over the limit of 1048576'
h POST /extract-features -H 'Content-Type: image/jpeg' -H 'Transfer-Encoding: chunked' --data-binary "@$T_TMP/big.bin"
t_err 413 too_large
h POST /extract-features -F "image=@$T_TMP/big.bin"
t_err 413 too_large
# an idle connection is closed after --timeout-s
exec 3<>"/dev/tcp/127.0.0.1/$PORT"
t0=$(date +%s%N)
timeout 5 cat <&3 >"$T_TMP/idle.out"
t1=$(date +%s%N)
exec 3<&-
t_ge "ms before an idle connection is closed" "$(((t1 - t0) / 1000000))" 1500
if [ "$(((t1 - t0) / 1000000))" -lt 4500 ]; then ok; else bad "idle connection was not closed"; fi
# a body that trickles in is cut after --request-timeout-s
exec 3<>"/dev/tcp/127.0.0.1/$PORT"
printf 'POST /extract-features HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\nContent-Length: 100\r\n\r\n' >&3
(
  trap '' PIPE # the server hangs up mid-body: a write then fails, it must not kill us
  for _ in 1 2 3 4 5 6 7 8; do printf 'x' >&3 || break; sleep 0.3; done
) 2>/dev/null
timeout 3 cat <&3 >"$T_TMP/slow.out" 2>/dev/null
exec 3<&-
if [ ! -s "$T_TMP/slow.out" ]; then ok; else bad "a slow body got an answer: $(head -c 100 "$T_TMP/slow.out")"; fi
t_grep "$SLOG" 'cut a request whose body took over 1 s'
# the connection limit: 3 idle connections, the 4th is refused
exec 4<>"/dev/tcp/127.0.0.1/$PORT" 5<>"/dev/tcp/127.0.0.1/$PORT" 6<>"/dev/tcp/127.0.0.1/$PORT"
sleep 0.2
if curl -s -m 1 -o /dev/null "$URL/health"; then bad "a 4th connection was served"; else ok; fi
exec 4<&- 5<&- 6<&-
sleep 0.3
h GET /health
t_code 200
serve_stop
t_eq "exit code after SIGTERM" "$RC" 0

# ---- graceful shutdown finishes the request in flight ----
serve_start drain --store "$STORE" --model "$MODEL"
serve_ready || bad "drain server not ready"
curl -s -o "$T_TMP/drain.out" -w '%{http_code}' --limit-rate 200k -H 'Content-Type: image/png' \
  --data-binary "@$IMG/coffee.png" "$URL/extract-features" >"$T_TMP/drain.code" &
CPID=$!
sleep 1
kill -TERM "$PID"
wait "$CPID"
serve_wait
t_eq "the request in flight at SIGTERM" "$(cat "$T_TMP/drain.code")" 200
t_grep "$T_TMP/drain.out" '"dimension":64'
t_eq "exit code after SIGTERM (drained request)" "$RC" 0
if curl -s -m 1 "$URL/health" >/dev/null; then bad "still answering after shutdown"; else ok; fi

# ---- restart during the start-up precompute resumes without re-embedding ----
CAT2=$T_TMP/catalog2
for d in a b c d; do mkdir -p "$CAT2/$d" && cp "$IMG"/* "$CAT2/$d/"; done
S2=$T_TMP/resume.db
serve_start resume1 --store "$S2" --model "$MODEL" --catalog "$CAT2" --max-batch 2 --precompute-pause-ms 100
done1=0
for _ in $(seq 400); do
  curl -s "$URL/health" >"$T_TMP/h" 2>/dev/null
  done1=$(field embedded "$T_TMP/h")
  [ -n "$done1" ] && [ "$done1" -ge 6 ] && break
  sleep 0.025
done
serve_stop
t_eq "first run exit code" "$RC" 0
serve_start resume2 --store "$S2" --model "$MODEL" --catalog "$CAT2" --max-batch 8
serve_ready || bad "resume server not ready"
h GET /health
waiting=$(field waiting_at_start "$OUT")
embedded=$(field embedded "$OUT")
echo "resume: first run embedded >= $done1 of 48 before SIGTERM; the second run found $waiting waiting and embedded $embedded"
t_grep "$OUT" '"files":48,"added":0,"changed":0,"unchanged":48,'
t_ge "items left for the second run" "$waiting" 1
t_ge "the first run's embeddings were kept" 42 "$waiting"
t_eq "the second run embedded exactly the waiting items" "$embedded" "$waiting"
t_grep "$OUT" '"items":48,"waiting":0'
h GET /metrics
t_grep "$OUT" "^imgsearch_precompute_embedded_total $waiting\$"
t_grep "$OUT" "^imgsearch_embeddings_computed_total\\{kind=\"image\"\\} $waiting\$"
serve_stop
t_eq "second run exit code" "$RC" 0

# ---- filters are ANDed: every filter alone differs from all of them ----------
# A is the only item with all three values; each filter alone and each pair
# gives another set, and every combination is sent in every order, in each
# of the request's filter encodings (so keeping only the first or the last
# filter fails).
serve_start filters --store "$T_TMP/filters.db" --model "$MODEL"
serve_ready || bad "filter server not ready"
put_meta() { # ID IMAGE METADATA_JSON
  h PUT "/items/$1" -F "image=@$IMG/$2" -F "metadata=$3"
  t_code 201
}
put_meta A Blender_Suzanne1.jpg '{"color": "red", "shape": "round", "size": "s"}'
put_meta B HappyFish.jpg '{"color": "red", "shape": "square", "size": "s"}'
put_meta C aloeL.jpg '{"color": "red", "shape": "round", "size": "m"}'
put_meta D butterfly.jpg '{"color": "blue", "shape": "round", "size": "s"}'
put_meta E fruits.jpg '{"color": "green", "shape": "oval", "size": "l"}'
# fids: the sorted ids of the answer in $OUT
fids() { grep -o '"id":"[^"]*"' "$OUT" | sed 's/"id":"//; s/"$//' | sort | tr '\n' ' ' | sed 's/ $//'; }
# fq WANT KEY=VALUE...: the same filters in the query string, a JSON object,
# a JSON array and multipart parts, in the order given
fq() {
  local want=$1 q="" obj="" arr="" mp=() f sep=""
  shift
  for f in "$@"; do
    q+="&filter=$f"
    obj+="$sep\"${f%%=*}\": \"${f#*=}\""
    arr+="$sep\"$f\""
    mp+=(-F "filter=$f")
    sep=", "
  done
  h POST "/search?k=10$q" -H 'Content-Type: application/json' -d '{"text": "a photo"}'
  t_code 200
  t_eq "query string: $*" "$(fids)" "$want"
  h POST /search -H 'Content-Type: application/json' -d "{\"text\": \"a photo\", \"k\": 10, \"filter\": {$obj}}"
  t_eq "JSON object: $*" "$(fids)" "$want"
  h POST /search -H 'Content-Type: application/json' -d "{\"text\": \"a photo\", \"k\": 10, \"filter\": [$arr]}"
  t_eq "JSON array: $*" "$(fids)" "$want"
  h POST /search -F "image=@$IMG/left01.jpg" -F k=10 "${mp[@]}"
  t_eq "multipart: $*" "$(fids)" "$want"
}
fq "A B C" color=red
fq "A C D" shape=round
fq "A B D" size=s
fq "A C" color=red shape=round
fq "A C" shape=round color=red
fq "A B" color=red size=s
fq "A B" size=s color=red
fq "A D" shape=round size=s
fq "A D" size=s shape=round
for o in "color=red shape=round size=s" "color=red size=s shape=round" \
  "shape=round color=red size=s" "shape=round size=s color=red" \
  "size=s color=red shape=round" "size=s shape=round color=red"; do
  # shellcheck disable=SC2086
  fq "A" $o
done
fq "" color=red shape=oval
fq "" shape=oval color=red
serve_stop
t_eq "filter server exit code" "$RC" 0

# ---- serve --threads, --max-queue, --quiet --------------------------------------
# --threads N starts N request workers: 9 threads make 8 more than 1
nthreads() { ls "/proc/$PID/task" | wc -l; }
serve_start threads1 --store "$T_TMP/opts.db" --model "$MODEL" --threads 1
serve_ready || bad "--threads 1 server not ready"
n1=$(nthreads)
serve_stop
serve_start threads9 --store "$T_TMP/opts.db" --model "$MODEL" --threads 9
serve_ready || bad "--threads 9 server not ready"
n9=$(nthreads)
serve_stop
t_eq "threads with --threads 9 minus --threads 1: $n9 - $n1" "$((n9 - n1))" 8
# --max-queue 1 with one worker: while a long batch request runs, another
# request is refused with 503 and the limit in its message (the default
# queue of 1024 would take it)
serve_start queue --store "$T_TMP/opts.db" --model "$MODEL" --threads 1 --max-queue 1 --full-decode
serve_ready || bad "--max-queue server not ready"
many=()
for _ in $(seq 6); do for f in aloeL.jpg fruits.jpg HappyFish.jpg butterfly.jpg left01.jpg coffee.png chelsea.png Blender_Suzanne1.jpg; do
  many+=(-F "images=@$IMG/$f"); done; done
curl -s -o "$T_TMP/many.out" -w '%{http_code}' "${many[@]}" "$URL/extract-features-batch" >"$T_TMP/many.code" &
BPID=$!
# /metrics answers on the connection thread: wait until the batch holds the
# worker (work queue depth 1), then ask for more work
busy="" depth=0
for _ in $(seq 400); do
  depth=$(curl -s "$URL/metrics" | awk '/^imgsearch_work_queue_depth / {print $2}')
  [ "$depth" = 1 ] && break
  kill -0 "$BPID" 2>/dev/null || break
  sleep 0.005
done
h POST /search -H 'Content-Type: application/json' -d '{"text": "x"}'
busy=$(cat "$OUT")
t_code 503
wait "$BPID"
t_eq "the long batch request" "$(cat "$T_TMP/many.code")" 200
if [[ $busy == *'"code":"unavailable"'*'(1 requests queued)'* ]]; then ok; else
  bad "no 503 with --max-queue 1 while a request ran (queue depth $depth): $busy"; fi
h POST /search -H 'Content-Type: application/json' -d '{"text": "x"}'
t_code 200 # the worker is free again
serve_stop
# --quiet logs only errors: the shutdown line is gone, the address stays
serve_start loud --store "$T_TMP/opts.db" --model "$MODEL"
serve_ready || bad "server not ready"
serve_stop
t_grep "$SLOG" 'SIGTERM: shutting down'
serve_start quiet --store "$T_TMP/opts.db" --model "$MODEL" --quiet
serve_ready || bad "--quiet server not ready"
h POST /search -H 'Content-Type: application/json' -d '{"text": "x"}'
t_code 200
serve_stop
t_eq "--quiet server exit code" "$RC" 0
t_grep "$SLOG" '^listening on http://'
t_nogrep "$SLOG" 'SIGTERM: shutting down'
t_nogrep "$SLOG" 'stopped; the store is closed'

t_done
