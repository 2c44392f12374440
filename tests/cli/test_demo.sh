#!/usr/bin/env bash
# `make demo` in its non-interactive mode (DEMO_CHECK=1): index the fixture
# photos with the tiny model, search, start the server, /health, stop. The
# script is run as `make demo` runs it, on the binary under test.
. "$(dirname "$0")/lib.sh"
ROOT=$(cd "$(dirname "$0")/../.." && pwd)

IMGSEARCH_BIN=$BIN DEMO_DIR=$T_TMP/demo MODEL=$MODEL PHOTOS=$MODEL/images DEMO_CHECK=1 \
  t_run 0 "$ROOT/scripts/demo"
t_grep "$OUT" '^\{"added": 12, .*"failed": 0'
t_grep "$OUT" '^ +1 +[-0-9.]+ +[^ ]+\.(jpg|png|webp|gif) '
t_grep "$OUT" '^demo: serving on http://127\.0\.0\.1:[0-9]+/$'
t_grep "$OUT" '^demo: /health: \{"status":"ok".*"items":12'
t_grep "$OUT" '^demo: check passed$'
# the server was stopped
if pgrep -f "serve --store $T_TMP/demo/demo.db" >/dev/null; then bad "server still running"; else ok; fi
# make demo passes the overrides to this script after installing and building
t_run 0 make -C "$ROOT" -n demo MODEL=m PHOTOS=p DEMO_CHECK=1
t_grep "$OUT" 'scripts/install-deps'
t_grep "$OUT" 'MODEL="m" PHOTOS="p" .*DEMO_CHECK="1" scripts/demo'
t_done
