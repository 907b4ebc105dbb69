#!/usr/bin/env bash
# Gateway benchmark: authenticated JSON-RPC calls (wrk with ../shared/peers/rpc-bearer.lua,
# the same bearer token on every request) in one run, against four targets:
#
#   direct    the fast upstream itself: nginx's fixed JSON-RPC reply (run-nginx-proxy.sh
#             STATIC=1), no authentication
#   nginx     Debian's nginx proxying that upstream, no authentication at all
#   gateway   Mandate's gateway proxying that same upstream on an a2a route: every request's
#             token verified (signature, iss, aud, exp, typ, revocation), the route's scope
#             checked, the A2A operation read from the JSON-RPC body, and every decision
#             written to the audit trail
#   python    the Python validator peer (Starlette + PyJWT + PyJWKClient) checking the same
#             token against Mandate's issuer and JWKS, answering itself
#
# All three proxied/direct targets hit the SAME upstream (one nginx server block). The token
# is minted by this Mandate with client_credentials and accepted by both the gateway and
# the Python peer.
#
#   bench/gateway.sh                          # defaults: EdDSA, 32 connections, 10 s, 1 round
#   ROUNDS=3 bench/gateway.sh
#
# Targets (from the issue), all from the same run:
#   gateway rps >= 75% of nginx's rps (32 connections)
#   gateway p50 - direct p50 < 0.1 ms (1 connection)
#   gateway rps >= 20x the Python validator's rps (32 connections)
#
# Environment (all optional):
#   SHARED_DIR     ../shared next to the repository          (peers/, rpc-bearer.lua)
#   PEERS_HOME     where setup.sh installed the peers        (~/.cache/mandate-peers)
#   SIGNING_ALG    EdDSA | ES256 | RS256; also the Python peer's ALGS (EdDSA, the peer
#                  runner's default)
#   CONNECTIONS    wrk connections for the throughput runs   (32)
#   THREADS        wrk threads                               (2)
#   DURATION       measured wrk run                          (10s)
#   WARMUP         warm-up wrk run before each target        (3s)
#   ROUNDS         rounds over all targets; medians summarised, the throughput ratios
#                  round by round (1)
#   SKIP_BUILD     1: use the existing target/release/mandate (0)
#   MANDATE_BIN    a mandate binary to use instead (implies SKIP_BUILD=1). Either way the
#                  binary is copied first, so a rebuild elsewhere cannot swap it mid-run.
#   QUIET_WAIT     seconds to wait for other load to stop     (120)
#   UPSTREAM_PORT / NGINX_PORT / MANDATE_PORT / MANDATE_ADMIN_PORT / PYTHON_PORT
#                                                  (4031 / 4032 / 4120 / 4121 / 4020)
#   RESULTS_FILE   (/tmp/mandate-bench/gateway-<time>.json)
#
# Audit lag: gateway decisions are recorded without delaying the response, so under load the
# trail can fall behind. Right after each gateway run the script reads how many events the
# database holds and reports the backlog (decisions answered but not yet written), and
# Mandate's resident memory.
#
# Exit status: 0 when every measured run was valid (only 2xx answers, no socket errors, and
# the audit chain verified intact with at least one gateway decision per request wrk
# counted); 1 otherwise; 2 when setup failed. Targets are printed and recorded in the JSON,
# not part of the status.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
BENCH=gateway-bench
# shellcheck source=bench/lib.sh
. "$here/lib.sh"
root=$(git -C "$here" rev-parse --show-toplevel)
SHARED_DIR=${SHARED_DIR:-$root/../shared}
SHARED_DIR=$(cd "$SHARED_DIR" && pwd)
PEERS=$SHARED_DIR/peers
PEERS_HOME=${PEERS_HOME:-$HOME/.cache/mandate-peers}
export PEERS_HOME
SIGNING_ALG=${SIGNING_ALG:-EdDSA}
CONNECTIONS=${CONNECTIONS:-32}
THREADS=${THREADS:-2}
DURATION=${DURATION:-10s}
WARMUP=${WARMUP:-3s}
ROUNDS=${ROUNDS:-1}
QUIET_WAIT=${QUIET_WAIT:-120}
SKIP_BUILD=${SKIP_BUILD:-0}
if [ -n "${MANDATE_BIN:-}" ]; then SKIP_BUILD=1; else MANDATE_BIN=$root/target/release/mandate; fi
UPSTREAM_PORT=${UPSTREAM_PORT:-4031}
NGINX_PORT=${NGINX_PORT:-4032}
MANDATE_PORT=${MANDATE_PORT:-4120}
MANDATE_ADMIN_PORT=${MANDATE_ADMIN_PORT:-4121}
PYTHON_PORT=${PYTHON_PORT:-4020}
LUA=$PEERS/rpc-bearer.lua
TARGET_NGINX_SHARE=0.75   # gateway rps / nginx rps
TARGET_ADDED_P50_US=100   # gateway p50 - direct p50 at 1 connection
TARGET_PYTHON_RATIO=20    # gateway rps / python rps

