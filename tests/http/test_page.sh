#!/usr/bin/env bash
# The web page of `imgsearch serve`, feature by feature, in real headless
# Chromium (tests/http/page.mjs): browse with paging, a square grid with
# portrait and panorama images on srcset thumbnails, the byte budget of a
# 24-result page (<= 1.5 MB with a 5640x3172 wallpaper in the catalog), the
# viewer, more like this, keyboard access, the metadata filter, the
# minimum-score slider, an error replacing results, the empty state.
# Screenshots go to build/<B>/test-output/page/. Needs node, Debian's
# chromium and cjpeg; without them the test is one skip with the tag
# tool:node / tool:chromium / tool:npm / tool:cjpeg (see tests/run).
. "$(dirname "$0")/../cli/lib.sh"
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
SHOTS=${PAGE_SCREENSHOTS:-$(dirname "$BIN")/test-output/page}
. "$(dirname "$0")/browser.sh"
browser_or_skip cjpeg
. "$(dirname "$0")/server.sh"
trap 'serve_kill_all; rm -rf "$T_TMP"' EXIT

CAT=$T_TMP/catalog
mkdir -p "$CAT" "$SHOTS"
rm -f "$SHOTS"/*.png
cp "$MODEL"/images/* "$CAT"/
MK="python3 $ROOT/tests/http/mkimg.py"
$MK 5640 3172 1 | cjpeg -quality 90 >"$CAT/wall.jpg"     # a wallpaper, ~9 MB
$MK 400 1000 2 | cjpeg -quality 90 >"$CAT/portrait.jpg"
head -c 3000 "$MODEL/images/butterfly.jpg" >"$CAT/zz-broken.jpg"   # fails: a truncated JPEG
for i in $(seq 10 21); do $MK 640 480 "$i" | cjpeg -quality 90 >"$CAT/photo$i.jpg"; done
serve_start page --store "$T_TMP/store.db" --model "$MODEL" --catalog "$CAT" --rate-limit 0
if serve_ready; then ok; else bad "the server did not get ready: $(tail -n 5 "$SLOG")"; fi
# two items with metadata, for the filter and the viewer
for n in 1 2; do
  f=$MODEL/images/butterfly.jpg
  [ "$n" = 2 ] && f=$MODEL/images/coffee.png
  printf '{"image": "%s", "metadata": {"color": "red", "n": %d}}' "$(base64 -w0 "$f")" "$n" >"$T_TMP/put.json"
  code=$(curl -s -o "$OUT" -w '%{http_code}' -X PUT -H 'Content-Type: application/json' \
    --data-binary @"$T_TMP/put.json" "$URL/items/red-$n")
  if [ "$code" = 200 ] || [ "$code" = 201 ]; then ok; else bad "PUT red-$n answered $code: $(head -c 200 "$OUT")"; fi
done
MAIN_URL=$URL MAIN_PID=$PID
serve_start empty --store "$T_TMP/empty.db" --model "$MODEL"
if serve_ready; then ok; else bad "the empty server did not get ready: $(tail -n 5 "$SLOG")"; fi
EMPTY_URL=$URL EMPTY_PID=$PID
printf 'this is not an image\n' >"$T_TMP/notes.txt"

browser_run page.mjs "$MAIN_URL" "$EMPTY_URL" "$T_TMP/notes.txt" "$SHOTS"
for s in browse-page2 grid search-24 viewer more-like-this filter min-score error empty; do
  if [ "$(head -c 8 "$SHOTS/$s.png" 2>/dev/null | od -An -tx1 | tr -d ' \n')" = 89504e470d0a1a0a ]; then ok; else
    bad "no PNG screenshot $SHOTS/$s.png"; fi
done
PID=$EMPTY_PID; serve_stop; t_eq "empty server exit code" "$RC" 0
PID=$MAIN_PID; serve_stop; t_eq "server exit code" "$RC" 0
t_done
