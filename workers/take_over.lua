-- Take over a pair whose lease is held by a process known to be dead (on this host).
-- KEYS[1] the schedule ("due")
-- ARGV[1] key prefix  ARGV[2] now (s)  ARGV[3] lease (ms)  ARGV[4] holder  ARGV[5] poison limit
-- ARGV[6] key  ARGV[7] handler  ARGV[8] token  ARGV[9] the dead holder
-- Returns as claim.lua does for one pair.
--#include index.lua
local due, prefix, now = KEYS[1], ARGV[1], tonumber(ARGV[2])
local key, h, token = ARGV[6], ARGV[7], ARGV[8]
local hk = prefix .. ':handled:' .. key
local lk = prefix .. ':lease:' .. key .. ':' .. h
if redis.call('HGET', hk, h) ~= 'running' or redis.call('HGET', hk, h .. '#') ~= token then
  return {0, 'stale'}
end
if redis.call('GET', lk) ~= ARGV[9] then
  return {0, 'moved'}
end
redis.call('SET', lk, ARGV[4], 'PX', tonumber(ARGV[3]))
redis.call('ZADD', due, now + tonumber(ARGV[3]) / 1000, key .. '|' .. h)
ix_claimed(prefix, key, h, 'running', now)
local lost = redis.call('HINCRBY', hk, h .. '!', 1)
if lost >= tonumber(ARGV[5]) then return {3, lost} end
return {1, tonumber(string.match(token, '%.(%d+)$'))}
