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

# bench commands print their JSON lines (figures are for `make bench`), and
# each line says what it timed
t_run 0 "$BIN" bench embed --model "$MODEL" --batch 2 --precision fp32 --seconds 0.05
t_grep "$OUT" '^\{"what": "image", "model_only": true, "input": "random pixels", "batch": 2, "precision": "fp32", "images_per_s": [0-9.]+, "ms_per_batch": [0-9.]+'
if cpu_has_bf16; then
  t_run 0 "$BIN" bench text --model "$MODEL" --batch 3 --precision bf16 --seconds 0.05
  t_grep "$OUT" '^\{"what": "text", "batch": 3, "precision": "bf16", "texts_per_s": [0-9.]+, "ms_per_batch": [0-9.]+\}$'
else # refused up front, with what to do instead
  t_run 2 "$BIN" bench text --model "$MODEL" --batch 3 --precision bf16 --seconds 0.05
  t_grep "$ERR" 'bf16 needs a CPU with AVX512-BF16 or AMX; this CPU has neither - use --precision fp32 or auto'
fi
t_run 0 "$BIN" bench text --model "$MODEL" --batch 3 --precision fp32 --seconds 0.05
t_grep "$OUT" '^\{"what": "text", "batch": 3, "precision": "fp32", "texts_per_s": [0-9.]+, "ms_per_batch": [0-9.]+\}$'
# auto is fp32 where the CPU has no bf16 products
t_run 0 "$BIN" bench text --model "$MODEL" --precision auto --seconds 0.05
if cpu_has_bf16; then t_grep "$OUT" '"precision": "bf16"'; else t_grep "$OUT" '"precision": "fp32"'; fi
t_run 0 "$BIN" bench index --model "$MODEL" --seconds 0.05 "$MODEL/images/fruits.jpg" "$MODEL/images/coffee.png"
t_grep "$OUT" '^\{"what": "index", "model_only": false, "input": "decode \+ preprocess \+ embed", "batch": 16, "images": [0-9]+, "precision": "(fp32|bf16)", "images_per_s": [0-9.]+\}$'
t_run 0 "$BIN" bench index --model "$MODEL" --batch 1 --seconds 0.05 "$MODEL/images/fruits.jpg"
t_grep "$OUT" '"what": "index", .*"batch": 1, '
t_run 0 "$BIN" bench gemm --seconds 0.05
t_grep "$OUT" '^\{"what": "gemm", "m": 800, "k": 768, "n": 3072, "precision": "fp32", "ms": [0-9.]+, "gflops": [0-9.]+\}$'
if cpu_has_bf16; then t_grep "$OUT" '"precision": "bf16", "ms": [0-9.]+'; else
  t_grep "$OUT" '"precision": "bf16", "skipped": "bf16 needs a CPU with AVX512-BF16 or AMX'; fi
t_run 0 "$BIN" bench preprocess --model "$MODEL" --seconds 0.05 --synthetic 640x480
t_grep "$OUT" '"image": "synthetic 640x480 jpeg", "dct_scaling": true'
t_run 2 "$BIN" bench embed --model "$MODEL" --batch 0
t_run 2 "$BIN" bench nosuch


