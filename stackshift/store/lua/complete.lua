#!lua
-- complete.lua: finish a run with its result; ack and delete its entry.
-- KEYS[1] stream  KEYS[2] run hash  KEYS[3] steps hash  KEYS[4] stats hash
--                                                      (all in slot {<queue>})
-- ARGV[1] group  ARGV[2] consumer  ARGV[3] entry id  ARGV[4] deliveries
-- ARGV[5] result (JSON)  ARGV[6] retention ms  ARGV[7] finished channel  ARGV[8] run id
-- Returns {'ok'} or {'lost'} (not ours any more: nothing written).
if not owns(KEYS[1], ARGV[1], ARGV[3], ARGV[2], ARGV[4]) then
  return {'lost'}
end
redis.call('HSET', KEYS[2], 'status', 'completed', 'result', ARGV[5],
  'finished_at', now_ms())
redis.call('HDEL', KEYS[2], 'error')
redis.call('XACK', KEYS[1], ARGV[1], ARGV[3])
redis.call('XDEL', KEYS[1], ARGV[3])
redis.call('PEXPIRE', KEYS[2], ARGV[6])
redis.call('PEXPIRE', KEYS[3], ARGV[6])
redis.call('HINCRBY', KEYS[4], 'completed', 1)
redis.call('PUBLISH', ARGV[7], ARGV[8])
return {'ok'}
