#!/usr/bin/env bash
# Crash safety of `imgsearch index`: kill -9 it at random moments (at least
# 20 kills that land mid-run) and check the store after each; stop it with
# SIGINT and resume; then damage the index file (PATH.hnsw) and check that
# searches still find the right items (the store rebuilds the index).
. "$(dirname "$0")/lib.sh"

KILLS=${CRASH_KILLS:-20}
D=$T_TMP/photos
S=$T_TMP/crash.db
# 60 files: five copies of the 12 fixtures (copies have their own ids)
for i in 0 1 2 3 4; do
  mkdir -p "$D/c$i"
  cp "$MODEL"/images/* "$D/c$i/"
done
NFILES=$(find "$D" -type f | wc -l)


# The store after a crash: it opens, holds no duplicate, every item has an
# embedding or waits for one, and the index agrees with the table.
# check_store WHAT [early]: with "early", a kill may have landed before the
# store was created: that is counted (NOSTORE), neither passed nor failed;
# otherwise a missing store is a failure.
NOSTORE=0
check_store() {
  local what=$1
  if [ ! -e "$S" ]; then
    if [ "${2:-}" = early ]; then NOSTORE=$((NOSTORE + 1)); else bad "$what: no store at $S"; fi
    return
  fi
  # killed after SQLite created the file, before the schema was committed:
  # the same as no store (the next index run creates it)
  if [ "${2:-}" = early ] && ! "$BIN" items --store "$S" count >"$OUT" 2>"$ERR" &&
    grep -q 'a new store needs a model id and a dimension' "$ERR"; then
    NOSTORE=$((NOSTORE + 1))
    return
  fi
  t_run 0 "$BIN" items --store "$S" count
  local items waiting
  items=$(field items)
  waiting=$(field waiting)
  if [ -z "$items" ] || [ -z "$waiting" ]; then
    bad "$what: items count printed no numbers: $(head -c 200 "$OUT")"
    return
  fi
  t_run 0 "$BIN" items --store "$S" list --limit 10000
  local listed emb ids srcs
  listed=$(grep -c '"id": ' "$OUT")
  emb=$(grep -c '"has_embedding": true' "$OUT")
  ids=$(grep -Eo '^\{"id": "[^"]+"' "$OUT" | sort | uniq -d | wc -l)
  srcs=$(grep -Eo '"source": "[^"]+"' "$OUT" | sort | uniq -d | wc -l)
  if [ "$listed" -eq "$items" ] && [ "$ids" -eq 0 ] && [ "$srcs" -eq 0 ] &&
    [ $((emb + waiting)) -eq "$items" ] && [ "$items" -le "$NFILES" ]; then ok; else
    bad "$what: $items items ($waiting waiting), $listed listed, $emb embedded, $ids repeated ids, $srcs repeated sources"
  fi
  local first
  first=$(grep -m 1 '"has_embedding": true' "$OUT" | grep -Eo '^\{"id": "[^"]+"' | cut -d'"' -f4)
  t_run 0 "$BIN" items --store "$S" check --sample 8
  t_grep "$OUT" '"ok": true, .*"not_found": 0, "duplicate_sources": 0'
  if [ -n "$first" ]; then
    # the item's own image finds it (or an exact copy of it) at score 1
    t_run 0 "$BIN" items --store "$S" show "$first"
    local src
    src=$(grep -Eo '"source": "[^"]+"' "$OUT" | head -n 1 | cut -d'"' -f4)
    # the model of its embedding: a reindex killed before it switched the
    # store leaves the old one (the model load can outlast the kill delay)
    local model=$MODEL
    [[ $(field model) == other@* ]] && model=$OTHER
    t_run 0 "$BIN" search --store "$S" --model "$model" --image "$src" -k 3 --json
    t_ge "$what: top score of the item's own image" "$(field score)" 0.999999
  elif [ "$emb" -gt 0 ]; then
    bad "$what: $emb items have embeddings but none was found to search for"
  fi
}

# ---- kill -9 at random moments --------------------------------------------
# Kill delays are drawn from 0.05 s up to the time of a whole run (at most
# 1.5 s), so that most kills land mid-run whatever the build's speed.
t0=$EPOCHREALTIME
t_run 0 "$BIN" index --store "$S" --model "$MODEL" --batch 4 "$D"
SPAN=$(awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN { s = b - a; if (s > 1.5) s = 1.5; if (s < 0.1) s = 0.1; printf "%.2f", s }')
rm -f "$S" "$S"-wal "$S"-shm "$S".hnsw
kills=0 runs=0 finished=0
while [ "$kills" -lt "$KILLS" ] && [ "$runs" -lt $((KILLS * 4)) ]; do
  runs=$((runs + 1))
  "$BIN" index --store "$S" --model "$MODEL" --batch 4 "$D" >"$T_TMP/run.out" 2>"$T_TMP/run.err" &
  pid=$!
  sleep "$(awk -v r="$RANDOM" -v s="$SPAN" 'BEGIN { printf "%.2f", 0.05 + (s - 0.05) * r / 32767 }')"
  if kill -9 "$pid" 2>/dev/null; then
    wait "$pid" 2>/dev/null
    rc=$?
    kills=$((kills + 1))
    # 137: the kill landed; 0: it finished between the test and the kill
    if [ "$rc" -eq 137 ] || [ "$rc" -eq 0 ]; then ok; else
      bad "kill $kills: index exited $rc: $(head -c 300 "$T_TMP/run.err")"; fi
    check_store "after kill $kills" early
    [ -n "${CRASH_VERBOSE:-}" ] && echo "kill $kills: $("$BIN" items --store "$S" count)"
  else
    # it finished first: start over so that later kills land mid-run
    wait "$pid"
    finished=$((finished + 1))
    rm -f "$S" "$S"-wal "$S"-shm "$S".hnsw
  fi
done
if [ "$kills" -ge "$KILLS" ]; then ok; else bad "only $kills kills landed in $runs runs"; fi
# most kills must leave a store to check, or the checks above proved little
if [ $((kills - NOSTORE)) -ge $((KILLS / 2)) ]; then ok; else
  bad "only $((kills - NOSTORE)) of $kills kills left a store to check"; fi
echo "test_crash.sh: $kills kills in $runs runs ($finished finished first, $NOSTORE before the store existed; delays up to $SPAN s)"

# a rerun completes everything: nothing failed, one item per file
t_run 0 "$BIN" index --store "$S" --model "$MODEL" "$D"
t_grep "$OUT" '"failed": 0'
t_run 0 "$BIN" items --store "$S" count
t_grep "$OUT" "^\\{\"items\": $NFILES, \"waiting\": 0\\}\$"
check_store "after the final run"

# ---- SIGINT: stop after the current batch, exit 130, resume -------------------
interrupted=0
for try in 1 2 3 4 5; do
  rm -f "$S" "$S"-wal "$S"-shm "$S".hnsw
  "$BIN" index --store "$S" --model "$MODEL" --batch 2 "$D" >"$T_TMP/int.out" 2>"$T_TMP/int.err" &
  pid=$!
  sleep "$(awk -v t="$try" 'BEGIN { printf "%.2f", 0.9 / t }')"
  kill -INT "$pid" 2>/dev/null
  wait "$pid"
  rc=$?
  if [ "$rc" -eq 130 ]; then
    interrupted=1
    break
  fi
done
if [ "$interrupted" -eq 1 ]; then
  ok
  t_grep "$T_TMP/int.out" '"interrupted": true'
  t_grep "$T_TMP/int.err" 'interrupted; committed batches are kept'
  check_store "after SIGINT"
  # what the stopped run committed (none when the signal came before its
  # first batch: a slow machine) is exactly what the resumed run keeps
  committed=0
  [ -e "$S" ] && committed=$("$BIN" items --store "$S" count | grep -Eo '"items": [0-9]+' | grep -Eo '[0-9]+')
  t_run 0 "$BIN" index --store "$S" --model "$MODEL" "$D"
  t_grep "$OUT" '"failed": 0'
  added=$(field added)
  unchanged=$(field unchanged)
  if [ $((added + unchanged)) -eq "$NFILES" ] && [ "$unchanged" -eq "$committed" ]; then ok; else
    bad "resume after SIGINT: added $added, unchanged $unchanged ($committed committed before)"; fi
else
  bad "SIGINT never stopped a run (exit $rc)"
fi

# ---- a damaged index file is rebuilt ------------------------------------------
# damage KIND: breaks $S.hnsw (a copy of the good file is in $GOOD)
damage() {
  cp "$GOOD" "$S.hnsw"
  local size
  size=$(stat -c %s "$S.hnsw")
  case $1 in
  truncated) truncate -s $((size / 2)) "$S.hnsw" ;;
  payload) printf '\377\377\377\377\377\377\377\377' | dd of="$S.hnsw" bs=1 seek=$((size / 2)) conv=notrunc 2>/dev/null ;;
  header) printf '\377\377\377\377' | dd of="$S.hnsw" bs=1 seek=20 conv=notrunc 2>/dev/null ;;
  empty) : >"$S.hnsw" ;;
  missing) rm -f "$S.hnsw" ;;
  foreign) cp "$S4.hnsw" "$S.hnsw" ;;
  esac
}
# after each kind of damage: a search finds the five copies of the query image
# at score ~1 (the store rebuilt the index), and check says why it rebuilt
S4=$T_TMP/other.db
t_run 0 "$BIN" index --store "$S4" --model "$MODEL" "$MODEL/images"
t_run 0 "$BIN" items --store "$S" check
t_grep "$OUT" '"ok": true, .*"index_origin": "file"'
GOOD=$T_TMP/good.hnsw
cp "$S.hnsw" "$GOOD"
for kind in truncated payload header empty missing foreign; do
  damage $kind
  t_run 0 "$BIN" search --store "$S" --model "$MODEL" --image "$MODEL/images/HappyFish.jpg" -k 5 --json
  t_lines "$OUT" 5
  n=$(grep -Ec '"id": "c[0-4]/HappyFish.jpg", "score": (1\.0000|0\.9999)' "$OUT")
  if [ "$n" -eq 5 ]; then ok; else bad "$kind index: $(cut -c1-60 "$OUT" | tr '\n' ' ')"; fi
  damage $kind
  t_run 0 "$BIN" items --store "$S" check --sample 10
  t_grep "$OUT" '"ok": true, .*"index_origin": "rebuilt", "reason": "[^"]+"'
done
t_grep "$OUT" '"reason": "made for another database or model"'
t_run 0 "$BIN" items --store "$S" check --sample 10
t_grep "$OUT" '"ok": true, .*"index_origin": "file"' # the rebuilt index was written back

# ---- reindex killed and resumed --------------------------------------------------
OTHER=$T_TMP/other
mkdir -p "$OTHER"
for f in "$MODEL"/*; do [ "$(basename "$f")" = config.json ] || ln -s "$f" "$OTHER/"; done
sed 's/"_name_or_path": "tiny-clip"/"_name_or_path": "other"/' "$MODEL/config.json" >"$OTHER/config.json"
CUR_MODEL=$OTHER
for k in 1 2 3; do
  "$BIN" reindex --store "$S" --model "$OTHER" --batch 2 >/dev/null 2>&1 &
  pid=$!
  sleep "$(awk -v r="$RANDOM" -v s="$SPAN" 'BEGIN { printf "%.2f", 0.05 + (s - 0.05) * r / 32767 }')"
  kill -9 "$pid" 2>/dev/null
  wait "$pid" 2>/dev/null
  check_store "reindex killed ($k)" # the store existed before: it must still
  [ -n "${CRASH_VERBOSE:-}" ] && echo "reindex kill $k: $("$BIN" items --store "$S" count)"
done
t_run 0 "$BIN" reindex --store "$S" --model "$OTHER"
t_grep "$OUT" '"failed": 0, "waiting": 0, '
t_run 0 "$BIN" search --store "$S" --model "$OTHER" --image "$MODEL/images/HappyFish.jpg" -k 1 --json
t_grep "$OUT" '"id": "c[0-4]/HappyFish.jpg"'
t_run 0 "$BIN" items --store "$S" count
t_grep "$OUT" "^\\{\"items\": $NFILES, \"waiting\": 0\\}\$"

t_done
