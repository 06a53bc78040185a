#!lua
-- enqueue.lua: create runs of one job on one queue (one from enqueue, a batch
-- from enqueue_many), at most once per idempotency key.
-- KEYS[1] stream  KEYS[2] delayed zset  KEYS[3] stats hash, then
-- KEYS[4] idempotency key if ARGV[3] is not ''             (all in slot {<queue>})
-- ARGV[1] job  ARGV[2] correlation id ('': the run's own id)
-- ARGV[3] idempotency key as given ('': none; then exactly one run)
-- ARGV[4] idempotency TTL ms  ARGV[5] delay ms (-1: none)  ARGV[6] run-at ms (-1: none)
-- ARGV[7] key base ('<prefix>{<queue>}:', the prefix of KEYS[1]: run records and
-- queued-index buckets are named from it and the run id, in the queue's slot)
-- then per run: ARGV[6+2i] run id  ARGV[7+2i] payload (JSON)
-- Returns per run {run_id, 1 if deduplicated else 0, status}.
-- Safe to repeat (a reply lost on the wire): run ids are made by the caller,
-- so a second call with the same ids finds its own runs and adds nothing.
-- Declared #!lua (not allow-oom): under maxmemory it is refused whole, so no
-- idempotency key is ever left without its run.
local stream, delayed, stats = KEYS[1], KEYS[2], KEYS[3]
local job, correlation, idem = ARGV[1], ARGV[2], ARGV[3]
local first_run_key = 4
if idem ~= '' then
  first_run_key = 5
  local existing = redis.call('GET', KEYS[4])
  if existing then
    if existing == ARGV[8] then return {{existing, 0, 'repeated'}} end
    return {{existing, 1, 'deduplicated'}}
  end
  redis.call('SET', KEYS[4], ARGV[8], 'PX', ARGV[4])
end

-- Due now unless delayed: then the server's clock says when.
local due, now = nil, nil
if tonumber(ARGV[5]) >= 0 or tonumber(ARGV[6]) >= 0 then
  now = now_ms()
  due = now
  if tonumber(ARGV[5]) >= 0 then due = now + tonumber(ARGV[5]) end
  if tonumber(ARGV[6]) >= 0 then due = tonumber(ARGV[6]) end
  if due <= now then due = nil end
end

local base = ARGV[7]
-- A run due now without an idempotency key gets no record until it starts: the
-- queue's index says where its entry is (~35 bytes in a shared bucket instead
-- of a ~150-byte key per run). A delayed run's record holds its payload; a
-- keyed run's names its key.
local recorded = due ~= nil or idem ~= ''
local out, created = {}, 0
for i = 1, (#ARGV - 7) / 2 do
  local run_id, payload = ARGV[6 + 2 * i], ARGV[7 + 2 * i]
  local run = base .. 'run:' .. run_id
  local bucket, field = queued_index(base, run_id)
  if redis.call('EXISTS', run) == 1 or redis.call('HEXISTS', bucket, field) == 1 then
    out[i] = {run_id, 0, 'repeated'}
  else
    -- Only what the key does not already say: the run id (and in it the queue)
    -- is the key's suffix, and a missing correlation id means the run's own
    -- id. Zero and empty fields are left out too (readers default them).
    if due then
      redis.call('HSET', run, 'job', job, 'status', 'scheduled', 'payload', payload,
        'created_at', now, 'scheduled_for', due)
      redis.call('ZADD', delayed, due, run_id)
      out[i] = {run_id, 0, 'scheduled'}
    else
      -- The entry carries the run (job, payload, correlation id), so a worker
      -- can start it from the entry alone; start() makes its record from the
      -- entry (created_at is the entry id's time).
      local id
      if correlation ~= '' then
        id = redis.call('XADD', stream, '*', 'r', run_id, 'j', job, 'p', payload,
          'c', correlation)
      else
        id = redis.call('XADD', stream, '*', 'r', run_id, 'j', job, 'p', payload)
      end
      if recorded then
        redis.call('HSET', run, 'status', 'queued', 'entry', id)
      else
        redis.call('HSET', bucket, field, id)
      end
      out[i] = {run_id, 0, 'queued'}
    end
    if recorded then
      if correlation ~= '' then redis.call('HSET', run, 'correlation_id', correlation) end
      if idem ~= '' then redis.call('HSET', run, 'idempotency_key', idem) end
    end
    created = created + 1
  end
end
if created > 0 then
  redis.call('HINCRBY', stats, 'enqueued', created)
end
return out
