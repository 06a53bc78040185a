#!lua
-- increment.lua: add to a durable counter, once per (run, increment number).
-- Increments are matched by their order in the run: a replayed attempt that
-- reaches increment n again, after an earlier attempt applied it, skips it.
-- KEYS[1] counter hash  KEYS[2] the run's high-water mark   (slot {c:<key>})
-- ARGV[1] amount  ARGV[2] increment number in the run (from 1)
-- ARGV[3] mark TTL ms  ARGV[4] original key when hashed ('' otherwise)
-- Returns {1 if applied else 0, counter value}.
local seen = tonumber(redis.call('GET', KEYS[2]) or '0')
if tonumber(ARGV[2]) <= seen then
  return {0, tonumber(redis.call('HGET', KEYS[1], 'value') or '0')}
end
local value = redis.call('HINCRBY', KEYS[1], 'value', ARGV[1])
redis.call('SET', KEYS[2], ARGV[2], 'PX', ARGV[3])
if ARGV[4] ~= '' then
  redis.call('HSETNX', KEYS[1], 'key', ARGV[4])
end
return {1, value}
