-- Bring one delivery's console state indexes in line with its ledger hash (workers/index.lua),
-- for the one change made outside a script: a delivery that cannot be routed (dispatch.py).
-- ARGV[1] key prefix  ARGV[2] delivery key
--#include index.lua
ix_sync(ARGV[1], ARGV[2])
return 1
