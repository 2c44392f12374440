#!/usr/bin/env bash
# CORS: off by default (no Access-Control-* header, OPTIONS is 405); with
# --cors-origin, allowed origins get Allow-Origin, "*" only for reads, and
# preflights are answered 204 before the API key is asked for. Then the same
# in headless Chromium: a page of another origin reads /search only from a
# server that allows that origin (cors_browser.mjs).
. "$(dirname "$0")/../cli/lib.sh"
. "$(dirname "$0")/server.sh"
trap 'serve_kill_all; rm -rf "$T_TMP"' EXIT
export IMGSEARCH_RATE_LIMIT=0
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

# ---- in a real browser: a page of another origin calls /search ----
# A static server (python3 -m http.server, another loopback port) serves a
# page whose script POSTs JSON to /search (so Chromium sends a preflight);
# tests/http/cors_browser.mjs opens it in headless Chromium against a server
# that allows the page's origin (results come back) and two that do not (the
# fetch throws; no POST /search reaches them). Without node, chromium or
# playwright-core these cases are one skip, tagged as in test_browser.sh.
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
. "$(dirname "$0")/browser.sh"
browser_skip=$(browser_missing python3)
if [ -n "$browser_skip" ]; then
  t_skip "${browser_skip%%|*}" "${browser_skip#*|}"
  t_done
  exit
fi
SITE=$T_TMP/site
mkdir -p "$SITE"
cat >"$SITE/page.html" <<'HTML'
<!doctype html>
<meta charset="utf-8">
<title>another origin</title>
<pre id="out"></pre>
<script>
// POSTs a text query to the API named by ?api= and writes the outcome
const out = document.querySelector("#out");
const api = new URLSearchParams(location.search).get("api");
fetch(api + "/search", {
  method: "POST",
  headers: { "Content-Type": "application/json" },
  body: JSON.stringify({ text: "a photo of a cat", k: 3 }),
}).then(async (r) => {
  const body = await r.json();
  out.textContent = JSON.stringify({ outcome: "ok", status: r.status,
    results: (body.results || []).length, requestId: r.headers.get("X-Request-ID") });
}).catch((e) => {
  out.textContent = JSON.stringify({ outcome: "threw", error: e.name, message: String(e.message) });
});
</script>
HTML
python3 -u -m http.server 0 --bind 127.0.0.1 --directory "$SITE" >"$T_TMP/site.log" 2>&1 &
SITE_PID=$!
SERVE_PIDS+=("$SITE_PID")
SITE_URL=
for _ in $(seq 200); do
  p=$(grep -oE 'port [0-9]+' "$T_TMP/site.log" | head -n 1 | cut -d' ' -f2)
  [ -n "$p" ] && SITE_URL=http://127.0.0.1:$p && break
  sleep 0.05
done
t_grep "$T_TMP/site.log" 'Serving HTTP on 127.0.0.1 port [0-9]+'
mkdir -p "$T_TMP/cat"
cp "$MODEL/images/chelsea.png" "$MODEL/images/fruits.jpg" "$MODEL/images/HappyFish.jpg" "$T_TMP/cat/"
serve_start allowed --store "$T_TMP/b.db" --model "$MODEL" --catalog "$T_TMP/cat" --cors-origin "$SITE_URL"
serve_ready
ALLOWED_URL=$URL ALLOWED_PID=$PID ALLOWED_LOG=$SLOG
serve_start other --store "$T_TMP/b.db" --model "$MODEL" --cors-origin https://shop.example
serve_ready
OTHER_URL=$URL OTHER_PID=$PID OTHER_LOG=$SLOG
serve_start off2 --store "$T_TMP/b.db" --model "$MODEL"
serve_ready
OFF_URL=$URL OFF_LOG=$SLOG
browser_run cors_browser.mjs "$SITE_URL/page.html" "$ALLOWED_URL" "$OTHER_URL" "$OFF_URL"
# what reached each server (its access log on stderr): the allowed one got
# the preflight and the search; the others only the preflight
t_grep "$ALLOWED_LOG" '"method":"OPTIONS","route":"/search","status":204'
t_grep "$ALLOWED_LOG" '"method":"POST","route":"/search","status":200'
t_grep "$OTHER_LOG" '"method":"OPTIONS","route":"/search","status":204'
t_nogrep "$OTHER_LOG" '"method":"POST","route":"/search"'
t_grep "$OFF_LOG" '"method":"OPTIONS","route":"/search","status":405'
t_nogrep "$OFF_LOG" '"method":"POST","route":"/search"'
# the page really came from the static server
t_grep "$T_TMP/site.log" '"GET /page.html\?api=[^ ]* HTTP/1.1" 200'
serve_stop
PID=$OTHER_PID; serve_stop
PID=$ALLOWED_PID; serve_stop
kill "$SITE_PID" 2>/dev/null
t_done
