#!/usr/bin/env bash
# bench/omp_wait.sh - what OMP_WAIT_POLICY=passive does to one image at a
# time on a machine shared with a busy process (the README's figures come
# from here). One core is kept busy by a spinning shell loop while
# `imgsearch bench embed --batch 1` (the image tower alone, fp32) runs with
# the default policy and with OMP_WAIT_POLICY=passive, alternately, ROUNDS
# times each; then the same two on the idle machine. Prints the JSON lines
# of each run and a summary of ms per image (median over the rounds).
# usage: bench/omp_wait.sh [BIN [MODEL_DIR]]   (default: a random ViT-B/32
#        in build/bench-models/vit-b-32, made once)
# env:   SECONDS_EACH (default 3), ROUNDS (default 3)
set -euo pipefail
BIN=${1:-build/release/imgsearch}
M=${2:-build/bench-models/vit-b-32}
SECS=${SECONDS_EACH:-3}
ROUNDS=${ROUNDS:-3}
if [ ! -f "$M/model.safetensors" ]; then
  "$BIN" model init-random --like vit-b-32 --seed 1 --tokenizer-from tests/fixtures/tiny-clip "$M" >/dev/null
fi
OUT=$(mktemp)
LOADPID=
cleanup() { [ -n "$LOADPID" ] && kill "$LOADPID" 2>/dev/null; rm -f "$OUT"; }
trap cleanup EXIT
echo "# omp_wait: $(nproc) cores, OMP_NUM_THREADS=${OMP_NUM_THREADS:-default}, $ROUNDS rounds of $SECS s"
# one: LOAD POLICY: one bench embed run, tagged
one() {
  local line
  if [ "$2" = passive ]; then
    line=$(OMP_WAIT_POLICY=passive "$BIN" bench embed --model "$M" --batch 1 --precision fp32 --seconds "$SECS")
  else
    line=$(env -u OMP_WAIT_POLICY "$BIN" bench embed --model "$M" --batch 1 --precision fp32 --seconds "$SECS")
  fi
  echo "{\"load\": \"$1\", \"omp_wait_policy\": \"$2\", ${line#\{}" | tee -a "$OUT"
}
for load in one_core_busy idle; do
  if [ "$load" = one_core_busy ]; then
    (while :; do :; done) &
    LOADPID=$!
  fi
  for _ in $(seq "$ROUNDS"); do
    one "$load" default
    one "$load" passive
  done
  if [ -n "$LOADPID" ]; then kill "$LOADPID"; wait "$LOADPID" 2>/dev/null || true; LOADPID=; fi
done
echo "# ms per image at batch 1 (median of $ROUNDS runs)"
awk '
  match($0, /"load": "[a-z_]+"/) { load = substr($0, RSTART + 9, RLENGTH - 10) }
  match($0, /"omp_wait_policy": "[a-z]+"/) { pol = substr($0, RSTART + 20, RLENGTH - 21) }
  match($0, /"ms_per_batch": [0-9.]+/) { split(substr($0, RSTART, RLENGTH), kv, ": "); k = load " " pol; v[k, ++n[k]] = kv[2] }
  END {
    printf "%-15s %10s %10s\n", "load", "default", "passive"
    split("one_core_busy idle", loads, " ")
    for (i = 1; i <= 2; i++) {
      printf "%-15s", loads[i]
      split("default passive", pols, " ")
      for (j = 1; j <= 2; j++) {
        k = loads[i] " " pols[j]; m = n[k]
        for (a = 1; a <= m; a++) for (b = a + 1; b <= m; b++) if (v[k, b] < v[k, a]) { t = v[k, a]; v[k, a] = v[k, b]; v[k, b] = t }
        printf " %10.1f", m ? v[k, int((m + 1) / 2)] : -1
      }
      printf "\n"
    }
  }' "$OUT"
