#!/usr/bin/env bash
# GET /items/{id}/thumb?size=N of `imgsearch serve`: a JPEG whose short side
# is N (portrait and landscape keep their ratio), ETag + Cache-Control, 304
# on If-None-Match, the cache folder next to the store, the same bytes from
# the cache, 400 for another size, 404 for an unknown item, 415 for an item
# whose file is no image, and no thumbnail of a file outside the roots.
. "$(dirname "$0")/../cli/lib.sh"
. "$(dirname "$0")/server.sh"
trap 'serve_kill_all; rm -rf "$T_TMP"' EXIT
# jpeg_size FILE: "WxH" from the JPEG's SOF marker
jpeg_size() {
  python3 - "$1" <<'PY'
import struct, sys
b = open(sys.argv[1], 'rb').read()
i = 2
while i < len(b) - 9:
    if b[i] != 0xFF: print('bad'); sys.exit()
    m = b[i + 1]; n = struct.unpack('>H', b[i + 2:i + 4])[0]
    if m in (0xC0, 0xC1, 0xC2):
        h, w = struct.unpack('>HH', b[i + 5:i + 9]); print(f'{w}x{h}'); sys.exit()
    i += 2 + n
print('none')
PY
}
CAT=$T_TMP/catalog
mkdir -p "$CAT"
cp "$MODEL"/images/fruits.jpg "$MODEL"/images/chelsea.png "$CAT"/
# a portrait (300x600) and a wallpaper (5640x3172), made with cjpeg
HAVE_CJPEG=0
if command -v cjpeg >/dev/null; then
  HAVE_CJPEG=1
  python3 "$(dirname "$0")/mkimg.py" 300 600 2 | cjpeg -quality 90 >"$CAT/portrait.jpg"
  python3 "$(dirname "$0")/mkimg.py" 5640 3172 3 | cjpeg -quality 90 >"$CAT/wall.jpg"
fi
serve_start thumbs --store "$T_TMP/store.db" --model "$MODEL" --catalog "$CAT"
if serve_ready; then ok; else bad "the server did not get ready: $(tail -n 5 "$SLOG")"; fi

