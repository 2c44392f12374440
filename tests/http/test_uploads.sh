#!/usr/bin/env bash
# `imgsearch serve --uploads DIR`: where images uploaded with PUT
# /items/{id} are kept. The default stays STORE.images next to an embedded
# store; a database URL (postgres://, postgresql://) needs --uploads, and
# is refused with exit 2 before anything starts when it is missing.
. "$(dirname "$0")/../cli/lib.sh"
. "$(dirname "$0")/server.sh"
trap 'serve_kill_all; rm -rf "$T_TMP"' EXIT
export IMGSEARCH_RATE_LIMIT=0
IMG=$MODEL/images/left01.jpg
# code METHOD PATH CURL_ARGS...: prints the status, body in $OUT
code() {
  local m=$1 p=$2
  shift 2
  curl -s -o "$OUT" -w '%{http_code}' -X "$m" "$@" "$URL$p"
}
nfiles() { find "$1" -type f 2>/dev/null | wc -l; }

# a database URL without --uploads: exit 2, a message naming the option,
# and the URL (which may hold a password) is not echoed
for url in postgres://u:secret@db/x postgresql://db/x; do
  t_run 2 "$BIN" serve --store "$url" --model "$MODEL" --listen 127.0.0.1:0
  t_grep "$ERR" -- '--uploads DIR is required'
  t_nogrep "$ERR" secret
done
t_run 2 env IMGSEARCH_STORE=postgres://db/x "$BIN" serve --model "$MODEL" --listen 127.0.0.1:0
t_grep "$ERR" -- '--uploads'
# an empty --uploads, and a URL scheme serve does not know
t_run 2 "$BIN" serve --store "$T_TMP/e.db" --uploads "" --model "$MODEL"
t_grep "$ERR" 'needs a folder'
t_run 2 "$BIN" serve --store mysql://db/x --uploads "$T_TMP/u" --model "$MODEL"
t_grep "$ERR" 'not a file path nor a postgres'
t_run 0 "$BIN" serve --help
t_grep "$OUT" -- '--uploads DIR'

# the default: STORE.images next to the embedded store
serve_start def --store "$T_TMP/a.db" --model "$MODEL"
serve_ready
t_eq "PUT /items/one status" "$(code PUT /items/one -F image=@"$IMG")" 201
t_eq "upload in STORE.images" "$(nfiles "$T_TMP/a.db.images")" 1
t_eq "GET /items/one/image status" "$(code GET /items/one/image -o /dev/null)" 200
serve_stop
t_eq "exit code" "$RC" 0

# --uploads DIR: created if missing, holds the upload, serves it, and the
# delete removes it; nothing goes to STORE.images
UP=$T_TMP/up/deep
serve_start up --store "$T_TMP/b.db" --uploads "$UP" --model "$MODEL"
serve_ready
t_eq "PUT /items/two status" "$(code PUT /items/two -F image=@"$IMG")" 201
t_eq "upload in --uploads" "$(nfiles "$UP")" 1
t_eq "nothing in STORE.images" "$(nfiles "$T_TMP/b.db.images")" 0
sha=$(sha256sum "$IMG" | cut -d' ' -f1)
if [ -f "$UP/$sha.jpeg" ] || [ -f "$UP/$sha.jpg" ]; then ok; else bad "no $UP/$sha.jp*g: $(ls "$UP")"; fi
curl -s -o "$T_TMP/got.jpg" "$URL/items/two/image"
if cmp -s "$T_TMP/got.jpg" "$IMG"; then ok; else bad "the served image differs from the upload"; fi
# the item's source is the file kept there
code GET /items/two >/dev/null
t_grep "$OUT" "\"source\":\"[^\"]*/up/deep/$sha"
t_eq "DELETE /items/two status" "$(code DELETE /items/two)" 200
t_eq "the delete removed the upload" "$(nfiles "$UP")" 0
serve_stop
t_eq "exit code" "$RC" 0

# the environment sets it too; a restart with the same folder serves the
# image kept there
export IMGSEARCH_UPLOADS=$T_TMP/envup
serve_start env --store "$T_TMP/c.db" --model "$MODEL"
serve_ready
t_eq "PUT /items/three status" "$(code PUT /items/three -F image=@"$IMG")" 201
serve_stop
serve_start env2 --store "$T_TMP/c.db" --model "$MODEL"
serve_ready
t_eq "upload in IMGSEARCH_UPLOADS" "$(nfiles "$T_TMP/envup")" 1
t_eq "GET /items/three/image status" "$(code GET /items/three/image -o /dev/null)" 200
serve_stop
unset IMGSEARCH_UPLOADS
t_done