CLIENT_ID=bench-agent
SCOPE=agent:execute
RESOURCE=https://agent.example.com   # the Python peer's default audience
ROUTE=/agents/bench


for tool in wrk curl cargo git nginx; do
  command -v "$tool" >/dev/null || die "$tool not found (apt-get install -y wrk nginx)"
done
[ -r "$LUA" ] || die "$LUA not found (set SHARED_DIR)"
[ -x "$PEERS_HOME/py/bin/uvicorn" ] || die "Python peer not installed: run $PEERS/setup.sh"
case $SIGNING_ALG in EdDSA|ES256|RS256) ;; *) die "SIGNING_ALG must be EdDSA, ES256 or RS256";; esac

work=$(mktemp -d /tmp/mandate-gw-bench.XXXXXX)
RESULTS_FILE=${RESULTS_FILE:-/tmp/mandate-bench/gateway-$(date -u +%Y%m%dT%H%M%SZ).json}
mkdir -p "$(dirname "$RESULTS_FILE")"
nginx_pid="" mandate_pid="" python_pid=""

cleanup() {
  stop_pid "$python_pid"; stop_pid "$mandate_pid"; stop_pid "$nginx_pid"
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM



# utime+stime of a process and its direct children (nginx master + workers), in ticks.

# Waits (up to QUIET_WAIT s) until the machine is nearly idle; prints the busy percentage.


# Events in the audit trail right now (read-only, beside the running server; WAL allows it).
audit_count() {
  "$PEERS_HOME/py/bin/python" -c "import sqlite3,sys; c=sqlite3.connect('file:'+sys.argv[1]+'?mode=ro', uri=True); print(c.execute('select count(*) from audit_events').fetchone()[0])" \
    "$mdir/data/mandate.db" 2>/dev/null || echo -1
}

# Runs wrk and prints one line of key=value results. CPU in cores over the run: nginx
# (master + workers: the upstream, and the proxy in the nginx case), mandate, python, wrk,
# and other (the rest of the machine's busy time, including interrupts).
run_wrk() { # tag url threads connections duration
  local tag=$1 url=$2 t=$3 c=$4 d=$5 out=$work/$1.wrk
  local idle_busy timer=() n0 n1 g0 g1 y0 y1 m0 m1
  idle_busy=$(wait_quiet)
  [ -x /usr/bin/time ] && timer=(/usr/bin/time -f "%U %S" -o "$out.time")
  n0=$(tree_ticks "$nginx_pid"); g0=$(tree_ticks "$mandate_pid"); y0=$(tree_ticks "$python_pid"); m0=$(machine_ticks)
  TOKEN=$TOKEN ${timer[@]+"${timer[@]}"} wrk -t"$t" -c"$c" -d"$d" --latency -s "$LUA" "$url" >"$out" 2>&1 \
    || { cat "$out" >&2; die "wrk failed"; }
  n1=$(tree_ticks "$nginx_pid"); g1=$(tree_ticks "$mandate_pid"); y1=$(tree_ticks "$python_pid"); m1=$(machine_ticks)
  local rps reqs non2xx p50 p99 sock secs hz
  hz=$(getconf CLK_TCK)
  rps=$(awk '/^Requests\/sec:/{print $2}' "$out")
  reqs=$(awk '/requests in/{print $1}' "$out")
  secs=$(awk '/requests in/{d=$4; sub(/,$/, "", d); m=1;
             if (d ~ /ms$/) m=0.001; else if (d ~ /m$/) m=60; else if (d ~ /h$/) m=3600;
             sub(/[a-z]+$/, "", d); print d*m}' "$out")
  non2xx=$(sed -n 's/.*non2xx=\([0-9]*\).*/\1/p' "$out")
  p50=$(sed -n 's/.*p50_us=\([0-9]*\).*/\1/p' "$out")
  p99=$(sed -n 's/.*p99_us=\([0-9]*\).*/\1/p' "$out")
  sock=$(awk '/Socket errors:/{gsub(/,/,""); print $4+$6+$8+$10}' "$out")
  [ -n "$rps" ] && [ -n "$p99" ] || { cat "$out" >&2; die "could not parse wrk output ($tag)"; }
  local cores busy busy_cores wrk_cores other_cores nx gw py
  cores() { awk -v a="$1" -v b="$2" -v hz="$hz" -v s="$secs" 'BEGIN{printf "%.2f", (b-a)/hz/s}'; }
  nx=$(cores "$n0" "$n1"); gw=$(cores "$g0" "$g1"); py=$(cores "$y0" "$y1")
  busy=$(awk -v a="$m0" -v b="$m1" 'BEGIN{split(a,x," "); split(b,y," "); printf "%.0f", 100*(y[1]-x[1])/(y[2]-x[2])}')
  busy_cores=$(awk -v a="$m0" -v b="$m1" -v hz="$hz" -v s="$secs" 'BEGIN{split(a,x," "); split(b,y," "); printf "%.2f", (y[1]-x[1])/hz/s}')
  if [ -s "$out.time" ]; then
    wrk_cores=$(awk -v s="$secs" 'END{printf "%.2f", ($1+$2)/s}' "$out.time")
    other_cores=$(awk -v b="$busy_cores" -v n="$nx" -v g="$gw" -v p="$py" -v w="$wrk_cores" 'BEGIN{o=b-n-g-p-w; if (o<0) o=0; printf "%.2f", o}')
  else
    wrk_cores=null other_cores=null
  fi
  echo "rps=$rps requests=$reqs non2xx=${non2xx:-0} socket_errors=${sock:-0} p50_us=$p50 p99_us=$p99" \
       "nginx_cores=$nx mandate_cores=$gw python_cores=$py wrk_cores=$wrk_cores other_cores=$other_cores" \
       "machine_busy_pct=$busy busy_before_pct=$idle_busy"
}

# One request by curl before any load: a 200 with the upstream's reply, or stop.
check_rpc() { # name url
  local body code
  body=$(curl -sS -w '\n%{http_code}' -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' \
    --data '{"jsonrpc":"2.0","id":1,"method":"message/send","params":{"message":{"role":"user","parts":[{"kind":"text","text":"hi"}],"messageId":"m1"}}}' \
    "$2") || die "$1: request to $2 failed"
  code=${body##*$'\n'}
  [ "$code" = 200 ] || die "$1: HTTP $code from $2: ${body%$'\n'*}"
  case ${body%$'\n'*} in *'"ok":true'*) ;; *) die "$1: unexpected body from $2: ${body%$'\n'*}";; esac
}

# ---------------------------------------------------------------------------------------

if [ "$SKIP_BUILD" != 1 ]; then
  log "cargo build --release -p mandate"
  (cd "$root" && cargo build --release -p mandate) >&2
fi
[ -x "$MANDATE_BIN" ] || die "$MANDATE_BIN missing"
cp "$MANDATE_BIN" "$work/mandate-bin"
MANDATE_BIN=$work/mandate-bin
for p in "$UPSTREAM_PORT" "$NGINX_PORT" "$MANDATE_PORT" "$MANDATE_ADMIN_PORT" "$PYTHON_PORT"; do
  port_free "$p" || die "port $p is in use"
done

nproc_=$(nproc)
cpu_model=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)
load_before=$(cut -d' ' -f1-3 /proc/loadavg)
started=$(date -u +%Y-%m-%dT%H:%M:%SZ)
commit=$(git -C "$root" rev-parse --short HEAD)
dirty=$(git -C "$root" status --porcelain --untracked-files=no -- crates Cargo.toml Cargo.lock | head -1)
nginx_version=$(nginx -v 2>&1 | sed 's/^nginx version: //')
wrk_version=$( (wrk -v 2>&1 || true) | head -1 | awk '{print $2}')
log "machine: $nproc_ x $cpu_model; load average $load_before; commit $commit${dirty:+ (+ local changes)}; $nginx_version"

