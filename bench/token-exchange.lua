-- wrk script for bench/delegation.sh: an RFC 8693 token exchange at /token, the same
-- subject token every time (an exchange does not consume it), client_secret_basic.
--
--   BASIC          base64 of "client_id:secret" of the exchanging client
--   SUBJECT_TOKEN  the access token to exchange
--   RESOURCE       the audience asked for
--   SCOPE          the scope asked for
--   REQUESTED      requested_token_type (default: an access token, i.e. a JWT)
local requested = os.getenv("REQUESTED") or "urn:ietf:params:oauth:token-type:access_token"
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"
wrk.headers["Authorization"] = "Basic " .. os.getenv("BASIC")
wrk.body = "grant_type=urn:ietf:params:oauth:grant-type:token-exchange"
  .. "&subject_token=" .. os.getenv("SUBJECT_TOKEN")
  .. "&subject_token_type=urn:ietf:params:oauth:token-type:access_token"
  .. "&requested_token_type=" .. requested
  .. "&resource=" .. os.getenv("RESOURCE")
  .. "&scope=" .. os.getenv("SCOPE")
done = function(summary, latency, requests)
  io.write(string.format("non2xx=%d p50_us=%d p99_us=%d\n", summary.errors.status, latency:percentile(50), latency:percentile(99)))
end
