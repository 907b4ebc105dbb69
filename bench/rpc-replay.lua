-- wrk script for bench/delegation.sh: the same authenticated JSON-RPC POST as
-- ../shared/peers/rpc-bearer.lua (A2A message/send), built per request by request(), so
-- that every gateway variant (bearer JWT, Biscuit, DPoP) costs wrk the same work.
--
--   AUTHORIZATION  the whole Authorization value ("Bearer <token>" or "DPoP <token>")
--   PROOFS         optional: a path prefix; thread n reads DPoP proofs from "<PROOFS>.<n>",
--                  one per line, and sends the next one with each request. No proof is
--                  sent twice. A thread that runs out resends its last proof: the gateway
--                  refuses it as a replay (a non-2xx answer, so the run is invalid), and
--                  done() prints proofs_exhausted=<requests without a fresh proof>.
local threads = {}

function setup(thread)
  thread:set("id", #threads)
  table.insert(threads, thread)
end

local body = '{"jsonrpc":"2.0","id":1,"method":"message/send","params":{"message":{"role":"user","parts":[{"kind":"text","text":"hi"}],"messageId":"m1"}}}'
local headers = {}
local proofs = nil
local last = nil
exhausted = 0

function init(args)
  headers["Content-Type"] = "application/json"
  headers["Authorization"] = os.getenv("AUTHORIZATION")
  local prefix = os.getenv("PROOFS")
  if prefix and prefix ~= "" then
    proofs = assert(io.open(prefix .. "." .. id, "r"))
  end
end

function request()
  if proofs then
    local p = proofs:read("*l")
    if p then last = p else exhausted = exhausted + 1 end
    headers["DPoP"] = last
  end
  return wrk.format("POST", nil, headers, body)
end

done = function(summary, latency, requests)
  local out = 0
  for _, t in ipairs(threads) do out = out + (tonumber(t:get("exhausted")) or 0) end
  io.write(string.format("non2xx=%d p50_us=%d p99_us=%d proofs_exhausted=%d\n",
    summary.errors.status, latency:percentile(50), latency:percentile(99), out))
end
