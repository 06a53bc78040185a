#!lua
-- redrive.lua: put a dead-lettered run back in its queue. Its recorded steps
-- are kept, so it resumes after the last one.
-- KEYS[1] run hash  KEYS[2] steps hash  KEYS[3] stream  KEYS[4] dead zset
--                                                      (all in slot {<queue>})
-- ARGV[1] run id
-- Returns {'ok'}, {'missing'} or {'not_failed', status}.
local status = redis.call('HGET', KEYS[1], 'status')
if not status then
  redis.call('ZREM', KEYS[4], ARGV[1])  -- its record expired: not a dead letter
  return {'missing'}
end
if status ~= 'failed' then
  return {'not_failed', status}
end
redis.call('ZREM', KEYS[4], ARGV[1])
-- Its last attempt's failure joins the attempt log: the record's error is
-- replaced by the next attempt's outcome.
local err = redis.call('HGET', KEYS[1], 'error')
if err then log_attempt(KEYS[1], err) end
redis.call('PERSIST', KEYS[1])
redis.call('PERSIST', KEYS[2])
local id = redis.call('XADD', KEYS[3], '*', 'r', ARGV[1])
redis.call('HSET', KEYS[1], 'status', 'queued', 'failures', 0, 'entry', id)
redis.call('HDEL', KEYS[1], 'finished_at')
return {'ok'}
