# lib.sh - a tiny harness for CLI tests: each `t_*` call is one case.
# Sourced by tests/cli/test_*.sh; prints "N passed, N failed, N skipped" at
# the end. t_skip TAG WHY records a case that cannot run here (see tests/run
# for the TAGs it accepts as expected on a machine).
set -u
BIN=${IMGSEARCH_BIN:?IMGSEARCH_BIN must point at the imgsearch binary}
FIX=${IMGSEARCH_FIXTURES:-tests/fixtures}
MODEL=$FIX/tiny-clip
T_PASS=0
T_FAIL=0
T_SKIP=0
T_TMP=$(mktemp -d)
trap 'rm -rf "$T_TMP"' EXIT
OUT=$T_TMP/out
ERR=$T_TMP/err

ok() { T_PASS=$((T_PASS + 1)); }
# bad MESSAGE: one failed case, reported at the caller's caller (the line of
# the t_* call), or at the caller when called from a script's top level
bad() {
  T_FAIL=$((T_FAIL + 1))
  local src=${BASH_SOURCE[2]:-} line=${BASH_LINENO[1]:-0}
  if [ -z "$src" ] || [ "$line" = 0 ]; then src=${BASH_SOURCE[1]}; line=${BASH_LINENO[0]}; fi
  echo "FAIL $src:$line: $*"
}

# t_run WANT_RC CMD...: runs CMD (stdout -> $OUT, stderr -> $ERR), checks rc
t_run() {
  local want=$1; shift
  "$@" >"$OUT" 2>"$ERR"
  local rc=$?
  if [ "$rc" -eq "$want" ]; then ok; else
    bad "'$*' exited $rc, wanted $want; stderr: $(head -c 400 "$ERR")"; fi
}
# t_grep FILE PATTERN: FILE contains the extended regex PATTERN
t_grep() {
  if grep -Eq -- "$2" "$1"; then ok; else bad "$(basename "$1") lacks /$2/: $(head -c 300 "$1")"; fi
}
t_nogrep() {
  if grep -Eq -- "$2" "$1"; then bad "$(basename "$1") has /$2/"; else ok; fi
}
# t_lines FILE N: FILE has N lines
t_lines() {
  local n; n=$(wc -l <"$1")
  if [ "$n" -eq "$2" ]; then ok; else bad "$(basename "$1") has $n lines, wanted $2"; fi
}
# t_skip TAG WHY: one case skipped, never passed: "SKIP script:line: WHY [needs TAG]"
t_skip() {
  T_SKIP=$((T_SKIP + 1))
  echo "SKIP ${BASH_SOURCE[1]}:${BASH_LINENO[0]}: $2 [needs $1]"
}
# cpu_has FLAG: /proc/cpuinfo lists FLAG
cpu_has() { grep -m1 '^flags' /proc/cpuinfo | grep -qw -- "$1"; }
# cpu_has_bf16: the CPU runs bf16 products (what clip_cpu_has_bf16 checks)
cpu_has_bf16() { cpu_has avx512_bf16 || cpu_has amx_bf16; }
t_done() {
  echo "$(basename "$0"): $T_PASS passed, $T_FAIL failed, $T_SKIP skipped"
  [ "$T_FAIL" -eq 0 ]
}
