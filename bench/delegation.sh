#!/usr/bin/env bash
# Delegation benchmark: what token exchange, DPoP and Biscuits cost, measured end to end
# against one release `mandate serve` in one run.
#
# Token endpoint (wrk, 32 connections unless said otherwise):
#   cc                client_credentials (../shared/peers/token-cc.lua), for reference: the
#                     plain issuance bench/token-issuance.sh measures
#   exchange          RFC 8693 token exchange (bench/token-exchange.lua): bench-delegate
#                     exchanges the same subject token (a bench-agent JWT) for a narrower JWT
#                     each time. An exchange does not consume its subject token.
#   exchange-biscuit  the same exchange asking for a Biscuit (requested_token_type
#                     urn:mandate:params:oauth:token-type:biscuit)
#   exchange (c1)     the exchange at 1 connection, for its latency
#
# Gateway (wrk with bench/rpc-replay.lua, an a2a route in front of the same fast upstream
# bench/gateway.sh uses), at 32 connections and at 1 connection:
#   bearer            a plain bearer JWT (client_credentials): the baseline
#   biscuit           a Biscuit from token exchange, attenuated offline with two blocks
#                     (`mandate token attenuate`), sent as Bearer
#   dpop              a DPoP-bound JWT with a fresh proof on every request. wrk cannot sign,
#                     so the proofs are signed before each run by
#                     crates/mandate-client/examples/dpop_proofs.rs (the SDK's DpopKey) and
#                     replayed in order, each once. Their iat is the time they were signed;
#                     the gateway accepts proofs up to 300 s old.
# Every gateway variant goes through the same Lua request() path, so wrk does the same work
# for each; only the DPoP variant reads a proof from a file per request.
#
#   bench/delegation.sh                      # defaults: EdDSA, 32 connections, 10 s, 1 round
#   ROUNDS=3 bench/delegation.sh
#
# Targets (from issue 5), from the same run, at 1 connection (per round, against the bearer
# run of the same round; the median over rounds is judged):
#   DPoP:    gateway p50 (dpop)    - gateway p50 (bearer) < 0.1 ms
#   Biscuit: gateway p50 (biscuit) - gateway p50 (bearer) < 0.2 ms
# Also reported: Mandate CPU per request at 32 connections, and its difference from bearer.
#
# Environment (all optional):
#   SHARED_DIR     ../shared next to the repository          (peers/: nginx runner, token-cc.lua)
#   SIGNING_ALG    EdDSA | ES256 | RS256                     (EdDSA)
#   CONNECTIONS    wrk connections for the throughput runs   (32)
#   THREADS        wrk threads                               (2)
#   DURATION       measured wrk run                          (10s)
#   WARMUP         warm-up wrk run before each measured run  (3s)
#   ROUNDS         rounds over all runs; medians summarised  (1)
#   PROOF_MARGIN   DPoP proofs signed per run: this times the requests expected from the
#                  bearer run's rate (warm-up) or the DPoP warm-up's rate (measured run) (2)
#   SKIP_BUILD     1: use the existing binaries               (0)
#   MANDATE_BIN    a mandate binary to use instead (implies SKIP_BUILD=1)
#   PROOFS_BIN     a dpop_proofs example binary to use instead (implies SKIP_BUILD=1)
#                  Either way both binaries are copied first, so a rebuild elsewhere cannot
#                  swap them mid-run.
#   CARGO_TARGET_DIR  where cargo builds                     (the repository's target/)
#   QUIET_WAIT     seconds to wait for other load to stop     (120)
#   UPSTREAM_PORT / NGINX_PORT / MANDATE_PORT / MANDATE_ADMIN_PORT  (4041 / 4042 / 4130 / 4131)
#   RESULTS_FILE   (/tmp/mandate-bench/delegation-<time>.json)
#
# Exit status: 0 when every measured run was valid (only 2xx answers, no socket errors, no
# DPoP proof sent twice, and the audit chain verified intact with at least one event per
# gateway request and token wrk counted); 1 otherwise; 2 when setup failed. Targets are
# printed and recorded in the JSON, not part of the status.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
BENCH=delegation-bench
# shellcheck source=bench/lib.sh
. "$here/lib.sh"
root=$(git -C "$here" rev-parse --show-toplevel)
SHARED_DIR=${SHARED_DIR:-$root/../shared}
SHARED_DIR=$(cd "$SHARED_DIR" && pwd)
PEERS=$SHARED_DIR/peers
SIGNING_ALG=${SIGNING_ALG:-EdDSA}
CONNECTIONS=${CONNECTIONS:-32}
THREADS=${THREADS:-2}
DURATION=${DURATION:-10s}
WARMUP=${WARMUP:-3s}
ROUNDS=${ROUNDS:-1}
PROOF_MARGIN=${PROOF_MARGIN:-2}
QUIET_WAIT=${QUIET_WAIT:-120}
SKIP_BUILD=${SKIP_BUILD:-0}
target_dir=${CARGO_TARGET_DIR:-$root/target}
if [ -n "${MANDATE_BIN:-}" ] || [ -n "${PROOFS_BIN:-}" ]; then SKIP_BUILD=1; fi
MANDATE_BIN=${MANDATE_BIN:-$target_dir/release/mandate}
PROOFS_BIN=${PROOFS_BIN:-$target_dir/release/examples/dpop_proofs}
UPSTREAM_PORT=${UPSTREAM_PORT:-4041}
NGINX_PORT=${NGINX_PORT:-4042}
MANDATE_PORT=${MANDATE_PORT:-4130}
MANDATE_ADMIN_PORT=${MANDATE_ADMIN_PORT:-4131}
RPC_LUA=$here/rpc-replay.lua
EXCHANGE_LUA=$here/token-exchange.lua
CC_LUA=$PEERS/token-cc.lua
TARGET_DPOP_US=100      # dpop p50 - bearer p50 at 1 connection
TARGET_BISCUIT_US=200   # biscuit p50 - bearer p50 at 1 connection

