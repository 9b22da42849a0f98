-- Check-and-enqueue for a batch of deliveries, atomically, in one round trip.
-- KEYS[1]  the Celery queue (a Redis list)      KEYS[2]  the events index (sorted set)
-- KEYS[3]  the ledger's schedule (sorted set "due", workers/ledger.py)
-- KEYS[4..] one delivery record key per delivery: <record key prefix><delivery key>
-- ARGV[1] de-duplication TTL (s)  ARGV[2] now (unix s)  ARGV[3] envelope prefix
-- ARGV[4] envelope suffix  ARGV[5] Celery "embed" JSON  ARGV[6] length of the record key prefix
-- ARGV[7] the records' lengths, comma-separated  ARGV[8] the records, concatenated
-- ARGV[9] the recovery delay (s): a delivery no worker has routed by then is published again
-- (two arguments for the whole batch instead of two per delivery: the client packs far less).
-- ARGV[10] the fact key prefix  ARGV[11] the fact specs' lengths  ARGV[12] the specs, concatenated
-- (uphooks/facts.py, docs/reconciliation.md): per delivery "" (no facts) or a mode, "w" (a
-- webhook) or "r" (reconciled), two digits n, then 32-character fact hashes: n to look at, the
-- rest to write. A webhook is a duplicate when a fact it looks at belongs to a reconciled
-- delivery; a reconciled one when the fact belongs to anyone.
-- Returns one flag per delivery: 1 kept and enqueued, 0 already known (duplicate), 2 its fact
-- is already known under another delivery (a duplicate too).
-- Each new delivery also goes into the ledger's schedule as "<key>|": the worker that routes it
-- takes it out; if the message is lost on its way to a worker, the scheduler publishes it again.
-- Numbers go to redis.call as strings made once per batch: Redis formats a Lua number with
-- snprintf on every call, which cost more than some of the commands (bench/ingress_redis.py).
local ex, now = ARGV[1], ARGV[2]
local ttl = tonumber(ex)
local cut = tonumber(ARGV[6]) + 1
local records = ARGV[8]
local fresh, flags = {}, {}
local recover_at = string.format('%.17g', tonumber(now) + tonumber(ARGV[9]))
local function unpack_parts(lengths, packed)
  -- The parts of ``packed``, one per length in the comma-separated ``lengths`` (empty ones too).
  local parts, at = {}, 1
  for len in string.gmatch(lengths .. ',', '(%d*),') do
    local n = tonumber(len) or 0
    parts[#parts + 1] = string.sub(packed, at, at + n - 1)
    at = at + n
  end
  return parts
end
local specs, fact_prefix = {}, ARGV[10]
if ARGV[11] then specs = unpack_parts(ARGV[11], ARGV[12]) end
local function known(spec, key)
  -- Whether a fact this delivery looks at is held by another delivery it must yield to.
  if spec == nil or spec == '' then return false end
  local mode, looks = string.sub(spec, 1, 1), tonumber(string.sub(spec, 2, 3))
  for j = 0, looks - 1 do
    local owner = redis.call('GET', fact_prefix .. string.sub(spec, 4 + 32 * j, 35 + 32 * j))
    if owner and string.sub(owner, 3) ~= key and (mode == 'r' or string.sub(owner, 1, 1) == 'r') then
      return true
    end
  end
  return false
end
-- Console indexes (docs/design.md section 11): ARGV[13] the index prefix "<prefix>:ix:",
-- ARGV[14] the terms' lengths, ARGV[15] the terms, concatenated (uphooks/indexes.py): per
-- delivery, index names after the prefix or, "@" first, lookup terms, separated by "\31".
-- Every new delivery is also "pending" (the ledger moves it on). The batch shares one receipt
-- time, so each index gets one ZADD for all its new members; the lookups go into the time
-- bucket "<prefix>:ix:find:<n>" (ARGV[16] its width, s) as "<term>|<key>", all scored 0 so a
-- lookup is a lex range, and the bucket expires a retention after its end.
local ixp, terms, adds, finds = ARGV[13], {}, {}, {}
if ixp then terms = unpack_parts(ARGV[14], ARGV[15]) end
local function add(name, key)
  local members = adds[name]
  if not members then members = {}; adds[name] = members end
  members[#members + 1] = now
  members[#members + 1] = key
end
local function index(term, key)
  if not ixp then return end
  add('st:pending', key)
  for item in string.gmatch(term or '', '[^\31]+') do
    if string.byte(item) == 64 then  -- '@', without making a string of it
      finds[#finds + 1] = '0'
      finds[#finds + 1] = string.sub(item, 2) .. '|' .. key
    else
      add(item, key)
    end
  end
end
local function zadd_all(name, args)
  for i = 1, #args, 2000 do
    redis.call('ZADD', name, unpack(args, i, math.min(i + 1999, #args)))
  end
end
local function claim(spec, key)
  if spec == nil or spec == '' then return end
  local owner, looks = string.sub(spec, 1, 1) .. ':' .. key, tonumber(string.sub(spec, 2, 3))
  for j = looks, (string.len(spec) - 3) / 32 - 1 do
    local name = fact_prefix .. string.sub(spec, 4 + 32 * j, 35 + 32 * j)
    redis.call('SET', name, owner, 'NX', 'EX', ex)
  end
end
local i, pos = 4, 1
-- The events index and the ledger's schedule get one ZADD each per batch, like the indexes.
local received, due = {}, {}
for len in string.gmatch(ARGV[7], '%d+') do
  local stop = pos + tonumber(len)
  local key = string.sub(KEYS[i], cut)
  local spec = specs[i - 3]
  if known(spec, key) then
    flags[#flags + 1] = 2
  elseif redis.call('SET', KEYS[i], string.sub(records, pos, stop - 1), 'NX', 'EX', ex) then
    fresh[#fresh + 1] = key
    received[#received + 1] = now
    received[#received + 1] = key
    due[#due + 1] = recover_at
    due[#due + 1] = key .. '|'
    claim(spec, key)
    index(terms[i - 3], key)
    flags[#flags + 1] = 1
  else
    flags[#flags + 1] = 0
  end
  i, pos = i + 1, stop
end
if #fresh > 0 then
  local body = '[[' .. cjson.encode(fresh) .. '],{},' .. ARGV[5] .. ']'
  zadd_all(KEYS[2], received)
  zadd_all(KEYS[3], due)
  redis.call('LPUSH', KEYS[1], ARGV[3] .. cjson.encode(body) .. ARGV[4])
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', '(' .. (tonumber(now) - ttl))
  if ixp then
    for name, members in pairs(adds) do
      zadd_all(ixp .. name, members)
      -- The pruner's registry: each index by (at most) its oldest entry's time.
      redis.call('ZADD', string.sub(ixp, 1, -2), 'LT', now, ixp .. name)
    end
    if #finds > 0 then
      local width = tonumber(ARGV[16])
      local bucket = math.floor(tonumber(now) / width)
      local name = ixp .. 'find:' .. bucket
      zadd_all(name, finds)
      redis.call('EXPIREAT', name, (bucket + 1) * width + ttl)
    end
  end
end
return flags
