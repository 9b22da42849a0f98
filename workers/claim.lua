-- Claim pairs named by a pair message, fenced by their token.
-- KEYS[1] the schedule ("due")
-- ARGV[1] key prefix  ARGV[2] now (s)  ARGV[3] lease (ms)  ARGV[4] holder
-- ARGV[5] lost runs that make a pair poison; then triples: key, handler, token.
-- Returns per pair one of:
--   {1, attempt[, details]}  claimed: run it (a later attempt: with the last outcome's details)
--   {0, reason}         nothing to do: gone, done, dead, stale (token moved on), early
--   {2, holder, pttl}   another run holds its lease now
--   {3, lost}           claimed, but its runs were lost this often: dead-letter it
-- A pair waiting behind another in its ordering set is not claimed ({0, "waiting"}); a claimed
-- ordered pair is pinned at the head of its set (order.lua). A running pair without a lease is
-- not taken during the grace after a stall (grace.lua): {2, "", ms left of the grace}.
--#include order.lua
--#include index.lua
--#include grace.lua
local due, prefix, now = KEYS[1], ARGV[1], tonumber(ARGV[2])
local lease_ms, holder, poison = tonumber(ARGV[3]), ARGV[4], tonumber(ARGV[5])
local out = {}
for i = 6, #ARGV, 3 do
  local key, h, token = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  local hk = prefix .. ':handled:' .. key
  local lk = prefix .. ':lease:' .. key .. ':' .. h
  local state = redis.call('HGET', hk, h)
  local r
  if not state then
    r = {0, 'gone'}
  elseif state == 'done' or state == 'dead' then
    r = {0, state}
  elseif redis.call('HGET', hk, h .. '#') ~= token then
    r = {0, 'stale'}
  elseif state == 'retrying' then
    r = {0, 'early'}
  elseif state == 'waiting' then
    r = {0, 'waiting'}
  elseif state == 'running' and redis.call('EXISTS', lk) == 0 and grace_left(prefix) > 0 then
    r = {2, '', math.ceil(grace_left(prefix) * 1000)}
  elseif redis.call('SET', lk, holder, 'NX', 'PX', lease_ms) then
    local code, value = 1, tonumber(string.match(token, '%.(%d+)$'))
    if state == 'running' then
      -- Running, yet no lease: the run that held it is gone (its process died).
      local lost = redis.call('HINCRBY', hk, h .. '!', 1)
      if lost >= poison then code, value = 3, lost end
    end
    redis.call('HSET', hk, h, 'running')
    redis.call('ZADD', due, now + lease_ms / 1000, key .. '|' .. h)
    order_pin(hk, h)
    ix_claimed(prefix, key, h, state, now)
    r = {code, value}
    if code == 1 and value > 1 then r[3] = redis.call('HGET', hk, h .. '@') or '' end
  else
    r = {2, redis.call('GET', lk) or '', redis.call('PTTL', lk)}
  end
  out[#out + 1] = r
end
return out
