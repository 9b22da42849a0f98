-- What one message brings in, in one round trip: count this delivery of the message, take
-- further route messages of ours from its queue (consume-side batching), read the records.
-- KEYS[1] the queue the message came from (a Redis list)  KEYS[2] the schedule ("due")
-- ARGV[1] key prefix  ARGV[2] the message's delivery counter  ARGV[3] the counter's TTL (s)
-- ARGV[4] now (s)  ARGV[5] how long a taken message's deliveries may wait unrouted before the
-- scheduler publishes them again (s: a lease time)  ARGV[6] most further messages to take
-- ARGV[7] most deliveries in all  ARGV[8] our task's name  ARGV[9] times a delivery may be taken
-- and not routed (the poison limit)  ARGV[10] TTL of the ledger hash (s)  ARGV[11] the least
-- count of a counted delivery  ARGV[12] n; then the message's n keys.
--
-- ARGV[2] is "" for a route message's first delivery: admit.lua counts it (one write, and one
-- fsync, less before the handler starts), and this script writes nothing unless it takes. A
-- worker that dies while routing it never counted it, so its redelivery (kombu marks every
-- restored message) is counted as at least the second (ARGV[11] = 2): the poison limit counts
-- the death all the same (docs/design.md, section 6).
--
-- Further messages are taken only on a message's first delivery (a redelivered one may be
-- poison: it runs alone, under its own counter), from the end kombu reads (RPOP), and only while
-- the next one is a route message of ours in the form our ingress and scheduler write (plain
-- JSON body, keys and no keyword arguments). Anything else stops the taking and stays where it
-- is: a foreign task's message, a pair message, one Celery itself published. So does a message
-- naming a delivery already taken ARGV[9] times without being routed ("~t" in its ledger hash,
-- cleared by admit.lua): a delivery that kills its worker while it is routed then runs under a
-- message's own counter and is dead-lettered (docs/design.md, section 6), not taken for ever.
-- A taken message is in no unacknowledged set: each of its deliveries stays in "due" as
-- "<key>|" until a worker routes it, re-scored to come due within ARGV[5] seconds, so a
-- worker that dies before routing it loses nothing: the scheduler publishes it again.
-- Each taken message's own delivery counter is counted too (uphooks/keys.py deliveries_of).
-- Returns {seen, {taken keys}, {records of the message's keys, then of the taken keys}, taken
-- messages}, a record false when it is gone.
local queue, due, prefix = KEYS[1], KEYS[2], ARGV[1]
local now, hold = tonumber(ARGV[4]), tonumber(ARGV[5])
local most, most_keys, task = tonumber(ARGV[6]), tonumber(ARGV[7]), ARGV[8]
local poison, ttl = tonumber(ARGV[9]), tonumber(ARGV[10])
local seen = 1
if ARGV[2] ~= '' then
  seen = math.max((tonumber(redis.call('GET', ARGV[2])) or 0) + 1, tonumber(ARGV[11]))
  redis.call('SET', ARGV[2], seen, 'EX', tonumber(ARGV[3]))
end
local names = {}
for i = 13, 12 + tonumber(ARGV[12]) do names[#names + 1] = prefix .. ':delivery:' .. ARGV[i] end

-- The keys and task id of a route message of ours, or nil for anything else.
local function route_keys(raw)
  local ok, msg = pcall(cjson.decode, raw)
  if not ok or type(msg) ~= 'table' or type(msg.headers) ~= 'table' then return nil end
  if msg.headers.task ~= task or type(msg.body) ~= 'string' then return nil end
  if type(msg.headers.id) ~= 'string' then return nil end
  if type(msg.properties) ~= 'table' or msg.properties.body_encoding ~= nil then return nil end
  local okb, body = pcall(cjson.decode, msg.body)
  if not okb or type(body) ~= 'table' or type(body[1]) ~= 'table' then return nil end
  local keys, kwargs = body[1][1], body[2]
  if type(keys) ~= 'table' or #keys == 0 or type(kwargs) ~= 'table' or next(kwargs) then
    return nil
  end
  for _, key in ipairs(keys) do
    if type(key) ~= 'string' then return nil end
    local tries = redis.call('HGET', prefix .. ':handled:' .. key, '~t')
    if tries and tonumber(tries) >= poison then return nil end
  end
  return keys, msg.headers.id
end

local taken, messages, total = {}, 0, #names
if seen == 1 then
  while messages < most do
    local raw = redis.call('LINDEX', queue, -1)
    if not raw then break end
    local keys, id = route_keys(raw)
    if not keys or total + #keys > most_keys then break end
    redis.call('RPOP', queue)
    -- Handed to a worker, like one Celery hands over: counted under its own task id.
    local counter = prefix .. ':redelivered:' .. id
    redis.call('INCR', counter)
    redis.call('EXPIRE', counter, tonumber(ARGV[3]))
    messages = messages + 1
    total = total + #keys
    for _, key in ipairs(keys) do
      local hk = prefix .. ':handled:' .. key
      redis.call('HINCRBY', hk, '~t', 1)
      redis.call('EXPIRE', hk, ttl)
      taken[#taken + 1] = key
      names[#names + 1] = prefix .. ':delivery:' .. key
      redis.call('ZADD', due, 'XX', 'LT', now + hold, key .. '|')
    end
  end
end
local records = {}
if #names > 0 then records = redis.call('MGET', unpack(names)) end
return {seen, taken, records, messages}
