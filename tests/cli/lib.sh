# lib.sh - the one harness of the shell tests: each `t_*` call is one case.
# Sourced by tests/cli/test_*.sh and tests/http/test_*.sh (as
# "$(dirname "$0")/../cli/lib.sh"); prints "N passed, N failed, N skipped" at
# the end. Scripts use these helpers and do not redefine them: every check
# names what it compared (the WHAT argument comes first). t_skip TAG WHY records a case that cannot run here (see tests/run
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
# the default store of a command without --store lives here, not in $HOME
export XDG_DATA_HOME=$T_TMP/xdg
unset IMGSEARCH_STORE
# a command that would fetch the default model from the hub gets a refused
# connection at once instead of a wait on the network, and a cache of its own
export XDG_CACHE_HOME=$T_TMP/cache
export HF_ENDPOINT=${HF_ENDPOINT:-http://127.0.0.1:9}
ERR=$T_TMP/err
# no curl call waits forever on a server that hangs: 120 s at most each
export CURL_HOME=$T_TMP/curl
mkdir -p "$CURL_HOME"
echo 'max-time = 120' >"$CURL_HOME/.curlrc"

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
# t_eq WHAT GOT WANT: GOT is the string WANT
t_eq() { if [ "$2" = "$3" ]; then ok; else bad "$1: got '$2', wanted '$3'"; fi; }
# num_ok X OP Y: X OP Y holds for the numbers X and Y (an empty X is 0)
num_ok() { awk -v a="$1" -v b="$3" "BEGIN { exit !(a + 0 $2 b + 0) }"; }
# t_ge WHAT X MIN / t_lt WHAT X MAX / t_le WHAT X MAX: comparisons of numbers
t_ge() { if num_ok "$2" '>=' "$3"; then ok; else bad "$1: got $2, wanted >= $3"; fi; }
t_lt() { if num_ok "$2" '<' "$3"; then ok; else bad "$1: got $2, wanted < $3"; fi; }
t_le() { if num_ok "$2" '<=' "$3"; then ok; else bad "$1: got $2, wanted <= $3"; fi; }
# field KEY [FILE | LINE]: the first value of "KEY": (with or without a space
# after the colon, quotes dropped) in FILE, or in line LINE of $OUT when the
# second argument is a number; $OUT by default
field() {
  if [[ ${2:-} =~ ^[0-9]+$ ]]; then sed -n "${2}p" "$OUT"; else cat "${2:-$OUT}"; fi |
    grep -Eo "\"$1\": ?(\"[^\"]*\"|[-0-9.eE+]+|true|false|null)" | head -n 1 |
    sed -E "s/^\"$1\": ?\"?//; s/\"$//"
}
# vec FILE: the numbers of the first vector of the (last) "embedding" or
# "features" array on the first line of FILE, one a line
vec() {
  sed -E -e 's/.*"(features|embedding)": ?\[\[?//' -e 's/\].*//' "$1" | head -n 1 | tr ',' '\n'
}
# cos FILE FILE: the cosine of their vectors (see vec), 7 decimals; 0 when one is 0
cos() {
  paste <(vec "$1") <(vec "$2") |
    awk '{ab += $1 * $2; aa += $1 * $1; bb += $2 * $2} END {if (aa * bb > 0) printf "%.7f", ab / sqrt(aa * bb); else print 0}'
}

# HTTP (with tests/http/server.sh for the server itself)
HDR=$T_TMP/headers
# h METHOD PATH CURL_ARGS...: one request to $URL; status in CODE, body in
# $OUT, headers in $HDR (CR removed: lines end at $); at most H_MAX_TIME
# seconds (default 120)
h() {
  local m=$1 p=$2
  shift 2
  CODE=$(curl -s --max-time "${H_MAX_TIME:-120}" --path-as-is -o "$OUT" -D "$HDR" -w '%{http_code}' -X "$m" "$@" "$URL$p")
  if [ -f "$HDR" ]; then tr -d '\r' <"$HDR" >"$HDR.n" && mv "$HDR.n" "$HDR"; fi
}
# t_code STATUS: the last h answered STATUS
t_code() {
  if [ "$CODE" = "$1" ]; then ok; else bad "status $CODE, wanted $1: $(head -c 300 "$OUT")"; fi
}
# t_err STATUS CODE: the last h answered STATUS with the one error shape
# {"error":{"code":CODE,"message":"..."}, then string fields such as
# "detail" and "request_id"}
t_err() {
  local re="^\{\"error\":\{\"code\":\"$2\",\"message\":\"([^\"\\\\]|\\\\.)+\"\}(,\"[a-z_]+\":\"([^\"\\\\]|\\\\.)*\")*\}$"
  if [ "$CODE" = "$1" ] && grep -Eq -- "$re" "$OUT"; then ok; else
    bad "wanted $1 $2, got $CODE: $(head -c 300 "$OUT")"; fi
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
