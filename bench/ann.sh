#!/usr/bin/env bash
# ann.sh - recall and speed of the HNSW index on clustered 512-d vectors.
#   bench/ann.sh PATH/TO/imgsearch [SIZES...]    (default sizes: 200k 1m)
# Generates the data sets into build/bench-data once (gen_vectors, built by
# `make build/release/bench/gen_vectors` unless GEN names another binary),
# then runs `imgsearch bench ann` on each and prints its JSON lines.
set -euo pipefail
bin=${1:?usage: bench/ann.sh PATH/TO/imgsearch [200k] [1m]}
shift
sizes=("$@")
[ ${#sizes[@]} -gt 0 ] || sizes=(200k 1m)
data=${DATA:-build/bench-data}
gen=${GEN:-build/release/bench/gen_vectors}
dim=512
[ -x "$gen" ] || make "$gen" >&2
mkdir -p "$data"
for s in "${sizes[@]}"; do
  case $s in
    200k) n=200000 q=1000 c=1000 efcs="64 128" ;;
    1m)   n=1000000 q=1000 c=1000 efcs="128" ;;
    *) echo "ann.sh: unknown size $s (200k or 1m)" >&2; exit 2 ;;
  esac
  p=$data/clustered-$s-$dim
  if [ ! -s "$p.truth.i32" ]; then
    echo "ann.sh: generating $p ($n x $dim, $q queries)" >&2
    "$gen" --n $n --queries $q --dim $dim --clusters $c --out "$p"
  fi
  echo "ann.sh: $s: cpu $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)," \
       "simd ${IMGSEARCH_SIMD:-auto}" >&2
  # ef_construction 64 is pgvector's default (the comparison in FACTS.md);
  # 128 is the index's default: on 1000-point clusters 64 loses recall.
  for efc in ${EFC:-$efcs}; do
    "$bin" bench ann --base "$p.base.f32" --queries "$p.query.f32" --truth "$p.truth.i32" \
      --dim $dim --m 16 --ef-construction $efc --ef-search 40,64,100,200 ${ANN_ARGS:-}
  done
done
