#!/usr/bin/env bash
# index, reindex, search, items and duplicates through the real binary, on the
# tiny model's 12 fixture images (copied, so the test can change them).
. "$(dirname "$0")/lib.sh"

IMG=$T_TMP/imgs
S=$T_TMP/store.db
mkdir -p "$IMG"
cp "$MODEL"/images/* "$IMG"/
chmod u+w "$IMG"/*

# the summary counts "added updated unchanged removed failed" of an index run
counts() { echo "$(field added) $(field updated) $(field unchanged) $(field removed) $(field failed)"; }

# ---- a first index ---------------------------------------------------------
t_run 0 "$BIN" index --store "$S" --model "$MODEL" "$IMG"
t_eq "first index" "$(counts)" "12 0 0 0 0"
t_grep "$OUT" '"seconds": [0-9.]+, "images_per_s": [0-9.]+\}$'
t_run 0 "$BIN" items --store "$S" count
t_grep "$OUT" '^\{"items": 12, "waiting": 0\}$'

# every image finds itself first with score ~1
for f in "$IMG"/*; do
  n=$(basename "$f")
  t_run 0 "$BIN" search --store "$S" --model "$MODEL" --image "$f" -k 3 --json
  t_eq "top hit for $n" "$(field id)" "$n"
  t_ge "self score of $n" "$(field score)" 0.999
done
t_lines "$OUT" 3
t_grep "$OUT" '^\{"rank": 1, "id": "[^"]+", "score": [0-9.]+, "source": "/[^"]+", "metadata": \{\}\}$'

# the human table: a header and k rows, scores to 4 decimals
t_run 0 "$BIN" search --store "$S" --model "$MODEL" --image "$IMG/fruits.jpg" -k 2
t_lines "$OUT" 3
t_grep "$OUT" '^rank  score +id +source +metadata$'
t_grep "$OUT" '^   1  1\.0000  fruits\.jpg +/.*fruits\.jpg'

# text queries: k results, best first
t_run 0 "$BIN" search --store "$S" --model "$MODEL" --text "a photo of a cat" -k 5 --json
t_lines "$OUT" 5
scores=$(grep -Eo '"score": [-0-9.e]+' "$OUT" | awk '{print $2}')
t_eq "text scores descending" "$(echo "$scores" | sort -gr)" "$scores"

# -k, --offset, --min-score
# --like is "more like this": the item itself is never among the hits
t_run 0 "$BIN" search --store "$S" --like fruits.jpg -k 4 --json
t_lines "$OUT" 4
t_nogrep "$OUT" '"id": "fruits.jpg"'
t_eq "--like: ranks from 1" "$(field rank)" 1
ids34=$(sed -n 3,4p "$OUT" | grep -Eo '"id": "[^"]+"')
t_run 0 "$BIN" search --store "$S" --like fruits.jpg -k 2 --offset 2 --json
t_eq "--offset pages" "$(grep -Eo '"id": "[^"]+"' "$OUT")" "$ids34"
t_eq "--offset ranks" "$(field rank)" 3
t_run 0 "$BIN" search --store "$S" --like fruits.jpg -k 10 --min-score 0.9999 --json
t_lines "$OUT" 0
t_run 0 "$BIN" search --store "$S" --like chelsea.png -k 10 --min-score 0.9999 --json
t_lines "$OUT" 1 # chelsea.webp: the same photo (0.99997 with the tiny model)
t_eq "near-duplicate found" "$(field id)" "chelsea.webp"

# ---- metadata sidecars and filters -----------------------------------------
cat >"$T_TMP/meta.csv" <<'EOF'
path,category,n,note
chelsea.png,animal,1,a cat
chelsea.webp,animal,2,"the same cat, as WebP"
HappyFish.jpg,animal,3,
butterfly.jpg,animal,4,"wings ""and"" all"
butterfly_exif6.jpg,animal,5,rotated
fruits.jpg,food,6,
coffee.png,food,7,
EOF
t_run 0 "$BIN" index --store "$S" --model "$MODEL" --metadata "$T_TMP/meta.csv" "$IMG"
t_eq "sidecar on unchanged files" "$(counts)" "0 7 5 0 0"
t_run 0 "$BIN" items --store "$S" show chelsea.webp
t_grep "$OUT" '"metadata": \{"category": ?"animal", ?"n": ?"2", ?"note": ?"the same cat, as WebP"\}'
t_run 0 "$BIN" items --store "$S" show butterfly.jpg
t_grep "$OUT" '"note": ?"wings \\"and\\" all"'
t_run 0 "$BIN" search --store "$S" --like coffee.gif --filter category=animal -k 3 --json
t_lines "$OUT" 3
t_nogrep "$OUT" '"category": ?"food"'
t_eq "filtered hits are animals" "$(grep -c '"category": *"animal"' "$OUT")" 3
t_run 0 "$BIN" search --store "$S" --like coffee.gif --filter category=animal -k 10 --json
t_lines "$OUT" 5
t_run 0 "$BIN" search --store "$S" --text "fish" --model "$MODEL" --filter category=animal --filter n=3 --json
t_lines "$OUT" 1
t_eq "two filters" "$(field id)" "HappyFish.jpg"
t_run 0 "$BIN" search --store "$S" --like coffee.gif --filter category=plant --json
t_lines "$OUT" 0
# the same sidecar again changes nothing
t_run 0 "$BIN" index --store "$S" --model "$MODEL" --metadata "$T_TMP/meta.csv" "$IMG"
t_eq "same sidecar" "$(counts)" "0 0 12 0 0"
# JSON lines, keyed by id
# (paths: absolute, or relative to the sidecar's folder)
printf '{"id": "left01.jpg", "tag": "chess", "rating": 5}\n\n{"path": "%s", "tag": "chess"}\n%s\n' \
  "$IMG/Blender_Suzanne1.jpg" '{"path": "imgs/HappyFish.jpg", "tag": "fish"}' >"$T_TMP/meta.jsonl"
t_run 0 "$BIN" index --store "$S" --model "$MODEL" --metadata "$T_TMP/meta.jsonl" "$IMG"
t_eq "jsonl sidecar" "$(counts)" "0 3 9 0 0"
t_run 0 "$BIN" items --store "$S" show HappyFish.jpg
t_grep "$OUT" '"metadata": \{"category": ?"animal", ?"n": ?"3", ?"note": ?"", ?"tag": ?"fish"\}'
t_run 0 "$BIN" search --store "$S" --like fruits.jpg --filter tag=chess -k 5 --json
t_lines "$OUT" 2
t_run 0 "$BIN" search --store "$S" --like fruits.jpg --filter rating=5 --json
t_eq "numeric filter" "$(field id)" "left01.jpg"
# broken sidecars are refused before anything is indexed
printf 'path,a\nx.jpg,1,2\n' >"$T_TMP/bad.csv"
t_run 2 "$BIN" index --store "$S" --model "$MODEL" --metadata "$T_TMP/bad.csv" "$IMG"
t_grep "$ERR" 'bad.csv:2: 3 fields, the header has 2'
printf 'name,a\nx.jpg,1\n' >"$T_TMP/bad2.csv"
t_run 2 "$BIN" index --store "$S" --model "$MODEL" --metadata "$T_TMP/bad2.csv" "$IMG"
t_grep "$ERR" "no 'path' or 'id' column"
printf '{"path": "x.jpg"}\n[1]\n' >"$T_TMP/bad.jsonl"
t_run 2 "$BIN" index --store "$S" --model "$MODEL" --metadata "$T_TMP/bad.jsonl" "$IMG"
t_grep "$ERR" 'bad.jsonl:2: not a JSON object'

# ---- items -----------------------------------------------------------------
t_run 0 "$BIN" items --store "$S" list
t_lines "$OUT" 12
t_grep "$OUT" '^\{"id": "fruits.jpg", "source": "/.*/fruits.jpg", "size": 82429, "mtime": [0-9]+, "has_embedding": true, "metadata": \{.*\}\}$'
t_nogrep "$OUT" next_cursor
all_ids=$(grep -Eo '^\{"id": "[^"]+"' "$OUT" | sort)
# pages of 5: 5 + cursor, 5 + cursor, 2
t_run 0 "$BIN" items --store "$S" list --limit 5
t_lines "$OUT" 6
cur=$(field next_cursor 6)
paged=$(grep -Eo '^\{"id": "[^"]+"' "$OUT")
t_run 0 "$BIN" items --store "$S" list --limit 5 --cursor "$cur"
t_lines "$OUT" 6
cur=$(field next_cursor 6)
paged="$paged
$(grep -Eo '^\{"id": "[^"]+"' "$OUT")"
t_run 0 "$BIN" items --store "$S" list --limit 5 --cursor "$cur"
t_lines "$OUT" 2
paged="$paged
$(grep -Eo '^\{"id": "[^"]+"' "$OUT")"
t_eq "pages cover every item once" "$(echo "$paged" | sort)" "$all_ids"
t_run 0 "$BIN" items --store "$S" show fruits.jpg
t_lines "$OUT" 1
t_grep "$OUT" '"sha256": "9c031d80a1c52da5eca790db896baffec6a7e52bf786cdb7bbfca5c7f880e6a1"'
t_grep "$OUT" '"model": "tiny-clip@[0-9a-f]+"'
t_run 0 "$BIN" items --store "$S" show fruits.jpg --embedding
t_grep "$OUT" '"dim": 64, "embedding": \[-?[0-9]'
t_run 2 "$BIN" items --store "$S" show nosuch.jpg
t_grep "$ERR" "no item with id 'nosuch.jpg'"
t_run 0 "$BIN" items --store "$S" rm left01.jpg
t_grep "$OUT" '^\{"removed": 1\}$'
t_run 0 "$BIN" items --store "$S" count
t_grep "$OUT" '"items": 11'
t_run 0 "$BIN" search --store "$S" --like fruits.jpg -k 20 --json
t_lines "$OUT" 10
t_nogrep "$OUT" 'left01'
t_run 0 "$BIN" search --store "$S" --model "$MODEL" --image "$IMG/left01.jpg" -k 20 --json
t_nogrep "$OUT" 'left01'
t_run 2 "$BIN" search --store "$S" --like left01.jpg
t_run 2 "$BIN" items --store "$S" rm left01.jpg fruits.jpg.nope
t_grep "$ERR" '2 of 2 ids not found'
t_run 0 "$BIN" items --store "$S" check
t_grep "$OUT" '"ok": true, "items": 11, "waiting": 0, "embedded": 11, "index_items": 11'

