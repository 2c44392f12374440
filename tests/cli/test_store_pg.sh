#!/usr/bin/env bash
# The store conformance suite (tests/test_store.c) against PostgreSQL:
# Debian's postgresql-15, which has no pgvector (the real[] column and the
# local index), and pglite-socket with pgvector 0.8 (the vector column and
# pgvector's HNSW index). The servers are started here on loopback ports
# and stopped at the end. Also: the fallback schema converted to pgvector
# by a later open without losing an item, and SQL injection attempts.
# A server that cannot be had is a skip tagged tool:postgresql /
# tool:pglite, which tests/run accepts only where IMGSEARCH_ALLOW_SKIP says.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/../pg/servers.sh"
trap 'pg_servers_stop; rm -rf "$T_TMP"' EXIT
SUITE=$(dirname "$BIN")/tests/test_store
[ -x "$SUITE" ] || { bad "no $SUITE (make tests)"; t_done; exit; }

# suite NAME URL [ENV...]: runs every case of test_store against URL
suite() {
  local name=$1 url=$2; shift 2
  env "$@" IMGSEARCH_TEST_STORE="$url" "$SUITE" >"$T_TMP/$name.log" 2>&1
  local rc=$? line
  line=$(grep -Eo '[0-9]+ passed, [0-9]+ failed' "$T_TMP/$name.log" | tail -n 1)
  if [ $rc -eq 0 ] && [[ $line == *" 0 failed" ]] && [[ $line != "0 passed"* ]]; then ok
  else bad "test_store against $name: rc $rc, $line: $(grep -E '^FAIL' "$T_TMP/$name.log" | head -n 5)"; fi
  echo "test_store against $name: $line"
}

if pg15_start; then
  suite postgresql-15 "$PG15_URL"
else
  t_skip tool:postgresql "$PG_WHY"
fi
if pglite_start; then
  suite pglite-pgvector "$PGLITE_URL" IMGSEARCH_TEST_ONE_SESSION=1
else
  t_skip tool:pglite "$PG_WHY"
fi
t_done