# 1. The upstream and nginx in front of it: one nginx, two server blocks (the peers' script).
log "nginx: static upstream on 127.0.0.1:$UPSTREAM_PORT, proxy on 127.0.0.1:$NGINX_PORT"
nginx_pid=$(STATIC=1 UPSTREAM=$UPSTREAM_PORT LISTEN=$NGINX_PORT "$PEERS/run-nginx-proxy.sh") \
  || die "nginx did not start"
[ -n "$nginx_pid" ] && kill -0 "$nginx_pid" 2>/dev/null || die "nginx did not start"

# 2. Mandate: the issuer of the token, and the gateway route to the same upstream.
mdir=$work/mandate
mkdir -p "$mdir/data"
cat >"$mdir/mandate.toml" <<TOML
issuer = "http://127.0.0.1:$MANDATE_PORT"
listen = "127.0.0.1:$MANDATE_PORT"
data_dir = "$mdir/data"
log_format = "text"

[admin]
listen = "127.0.0.1:$MANDATE_ADMIN_PORT"

[tokens]
signing_alg = "$SIGNING_ALG"

[[resources]]
id = "$RESOURCE"
scopes = { "$SCOPE" = "Execute" }
access_token_ttl = "2h"

[[clients]]
client_id = "$CLIENT_ID"
grant_types = ["client_credentials"]
scopes = ["$SCOPE"]
resources = ["$RESOURCE"]
secret_env = "BENCH_SECRET"