CLIENT_ID=bench-agent
DELEGATE_ID=bench-delegate
SCOPE=agent:execute
RESOURCE=https://agent.example.com
ROUTE=/agents/bench
EXCHANGE_GRANT=urn:ietf:params:oauth:grant-type:token-exchange
BISCUIT_TYPE=urn:mandate:params:oauth:token-type:biscuit


for tool in wrk curl cargo git nginx python3; do
  command -v "$tool" >/dev/null || die "$tool not found (apt-get install -y wrk nginx)"
done
for f in "$RPC_LUA" "$EXCHANGE_LUA" "$CC_LUA" "$PEERS/run-nginx-proxy.sh"; do
  [ -r "$f" ] || die "$f not found (set SHARED_DIR)"
done
case $SIGNING_ALG in EdDSA|ES256|RS256) ;; *) die "SIGNING_ALG must be EdDSA, ES256 or RS256";; esac

work=$(mktemp -d /tmp/mandate-deleg-bench.XXXXXX)
RESULTS_FILE=${RESULTS_FILE:-/tmp/mandate-bench/delegation-$(date -u +%Y%m%dT%H%M%SZ).json}
mkdir -p "$(dirname "$RESULTS_FILE")"
nginx_pid="" mandate_pid=""

# ---------------------------------------------------------------------------------------
# Helpers, copied from bench/gateway.sh (process control, CPU accounting, quiet wait).

