#!/usr/bin/env bash
# Every command's --help against the options it really takes: each option
# that a --help text names is accepted by that command (given before
# --help, so nothing runs), and each long option in a command's source
# table appears in its --help text. A made-up option is refused, which
# shows the check can fail.
. "$(dirname "$0")/lib.sh"
ROOT=$(cd "$(dirname "$0")/../.." && pwd)

# the commands `imgsearch --help` lists
t_run 0 "$BIN" --help
cmds=$(sed -n '/^commands:/,/^$/p' "$OUT" | awk 'NF > 1 {print $1}' | grep -v '^commands:$')
t_ge "commands listed by imgsearch --help" "$(echo "$cmds" | wc -w)" 10

# accepted CMD... -- OPT: the command line CMD... OPT 1 --help is not refused
# for the option (a value error is fine: the option exists)
accepted() {
  local opt=${*: -1}
  "$BIN" "${@:1:$#-1}" "$opt" 1 --help >"$OUT" 2>"$ERR"
  if grep -Eqi "unknown option|unrecognized option|unknown benchmark" "$ERR"; then
    bad "imgsearch ${*:1:$#-1} $opt: documented in --help but refused: $(head -c 200 "$ERR")"
  else ok; fi
}
# options_of FILE: the long options named in a help text
options_of() { grep -oE -- '--[a-z][a-z0-9-]*' "$1" | sort -u | grep -vx -- '--help'; }

for c in $cmds; do
  if [ "$c" = bench ]; then continue; fi # sub-benchmarks below
  t_run 0 "$BIN" "$c" --help
  t_grep "$OUT" "^usage: imgsearch $c"
  cp "$OUT" "$T_TMP/help.$c"
  for o in $(options_of "$T_TMP/help.$c"); do accepted "$c" "$o"; done
  # the source's option table, against the help text
  src=$ROOT/src/cmd/$c.c
  [ -f "$src" ] || continue
  for o in $(grep -oE '\{"[a-z][a-z0-9-]*", *(no|required|optional)_argument' "$src" | cut -d'"' -f2); do
    [ "$o" = help ] && continue
    # items --sample goes with `items check`, kept out of --help on purpose (items.c)
    [ "$c/$o" = items/sample ] && continue
    if grep -q -- "--$o\b" "$T_TMP/help.$c"; then ok; else
      bad "imgsearch $c takes --$o (src/cmd/$c.c) but its --help does not say so"; fi
  done
done

# bench: each sub-benchmark takes the options its usage line names
t_run 0 "$BIN" bench --help
cp "$OUT" "$T_TMP/help.bench"
for b in embed text gemm preprocess index; do
  grep -E "^  $b " "$T_TMP/help.bench" >"$T_TMP/help.bench.$b"
  t_lines "$T_TMP/help.bench.$b" 1
  for o in $(options_of "$T_TMP/help.bench.$b"); do accepted bench "$b" "$o"; done
done
t_run 0 "$BIN" bench ann --help
cp "$OUT" "$T_TMP/help.bench.ann"
for o in $(options_of "$T_TMP/help.bench.ann"); do accepted bench ann "$o"; done

# the check itself: an option no command has is refused
for c in search index items; do
  "$BIN" "$c" --no-such-option 1 --help >"$OUT" 2>"$ERR"
  t_grep "$ERR" "unknown option '--no-such-option'"
done
t_done
