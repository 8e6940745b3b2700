-- wrk script: POST pre-generated WeChat pushes to /wechat/callback.
--
--   wrk -t2 -c32 -d20s -s reverse_query.lua http://127.0.0.1:18080 -- PREFIX [cycle]
--
-- Thread n reads PREFIX.n (written by `cargo run --example reverse_query_load -- requests`),
-- one request per line as QUERY<TAB>BODY, lazily, so a large file costs no memory. Each line
-- is sent once. Without `cycle` the run is meant to be all-fresh: running out of lines wraps
-- around (those would be replays) and is reported as `wraps=N`, which the driver treats as a
-- failed run. With `cycle` wrapping is the point (the replay measurement).
--
-- done() prints one machine-readable line starting with RESULT.

local threads = {}
local counter = 1

function setup(thread)
   thread:set("id", counter)
   table.insert(threads, thread)
   counter = counter + 1
end

function init(args)
   local prefix = args[1] or error("usage: ... -- PREFIX [cycle]")
   path = prefix .. "." .. id
   file = assert(io.open(path, "r"))
   sent, wraps = 0, 0
   headers = { ["Content-Type"] = "application/json" }
end

function request()
   local line = file:read("*l")
   if line == nil then
      wraps = wraps + 1
      file:seek("set", 0)
      line = assert(file:read("*l"), "empty request file " .. path)
   end
   sent = sent + 1
   local tab = line:find("\t", 1, true)
   return wrk.format("POST", "/wechat/callback?" .. line:sub(1, tab - 1), headers, line:sub(tab + 1))
end

function done(summary, latency, requests)
   local total_sent, total_wraps = 0, 0
   for _, t in ipairs(threads) do
      total_sent = total_sent + t:get("sent")
      total_wraps = total_wraps + t:get("wraps")
   end
   local secs = summary.duration / 1e6
   local e = summary.errors
   io.write(string.format(
      "RESULT requests=%d secs=%.2f rps=%.0f p50_ms=%.2f p90_ms=%.2f p99_ms=%.2f p999_ms=%.2f max_ms=%.2f "
         .. "non2xx=%d connect_err=%d read_err=%d write_err=%d timeouts=%d sent=%d wraps=%d\n",
      summary.requests, secs, summary.requests / secs,
      latency:percentile(50) / 1000, latency:percentile(90) / 1000, latency:percentile(99) / 1000,
      latency:percentile(99.9) / 1000, latency.max / 1000,
      e.status, e.connect, e.read, e.write, e.timeout, total_sent, total_wraps))
end