cleanup() {
  stop_pid "$mandate_pid"; stop_pid "$nginx_pid"
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM



# utime+stime of a process and its direct children (nginx master + workers), in ticks.

# Waits (up to $1 or QUIET_WAIT s) until the machine is nearly idle; prints the busy
# percentage.

secs_of() { awk -v d="$1" 'BEGIN{m=1; if (d ~ /ms$/) m=0.001; else if (d ~ /m$/) m=60; else if (d ~ /h$/) m=3600; sub(/[a-z]+$/, "", d); print d*m}'; }

# Events in the audit trail right now (read-only, beside the running server; WAL allows it).
audit_count() {
  python3 -c "import sqlite3,sys; c=sqlite3.connect('file:'+sys.argv[1]+'?mode=ro', uri=True); print(c.execute('select count(*) from audit_events').fetchone()[0])" \
    "$mdir/data/mandate.db" 2>/dev/null || echo -1
}

# Runs wrk with the environment in $wrk_env (an array of NAME=value) and prints one line of
# key=value results. CPU in cores over the run: nginx (the upstream), mandate, wrk, and other
# (the rest of the machine's busy time, including interrupts).
run_wrk() { # tag url threads connections duration lua
  local tag=$1 url=$2 t=$3 c=$4 d=$5 lua=$6 out=$work/$1.wrk
  local idle_busy timer=() n0 n1 g0 g1 m0 m1
  idle_busy=$(wait_quiet "$quiet_max")
  [ -x /usr/bin/time ] && timer=(/usr/bin/time -f "%U %S" -o "$out.time")
  n0=$(tree_ticks "$nginx_pid"); g0=$(tree_ticks "$mandate_pid"); m0=$(machine_ticks)
  env "${wrk_env[@]}" ${timer[@]+"${timer[@]}"} wrk -t"$t" -c"$c" -d"$d" --latency -s "$lua" "$url" >"$out" 2>&1 \
    || { cat "$out" >&2; die "wrk failed"; }
  n1=$(tree_ticks "$nginx_pid"); g1=$(tree_ticks "$mandate_pid"); m1=$(machine_ticks)
  local rps reqs non2xx p50 p99 sock secs hz exhausted
  hz=$(getconf CLK_TCK)
  rps=$(awk '/^Requests\/sec:/{print $2}' "$out")
  reqs=$(awk '/requests in/{print $1}' "$out")
  secs=$(awk '/requests in/{d=$4; sub(/,$/, "", d); m=1;
             if (d ~ /ms$/) m=0.001; else if (d ~ /m$/) m=60; else if (d ~ /h$/) m=3600;
             sub(/[a-z]+$/, "", d); print d*m}' "$out")
  non2xx=$(sed -n 's/.*non2xx=\([0-9]*\).*/\1/p' "$out")
  p50=$(sed -n 's/.*p50_us=\([0-9]*\).*/\1/p' "$out")
  p99=$(sed -n 's/.*p99_us=\([0-9]*\).*/\1/p' "$out")
  exhausted=$(sed -n 's/.*proofs_exhausted=\([0-9]*\).*/\1/p' "$out")
  sock=$(awk '/Socket errors:/{gsub(/,/,""); print $4+$6+$8+$10}' "$out")
  [ -n "$rps" ] && [ -n "$p99" ] || { cat "$out" >&2; die "could not parse wrk output ($tag)"; }
  local busy busy_cores wrk_cores other_cores nx gw cpu_us
  cores() { awk -v a="$1" -v b="$2" -v hz="$hz" -v s="$secs" 'BEGIN{printf "%.2f", (b-a)/hz/s}'; }
  nx=$(cores "$n0" "$n1"); gw=$(cores "$g0" "$g1")
  # Mandate CPU per request, µs (from ticks, not the rounded cores).
  cpu_us=$(awk -v a="$g0" -v b="$g1" -v hz="$hz" -v n="$reqs" 'BEGIN{printf "%.1f", (b-a)/hz/n*1e6}')
  busy=$(awk -v a="$m0" -v b="$m1" 'BEGIN{split(a,x," "); split(b,y," "); printf "%.0f", 100*(y[1]-x[1])/(y[2]-x[2])}')
  busy_cores=$(awk -v a="$m0" -v b="$m1" -v hz="$hz" -v s="$secs" 'BEGIN{split(a,x," "); split(b,y," "); printf "%.2f", (y[1]-x[1])/hz/s}')
  if [ -s "$out.time" ]; then
    wrk_cores=$(awk -v s="$secs" 'END{printf "%.2f", ($1+$2)/s}' "$out.time")
    other_cores=$(awk -v b="$busy_cores" -v n="$nx" -v g="$gw" -v w="$wrk_cores" 'BEGIN{o=b-n-g-w; if (o<0) o=0; printf "%.2f", o}')
  else
    wrk_cores=null other_cores=null
  fi
  echo "rps=$rps requests=$reqs non2xx=${non2xx:-0} socket_errors=${sock:-0} p50_us=$p50 p99_us=$p99" \
       "proofs_exhausted=${exhausted:-0} nginx_cores=$nx mandate_cores=$gw mandate_cpu_us_per_req=$cpu_us" \
       "wrk_cores=$wrk_cores other_cores=$other_cores machine_busy_pct=$busy busy_before_pct=$idle_busy"
}

# One request by curl before any load: a 200 with the upstream's reply, or stop.
check_rpc() { # name authorization [dpop-proof]
  local body code extra=()
  [ -n "${3:-}" ] && extra=(-H "DPoP: $3")
  body=$(curl -sS -w '\n%{http_code}' -H "Authorization: $2" ${extra[@]+"${extra[@]}"} -H 'Content-Type: application/json' \
    --data '{"jsonrpc":"2.0","id":1,"method":"message/send","params":{"message":{"role":"user","parts":[{"kind":"text","text":"hi"}],"messageId":"m1"}}}' \
    "$gw_url") || die "$1: request to $gw_url failed"
  code=${body##*$'\n'}
  [ "$code" = 200 ] || die "$1: HTTP $code from $gw_url: ${body%$'\n'*}"
  case ${body%$'\n'*} in *'"ok":true'*) ;; *) die "$1: unexpected body from $gw_url: ${body%$'\n'*}";; esac
}
status_of() { # authorization [dpop-proof] -> HTTP status of one gateway call
  local extra=()
  [ -n "${2:-}" ] && extra=(-H "DPoP: $2")
  curl -sS -o /dev/null -w '%{http_code}' -H "Authorization: $1" ${extra[@]+"${extra[@]}"} -H 'Content-Type: application/json' \
    --data '{"jsonrpc":"2.0","id":1,"method":"message/send","params":{}}' "$gw_url"
}

# ---------------------------------------------------------------------------------------

if [ "$SKIP_BUILD" != 1 ]; then
  log "cargo build --release -p mandate; cargo build --release -p mandate-client --example dpop_proofs"
  (cd "$root" && cargo build --release -p mandate && cargo build --release -p mandate-client --example dpop_proofs) >&2
fi
[ -x "$MANDATE_BIN" ] || die "$MANDATE_BIN missing"
[ -x "$PROOFS_BIN" ] || die "$PROOFS_BIN missing (cargo build --release -p mandate-client --example dpop_proofs)"
cp "$MANDATE_BIN" "$work/mandate-bin"; MANDATE_BIN=$work/mandate-bin
cp "$PROOFS_BIN" "$work/dpop-proofs-bin"; PROOFS_BIN=$work/dpop-proofs-bin
for p in "$UPSTREAM_PORT" "$NGINX_PORT" "$MANDATE_PORT" "$MANDATE_ADMIN_PORT"; do
  port_free "$p" || die "port $p is in use"
