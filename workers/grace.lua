-- The grace after a stall (included by move.lua and claim.lua; section 3 of docs/design.md).
-- <prefix>:passed: Redis's time of the scheduler's last pass. <prefix>:grace: set, for one
-- lease, by a pass that comes more than a stall's length after the one before it; while it
-- lasts, a lease that ran out is not taken for a lost run. Both times are Redis's own (TIME),
-- so the clocks of the workers' hosts play no part.
local function redis_now()
  local t = redis.call('TIME')
  return tonumber(t[1]) + tonumber(t[2]) / 1000000
end

-- Seconds of grace left (0: none).
local function grace_left(prefix)
  local pttl = redis.call('PTTL', prefix .. ':grace')
  if pttl > 0 then return pttl / 1000 end
  return 0
end

-- Note this pass; start a grace if the pass before it was more than `stall` seconds ago.
-- Returns the seconds of grace left.
local function grace_after_pass(prefix, grace, stall)
  local passed = prefix .. ':passed'  -- uphooks/keys.py Keys.scheduler_passed
  local t = redis_now()
  local last = tonumber(redis.call('GET', passed))
  redis.call('SET', passed, string.format('%.6f', t), 'EX', 86400)
  if last and t - last > stall then
    redis.call('SET', prefix .. ':grace', '1', 'PX', math.ceil(grace * 1000))
  end
  return grace_left(prefix)
end
