-- Admit routed deliveries into the ledger (a route message), and claim the pairs run here.
-- KEYS[1] the schedule (sorted set "due")
-- ARGV[1] key prefix  ARGV[2] now (s)  ARGV[3] lease (ms)  ARGV[4] holder  ARGV[5] TTL of the
-- ledger hash (s)  ARGV[6] number of deliveries, then per delivery: key, number of pairs n, and
-- n triples: handler, its queue ("" = the default queue), "1" to run it here or "0" to hand on.
-- KEYS[2], when given: the message's delivery counter, counted (its TTL after the deliveries'
-- arguments): a route message's first delivery is counted here, not before routing
-- (workers/intake.lua); an exact copy of the message (same task id) counts once more.
-- Returns per delivery a list of flags, one per pair: 1 claimed here (attempt 1), 0 not run
-- here (handed on, or the pair existed already); or {-1}: the delivery was routed before, so
-- this message is a copy and does nothing. An ordered pair that is not the head of its set
-- waits there (state "waiting") instead of being claimed or scheduled.
--#include order.lua
--#include index.lua
local due, prefix, now = KEYS[1], ARGV[1], tonumber(ARGV[2])
local lease_ms, holder, ttl = tonumber(ARGV[3]), ARGV[4], tonumber(ARGV[5])
local out, a = {}, 7
for d = 1, tonumber(ARGV[6]) do
  local key, n = ARGV[a], tonumber(ARGV[a + 1])
  a = a + 2
  local hk = prefix .. ':handled:' .. key
  local flags = {}
  redis.call('HDEL', hk, '~t')  -- routed now: no longer counted as taken (intake.lua)
  if redis.call('HSETNX', hk, '~', n) == 0 then
    flags[1] = -1
    a = a + 5 * n
  else
    redis.call('HDEL', hk, '~%')
    redis.call('ZREM', due, key .. '|')
    for i = 1, n do
      local h, q, here, set, om = ARGV[a], ARGV[a + 1], ARGV[a + 2], ARGV[a + 3], ARGV[a + 4]
      a = a + 5
      flags[i] = 0
      -- A pair that exists (done, dead, or under way after a replay) is left as it is.
      if redis.call('HSETNX', hk, h, 'queued') == 1 then
        redis.call('HSET', hk, h .. '#', '1.1')
        if q ~= '' then redis.call('HSET', hk, h .. '^', q) end
        local member = key .. '|' .. h
        local lk = prefix .. ':lease:' .. key .. ':' .. h
        if set ~= '' and not order_enter(prefix, due, hk, h, set, om, now, ttl) then
          -- waits its turn (order.lua): in its set, or in "due" for its reorder window
        elseif here == '1' and redis.call('SET', lk, holder, 'NX', 'PX', lease_ms) then
          redis.call('HSET', hk, h, 'running')
          redis.call('ZADD', due, now + lease_ms / 1000, member)
          order_pin(hk, h)
          flags[i] = 1
        else
          redis.call('ZADD', due, now, member)
        end
      end
    end
  end
  redis.call('EXPIRE', hk, ttl)
  if flags[1] ~= -1 then ix_sync(prefix, key) end
  out[d] = flags
end
if KEYS[2] then
  redis.call('INCR', KEYS[2])
  redis.call('EXPIRE', KEYS[2], tonumber(ARGV[a]))
end
return out