# ---- incremental runs ------------------------------------------------------
# the removed item's file is still there: it comes back, the rest is skipped
t_run 0 "$BIN" index --store "$S" --model "$MODEL" "$IMG"
t_eq "re-add" "$(counts)" "1 0 11 0 0"
t_run 0 "$BIN" index --store "$S" --model "$MODEL" "$IMG"
t_eq "nothing changed" "$(counts)" "0 0 12 0 0"
# a new mtime, the same bytes: hashed, not embedded; the new mtime is kept
touch -d @981173106 "$IMG/fruits.jpg"
t_run 0 "$BIN" index --store "$S" --model "$MODEL" "$IMG"
t_eq "touched" "$(counts)" "0 0 12 0 0"
t_grep "$OUT" '"images_per_s": 0.00'
t_run 0 "$BIN" items --store "$S" show fruits.jpg
t_grep "$OUT" '"mtime": 981173106'
# new bytes: embedded again (fruits.jpg now holds coffee.png's pixels)
cp "$IMG/coffee.png" "$IMG/fruits.jpg"
t_run 0 "$BIN" index --store "$S" --model "$MODEL" "$IMG"
t_eq "modified" "$(counts)" "0 1 11 0 0"
t_run 0 "$BIN" search --store "$S" --like fruits.jpg -k 2 --json
# identical pixels now: coffee.png is its exact duplicate, score 1
t_eq "modified file re-embedded" "$(field id)" "coffee.png"
t_eq "modified file's new neighbour" "$(field score)" "1.000000"
t_run 0 "$BIN" items --store "$S" show fruits.jpg
t_grep "$OUT" '"metadata": \{"category": ?"food"' # metadata survives re-embedding
# a deleted file stays without --prune, goes with it
rm "$IMG/aloeL.jpg"
t_run 0 "$BIN" index --store "$S" --model "$MODEL" "$IMG"
t_eq "deleted, no prune" "$(counts)" "0 0 11 0 0"
t_run 0 "$BIN" index --store "$S" --model "$MODEL" --prune "$IMG"
t_eq "deleted, prune" "$(counts)" "0 0 11 1 0"
t_run 2 "$BIN" items --store "$S" show aloeL.jpg
# hidden files are skipped, non-images ignored, images found by their bytes,
# broken images reported (exit 2) while the rest is indexed
mkdir -p "$IMG/sub" "$IMG/.cache"
cp "$MODEL/images/aloeL.jpg" "$IMG/.hidden.jpg"
cp "$MODEL/images/aloeL.jpg" "$IMG/.cache/x.jpg"
cp "$MODEL/images/aloeL.jpg" "$IMG/sub/photo.dat"
echo "not an image" >"$IMG/notes.jpg"
cp "$FIX/bad/truncated.jpg" "$IMG/sub/broken.jpg"
t_run 2 "$BIN" index --store "$S" --model "$MODEL" "$IMG"
t_eq "mixed folder" "$(counts)" "1 0 11 0 1"
t_grep "$ERR" 'failed: .*/sub/broken.jpg: '
t_grep "$ERR" '1 file failed'
t_run 0 "$BIN" items --store "$S" show sub/photo.dat
t_nogrep "$OUT" 'hidden'
t_run 0 "$BIN" items --store "$S" count
t_grep "$OUT" '"items": 12, '
rm "$IMG/sub/broken.jpg"

