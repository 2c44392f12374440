#!/usr/bin/env bash
# One ingest for every caller (src/ingest/): a folder indexed with
# `imgsearch index` is unchanged for `serve --catalog` (nothing embedded
# again), and the reverse; a Latin-1 file name is indexed under its %XX
# escaped id, listed as valid UTF-8 and searchable; links are followed only
# inside the root, by index and by serve alike.
. "$(dirname "$0")/lib.sh"

if ! command -v curl >/dev/null; then
  bad "curl is not installed (scripts/install-deps)"
  t_done
  exit
fi
. "$(dirname "$0")/../http/server.sh"
trap 'serve_kill_all; rm -rf "$T_TMP"' EXIT

counts() { echo "$(field added) $(field updated) $(field unchanged) $(field removed) $(field failed)"; }
# the precompute's counts "files added changed unchanged embedded failed" in /health
pc_counts() {
  curl -s "$URL/health" >"$T_TMP/health.json"
  echo "$(field files "$T_TMP/health.json") $(field added "$T_TMP/health.json")" \
    "$(field changed "$T_TMP/health.json") $(field unchanged "$T_TMP/health.json")" \
    "$(field embedded "$T_TMP/health.json") $(field failed "$T_TMP/health.json")"
}
image_metric() { curl -s "$URL/metrics" | grep '^imgsearch_embeddings_computed_total{kind="image"}' | awk '{print $2}'; }
utf8_ok() { if iconv -f UTF-8 -t UTF-8 "$1" >/dev/null 2>&1; then ok; else bad "$(basename "$1") is not valid UTF-8"; fi; }

# a catalog: the 12 fixture photos, one under a Latin-1 name, a link to a
# file inside, a link to a file outside, a link loop, a text file
make_catalog() {
  mkdir -p "$1/sub"
  cp "$MODEL"/images/* "$1/"
  chmod -R u+w "$1"
  mv "$1/HappyFish.jpg" "$1/$(printf 'caf\xe9.jpg')"
  mv "$1/left01.jpg" "$1/sub/"
  ln -s "$1/sub/left01.jpg" "$1/link.jpg"
  ln -s "$MODEL/images/fruits.jpg" "$1/outside.jpg"
  ln -s "$1" "$1/sub/loop"
  echo "not an image" >"$1/notes.jpg"
}

# ---- index, then serve: nothing is embedded again ----------------------------
A=$T_TMP/a
make_catalog "$A"
SA=$T_TMP/a.db
t_run 0 "$BIN" index --store "$SA" --model "$MODEL" "$A"
t_eq "index: 12 photos + the link inside" "$(counts)" "13 0 0 0 0"
t_run 0 "$BIN" items --store "$SA" list
utf8_ok "$OUT"
t_grep "$OUT" '^\{"id": "caf%E9.jpg", "source": "/.*/caf\\ufffd.jpg", '
t_grep "$OUT" '^\{"id": "link.jpg", "source": "/.*/a/link.jpg", '
t_grep "$OUT" '^\{"id": "sub/left01.jpg", '
t_nogrep "$OUT" 'outside|notes|loop/'
t_run 0 "$BIN" items --store "$SA" show 'caf%E9.jpg'
t_grep "$OUT" '"sha256": "[0-9a-f]{64}"'
t_run 0 "$BIN" search --store "$SA" --like 'caf%E9.jpg' -k 1 --json
t_nogrep "$OUT" 'caf%E9' # "more like this" leaves the item out
utf8_ok "$OUT"
t_run 0 "$BIN" search --store "$SA" --model "$MODEL" --image "$MODEL/images/HappyFish.jpg" -k 1 --json
t_eq "search by the image finds the escaped id" "$(field id)" 'caf%E9.jpg'
t_run 0 "$BIN" search --store "$SA" --model "$MODEL" --text "a fish" -k 12 --json
utf8_ok "$OUT"

serve_start idx2serve --store "$SA" --model "$MODEL" --catalog "$A"
if serve_ready; then ok; else bad "server not ready: $(tail -n 3 "$SLOG")"; fi
t_eq "serve after index: files added changed unchanged embedded failed" "$(pc_counts)" "13 0 0 13 0 0"
t_eq "serve after index: images embedded" "$(image_metric)" 0
# (GET /items also writes each item's source, the file's real path, whose
# Latin-1 byte the JSON reply must replace as the CLI does: src/http/api.c)
curl -s -H 'Content-Type: application/json' -d '{"text": "a fish", "k": 13}' "$URL/search" \
  >"$T_TMP/search.json"
utf8_ok "$T_TMP/search.json"
t_grep "$T_TMP/search.json" '"id":"caf%E9.jpg"'
CODE=$(curl -s -o "$T_TMP/img" -w '%{http_code}' "$URL/items/caf%25E9.jpg/image")
t_eq "the Latin-1 file is served" "$CODE" 200
if cmp -s "$T_TMP/img" "$MODEL/images/HappyFish.jpg"; then ok; else bad "served bytes differ"; fi
serve_stop
t_eq "server exit code" "$RC" 0
t_run 0 "$BIN" index --store "$SA" --model "$MODEL" "$A"
t_eq "index again after serve" "$(counts)" "0 0 13 0 0"

# ---- serve, then index: nothing is embedded again ----------------------------
B=$T_TMP/b
make_catalog "$B"
SB=$T_TMP/b.db
serve_start serve2idx --store "$SB" --model "$MODEL" --catalog "$B"
if serve_ready; then ok; else bad "server not ready: $(tail -n 3 "$SLOG")"; fi
t_eq "serve: files added changed unchanged embedded failed" "$(pc_counts)" "13 13 0 0 13 0"
t_eq "serve: images embedded" "$(image_metric)" 13
serve_stop
t_eq "server exit code" "$RC" 0
t_run 0 "$BIN" index --store "$SB" --model "$MODEL" "$B"
t_eq "index after serve" "$(counts)" "0 0 13 0 0"
t_grep "$OUT" '"images_per_s": 0.00'
# the same ids and digests as index gave the other copy
for s in "$SA" "$SB"; do
  "$BIN" items --store "$s" list | sed -E 's/"source": "[^"]*", //; s/"(mtime|seq|created_at|updated_at)": [0-9]+, ?//g' |
    sort >"$s.ids"
done
if cmp -s "$SA.ids" "$SB.ids"; then ok; else bad "index and serve listed different items: $(diff "$SA.ids" "$SB.ids" | head -n 4)"; fi
# a new mtime on the same bytes: serve hashes and keeps the embedding (as index does)
touch -d @981173106 "$B/fruits.jpg"
serve_start touched --store "$SB" --model "$MODEL" --catalog "$B"
if serve_ready; then ok; else bad "server not ready: $(tail -n 3 "$SLOG")"; fi
t_eq "serve, touched: files added changed unchanged embedded failed" "$(pc_counts)" "13 0 1 12 0 0"
t_eq "serve, touched: images embedded" "$(image_metric)" 0
serve_stop
t_run 0 "$BIN" items --store "$SB" show fruits.jpg
t_grep "$OUT" '"mtime": 981173106'
t_grep "$OUT" '"has_embedding": true'

t_done
