-- _resume.lua: putting a suspended run back in its queue, shared by resume.lua
-- (an event, a child's end), timers.lua (a sleep or a wait ran out) and
-- _finish.lua (a suspend that finds itself already resolved).

-- Record what a wait whose time has come resolves to (first record wins): a
-- sleep is done, an event wait timed out (null), an invoke timed out (error).
local function record_due(steps, attempt, now, wait)
  local value, err = 'null', nil
  if wait.k == 'invoke' then
    value = cjson.encode({run_id = wait.c})
    err = cjson.encode({type = 'TimeoutError', message = 'child run ' ..
      tostring(wait.c) .. ' did not finish before the timeout', traceback = '',
      attempt = tonumber(attempt) or 0})
  end
  redis.call('HSETNX', steps, wait.s,
    step_record(steps, attempt, now, wait.k, value, err))
end

-- The suspended run goes back to the end of its stream, as a fresh entry that
-- names it only (its record holds job, payload and steps).
local function requeue(stream, suspended, run, run_id)
  local id = redis.call('XADD', stream, '*', 'r', run_id)
  redis.call('HSET', run, 'status', 'queued', 'entry', id, 'resumed', 1)
  redis.call('HDEL', run, 'waiting')
  redis.call('ZREM', suspended, run_id)
  return id
end

-- Is `step` one of the waits in a suspended run's `waiting` field?
local function waits_on(waiting, step)
  if not waiting then return false end
  for _, wait in ipairs(cjson.decode(waiting).w) do
    if wait.s == step then return true end
  end
  return false
end
