#!lua
-- checkpoint.lua: record a step's result; the first record wins, forever.
-- KEYS[1] stream  KEYS[2] steps hash                   (slot {<queue>})
-- ARGV[1] group  ARGV[2] consumer  ARGV[3] entry id  ARGV[4] deliveries
-- ARGV[5] step key  ARGV[6] step record (JSON)
-- Returns {'ok'}, {'exists', record} (already recorded: use that one),
-- or {'lost'} (this worker no longer owns the run: nothing written).
if not owns(KEYS[1], ARGV[1], ARGV[3], ARGV[2], ARGV[4]) then
  return {'lost'}
end
local existing = redis.call('HGET', KEYS[2], ARGV[5])
if existing then
  return {'exists', existing}
end
redis.call('HSET', KEYS[2], ARGV[5], ARGV[6])
return {'ok'}
