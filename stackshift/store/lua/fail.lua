#!lua
-- fail.lua: an attempt failed: schedule a retry after backoff, or dead-letter.
-- KEYS[1] stream  KEYS[2] run hash  KEYS[3] steps hash  KEYS[4] delayed zset
-- KEYS[5] dead zset  KEYS[6] stats hash                (all in slot {<queue>})
-- ARGV[1] group  ARGV[2] consumer  ARGV[3] entry id  ARGV[4] deliveries
-- ARGV[5] error (JSON)  ARGV[6] retry: '1' or '0'  ARGV[7] backoff ms
-- ARGV[8] dead-letter TTL ms  ARGV[9] finished channel  ARGV[10] run id
-- Returns {'retry', due ms}, {'dead'}, or {'lost'} (not ours: nothing written).
if not owns(KEYS[1], ARGV[1], ARGV[3], ARGV[2], ARGV[4]) then
  return {'lost'}
end
local now = now_ms()
redis.call('HINCRBY', KEYS[2], 'failures', 1)
redis.call('XACK', KEYS[1], ARGV[1], ARGV[3])
redis.call('XDEL', KEYS[1], ARGV[3])
if ARGV[6] == '1' then
  local due = now + tonumber(ARGV[7])
  redis.call('HSET', KEYS[2], 'status', 'scheduled', 'error', ARGV[5],
    'scheduled_for', due)
  redis.call('ZADD', KEYS[4], due, ARGV[10])
  redis.call('HINCRBY', KEYS[6], 'retried', 1)
  return {'retry', due}
end
redis.call('HSET', KEYS[2], 'status', 'failed', 'error', ARGV[5], 'finished_at', now)
redis.call('ZADD', KEYS[5], now, ARGV[10])
redis.call('ZREMRANGEBYSCORE', KEYS[5], '-inf', now - tonumber(ARGV[8]))
redis.call('PEXPIRE', KEYS[2], ARGV[8])
redis.call('PEXPIRE', KEYS[3], ARGV[8])
redis.call('HINCRBY', KEYS[6], 'failed', 1)
redis.call('PUBLISH', ARGV[9], ARGV[10])
return {'dead'}
