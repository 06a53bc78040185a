#!lua
-- start.lua: a worker takes a delivered entry and starts an attempt of its run.
-- KEYS[1] stream  KEYS[2] run hash  KEYS[3] steps hash  KEYS[4] dead zset
-- KEYS[5] stats hash                                   (all in slot {<queue>})
-- ARGV[1] group  ARGV[2] consumer  ARGV[3] entry id  ARGV[4] max deliveries
-- ARGV[5] dead-letter TTL ms  ARGV[6] run id  ARGV[7] finished channel
-- Returns one of:
--   {'lost'}                          the entry is not (or no longer) ours
--   {'gone', deliveries}              no run record: the caller buries the entry
--   {'done', status}                  the run already finished; entry removed
--   {'dead'}                          poison (delivered too often): dead-lettered
--   {'ok', deliveries, run fields (flat), steps (flat)}
local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[3], ARGV[3], 1)
if #p == 0 or p[1][2] ~= ARGV[2] then
  return {'lost'}
end
local deliveries = tonumber(p[1][4])
if redis.call('EXISTS', KEYS[2]) == 0 then
  return {'gone', deliveries}
end
local status = redis.call('HGET', KEYS[2], 'status')
if status == 'completed' or status == 'failed' then
  redis.call('XACK', KEYS[1], ARGV[1], ARGV[3])
  redis.call('XDEL', KEYS[1], ARGV[3])
  return {'done', status}
end
local now = now_ms()
if deliveries > tonumber(ARGV[4]) then
  local err = cjson.encode({type = 'WorkerLostError', attempt = tonumber(
      redis.call('HGET', KEYS[2], 'attempt') or '0'),
    message = 'delivered ' .. deliveries .. ' times without finishing: ' ..
      'the workers running it crashed or stalled each time (poison run)',
    traceback = ''})
  redis.call('HSET', KEYS[2], 'status', 'failed', 'error', err, 'finished_at', now)
  redis.call('ZADD', KEYS[4], now, ARGV[6])
  redis.call('XACK', KEYS[1], ARGV[1], ARGV[3])
  redis.call('XDEL', KEYS[1], ARGV[3])
  redis.call('PEXPIRE', KEYS[2], ARGV[5])
  redis.call('PEXPIRE', KEYS[3], ARGV[5])
  redis.call('HINCRBY', KEYS[5], 'failed', 1)
  redis.call('PUBLISH', ARGV[7], ARGV[6])
  return {'dead'}
end
local attempt = redis.call('HINCRBY', KEYS[2], 'attempt', 1)
redis.call('HSET', KEYS[2], 'status', 'running', 'started_at', now,
  'worker', ARGV[2], 'entry', ARGV[3])
local steps = {}
if attempt > 1 then
  steps = redis.call('HGETALL', KEYS[3])
end
return {'ok', deliveries, redis.call('HGETALL', KEYS[2]), steps}
