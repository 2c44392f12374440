#!/usr/bin/env bash
# Catalog sync while serving: files copied into, changed in, moved within
# and removed from a served catalog appear, update and disappear in search
# within a few seconds, through the same ingest engine as `imgsearch index`
# - once with inotify (no periodic rescan), once with only the periodic
# rescan (--no-inotify --rescan-interval 1). A corrupt file ends failed
# (counted in /health, the worker idle: nothing left to embed) and becomes
# searchable when it is replaced by a good image.
. "$(dirname "$0")/../cli/lib.sh"
. "$(dirname "$0")/server.sh"
trap 'serve_kill_all; rm -rf "$T_TMP"' EXIT
IMG=$MODEL/images
LIMIT=${SYNC_LIMIT_S:-8} # "a few seconds", with room for a loaded machine

# wait_for WHAT CMD...: retries CMD every 0.1 s for LIMIT s; one case
wait_for() {
  local what=$1 i; shift
  for i in $(seq $((LIMIT * 10))); do
    if "$@" >/dev/null 2>&1; then ok; return 0; fi
    sleep 0.1
  done
  bad "$what: not within $LIMIT s"
  return 1
}
# item_embedded ID: /items/ID exists with an embedding
item_embedded() { curl -s "$URL/items/$1" | grep -q '"has_embedding":true'; }
item_gone() { [ "$(curl -s -o /dev/null -w "%{http_code}" "$URL/items/$1")" = 404 ]; }
# top_is FILE ID: an image search with FILE answers ID first, score ~1
top_is() {
  curl -s -F "image=@$1" -F k=3 "$URL/search" |
    python3 -c 'import json,sys; r=json.load(sys.stdin)["results"]; sys.exit(0 if r and r[0]["id"]==sys.argv[1] and r[0]["score"]>0.999 else 1)' "$2"
}
not_in_search() {
  curl -s -F "image=@$1" -F k=50 "$URL/search" |
    python3 -c 'import json,sys; r=json.load(sys.stdin)["results"]; sys.exit(1 if any(h["id"]==sys.argv[1] for h in r) else 0)' "$2"
}
health_has() { curl -s "$URL/health" | grep -Eq "$1"; }

# one_run NAME OPTIONS...: the whole scenario against one server
one_run() {
  local name=$1; shift
  local cat=$T_TMP/$name
  mkdir -p "$cat"
  cp "$IMG/fruits.jpg" "$IMG/left01.jpg" "$IMG/aloeL.jpg" "$cat"/
  serve_start "$name" --store "$T_TMP/$name.db" --model "$MODEL" --catalog "$cat" --rate-limit 0 "$@"
  if serve_ready; then ok; else bad "$name: the server did not get ready: $(tail -n 5 "$SLOG")"; fi
  # new
  cp "$IMG/HappyFish.jpg" "$cat/"
  wait_for "$name: a new file is embedded" item_embedded HappyFish.jpg
  wait_for "$name: a new file is found by search" top_is "$IMG/HappyFish.jpg" HappyFish.jpg
  # changed: other bytes under the same name
  cp "$IMG/chelsea.png" "$cat/fruits.jpg.tmp" && mv "$cat/fruits.jpg.tmp" "$cat/fruits.jpg"
  wait_for "$name: a changed file is embedded again" top_is "$IMG/chelsea.png" fruits.jpg
  # moved into a new folder
  mkdir -p "$cat/sub"
  mv "$cat/HappyFish.jpg" "$cat/sub/fish.jpg"
  wait_for "$name: a moved file has its new id" top_is "$IMG/HappyFish.jpg" sub/fish.jpg
  wait_for "$name: the old id of a moved file is gone" item_gone HappyFish.jpg
  # a file added to the new folder (inotify must watch it now)
  cp "$IMG/coffee.png" "$cat/sub/"
  wait_for "$name: a file in a new folder" top_is "$IMG/coffee.png" sub/coffee.png
  # deleted
  rm "$cat/left01.jpg"
  wait_for "$name: a deleted file leaves the store" item_gone left01.jpg
  wait_for "$name: a deleted file leaves search" not_in_search "$IMG/left01.jpg" left01.jpg
  # a corrupt file: failed, counted, the worker idle with nothing to embed
  head -c 2000 "$IMG/butterfly.jpg" >"$cat/broken.jpg"
  wait_for "$name: a corrupt file is counted failed" health_has '"failed":[1-9]'
  wait_for "$name: the worker is idle after the failure" health_has '"state":"idle"'
  if item_embedded broken.jpg; then bad "$name: a corrupt file has an embedding"; else ok; fi
  curl -s "$URL/items/broken.jpg" >"$OUT"
  t_grep "$OUT" '"state":"failed"'
  t_grep "$OUT" '"error":"[^"]*(decode|truncated|corrupt|JPEG)'
  t_nogrep "$OUT" "\"error\":\"[^\"]*$T_TMP"
  curl -s "$URL/health" >"$OUT"
  t_grep "$OUT" '"waiting":1,"failed":1'
  curl -s "$URL/metrics" >"$OUT"
  t_grep "$OUT" '^imgsearch_items_failed 1$'
  # not tried again while the file stays as it is (a rescan or two later)
  local before after
  before=$(grep -o '"failed":[0-9]*,"last_error"' <(curl -s "$URL/health"))
  touch "$cat/unrelated.txt"; sleep 2.5
  after=$(grep -o '"failed":[0-9]*,"last_error"' <(curl -s "$URL/health"))
  if [ -n "$before" ] && [ "$before" = "$after" ]; then ok; else
    bad "$name: an unchanged failed file was tried again ($before -> $after)"; fi
  # replaced by a good image: searchable
  cp "$IMG/butterfly.jpg" "$cat/broken.jpg.tmp" && mv "$cat/broken.jpg.tmp" "$cat/broken.jpg"
  wait_for "$name: a repaired file is embedded" item_embedded broken.jpg
  wait_for "$name: a repaired file is found" top_is "$IMG/butterfly.jpg" broken.jpg
  curl -s "$URL/items/broken.jpg" >"$OUT"
  t_nogrep "$OUT" '"state":"failed"'
  curl -s "$URL/health" >"$OUT"
  t_grep "$OUT" '"waiting":0,"failed":0'
  serve_stop
  if [ "$RC" = 0 ]; then ok; else bad "$name: the server exited $RC"; fi
}

one_run inotify --rescan-interval 0
grep -q 'catalog sync: [1-9][0-9]* folders watched with inotify, rescan every 0 s' "$SLOG" && ok ||
  bad "the inotify run's log: $(grep 'catalog sync' "$SLOG")"
one_run rescan --no-inotify --rescan-interval 1
grep -q 'catalog sync: 0 folders watched with inotify, rescan every 1 s' "$SLOG" && ok ||
  bad "the rescan run's log: $(grep 'catalog sync' "$SLOG")"
t_done