[[gateway.routes]]
path = "$ROUTE"
upstream = "http://127.0.0.1:$UPSTREAM_PORT"
protocol = "a2a"
resource = "$RESOURCE"
scopes = ["$SCOPE"]
TOML
SECRET=$(head -c 20 /dev/urandom | od -An -tx1 | tr -d ' \n')
log "Mandate on 127.0.0.1:$MANDATE_PORT ($SIGNING_ALG), route $ROUTE -> 127.0.0.1:$UPSTREAM_PORT"
BENCH_SECRET=$SECRET RUST_LOG=warn \
  "$MANDATE_BIN" serve --config "$mdir/mandate.toml" >"$mdir/mandate.log" 2>&1 &
mandate_pid=$!
wait_http "http://127.0.0.1:$MANDATE_PORT/readyz" 30 || { cat "$mdir/mandate.log" >&2; die "Mandate did not become ready"; }

mint_token() {
  local body
  body=$(curl -sS -u "$CLIENT_ID:$SECRET" \
    -d "grant_type=client_credentials&scope=$SCOPE&resource=$RESOURCE" \
    "http://127.0.0.1:$MANDATE_PORT/token") || die "token request failed"
  sed -n 's/.*"access_token":"\([^"]*\)".*/\1/p' <<<"$body" | grep . || die "no access_token: $body"
}
TOKEN=$(mint_token)
minted=1