# ids: a file named by itself is its name; --id-from path and name
S2=$T_TMP/s2.db
t_run 0 "$BIN" index --store "$S2" --model "$MODEL" "$IMG/sub/photo.dat"
t_run 0 "$BIN" items --store "$S2" show photo.dat
t_run 0 "$BIN" index --store "$S2" --model "$MODEL" --id-from path "$IMG/coffee.gif"
t_run 0 "$BIN" items --store "$S2" show "$IMG/coffee.gif"
t_run 0 "$BIN" index --store "$S2" --model "$MODEL" --id-from name "$IMG/sub"
t_eq "same source, id kept" "$(counts)" "0 0 1 0 0"
# a file reached through two roots is indexed once
S5=$T_TMP/s5.db
t_run 0 "$BIN" index --store "$S5" --model "$MODEL" "$IMG/sub" "$IMG" "$IMG/sub/photo.dat"
t_eq "overlapping roots" "$(counts)" "12 0 0 0 0"
t_run 0 "$BIN" items --store "$S5" check
t_grep "$OUT" '"ok": true, "items": 12, .*"duplicate_sources": 0'
# two files wanting one id: the second fails, the first is indexed
mkdir -p "$T_TMP/a" "$T_TMP/b"
cp "$MODEL/images/fruits.jpg" "$T_TMP/a/x.jpg"
cp "$MODEL/images/left01.jpg" "$T_TMP/b/x.jpg"
t_run 2 "$BIN" index --store "$S2" --model "$MODEL" "$T_TMP/a" "$T_TMP/b"
t_grep "$ERR" "b/x.jpg: its id 'x.jpg' is also the id of .*a/x.jpg"
t_run 2 "$BIN" index --store "$S2" --model "$MODEL" "$T_TMP/b"
t_grep "$ERR" "b/x.jpg: its id 'x.jpg' belongs to .*a/x.jpg in the store"
# a moved folder keeps its embeddings (same bytes, same ids)
mv "$T_TMP/a" "$T_TMP/a2"
t_run 0 "$BIN" index --store "$S2" --model "$MODEL" "$T_TMP/a2"
t_eq "moved" "$(counts)" "0 1 0 0 0"
t_grep "$OUT" '"images_per_s": 0.00'
t_run 0 "$BIN" items --store "$S2" show x.jpg
t_grep "$OUT" '"source": ".*/a2/x.jpg"'

