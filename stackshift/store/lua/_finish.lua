-- _finish.lua: every way a run leaves a worker: complete, retry, dead-letter,
-- cancel, suspend and release. Shared by finish.lua and start.lua (which
-- carries the finishes waiting to go out); start.lua (poison runs) and
-- bury.lua dead-letter with it too. Each run is fenced on its own: one whose
-- entry is no longer ours is left alone.
--
-- Both entry scripts begin with the same KEYS and ARGV (FINISH_KEYS = 10 and
-- FINISH_ARGS = 6 in store/finish.py):
-- KEYS: stream, stats hash, delayed zset, dead zset, completed zset, cancelled
-- zset, suspended zset, hand-offs zset, cancel requests hash, this minute's
-- counts hash (the dashboard's throughput)                  (slot {<queue>})
-- ARGV: group, consumer, result TTL ms, dead-letter TTL ms, finished channel,
-- wake channel.
-- A run to finish is 3 KEYS (run hash, steps hash, queued-index bucket) and 7
-- ARGV: kind, entry id, deliveries, run id, data, number, counters (the keys of
-- the counters the attempt incremented, JSON list, or ''), where kind and data are
--   complete  the job's result (JSON)
--   retry     the error (JSON); number = backoff ms
--   dead      the error (JSON)
--   cancel    the error (JSON) it is recorded with
--   suspend   what it waits for: {"w": [{"s": step key, "k": kind, "d": ms
--             from now, or "a": epoch ms, ...}]} (serialization.Waiting)
--   release   '' (a hand-back at shutdown: the run goes back to the queue)
-- Each returns {'ok'}, {'lost'} (not ours: nothing written), {'handoff'} (ok,
-- and the run's parent must be told: store/control.py), {'resolved', steps}
-- (suspend only: a waited step is recorded already, so the run goes on here),
-- or {'ok', new entry id} (release).

local function finish_context(k0, a0)
  return {
    stream = KEYS[k0 + 1], stats = KEYS[k0 + 2], delayed = KEYS[k0 + 3],
    dead = KEYS[k0 + 4], completed = KEYS[k0 + 5], cancelled = KEYS[k0 + 6],
    suspended = KEYS[k0 + 7], handoffs = KEYS[k0 + 8], cancels = KEYS[k0 + 9],
    minute = KEYS[k0 + 10],
    group = ARGV[a0 + 1], consumer = ARGV[a0 + 2],
    result_ttl = tonumber(ARGV[a0 + 3]), dead_ttl = tonumber(ARGV[a0 + 4]),
    finished = ARGV[a0 + 5], wake = ARGV[a0 + 6],
    now = now_ms(), acked = {}, counts = {},
  }
end

local function count(f, name)
  f.counts[name] = (f.counts[name] or 0) + 1
end

-- A run that has ended for good: completed, failed or cancelled. It is kept
-- for `ttl`, listed in `index` (newest first, by when it ended) and announced
-- on the finished channel. A completed run keeps no error of an earlier attempt.
local function ended(f, run, steps, run_id, status, ttl, index, ...)
  redis.call('HSET', run, 'status', status, 'finished_at', f.now, ...)
  if status == 'completed' then
    redis.call('HDEL', run, 'cancel', 'waiting', 'error')
  else
    redis.call('HDEL', run, 'cancel', 'waiting')
  end
  redis.call('PEXPIRE', run, ttl)
  redis.call('PEXPIRE', steps, ttl)
  redis.call('ZADD', index, f.now, run_id)
  redis.call('SPUBLISH', f.finished, run_id)
  count(f, status)
end

local function dead_letter(f, run, steps, run_id, err)
  ended(f, run, steps, run_id, 'failed', f.dead_ttl, f.dead, 'error', err)
end

local function cancel_run(f, run, steps, run_id, err)
  ended(f, run, steps, run_id, 'cancelled', f.result_ttl, f.cancelled, 'error', err)
end

-- Suspend: the run gives up its entry and its slot, and says what it waits for
-- and until when. Returns the steps hash instead if a waited step is recorded
-- already (or comes due now): the run is not suspended, it goes on.
local function suspend(f, run, steps, run_id, data)
  local w = cjson.decode(data)
  local attempt = redis.call('HGET', run, 'attempt')
  local deadline, resolved = nil, false
  for _, wait in ipairs(w.w) do
    if redis.call('HEXISTS', steps, wait.s) == 1 then
      resolved = true
    else
      if wait.d then
        wait.a = f.now + wait.d
        wait.d = nil
      end
      if wait.a then
        if wait.a <= f.now then
          record_due(steps, attempt, f.now, wait)
          resolved = true
        elseif not deadline or wait.a < deadline then
          deadline = wait.a
        end
      end
    end
  end
  if resolved then
    return redis.call('HGETALL', steps)
  end
  redis.call('HSET', run, 'status', 'suspended', 'waiting', cjson.encode(w),
    'suspended_at', f.now)
  if deadline then
    add_timer(f.suspended, deadline, run_id, f.wake)
  else
    redis.call('ZADD', f.suspended, 'inf', run_id)
  end
  count(f, 'suspended')
  return nil
end

-- Release (a hand-back, not a crash: no delivery is counted): the entry goes to
-- the end of the stream as a fresh one. A run that never started has its job
-- and payload only in its entry: the fresh entry carries them on. A started
-- run's fresh entry names it only, so that no worker starts it from the entry
-- alone as a first attempt (its record holds its steps).
local function release(f, run, bucket, entry, run_id)
  local fields = {'r', run_id}
  local recorded = redis.call('HEXISTS', run, 'job') == 1
  if not recorded then
    local old = redis.call('XRANGE', f.stream, entry, entry)
    if old[1] then fields = old[1][2] end
  end
  redis.call('XACK', f.stream, f.group, entry)
  redis.call('XDEL', f.stream, entry)
  local id = redis.call('XADD', f.stream, '*', unpack(fields))
  if redis.call('EXISTS', run) == 1 then
    redis.call('HSET', run, 'entry', id)
    if redis.call('HGET', run, 'status') == 'running' then
      redis.call('HSET', run, 'status', 'queued')
    end
  else
    local field = string.sub(run_id, 11, 26)
    if redis.call('HEXISTS', bucket, field) == 1 then
      redis.call('HSET', bucket, field, id)
    end
  end
  return {'ok', id}
end

-- The status a finish leaves behind: a finish that is not ours any more may be
-- our own, sent again after its reply was lost (then it is told 'ok').
local LEAVES = {complete = 'completed', retry = 'scheduled', dead = 'failed',
  cancel = 'cancelled', suspend = 'suspended'}

-- The counters a run incremented, kept on its record (the union over its
-- attempts), for the dashboard.
local function note_counters(run, counters)
  local known = redis.call('HGET', run, 'counters')
  if known == counters then return end
  local union, seen = {}, {}
  for _, list in ipairs({known, counters}) do
    if list then
      for _, key in ipairs(cjson.decode(list)) do
        if not seen[key] then
          seen[key] = true
          union[#union + 1] = key
        end
      end
    end
  end
  redis.call('HSET', run, 'counters', cjson.encode(union))
end

local function leave(f, run, steps, bucket, kind, entry, deliveries, run_id, data, num,
    counters)
  if not owns(f.stream, f.group, entry, f.consumer, deliveries) then
    local s = redis.call('HMGET', run, 'status', 'entry', 'worker')
    local repeated = s[1] == LEAVES[kind] and s[2] == entry and s[3] == f.consumer
    return {repeated and 'ok' or 'lost'}
  end
  if counters ~= '' then note_counters(run, counters) end
  local has = redis.call('HMGET', run, 'parent', 'cancel')
  local parent, cancel = has[1], has[2]
  if cancel and (kind == 'retry' or kind == 'suspend' or kind == 'release') then
    -- Cancelled while running: it does not run again, whatever it asked for.
    kind = 'cancel'
    data = cjson.encode({type = 'Cancelled', message = 'cancelled while running',
      traceback = '', attempt = tonumber(redis.call('HGET', run, 'attempt')) or 0})
  end
  if kind == 'release' then
    return release(f, run, bucket, entry, run_id)
  elseif kind == 'suspend' then
    local recorded = suspend(f, run, steps, run_id, data)
    if recorded then return {'resolved', recorded} end
  elseif kind == 'complete' then
    ended(f, run, steps, run_id, 'completed', f.result_ttl, f.completed, 'result', data)
  elseif kind == 'retry' then
    local due = f.now + tonumber(num)
    log_attempt(run, data)
    redis.call('HINCRBY', run, 'failures', 1)
    redis.call('HSET', run, 'status', 'scheduled', 'error', data, 'scheduled_for', due)
    add_timer(f.delayed, due, run_id, f.wake)
    count(f, 'retried')
  elseif kind == 'dead' then
    dead_letter(f, run, steps, run_id, data)
  else
    cancel_run(f, run, steps, run_id, data)
  end
  if cancel then redis.call('HDEL', f.cancels, entry) end
  f.acked[#f.acked + 1] = entry
  if parent and (kind == 'complete' or kind == 'dead' or kind == 'cancel') then
    redis.call('ZADD', f.handoffs, f.now, run_id)
    return {'handoff'}
  end
  return {'ok'}
end

-- Per call, not per run: one XACK and one XDEL for all the entries, one
-- HINCRBY per counter (totals, and this minute's), and the indexes of ended
-- runs trimmed to their TTL.
local function finish_close(f)
  if #f.acked > 0 then
    redis.call('XACK', f.stream, f.group, unpack(f.acked))
    redis.call('XDEL', f.stream, unpack(f.acked))
  end
  local counted = false
  for name, n in pairs(f.counts) do
    redis.call('HINCRBY', f.stats, name, n)
    redis.call('HINCRBY', f.minute, name, n)
    counted = true
  end
  if counted then
    redis.call('PEXPIRE', f.minute, 7200000)  -- the dashboard shows the last hour
  end
  if f.counts.completed then
    redis.call('ZREMRANGEBYSCORE', f.completed, '-inf', f.now - f.result_ttl)
  end
  if f.counts.cancelled then
    redis.call('ZREMRANGEBYSCORE', f.cancelled, '-inf', f.now - f.result_ttl)
  end
  if f.counts.failed then
    redis.call('ZREMRANGEBYSCORE', f.dead, '-inf', f.now - f.dead_ttl)
  end
end

-- The runs to finish that follow the first `k0` KEYS and `a0` ARGV.
local function finish_runs(f, k0, a0)
  local out = {}
  for i = 1, (#KEYS - k0) / 3 do
    local k, a = k0 + 3 * (i - 1), a0 + 7 * (i - 1)
    out[i] = leave(f, KEYS[k + 1], KEYS[k + 2], KEYS[k + 3], ARGV[a + 1], ARGV[a + 2],
      ARGV[a + 3], ARGV[a + 4], ARGV[a + 5], ARGV[a + 6], ARGV[a + 7])
  end
  return out
end