done

nproc_=$(nproc)
cpu_model=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)
load_before=$(cut -d' ' -f1-3 /proc/loadavg)
started=$(date -u +%Y-%m-%dT%H:%M:%SZ)
commit=$(git -C "$root" rev-parse --short HEAD)
dirty=$(git -C "$root" status --porcelain --untracked-files=no -- crates Cargo.toml Cargo.lock | head -1)
wrk_version=$( (wrk -v 2>&1 || true) | head -1 | awk '{print $2}')
log "machine: $nproc_ x $cpu_model; load average $load_before; commit $commit${dirty:+ (+ local changes)}"

# 1. The fast upstream (the proxy block of the runner is started too, but not measured).
log "nginx: static upstream on 127.0.0.1:$UPSTREAM_PORT"
nginx_pid=$(STATIC=1 UPSTREAM=$UPSTREAM_PORT LISTEN=$NGINX_PORT "$PEERS/run-nginx-proxy.sh") \
  || die "nginx did not start"
[ -n "$nginx_pid" ] && kill -0 "$nginx_pid" 2>/dev/null || die "nginx did not start"

# 2. Mandate: the issuer, the exchanging client, and the gateway route to the upstream.
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

[[clients]]
client_id = "$DELEGATE_ID"
grant_types = ["$EXCHANGE_GRANT"]
scopes = ["$SCOPE"]
resources = ["$RESOURCE"]
secret_env = "BENCH_DELEGATE_SECRET"
may_act_for = ["$CLIENT_ID"]

[[gateway.routes]]
path = "$ROUTE"
upstream = "http://127.0.0.1:$UPSTREAM_PORT"
protocol = "a2a"
resource = "$RESOURCE"
scopes = ["$SCOPE"]
TOML
SECRET=$(head -c 20 /dev/urandom | od -An -tx1 | tr -d ' \n')
DELEGATE_SECRET=$(head -c 20 /dev/urandom | od -An -tx1 | tr -d ' \n')
log "Mandate on 127.0.0.1:$MANDATE_PORT ($SIGNING_ALG), route $ROUTE -> 127.0.0.1:$UPSTREAM_PORT"
BENCH_SECRET=$SECRET BENCH_DELEGATE_SECRET=$DELEGATE_SECRET RUST_LOG=warn \
  "$MANDATE_BIN" serve --config "$mdir/mandate.toml" >"$mdir/mandate.log" 2>&1 &
mandate_pid=$!
base=http://127.0.0.1:$MANDATE_PORT
gw_url=$base$ROUTE
wait_http "$base/readyz" 30 || { cat "$mdir/mandate.log" >&2; die "Mandate did not become ready"; }

access_token_of() { sed -n 's/.*"access_token":"\([^"]*\)".*/\1/p' <<<"$1" | grep . || die "no access_token: $1"; }
mint_token() { # client_credentials for bench-agent
  access_token_of "$(curl -sS -u "$CLIENT_ID:$SECRET" \
    -d "grant_type=client_credentials&scope=$SCOPE&resource=$RESOURCE" "$base/token")"
}
exchange_token() { # subject requested_token_type
  access_token_of "$(curl -sS -u "$DELEGATE_ID:$DELEGATE_SECRET" \
    --data-urlencode "grant_type=$EXCHANGE_GRANT" --data-urlencode "subject_token=$1" \
    --data-urlencode "subject_token_type=urn:ietf:params:oauth:token-type:access_token" \
    --data-urlencode "requested_token_type=$2" --data-urlencode "resource=$RESOURCE" \
    --data-urlencode "scope=$SCOPE" "$base/token")"
}
# A Biscuit from an exchange, narrowed offline by two blocks, as a holder would:
#   block 1: only requests needing at most agent:execute, only at this resource
#   block 2: only for the next hour, only the A2A SendMessage operation
biscuit_token() { # subject
  local b
  b=$(exchange_token "$1" "$BISCUIT_TYPE")
  b=$("$MANDATE_BIN" token attenuate --scope "$SCOPE" --resource "$RESOURCE" "$b") || die "attenuate failed"
  b=$("$MANDATE_BIN" token attenuate --expires 1h --check 'check if operation("SendMessage");' "$b") \
    || die "attenuate failed"
  echo "$b"
}
# DPoP: a bound token and COUNT proofs for the gateway URL, split over THREADS files.
# Sets DPOP_AUTH ("DPoP <token>") and writes $work/proofs-<tag>.<n>.
make_proofs() { # tag count
  DPOP_AUTH=$(TOKEN_URL=$base/token CLIENT_ID=$CLIENT_ID CLIENT_SECRET=$SECRET RESOURCE=$RESOURCE \
    SCOPE=$SCOPE HTU=$gw_url COUNT=$2 FILES=$THREADS OUT=$work/proofs-$1 "$PROOFS_BIN") \
    || die "dpop_proofs failed"
  minted=$((minted + 1))
}
proof_count() { # rps seconds -> proofs to sign
  awk -v r="$1" -v s="$2" -v m="$PROOF_MARGIN" 'BEGIN{n=int(r*s*m)+1000; if (n<5000) n=5000; print n}'
}

