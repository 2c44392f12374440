#!/usr/bin/env bash
# The embed, model and bench commands through the real binary.
. "$(dirname "$0")/lib.sh"

# every fixture image, one JSON line each, exit 0
t_run 0 "$BIN" embed --model "$MODEL" "$MODEL"/images/*
t_lines "$OUT" 12
t_grep "$OUT" '^\{"file": ".*chelsea.webp", "dim": 64, "embedding": \[-?[0-9]'
t_nogrep "$OUT" '"error"'

# texts and images mixed keep their order
t_run 0 "$BIN" embed --model "$MODEL" --text "a photo of a cat" "$MODEL/images/coffee.gif" --text "two dogs"
t_lines "$OUT" 3
if [ "$(sed -n 1p "$OUT" | cut -c1-9)" = '{"text": ' ] && [ "$(sed -n 2p "$OUT" | cut -c1-9)" = '{"file": ' ]; then ok; else bad "order: $(cut -c1-30 "$OUT")"; fi

# bad inputs: a JSON error line each, the good file still embedded, exit 2
B=$FIX/bad
t_run 2 "$BIN" embed --model "$MODEL" "$B/truncated.jpg" "$B/text.jpg" "$B/empty.jpg" \
  "$B/huge_header.png" "$MODEL/images/fruits.jpg" "$B/missing.jpg"
t_lines "$OUT" 6
t_grep "$OUT" 'truncated.jpg", "error": \{"code": "decode_failed"'
t_grep "$OUT" 'text.jpg", "error": \{"code": "unsupported_format"'
t_grep "$OUT" 'empty.jpg", "error": \{"code": "unsupported_format"'
t_grep "$OUT" 'huge_header.png", "error": \{"code": "too_large"'
t_grep "$OUT" 'missing.jpg", "error": \{"code": "bad_path"'
t_grep "$OUT" 'fruits.jpg", "dim": 64'
t_grep "$ERR" '5 of 6 inputs failed'

# a corrupt checkpoint is a clear error
t_run 2 "$BIN" embed --model "$B/corrupt-model" "$MODEL/images/fruits.jpg"
t_grep "$ERR" 'model.safetensors: header'
t_run 2 "$BIN" embed --model /nonexistent "$MODEL/images/fruits.jpg"
t_grep "$ERR" 'no such model'

# usage errors
t_run 2 "$BIN" embed --model "$MODEL" --bogus x.jpg
t_grep "$ERR" "unknown option '--bogus'"
t_run 2 "$BIN" embed "$MODEL/images/fruits.jpg"
t_grep "$ERR" 'model DIR is required'
t_run 2 "$BIN" embed --model "$MODEL" --precision fp64 x.jpg
t_run 2 "$BIN" nosuchcommand
for c in embed model bench classify tokenize; do
  t_run 0 "$BIN" "$c" --help
  t_grep "$OUT" "usage: imgsearch $c"
done
t_run 0 "$BIN" --help
t_grep "$OUT" 'embed'

# raw vs normalized: the normalized vector has unit length
t_run 0 "$BIN" embed --model "$MODEL" "$MODEL/images/fruits.jpg"
norm=$(sed -e 's/.*\[//' -e 's/\].*//' "$OUT" | tr ',' '\n' | awk '{s += $1 * $1} END {printf "%.4f", sqrt(s)}')
if [ "$norm" = "1.0000" ]; then ok; else bad "norm $norm"; fi
t_run 0 "$BIN" embed --raw --model "$MODEL" "$MODEL/images/fruits.jpg"
norm=$(sed -e 's/.*\[//' -e 's/\].*//' "$OUT" | tr ',' '\n' | awk '{s += $1 * $1} END {printf "%.4f", sqrt(s)}')
if [ "$norm" != "1.0000" ]; then ok; else bad "raw norm is 1"; fi

