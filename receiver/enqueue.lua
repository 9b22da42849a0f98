-- Check-and-enqueue for a batch of deliveries, atomically, in one round trip.
-- KEYS[1]  the Celery queue (a Redis list)      KEYS[2]  the events index (sorted set)
-- KEYS[3]  the ledger's schedule (sorted set "due", workers/ledger.py)
-- KEYS[4..] one delivery record key per delivery: <record key prefix><delivery key>
-- ARGV[1] de-duplication TTL (s)  ARGV[2] now (unix s)  ARGV[3] envelope prefix
-- ARGV[4] envelope suffix  ARGV[5] Celery "embed" JSON  ARGV[6] length of the record key prefix
-- ARGV[7] the records' lengths, comma-separated  ARGV[8] the records, concatenated
-- ARGV[9] the recovery delay (s): a delivery no worker has routed by then is published again
-- (two arguments for the whole batch instead of two per delivery: the client packs far less).
-- Returns one flag per delivery: 1 kept and enqueued, 0 already known (duplicate).
-- Each new delivery also goes into the ledger's schedule as "<key>|": the worker that routes it
-- takes it out; if the message is lost on its way to a worker, the scheduler publishes it again.
local ttl, now = tonumber(ARGV[1]), ARGV[2]
local cut = tonumber(ARGV[6]) + 1
local records = ARGV[8]
local fresh, flags = {}, {}
local recover_at = tonumber(now) + tonumber(ARGV[9])
local i, pos = 4, 1
for len in string.gmatch(ARGV[7], '%d+') do
  local stop = pos + tonumber(len)
  if redis.call('SET', KEYS[i], string.sub(records, pos, stop - 1), 'NX', 'EX', ttl) then
    local key = string.sub(KEYS[i], cut)
    fresh[#fresh + 1] = key
    redis.call('ZADD', KEYS[2], now, key)
    redis.call('ZADD', KEYS[3], recover_at, key .. '|')
    flags[#flags + 1] = 1
  else
    flags[#flags + 1] = 0
  end
  i, pos = i + 1, stop
end
if #fresh > 0 then
  local body = '[[' .. cjson.encode(fresh) .. '],{},' .. ARGV[5] .. ']'
  redis.call('LPUSH', KEYS[1], ARGV[3] .. cjson.encode(body) .. ARGV[4])
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', '(' .. (tonumber(now) - ttl))
end
return flags
