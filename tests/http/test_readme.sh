#!/usr/bin/env bash
# README.md stays true:
#   1. every curl example of its "## HTTP API" section runs as written
#      against a real server (tiny test model, fixture photos, --api-key) and
#      answers 2xx; the examples run in order, in a folder holding the two
#      images they name (photo.jpg, other.jpg), with URL and KEY set;
#   2. every method and path of the server's OpenAPI document has an example,
#      and every path of the router (src/http/router.c) is in the routes table;
#   3. its "## Configuration" tables name exactly the options each command's
#      --help names, and every environment variable the sources read
#      (getenv) is in the README.
. "$(dirname "$0")/../cli/lib.sh"
. "$(dirname "$0")/server.sh"
trap 'serve_kill_all; rm -rf "$T_TMP"' EXIT
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
README=$ROOT/README.md
export IMGSEARCH_RATE_LIMIT=0

# section TITLE: the lines of README's "## TITLE" section
section() { awk -v h="## $1" '$0 == h {on = 1; next} on && /^## / {exit} on' "$README"; }
section "HTTP API" >"$T_TMP/api.md"
section "Configuration" >"$T_TMP/config.md"
t_ge "lines of the HTTP API section" "$(wc -l <"$T_TMP/api.md")" 50
t_ge "lines of the Configuration section" "$(wc -l <"$T_TMP/config.md")" 50

# ---- 1. the curl examples, in order --------------------------------------------
awk '/^```/ {code = !code; next} code && /^curl /' "$T_TMP/api.md" >"$T_TMP/examples"
t_ge "curl examples in the HTTP API section" "$(wc -l <"$T_TMP/examples")" 20
CAT=$T_TMP/catalog
WORK=$T_TMP/work
mkdir -p "$CAT" "$WORK"
cp "$MODEL"/images/* "$CAT"/
cp "$MODEL/images/HappyFish.jpg" "$WORK/photo.jpg"
cp "$MODEL/images/fruits.jpg" "$WORK/other.jpg"
KEY=readme-secret
serve_start readme --store "$T_TMP/store.db" --model "$MODEL" --catalog "$CAT" --api-key "$KEY"
if serve_ready; then ok; else bad "the server did not get ready: $(tail -n 5 "$SLOG")"; fi

# route_of EXAMPLE: "METHOD /path/template" of a curl example
route_of() {
  local m p
  m=$(grep -oE -- '-X [A-Z]+' <<<"$1" | head -n 1 | cut -c4-)
  if [ -z "$m" ]; then
    if grep -qE -- ' (-F|-d|--data-binary) ' <<<"$1"; then m=POST; else m=GET; fi
  fi
  # the last "$URL..." of the line is the request's (an inner one may come first)
  p=$(grep -oE '"\$URL[^"?]*' <<<"$1" | tail -n 1 | cut -c6-)
  p=${p:-/}
  p=$(sed -E 's#^/items/[^/]+/(image|thumb)$#/items/{id}/\1#; s#^/items/[^/]+$#/items/{id}#' <<<"$p")
  echo "$m $p"
}
: >"$T_TMP/covered"
n=0
while IFS= read -r ex; do
  n=$((n + 1))
  out=$(cd "$WORK" && URL=$URL KEY=$KEY bash -c "$ex -w '\n%{http_code}\n'" 2>"$ERR")
  code=$(tail -n 1 <<<"$out")
  if [[ $code =~ ^2[0-9][0-9]$ ]]; then ok; else
    bad "README example $n answered '$code': $ex: $(tail -n 3 <<<"$out" | head -c 300)"; fi
  route_of "$ex" >>"$T_TMP/covered"
done <"$T_TMP/examples"
# the examples did what they say: the item is there with its metadata, its
# image and thumbnail were saved, the one deleted is gone
h GET /items/shoe-17
t_code 200
t_grep "$OUT" '"category": ?"shoes"'
h GET /items/shoe-18
t_code 404
t_eq "shoe-17.jpg is a JPEG" "$(head -c 3 "$WORK/shoe-17.jpg" | od -An -tx1 | tr -d ' \n')" ffd8ff
t_eq "shoe-17-thumb.jpg is a JPEG" "$(head -c 3 "$WORK/shoe-17-thumb.jpg" | od -An -tx1 | tr -d ' \n')" ffd8ff
# an example that fails is caught: a write without the key
out=$(cd "$WORK" && URL=$URL bash -c "curl -s -X DELETE \"\$URL/items/shoe-17\" -w '\n%{http_code}\n'")
t_eq "a DELETE without the key" "$(tail -n 1 <<<"$out")" 401

# ---- 2. every route has its example and its row --------------------------------
h GET /openapi.json
t_code 200
python3 -c '
import json, sys
d = json.load(open(sys.argv[1]))
for p, ops in d["paths"].items():
    for m in ops:
        if m in ("get", "put", "post", "delete", "patch"):
            print(m.upper(), p)
' "$OUT" | sort -u >"$T_TMP/openapi-routes"
t_ge "method and path pairs of /openapi.json" "$(wc -l <"$T_TMP/openapi-routes")" 17
while IFS= read -r r; do
  if grep -qxF -- "$r" "$T_TMP/covered"; then ok; else bad "README has no curl example of $r"; fi
done <"$T_TMP/openapi-routes"
sed -n '/^### Routes$/,/^### /p' "$T_TMP/api.md" | grep '^| `' >"$T_TMP/routes-table"
paths=$(grep -oE '\{"/[^"]*", HTTP_ROUTE_|return "/[^"]*";' "$ROOT/src/http/router.c" |
  sed -E 's/^\{"([^"]*)".*/\1/; s/^return "([^"]*)";/\1/' | sed 's#^\(/.*[^/]\)/$#\1#' | sort -u)
