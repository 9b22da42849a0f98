-- Record what runs came to, fenced: only the run holding a pair's current token settles it.
-- KEYS[1] the schedule ("due")  KEYS[2] the dead-letter index
-- ARGV[1] key prefix  ARGV[2] now (s)  ARGV[3] holder  ARGV[4] TTL of the ledger hash (s)
-- ARGV[5] dead-letter retention (s); then six per pair: key, handler, token, kind, details
-- (JSON for "<handler>@"), extra (retry: when it is due; dead: the dead-letter entry, JSON).
-- kind: done | retry | dead | release (claimed but not run: give it back, due now, or due at
-- ``extra`` when given: a pair over its rate limit; neither its token nor its attempt moves).
-- Returns per pair: "ok", "stale" (someone else's token or already settled) or "lost" (our
-- lease ran out and another run took the pair: its outcome counts, not ours).
-- An ordered pair that is done or dead leaves its ordering set and the next one is promoted,
-- due now; a retrying or released one stays at the head and holds the others (order.lua).
--#include order.lua
--#include index.lua
local due, dlq, prefix = KEYS[1], KEYS[2], ARGV[1]
local now, holder, ttl, keep = tonumber(ARGV[2]), ARGV[3], tonumber(ARGV[4]), tonumber(ARGV[5])
local out = {}
for i = 6, #ARGV, 6 do
  local key, h, token, kind = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
  local details, extra = ARGV[i + 4], ARGV[i + 5]
  local hk = prefix .. ':handled:' .. key
  local lk = prefix .. ':lease:' .. key .. ':' .. h
  local member = key .. '|' .. h
  local state = redis.call('HGET', hk, h)
  local mine = redis.call('GET', lk) == holder
  local r = 'ok'
  if state == 'done' or state == 'dead' or redis.call('HGET', hk, h .. '#') ~= token then
    r = 'stale'
  elseif kind == 'done' then
    -- The handler returned: that is a fact even if our lease ran out meanwhile.
    redis.call('HSET', hk, h, 'done', h .. '@', details)
    redis.call('HDEL', hk, h .. '#', h .. '!', h .. '%')
    redis.call('ZREM', due, member)
    order_leave(prefix, due, hk, h, now)
  elseif not mine then
    r = 'lost'
  elseif kind == 'retry' then
    local g, a = string.match(token, '^(%d+)%.(%d+)$')
    redis.call('HSET', hk, h, 'retrying', h .. '#', g .. '.' .. (tonumber(a) + 1), h .. '@', details)
    redis.call('HDEL', hk, h .. '!', h .. '%')
    redis.call('ZADD', due, tonumber(extra), member)
  elseif kind == 'dead' then
    redis.call('HSET', hk, h, 'dead', h .. '@', details)
    redis.call('HDEL', hk, h .. '%')
    redis.call('ZREM', due, member)
    redis.call('SET', prefix .. ':dlq:' .. member, extra, 'EX', keep)
    redis.call('ZADD', dlq, now, member)
    redis.call('ZREMRANGEBYSCORE', dlq, '-inf', '(' .. (now - keep))
    order_leave(prefix, due, hk, h, now)
  else
    redis.call('HSET', hk, h, 'queued')
    if extra ~= '' then
      -- Released until a time (over its rate limit, workers/rate_limits.py): a fresh schedule.
      redis.call('HDEL', hk, h .. '%')
      redis.call('ZADD', due, tonumber(extra), member)
    else
      redis.call('ZADD', due, now, member)
    end
  end
  if mine then redis.call('DEL', lk) end
  redis.call('EXPIRE', hk, ttl)
  if r == 'ok' then ix_settled(prefix, key, h, token, kind, details, ttl) end
  out[#out + 1] = r
end
return out
