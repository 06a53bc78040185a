#!lua
-- release.lua: hand a run back on shutdown: its entry goes to the end of the
-- stream as a fresh entry (a hand-back is not a crash: no delivery is counted).
-- KEYS[1] stream  KEYS[2] run hash                     (slot {<queue>})
-- ARGV[1] group  ARGV[2] consumer  ARGV[3] entry id  ARGV[4] deliveries ('-1': any)
-- ARGV[5] run id  ARGV[6] key base ('<prefix>{<queue>}:')
-- Returns {'ok', new entry id} or {'lost'}.
local stream, run, run_id = KEYS[1], KEYS[2], ARGV[5]
if not owns(stream, ARGV[1], ARGV[3], ARGV[2], ARGV[4]) then
  return {'lost'}
end
-- A run that never started (a read cut short by the shutdown) has its job and
-- payload only in its entry (enqueue.lua): the fresh entry carries them on.
-- A started run's fresh entry names it only, so that no worker starts it from
-- the entry alone as a first attempt (its record holds its steps).
local fields = {'r', run_id}
if redis.call('HEXISTS', run, 'job') == 0 then
  local old = redis.call('XRANGE', stream, ARGV[3], ARGV[3])
  if old[1] then fields = old[1][2] end
end
redis.call('XACK', stream, ARGV[1], ARGV[3])
redis.call('XDEL', stream, ARGV[3])
local id = redis.call('XADD', stream, '*', unpack(fields))
if redis.call('EXISTS', run) == 1 then
  redis.call('HSET', run, 'entry', id)
  if redis.call('HGET', run, 'status') == 'running' then
    redis.call('HSET', run, 'status', 'queued')
  end
else
  local bucket, field = queued_index(ARGV[6], run_id)
  if redis.call('HEXISTS', bucket, field) == 1 then
    redis.call('HSET', bucket, field, id)
  end
end
return {'ok', id}
