# Helpers shared by the bench/ scripts: logging, ports, waiting for a server or a quiet
# machine, CPU accounting from /proc, and reading wrk result lines ("key=value ...").
# Sourced after the script sets BENCH (its name, for error messages).

log() { echo "== $*" >&2; }
die() { echo "${BENCH:-bench}: $*" >&2; exit 2; }
port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
kv() { tr ' ' '\n' <<<"$1" | sed -n "s/^$2=//p"; }  # line key -> value
tf() { [ "$1" = yes ] || [ "$1" = 1 ] && echo true || echo false; }

wait_http() { # url seconds [pid: give up early if it exits]
  local i
  for i in $(seq $(( $2 * 10 ))); do
    if curl -fsS -o /dev/null "$1" 2>/dev/null; then return 0; fi
    if [ -n "${3:-}" ] && ! kill -0 "$3" 2>/dev/null; then return 1; fi
    sleep 0.1
  done
  return 1
}

stop_pid() { # pid
  local pid=$1
  [ -n "$pid" ] || return 0
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  fi
}

machine_ticks() { # -> "busy total" over all CPUs
  awk '/^cpu /{t=0; for (i=2;i<=NF;i++) t+=$i; print t-$5-$6, t}' /proc/stat
}

tree_ticks() { # pid... -> CPU ticks of these processes and their children
  local p c t=0
  for p in "$@"; do
    [ -n "$p" ] || continue
    for c in "$p" $(pgrep -P "$p" || true); do
      [ -r "/proc/$c/stat" ] && t=$((t + $(awk '{print $14 + $15}' "/proc/$c/stat" 2>/dev/null || echo 0)))
    done
  done
  echo "$t"
}

wait_quiet() { # [max seconds, default QUIET_WAIT] -> the machine's busy % when it stopped waiting
  local waited=0 busy a b max=${1:-$QUIET_WAIT}
  while :; do
    a=$(machine_ticks); sleep 1; b=$(machine_ticks)
    busy=$(awk -v a="$a" -v b="$b" 'BEGIN{split(a,x," "); split(b,y," "); printf "%.0f", 100*(y[1]-x[1])/(y[2]-x[2])}')
    if [ "$busy" -le 10 ] || [ "$waited" -ge "$max" ]; then break; fi
    [ "$waited" = 0 ] && log "  machine ${busy}% busy before the run; waiting up to ${max}s for it to settle"
    waited=$((waited + 1))
  done
  [ "$busy" -le 10 ] || log "  WARNING: machine still ${busy}% busy; numbers will be skewed"
  echo "$busy"
}

median_line() { # lines (newline-separated) -> the line with the median rps
  grep . <<<"$1" | while read -r l; do echo "$(kv "$l" rps) $l"; done | sort -n \
    | awk '{a[NR]=$0} END{print a[int((NR+1)/2)]}' | cut -d' ' -f2-
}

json_list() { # lines (newline-separated) -> a JSON array of json_run (the script's own)
  local first=1 l
  printf '['
  while read -r l; do [ -n "$l" ] || continue; [ $first = 1 ] || printf ','; first=0; json_run "$l"; done <<<"$1"
  printf ']'
}
