#!lua
-- bury.lua: dead-letter an entry that names no usable run (undecodable fields,
-- or a run record that is gone), keeping what it held for inspection.
-- KEYS[1] stream  KEYS[2] new run hash  KEYS[3] dead zset  KEYS[4] stats hash
--                                                      (all in slot {<queue>})
-- ARGV[1] group  ARGV[2] consumer  ARGV[3] entry id  ARGV[4] run id
-- ARGV[5] queue  ARGV[6] entry fields (JSON)  ARGV[7] error (JSON)
-- ARGV[8] dead-letter TTL ms  ARGV[9] finished channel
-- Returns {'ok'} or {'lost'}.
if not owns(KEYS[1], ARGV[1], ARGV[3], ARGV[2], '-1') then
  return {'lost'}
end
local now = now_ms()
redis.call('HSET', KEYS[2], 'run_id', ARGV[4], 'job', '', 'queue', ARGV[5],
  'status', 'failed', 'attempt', 0, 'failures', 0, 'payload', ARGV[6],
  'error', ARGV[7], 'created_at', now, 'finished_at', now, 'entry', ARGV[3])
redis.call('ZADD', KEYS[3], now, ARGV[4])
redis.call('XACK', KEYS[1], ARGV[1], ARGV[3])
redis.call('XDEL', KEYS[1], ARGV[3])
redis.call('PEXPIRE', KEYS[2], ARGV[8])
redis.call('HINCRBY', KEYS[4], 'failed', 1)
redis.call('PUBLISH', ARGV[9], ARGV[4])
return {'ok'}
