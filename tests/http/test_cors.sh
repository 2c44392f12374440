#!/usr/bin/env bash
# CORS: off by default (no Access-Control-* header, OPTIONS is 405); with
# --cors-origin, allowed origins get Allow-Origin, "*" only for reads, and
# preflights are answered 204 before the API key is asked for.
. "$(dirname "$0")/../cli/lib.sh"
. "$(dirname "$0")/server.sh"
trap 'serve_kill_all; rm -rf "$T_TMP"' EXIT
export IMGSEARCH_RATE_LIMIT=0
HDR=$T_TMP/headers
h() {
  local m=$1 p=$2
  shift 2
  CODE=$(curl -s -o "$OUT" -D "$HDR" -w '%{http_code}' -X "$m" "$@" "$URL$p")
  tr -d '\r' <"$HDR" >"$HDR.n" && mv "$HDR.n" "$HDR"
}
t_code() { if [ "$CODE" = "$1" ]; then ok; else bad "status $CODE, wanted $1: $(head -c 300 "$OUT")"; fi; }
A=https://a.example
E=https://evil.example
pre() { # PATH ORIGIN METHOD: a preflight
  h OPTIONS "$1" -H "Origin: $2" -H "Access-Control-Request-Method: $3" \
    -H 'Access-Control-Request-Headers: content-type, x-request-id'
}

# ---- off ----
serve_start off --store "$T_TMP/a.db" --model "$MODEL"
serve_ready
h OPTIONS /search -H "Origin: $A" -H 'Access-Control-Request-Method: POST'
t_code 405
t_grep "$HDR" '^Allow: POST$'
t_nogrep "$HDR" '^Access-Control-'
h GET /health -H "Origin: $A"
t_code 200
t_nogrep "$HDR" '^(Access-Control-|Vary: Origin)'
serve_stop

# ---- a named origin and "*" ----
serve_start on --store "$T_TMP/a.db" --model "$MODEL" --cors-origin "$A" --cors-origin '*' \
  --api-key k1 --api-key-all
serve_ready
h GET /health -H "Origin: $A"
t_grep "$HDR" "^Access-Control-Allow-Origin: $A\$"
t_grep "$HDR" '^Vary: Origin$'
t_grep "$HDR" '^Access-Control-Expose-Headers: X-Request-ID, Retry-After$'
# "*" lets any origin read, never write or infer
h GET /health -H "Origin: $E"
t_grep "$HDR" '^Access-Control-Allow-Origin: \*$'
h POST /search -H "Origin: $E" -H 'Authorization: Bearer k1' -H 'Content-Type: application/json' \
  --data-binary '{"text": "a cat"}'
t_code 200
t_nogrep "$HDR" '^Access-Control-Allow-Origin'
t_grep "$HDR" '^Vary: Origin$'
h POST /search -H "Origin: $A" -H 'Authorization: Bearer k1' -H 'Content-Type: application/json' \
  --data-binary '{"text": "a cat"}'
t_code 200
t_grep "$HDR" "^Access-Control-Allow-Origin: $A\$"
# an error the browser must be able to read carries it too
h GET /items -H "Origin: $A"
t_code 401
t_grep "$HDR" "^Access-Control-Allow-Origin: $A\$"

# preflights: 204 without the key
pre /search "$A" POST
t_code 204
t_grep "$HDR" "^Access-Control-Allow-Origin: $A\$"
t_grep "$HDR" '^Access-Control-Allow-Methods: POST$'
t_grep "$HDR" '^Access-Control-Allow-Headers: .*Content-Type'
t_grep "$HDR" '^Access-Control-Allow-Headers: .*X-Request-ID'
t_grep "$HDR" '^Access-Control-Max-Age: 600$'
t_grep "$HDR" '^Vary: Origin$'
pre /items/x%2Fy "$A" DELETE
t_code 204
t_grep "$HDR" '^Access-Control-Allow-Methods: GET, HEAD, PUT, DELETE$'
# "*" preflights reads only
pre /items/x "$E" GET
t_code 204
t_grep "$HDR" '^Access-Control-Allow-Origin: \*$'
t_grep "$HDR" '^Access-Control-Allow-Methods: GET, HEAD$'
pre /items/x "$E" DELETE
t_code 204
t_nogrep "$HDR" '^Access-Control-Allow-'
pre /search "$E" POST
t_nogrep "$HDR" '^Access-Control-Allow-'
# a method the route does not take, part of one, none, or lower case
for m in GET OST '' post; do
  pre /search "$A" "$m"
  t_code 204
  t_nogrep "$HDR" '^Access-Control-Allow-'
done
# OPTIONS without a preflight: 204 with Allow; unknown paths stay 404
h OPTIONS /items/abc
t_code 204
t_grep "$HDR" '^Allow: GET, HEAD, PUT, DELETE, OPTIONS$'
h OPTIONS /nope -H "Origin: $A" -H 'Access-Control-Request-Method: GET'
t_code 404
serve_stop

# ---- a named origin only: others get nothing ----
IMGSEARCH_CORS_ORIGIN="$E, $A" serve_start named --store "$T_TMP/a.db" --model "$MODEL" \
  --cors-origin http://localhost:3000
serve_ready
h GET /health -H "Origin: $E"
t_nogrep "$HDR" '^Access-Control-Allow-Origin'
h GET /health -H 'Origin: http://localhost:3000'
t_grep "$HDR" '^Access-Control-Allow-Origin: http://localhost:3000$'
serve_stop
# the environment alone, ','-separated
IMGSEARCH_CORS_ORIGIN="$E, $A" serve_start env --store "$T_TMP/a.db" --model "$MODEL"
serve_ready
h GET /health -H "Origin: $A"
t_grep "$HDR" "^Access-Control-Allow-Origin: $A\$"
serve_stop
t_run 2 "$BIN" serve --store "$T_TMP/a.db" --model "$MODEL" --cors-origin 'a, b'
t_grep "$ERR" 'not one origin'
t_done