# ---- duplicates --------------------------------------------------------------
# The tiny model's pairs (butterfly/butterfly_exif6, chelsea png/webp, coffee
# gif/png) score >= 0.99997, other fixture pairs at most 0.985: 0.995 splits
# them (0.95, right for ViT-B/32, lumps the tiny model's images together).
S3=$T_TMP/s3.db
t_run 0 "$BIN" index --store "$S3" --model "$MODEL" "$MODEL/images"
t_run 0 "$BIN" duplicates --store "$S3" --threshold 0.995 --json
t_lines "$OUT" 3
t_grep "$OUT" '"size": 2, .*"id": "butterfly.jpg".*"id": "butterfly_exif6.jpg"'
t_grep "$OUT" '"size": 2, .*"id": "chelsea.png".*"id": "chelsea.webp"'
t_grep "$OUT" '"size": 2, .*"id": "coffee.gif".*"id": "coffee.png"'
t_run 0 "$BIN" duplicates --store "$S3" --threshold 0.995
t_grep "$OUT" '^group 1: 2 images, best score 1\.0000$'
t_grep "$ERR" '3 groups, 6 images'
t_run 0 "$BIN" duplicates --store "$S3" --threshold 1 --json
t_lines "$OUT" 0

# ---- another model: refused, then reindex switches the store -----------------
OTHER=$T_TMP/other
mkdir -p "$OTHER"
for f in "$MODEL"/*; do [ "$(basename "$f")" = config.json ] || ln -s "$f" "$OTHER/"; done
sed 's/"_name_or_path": "tiny-clip"/"_name_or_path": "other"/' "$MODEL/config.json" >"$OTHER/config.json"
t_run 2 "$BIN" index --store "$S3" --model "$OTHER" "$MODEL/images"
t_grep "$ERR" "holds embeddings of model 'tiny-clip@[0-9a-f]+' .*not 'other@"
t_grep "$ERR" 'imgsearch reindex --store'
t_run 2 "$BIN" search --store "$S3" --model "$OTHER" --text cat
t_grep "$ERR" "model 'tiny-clip@.*imgsearch reindex"
t_run 0 "$BIN" reindex --store "$S3" --model "$OTHER"
t_grep "$OUT" '^\{"reset": true, "updated": 12, "failed": 0, "waiting": 0, '
t_run 0 "$BIN" reindex --store "$S3" --model "$OTHER"
t_grep "$OUT" '^\{"reset": false, "updated": 0, "failed": 0, "waiting": 0, '
t_run 0 "$BIN" search --store "$S3" --model "$OTHER" --image "$MODEL/images/HappyFish.jpg" -k 1 --json
t_eq "after reindex" "$(field id)" "HappyFish.jpg"
t_run 0 "$BIN" items --store "$S3" show HappyFish.jpg
t_grep "$OUT" '"model": "other@'
t_run 2 "$BIN" index --store "$S3" --model "$MODEL" "$MODEL/images"
t_grep "$ERR" "holds embeddings of model 'other@"
t_run 0 "$BIN" items --store "$S3" check
t_grep "$OUT" '"ok": true'

# ---- usage and errors ----------------------------------------------------------
NOSTORE=$T_TMP/nope.db
t_run 2 "$BIN" search --store "$NOSTORE" --like x
t_grep "$ERR" 'no such store'
t_run 2 "$BIN" search --store "$NOSTORE" --model "$MODEL" --text cat
t_run 2 "$BIN" items --store "$NOSTORE" count
t_run 2 "$BIN" duplicates --store "$NOSTORE"
t_run 2 "$BIN" reindex --store "$NOSTORE" --model "$MODEL"
t_run 2 "$BIN" index --store "$S" --model "$MODEL" "$T_TMP/missing-folder"
t_grep "$ERR" 'missing-folder: No such file'
t_run 2 "$BIN" index --store "$S" "$IMG"
t_grep "$ERR" 'model DIR is required'
# no --store: the default store (under $XDG_DATA_HOME, the test's own: lib.sh)
t_run 0 "$BIN" index --model "$MODEL" "$IMG"
if [ -f "$XDG_DATA_HOME/imgsearch/store.db" ]; then ok; else bad "no default store under $XDG_DATA_HOME"; fi
t_run 2 "$BIN" index --store "$S" --model "$MODEL"
t_run 2 "$BIN" index --store "$S" --model "$MODEL" --id-from hash "$IMG"
t_run 2 "$BIN" search --store "$S" --like a.jpg --text b
t_grep "$ERR" 'give one query'
t_run 2 "$BIN" search --store "$S" --like fruits.jpg --filter novalue
t_run 2 "$BIN" search --store "$S" --like fruits.jpg -k 0
t_run 2 "$BIN" search --store "$S" --like fruits.jpg --min-score 2
t_run 2 "$BIN" items --store "$S"
t_run 2 "$BIN" items --store "$S" frobnicate
t_run 2 "$BIN" items --store "$S" show
t_run 2 "$BIN" items --store "$S" list --cursor abc
t_run 2 "$BIN" duplicates --store "$S" --threshold 1.5
for c in index reindex search items duplicates; do
  t_run 2 "$BIN" "$c" --store "$S" --bogus
  t_grep "$ERR" "unknown option '--bogus'"
  t_run 0 "$BIN" "$c" --help
  t_grep "$OUT" "usage: imgsearch $c"
done
t_run 0 "$BIN" --help
t_grep "$OUT" 'duplicates'

t_done
