#!/usr/bin/env bash
# Hostile requests against `imgsearch serve` (issue 9, the request-level
# items): bytes that are not UTF-8 in ids, paths and query values; filters
# that cannot be decoded; query vectors float32 cannot normalise; metadata
# nested 2,000 deep; sixteen long filters; a full disk; PUTs racing
# DELETEs; 20 MB vector bodies and the memory they leave behind. Loopback
# only, a free port, every request bounded by curl's --max-time.
. "$(dirname "$0")/lib.sh"

IMG=$MODEL/images
HDR=$T_TMP/headers
if ! command -v curl >/dev/null; then
  bad "curl is not installed (scripts/install-deps)"
  t_done
  exit
fi
. "$(dirname "$0")/../http/server.sh"
trap 'serve_kill_all; rm -rf "$T_TMP"' EXIT
# h METHOD PATH CURL_ARGS...: CODE, body in $OUT
h() {
  local m=$1 p=$2
  shift 2
  CODE=$(curl -s --max-time 30 --path-as-is -o "$OUT" -D "$HDR" -w '%{http_code}' -X "$m" "$@" "$URL$p")
}
# t_err STATUS CODE: the error shape, with that status and code
t_err() {
  local re="^\{\"error\":\{\"code\":\"$2\",\"message\":\"([^\"\\\\]|\\\\.)+\"\}(,\"[a-z_]+\":\"([^\"\\\\]|\\\\.)*\")*\}$"
  if [ "$CODE" = "$1" ] && grep -Eq -- "$re" "$OUT"; then ok; else
    bad "wanted $1 $2, got $CODE: $(head -c 300 "$OUT")"; fi
}
t_code() {
  if [ "$CODE" = "$1" ]; then ok; else bad "status $CODE, wanted $1: $(head -c 300 "$OUT")"; fi
}
t_le() { # A <= B (numbers)
  if awk -v a="$1" -v b="$2" 'BEGIN { exit !(a <= b) }'; then ok; else bad "$1 > $2 ${3:-}"; fi
}
kb() { awk -v k="$2" '$1 == k":" {print $2}' "/proc/$1/status"; }

