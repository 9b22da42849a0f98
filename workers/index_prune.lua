-- Prune the console indexes (docs/design.md section 11): remove entries older than the
-- retention from every index the registry says has some, at most ARGV[2] entries per call.
-- KEYS[1] the registry "<prefix>:ix" (index name -> its oldest entry's time, at most)
-- KEYS[2] the events index (also trimmed by the ingress, but only while deliveries arrive)
-- ARGV[1] the cut: receipt times before it are past the retention  ARGV[2] the budget
-- Returns {entries removed, indexes looked at, 1 if something past the cut is left else 0}.
local reg, cut, budget = KEYS[1], ARGV[1], tonumber(ARGV[2])
local removed, looked = 0, 0
local function trim(name)
  local n = redis.call('ZCOUNT', name, '-inf', '(' .. cut)
  local take = math.min(n, budget - removed)
  if take > 0 then
    -- The lowest ranks are exactly the entries before the cut.
    redis.call('ZREMRANGEBYRANK', name, 0, take - 1)
    removed = removed + take
  end
  return n - take
end
if trim(KEYS[2]) > 0 then return {removed, looked, 1} end
while removed < budget do
  local due = redis.call('ZRANGEBYSCORE', reg, '-inf', '(' .. cut, 'LIMIT', 0, 100)
  if #due == 0 then break end
  for _, name in ipairs(due) do
    looked = looked + 1
    if trim(name) > 0 then return {removed, looked, 1} end
    local first = redis.call('ZRANGE', name, 0, 0, 'WITHSCORES')
    if first[2] then
      redis.call('ZADD', reg, first[2], name)
    else
      redis.call('ZREM', reg, name)
    end
  end
end
local left = redis.call('ZCOUNT', reg, '-inf', '(' .. cut)
return {removed, looked, left > 0 and 1 or 0}
