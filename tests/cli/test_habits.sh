#!/usr/bin/env bash
# CLI habits (issue 12, item 6) through the real binary: IMGSEARCH_STORE and
# the default store; a positional search query (a file is an image,
# anything else a text); tables that fit the terminal and --paths; reindex
# asks on a terminal (--yes skips it); a file that failed and did not
# change is skipped, not failed again; items show/list print embeddings
# only with --embedding; --store of a file that is no store; classify on
# folders and --save.
. "$(dirname "$0")/lib.sh"
IMG=$MODEL/images
export IMGSEARCH_MODEL=$MODEL
unset COLUMNS
DEF=$XDG_DATA_HOME/imgsearch/store.db # XDG_DATA_HOME: the test's own (lib.sh)

# on_tty ANSWER CMD...: runs CMD on a pseudo-terminal, typing ANSWER (and a
# newline) once it asks "[y/N]"; everything it printed goes to $OUT; the
# exit code is CMD's
on_tty() {
  python3 - "$@" >"$OUT" 2>&1 <<'PY'
import os, pty, sys, time
answer = sys.argv[1].encode() + b"\n"
pid, fd = pty.fork()
if pid == 0:
    os.execvp(sys.argv[2], sys.argv[2:])
out, sent, deadline = b"", False, time.time() + 60
while time.time() < deadline:
    try:
        chunk = os.read(fd, 4096)
    except OSError:
        break
    if not chunk:
        break
    out += chunk
    if not sent and b"[y/N]" in out:
        os.write(fd, answer)
        sent = True
sys.stdout.write(out.decode("utf-8", "replace"))
_, status = os.waitpid(pid, 0)
sys.exit(os.waitstatus_to_exitcode(status))
PY
}

# ---- the default store, IMGSEARCH_STORE ----
t_run 2 "$BIN" search "a cat"
t_grep "$ERR" "no store given \(--store PATH or IMGSEARCH_STORE\) and the default store $DEF does not exist yet"
t_run 0 "$BIN" index "$IMG"
t_eq "index into the default store: added" "$(field added)" 12
if [ -f "$DEF" ]; then ok; else bad "no default store at $DEF"; fi
t_run 0 "$BIN" items count
t_grep "$OUT" '^\{"items": 12, "waiting": 0\}$'
S=$T_TMP/env.db
IMGSEARCH_STORE=$S t_run 0 "$BIN" index "$IMG/fruits.jpg" "$IMG/HappyFish.jpg"
IMGSEARCH_STORE=$S t_run 0 "$BIN" items count
t_grep "$OUT" '^\{"items": 2, '
IMGSEARCH_STORE=$S t_run 0 "$BIN" search --json -k 5 "a cat"
t_lines "$OUT" 2
IMGSEARCH_STORE=$S t_run 0 "$BIN" duplicates --json
IMGSEARCH_STORE=$S t_run 0 "$BIN" reindex
t_grep "$OUT" '^\{"reset": false, "updated": 0, '
# --store wins over the environment
IMGSEARCH_STORE=$S t_run 0 "$BIN" items --store "$DEF" count
t_grep "$OUT" '^\{"items": 12, '

# ---- a positional query: an existing file is an image, else a text ----
t_run 0 "$BIN" search --json -k 3 "$IMG/fruits.jpg"
t_eq "positional file: the image itself first" "$(field id)" fruits.jpg
t_ge "positional file: self score" "$(field score)" 0.999
cp "$OUT" "$T_TMP/pos_img"
t_run 0 "$BIN" search --json -k 3 --image "$IMG/fruits.jpg"
t_eq "positional file = --image" "$(cat "$T_TMP/pos_img")" "$(cat "$OUT")"
t_run 0 "$BIN" search --json -k 3 "a photo of $IMG/no-such.jpg"
cp "$OUT" "$T_TMP/pos_txt"
t_run 0 "$BIN" search --json -k 3 --text "a photo of $IMG/no-such.jpg"
t_eq "positional text = --text" "$(cat "$T_TMP/pos_txt")" "$(cat "$OUT")"
t_run 2 "$BIN" search red shoes
t_grep "$ERR" "one query, not 'red' and 'shoes'"
t_run 2 "$BIN" search "a cat" --text "a dog"
t_grep "$ERR" 'give one query'

