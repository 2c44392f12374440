#!/usr/bin/env bash
# The Node.js client (clients/node, package imgsearch-client) against real
# `imgsearch serve` processes: `node --test clients/node/test/` (every
# method; two servers, one killed -9 mid-run and restarted; a server stopped
# with SIGSTOP; 503s while the model loads and 429s from the rate limit are
# retried; a 400 is not; the README's Express example parses), each node
# test one case here; then `tsc --noEmit` on examples/typed.ts checks the
# hand-written index.d.ts.
# Without node (20.3 or later) the test is skipped [needs tool:node];
# typescript comes from npm (clients/node/package-lock.json, installed here
# when missing) and without it the type check is skipped [needs tool:npm].
. "$(dirname "$0")/lib.sh"
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
CLIENT=$ROOT/clients/node
export IMGSEARCH_BIN=$BIN IMGSEARCH_FIXTURES=$FIX

if ! command -v node >/dev/null; then
  t_skip tool:node "node is not installed (scripts/install-deps)"
  t_done; exit
fi
ok_node=$(node -p 'const [a, b] = process.versions.node.split(".").map(Number); a > 20 || (a === 20 && b >= 3) ? 1 : 0')
if [ "$ok_node" != 1 ]; then
  t_skip tool:node "node $(node --version): the client needs 20.3 or later"
  t_done; exit
fi

# ---- node --test: its counts become ours --------------------------------------
TAP=$T_TMP/node-test.tap
(cd "$ROOT" && node --test --test-reporter=tap --test-concurrency=1 clients/node/test/) >"$TAP" 2>&1
rc=$?
count() { sed -n "s/^# $1 \([0-9][0-9]*\)\$/\1/p" "$TAP" | tail -n 1; }
np=$(count pass) nf=$(count fail) nc=$(count cancelled) ns=$(count skipped) nt=$(count todo)
if [ -z "$np" ] || [ -z "$nf" ]; then
  bad "node --test printed no counts (exit code $rc): $(tail -n 20 "$TAP")"
else
  T_PASS=$((T_PASS + np))
  # a cancelled, skipped or todo node test is not a pass: each is a failure here
  T_FAIL=$((T_FAIL + nf + ${nc:-0} + ${ns:-0} + ${nt:-0}))
  echo "node --test clients/node/test/: $np passed, $nf failed, ${nc:-0} cancelled, ${ns:-0} skipped, ${nt:-0} todo"
  if [ $((nf + ${nc:-0} + ${ns:-0} + ${nt:-0})) -gt 0 ]; then
    grep -E '^ *not ok|# (SKIP|TODO)' "$TAP" | sed 's/^ */FAIL clients\/node\/test: /'
    cat "$TAP"
  fi
  [ "$rc" -eq 0 ] || [ "$nf" -gt 0 ] || [ "${nc:-0}" -gt 0 ] || bad "node --test exited $rc with no failed test"
fi

# ---- the types: tsc --noEmit on a typed use of every method -----------------------
TSC=$CLIENT/node_modules/.bin/tsc
if [ ! -x "$TSC" ] && command -v npm >/dev/null; then
  (cd "$CLIENT" && npm ci --no-audit --no-fund) >"$T_TMP/npm.log" 2>&1
fi
if [ -x "$TSC" ]; then
  t_run 0 "$TSC" --noEmit -p "$CLIENT/examples/tsconfig.json"
  [ -s "$OUT" ] && cat "$OUT"
elif ! command -v npm >/dev/null; then
  t_skip tool:npm "npm is not installed, and clients/node/node_modules/typescript is missing"
else
  t_skip tool:npm "npm ci in clients/node failed: $(tail -n 3 "$T_TMP/npm.log" | tr '\n' ' ')"
fi

t_done