SUBJECT=$(mint_token)
minted=1
BASIC=$(printf '%s:%s' "$DELEGATE_ID" "$DELEGATE_SECRET" | base64 -w0)

# 3. Sanity checks: each variant is allowed once by curl, and a refusal is a refusal.
BISCUIT=$(biscuit_token "$SUBJECT"); minted=$((minted + 1))
make_proofs check 4
first_proof=$(head -1 "$work/proofs-check.0")
check_rpc bearer "Bearer $SUBJECT"
check_rpc biscuit "Bearer $BISCUIT"
check_rpc dpop "$DPOP_AUTH" "$first_proof"
code=$(status_of "$DPOP_AUTH" "$first_proof")
[ "$code" = 401 ] || die "gateway answered $code to a replayed DPoP proof (expected 401)"
code=$(status_of "Bearer ${DPOP_AUTH#DPoP }")
[ "$code" = 401 ] || die "gateway answered $code to a DPoP-bound token sent as Bearer (expected 401)"
code=$(status_of "Bearer x.y.z")
[ "$code" = 401 ] || die "gateway answered $code to a bad token (expected 401)"
# The Biscuit's second block allows only SendMessage: another operation must be refused.
code=$(curl -sS -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $BISCUIT" -H 'Content-Type: application/json' \
  --data '{"jsonrpc":"2.0","id":1,"method":"tasks/cancel","params":{"id":"t1"}}' "$gw_url")
[ "$code" = 403 ] || die "gateway answered $code to a call the Biscuit's blocks forbid (expected 403)"
gw_requests=7   # the requests above
exchanged=$(exchange_token "$SUBJECT" urn:ietf:params:oauth:token-type:access_token)
[ -n "$exchanged" ] || die "token exchange failed"
token_requests=1   # that exchange; the token requests counted by wrk are added below

declare -A url=(
  [cc]=$base/token [exchange]=$base/token [exchange-biscuit]=$base/token
  [bearer]=$gw_url [biscuit]=$gw_url [dpop]=$gw_url
)
token_runs=(cc exchange exchange-biscuit)
gw_runs=(bearer biscuit dpop)
dur_s=$(secs_of "$DURATION"); warm_s=$(secs_of "$WARMUP")

# Sets wrk_env and lua for one run.
prepare() { # run phase(warm|main) connections
  local run=$1 phase=$2 c=$3 n secs rps from
  quiet_max=$QUIET_WAIT
  case $run in
    cc) lua=$CC_LUA; wrk_env=(CLIENT_ID="$CLIENT_ID" CLIENT_SECRET="$SECRET" SCOPE="$SCOPE" RESOURCE="$RESOURCE") ;;
    exchange) lua=$EXCHANGE_LUA; wrk_env=(BASIC="$BASIC" SUBJECT_TOKEN="$SUBJECT" RESOURCE="$RESOURCE" SCOPE="$SCOPE") ;;
    exchange-biscuit) lua=$EXCHANGE_LUA; wrk_env=(BASIC="$BASIC" SUBJECT_TOKEN="$SUBJECT" RESOURCE="$RESOURCE" SCOPE="$SCOPE" REQUESTED="$BISCUIT_TYPE") ;;
    bearer) lua=$RPC_LUA; wrk_env=(AUTHORIZATION="Bearer $SUBJECT") ;;
    biscuit) lua=$RPC_LUA; wrk_env=(AUTHORIZATION="Bearer $BISCUIT") ;;
    dpop)
      lua=$RPC_LUA
      # Enough proofs for the warm-up at the bearer run's rate, then for the measured run
      # at the warm-up's rate, with a margin; and for the measured run never fewer than
      # 1.2 x the bearer run's rate (a warm-up can start slow, and DPoP cannot outpace
      # bearer). Running out makes the run invalid.
      if [ "$phase" = warm ]; then
        secs=$warm_s; rps=$(kv "$last_bearer" rps); from="the bearer run's"
      else
        secs=$dur_s
        rps=$(awk -v a="$(kv "$last_warm" rps)" -v b="$(kv "$last_bearer" rps)" -v m="$PROOF_MARGIN" \
          'BEGIN{b = b * 1.2 / m; print (a > b) ? a : b}')
        from="the DPoP warm-up's (or 1.2/$PROOF_MARGIN x the bearer run's)"
      fi
      n=$(proof_count "$rps" "$secs")
      rm -f "$work"/proofs-*
      # Proofs age from their signing: wait for a quiet machine first, and only briefly
      # after signing, so that none is near the gateway's 300 s limit when it is sent.
      wait_quiet >/dev/null
      quiet_max=30
      log "  signing $n DPoP proofs ($PROOF_MARGIN x $from $rps req/s over ${secs}s)"
      make_proofs "$phase" "$n"
      wrk_env=(AUTHORIZATION="$DPOP_AUTH" PROOFS="$work/proofs-$phase")
      ;;
  esac
}