# ---- tables that fit the terminal; --paths ----
for w in 60 80 120; do
  COLUMNS=$w t_run 0 "$BIN" search -k 12 "a cat"
  t_lines "$OUT" 13
  t_le "widest line with COLUMNS=$w" "$(awk '{ print length($0) }' "$OUT" | sort -n | tail -n 1)" "$w"
done
COLUMNS=60 t_run 0 "$BIN" search -k 12 "a cat"
t_grep "$OUT" '^rank  score   id +source +metadata$'
t_grep "$OUT" '\.\.\.[a-zA-Z0-9_]+\.(jpg|png|gif|webp) *$' # long sources keep their file name
t_run 0 "$BIN" search -k 12 "a cat" # not a terminal, no COLUMNS: nothing cut
t_nogrep "$OUT" '\.\.\.'
t_run 0 "$BIN" search -k 4 --paths "a cat"
t_lines "$OUT" 4
n=0
while read -r p; do [ -f "$p" ] && [[ $p == "$IMG"/* ]] && n=$((n + 1)); done <"$OUT"
t_eq "--paths: each line an indexed file" "$n" 4
t_run 2 "$BIN" search --paths --json "a cat"

# ---- reindex asks on a terminal before clearing embeddings ----
OTHER=$T_TMP/other
mkdir -p "$OTHER"
for f in "$MODEL"/*; do [ "$(basename "$f")" = config.json ] || ln -s "$f" "$OTHER/"; done
sed 's/"_name_or_path": "tiny-clip"/"_name_or_path": "other"/' "$MODEL/config.json" >"$OTHER/config.json"
R=$T_TMP/re.db
t_run 0 "$BIN" index --store "$R" "$IMG"
on_tty n "$BIN" reindex --store "$R" --model "$OTHER"
t_eq "reindex answered no: exit code" "$?" 1
t_grep "$OUT" "re\.db holds embeddings of model 'tiny-clip@[0-9a-f]+'; this clears all 12 of them and re-embeds every item with 'other@[0-9a-f]+'\. Go on\? \[y/N\]"
t_grep "$OUT" 'nothing changed'
t_run 0 "$BIN" items --store "$R" count
t_grep "$OUT" '"waiting": 0\}' # nothing was cleared
t_run 0 "$BIN" search --store "$R" --json -k 1 "$IMG/fruits.jpg" # still the old model
on_tty y "$BIN" reindex --store "$R" --model "$OTHER"
t_eq "reindex answered yes: exit code" "$?" 0
t_grep "$OUT" '"reset": true, "updated": 12, "failed": 0'
on_tty n "$BIN" reindex --store "$R" --model "$MODEL" --yes
t_eq "reindex --yes on a terminal: exit code" "$?" 0
t_nogrep "$OUT" 'y/N'
t_grep "$OUT" '"reset": true, "updated": 12'
t_run 0 "$BIN" reindex --store "$R" --model "$OTHER" </dev/null # not a terminal: no question
t_nogrep "$ERR" 'y/N'
t_grep "$OUT" '"reset": true'

# ---- a file that failed and did not change is skipped ----
F=$T_TMP/mixed
mkdir -p "$F"
cp "$IMG/fruits.jpg" "$FIX/bad/truncated.jpg" "$F/"
echo "not an image" >"$F/notes.txt"
M=$T_TMP/mixed.db
t_run 2 "$BIN" index --store "$M" "$F"
t_eq "first run: added failed skipped non_image" "$(field added) $(field failed) $(field skipped) $(field non_image)" "1 1 0 1"
t_grep "$M.failed" ' /.*/mixed/truncated\.jpg$'
t_run 0 "$BIN" index --store "$M" "$F"
t_eq "unchanged failure: failed skipped non_image" "$(field failed) $(field skipped) $(field non_image)" "0 1 1"
t_grep "$ERR" '1 file that failed before and did not change since was skipped'
touch -d '2001-02-03' "$F/truncated.jpg" # changed: tried, and fails again
t_run 2 "$BIN" index --store "$M" "$F"
t_eq "changed failure: failed skipped" "$(field failed) $(field skipped)" "1 0"
cp "$IMG/aloeL.jpg" "$F/truncated.jpg" # fixed: added, forgotten
t_run 0 "$BIN" index --store "$M" "$F"
t_eq "fixed file: added failed skipped" "$(field added) $(field failed) $(field skipped)" "1 0 0"
if [ -e "$M.failed" ]; then bad "$M.failed left with nothing failed: $(cat "$M.failed")"; else ok; fi

# ---- items: embeddings only when asked for ----
t_run 0 "$BIN" items --store "$S" show fruits.jpg
t_nogrep "$OUT" '"dim"|"embedding"'
t_grep "$OUT" '"has_embedding": true'
t_run 0 "$BIN" items --store "$S" show fruits.jpg --embedding
t_grep "$OUT" '"dim": 64, "embedding": \[-?[0-9]'
t_eq "show --embedding: 64 numbers" "$(vec "$OUT" | wc -l)" 64
t_run 0 "$BIN" items --store "$S" list
t_nogrep "$OUT" '"embedding"'
t_run 0 "$BIN" items --store "$S" list --embedding
t_eq "list --embedding: a vector per item" "$(grep -c '"dim": 64, "embedding": \[-\?[0-9]' "$OUT")" 2
t_run 2 "$BIN" items --store "$S" count --embedding
t_grep "$ERR" '--embedding goes with list and show'

# ---- --store naming a file that is no store ----
printf 'path,color\na.jpg,red\n' >"$T_TMP/meta.csv"
for c in "items count" "search a-cat" "duplicates" "reindex"; do
  # shellcheck disable=SC2086
  t_run 2 "$BIN" $c --store "$T_TMP/meta.csv"
  t_grep "$ERR" 'meta\.csv: not an imgsearch store'
  t_nogrep "$ERR" 'PRAGMA|file is not a database'
done
t_run 2 "$BIN" index --store "$T_TMP/meta.csv" "$IMG/fruits.jpg"
t_grep "$ERR" 'not an imgsearch store'
t_eq "meta.csv untouched" "$(cat "$T_TMP/meta.csv")" "$(printf 'path,color\na.jpg,red')"

# ---- classify: folders, --save KEY ----
t_run 2 "$BIN" classify --labels "fruit,a cat,a car" --top 1 "$F" "$T_TMP/notes-missing"
t_eq "classify a folder: images in it (the text file left out) + the missing file" "$(grep -c '"file": ' "$OUT")" 3
t_grep "$OUT" "\"file\": \"$F/fruits.jpg\", \"labels\": \\[\\{\"label\": "
t_nogrep "$OUT" 'notes\.txt'
t_run 0 "$BIN" classify --labels "fruit,a cat,a car" --top 1 --save kind --store "$M" "$F"
t_eq "classify --save: files saved" "$(grep -c '"saved": true' "$OUT")" 2
label=$(grep -F "\"file\": \"$F/fruits.jpg\"" "$OUT" | grep -Eo '"label": "[^"]+"' | cut -d'"' -f4)
t_run 0 "$BIN" items --store "$M" show fruits.jpg
t_grep "$OUT" "\"metadata\": \\{\"kind\":\"$label\"\\}"
t_grep "$OUT" '"has_embedding": true' # the embedding is kept
t_run 0 "$BIN" search --store "$M" --json --filter "kind=$label" -k 5 "$IMG/fruits.jpg"
t_eq "search by the saved label: top hit" "$(field id)" fruits.jpg
t_run 2 "$BIN" classify --labels "a,b" --save kind --store "$M" "$IMG/HappyFish.jpg"
t_grep "$OUT" 'no item of the store has this source \(index it first\)'
t_run 2 "$BIN" classify --labels "a,b" --store "$M" "$IMG/HappyFish.jpg"
t_grep "$ERR" '--store goes with --save'
t_done
