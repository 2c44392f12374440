#!/usr/bin/env bash
# `imgsearch search` filters and options through the real binary. Filters
# are ANDed: the metadata below is chosen so that every filter alone, and
# every pair, gives a different set than all of them together; each
# combination is tried in every order, so a parser that keeps only the
# first or the last --filter fails.
. "$(dirname "$0")/lib.sh"

IMG=$T_TMP/imgs
S=$T_TMP/store.db
mkdir -p "$IMG"
cp "$MODEL"/images/* "$IMG"/
# ids: the sorted ids of $OUT (search --json lines), space separated
ids() { grep -Eo '"id": "[^"]+"' "$OUT" | sed -E 's/"id": "//; s/"$//' | sort | tr '\n' ' ' | sed 's/ $//'; }

#        color shape  size
# A Blender_Suzanne1  red  round  s   <- the only item with all three
# B HappyFish         red  square s
# C aloeL             red  round  m
# D butterfly         blue round  s
# E butterfly_exif6   red  square m
# F chelsea.png       blue square s
# others              green oval  l
cat >"$T_TMP/meta.csv" <<'CSV'
path,color,shape,size
Blender_Suzanne1.jpg,red,round,s
HappyFish.jpg,red,square,s
aloeL.jpg,red,round,m
butterfly.jpg,blue,round,s
butterfly_exif6.jpg,red,square,m
chelsea.png,blue,square,s
chelsea.webp,green,oval,l
coffee.gif,green,oval,l
coffee.png,green,oval,l
fruits.jpg,green,oval,l
fruits_alpha.png,green,oval,l
left01.jpg,green,oval,l
CSV
t_run 0 "$BIN" index --store "$S" --model "$MODEL" --metadata "$T_TMP/meta.csv" "$IMG"

A=Blender_Suzanne1.jpg B=HappyFish.jpg C=aloeL.jpg D=butterfly.jpg E=butterfly_exif6.jpg F=chelsea.png
sorted() { printf '%s\n' "$@" | sort | tr '\n' ' ' | sed 's/ $//'; }
# search_f WANT FILTER...: --like fruits.jpg over everything, with these filters
search_f() {
  local want=$1 args=() f
  shift
  for f in "$@"; do args+=(--filter "$f"); done
  t_run 0 "$BIN" search --store "$S" --like fruits.jpg -k 12 --json "${args[@]}"
  t_eq "filters $*" "$(ids)" "$want"
}
red=$(sorted $A $B $C $E) round=$(sorted $A $C $D) small=$(sorted $A $B $D $F)
search_f "$red" color=red
search_f "$round" shape=round
search_f "$small" size=s
# pairs, both orders: each differs from either filter alone
search_f "$(sorted $A $C)" color=red shape=round
search_f "$(sorted $A $C)" shape=round color=red
search_f "$(sorted $A $B)" color=red size=s
search_f "$(sorted $A $B)" size=s color=red
search_f "$(sorted $A $D)" shape=round size=s
search_f "$(sorted $A $D)" size=s shape=round
# all three, every order: only A
for o in "color=red shape=round size=s" "color=red size=s shape=round" \
  "shape=round color=red size=s" "shape=round size=s color=red" \
  "size=s color=red shape=round" "size=s shape=round color=red"; do
  # shellcheck disable=SC2086
  search_f "$A" $o
done
# a filter that matches nothing empties the answer whatever comes with it
search_f "" color=red shape=oval
search_f "" shape=oval color=red
# the same key twice: both must hold (red and blue: nothing)
search_f "" color=red color=blue

# ---- --ef: the search width is checked and passed to the index --------------
t_run 0 "$BIN" search --store "$S" --like fruits.jpg -k 12 --json
all=$(ids)
t_run 0 "$BIN" search --store "$S" --like fruits.jpg -k 12 --ef 1 --json
t_eq "--ef 1 (widened to k)" "$(ids)" "$all"
t_run 0 "$BIN" search --store "$S" --like fruits.jpg -k 12 --ef 100000 --json
t_eq "--ef 100000" "$(ids)" "$all"
t_run 2 "$BIN" search --store "$S" --like fruits.jpg --ef 0
t_grep "$ERR" '--ef'
t_run 2 "$BIN" search --store "$S" --like fruits.jpg --ef 100001
t_grep "$ERR" '--ef'
t_run 2 "$BIN" search --store "$S" --like fruits.jpg --ef x
t_grep "$ERR" '--ef'

# ---- --precision on search ----------------------------------------------------
t_run 0 "$BIN" search --store "$S" --model "$MODEL" --text "a photo of a cat" --precision fp32 -k 3 --json
t_lines "$OUT" 3
t_run 2 "$BIN" search --store "$S" --model "$MODEL" --text "a cat" --precision fp16
t_grep "$ERR" "precision must be auto, fp32 or bf16, not 'fp16'"
if cpu_has_bf16; then
  t_run 0 "$BIN" search --store "$S" --model "$MODEL" --text "a photo of a cat" --precision bf16 -k 3 --json
  t_lines "$OUT" 3
else
  t_run 2 "$BIN" search --store "$S" --model "$MODEL" --text "a photo of a cat" --precision bf16 -k 3
  t_grep "$ERR" 'bf16 needs a CPU with AVX512-BF16 or AMX; this CPU has neither - use --precision fp32 or auto'
fi
t_done