# 3. The Python validator, pointed at Mandate's issuer and JWKS.
log "Python validator on 127.0.0.1:$PYTHON_PORT (ISSUER=http://127.0.0.1:$MANDATE_PORT, AUDIENCE=$RESOURCE, ALGS=$SIGNING_ALG)"
python_pid=$(PORT=$PYTHON_PORT ISSUER=http://127.0.0.1:$MANDATE_PORT \
  JWKS_URL=http://127.0.0.1:$MANDATE_PORT/jwks.json AUDIENCE=$RESOURCE ALGS=$SIGNING_ALG \
  "$PEERS/run-python-validator.sh") || die "Python validator did not start"
for _ in $(seq 100); do port_free "$PYTHON_PORT" || break; sleep 0.1; done

declare -A url=(
  [direct]=http://127.0.0.1:$UPSTREAM_PORT/
  [nginx]=http://127.0.0.1:$NGINX_PORT/
  [gateway]=http://127.0.0.1:$MANDATE_PORT$ROUTE
  [python]=http://127.0.0.1:$PYTHON_PORT/
)
targets=(direct nginx gateway python)
c1_targets=(direct nginx gateway)
for t in "${targets[@]}"; do check_rpc "$t" "${url[$t]}"; done
# The gateway must refuse a request without a valid token, or it is not verifying anything.
code=$(curl -sS -o /dev/null -w '%{http_code}' -H 'Authorization: Bearer x.y.z' -H 'Content-Type: application/json' \
  --data '{"jsonrpc":"2.0","id":1,"method":"message/send","params":{}}' "${url[gateway]}")
[ "$code" = 401 ] || die "gateway answered $code to a bad token (expected 401)"
code=$(curl -sS -o /dev/null -w '%{http_code}' -H 'Authorization: Bearer x.y.z' -H 'Content-Type: application/json' \
  --data '{"jsonrpc":"2.0","id":1}' "${url[python]}")
[ "$code" = 401 ] || die "Python validator answered $code to a bad token (expected 401)"
gw_requests=2   # the check above and the refused one

declare -A lines
for round in $(seq "$ROUNDS"); do
  TOKEN=$(mint_token); minted=$((minted + 1))
  for t in "${targets[@]}"; do
    log "round $round/$ROUNDS: $t (${url[$t]})"
    l=$(run_wrk "$t-warm-$round" "${url[$t]}" "$THREADS" "$CONNECTIONS" "$WARMUP")
    [ "$t" = gateway ] && gw_requests=$((gw_requests + $(kv "$l" requests)))
    l=$(run_wrk "$t-$round" "${url[$t]}" "$THREADS" "$CONNECTIONS" "$DURATION")
    if [ "$t" = gateway ]; then
      gw_requests=$((gw_requests + $(kv "$l" requests)))
      n=$(audit_count)
      l+=" audit_backlog=$((gw_requests + minted - n)) mandate_rss_kb=$(awk '/VmRSS/{print $2}' "/proc/$mandate_pid/status")"
    fi
    log "  $t c$CONNECTIONS: $l"
    lines[$t]+="$l"$'\n'

  done
  for t in "${c1_targets[@]}"; do
    l=$(run_wrk "$t-c1-$round" "${url[$t]}" 1 1 "$DURATION")
    if [ "$t" = gateway ]; then
      gw_requests=$((gw_requests + $(kv "$l" requests)))
      n=$(audit_count)
      l+=" audit_backlog=$((gw_requests + minted - n)) mandate_rss_kb=$(awk '/VmRSS/{print $2}' "/proc/$mandate_pid/status")"
    fi
    log "  $t c1: $l"
    lines[$t-c1]+="$l"$'\n'

  done
done