H=$T_TMP/h
code=$(curl -s -D "$H" -o "$T_TMP/f128.jpg" -w '%{http_code}' "$URL/items/fruits.jpg/thumb?size=128")
t_eq "thumb 128" "$code" 200
t_grep "$H" '^Content-Type: image/jpeg'
t_grep "$H" '^Cache-Control: max-age='
t_grep "$H" '^ETag: "[0-9a-f]{64}"'
etag=$(grep -i '^ETag:' "$H" | cut -d' ' -f2 | tr -d '\r')
src=$(curl -s "$URL/items/fruits.jpg" | python3 -c 'import json,sys; print(json.load(sys.stdin).get("source",""))' 2>/dev/null)
orig=$(jpeg_size "$MODEL/images/fruits.jpg")
ow=${orig%x*} oh=${orig#*x}
want_w=$(( (ow * 128 * 2 + oh) / (2 * oh) ))
[ "$ow" -lt "$oh" ] && want_w=128
t_eq "fruits $orig at 128, short side 128" "$(jpeg_size "$T_TMP/f128.jpg")" "${want_w}x128"
if [ "$HAVE_CJPEG" = 1 ]; then
  code=$(curl -s -o "$T_TMP/p256.jpg" -w '%{http_code}' "$URL/items/portrait.jpg/thumb?size=256")
  t_eq "portrait thumb" "$code" 200
  t_eq "portrait 300x600 at 256" "$(jpeg_size "$T_TMP/p256.jpg")" 256x512
  code=$(curl -s -o "$T_TMP/w512.jpg" -w '%{http_code}' "$URL/items/wall.jpg/thumb?size=512")
  t_eq "wallpaper thumb" "$code" 200
  t_eq "wallpaper 5640x3172 at 512" "$(jpeg_size "$T_TMP/w512.jpg")" 910x512
  wb=$(stat -c %s "$T_TMP/w512.jpg")
  if [ "$wb" -lt 150000 ]; then ok; else bad "the wallpaper thumbnail has $wb bytes"; fi
else
  t_skip tool:cjpeg "cjpeg is not installed (scripts/install-deps: libjpeg-turbo-progs)"
fi
code=$(curl -s -o /dev/null -w '%{http_code}' "$URL/items/chelsea.png/thumb")
t_eq "a PNG, default size" "$code" 200

# 304 with the ETag; 200 with another
: >"$T_TMP/empty"
code=$(curl -s -o "$T_TMP/empty" -w '%{http_code}' -H "If-None-Match: $etag" "$URL/items/fruits.jpg/thumb?size=128")
t_eq "If-None-Match with the ETag" "$code" 304
t_eq "a 304 has no body" "$(stat -c %s "$T_TMP/empty")" 0
code=$(curl -s -o /dev/null -w '%{http_code}' -H 'If-None-Match: "0000"' "$URL/items/fruits.jpg/thumb?size=128")
t_eq "If-None-Match with another tag" "$code" 200
code=$(curl -s -D "$H" -o /dev/null -w '%{http_code}' -H "If-None-Match: $etag" "$URL/items/fruits.jpg/thumb?size=256")
t_eq "the size is part of the tag" "$code" 200
# the cache: one file per thumbnail, same bytes the second time (a database
# store, under test_http_pg.sh, keeps them under UPLOADS/.thumbs)
THUMBS=$T_TMP/store.db.thumbs
[ -z "${IMGSEARCH_TEST_PG_URL:-}" ] || THUMBS=$T_TMP/store.db.images/.thumbs
n=$(ls "$THUMBS" | grep -c '\.jpg$')
t_eq "cache files" "$n" $((3 + 2 * HAVE_CJPEG))
curl -s -o "$T_TMP/f128b.jpg" "$URL/items/fruits.jpg/thumb?size=128"
if cmp -s "$T_TMP/f128.jpg" "$T_TMP/f128b.jpg"; then ok; else bad "the cached thumbnail differs"; fi
t_eq "a hit writes nothing" "$(ls "$THUMBS" | grep -c '\.jpg$')" "$n"
# HEAD like GET
code=$(curl -s -I -o /dev/null -w '%{http_code}' "$URL/items/fruits.jpg/thumb?size=128")
t_eq "HEAD" "$code" 200

# refusals
code=$(curl -s -o "$OUT" -w '%{http_code}' "$URL/items/fruits.jpg/thumb?size=100")
t_eq "size 100" "$code" 400
t_grep "$OUT" '"code":"invalid_argument"'
code=$(curl -s -o "$OUT" -w '%{http_code}' "$URL/items/nope.jpg/thumb")
t_eq "unknown item" "$code" 404
code=$(curl -s -o /dev/null -w '%{http_code}' -X POST "$URL/items/fruits.jpg/thumb")
t_eq "POST" "$code" 405
# an item whose source lies outside every root: 404, as for /image
curl -s -o /dev/null -X PUT -H 'Content-Type: application/json' \
  --data "{\"source\": \"/etc/hostname\", \"metadata\": {}}" "$URL/items/outside" || true
code=$(curl -s -o /dev/null -w '%{http_code}' "$URL/items/outside/thumb")
if [ "$code" = 404 ] || [ "$code" = 400 ]; then ok; else bad "an outside source answered $code"; fi
# a file that is no longer an image (replaced with text): 415 or 422
printf 'not an image' >"$CAT/chelsea.png"
code=$(curl -s -o "$OUT" -w '%{http_code}' "$URL/items/chelsea.png/thumb?size=512")
if [ "$code" = 415 ] || [ "$code" = 422 ]; then ok; else bad "a text file answered $code: $(cat "$OUT")"; fi
serve_stop
t_eq "server exit code" "$RC" 0
t_done