declare -A lines
count_run() { # run line
  case $1 in
    cc|exchange|exchange-biscuit) token_requests=$((token_requests + $(kv "$2" requests))) ;;
    *) gw_requests=$((gw_requests + $(kv "$2" requests))) ;;
  esac
}
measure() { # run connections threads key
  local run=$1 c=$2 t=$3 key=$4 l
  log "round $round/$ROUNDS: $key (${url[$run]})"
  prepare "$run" warm "$c"
  l=$(run_wrk "$key-warm-$round" "${url[$run]}" "$t" "$c" "$WARMUP" "$lua")
  count_run "$run" "$l"
  last_warm=$l
  [ "$run" = bearer ] && last_bearer=$l
  prepare "$run" main "$c"
  l=$(run_wrk "$key-$round" "${url[$run]}" "$t" "$c" "$DURATION" "$lua")
  count_run "$run" "$l"
  [ "$run" = bearer ] && last_bearer=$l
  case $run in
    cc|exchange|exchange-biscuit) ;;
    *) l+=" audit_backlog=$((gw_requests + token_requests + minted - $(audit_count))) mandate_rss_kb=$(awk '/VmRSS/{print $2}' "/proc/$mandate_pid/status")" ;;
  esac
  rm -f "$work"/proofs-*
  log "  $key: $l"
  lines[$key]+="$l"$'\n'
}

for round in $(seq "$ROUNDS"); do
  if [ "$round" -gt 1 ]; then
    SUBJECT=$(mint_token); BISCUIT=$(biscuit_token "$SUBJECT"); minted=$((minted + 2))
  fi
  for r in "${token_runs[@]}"; do measure "$r" "$CONNECTIONS" "$THREADS" "$r"; done
  measure exchange 1 1 exchange-c1
  # The bearer run comes first: the DPoP runs sign proofs for what it reached.
  for r in "${gw_runs[@]}"; do measure "$r" "$CONNECTIONS" "$THREADS" "$r"; done
  for r in "${gw_runs[@]}"; do measure "$r" 1 1 "$r-c1"; done
done

# Every token and every gateway decision must reach the audit trail. Decisions are recorded
# without delaying the response, so give the writer a moment, then verify the chain.
expect=$((gw_requests + token_requests + minted))
events=0
for _ in $(seq 30); do
  out=$(BENCH_SECRET=$SECRET BENCH_DELEGATE_SECRET=$DELEGATE_SECRET "$MANDATE_BIN" --config "$mdir/mandate.toml" audit verify 2>&1) \
    || { echo "$out" >&2; die "audit verify failed"; }
  events=$(sed -n 's/.*intact: \([0-9]*\) events.*/\1/p' <<<"$out")
  [ "${events:-0}" -ge "$expect" ] && break
  sleep 1
done
audit_ok=$([ "${events:-0}" -ge "$expect" ] && echo 1 || echo 0)
log "audit chain intact: $events events; expected at least $expect ($gw_requests gateway requests + $token_requests token requests counted + $minted tokens minted by the script)"

# ---------------------------------------------------------------------------------------
keys=(cc exchange exchange-biscuit exchange-c1 bearer biscuit dpop bearer-c1 biscuit-c1 dpop-c1)
valid=1 quiet=1 noisy_runs=0
declare -A M
for k in "${keys[@]}"; do
  while read -r l; do
    [ -n "$l" ] || continue
    if [ "$(kv "$l" non2xx)" != 0 ] || [ "$(kv "$l" socket_errors)" != 0 ] || [ "$(kv "$l" proofs_exhausted)" != 0 ]; then valid=0; fi
    o=$(kv "$l" other_cores)
    if [ "$(kv "$l" busy_before_pct)" -gt 10 ] || { [ "$o" != null ] && awk -v o="$o" 'BEGIN{exit !(o > 0.25)}'; }; then
      quiet=0; noisy_runs=$((noisy_runs + 1))
    fi
  done <<<"${lines[$k]}"
  M[$k]=$(median_line "${lines[$k]}")
done
[ "$audit_ok" = 1 ] || valid=0

