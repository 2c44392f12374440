#!/usr/bin/env bash
# `imgsearch model fetch|list|path` and --model REPO against a hub served on
# loopback by tests/cli/hub_server.py: listing, 302 + X-Linked-Etag, a
# connection cut mid-weights (resumed with Range), a wrong hash (nothing
# kept), 404, 401, HF_TOKEN not sent across hosts, a pytorch_model.bin repo.
. "$(dirname "$0")/lib.sh"

export XDG_CACHE_HOME=$T_TMP/cache
unset HF_TOKEN HF_ENDPOINT HF_HUB_OFFLINE IMGSEARCH_MODEL
CACHE=$XDG_CACHE_HOME/imgsearch/models
LOG=$T_TMP/hub.log
: >"$LOG"
python3 "$(dirname "$0")/hub_server.py" "$FIX" "$T_TMP/port" "$LOG" &
HUB_PID=$!
trap 'kill $HUB_PID 2>/dev/null; rm -rf "$T_TMP"' EXIT
for _ in $(seq 100); do [ -s "$T_TMP/port" ] && break; sleep 0.1; done
HUB=http://127.0.0.1:$(cat "$T_TMP/port")

t_run 0 "$BIN" model --help
t_grep "$OUT" 'model fetch \[REPO\] \[--hub URL\] \[--dir DIR\]'
t_grep "$OUT" 'model list'

# listing, 302 to the CDN path with X-Linked-Etag, files in the cache
t_run 0 "$BIN" model fetch test/tiny --hub "$HUB"
t_grep "$OUT" '"repo": "test/tiny", "dir": ".*/imgsearch/models/test/tiny", "weights": "model.safetensors"'
if cmp -s "$CACHE/test/tiny/model.safetensors" "$MODEL/model.safetensors"; then ok; else bad "weights differ"; fi
for f in config.json preprocessor_config.json vocab.json merges.txt; do
  if cmp -s "$CACHE/test/tiny/$f" "$MODEL/$f"; then ok; else bad "$f differs"; fi
done
t_lines <(ls -a "$CACHE/test/tiny" | grep -c '\.part$' | grep -x 0) 1
t_grep "$LOG" '^GET /api/models/test/tiny '
t_grep "$LOG" '^GET /test/tiny/resolve/0123456789abcdef0123456789abcdef01234567/model.safetensors '
t_grep "$LOG" '^GET /cdn/test/tiny/model.safetensors '
# fetched again: nothing downloaded
N=$(wc -l <"$LOG")
t_run 0 "$BIN" model fetch test/tiny --hub "$HUB"
t_lines <(tail -n +$((N + 1)) "$LOG" | grep -v /api/models/) 0

# the cache is listed and usable as --model REPO (no hub needed)
t_run 0 "$BIN" model list
t_grep "$OUT" '"repo": "test/tiny", .*"complete": true'
t_run 0 "$BIN" model path --model test/tiny --offline
t_grep "$OUT" "^$CACHE/test/tiny\$"
t_run 0 "$BIN" model info --model test/tiny
ID_CACHE=$(grep -o '"id": "[^"]*"' "$OUT")
t_run 0 "$BIN" model info --model "$MODEL"
ID_FIX=$(grep -o '"id": "[^"]*"' "$OUT")
if [ -n "$ID_FIX" ] && [ "$ID_CACHE" = "$ID_FIX" ]; then ok; else bad "ids '$ID_CACHE' '$ID_FIX'"; fi
t_run 0 "$BIN" embed --model test/tiny --text "a photo of a cat"
t_grep "$OUT" '"dim": 64'

