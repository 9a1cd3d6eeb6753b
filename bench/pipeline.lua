-- wrk script used by every bench scenario (bench/run.py).
-- Arguments after "--": depth method bodysize
--   depth    number of requests sent back to back per write (1 = plain keep-alive, >1 = pipelined)
--   method   GET (default) or POST
--   bodysize request body size in bytes for POST (0 = none)
-- At the end it prints one line "WRK_JSON {...}" with the totals, errors and latency percentiles.

local req

function init(args)
   local depth = tonumber(args[1] or "1")
   local method = args[2] or "GET"
   local bodysize = tonumber(args[3] or "0")
   local headers = {}
   local body = nil
   if bodysize > 0 then
      body = string.rep("x", bodysize)
      headers["Content-Type"] = "application/octet-stream"
   end
   local parts = {}
   for i = 1, depth do
      parts[i] = wrk.format(method, nil, headers, body)
   end
   req = table.concat(parts)
end

function request()
   return req
end

function done(summary, latency, requests)
   local e = summary.errors
   io.write(string.format(
      'WRK_JSON {"requests":%d,"duration_us":%d,"bytes":%d,' ..
      '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},' ..
      '"latency_us":{"p50":%d,"p90":%d,"p99":%d,"max":%d,"mean":%.1f}}\n',
      summary.requests, summary.duration, summary.bytes,
      e.connect, e.read, e.write, e.status, e.timeout,
      latency:percentile(50), latency:percentile(90), latency:percentile(99),
      latency.max, latency.mean))
end
