#!/usr/bin/env bash
# Request ids (X-Request-ID: kept when valid, made when absent or not
# 1..128 printable ASCII, echoed, in error bodies) and the access log (one
# JSON line per request on stderr or --access-log FILE).
. "$(dirname "$0")/../cli/lib.sh"
. "$(dirname "$0")/server.sh"
trap 'serve_kill_all; rm -rf "$T_TMP"' EXIT
export IMGSEARCH_RATE_LIMIT=0
rid() { tr -d '\r' <"$HDR" | sed -n 's/^X-Request-ID: //p'; }
MADE='^[0-9a-f]{8}-[0-9a-f]+$'
t_made() { if [[ $(rid) =~ $MADE ]]; then ok; else bad "not a made id: '$(rid)'"; fi; }

ALOG=$T_TMP/access.log
serve_start main --store "$T_TMP/a.db" --model "$MODEL" --access-log "$ALOG"
serve_ready

# a valid id is kept, echoed, and named in the error body
h GET /health -H 'X-Request-ID: abc-123'
t_eq "X-Request-ID" "$(rid)" abc-123
h GET /nope -H 'X-Request-ID: req/42:"x"'
t_eq "X-Request-ID" "$(rid)" 'req/42:"x"'
t_grep "$OUT" '"request_id":"req/42:\\"x\\""\}$'
long=$(head -c 128 /dev/zero | tr '\0' 'a')
h GET /health -H "X-Request-ID: $long"
t_eq "X-Request-ID" "$(rid)" "$long"
# absent: made, and two requests get two ids
h GET /health
t_made
first=$(rid)
h GET /health
t_made
if [ "$first" != "$(rid)" ]; then ok; else bad "the same id twice: $first"; fi
# invalid: replaced (129 characters, a space, non-ASCII, empty)
h GET /health -H "X-Request-ID: ${long}b"
t_made
h GET /health -H 'X-Request-ID: a b'
t_made
h GET /health -H "X-Request-ID: caf$(printf '\303\251')"
t_made
h GET /health -H 'X-Request-ID;'
t_made
# errors refused at the door carry it too (401-less server: a 405 and a 413)
h DELETE /search -H 'X-Request-ID: m1'
t_grep "$OUT" '"request_id":"m1"'
h POST /search -H 'X-Request-ID: big1' -H 'Content-Type: application/json' -H 'Content-Length: 999999999999'
t_eq "status" "$CODE" 413
t_grep "$OUT" '"request_id":"big1"'
h POST /search -H 'X-Request-ID: s1' -H 'Content-Type: application/json' --data-binary '{"text": "a cat", "k": 1}'
t_eq "status" "$CODE" 200
t_eq "X-Request-ID" "$(rid)" s1
serve_stop
t_eq "exit code" "$RC" 0

# ---- the access log: one JSON line per request ----
if command -v python3 >/dev/null; then
  python3 - "$ALOG" >"$T_TMP/check" 2>&1 <<'EOF'
import json, sys
keys = ["time", "id", "method", "route", "status", "bytes", "duration_ms", "client"]
lines = open(sys.argv[1]).read().splitlines()
rows = [json.loads(l) for l in lines]
for r in rows:
    assert list(r) == keys, r
    assert r["client"] == "127.0.0.1", r
    assert r["duration_ms"] >= 0 and r["time"].endswith("Z"), r
by = {r["id"]: r for r in rows}
h = by["abc-123"]
assert (h["method"], h["route"], h["status"]) == ("GET", "/health", 200), h
assert h["bytes"] > 20, h
n = by['req/42:"x"']
assert (n["route"], n["status"]) == ("other", 404), n
assert (by["m1"]["method"], by["m1"]["route"], by["m1"]["status"]) == ("DELETE", "/search", 405)
assert by["big1"]["status"] == 413
s = by["s1"]
assert (s["method"], s["route"], s["status"]) == ("POST", "/search", 200), s
print("rows", len(rows))
EOF
  if grep -q '^rows [0-9]' "$T_TMP/check"; then ok; else bad "access log: $(tail -c 400 "$T_TMP/check")"; fi
else
  t_skip tool:python3 "python3 is not installed"
fi
# the serve log itself has no access lines when they go to a file
t_nogrep "$SLOG" '"route":'
# every request started is one line (readiness polls included)
n=$(wc -l <"$ALOG")
if [ "$n" -ge 14 ]; then ok; else bad "$n access lines"; fi

# default: stderr; --quiet or --access-log off: none
serve_start dflt --store "$T_TMP/b.db" --model "$MODEL"
serve_ready
h GET /health -H 'X-Request-ID: on-stderr'
serve_stop
t_grep "$SLOG" '^\{"time":"[^"]+","id":"on-stderr","method":"GET","route":"/health","status":200,'
for opt in --quiet "--access-log off"; do
  # shellcheck disable=SC2086
  serve_start off --store "$T_TMP/b.db" --model "$MODEL" $opt
  serve_ready
  h GET /health -H 'X-Request-ID: silent'
  serve_stop
  t_nogrep "$SLOG" silent
done
# a file that cannot be opened is a usage error
t_run 2 "$BIN" serve --store "$T_TMP/c.db" --model "$MODEL" --access-log "$T_TMP/no/such/dir/log"
t_grep "$ERR" 'access-log'
t_done
