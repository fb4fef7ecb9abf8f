-- wrk script for the serving benchmark: POSTs the JSON body in $BENCH_BODY (a file) to every
-- request and, when done, prints one line `BENCH {json}` with requests/s, p50, p99 and errors.
local path = os.getenv("BENCH_BODY")
local f = assert(io.open(path, "rb"), "cannot open BENCH_BODY file " .. tostring(path))
wrk.method = "POST"
wrk.body = f:read("*a")
f:close()
wrk.headers["Content-Type"] = "application/json"

done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH {"requests":%d,"duration_us":%d,"rps":%.3f,"p50_us":%.1f,"p99_us":%.1f,' ..
    '"socket_errors":%d,"non_2xx":%d}\n',
    summary.requests, summary.duration, summary.requests / (summary.duration / 1e6),
    latency:percentile(50), latency:percentile(99),
    e.connect + e.read + e.write + e.timeout, e.status))
end
