#!/usr/bin/env bash
# store_ann.sh - recall@10 and queries/s of the store's backends on the same
# clustered 512-d vectors, in one run: the embedded store (SQLite + its
# local HNSW index) next to PostgreSQL, through `imgsearch bench ann
# --store`, which loads the vectors with store_put and searches with
# store_search as the store's callers do.
#   bench/store_ann.sh PATH/TO/imgsearch [SIZE]     (SIZE: 10k, 20k, 200k; default 200k)
# Servers (started here on loopback ports by tests/pg/servers.sh, stopped
# at the end):
#   - Debian's postgresql-15 (fsync off), on the SIZE set. Debian has no
#     pgvector package: this is PostgreSQL's real[] column with the local
#     index ("local-hnsw"); a server with pgvector shows "pgvector-hnsw".
#   - pglite-socket with pgvector 0.8 (PostgreSQL compiled to WebAssembly:
#     far slower than a native server, its figures say nothing of a real
#     one), on the smaller PGLITE_SIZE set (default 10k), with the embedded
#     store on that same set beside it.
# Either is left out, with a line saying why, when it cannot be had.
# EF (default 40,100,200) lists the ef_search values.
set -uo pipefail
bin=${1:?usage: bench/store_ann.sh PATH/TO/imgsearch [10k|20k|200k]}
size=${2:-200k}
small=${PGLITE_SIZE:-10k}
data=${DATA:-build/bench-data}
gen=${GEN:-build/release/bench/gen_vectors}
dim=512
efs=${EF:-40,100,200}
[ -x "$gen" ] || make "$gen" >&2
mkdir -p "$data"

# dataset SIZE: the prefix of the SIZE set, generated once (200 points a cluster)
dataset() {
  local n q
  case $1 in
    10k) n=10000 q=200 ;;
    20k) n=20000 q=200 ;;
    200k) n=200000 q=1000 ;;
    *) echo "store_ann.sh: unknown size $1 (10k, 20k or 200k)" >&2; return 2 ;;
  esac
  local p=$data/clustered-$1-$dim
  if [ ! -s "$p.truth.i32" ]; then
    echo "store_ann.sh: generating $p ($n x $dim, $q queries)" >&2
    "$gen" --n $n --queries $q --dim $dim --clusters $((n / 200)) --out "$p" >&2 || return 1
  fi
  echo "$p"
}

# run PREFIX STORE...: bench ann on those stores, m 16, ef_construction 64
run() {
  local p=$1 a=() s
  shift
  for s in "$@"; do a+=(--store "$s"); done
  "$bin" bench ann --base "$p.base.f32" --queries "$p.query.f32" --truth "$p.truth.i32" \
    --dim $dim --m 16 --ef-construction 64 --ef-search "$efs" "${a[@]}"
}

T_TMP=$(mktemp -d)
. "$(dirname "$0")/../tests/pg/servers.sh"
trap 'pg_servers_stop; rm -rf "$T_TMP"' EXIT
echo "# store_ann.sh: cpu $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(nproc) cores" >&2

p=$(dataset "$size") || exit 1
if pg15_start; then
  echo "# $size: embedded store, then PostgreSQL 15 ($PG15_URL)" >&2
  run "$p" "$T_TMP/store-$size.db" "$PG15_URL"
else
  echo "# $size: no postgresql-15 ($PG_WHY): the embedded store alone" >&2
  run "$p" "$T_TMP/store-$size.db"
fi
pg_servers_stop
if [ "${PGLITE:-1}" = 1 ]; then
  ps=$(dataset "$small") || exit 1
  if pglite_start; then
    echo "# $small: embedded store, then pglite + pgvector (WebAssembly)" >&2
    run "$ps" "$T_TMP/store-$small.db" "$PGLITE_URL"
  else
    echo "# $small: no pglite ($PG_WHY)" >&2
  fi
fi
