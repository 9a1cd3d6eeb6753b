-- wrk script used by every bench scenario (bench/run.py). Its parameters come from the
-- environment, so that done() (which runs in wrk's main Lua state, where init() never ran)
-- sees them too:
--   BENCH_DEPTH        requests sent back to back in one write (1 = plain keep-alive,
--                      >1 = pipelined)
--   BENCH_METHOD       GET (default) or POST
--   BENCH_BODY         request body size in bytes for POST (0 = none)
--   BENCH_CLOSE        1 = send "Connection: close" on every request (wrk reconnects)
--   BENCH_CONNECTIONS  wrk's -c (to undo wrk's latency correction for pipelined runs)
--
-- The script defines no request() function, so wrk stays in its static mode (no Lua call per
-- request): wrk.init() asks wrk.format() once for the request bytes, and init() below replaces
-- wrk.format so that those bytes are `depth` copies of the request.
--
-- At the end it prints one line "WRK_JSON {...}" with the totals, the socket errors
-- (connect/read/write/timeout), the responses with a status >= 400 ("status": what wrk prints
-- as "Non-2xx or 3xx responses"), and latency percentiles in microseconds.

local depth = tonumber(os.getenv("BENCH_DEPTH") or "1")
local method = os.getenv("BENCH_METHOD") or "GET"
local bodysize = tonumber(os.getenv("BENCH_BODY") or "0")
local close = os.getenv("BENCH_CLOSE") == "1"
local connections = tonumber(os.getenv("BENCH_CONNECTIONS") or "1")

function init(args)
   local headers = {}
   local body = nil
   if bodysize > 0 then
      body = string.rep("x", bodysize)
      headers["Content-Type"] = "application/octet-stream"
   end
   if close then
      headers["Connection"] = "close"
   end
   local one = wrk.format(method, nil, headers, body)
   local req = string.rep(one, depth)
   wrk.format = function()
      return req
   end
end

-- wrk applies a coordinated-omission correction to the latency histogram before done() runs
-- (stats_correct in wrk.c): with e = duration / (requests / connections), every sample n >= 2e
-- adds its count at n-e, n-2e, ... while > e. That assumes one response per round trip; with
-- pipelining e is `depth` times too small, most synthetic samples land below the histogram's min
-- (which it does not update), and wrk's percentiles come out as 0. For pipelined runs this
-- undoes the correction exactly (orig[m] = f[m] - f[m+e] for m > e) and reports the measured
-- batch latencies. (Plain runs keep wrk's usual, corrected, percentiles.)
local function raw_percentiles(latency, e, ps)
   local n = #latency
   if n == 0 or n * (latency.max - latency.min) > 3e9 then
      return nil  -- too costly to walk (latency(i) scans from min every call)
   end
   local vals, f = {}, {}
   for i = 1, n do
      local v, c = latency(i)
      vals[i] = v
      f[v] = c
   end
   local orig, total = {}, 0
   for i = 1, n do
      local v = vals[i]
      local o = f[v]
      if e and v > e then
         o = o - (f[v + e] or 0)
      end
      orig[i] = o
      total = total + o
   end
   local out = {}
   for _, p in ipairs(ps) do
      local rank = math.floor(p / 100 * total + 0.5)
      if rank < 1 then rank = 1 end
      local acc, val = 0, vals[n]
      for i = 1, n do
         acc = acc + orig[i]
         if acc >= rank then
            val = vals[i]
            break
         end
      end
      out[#out + 1] = val
   end
   return out
end

function done(summary, latency, requests)
   local e = summary.errors
   local p50, p90, p99 = latency:percentile(50), latency:percentile(90), latency:percentile(99)
   local corrected = 1
   if #latency == 0 then
      -- No request/response round trip completed (e.g. a server that closes the connection
      -- after the first of 16 pipelined responses): no latency to report.
      p50, p90, p99, corrected = -1, -1, -1, 0
   elseif depth > 1 then
      local per_conn = math.floor(summary.requests / connections)
      local interval = nil
      if per_conn > 0 then
         interval = math.floor(summary.duration / per_conn)
      end
      local raw = raw_percentiles(latency, interval, {50, 90, 99})
      if raw then
         p50, p90, p99 = raw[1], raw[2], raw[3]
         corrected = 0
      end
   end
   io.write(string.format(
      'WRK_JSON {"requests":%d,"duration_us":%d,"bytes":%d,' ..
      '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},' ..
      '"latency_us":{"p50":%d,"p90":%d,"p99":%d,"max":%d,"co_corrected":%d}}\n',
      summary.requests, summary.duration, summary.bytes,
      e.connect, e.read, e.write, e.status, e.timeout,
      p50, p90, p99, latency.max, corrected))
end
