-- Check-and-enqueue for a batch of deliveries, atomically, in one round trip.
-- KEYS[1]  the Celery queue (a Redis list)      KEYS[2]  the events index (sorted set)
-- KEYS[3..] one delivery record key per delivery
-- ARGV[1] de-duplication TTL (s)  ARGV[2] now (unix s)  ARGV[3] envelope prefix
-- ARGV[4] envelope suffix  ARGV[5] Celery "embed" JSON
-- then per delivery, three values: key, key as a JSON string, record
-- Returns one flag per delivery: 1 kept and enqueued, 0 already known (duplicate).
local ttl = tonumber(ARGV[1])
local fresh = {}
local flags = {}
for i = 3, #KEYS do
  local a = 6 + (i - 3) * 3
  if redis.call('SET', KEYS[i], ARGV[a + 2], 'NX', 'EX', ttl) then
    fresh[#fresh + 1] = ARGV[a + 1]
    redis.call('ZADD', KEYS[2], ARGV[2], ARGV[a])
    flags[#flags + 1] = 1
  else
    flags[#flags + 1] = 0
  end
end
if #fresh > 0 then
  local body = '[[[' .. table.concat(fresh, ',') .. ']],{},' .. ARGV[5] .. ']'
  redis.call('LPUSH', KEYS[1], ARGV[3] .. cjson.encode(body) .. ARGV[4])
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', '(' .. (tonumber(ARGV[2]) - ttl))
end
return flags