# Added latency: per round, the variant's p50 at 1 connection minus the bearer run's p50
# just before it in the same round; the median over rounds is judged against the target.
p50s() { grep . <<<"${lines[$1]}" | sed -n 's/.*p50_us=\([0-9]*\).*/\1/p'; }
added_per_round() { paste -d' ' <(p50s "$1-c1") <(p50s bearer-c1) | awk '{printf "%s%d", (NR>1?",":""), $1-$2}'; }
median_of() { tr ',' '\n' <<<"$1" | sort -n | awk '{a[NR]=$0} END{print a[int((NR+1)/2)]}'; }
dpop_rounds=$(added_per_round dpop); biscuit_rounds=$(added_per_round biscuit)
added_dpop=$(median_of "$dpop_rounds")
added_biscuit=$(median_of "$biscuit_rounds")
ok_dpop=$([ "$added_dpop" -lt "$TARGET_DPOP_US" ] && echo yes || echo no)
ok_biscuit=$([ "$added_biscuit" -lt "$TARGET_BISCUIT_US" ] && echo yes || echo no)
cpu_added() { awk -v a="$(kv "${M[$1]}" mandate_cpu_us_per_req)" -v b="$(kv "${M[bearer]}" mandate_cpu_us_per_req)" 'BEGIN{printf "%.1f", a-b}'; }
rps_ratio() { awk -v a="$(kv "${M[$1]}" rps)" -v b="$(kv "${M[$2]}" rps)" 'BEGIN{printf "%.2f", a/b}'; }

row() { # name line
  local l=$2 mark=""
  if [ "$(kv "$l" non2xx)" != 0 ] || [ "$(kv "$l" socket_errors)" != 0 ] || [ "$(kv "$l" proofs_exhausted)" != 0 ]; then mark=INVALID; fi
  awk -v n="$1" -v r="$(kv "$l" rps)" -v a="$(kv "$l" p50_us)" -v b="$(kv "$l" p99_us)" \
      -v e="$(kv "$l" non2xx)" -v s="$(kv "$l" socket_errors)" -v nx="$(kv "$l" nginx_cores)" \
      -v g="$(kv "$l" mandate_cores)" -v u="$(kv "$l" mandate_cpu_us_per_req)" -v w="$(kv "$l" wrk_cores)" \
      -v o="$(kv "$l" other_cores)" -v m="$mark" \
    'BEGIN{printf "%-26s %9.0f %8.3f %8.3f %7d %7d %6s %6s %7s %6s %6s %s\n", n, r, a/1000, b/1000, e, s, nx, g, u, w, o, m}'
}
{
  echo
  echo "delegation: $SIGNING_ALG, wrk -t$THREADS -c$CONNECTIONS -d$DURATION (c1: -t1 -c1), $ROUNDS round(s) (median shown), $nproc_ x $cpu_model"
  printf "%-26s %9s %8s %8s %7s %7s %6s %6s %7s %6s %6s\n" "" "req/s" "p50 ms" "p99 ms" "non2xx" "sockerr" "nginx" "mandt" "µs/req" "wrk" "other"
  for k in cc exchange exchange-biscuit; do row "/token $k (c$CONNECTIONS)" "${M[$k]}"; done
  row "/token exchange (c1)" "${M[exchange-c1]}"
  for k in bearer biscuit dpop; do row "gateway $k (c$CONNECTIONS)" "${M[$k]}"; done
  for k in bearer biscuit dpop; do row "gateway $k (c1)" "${M[$k-c1]}"; done
  echo
  echo "exchange / client_credentials throughput: $(rps_ratio exchange cc)   (Biscuit exchange: $(rps_ratio exchange-biscuit cc))"
  echo "added p50 at 1 connection, per round (µs): DPoP $dpop_rounds; Biscuit $biscuit_rounds"
  echo "DPoP    added p50, c1: $(awk -v d="$added_dpop" 'BEGIN{printf "%.3f", d/1000}') ms   (target < $(awk -v t="$TARGET_DPOP_US" 'BEGIN{printf "%.1f", t/1000}') ms: $ok_dpop)   added CPU/request, c$CONNECTIONS: $(cpu_added dpop) µs   throughput vs bearer: $(rps_ratio dpop bearer)"
  echo "Biscuit added p50, c1: $(awk -v d="$added_biscuit" 'BEGIN{printf "%.3f", d/1000}') ms   (target < $(awk -v t="$TARGET_BISCUIT_US" 'BEGIN{printf "%.1f", t/1000}') ms: $ok_biscuit)   added CPU/request, c$CONNECTIONS: $(cpu_added biscuit) µs   throughput vs bearer: $(rps_ratio biscuit bearer)"
  for k in bearer biscuit dpop; do
    echo "audit backlog right after the median gateway $k run: $(kv "${M[$k]}" audit_backlog) events not yet written; Mandate RSS $(kv "${M[$k]}" mandate_rss_kb) kB"
  done
  echo "(CPU columns: cores used during the run by nginx (the upstream), Mandate, wrk, and the rest of the machine; µs/req is Mandate's CPU per request)"
  [ "$quiet" = 1 ] || echo "NOISY: $noisy_runs run(s) shared the machine with other work (other > 0.25 cores or busy before the run); rerun when it is idle"
  [ "$audit_ok" = 1 ] || echo "INVALID: the audit trail holds $events events, fewer than the $expect decisions and tokens counted"
  [ "$valid" = 1 ] || echo "INVALID: some runs had non-2xx answers, socket errors or ran out of DPoP proofs; these numbers do not count"
  echo "results: $RESULTS_FILE"
}

