-- _start.lua: starting an attempt of the run a delivered entry names (start.lua).
-- Returns, for one entry, one of:
--   {'lost'}                          the entry is not (or no longer) ours
--   {'gone', deliveries}              no run record: the caller buries the entry
--   {'done', status}                  the run already ended (or is suspended, or
--                                     was cancelled before it ran); entry removed
--   {'dead'}                          poison (delivered too often): dead-lettered
--   {'ok', deliveries, run fields a runner needs (flat), steps (flat)}
--   {'ok', deliveries}                a first start of a run the worker
--                                     started early (it has the fields)
-- f: the finish context (_finish.lua) of the queue; max: max deliveries;
-- early: the worker started the run from its entry (intake.py early_start).

-- The job, payload and correlation id an entry carries (enqueue.lua).
local function carried(fields)
  local job, payload, correlation
  for i = 1, #fields - 1, 2 do
    if fields[i] == 'j' then job = fields[i + 1]
    elseif fields[i] == 'p' then payload = fields[i + 1]
    elseif fields[i] == 'c' then correlation = fields[i + 1] end
  end
  return job, payload, correlation
end

local function ack(f, entry)
  redis.call('XACK', f.stream, f.group, entry)
  redis.call('XDEL', f.stream, entry)
end

local function start(f, max, run, steps, bucket, entry, run_id, early)
  local p = redis.call('XPENDING', f.stream, f.group, entry, entry, 1)
  if #p == 0 or p[1][2] ~= f.consumer then
    return {'lost'}
  end
  local deliveries = tonumber(p[1][4])
  local field = string.sub(run_id, 11, 26)
  local indexed = redis.call('EXISTS', run) == 0
  if indexed then
    -- No record: a run enqueued to run now is only indexed until it starts.
    if redis.call('HGET', bucket, field) ~= entry then
      return {'gone', deliveries}
    end
  end
  if indexed or redis.call('HEXISTS', run, 'job') == 0 then
    -- First start of a run whose entry carries it (enqueue.lua): the record
    -- takes job, payload and correlation id over, as it outlives the entry.
    -- Started below, or buried by the caller: queued no longer, either way.
    redis.call('HDEL', bucket, field)
    local found = redis.call('XRANGE', f.stream, entry, entry)
    local job, payload, correlation = carried(found[1] and found[1][2] or {})
    if not job or not payload then
      return {'gone', deliveries}  -- and no record is left behind for it
    end
    local created = tonumber(string.match(entry, '^%d+'))
    -- Each earlier delivery of the entry may have run an attempt started early
    -- (intake.py early_start) that this script never confirmed: its step
    -- bodies may have begun. Counted, so no attempt number is used twice.
    if indexed and deliveries <= max then
      -- The usual start (a run's first): no record, no steps. The record is
      -- written in one HSET, and the runner's fields come from the entry, not
      -- read back; the same record and reply as the path below.
      local record = {'job', job, 'payload', payload, 'created_at', created,
        'status', 'running', 'started_at', f.now, 'worker', f.consumer,
        'entry', entry, 'attempt', deliveries}
      if correlation then
        record[#record + 1] = 'correlation_id'
        record[#record + 1] = correlation
      end
      redis.call('HSET', run, unpack(record))
      if early then
        return {'ok', deliveries}  -- the worker has the fields already
      end
      local fields = {'job', job, 'payload', payload, 'attempt', tostring(deliveries),
        'created_at', tostring(created)}
      if correlation then
        fields[#fields + 1] = 'correlation_id'
        fields[#fields + 1] = correlation
      end
      return {'ok', deliveries, fields, {}}
    end
    redis.call('HSET', run, 'job', job, 'payload', payload, 'created_at', created,
      'attempt', deliveries - 1)
    if indexed then redis.call('HSET', run, 'status', 'queued') end
    if correlation then redis.call('HSET', run, 'correlation_id', correlation) end
  end
  local state = redis.call('HMGET', run, 'status', 'cancel')
  local status = state[1]
  if status == 'completed' or status == 'failed' or status == 'cancelled'
      or status == 'suspended' then
    ack(f, entry)
    return {'done', status}
  end
  if state[2] then
    -- Cancelled while its worker held it (the worker died, or the cancel came
    -- before it started): it never runs again.
    cancel_run(f, run, steps, run_id, cjson.encode({type = 'Cancelled',
      message = 'cancelled before it could finish', traceback = '',
      attempt = tonumber(redis.call('HGET', run, 'attempt')) or 0}))
    redis.call('HDEL', f.cancels, entry)
    ack(f, entry)
    return {'done', 'cancelled'}
  end
  if deliveries > max then
    dead_letter(f, run, steps, run_id, cjson.encode({type = 'WorkerLostError',
      attempt = tonumber(redis.call('HGET', run, 'attempt') or '0'),
      message = 'delivered ' .. deliveries .. ' times without finishing: ' ..
        'the workers running it crashed or stalled each time (poison run)',
      traceback = ''}))
    ack(f, entry)
    return {'dead'}
  end
  -- A run resumed after a suspension goes on with the attempt it suspended
  -- in; any other start is a new attempt.
  if redis.call('HDEL', run, 'resumed') == 0 then
    redis.call('HINCRBY', run, 'attempt', 1)
  end
  redis.call('HSET', run, 'status', 'running', 'started_at', f.now,
    'worker', f.consumer, 'entry', entry)
  local recorded = redis.call('HGETALL', steps)
  -- Only what a runner needs, not the whole record: less to send and parse.
  local wanted = {'job', 'payload', 'attempt', 'correlation_id', 'failures',
    'created_at'}
  local values = redis.call('HMGET', run, unpack(wanted))
  local fields = {}
  for i, name in ipairs(wanted) do
    if values[i] then
      fields[#fields + 1] = name
      fields[#fields + 1] = values[i]
    end
  end
  return {'ok', deliveries, fields, recorded}
end
