-- The console's indexes, kept with the ledger (docs/design.md section 11); included by every
-- script that changes a pair's state, each calling one of these once per pair it changed.
-- Indexes are sorted sets of delivery keys scored by receipt time (the "events" score):
--   <prefix>:ix:st:<state>            the delivery's aggregate state
--   <prefix>:ix:hs:<handler>|<state>  one handler's pairs that are retrying or dead (the states
--                                     that last and that an operator lists per handler; a pair
--                                     pending or running is found through st: and the hash)
-- States: pending, running, retrying, done, dead. A pair queued or waiting for its next attempt
-- (token attempt > 1) is "retrying"; the first attempt not yet running is "pending". The
-- aggregate is the worst: dead > retrying > running > pending > done; a delivery not yet routed
-- is pending (the ingress indexed it so), one that cannot be routed is dead.
-- "done" has no index: it is what nine in ten deliveries end as, and an index for it would cost
-- more memory than all the others together; a done delivery is one in "events" and in none of
-- the other state indexes (console/page.lua checks it so).
-- The hash keeps what was indexed while it is not done ("~s": the aggregate, "~><handler>": a
-- pair's), so a call touches only what changed and a finished delivery keeps nothing extra.
-- Each index is registered in "<prefix>:ix" by its oldest entry's time, for the pruner
-- (workers/index_prune.lua).
-- A pair's attempt history ("<prefix>:attempts:<key>|<handler>", JSON details oldest first,
-- the last IX_ATTEMPTS kept) is written when a pair has more than its one successful attempt.

local IX_ATTEMPTS = 20
local IX_SUFFIXES = {['@'] = 1, ['#'] = 1, ['!'] = 1, ['%'] = 1, ['^'] = 1, ['&'] = 1, ['='] = 1}
local IX_RANK = {done = 1, pending = 2, running = 3, retrying = 4, dead = 5}
local IX_PAIR_INDEXED = {retrying = true, dead = true}

local function ix_pair_state(state, token)
  if state == 'queued' or state == 'waiting' then
    if token and (tonumber(string.match(token, '%.(%d+)$')) or 1) > 1 then return 'retrying' end
    return 'pending'
  end
  return state
end

-- What this script call registered already (index name -> lowest time), to register each
-- index once per call rather than once per entry.
local IX_REGISTERED = {}

-- Bring one delivery's state indexes in line with its ledger hash. A call that changes
-- nothing costs one HGETALL; the receipt time (the score) is read only when something is added.
local function ix_sync(prefix, key)
  local hk = prefix .. ':handled:' .. key
  local flat = redis.call('HGETALL', hk)
  local f = {}
  for i = 1, #flat, 2 do f[flat[i]] = flat[i + 1] end
  local worst, moves = 'done', {}
  if f['~'] == 'unroutable' then
    worst = 'dead'
  elseif not f['~'] then
    worst = 'pending'
  end
  for name, value in pairs(f) do
    if string.sub(name, 1, 1) ~= '~' and not IX_SUFFIXES[string.sub(name, -1)] then
      local s = ix_pair_state(value, f[name .. '#'])
      if IX_RANK[s] then
        if IX_RANK[s] > IX_RANK[worst] then worst = s end
        local old, new = f['~>' .. name] or 'done', IX_PAIR_INDEXED[s] and s or 'done'
        if old ~= new then moves[#moves + 1] = {'~>' .. name, old, new, 'hs:' .. name .. '|'} end
      end
    end
  end
  local old = f['~s']
  if not old then
    -- Not synced yet (the ingress's "pending" is indexed) or done (nothing is): either way
    -- nothing but "pending" can hold it, and removing a member that is not there is harmless.
    if worst ~= 'pending' then redis.call('ZREM', prefix .. ':ix:st:pending', key) end
    old = 'done'
  end
  if old ~= worst then moves[#moves + 1] = {'~s', old, worst, 'st:'} end
  if #moves == 0 then return end
  local ixp, at, changed, gone = prefix .. ':ix:', nil, {}, {}
  for _, m in ipairs(moves) do
    local field, from, to, index = m[1], m[2], m[3], m[4]
    if from ~= 'done' then redis.call('ZREM', ixp .. index .. from, key) end
    if to == 'done' then
      gone[#gone + 1] = field
    else
      at = at or redis.call('ZSCORE', prefix .. ':events', key)
      if not at then return end -- past its retention: the pruner drops what is left
      local name = ixp .. index .. to
      redis.call('ZADD', name, at, key)
      local seen = IX_REGISTERED[name]
      if not seen or tonumber(at) < seen then
        redis.call('ZADD', prefix .. ':ix', 'LT', at, name)
        IX_REGISTERED[name] = tonumber(at)
      end
      changed[#changed + 1] = field
      changed[#changed + 1] = to
    end
  end
  if #changed > 0 then redis.call('HSET', hk, unpack(changed)) end
  if #gone > 0 then redis.call('HDEL', hk, unpack(gone)) end
end

local function ix_history(prefix, key, h, entry, ttl)
  local name = prefix .. ':attempts:' .. key .. '|' .. h
  redis.call('RPUSH', name, entry)
  redis.call('LTRIM', name, -IX_ATTEMPTS, -1)
  redis.call('EXPIRE', name, ttl)
end

-- A pair was claimed (claim.lua, take_over.lua); ``before`` is its state before: "running"
-- means the run that held it was lost (its process died), which the history records.
local function ix_claimed(prefix, key, h, before, now)
  if before == 'running' then
    local hk = prefix .. ':handled:' .. key
    local token, ttl = redis.call('HGET', hk, h .. '#') or '', redis.call('TTL', hk)
    local entry = cjson.encode({
      attempt = tonumber(string.match(token, '%.(%d+)$')), at = now, outcome = 'lost',
      error = 'the run was lost: its worker process died or stopped renewing its lease',
    })
    if ttl > 0 then ix_history(prefix, key, h, entry, ttl) end
  end
  ix_sync(prefix, key)
end

-- A run's outcome was recorded (settle.lua) for the run holding ``token``. The first run of
-- a pair (token "1.1") that succeeded writes no history: its "<handler>@" details are the whole
-- story (the console adds them after any lost runs the history holds).
local function ix_settled(prefix, key, h, token, kind, details, ttl)
  if kind ~= 'release' and (kind ~= 'done' or token ~= '1.1') then
    ix_history(prefix, key, h, details, ttl)
  end
  ix_sync(prefix, key)
end