json_run() { # line
  local l=$1
  printf '{"requests_per_s":%s,"requests":%s,"p50_us":%s,"p99_us":%s,"non2xx":%s,"socket_errors":%s,"proofs_exhausted":%s,"valid":%s,"nginx_cpu_cores":%s,"mandate_cpu_cores":%s,"mandate_cpu_us_per_request":%s,"wrk_cpu_cores":%s,"other_cpu_cores":%s,"machine_busy_pct":%s,"busy_before_pct":%s,"audit_backlog_at_end":%s,"mandate_rss_kb":%s}' \
    "$(kv "$l" rps)" "$(kv "$l" requests)" "$(kv "$l" p50_us)" "$(kv "$l" p99_us)" "$(kv "$l" non2xx)" \
    "$(kv "$l" socket_errors)" "$(kv "$l" proofs_exhausted)" \
    "$([ "$(kv "$l" non2xx)" = 0 ] && [ "$(kv "$l" socket_errors)" = 0 ] && [ "$(kv "$l" proofs_exhausted)" = 0 ] && echo true || echo false)" \
    "$(kv "$l" nginx_cores)" "$(kv "$l" mandate_cores)" "$(kv "$l" mandate_cpu_us_per_req)" "$(kv "$l" wrk_cores)" \
    "$(kv "$l" other_cores)" "$(kv "$l" machine_busy_pct)" "$(kv "$l" busy_before_pct)" \
    "$(v=$(kv "$l" audit_backlog); echo "${v:-null}")" "$(v=$(kv "$l" mandate_rss_kb); echo "${v:-null}")"
}
{
  printf '{\n'
  printf '  "benchmark": "delegation", "started": "%s", "commit": "%s", "local_changes": %s,\n' "$started" "$commit" "$([ -n "$dirty" ] && echo true || echo false)"
  printf '  "machine": {"nproc": %s, "cpu": "%s", "loadavg_before": "%s", "wrk": "%s"},\n' "$nproc_" "$cpu_model" "$load_before" "$wrk_version"
  printf '  "load": {"tool": "wrk", "scripts": {"token": "token-cc.lua, bench/token-exchange.lua", "gateway": "bench/rpc-replay.lua"}, "threads": %s, "connections": %s, "duration": "%s", "warmup": "%s", "rounds": %s, "signing_alg": "%s", "proof_margin": %s},\n' \
    "$THREADS" "$CONNECTIONS" "$DURATION" "$WARMUP" "$ROUNDS" "$SIGNING_ALG" "$PROOF_MARGIN"
  printf '  "urls": {"token": "%s", "gateway": "%s"},\n' "$base/token" "$gw_url"
  printf '  "median": {'
  first=1
  for k in "${keys[@]}"; do
    [ $first = 1 ] || printf ', '; first=0
    printf '"%s": %s' "${k//-/_}" "$(json_run "${M[$k]}")"
  done
  printf '},\n'
  printf '  "exchange_over_cc": %s, "biscuit_exchange_over_cc": %s,\n' "$(rps_ratio exchange cc)" "$(rps_ratio exchange-biscuit cc)"
  printf '  "dpop_added_p50_us_c1_per_round": [%s], "biscuit_added_p50_us_c1_per_round": [%s],\n' "$dpop_rounds" "$biscuit_rounds"
  printf '  "dpop_added_p50_us_c1": %s, "target_dpop_added_us": %s, "dpop_met": %s, "dpop_added_cpu_us_per_request": %s, "dpop_over_bearer_rps": %s,\n' \
    "$added_dpop" "$TARGET_DPOP_US" "$(tf "$ok_dpop")" "$(cpu_added dpop)" "$(rps_ratio dpop bearer)"
  printf '  "biscuit_added_p50_us_c1": %s, "target_biscuit_added_us": %s, "biscuit_met": %s, "biscuit_added_cpu_us_per_request": %s, "biscuit_over_bearer_rps": %s,\n' \
    "$added_biscuit" "$TARGET_BISCUIT_US" "$(tf "$ok_biscuit")" "$(cpu_added biscuit)" "$(rps_ratio biscuit bearer)"
  printf '  "valid": %s, "quiet": %s, "noisy_runs": %s,\n' "$(tf "$valid")" "$(tf "$quiet")" "$noisy_runs"
  printf '  "audit": {"events": %s, "expected_at_least": %s, "gateway_requests_counted": %s, "token_requests_counted": %s, "tokens_minted": %s, "ok": %s},\n' \
    "${events:-0}" "$expect" "$gw_requests" "$token_requests" "$minted" "$(tf "$audit_ok")"
  printf '  "rounds": {'
  first=1
  for k in "${keys[@]}"; do
    [ $first = 1 ] || printf ', '; first=0
    printf '"%s": %s' "${k//-/_}" "$(json_list "${lines[$k]}")"
  done
  printf '}\n}\n'
} >"$RESULTS_FILE"

[ "$valid" = 1 ]
