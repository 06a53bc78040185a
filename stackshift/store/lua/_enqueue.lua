-- _enqueue.lua: making a run, shared by enqueue.lua and tick.lua (cron).
--
-- A run due now that needs no record yet (no idempotency key, no extra fields)
-- gets none until it starts: its stream entry carries job, payload and
-- correlation id, and the queue's index bucket (KEYS passed by the caller:
-- keys.py QueueKeys.queued_index) maps the run id's last 16 characters to the
-- entry id: ~35 bytes in a shared bucket instead of a ~150-byte key per run.
-- Any other run gets its record at once: a delayed run's holds its payload.
--
-- q: {stream=, delayed=, wake=} of the queue; extra: flat field/value pairs
-- the record must hold (parent, origin...), or an empty table.
-- Returns 'queued', 'scheduled' or 'repeated' (a run with this id exists: the
-- same enqueue sent again after a lost reply, or a deterministic id).
local function create_run(q, run, bucket, run_id, job, payload, correlation, idem,
    due, now, extra)
  local field = string.sub(run_id, 11, 26)
  if redis.call('EXISTS', run) == 1 or redis.call('HEXISTS', bucket, field) == 1 then
    return 'repeated'
  end
  local recorded = due ~= nil or idem ~= '' or #extra > 0
  local status
  if due then
    redis.call('HSET', run, 'job', job, 'status', 'scheduled', 'payload', payload,
      'created_at', now, 'scheduled_for', due)
    add_timer(q.delayed, due, run_id, q.wake)
    status = 'scheduled'
  else
    local id
    if correlation ~= '' then
      id = redis.call('XADD', q.stream, '*', 'r', run_id, 'j', job, 'p', payload,
        'c', correlation)
    else
      id = redis.call('XADD', q.stream, '*', 'r', run_id, 'j', job, 'p', payload)
    end
    if recorded then
      redis.call('HSET', run, 'status', 'queued', 'entry', id)
    else
      redis.call('HSET', bucket, field, id)
    end
    status = 'queued'
  end
  if recorded then
    -- Only what the key does not already say; a missing correlation id means
    -- the run's own id, and empty fields are left out (readers default them).
    if correlation ~= '' then redis.call('HSET', run, 'correlation_id', correlation) end
    if idem ~= '' then redis.call('HSET', run, 'idempotency_key', idem) end
    if #extra > 0 then redis.call('HSET', run, unpack(extra)) end
  end
  return status
end