# Every gateway decision must reach the audit trail. They are recorded without delaying the
# response, so give the writer a moment, then verify the chain and count.
expect=$((gw_requests + minted))
events=0
for _ in $(seq 30); do
  out=$(BENCH_SECRET=$SECRET "$MANDATE_BIN" --config "$mdir/mandate.toml" audit verify 2>&1) \
    || { echo "$out" >&2; die "audit verify failed"; }
  events=$(sed -n 's/.*intact: \([0-9]*\) events.*/\1/p' <<<"$out")
  [ "${events:-0}" -ge "$expect" ] && break
  sleep 1
done
audit_ok=$([ "${events:-0}" -ge "$expect" ] && echo 1 || echo 0)
log "audit chain intact: $events events; expected at least $expect ($gw_requests gateway requests counted by wrk + $minted tokens)"

# ---------------------------------------------------------------------------------------
valid=1 quiet=1 noisy_runs=0
declare -A M
for k in "${!lines[@]}"; do
  while read -r l; do
    [ -n "$l" ] || continue
    if [ "$(kv "$l" non2xx)" != 0 ] || [ "$(kv "$l" socket_errors)" != 0 ]; then valid=0; fi
    o=$(kv "$l" other_cores)
    if [ "$(kv "$l" busy_before_pct)" -gt 10 ] || { [ "$o" != null ] && awk -v o="$o" 'BEGIN{exit !(o > 0.25)}'; }; then
      quiet=0; noisy_runs=$((noisy_runs + 1))
    fi
  done <<<"${lines[$k]}"
  M[$k]=$(median_line "${lines[$k]}")
done
[ "$audit_ok" = 1 ] || valid=0

# The throughput ratios are taken round by round (each gateway run beside the nginx and
# Python runs of its own round, minutes apart at most), and their median is what is
# compared with the targets: on a shared VM the machine's speed drifts between rounds, and
# a ratio of medians taken separately could pair a fast round of one with a slow one of
# the other.
round_ratios() { # numerator target, denominator target, printf format -> one ratio per round
  paste -d' ' <(grep . <<<"${lines[$1]}") <(grep . <<<"${lines[$2]}") | while read -r l; do
    awk -v f="$3" -v a="$(sed -n 's/^rps=\([^ ]*\) .*/\1/p' <<<"$l")" \
        -v b="$(sed -n 's/.* rps=\([^ ]*\) .*/\1/p' <<<"$l" | tail -1)" 'BEGIN{printf f "\n", a/b}'
  done
}
median_of() { sort -n | awk '{a[NR]=$1} END{print a[int((NR+1)/2)]}'; }
nginx_shares=$(round_ratios gateway nginx "%.2f")
python_ratios=$(round_ratios gateway python "%.1f")
nginx_share=$(median_of <<<"$nginx_shares")
python_ratio=$(median_of <<<"$python_ratios")
added_p50=$(( $(kv "${M[gateway-c1]}" p50_us) - $(kv "${M[direct-c1]}" p50_us) ))
ok_share=$(awk -v r="$nginx_share" -v t="$TARGET_NGINX_SHARE" 'BEGIN{print (r >= t) ? "yes" : "no"}')
ok_added=$([ "$added_p50" -lt "$TARGET_ADDED_P50_US" ] && echo yes || echo no)
ok_python=$(awk -v r="$python_ratio" -v t="$TARGET_PYTHON_RATIO" 'BEGIN{print (r >= t) ? "yes" : "no"}')