CAT=$T_TMP/catalog
mkdir -p "$CAT"
cp "$IMG"/*.jpg "$CAT"/ 2>/dev/null || cp "$IMG"/* "$CAT"/
chmod -R u+w "$CAT"
STORE=$T_TMP/store.db
JPG=$(ls "$IMG"/*.jpg | head -n 1)

serve_start hostile --store "$STORE" --model "$MODEL" --catalog "$CAT" --threads 4
serve_ready || { bad "the server did not get ready"; t_done; exit; }
DIM=$(curl -s "$URL/health" | grep -o '"dim":[0-9]*' | cut -d: -f2)

# ---- 1. ids, paths and query values that are not UTF-8 ----
h PUT '/items/bad%FF%FEid' -F "image=@$JPG"
t_err 400 invalid_utf8
h GET '/items/bad%FF%FEid'
t_err 400 invalid_utf8
h GET /items
t_code 200
h GET "/items/a$(printf '\xff')b"
t_err 400 invalid_utf8
h POST '/search?text=fish&k=%FF'
t_err 400 invalid_utf8
h POST '/search?text=fish&filter=%FF'
t_err 400 invalid_utf8
h POST '/search?text=fish&filter=a%3D%FF'
t_err 400 invalid_utf8
h POST '/search' -F 'text=fish' -F "filter=a=$(printf '\xfe')"
t_err 400 invalid_utf8
h PUT '/items/ok-id' -F "image=@$JPG" -F "metadata={\"k\": \"$(printf '\xff')\"}"
t_err 400 invalid_utf8

# an id stored before ids were checked (or by another program) still lists
if command -v sqlite3 >/dev/null; then
  sqlite3 "$STORE" "INSERT INTO items(id, source, metadata, created_at, updated_at)
                    VALUES (CAST(X'6C656761637966FF' AS TEXT), NULL, '{}', 1, 1);" 2>"$ERR"
  h GET '/items?limit=1000'
  t_code 200
  t_grep "$OUT" '"id":"legacyf\\ufffd"|"id":"legacyf�"'
  h GET '/items/legacyf%FF'
  t_err 400 invalid_utf8
  sqlite3 "$STORE" "DELETE FROM items WHERE id = CAST(X'6C656761637966FF' AS TEXT);"
else
  bad "sqlite3 is not installed (scripts/install-deps)"
fi

# ---- 7. a filter that cannot be decoded is refused, never dropped ----
h POST '/search?text=fish&filter=a%00%3Db'
t_err 400 invalid_argument
h POST '/search?text=fish&filter=a%zz'
t_err 400 invalid_argument
h POST '/search?text=fish&filter=nosuchkey%3Dnosuchvalue'
t_code 200
t_grep "$OUT" '"count":0'

# ---- 9. vectors float32 cannot normalise; every hit has a score ----
tiny=$(awk -v d="$DIM" 'BEGIN { for (i = 0; i < d; i++) printf "%s1e-45", i ? "," : "" }')
h POST /search -H 'Content-Type: application/json' -d "{\"vector\": [$tiny]}"
t_err 400 invalid_argument
ones=$(awk -v d="$DIM" 'BEGIN { for (i = 0; i < d; i++) printf "%s1", i ? "," : "" }')
h POST /search -H 'Content-Type: application/json' -d "{\"vector\": [$ones], \"k\": 5}"
t_code 200
t_eq_n() { if [ "$1" = "$2" ]; then ok; else bad "$1 != $2 ($3)"; fi; }
t_eq_n "$(grep -o '"id":' "$OUT" | wc -l)" "$(grep -o '"score":[-0-9]' "$OUT" | wc -l)" "a hit without a score"

# ---- 9. metadata nested 2,000 deep; sixteen long filters ----
deep=$(awk 'BEGIN { for (i = 0; i < 2000; i++) printf "{\"a\":"; printf "1"; for (i = 0; i < 2000; i++) printf "}" }')
printf '{"image": "%s", "metadata": %s}' "$(base64 -w0 "$JPG")" "$deep" >"$T_TMP/deep.json"
h PUT '/items/deep' -H 'Content-Type: application/json' --data-binary "@$T_TMP/deep.json"
t_err 400 invalid_argument
h PUT '/items/deep' -F "image=@$JPG" -F "metadata=$deep"
t_err 400 invalid_argument
d33=$(awk 'BEGIN { for (i = 0; i < 33; i++) printf "{\"a\":"; printf "1"; for (i = 0; i < 33; i++) printf "}" }')
h PUT '/items/deep' -F "image=@$JPG" -F "metadata=$d33"
t_err 400 invalid_argument
d32=$(awk 'BEGIN { for (i = 0; i < 32; i++) printf "{\"a\":"; printf "1"; for (i = 0; i < 32; i++) printf "}" }')
h PUT '/items/deep' -F "image=@$JPG" -F "metadata=$d32"
t_code 201
h DELETE '/items/deep'
t_code 200
filters=
for i in $(seq 16); do
  filters="$filters&filter=$(printf 'k%03d%0250d' "$i" 0)%3D$(printf 'v%0200d' 0)"
done
h POST "/search?text=fish$filters"
t_code 200
t_grep "$OUT" '"count":0'
h POST "/search?text=fish$filters&filter=one%3Dmore"
t_err 400 invalid_argument

# ---- 5. server paths never shown ----
h GET /health
t_code 200
t_nogrep "$OUT" "$T_TMP"
t_grep "$OUT" '"items":[0-9]+'

# ---- 6. a PUT racing DELETEs answers from what it wrote ----
race() {
  local end=$((SECONDS + 4)) n=0
  while [ $SECONDS -lt $end ]; do
    printf '%s\n' "$(curl -s --max-time 10 -o /dev/null -w '%{http_code}' -X "$1" "${@:2}")"
    n=$((n + 1))
  done
}
race PUT -H 'Content-Type: image/jpeg' --data-binary "@$JPG" "$URL/items/race?async=1" >"$T_TMP/put.codes" &
rp=$!
race DELETE "$URL/items/race" >"$T_TMP/del.codes" &
rd=$!
race PUT -H 'Content-Type: image/jpeg' --data-binary "@$JPG" "$URL/items/race?async=1" >"$T_TMP/put2.codes" &
rp2=$!
wait $rp $rd $rp2
cat "$T_TMP/put.codes" "$T_TMP/put2.codes" >"$T_TMP/puts"
t_nogrep "$T_TMP/puts" '^(404|5..)$'
t_grep "$T_TMP/puts" '^20[012]$'

# ---- 3. twenty-megabyte vector bodies: refused before a tree is built, and
# the memory goes back ----
big=$T_TMP/big.json
{ printf '{"vector": ['; yes '1,' | head -c 20000000 | tr -d '\n'; printf '1]}'; } >"$big"
rss0=$(kb "$PID" VmRSS)
for i in 1 2 3 4 5 6; do
  h POST /search -H 'Content-Type: application/json' --data-binary "@$big"
  t_err 413 too_large
done
sleep 0.5
hwm=$(kb "$PID" VmHWM)
rss=$(kb "$PID" VmRSS)
echo "memory: rss before $rss0 kB, peak $hwm kB, after six 20 MB vector bodies $rss kB"
t_le "$hwm" $((rss0 + 150000)) "peak kB (before: $rss0 kB)"
t_le "$rss" $((rss0 + 40000)) "settled kB (before: $rss0 kB)"
serve_stop
t_eq_n "$RC" 0 "exit code of a clean stop"

# ---- 5. a full disk is 507 no_space, with no server path ----
STORE2=$T_TMP/full.db
trap '' XFSZ
ulimit -S -f 1024 # 1 MiB per file: writes past it fail with EFBIG, as on a full disk
serve_start full --store "$STORE2" --model "$MODEL"
ulimit -S -f unlimited
trap - XFSZ
if serve_ready; then
  fake=$T_TMP/fake.png
  { printf '\x89PNG\r\n\x1a\n'; head -c 2000000 /dev/zero; } >"$fake"
  h PUT '/items/big?async=1' -H 'Content-Type: image/png' --data-binary "@$fake"
  t_err 507 no_space
  t_nogrep "$OUT" "$T_TMP"
  t_nogrep "$OUT" '"/[a-z]'
  h GET /items/big
  t_err 404 not_found
  serve_stop
  t_eq_n "$RC" 0 "exit code of a clean stop"
else
  bad "the server with a file size limit did not get ready"
fi

t_done
