-- Ordering (docs/design.md section 9); included by the scripts that change an ordered pair.
-- Per (handler, ordering key) one sorted set of the pairs not yet settled: member
-- "<created_at>|<not before>|<key>", scored by created_at (equal scores sort by the member's
-- text: receipt time, then key); "not before" is the receipt time plus the reorder window
-- (UPHOOKS_ORDER_WINDOW_SECONDS), before which the pair does not start, so that an event that
-- happened earlier but arrives a little later still goes first. Only the head (rank 0) may be
-- queued, run or retried; the others are "waiting" and not in "due". A head that has started
-- is pinned at -inf: nothing pre-empts it.
-- The pair's hash keeps "<handler>&" (the set) and "<handler>=" (its member).

local function order_key_of(member)
  return string.match(member, '^[^|]*|[^|]*|(.*)$')
end

local function order_not_before(member)
  return tonumber(string.match(member, '^[^|]*|([^|]*)|'))
end

local function order_of(hk, h)
  local got = redis.call('HMGET', hk, h .. '&', h .. '=')
  return got[1], got[2]
end

-- Pin a pair that starts (claimed) at the head of its set.
local function order_pin(hk, h)
  local set, member = order_of(hk, h)
  if set then redis.call('ZADD', set, 'XX', '-inf', member) end
end

-- Make the set's head the one pair allowed to go. A head that was queued but had not started
-- and now stands behind an earlier event waits again; a waiting head is queued, due now;
-- members whose pair is settled or gone are dropped. Returns the head's delivery key (or nil).
local function order_fix(prefix, due, set, h, now)
  local top = redis.call('ZRANGE', set, 0, 1, 'WITHSCORES')
  if top[3] and top[2] ~= '-inf' then
    local k2 = order_key_of(top[3])
    local hk2 = prefix .. ':handled:' .. k2
    if redis.call('HGET', hk2, h) == 'queued' then
      redis.call('HSET', hk2, h, 'waiting')
      redis.call('ZREM', due, k2 .. '|' .. h)
    end
  end
  while true do
    local head = redis.call('ZRANGE', set, 0, 0)[1]
    if not head then return nil end
    local key = order_key_of(head)
    local hk = prefix .. ':handled:' .. key
    local got = redis.call('HMGET', hk, h, h .. '=')
    local state = got[1]
    if not state or state == 'done' or state == 'dead' or got[2] ~= head then
      redis.call('ZREM', set, head)
    else
      if state == 'waiting' then
        redis.call('HSET', hk, h, 'queued')
        redis.call('ZADD', due, math.max(now, order_not_before(head)), key .. '|' .. h)
      end
      return key
    end
  end
end

-- A pair leaves its set (settled, or its delivery is gone): the next one may go.
local function order_leave(prefix, due, hk, h, now)
  local set, member = order_of(hk, h)
  if set then
    redis.call('ZREM', set, member)
    order_fix(prefix, due, set, h, now)
  end
end

-- Put a pair into its set, waiting; returns true when it is the head and may start now (else
-- it waits in its set, or as the head in "due" until its reorder window has passed).
local function order_enter(prefix, due, hk, h, set, member, now, ttl)
  redis.call('HSET', hk, h, 'waiting', h .. '&', set, h .. '=', member)
  redis.call('ZADD', set, tonumber(string.match(member, '^([^|]*)')), member)
  redis.call('EXPIRE', set, ttl)
  order_fix(prefix, due, set, h, now)
  return redis.call('HGET', hk, h) == 'queued' and order_not_before(member) <= now
end
