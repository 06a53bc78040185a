#!lua
-- cancel.lua: cancel a run. Queued (not yet delivered), scheduled or suspended:
-- it ends cancelled at once. Running (its entry is delivered): the request is
-- recorded and the worker holding it is told (the cancel channel, and renew.lua
-- as a backstop); it ends cancelled when its handler has stopped, and if that
-- worker died, start.lua ends it when its entry is taken over. Ended runs are
-- left as they are. Safe to repeat.
-- KEYS: the 10 of _finish.lua, then KEYS[11] run hash  KEYS[12] steps hash
-- KEYS[13] its queued-index bucket                      (all in slot {<queue>})
-- ARGV: the 6 of _finish.lua, then ARGV[7] run id  ARGV[8] error (JSON) it is
-- recorded with  ARGV[9] cancel channel
-- Returns {'cancelled', hand-off 0|1, what it waited for ('' if it was not
-- suspended), its creation ms} (the caller takes its waits out of the event
-- indexes), {'requested'}, {'ended', status} or {'missing'}.
local f = finish_context(0, 0)
local run, steps, bucket, run_id = KEYS[11], KEYS[12], KEYS[13], ARGV[7]
local state = redis.call('HMGET', run, 'status', 'entry', 'parent', 'waiting',
  'created_at')
local status, entry = state[1], state[2]
local field = string.sub(run_id, 11, 26)
local indexed = false
if not status then
  entry = redis.call('HGET', bucket, field)
  if not entry then return {'missing'} end
  status, indexed = 'queued', true
end
if status == 'completed' or status == 'failed' or status == 'cancelled' then
  return {'ended', status}
end
if (status == 'queued' or status == 'running') and entry then
  -- (No consumer group yet: no worker ever read the queue, so not delivered.)
  local pending = redis.pcall('XPENDING', f.stream, f.group, entry, entry, 1)
  if not pending.err and #pending > 0 then
    -- Delivered to a worker: only that worker can stop its handler.
    redis.call('HSET', run, 'cancel', f.now)
    redis.call('HSET', f.cancels, entry, run_id)
    redis.call('SPUBLISH', ARGV[9], run_id)
    return {'requested'}
  end
  if redis.call('HEXISTS', run, 'job') == 0 then
    -- Its job and payload are in its entry until it starts (with no record at
    -- all, or a record that names its key or parent): keep them, the entry goes.
    local found = redis.call('XRANGE', f.stream, entry, entry)
    local job, payload, correlation = '', 'null', nil
    for i = 1, #(found[1] and found[1][2] or {}) - 1, 2 do
      local k, v = found[1][2][i], found[1][2][i + 1]
      if k == 'j' then job = v elseif k == 'p' then payload = v
      elseif k == 'c' then correlation = v end
    end
    redis.call('HSET', run, 'job', job, 'payload', payload, 'created_at',
      tonumber(string.match(entry, '^%d+')), 'entry', entry)
    if correlation then redis.call('HSET', run, 'correlation_id', correlation) end
    if indexed then redis.call('HDEL', bucket, field) end
  end
  redis.call('XDEL', f.stream, entry)
elseif status == 'scheduled' then
  redis.call('ZREM', f.delayed, run_id)
elseif status == 'suspended' then
  redis.call('ZREM', f.suspended, run_id)
elseif status == 'running' then
  return {'requested'}  -- a running run always names its entry; cannot happen
end
cancel_run(f, run, steps, run_id, ARGV[8])
local handoff = 0
if state[3] then
  redis.call('ZADD', f.handoffs, f.now, run_id)
  handoff = 1
end
finish_close(f)
return {'cancelled', handoff, state[4] or '', state[5] or ''}
