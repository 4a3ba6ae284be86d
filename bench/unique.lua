-- wrk script for bench/traffic_ops.sh: like chat.lua, but every request carries a distinct
-- prompt (a counter), so a response cache in the path misses — and stores — every time.
--   BENCH_MODEL  logical model     BENCH_KEY  virtual key
local counter = 0
local model = os.getenv("BENCH_MODEL")
local key = os.getenv("BENCH_KEY") or ""

function request()
  counter = counter + 1
  local body = string.format(
    '{"model":"%s","temperature":0,"messages":[{"role":"user","content":"Hello from the Tollgate benchmark, request %d"}]}',
    model, counter)
  return wrk.format("POST", nil,
    {["Content-Type"] = "application/json", ["Authorization"] = "Bearer " .. key}, body)
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {"requests":%d,"duration_us":%d,"err_status":%d,"err_timeout":%d,' ..
    '"lat_p50_us":%d,"lat_p90_us":%d,"lat_p99_us":%d}\n',
    summary.requests, summary.duration, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99)))
end
