#!lua
-- bury.lua: dead-letter an entry that names no usable run (undecodable fields,
-- or a run record that is gone), keeping what it held for inspection.
-- KEYS[1] stream  KEYS[2] new run hash  KEYS[3] dead zset  KEYS[4] stats hash
--                                                      (all in slot {<queue>})
-- ARGV[1] group  ARGV[2] consumer  ARGV[3] entry id  ARGV[4] run id
-- ARGV[5] entry fields (JSON)  ARGV[6] error (JSON)  ARGV[7] dead-letter TTL ms
-- ARGV[8] finished channel
-- Returns {'ok'} or {'lost'}.
if not owns(KEYS[1], ARGV[1], ARGV[3], ARGV[2], '-1') then
  return {'lost'}
end
local now = now_ms()
redis.call('HSET', KEYS[2], 'job', '', 'status', 'failed', 'payload', ARGV[5],
  'error', ARGV[6], 'created_at', now, 'finished_at', now, 'entry', ARGV[3])
redis.call('ZADD', KEYS[3], now, ARGV[4])
redis.call('XACK', KEYS[1], ARGV[1], ARGV[3])
redis.call('XDEL', KEYS[1], ARGV[3])
redis.call('PEXPIRE', KEYS[2], ARGV[7])
redis.call('HINCRBY', KEYS[4], 'failed', 1)
redis.call('PUBLISH', ARGV[8], ARGV[4])
return {'ok'}
