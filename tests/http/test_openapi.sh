#!/usr/bin/env bash
# GET /openapi.json and GET /docs: the document is valid OpenAPI 3.1
# (@seriousme/openapi-schema-validator, from package-lock.json), carries the
# server's version, and every operation it documents answers on a live
# server with something other than 404 or 405 (test_http_openapi.c checks
# the other direction against the router).
. "$(dirname "$0")/../cli/lib.sh"
. "$(dirname "$0")/server.sh"
trap 'serve_kill_all; rm -rf "$T_TMP"' EXIT
export IMGSEARCH_RATE_LIMIT=0
ROOT=$(cd "$(dirname "$0")/../.." && pwd)

serve_start main --store "$T_TMP/a.db" --model "$MODEL" --api-key k1 --api-key-all
serve_ready
DOC=$T_TMP/openapi.json
# open without the key, like /health
h GET /openapi.json
t_code 200
cp "$OUT" "$DOC"
t_grep "$HDR" '^Content-Type: application/json'
version=$(curl -s "$URL/health" | sed -E 's/.*"version":"([^"]*)".*/\1/')
t_grep "$DOC" "\"version\": \"$version\""
t_nogrep "$DOC" '@VERSION@'
h HEAD /openapi.json
t_code 200
h GET /docs
t_code 200
t_grep "$HDR" '^Content-Type: text/html'
t_grep "$OUT" 'fetch\("openapi.json"\)'
t_nogrep "$OUT" 'https?://'

# valid OpenAPI
if ! command -v node >/dev/null; then
  t_skip tool:node "node is not installed (scripts/install-deps)"
else
  if [ ! -f "$ROOT/node_modules/@seriousme/openapi-schema-validator/package.json" ]; then
    (cd "$ROOT" && npm ci --no-audit --no-fund) >"$T_TMP/npm.log" 2>&1
  fi
  if [ -f "$ROOT/node_modules/@seriousme/openapi-schema-validator/package.json" ]; then
    node "$ROOT/tests/http/openapi_check.mjs" "$DOC" >"$T_TMP/valid" 2>&1
    t_grep "$T_TMP/valid" '^valid OpenAPI 3\.1\.0$'
    # and the validator does refuse a broken document
    python3 -c 'import json, sys; d = json.load(open(sys.argv[1])); d["paths"]["/x"] = {"get": {"responses": 5}}; print(json.dumps(d))' \
      "$DOC" >"$T_TMP/broken.json"
    if node "$ROOT/tests/http/openapi_check.mjs" "$T_TMP/broken.json" >/dev/null 2>&1; then
      bad "the validator took a broken document"; else ok; fi
  else
    t_skip tool:npm "npm ci failed: $(tail -n 3 "$T_TMP/npm.log" | tr '\n' ' ')"
  fi
fi

# every documented operation is routed on the live server: an item to
# address first, its DELETE last
curl -s -o /dev/null -H 'Authorization: Bearer k1' -X PUT -F image=@"$MODEL/images/left01.jpg" "$URL/items/doc%2Fitem"
ops=$(python3 -c 'import json, sys
for p, item in json.load(open(sys.argv[1]))["paths"].items():
    for m in ("get", "post", "put", "delete"):
        if m in item:
            print(m.upper(), p)' "$DOC")
n=0
while read -r m p; do
  [ -n "$m" ] || continue
  n=$((n + 1))
  path=${p//\{id\}/doc%2Fitem}
  h "$m" "$path" -H 'Authorization: Bearer k1'
  if [ "$CODE" != 404 ] && [ "$CODE" != 405 ] && [ "$CODE" != 000 ]; then ok; else
    bad "$m $p (as $path) answered $CODE: $(head -c 200 "$OUT")"; fi
done <<<"$(echo "$ops" | grep -v '^DELETE'; echo "$ops" | grep '^DELETE')"
if [ "$n" -ge 16 ]; then ok; else bad "only $n operations found in the document"; fi
serve_stop
t_done