# model init-random writes a folder that loads (tiny check: vit-b-32 shapes)
t_run 0 "$BIN" model init-random --like vit-b-32 --seed 7 --tokenizer-from "$MODEL" "$T_TMP/b32"
t_run 0 "$BIN" model info --model "$T_TMP/b32"
t_grep "$OUT" '"dim": 512, "image_size": 224'
t_grep "$OUT" 'vision 12x768 p32 224, text 12x512 ctx 77'
t_run 2 "$BIN" model init-random --like vit-x "$T_TMP/x"
t_run 0 "$BIN" embed --model "$T_TMP/b32" --text "red shoes" "$MODEL/images/fruits.jpg"
t_grep "$OUT" '"dim": 512'

# classify: labels best first, probabilities sum to 1
t_run 0 "$BIN" classify --model "$MODEL" --labels "a dog, a cat,fruit,a car" "$MODEL/images/fruits.jpg" "$MODEL/images/coffee.gif"
t_lines "$OUT" 2
probs=$(sed -n 1p "$OUT" | grep -Eo '"prob": [-0-9.e]+' | awk '{print $2}')
sum=$(echo "$probs" | awk '{s += $1} END {printf "%.4f", s}')
if [ "$sum" = "1.0000" ]; then ok; else bad "probabilities sum to $sum"; fi
if [ "$(echo "$probs" | sort -gr)" = "$probs" ]; then ok; else bad "not ordered: $probs"; fi
t_run 0 "$BIN" classify --model "$MODEL" --labels "a,b,c" --top 1 "$MODEL/images/fruits.jpg"
t_grep "$OUT" '"labels": \[\{"label": "[abc]", "prob": [0-9.e-]+, "logit": [-0-9.e]+\}\]\}$'
t_run 2 "$BIN" classify --model "$MODEL" --labels "only" "$MODEL/images/fruits.jpg"
t_run 2 "$BIN" classify --model "$MODEL" --labels "a,b" "$FIX/bad/text.jpg"
t_grep "$OUT" '"error": \{"code": "unsupported_format"'

# tokenize: the fixture's first text, invalid UTF-8 is an error line, exit 2
t_run 0 "$BIN" tokenize --model "$MODEL" "a photo of a dog"
t_grep "$OUT" '^\{"text": "a photo of a dog", "ids": \[49406, 320, 1125, 539, 320, 1929, 49407\]\}$'
t_run 2 "$BIN" tokenize --model "$MODEL" "fine" "$(printf 'bad \xff byte')"
t_lines "$OUT" 2
t_grep "$OUT" '"text": "bad \\ufffd byte", "error": \{"code": "invalid_utf8"'
t_grep "$ERR" 'byte 4'
t_run 0 "$BIN" tokenize --model "$MODEL" --context 5 "one two three four five six"
t_grep "$OUT" '"ids": \[49406, [0-9]+, [0-9]+, [0-9]+, 49407\]'

# bench commands print their JSON lines (figures are for `make bench`)
t_run 0 "$BIN" bench embed --model "$MODEL" --batch 2 --precision fp32 --seconds 0.05
t_grep "$OUT" '^\{"what": "image", "batch": 2, "precision": "fp32", "images_per_s": [0-9.]+, "ms_per_batch": [0-9.]+'
t_run 0 "$BIN" bench text --model "$MODEL" --batch 3 --precision bf16 --seconds 0.05
t_grep "$OUT" '^\{"what": "text", "batch": 3, "precision": "bf16", "texts_per_s": [0-9.]+, "ms_per_batch": [0-9.]+\}$'
t_run 0 "$BIN" bench index --model "$MODEL" --seconds 0.05 "$MODEL/images/fruits.jpg" "$MODEL/images/coffee.png"
t_grep "$OUT" '^\{"what": "index", "images": [0-9]+, "precision": "(fp32|bf16)", "images_per_s": [0-9.]+\}$'
t_run 0 "$BIN" bench preprocess --model "$MODEL" --seconds 0.05 --synthetic 640x480
t_grep "$OUT" '"image": "synthetic 640x480 jpeg", "dct_scaling": true'
t_run 2 "$BIN" bench embed --model "$MODEL" --batch 0
t_run 2 "$BIN" bench nosuch
t_done
