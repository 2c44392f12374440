#!/usr/bin/env bash
# scripts/screenshot.sh [OUT.png] - remakes docs/page.png, the picture of
# the search page in README.md: serves the fixture photos of
# tests/fixtures/tiny-clip/images with the tiny test model on a free
# loopback port, searches with one of them (chelsea.png) in headless
# Chromium (scripts/screenshot.mjs) and saves the viewport. The tiny model
# is not CLIP: the photo itself comes first with score 1.00, the order of
# the others means nothing. Needs node, Debian's chromium and
# node_modules/playwright-core (npm ci).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT=${1:-$ROOT/docs/page.png}
BIN=${IMGSEARCH_BIN:-$ROOT/imgsearch}
FIX=$ROOT/tests/fixtures/tiny-clip
tmp=$(mktemp -d)
pid=
cleanup() {
  if [ -n "$pid" ]; then kill -TERM "$pid" 2>/dev/null; wait "$pid" 2>/dev/null || true; fi
  rm -rf "$tmp"
}
trap cleanup EXIT
mkdir -p "$tmp/photos"
# the photos only: the EXIF-rotated and alpha copies would show twice
for f in Blender_Suzanne1.jpg HappyFish.jpg aloeL.jpg butterfly.jpg chelsea.png coffee.png \
  fruits.jpg left01.jpg; do cp "$FIX/images/$f" "$tmp/photos/"; done
"$BIN" serve --listen 127.0.0.1:0 --store "$tmp/store.db" --model "$FIX" \
  --catalog "$tmp/photos" --quiet 2>"$tmp/log" &
pid=$!
url=
for _ in $(seq 400); do
  url=$(grep -o 'listening on http://[0-9.]*:[0-9]*' "$tmp/log" | head -n 1 | sed 's/listening on //' || true)
  [ -n "$url" ] && curl -s "$url/health" | grep -q '"state":"idle"' && break
  kill -0 "$pid" 2>/dev/null || { cat "$tmp/log" >&2; exit 1; }
  sleep 0.05
done
mkdir -p "$(dirname "$OUT")"
node "$ROOT/scripts/screenshot.mjs" "$url/" "$FIX/images/chelsea.png" "$OUT"
echo "$OUT: $(stat -c %s "$OUT") bytes"
