#!/usr/bin/env bash
# The search page of `imgsearch serve` in real headless Chromium: upload a
# fixture image through the file input, its item comes first in the grid;
# type a text, results appear; a screenshot goes to build/browser-screenshot.png.
# Needs node and Debian's chromium; without them the test is reported as
# skipped with the tag tool:node / tool:chromium / tool:npm, which tests/run
# accepts only on a machine that declares it (IMGSEARCH_ALLOW_SKIP).
# playwright-core comes from npm (package-lock.json) and is installed here
# when missing.
. "$(dirname "$0")/../cli/lib.sh"
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
SHOT=${BROWSER_SCREENSHOT:-$ROOT/build/browser-screenshot.png}
. "$(dirname "$0")/browser.sh"
browser_or_skip
. "$(dirname "$0")/server.sh"
trap 'serve_kill_all; rm -rf "$T_TMP"' EXIT

CAT=$T_TMP/catalog
mkdir -p "$CAT" "$(dirname "$SHOT")"
cp "$MODEL"/images/* "$CAT"/
rm -f "$SHOT"
serve_start page --store "$T_TMP/store.db" --model "$MODEL" --catalog "$CAT"
if serve_ready; then ok; else bad "the server did not get ready: $(tail -n 5 "$SLOG")"; fi
browser_run browser.mjs "$URL/" "$MODEL/images/HappyFish.jpg" HappyFish.jpg "$SHOT"
if [ "$(head -c 8 "$SHOT" 2>/dev/null | od -An -tx1 | tr -d ' \n')" = 89504e470d0a1a0a ]; then ok; else
  bad "no PNG screenshot at $SHOT"; fi
serve_stop
t_eq "server exit code" "$RC" 0
t_done