# ---- embed options -----------------------------------------------------------
F=$MODEL/images/fruits.jpg
BIG=$MODEL/images/aloeL.jpg # 1282x1110: decoded at a DCT scale unless --full-decode
t_run 0 "$BIN" embed --model "$MODEL" "$F"
cp "$OUT" "$T_TMP/default.json"
# --weights: another checkpoint in place of the folder's own; the OpenAI
# names of the same weights give the same vector, a ViT-B/32 gives 512-d
t_run 0 "$BIN" embed --model "$MODEL" --weights "$MODEL/open_clip_model.safetensors" "$F"
t_eq "--weights (same weights, OpenAI names)" "$(cos "$OUT" "$T_TMP/default.json")" "1.0000000"
t_run 0 "$BIN" embed --model "$MODEL" --weights "$T_TMP/b32/model.safetensors" "$F"
t_grep "$OUT" '"dim": 512'
t_run 2 "$BIN" embed --model "$MODEL" --weights "$T_TMP/nothere.safetensors" "$F"
t_grep "$ERR" 'nothere.safetensors'
# --batch: the same vectors whatever the batch; out of range is refused
t_run 0 "$BIN" embed --model "$MODEL" --batch 1 "$MODEL"/images/*
cp "$OUT" "$T_TMP/b1.json"
t_run 0 "$BIN" embed --model "$MODEL" --batch 5 "$MODEL"/images/*
t_lines "$OUT" 12
worst=1
for i in $(seq 12); do
  sed -n "${i}p" "$OUT" >"$T_TMP/x"; sed -n "${i}p" "$T_TMP/b1.json" >"$T_TMP/y"
  c=$(cos "$T_TMP/x" "$T_TMP/y"); worst=$(awk -v a="$c" -v b="$worst" 'BEGIN {printf "%.7f", (a < b ? a : b)}')
done
t_eq "--batch 5 vs --batch 1" "$worst" "1.0000000"
t_run 2 "$BIN" embed --model "$MODEL" --batch 0 "$F"
t_grep "$ERR" '--batch'
t_run 2 "$BIN" embed --model "$MODEL" --batch 100000 "$F"
t_grep "$ERR" '--batch'
# --max-pixels: checked before decoding; fruits.jpg has 512x480 = 245760 pixels
t_run 2 "$BIN" embed --model "$MODEL" --max-pixels 245759 "$F"
t_grep "$OUT" '"error": \{"code": "too_large"'
t_run 0 "$BIN" embed --model "$MODEL" --max-pixels 245760 "$F"
t_grep "$OUT" '"dim": 64'
# --full-decode: a large JPEG gives another vector (DCT scaling is off),
# a small one the same
t_run 0 "$BIN" embed --model "$MODEL" "$BIG"
cp "$OUT" "$T_TMP/dct.json"
t_run 0 "$BIN" embed --model "$MODEL" --full-decode "$BIG"
if cmp -s "$OUT" "$T_TMP/dct.json"; then bad "--full-decode changed nothing for a large JPEG"; else ok; fi
t_run 0 "$BIN" embed --model "$MODEL" --full-decode "$F"
if cmp -s "$OUT" "$T_TMP/default.json"; then ok; else bad "--full-decode changed a small JPEG"; fi
# --precision
t_run 0 "$BIN" embed --model "$MODEL" --precision fp32 "$F"
if cmp -s "$OUT" "$T_TMP/default.json" || cpu_has_bf16; then ok; else bad "auto is not fp32 on a CPU without bf16"; fi
if cpu_has_bf16; then
  t_run 0 "$BIN" embed --model "$MODEL" --precision bf16 "$F"
  t_grep "$OUT" '"dim": 64'
else
  t_run 2 "$BIN" embed --model "$MODEL" --precision bf16 "$F"
  t_grep "$ERR" 'bf16 needs a CPU with AVX512-BF16 or AMX; this CPU has neither - use --precision fp32 or auto'
  t_lines "$OUT" 0
fi
# IMGSEARCH_NO_BF16 plays a CPU without bf16 on any machine
t_run 2 env IMGSEARCH_NO_BF16=1 "$BIN" embed --model "$MODEL" --precision bf16 "$F"
t_grep "$ERR" 'bf16 needs a CPU with AVX512-BF16 or AMX'
t_run 0 env IMGSEARCH_NO_BF16=1 "$BIN" embed --model "$MODEL" --precision auto "$F"
if cmp -s "$OUT" "$T_TMP/default.json" || cpu_has_bf16; then ok; else bad "auto is not fp32"; fi

# ---- classify --template: the label goes where {} is ---------------------------
# "a photo of {}" is the default, so labels written out in full under "{}"
# must give exactly the default's logits, and "{}" alone must not
logits() { grep -Eo '"label": "[^"]*", "prob": [-0-9.e]+, "logit": [-0-9.e]+' "$OUT" | sed -E 's/"label": "(a photo of )?//; s/", "prob".*"logit": / /' | sort; }
t_run 0 "$BIN" classify --model "$MODEL" --labels "a dog,fruit,a car" "$F"
want=$(logits)
t_run 0 "$BIN" classify --model "$MODEL" --template "{}" --labels "a photo of a dog,a photo of fruit,a photo of a car" "$F"
t_eq "--template {} with the default written out" "$(logits)" "$want"
t_run 0 "$BIN" classify --model "$MODEL" --template "a photo of {}" --labels "a dog,fruit,a car" "$F"
t_eq "--template as the default" "$(logits)" "$want"
t_run 0 "$BIN" classify --model "$MODEL" --template "{}" --labels "a dog,fruit,a car" "$F"
if [ "$(logits)" != "$want" ]; then ok; else bad "--template {} gave the default's logits"; fi
t_run 0 "$BIN" classify --model "$MODEL" --template "a drawing of {}, small" --labels "a dog,fruit,a car" "$F"
if [ "$(logits)" != "$want" ]; then ok; else bad "--template was ignored"; fi
t_done
