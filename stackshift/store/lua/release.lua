#!lua
-- release.lua: hand a run back on shutdown: its entry goes to the end of the
-- stream as a fresh entry (a hand-back is not a crash: no delivery is counted).
-- KEYS[1] stream  KEYS[2] run hash                     (slot {<queue>})
-- ARGV[1] group  ARGV[2] consumer  ARGV[3] entry id  ARGV[4] deliveries ('-1': any)
-- ARGV[5] run id
-- Returns {'ok', new entry id} or {'lost'}.
if not owns(KEYS[1], ARGV[1], ARGV[3], ARGV[2], ARGV[4]) then
  return {'lost'}
end
redis.call('XACK', KEYS[1], ARGV[1], ARGV[3])
redis.call('XDEL', KEYS[1], ARGV[3])
local id = redis.call('XADD', KEYS[1], '*', 'r', ARGV[5])
if redis.call('HGET', KEYS[2], 'status') == 'running' then
  redis.call('HSET', KEYS[2], 'status', 'queued')
end
return {'ok', id}
