#!/usr/bin/env bash
# bench/http.sh [BIN] - loopback load test of `imgsearch serve`: POST /search
# by vector and by image at concurrency 1, 8 and 32, one JSON line each
# (requests, errors, req/s, p50 and p99 latency in ms), from our own
# libcurl client (tests/http/load.c, `load bench`).
#
# Model: $HTTP_BENCH_MODEL, else the random-weight ViT-B/32 that bench/run
# makes in build/bench-models/vit-b-32 (made here when missing). The store
# holds the fixture images (12 items), so the figures are the HTTP path and
# inference, not index size. BENCH_SECONDS (default 3) per line.
set -euo pipefail
BIN=${1:-${BUILD_DIR:-build/release}/imgsearch}
B=$(dirname "$BIN")
LOAD=$B/tests/http/load
SECS=${BENCH_SECONDS:-3}
FIX=tests/fixtures/tiny-clip
M=${HTTP_BENCH_MODEL:-build/bench-models/vit-b-32}
[ -x "$BIN" ] || { echo "bench/http.sh: no binary at $BIN" >&2; exit 2; }
if [ ! -x "$LOAD" ]; then
  make -s B="$B" BUILD="${BUILD:-release}" "$LOAD" >&2
fi
if [ ! -f "$M/model.safetensors" ]; then
  "$BIN" model init-random --like vit-b-32 --seed 1 --tokenizer-from "$FIX" "$M" >/dev/null
fi
tmp=$(mktemp -d)
pid=
cleanup() {
  [ -n "$pid" ] && kill -TERM "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
  rm -rf "$tmp"
}
trap cleanup EXIT
# one loopback client measures throughput: no per-address rate limit
IMGSEARCH_RATE_LIMIT=0 "$BIN" serve --listen 127.0.0.1:0 --store "$tmp/store.db" --model "$M" \
  --catalog "$FIX/images" --quiet 2>"$tmp/log" &
pid=$!
url=
for _ in $(seq 600); do
  url=$(grep -o 'listening on http://[0-9.]*:[0-9]*' "$tmp/log" | head -n 1 | sed 's/listening on //' || true)
  [ -n "$url" ] && curl -s "$url/health" | grep -q "\"state\":\"idle\"" && break
  kill -0 "$pid" 2>/dev/null || { cat "$tmp/log" >&2; exit 1; }
  sleep 0.1
done
health=$(curl -s "$url/health")
dim=$(echo "$health" | grep -o '"dim":[0-9]*' | cut -d: -f2)
model=$(echo "$health" | grep -o '"model":"[^"]*"' | cut -d'"' -f4)
prec=$(echo "$health" | grep -o '"precision":"[^"]*"' | cut -d'"' -f4)
echo "# http: $(nproc) cores; model $model ($prec, dim $dim); $SECS s per line; client and server on this machine"
for q in vector image; do
  for c in 1 8 32; do
    line=$("$LOAD" bench --url "$url" --query "$q" --image "$FIX/images/fruits.jpg" --dim "$dim" \
      --concurrency "$c" --seconds "$SECS")
    echo "${line%\}}, \"model\": \"$model\", \"precision\": \"$prec\"}"
  done
done
