-- Rate limits shared by all workers: one GCRA bucket per name, with reservations.
-- KEYS[1] the schedule ("due"; unused, declared for the pairs' keys' sake)
-- ARGV[1] key prefix  ARGV[2] how long a reservation outlives its slot (ms)
-- then per pair: member ("<key>|<handler>"), number of buckets, and per bucket: name,
-- interval (ms between two runs at the steady rate), burst (runs at once after a quiet spell).
-- Returns per pair the milliseconds to wait: 0 = run now (a token taken from every bucket).
--
-- A pair over its limit is not refused but given a slot: each bucket's theoretical arrival
-- time ("rate:bucket:<name>") moves on by one interval and the pair's slot is kept in
-- "rate:slot:<member>". The worker gives the pair back to the ledger due at that slot (no
-- attempt counted, no pool slot held), and when it comes back it runs on its slot without
-- taking another: no herd of waiting pairs races for each token, and they go in the order
-- they were refused. Times are the Redis server's, the same clock for every worker.
redis.replicate_commands()
local prefix, keep = ARGV[1], tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local out = {}
local i = 3
while i <= #ARGV do
  local member, n = ARGV[i], tonumber(ARGV[i + 1])
  local sk = prefix .. ':rate:slot:' .. member
  local slot = tonumber(redis.call('GET', sk))
  if slot then
    if slot <= now + 5 then
      redis.call('DEL', sk)
      out[#out + 1] = 0
    else
      out[#out + 1] = math.ceil(slot - now) -- a copy that came early: its slot stands
    end
  else
    slot = now
    local tats = {}
    for b = 0, n - 1 do
      local j = i + 2 + 3 * b
      local interval, burst = tonumber(ARGV[j + 1]), tonumber(ARGV[j + 2])
      local tat = math.max(tonumber(redis.call('GET', prefix .. ':rate:bucket:' .. ARGV[j])) or now, now)
      tats[b] = tat
      slot = math.max(slot, tat - (burst - 1) * interval)
    end
    for b = 0, n - 1 do
      local j = i + 2 + 3 * b
      local tat = math.ceil(math.max(tats[b], slot) + tonumber(ARGV[j + 1]))
      redis.call('SET', prefix .. ':rate:bucket:' .. ARGV[j], tat, 'PX', math.ceil(tat - now + 1000))
    end
    slot = math.ceil(slot)
    if slot > now then
      redis.call('SET', sk, slot, 'PX', math.ceil(slot - now + keep))
    end
    out[#out + 1] = math.ceil(slot - now)
  end
  i = i + 2 + 3 * n
end
return out
