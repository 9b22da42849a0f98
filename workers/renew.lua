-- Renew the leases one holder has, and push back their look-again time in the schedule.
-- KEYS[1] the schedule ("due")
-- ARGV[1] key prefix  ARGV[2] now (s)  ARGV[3] lease (ms)  ARGV[4] holder; then key, handler.
-- Returns per pair 1 (renewed) or 0 (the lease is not ours any more).
local due, prefix, now, lease_ms, holder = KEYS[1], ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4]
local out = {}
for i = 5, #ARGV, 2 do
  local key, h = ARGV[i], ARGV[i + 1]
  local lk = prefix .. ':lease:' .. key .. ':' .. h
  if redis.call('GET', lk) == holder then
    redis.call('PEXPIRE', lk, lease_ms)
    redis.call('ZADD', due, 'XX', now + lease_ms / 1000, key .. '|' .. h)
    out[#out + 1] = 1
  else
    out[#out + 1] = 0
  end
end
return out