row() { # name line
  local l=$2 mark=""
  if [ "$(kv "$l" non2xx)" != 0 ] || [ "$(kv "$l" socket_errors)" != 0 ]; then mark=INVALID; fi
  awk -v n="$1" -v r="$(kv "$l" rps)" -v a="$(kv "$l" p50_us)" -v b="$(kv "$l" p99_us)" \
      -v e="$(kv "$l" non2xx)" -v s="$(kv "$l" socket_errors)" -v nx="$(kv "$l" nginx_cores)" \
      -v g="$(kv "$l" mandate_cores)" -v p="$(kv "$l" python_cores)" -v w="$(kv "$l" wrk_cores)" \
      -v o="$(kv "$l" other_cores)" -v m="$mark" \
    'BEGIN{printf "%-22s %9.0f %8.3f %8.3f %7d %7d %6s %6s %6s %6s %6s %s\n", n, r, a/1000, b/1000, e, s, nx, g, p, w, o, m}'
}
{
  echo
  echo "authenticated JSON-RPC (rpc-bearer.lua), $SIGNING_ALG token, wrk -t$THREADS -c$CONNECTIONS -d$DURATION, $ROUNDS round(s) (median shown), $nproc_ x $cpu_model"
  printf "%-22s %9s %8s %8s %7s %7s %6s %6s %6s %6s %6s\n" "" "req/s" "p50 ms" "p99 ms" "non2xx" "sockerr" "nginx" "mandt" "python" "wrk" "other"
  for t in "${targets[@]}"; do row "$t (c$CONNECTIONS)" "${M[$t]}"; done
  for t in "${c1_targets[@]}"; do row "$t (c1)" "${M[$t-c1]}"; done
  echo
  echo "gateway / nginx throughput:   ${nginx_share}   (target >= $TARGET_NGINX_SHARE: $ok_share; rounds: $(echo $nginx_shares))"
  echo "gateway p50 - direct p50, c1: $(awk -v d="$added_p50" 'BEGIN{printf "%.3f", d/1000}') ms   (target < $(awk -v t="$TARGET_ADDED_P50_US" 'BEGIN{printf "%.1f", t/1000}') ms: $ok_added)"
  echo "gateway / python throughput:  ${python_ratio}x   (target >= ${TARGET_PYTHON_RATIO}x: $ok_python; rounds: $(echo $python_ratios))"
  us() { awk -v c="$(kv "${M[$1]}" "$2")" -v r="$(kv "${M[$1]}" rps)" 'BEGIN{printf "%.1f", c * 1e6 / r}'; }
  echo "CPU per request, c$CONNECTIONS: gateway run: Mandate $(us gateway mandate_cores) us, upstream $(us gateway nginx_cores) us, wrk $(us gateway wrk_cores) us;" \
       "nginx run: nginx (proxy + upstream) $(us nginx nginx_cores) us, wrk $(us nginx wrk_cores) us"
  for t in gateway gateway-c1; do
    echo "audit backlog right after the median $t run: $(kv "${M[$t]}" audit_backlog) decisions not yet written; Mandate RSS $(kv "${M[$t]}" mandate_rss_kb) kB"
  done
  echo "(CPU columns: cores used during the run by nginx (upstream + proxy), Mandate, the Python peer, wrk, and the rest of the machine)"
  [ "$quiet" = 1 ] || echo "NOISY: $noisy_runs run(s) shared the machine with other work (other > 0.25 cores or busy before the run); rerun when it is idle"
  [ "$audit_ok" = 1 ] || echo "INVALID: the audit trail holds $events events, fewer than the $expect gateway decisions and tokens counted"
  [ "$valid" = 1 ] || echo "INVALID: some runs had non-2xx answers or socket errors; these numbers do not count"
  echo "results: $RESULTS_FILE"
}

