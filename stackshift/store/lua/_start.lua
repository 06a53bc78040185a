-- _start.lua: starting an attempt of the run a delivered entry names, shared by
-- start.lua (entries already read) and fetch.lua (read and start in one call).
-- Both scripts take KEYS[1] stream  KEYS[2] dead zset  KEYS[3] stats hash and
-- ARGV[1] group  ARGV[2] consumer  ARGV[3] max deliveries  ARGV[4] dead-letter
-- TTL ms  ARGV[5] finished channel  ARGV[6] key base ('<prefix>{<queue>}:').
-- Returns, for one entry, one of:
--   {'lost'}                          the entry is not (or no longer) ours
--   {'gone', deliveries}              no run record: the caller buries the entry
--   {'done', status}                  the run already finished; entry removed
--   {'dead'}                          poison (delivered too often): dead-lettered
--   {'ok', deliveries, run fields a runner needs (flat), steps (flat)}
local stream, dead, stats = KEYS[1], KEYS[2], KEYS[3]
local group, consumer, base = ARGV[1], ARGV[2], ARGV[6]
local now = now_ms()

-- carried: the entry's fields (flat) when the caller has already read them
-- (fetch.lua), else nil and they are read here if needed.
local function start(run, steps, entry, run_id, carried)
  local p = redis.call('XPENDING', stream, group, entry, entry, 1)
  if #p == 0 or p[1][2] ~= consumer then
    return {'lost'}
  end
  local deliveries = tonumber(p[1][4])
  local indexed = redis.call('EXISTS', run) == 0
  if indexed then
    -- No record: a run enqueued to run now is only indexed until it starts.
    local bucket, field = queued_index(base, run_id)
    if redis.call('HGET', bucket, field) ~= entry then
      return {'gone', deliveries}
    end
    -- Started below, or buried by the caller: queued no longer, either way.
    redis.call('HDEL', bucket, field)
  end
  if indexed or redis.call('HEXISTS', run, 'job') == 0 then
    -- First start of a run whose entry carries it (enqueue.lua): the record
    -- takes job, payload and correlation id over, as it outlives the entry.
    local f = carried
    if not f then
      local found = redis.call('XRANGE', stream, entry, entry)
      f = found[1] and found[1][2] or {}
    end
    local job, payload, correlation
    for i = 1, #f - 1, 2 do
      if f[i] == 'j' then job = f[i + 1]
      elseif f[i] == 'p' then payload = f[i + 1]
      elseif f[i] == 'c' then correlation = f[i + 1] end
    end
    if not job or not payload then
      return {'gone', deliveries}  -- and no record is left behind for it
    end
    local created = tonumber(string.match(entry, '^%d+'))
    if indexed and deliveries <= tonumber(ARGV[3]) then
      -- The usual start (a run's first): no record, no steps, attempt 1. The
      -- record is written in one HSET, and the runner's fields come from the
      -- entry, not read back; the same record and reply as the path below.
      local record = {'job', job, 'payload', payload, 'created_at', created,
        'status', 'running', 'started_at', now, 'worker', consumer, 'entry', entry,
        'attempt', 1}
      local fields = {'job', job, 'payload', payload, 'attempt', '1'}
      if correlation then
        record[#record + 1] = 'correlation_id'
        record[#record + 1] = correlation
        fields[#fields + 1] = 'correlation_id'
        fields[#fields + 1] = correlation
      end
      redis.call('HSET', run, unpack(record))
      return {'ok', deliveries, fields, {}}
    end
    redis.call('HSET', run, 'job', job, 'payload', payload, 'created_at', created)
    if indexed then redis.call('HSET', run, 'status', 'queued') end
    if correlation then redis.call('HSET', run, 'correlation_id', correlation) end
  end
  local status = redis.call('HGET', run, 'status')
  if status == 'completed' or status == 'failed' then
    redis.call('XACK', stream, group, entry)
    redis.call('XDEL', stream, entry)
    return {'done', status}
  end
  if deliveries > tonumber(ARGV[3]) then
    local err = cjson.encode({type = 'WorkerLostError', attempt = tonumber(
        redis.call('HGET', run, 'attempt') or '0'),
      message = 'delivered ' .. deliveries .. ' times without finishing: ' ..
        'the workers running it crashed or stalled each time (poison run)',
      traceback = ''})
    redis.call('HSET', run, 'status', 'failed', 'error', err, 'finished_at', now)
    redis.call('ZADD', dead, now, run_id)
    redis.call('XACK', stream, group, entry)
    redis.call('XDEL', stream, entry)
    redis.call('PEXPIRE', run, ARGV[4])
    redis.call('PEXPIRE', steps, ARGV[4])
    redis.call('HINCRBY', stats, 'failed', 1)
    redis.call('PUBLISH', ARGV[5], run_id)
    return {'dead'}
  end
  local attempt = redis.call('HINCRBY', run, 'attempt', 1)
  redis.call('HSET', run, 'status', 'running', 'started_at', now,
    'worker', consumer, 'entry', entry)
  local recorded = {}
  if attempt > 1 then
    recorded = redis.call('HGETALL', steps)
  end
  -- Only what a runner needs, not the whole record: less to send and parse.
  local wanted = {'job', 'payload', 'attempt', 'correlation_id', 'failures'}
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
