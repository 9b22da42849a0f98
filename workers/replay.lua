-- Replay one dead letter: a new generation of the pair, due now; the entry is removed.
-- KEYS[1] the schedule ("due")  KEYS[2] the dead-letter index
-- ARGV[1] key prefix  ARGV[2] now (s)  ARGV[3] TTL of delivery and ledger hash (s)
-- ARGV[4] delivery key  ARGV[5] handler ("uphooks.routing": route the delivery again)
-- ARGV[6] the delivery record, put back if it expired  ARGV[7] the routing handler's name
-- Returns "replayed", "done" (the pair was done meanwhile) or "busy" (already under way).
-- An ordered pair goes back into its ordering set at its own place (its created_at): it runs
-- before the pairs of that key still waiting that happened after it, never before a pair of
-- that key that has started (order.lua).
--#include order.lua
--#include index.lua
local due, dlq, prefix, now, ttl = KEYS[1], KEYS[2], ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local key, h = ARGV[4], ARGV[5]
local hk = prefix .. ':handled:' .. key
local member = key .. '|' .. h
redis.call('SET', prefix .. ':delivery:' .. key, ARGV[6], 'NX', 'EX', ttl)
local r = 'replayed'
if h == ARGV[7] then
  redis.call('HDEL', hk, '~', '~%')
  redis.call('ZADD', due, now, key .. '|')
else
  local state = redis.call('HGET', hk, h)
  if state == 'done' then
    r = 'done'
  elseif state and state ~= 'dead' then
    r = 'busy'
  else
    local g = tonumber(string.match(redis.call('HGET', hk, h .. '#') or '0.0', '^(%d+)')) + 1
    redis.call('HSET', hk, h, 'queued', h .. '#', g .. '.1')
    redis.call('HDEL', hk, h .. '!', h .. '%')
    -- The delivery was routed (else it would not have this pair): a late copy of its route
    -- message must not route it again.
    redis.call('HSETNX', hk, '~', 1)
    local set, om = order_of(hk, h)
    if set then
      order_enter(prefix, due, hk, h, set, om, now, ttl)
    else
      redis.call('ZADD', due, now, member)
    end
  end
  redis.call('EXPIRE', hk, ttl)
end
redis.call('DEL', prefix .. ':dlq:' .. member)
redis.call('ZREM', dlq, member)
ix_sync(prefix, key)
return r