json_run() { # line
  local l=$1
  printf '{"requests_per_s":%s,"requests":%s,"p50_us":%s,"p99_us":%s,"non2xx":%s,"socket_errors":%s,"valid":%s,"nginx_cpu_cores":%s,"mandate_cpu_cores":%s,"python_cpu_cores":%s,"wrk_cpu_cores":%s,"other_cpu_cores":%s,"machine_busy_pct":%s,"busy_before_pct":%s,"audit_backlog_at_end":%s,"mandate_rss_kb":%s}' \
    "$(kv "$l" rps)" "$(kv "$l" requests)" "$(kv "$l" p50_us)" "$(kv "$l" p99_us)" "$(kv "$l" non2xx)" \
    "$(kv "$l" socket_errors)" "$([ "$(kv "$l" non2xx)" = 0 ] && [ "$(kv "$l" socket_errors)" = 0 ] && echo true || echo false)" \
    "$(kv "$l" nginx_cores)" "$(kv "$l" mandate_cores)" "$(kv "$l" python_cores)" "$(kv "$l" wrk_cores)" \
    "$(kv "$l" other_cores)" "$(kv "$l" machine_busy_pct)" "$(kv "$l" busy_before_pct)" \
    "$(v=$(kv "$l" audit_backlog); echo "${v:-null}")" "$(v=$(kv "$l" mandate_rss_kb); echo "${v:-null}")"
}
{
  printf '{\n'
  printf '  "benchmark": "gateway", "started": "%s", "commit": "%s", "local_changes": %s,\n' "$started" "$commit" "$([ -n "$dirty" ] && echo true || echo false)"
  printf '  "machine": {"nproc": %s, "cpu": "%s", "loadavg_before": "%s", "nginx": "%s", "wrk": "%s"},\n' "$nproc_" "$cpu_model" "$load_before" "$nginx_version" "$wrk_version"
  printf '  "load": {"tool": "wrk", "script": "rpc-bearer.lua", "threads": %s, "connections": %s, "duration": "%s", "warmup": "%s", "rounds": %s, "signing_alg": "%s"},\n' \
    "$THREADS" "$CONNECTIONS" "$DURATION" "$WARMUP" "$ROUNDS" "$SIGNING_ALG"
  printf '  "urls": {"direct": "%s", "nginx": "%s", "gateway": "%s", "python": "%s"},\n' "${url[direct]}" "${url[nginx]}" "${url[gateway]}" "${url[python]}"
  printf '  "median": {'
  first=1
  for k in direct nginx gateway python direct-c1 nginx-c1 gateway-c1; do
    [ $first = 1 ] || printf ', '; first=0
    printf '"%s": %s' "${k/-/_}" "$(json_run "${M[$k]}")"
  done
  printf '},\n'
  printf '  "gateway_over_nginx": %s, "gateway_over_nginx_rounds": [%s], "target_gateway_over_nginx": %s, "gateway_over_nginx_met": %s,\n' "$nginx_share" "$(echo $nginx_shares | tr ' ' ',')" "$TARGET_NGINX_SHARE" "$(tf "$ok_share")"
  printf '  "gateway_added_p50_us_c1": %s, "target_added_p50_us": %s, "added_p50_met": %s,\n' "$added_p50" "$TARGET_ADDED_P50_US" "$(tf "$ok_added")"
  printf '  "gateway_over_python": %s, "gateway_over_python_rounds": [%s], "target_gateway_over_python": %s, "gateway_over_python_met": %s,\n' "$python_ratio" "$(echo $python_ratios | tr ' ' ',')" "$TARGET_PYTHON_RATIO" "$(tf "$ok_python")"
  printf '  "valid": %s, "quiet": %s, "noisy_runs": %s,\n' "$(tf "$valid")" "$(tf "$quiet")" "$noisy_runs"
  printf '  "audit": {"events": %s, "expected_at_least": %s, "gateway_requests_counted": %s, "tokens_minted": %s, "ok": %s},\n' \
    "${events:-0}" "$expect" "$gw_requests" "$minted" "$(tf "$audit_ok")"
  printf '  "rounds": {'
  first=1
  for k in direct nginx gateway python direct-c1 nginx-c1 gateway-c1; do
    [ $first = 1 ] || printf ', '; first=0
    printf '"%s": %s' "${k/-/_}" "$(json_list "${lines[$k]}")"
  done
  printf '}\n}\n'
} >"$RESULTS_FILE"

[ "$valid" = 1 ]
