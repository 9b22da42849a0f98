-- The scheduler: move what has come due onto its queue, as messages, atomically.
-- KEYS[1] the schedule ("due")
-- ARGV[1] key prefix  ARGV[2] now (s)  ARGV[3] most items to look at  ARGV[4] default queue
-- ARGV[5] recovery delay (s)  ARGV[6] pairs or keys per message  ARGV[7] envelope prefix
-- ARGV[8] Celery "embed" JSON  ARGV[9] a fresh id base for this call  ARGV[10] the grace after
-- a stall (s: one lease)  ARGV[11] the gap between two passes that is a stall (s); ARGV[12..]
-- the envelope template (uphooks/taskmessage.py lua_template: literal parts and, between them,
-- the names "id", "tag" or "queue").
--
-- A stall: no pass for longer than ARGV[11] by Redis's own clock (Redis paused or too slow to
-- answer, or no worker running). Nobody could renew a lease or settle a run meanwhile, so a
-- lease that ran out during it says nothing of its holder: for one lease after it (grace.lua),
-- a running pair without a lease is looked at again when the grace ends instead of being
-- published as lost, and claim.lua does not take it. A run that finished during the stall has
-- that long to settle.
--
-- Per item that is due:
--   "<key>|" (a delivery no worker has routed yet): a route message, unless it was routed;
--   "<key>|<handler>": a pair message with the pair's token when it is retrying (its retry is
--   due), queued (a hand-off, a released or replayed pair, or a message that may have been
--   lost), or running without a lease (the run was lost); a running pair with a live lease is
--   looked at again when the lease can have run out; a settled or vanished pair is dropped.
-- Each item published is looked at again after the recovery delay, doubled for every time it
-- had to be published again (at most 16x): a message lost on its way to a worker is published
-- again, while one that only waits in a long queue is not copied over and over.
-- A pair whose run was lost (running, no lease) goes in a message of its own, never grouped.
-- An ordered pair whose delivery is gone leaves its ordering set, so the next one may go.
-- Returns {items looked at, route messages' keys, pairs published, of those: published again
-- (the message was lost or waits long), dropped (settled or vanished), of those published: runs
-- lost (running, no lease: the process died)}.
local due, prefix, now, limit = KEYS[1], ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local default, recover, batch = ARGV[4], tonumber(ARGV[5]), tonumber(ARGV[6])
local envprefix, embed, idbase = ARGV[7], ARGV[8], ARGV[9]
--#include order.lua
--#include grace.lua
local in_grace = grace_after_pass(prefix, tonumber(ARGV[10]), tonumber(ARGV[11]))
local tpl = {}
for i = 12, #ARGV do tpl[#tpl + 1] = ARGV[i] end

local sent = 0
local function push(queue, body)
  sent = sent + 1
  local id = idbase .. '-' .. sent
  local qjson = string.sub(cjson.encode(queue), 2, -2)
  local parts = {envprefix, cjson.encode(body)}
  for i = 1, #tpl do
    local piece = tpl[i]
    if i % 2 == 0 then
      if piece == 'id' then piece = id elseif piece == 'tag' then piece = id .. '.t' else piece = qjson end
    end
    parts[#parts + 1] = piece
  end
  redis.call('LPUSH', queue, table.concat(parts))
end

local function again(hk, field, base)
  local n = redis.call('HINCRBY', hk, field, 1)
  return base * math.pow(2, math.min(n - 1, 4))
end

local members = redis.call('ZRANGEBYSCORE', due, '-inf', now, 'LIMIT', 0, limit)
local routes, by_queue, queues, alone = {}, {}, {}, {}
local nroutes, npairs, nagain, ndropped, nlost = 0, 0, 0, 0, 0
for _, m in ipairs(members) do
  local key, h = string.match(m, '^(.*)|([^|]*)$')
  local hk = prefix .. ':handled:' .. key
  if redis.call('EXISTS', prefix .. ':delivery:' .. key) == 0 then
    redis.call('ZREM', due, m)
    if h ~= '' then
      order_leave(prefix, due, hk, h, now)
      redis.call('HDEL', hk, h .. '&', h .. '=')
    end
    ndropped = ndropped + 1
  elseif h == '' then
    if redis.call('HEXISTS', hk, '~') == 1 then
      redis.call('ZREM', due, m)
      ndropped = ndropped + 1
    else
      routes[#routes + 1] = key
      nroutes = nroutes + 1
      redis.call('ZADD', due, now + again(hk, '~%', recover), m)
    end
  else
    local got = redis.call('HMGET', hk, h, h .. '#', h .. '^')
    local state = got[1]
    local pttl = -2
    if state == 'running' then pttl = redis.call('PTTL', prefix .. ':lease:' .. key .. ':' .. h) end
    if not state or state == 'done' or state == 'dead' or state == 'waiting' then
      redis.call('ZREM', due, m)
      ndropped = ndropped + 1
    elseif pttl > 0 then
      redis.call('ZADD', due, now + pttl / 1000, m)
    elseif state == 'running' and in_grace > 0 then
      redis.call('ZADD', due, now + in_grace, m)
    else
      local q = got[3] or default
      local pair = {key, h, got[2] or ''}
      if state == 'running' then
        -- Its run was lost with its process, which may be this very pair's doing (a poison
        -- run) or a bystander's: each such pair runs in a message of its own, so a bystander
        -- is not killed again beside the poison until its deaths reach the poison limit.
        alone[#alone + 1] = {q, pair}
      else
        if not by_queue[q] then by_queue[q] = {}; queues[#queues + 1] = q end
        local list = by_queue[q]
        list[#list + 1] = pair
      end
      npairs = npairs + 1
      local wait = recover
      if state == 'retrying' then
        redis.call('HSET', hk, h, 'queued', h .. '%', 1)
      else
        local n = redis.call('HINCRBY', hk, h .. '%', 1)
        wait = recover * math.pow(2, math.min(n - 1, 4))
        if state == 'running' then nlost = nlost + 1 elseif n > 1 then nagain = nagain + 1 end
      end
      redis.call('ZADD', due, now + wait, m)
    end
  end
end

for i = 1, #routes, batch do
  local chunk = {}
  for j = i, math.min(i + batch - 1, #routes) do chunk[#chunk + 1] = routes[j] end
  push(default, '[[' .. cjson.encode(chunk) .. '],{},' .. embed .. ']')
end
for _, q in ipairs(queues) do
  local list = by_queue[q]
  for i = 1, #list, batch do
    local chunk = {}
    for j = i, math.min(i + batch - 1, #list) do chunk[#chunk + 1] = list[j] end
    push(q, '[[[]],{"pairs":' .. cjson.encode(chunk) .. '},' .. embed .. ']')
  end
end
for _, one in ipairs(alone) do
  push(one[1], '[[[]],{"pairs":' .. cjson.encode({one[2]}) .. '},' .. embed .. ']')
end
return {#members, nroutes, npairs, nagain, ndropped, nlost}