t_ge "paths the router knows" "$(wc -w <<<"$paths")" 14
for p in $paths; do
  if grep -qF -- "$p\`" "$T_TMP/routes-table" || grep -qF -- "$p?" "$T_TMP/routes-table"; then ok; else
    bad "the README's routes table lacks $p (src/http/router.c)"; fi
done

# ---- 3. the configuration tables against --help --------------------------------
# options_of FILE: the long options named in FILE (as in tests/cli/test_help.sh)
options_of() { grep -oE -- '--[a-z][a-z0-9-]*' "$1" | sort -u | grep -vx -- '--help'; }
cmds=$(grep -oE '^#### imgsearch [a-z]+$' "$T_TMP/config.md" | cut -d' ' -f3)
t_ge "commands with a configuration table" "$(wc -w <<<"$cmds")" 12
"$BIN" --help >"$T_TMP/help" 2>&1
for c in $(sed -n '/^commands:/,/^$/p' "$T_TMP/help" | awk 'NF > 1 && $1 != "commands:" {print $1}'); do
  if grep -qx "$c" <<<"$cmds"; then ok; else bad "the Configuration section has no table of $c"; fi
done
for c in $cmds; do
  "$BIN" "$c" --help >"$T_TMP/help.$c" 2>&1
  if [ "$c" = bench ]; then "$BIN" bench ann --help >>"$T_TMP/help.$c" 2>&1; fi
  options_of "$T_TMP/help.$c" >"$T_TMP/want.$c"
  awk -v h="#### imgsearch $c" '$0 == h {on = 1; next} on && /^#/ {exit} on && /^\| `/' "$T_TMP/config.md" |
    cut -d'|' -f2 >"$T_TMP/table.$c"
  options_of "$T_TMP/table.$c" >"$T_TMP/got.$c"
  missing=$(comm -23 "$T_TMP/want.$c" "$T_TMP/got.$c" | tr '\n' ' ')
  extra=$(comm -13 "$T_TMP/want.$c" "$T_TMP/got.$c" | tr '\n' ' ')
  t_eq "options of imgsearch $c --help missing from README" "$missing" ""
  t_eq "options in README's table of $c that its --help lacks" "$extra" ""
done
# every environment variable the sources read
for v in $(grep -rhoE 'getenv\("[A-Z_]+"\)' "$ROOT/src" | cut -d'"' -f2 | sort -u); do
  if grep -qF -- "\`$v\`" "$T_TMP/config.md"; then ok; else
    bad "README's Configuration section does not name $v (read by src/)"; fi
done

serve_stop
t_eq "server exit code" "$RC" 0
t_done
