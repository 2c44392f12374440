# browser.sh - what the browser scripts (test_browser.sh, test_page.sh,
# test_cors.sh) share; sourced after tests/cli/lib.sh.
#   browser_missing [TOOL...]  prints "TAG|WHY" when the browser tests
#                    cannot run here (node, Chromium, curl, playwright-core
#                    from package-lock.json, installed when missing, and
#                    each extra TOOL), nothing when they can
#   browser_or_skip [TOOL...]  the same check for a script that is all
#                    browser: when something is missing, the script is one
#                    skipped case and ends here
#   browser_run SCRIPT ARGS... runs node tests/http/SCRIPT ARGS, prints its
#                    output (text only), adds its "N passed, N failed" to this script's
#                    counts and checks its exit code
BROWSER_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
CHROMIUM=${CHROMIUM:-/usr/bin/chromium}

browser_missing() {
  local t
  command -v node >/dev/null || { echo "tool:node|node is not installed (scripts/install-deps)"; return; }
  [ -x "$CHROMIUM" ] ||
    { echo "tool:chromium|no Chromium at $CHROMIUM (scripts/install-deps installs Debian's chromium)"; return; }
  for t in curl "$@"; do
    command -v "$t" >/dev/null || { echo "tool:$t|$t is not installed (scripts/install-deps)"; return; }
  done
  [ -f "$BROWSER_ROOT/node_modules/playwright-core/package.json" ] && return
  command -v npm >/dev/null ||
    { echo "tool:npm|npm is not installed, and node_modules/playwright-core is missing"; return; }
  (cd "$BROWSER_ROOT" && npm ci --no-audit --no-fund) >"$T_TMP/npm.log" 2>&1 ||
    echo "tool:npm|npm ci failed: $(tail -n 3 "$T_TMP/npm.log" | tr '\n' ' ')"
}

browser_or_skip() {
  local why
  why=$(browser_missing "$@")
  [ -z "$why" ] && return
  t_skip "${why%%|*}" "${why#*|}"
  t_done
  exit
}

browser_run() {
  local js=$1 log=$T_TMP/$1.log rc line f
  shift
  CHROMIUM=$CHROMIUM node "$BROWSER_ROOT/tests/http/$js" "$@" >"$log" 2>&1
  rc=$?
  tr -cd '\11\12\15\40-\176' <"$log" # text only: tests/run greps this output
  line=$(grep -aEo '[0-9]+ passed, [0-9]+ failed' "$log" | tail -n 1)
  if [ -n "$line" ]; then
    T_PASS=$((T_PASS + ${line%% passed*}))
    f=${line##*, }
    T_FAIL=$((T_FAIL + ${f%% failed}))
  fi
  t_eq "$js exit code" "$rc" 0
}
