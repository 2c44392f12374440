# hang.sh - bounded waits for the test harness, and a report of what a
# process that ran past its time is doing. Sourced by tests/run (one limit
# per test) and tests/http/server.sh (a server that does not stop).
#
# A hang must end as a failure that says where it hung, never as a run that
# only stops when CI gives up on it.

# session_pids SID: the processes of session SID, one pid a line
session_pids() {
  ps -e -o pid=,sid= | awk -v s="$1" '$2 == s { print $1 }'
}

# hang_report PID...: each PID, with the processes of its session when it
# leads one: the ps line, the kernel function it sleeps in, and every
# thread's backtrace (when gdb is installed and may attach)
hang_report() {
  local p procs=() comm
  for p in "$@"; do
    procs+=("$p")
    while read -r q; do [ "$q" != "$p" ] && procs+=("$q"); done \
      < <(session_pids "$p")
  done
  for p in "${procs[@]}"; do
    [ -d "/proc/$p" ] || continue
    echo "---- process $p: $(ps -o etimes=,stat=,args= -p "$p" | cut -c 1-300)"
    echo "     waiting in: $(cat "/proc/$p/wchan" 2>/dev/null)"
    comm=$(ps -o comm= -p "$p")
    case $comm in bash | sh | sleep | ps | awk | cat | grep | sed | timeout | setsid) continue ;; esac
    command -v gdb >/dev/null || continue
    timeout 60 gdb -p "$p" -batch -nx -ex 'set pagination off' -ex 'set print frame-arguments none' -ex 'thread apply all bt 30' 2>&1 |
      grep -Ev '^\[(New LWP|Thread debugging)|^(warning|Using host|Download)' | head -n 400
  done
}

# wait_bounded PID SECONDS: waits for the child PID; returns its exit code,
# or 124 when it still runs after SECONDS (with hang_report on stdout; the
# process is left running for the caller to kill)
wait_bounded() {
  local pid=$1 limit=$2 start=$SECONDS nap=0.01
  while kill -0 "$pid" 2>/dev/null; do
    if [ $((SECONDS - start)) -ge "$limit" ]; then
      echo "hang: process $pid still runs after ${limit} s"
      hang_report "$pid"
      return 124
    fi
    sleep "$nap"
    [ "$nap" = 0.01 ] && [ $((SECONDS - start)) -ge 1 ] && nap=0.1
  done
  wait "$pid"
}

# run_limited SECONDS LOG CMD...: runs CMD in a session of its own with its
# output in LOG; past SECONDS, appends the hang report to LOG, kills the
# whole session and returns 124. A session of its own is out of reach of
# the terminal's Ctrl-C: the caller traps it and calls run_limited_abort.
RUN_LIMITED_PID=
run_limited() {
  local limit=$1 log=$2 pid rc
  shift 2
  setsid "$@" >"$log" 2>&1 </dev/null &
  pid=$!
  RUN_LIMITED_PID=$pid
  wait_bounded "$pid" "$limit" >>"$log.hang"
  rc=$?
  if [ "$rc" -eq 124 ]; then
    kill_session "$pid"
    wait "$pid" 2>/dev/null
    { echo "TIMEOUT: '$*' ran past its ${limit} s"; cat "$log.hang"; } >>"$log"
  fi
  rm -f "$log.hang"
  RUN_LIMITED_PID=
  return "$rc"
}

# run_limited_abort: ends the session run_limited is waiting for, if any
run_limited_abort() {
  [ -n "$RUN_LIMITED_PID" ] && kill_session "$RUN_LIMITED_PID"
  RUN_LIMITED_PID=
}

# kill_session SID: SIGTERM to every process of the session (scripts run
# their EXIT traps and stop their servers), SIGKILL to what is left after 5 s
kill_session() {
  local i
  kill -TERM -- "-$1" 2>/dev/null || return 0
  for i in $(seq 50); do
    [ -z "$(session_pids "$1")" ] && return 0
    sleep 0.1
  done
  kill -KILL -- "-$1" 2>/dev/null
  return 0
}
