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
CHROMIUM=${CHROMIUM:-/usr/bin/chromium}
SHOT=${BROWSER_SCREENSHOT:-$ROOT/build/browser-screenshot.png}
# skip TAG WHY: the whole test is one skipped case
skip() {
  echo "SKIP test_browser.sh: $2 [needs $1]"
  echo "test_browser.sh: 0 passed, 0 failed, 1 skipped"
  exit 0
}
command -v node >/dev/null || skip tool:node "node is not installed (scripts/install-deps)"
[ -x "$CHROMIUM" ] || skip tool:chromium "no Chromium at $CHROMIUM (scripts/install-deps installs Debian's chromium)"
command -v curl >/dev/null || skip tool:curl "curl is not installed"
if [ ! -f "$ROOT/node_modules/playwright-core/package.json" ]; then
  command -v npm >/dev/null || skip tool:npm "npm is not installed, and node_modules/playwright-core is missing"
  (cd "$ROOT" && npm ci --no-audit --no-fund) >"$T_TMP/npm.log" 2>&1 ||
    skip tool:npm "npm ci failed: $(tail -n 3 "$T_TMP/npm.log" | tr '\n' ' ')"
fi
. "$(dirname "$0")/server.sh"
trap 'serve_kill_all; rm -rf "$T_TMP"' EXIT

CAT=$T_TMP/catalog
mkdir -p "$CAT" "$(dirname "$SHOT")"
cp "$MODEL"/images/* "$CAT"/
rm -f "$SHOT"
serve_start page --store "$T_TMP/store.db" --model "$MODEL" --catalog "$CAT"
if serve_ready; then ok; else bad "the server did not get ready: $(tail -n 5 "$SLOG")"; fi
CHROMIUM=$CHROMIUM node "$ROOT/tests/http/browser.mjs" "$URL/" "$MODEL/images/HappyFish.jpg" \
  HappyFish.jpg "$SHOT" >"$T_TMP/browser.log" 2>&1
rc=$?
cat "$T_TMP/browser.log"
line=$(grep -Eo '[0-9]+ passed, [0-9]+ failed' "$T_TMP/browser.log" | tail -n 1)
if [ -n "$line" ]; then
  T_PASS=$((T_PASS + ${line%% passed*}))
  f=${line##*, }
  T_FAIL=$((T_FAIL + ${f%% failed}))
fi
t_eq "browser.mjs exit code" "$rc" 0
if [ "$(head -c 8 "$SHOT" 2>/dev/null | od -An -tx1 | tr -d ' \n')" = 89504e470d0a1a0a ]; then ok; else
  bad "no PNG screenshot at $SHOT"; fi
serve_stop
t_eq "server exit code" "$RC" 0
t_done
