#!/usr/bin/env bash
# Compatibility with clients written for other image services (issue 13):
# multipart "file"/"files" wherever "image"/"images" are taken, "detail"
# beside every error, /health as liveness and /ready as readiness, and
# unknown JSON fields refused with 400 naming them.
. "$(dirname "$0")/../cli/lib.sh"
. "$(dirname "$0")/server.sh"
trap 'serve_kill_all; rm -rf "$T_TMP"' EXIT
export IMGSEARCH_RATE_LIMIT=0
IMG=$MODEL/images

msg_of() { sed -E 's/.*"message":"(([^"\\]|\\.)*)".*/\1/' "$1"; }
detail_of() { sed -E 's/.*"detail":"(([^"\\]|\\.)*)".*/\1/' "$1"; }
b64() { base64 -w0 "$1"; }

# ---- liveness and readiness while the model loads ----
serve_start loading --store "$T_TMP/a.db" --model "$MODEL" --load-delay-ms 1500
h GET /health
t_code 200
t_grep "$OUT" '"status":"loading"'
h GET /ready
t_code 503
t_grep "$OUT" '"code":"unavailable"'
t_grep "$HDR" '^Retry-After: [0-9]+'
h HEAD /ready
t_code 503
serve_ready
h GET /ready
t_code 200
t_grep "$OUT" '^\{"status":"ready","model":"[^"]+","items":[0-9]+\}$'
h GET /health
t_code 200
t_grep "$OUT" '"status":"ok"'
h POST /ready
t_code 405
t_grep "$HDR" '^Allow: GET, HEAD'
serve_stop
t_eq "exit code" "$RC" 0

# /ready, like /health, needs no key even with --api-key-all
serve_start keyed --store "$T_TMP/b.db" --model "$MODEL" --api-key k1 --api-key-all
serve_ready
h GET /ready
t_code 200
h GET /items
t_code 401
serve_stop

serve_start main --store "$T_TMP/c.db" --model "$MODEL"
serve_ready

# ---- "file" and "files" ----
h POST /extract-features -F file=@"$IMG/left01.jpg"
t_code 200
t_grep "$OUT" '"dimension":[0-9]+'
h POST /extract-features-batch -F files=@"$IMG/left01.jpg" -F files=@"$IMG/fruits.jpg"
t_code 200
t_grep "$OUT" '"count":2'
# mixed names count together, in order
h POST /extract-features-batch -F image=@"$IMG/left01.jpg" -F files=@"$IMG/fruits.jpg" -F file=@"$IMG/left01.jpg"
t_grep "$OUT" '"count":3'
h PUT /items/f1 -F file=@"$IMG/left01.jpg"
t_code 201
h POST /search -F files=@"$IMG/left01.jpg" -F k=1
t_code 200
t_grep "$OUT" '"results":\[\{"id":"f1"'
h POST /classify -F file=@"$IMG/fruits.jpg" -F labels=a,b
t_code 200
# a "files" field is an image, never checked as text
printf '\377\376' >"$T_TMP/bin.jpg"
h POST /extract-features -F "files=@$T_TMP/bin.jpg;filename=" -F k=1
t_nogrep "$OUT" invalid_utf8

# ---- "detail" beside every error, equal to the message ----
h GET /nope
t_code 404
t_grep "$OUT" '^\{"error":\{"code":"not_found","message":"[^"]+"\},"detail":"[^"]+","request_id":"[^"]+"\}$'
t_eq "404 detail" "$(detail_of "$OUT")" "$(msg_of "$OUT")"
h DELETE /search
t_code 405
t_eq "405 detail" "$(detail_of "$OUT")" "$(msg_of "$OUT")"
h POST /search -H 'Content-Type: application/json' --data-binary '{"text": '
t_code 400
t_grep "$OUT" '"detail":"the body is not valid JSON'
h POST /extract-features -H 'Content-Type: text/csv' --data-binary 'a,b'
t_code 415
t_eq "415 detail" "$(detail_of "$OUT")" "$(msg_of "$OUT")"

# ---- unknown JSON fields are 400, named ----
h POST /search -H 'Content-Type: application/json' --data-binary '{"text": "a cat", "min_scor": 0.5}'
t_code 400
t_grep "$OUT" '"code":"invalid_argument"'
t_grep "$OUT" 'unknown field in the JSON body: \\"min_scor\\" \(/search reads image, text, vector, id, k, offset, min_score, ef, filter\)'
h POST /search -H 'Content-Type: application/json' --data-binary '{"text": "a cat", "kk": 1, "top_k": 2}'
t_code 400
t_grep "$OUT" 'unknown fields in the JSON body: \\"kk\\", \\"top_k\\"'
echo "{\"image\": \"$(b64 "$IMG/fruits.jpg")\", \"labels\": [\"a\", \"b\"], \"lables\": 1}" >"$T_TMP/c.json"
h POST /classify -H 'Content-Type: application/json' --data-binary @"$T_TMP/c.json"
t_code 400
t_grep "$OUT" '\\"lables\\"'
echo "{\"image\": \"$(b64 "$IMG/left01.jpg")\", \"meta\": {}}" >"$T_TMP/p.json"
h PUT /items/p1 -H 'Content-Type: application/json' --data-binary @"$T_TMP/p.json"
t_code 400
t_grep "$OUT" '\\"meta\\" \(/items/\{id\} reads image, metadata\)'
h GET /items/p1
t_code 404
echo "{\"images\": [\"$(b64 "$IMG/left01.jpg")\"], \"model\": \"x\"}" >"$T_TMP/b.json"
h POST /extract-features-batch -H 'Content-Type: application/json' --data-binary @"$T_TMP/b.json"
t_code 400
t_grep "$OUT" '\\"model\\"'
# ---- process metrics and build info ----
h GET /health
model=$(sed -E 's/.*"model":"([^"]*)".*/\1/' "$OUT")
prec=$(sed -E 's/.*"precision":"([^"]*)".*/\1/' "$OUT")
version=$(sed -E 's/.*"version":"([^"]*)".*/\1/' "$OUT")
h GET /metrics
t_code 200
t_grep "$OUT" '^# TYPE process_cpu_seconds_total counter$'
t_grep "$OUT" '^process_cpu_seconds_total [0-9]+\.[0-9]+$'
t_grep "$OUT" '^process_resident_memory_bytes [1-9][0-9]{6,}$'
t_grep "$OUT" '^process_open_fds [1-9][0-9]*$'
now=$(date +%s)
start=$(sed -n 's/^process_start_time_seconds //p' "$OUT")
if awk -v s="$start" -v n="$now" 'BEGIN { exit !(s > n - 3600 && s <= n + 1) }'; then ok; else
  bad "process_start_time_seconds $start, now $now"; fi
t_grep "$OUT" "^imgsearch_build_info\\{version=\"$version\",model=\"$model\",precision=\"$prec\"\\} 1\$"
# the known fields still work
h POST /search -H 'Content-Type: application/json' --data-binary '{"id": "f1", "k": 1, "min_score": -1, "offset": 0, "ef": 0, "filter": {}}'
t_code 200
serve_stop
t_eq "exit code" "$RC" 0
t_done
