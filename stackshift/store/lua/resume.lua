#!lua
-- resume.lua: a waited step of a run resolves (its event came, its child run
-- ended): record the step, and if the run is suspended on it, put the run back
-- in its queue. Idempotent and fenced: the first record of a step wins (a
-- second resume of the same wait finds it and does nothing), a run no longer
-- waiting on that step is left alone, and an ended run is never touched.
-- KEYS[1] run hash  KEYS[2] steps hash  KEYS[3] stream  KEYS[4] suspended zset
--                                                      (all in slot {<queue>})
-- ARGV[1] run id  ARGV[2] step key  ARGV[3] step value (JSON)  ARGV[4] error
-- (JSON, '' for none: an invoked child that failed)  ARGV[5] step kind ('event',
-- 'invoke')
-- Returns {'resumed'} (back in the queue), {'recorded'} (it is running, or
-- between attempts: the next replay finds the record), {'exists'} (resolved
-- already), {'stale'} (suspended on something else) or {'gone', status}.
local run, steps = KEYS[1], KEYS[2]
local state = redis.call('HMGET', run, 'status', 'attempt', 'waiting')
local status = state[1]
if not status or status == 'completed' or status == 'failed'
    or status == 'cancelled' then
  return {'gone', status or ''}
end
if redis.call('HEXISTS', steps, ARGV[2]) == 1 then
  return {'exists'}
end
if status == 'suspended' and not waits_on(state[3], ARGV[2]) then
  return {'stale'}
end
redis.call('HSET', steps, ARGV[2], step_record(steps, state[2], now_ms(), ARGV[5],
  ARGV[3], ARGV[4]))
if status == 'suspended' then
  requeue(KEYS[3], KEYS[4], run, ARGV[1])
  return {'resumed'}
end
return {'recorded'}
