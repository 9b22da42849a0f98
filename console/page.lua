-- One page of the console's event list (console/query.py; docs/design.md section 11).
-- Walks the most selective index newest first, checks the other filters by ZSCORE, and stops
-- at the limit or after the scan bound, returning a cursor that continues where it stopped.
-- ARGV[1] key prefix  ARGV[2] highest score ("+inf" or a number)  ARGV[3] lowest score
-- ARGV[4] cursor score ("" for none)  ARGV[5] cursor key: continue after (score, key) in the
-- walk's order (score descending, then key descending, as ZREVRANGEBYSCORE orders)
-- ARGV[6] limit  ARGV[7] scan bound  ARGV[8] mode: "rows", "keys" or "count"
-- ARGV[9] number of filter groups; then per group: n, then n index names. A delivery matches
-- when it is in at least one index of every group (a group is a union). The group with the
-- fewest entries in the score range is walked (ZCOUNT). Then: n, and n indexes a delivery must
-- be in none of ("done" is in no state index: workers/index.lua); then a handler the delivery
-- must have been routed to ("" for none) and the state its pair must be in ("" for any), read
-- from the ledger hash.
-- Returns {found, scanned, next score or false, next key or false, entries of the walked group}
-- with found: "rows": {key, score, record, hash (flat)} per delivery whose record is still
-- there; "keys": the keys; "count": {matches}.
local prefix, hi, lo = ARGV[1], ARGV[2], ARGV[3]
local cs, ck = ARGV[4], ARGV[5]
local limit, bound, mode = tonumber(ARGV[6]), tonumber(ARGV[7]), ARGV[8]
local groups, a = {}, 10
for g = 1, tonumber(ARGV[9]) do
  local n, names = tonumber(ARGV[a]), {}
  for j = 1, n do names[j] = ARGV[a + j] end
  groups[g] = names
  a = a + n + 1
end
local absent = {}
for j = 1, tonumber(ARGV[a]) do absent[j] = ARGV[a + j] end
a = a + #absent + 1
local handler, pair_state = ARGV[a], ARGV[a + 1]
if cs ~= '' then hi = cs end
local function number(text)
  if text == '+inf' or text == 'inf' then return math.huge end
  if text == '-inf' then return -math.huge end
  return tonumber(text)
end

local best, total = 1, nil
for g, names in ipairs(groups) do
  local n = 0
  for _, name in ipairs(names) do n = n + redis.call('ZCOUNT', name, lo, hi) end
  if not total or n < total then best, total = g, n end
end

-- One stream per index of the walked group, merged newest first. A stream continues from the
-- last score it saw, skipping the entries with that score it has already had ("ties"), so a
-- long walk never pays for an offset.
local CHUNK = math.min(math.max(limit * 2, 64), 500)
local cursor_score = cs ~= '' and number(cs) or nil
local streams = {}
for i, name in ipairs(groups[best]) do
  streams[i] = {name = name, max = hi, top = number(hi), ties = 0, buf = {}, pos = 1, done = false}
end
local function fill(s)
  local got = redis.call('ZREVRANGEBYSCORE', s.name, s.max, lo, 'WITHSCORES', 'LIMIT', s.ties, CHUNK)
  if #got < 2 * CHUNK then s.done = true end
  s.buf, s.pos = {}, 1
  for i = 1, #got, 2 do
    local member, text = got[i], got[i + 1]
    local score = number(text)
    if score == s.top then
      s.ties = s.ties + 1
    else
      s.max, s.top, s.ties = text, score, 1
    end
    if not (cursor_score and score == cursor_score and member >= ck) then
      s.buf[#s.buf + 1] = {member, text, score}
    end
  end
end
local function peek(s)
  while s.pos > #s.buf and not s.done do fill(s) end
  return s.buf[s.pos]
end
local function take()
  local from, e
  for _, s in ipairs(streams) do
    local x = peek(s)
    if x and (not e or x[3] > e[3] or (x[3] == e[3] and x[1] > e[1])) then from, e = s, x end
  end
  if from then from.pos = from.pos + 1 end
  return e
end
local function pair_is(key)
  local got = redis.call('HMGET', prefix .. ':handled:' .. key, handler, handler .. '#')
  local state = got[1]
  if not state then return false end
  if pair_state == '' then return true end
  if state == 'queued' or state == 'waiting' then
    state = (tonumber(string.match(got[2] or '', '%.(%d+)$')) or 1) > 1 and 'retrying' or 'pending'
  end
  return state == pair_state
end
local function matches(key)
  for _, name in ipairs(absent) do
    if redis.call('ZSCORE', name, key) then return false end
  end
  if handler ~= '' and not pair_is(key) then return false end
  for g, names in ipairs(groups) do
    if g ~= best then
      local found = false
      for _, name in ipairs(names) do
        if redis.call('ZSCORE', name, key) then
          found = true
          break
        end
      end
      if not found then return false end
    end
  end
  return true
end

local found, scanned, last = {}, 0, nil
local want = mode == 'count' and math.huge or limit
local n = 0
while n < want and scanned < bound do
  local e = take()
  if not e then break end
  scanned, last = scanned + 1, e
  if matches(e[1]) then
    n = n + 1
    if mode ~= 'count' then found[#found + 1] = e end
  end
end
local more = false
for _, s in ipairs(streams) do
  if peek(s) then more = true end
end
local out = {}
if mode == 'count' then
  out = {n}
elseif mode == 'keys' then
  for i, e in ipairs(found) do out[i] = e[1] end
else
  for _, e in ipairs(found) do
    local record = redis.call('GET', prefix .. ':delivery:' .. e[1])
    if record then
      out[#out + 1] = {e[1], e[2], record, redis.call('HGETALL', prefix .. ':handled:' .. e[1])}
    end
  end
end
if more and last then return {out, scanned, last[2], last[1], total} end
return {out, scanned, false, false, total}
