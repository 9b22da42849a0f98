-- wrk script shared by every contender, so the load generator does the same work for each.
-- Usage: BENCH_KEYS_FILE=acked.txt wrk -t2 -s bench/wrk.lua URL -- <requests file> 2
-- The requests file holds one delivery per line: "<path>\t<header: value|...>\t<body>", written by
-- bench/run.py (a fresh job id per line, signed when verification is on). Thread k of n sends
-- lines k, k+n, k+2n, ... and wraps around when it runs out (the driver makes enough of them).
-- It counts responses by status (wrk's own count includes non-2xx), and keeps the idempotency key
-- of every 2xx answer that names one (JSON body or Idempotency-Key header), so the driver can check each acknowledged key is in Redis.

local threads = {}
local counter = 0

function setup(thread)
  thread:set("tid", counter)
  counter = counter + 1
  table.insert(threads, thread)
end

function init(args)
  local path_file, nthreads = args[1], tonumber(args[2])
  reqs = {}
  local i = 0
  for line in io.lines(path_file) do
    if i % nthreads == tid then
      local path, hdrs, body = line:match("^([^\t]*)\t([^\t]*)\t(.*)$")
      local headers = {}
      for name, value in hdrs:gmatch("([^:|]+): ([^|]*)") do
        headers[name] = value
      end
      reqs[#reqs + 1] = wrk.format("POST", path, headers, body)
    end
    i = i + 1
  end
  n = #reqs
  idx = 0
  statuses = {}
  keys = {}
  nkeys = 0
  wrapped = 0
end

function request()
  idx = idx + 1
  if idx > n then
    idx = 1
    wrapped = wrapped + 1
  end
  return reqs[idx]
end

function response(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
  if status < 300 then
    local key = headers["idempotency-key"] or (body and body:match('"idempotency_key":"([^"]+)"'))
    if key then
      nkeys = nkeys + 1
      keys[nkeys] = key
    end
  end
end

function done(summary, latency, requests)
  local agg = {}
  local out = io.open(os.getenv("BENCH_KEYS_FILE"), "w")
  local wraps = 0
  for _, thread in ipairs(threads) do
    for status, count in pairs(thread:get("statuses")) do
      agg[status] = (agg[status] or 0) + count
    end
    for _, key in ipairs(thread:get("keys")) do
      out:write(key, "\n")
    end
    wraps = wraps + thread:get("wrapped")
  end
  out:close()
  local parts = {}
  for status, count in pairs(agg) do
    parts[#parts + 1] = string.format('"%d":%d', status, count)
  end
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {"requests":%d,"duration_us":%d,"bytes":%d,"statuses":{%s},' ..
    '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},' ..
    '"latency_us":{"p50":%d,"p90":%d,"p99":%d,"max":%d,"mean":%.1f},"wrapped":%d}\n',
    summary.requests, summary.duration, summary.bytes, table.concat(parts, ","),
    e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max,
    latency.mean, wraps))
end