# the same weights in another folder are the same model for a store
mkdir -p "$T_TMP/tiny-copy"
for f in "$MODEL"/*; do ln -s "$(cd "$(dirname "$f")" && pwd)/$(basename "$f")" "$T_TMP/tiny-copy/"; done
t_run 0 "$BIN" index --store "$T_TMP/s.db" --model "$MODEL" "$MODEL/images/fruits.jpg"
t_run 0 "$BIN" index --store "$T_TMP/s.db" --model "$T_TMP/tiny-copy" "$MODEL/images/coffee.png"
t_run 0 "$BIN" search --store "$T_TMP/s.db" --model test/tiny --text fruit --json
t_grep "$OUT" 'fruits.jpg'

# without a _name_or_path, the id is "clip@" + the weights' hash, whatever the folder
for d in one two; do
  mkdir -p "$T_TMP/$d"
  for f in "$MODEL"/*; do [ "$(basename "$f")" = config.json ] || ln -s "$(cd "$(dirname "$f")" && pwd)/$(basename "$f")" "$T_TMP/$d/"; done
  grep -v '"_name_or_path"' "$MODEL/config.json" >"$T_TMP/$d/config.json"
done
t_run 0 "$BIN" model info --model "$T_TMP/one"
ID_ONE=$(grep -o '"id": "[^"]*"' "$OUT")
t_run 0 "$BIN" model info --model "$T_TMP/two"
t_grep "$OUT" '"id": "clip@[0-9a-f]{16}"'
if [ "$(grep -o '"id": "[^"]*"' "$OUT")" = "$ID_ONE" ]; then ok; else bad "ids differ: $ID_ONE"; fi

# a connection cut in the middle of the weights: resumed with Range
t_run 0 "$BIN" model fetch test/cut --hub "$HUB"
if cmp -s "$CACHE/test/cut/model.safetensors" "$MODEL/model.safetensors"; then ok; else bad "resumed weights differ"; fi
t_grep "$LOG" '^GET /cdn/test/cut/model.safetensors .*range=-$'
t_grep "$LOG" '^GET /cdn/test/cut/model.safetensors .*range=bytes=[1-9][0-9]*-$'

# a wrong hash: refused, nothing left in place
t_run 2 "$BIN" model fetch test/bad --hub "$HUB"
t_grep "$ERR" 'SHA-256 [0-9a-f]{64}, but the hub says [0-9a-f]{64}; the download was removed'
t_lines <(ls -A "$CACHE/test/bad" | grep -E 'safetensors') 0

# 404 and 401 name the URL and what to do
t_run 2 "$BIN" model fetch nobody/nothing --hub "$HUB"
t_grep "$ERR" "$HUB/api/models/nobody/nothing answered 404: no such repo"
t_run 2 "$BIN" model fetch private/tiny --hub "$HUB"
t_grep "$ERR" "$HUB/api/models/private/tiny answered 401: .*set HF_TOKEN"
HF_TOKEN=s3cret t_run 0 "$BIN" model fetch private/tiny --hub "$HUB"
t_grep "$LOG" '^GET /cdn/private/tiny/model.safetensors .*auth=Bearer s3cret'

# the token goes to the hub, never to the host a redirect points at
HF_TOKEN=s3cret t_run 0 "$BIN" model fetch test/xhost --hub "$HUB"
t_grep "$LOG" '^GET /api/models/test/xhost host=127.0.0.1:[0-9]+ auth=Bearer s3cret'
t_grep "$LOG" '^GET /test/xhost/resolve/.* auth=Bearer s3cret'
t_grep "$LOG" '^GET /cdn/test/xhost/model.safetensors host=localhost:[0-9]+ auth=- '
t_nogrep "$LOG" '^GET /cdn/test/xhost/.*s3cret'

# a repo with only pytorch_model.bin: converted once, same model id
t_run 0 "$BIN" model fetch test/bin --hub "$HUB"
t_grep "$OUT" '"weights": "model.safetensors"'
t_lines <(ls "$CACHE/test/bin" | grep -c pytorch_model.bin | grep -x 0) 1
t_run 0 "$BIN" model info --model test/bin
t_grep "$OUT" "$(echo "$ID_FIX" | sed 's/"id": //')"

# --dir, HF_ENDPOINT, and --model REPO fetched on first use
t_run 0 "$BIN" model fetch test/tiny --dir "$T_TMP/mine" --hub "$HUB"
t_grep "$OUT" "\"dir\": \"$T_TMP/mine\""
rm -rf "$CACHE/test/tiny"
t_run 2 "$BIN" model path --model test/tiny --offline
t_grep "$ERR" "model test/tiny is not in the cache .*imgsearch model fetch test/tiny"
HF_HUB_OFFLINE=1 t_run 2 "$BIN" embed --model test/tiny --text cat
HF_ENDPOINT=$HUB t_run 0 "$BIN" embed --model test/tiny --text cat
t_grep "$OUT" '"dim": 64'
t_grep "$ERR" 'fetching model test/tiny'

# offline: the message says which URL failed and what to do
t_run 2 "$BIN" model fetch test/tiny --hub http://127.0.0.1:9 --dir "$T_TMP/off"
t_grep "$ERR" 'cannot get http://127.0.0.1:9/api/models/test/tiny: .*check the network'
t_run 2 "$BIN" model fetch "../etc" --hub "$HUB"
t_grep "$ERR" 'not a hub repo name'

# a store made by an earlier version names the same weights by the id it
# gave them: name @ FNV-1a 64 over five 64 KiB windows of the file, xor its
# size ("tiny-clip@d6f86b9c66d98252" for the fixture, as that version
# printed it). search reads it as it is; index renames it and re-embeds
# nothing; any other id is still a mismatch.
FORMER=$(python3 - "$MODEL/model.safetensors" <<'PY'
import sys
b = open(sys.argv[1], 'rb').read()
n, ch, h = len(b), 65536, 1469598103934665603
for s in (0, n // 4, n // 2, 3 * (n // 4), n - ch if n > ch else 0):
    for x in b[s:min(s + ch, n)]:
        h = ((h ^ x) * 1099511628211) & (2**64 - 1)
print("tiny-clip@%016x" % (h ^ n))
PY
)
t_eq "former id of the fixture" "$FORMER" "tiny-clip@d6f86b9c66d98252"
OLD=$T_TMP/old.db
t_run 0 "$BIN" index --store "$OLD" --model "$MODEL" "$MODEL/images"
NEWID=$(python3 -c "import sqlite3; print(sqlite3.connect('$OLD').execute(\"select value from meta where key='model'\").fetchone()[0])")
set_model() { # STORE ID: what that version wrote (meta and every item)
  python3 -c "import sqlite3,sys; c=sqlite3.connect(sys.argv[1]); c.execute(\"update meta set value=? where key='model'\", (sys.argv[2],)); c.execute('update items set model=?', (sys.argv[2],)); c.commit()" "$1" "$2"
}
set_model "$OLD" "$FORMER"
t_run 0 "$BIN" search --store "$OLD" --model "$MODEL" --paths "a cat" -k 3
t_eq "hits from a store under the former id" "$(wc -l <"$OUT")" 3
t_run 0 "$BIN" index --store "$OLD" --model "$MODEL" "$MODEL/images"
t_grep "$OUT" '"added": 0, "updated": 0, "unchanged": 12'
t_eq "store model after index" "$(python3 -c "import sqlite3; print(sqlite3.connect('$OLD').execute(\"select value from meta where key='model'\").fetchone()[0])")" "$NEWID"
t_eq "items under the new id" "$(python3 -c "import sqlite3; print(sqlite3.connect('$OLD').execute('select count(*) from items where model=?', ('$NEWID',)).fetchone()[0])")" 12
set_model "$OLD" "tiny-clip@0123456789abcdef"
t_run 2 "$BIN" index --store "$OLD" --model "$MODEL" "$MODEL/images"
t_grep "$ERR" "holds embeddings of model 'tiny-clip@0123456789abcdef'"
t_run 2 "$BIN" search --store "$OLD" --model "$MODEL" "a cat"

t_done
