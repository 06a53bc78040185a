#!lua
-- enqueue.lua: create a run, at most once per idempotency key.
-- KEYS[1] run hash  KEYS[2] stream  KEYS[3] delayed zset  KEYS[4] stats hash
-- KEYS[5] idempotency key (optional)                   (all in slot {<queue>})
-- ARGV[1] run id  ARGV[2] job  ARGV[3] payload (JSON)
-- ARGV[4] correlation id ('': the run's own id)  ARGV[5] idempotency key as given
-- ARGV[6] idempotency TTL ms  ARGV[7] delay ms (-1: none)  ARGV[8] run-at ms (-1: none)
-- Returns {run_id, 1 if deduplicated else 0, status}.
-- Safe to repeat (a reply lost on the wire): the run id is made by the caller,
-- so a second call with the same id finds its own run and adds nothing.
-- Declared #!lua (not allow-oom): under maxmemory it is refused whole, so no
-- idempotency key is ever left without its run.
if KEYS[5] then
  local existing = redis.call('GET', KEYS[5])
  if existing then
    if existing == ARGV[1] then return {existing, 0, 'repeated'} end
    return {existing, 1, 'deduplicated'}
  end
  redis.call('SET', KEYS[5], ARGV[1], 'PX', ARGV[6])
end
if redis.call('EXISTS', KEYS[1]) == 1 then
  return {ARGV[1], 0, 'repeated'}
end
local now = now_ms()
local due = now
if tonumber(ARGV[7]) >= 0 then due = now + tonumber(ARGV[7]) end
if tonumber(ARGV[8]) >= 0 then due = tonumber(ARGV[8]) end
local status = 'queued'
if due > now then status = 'scheduled' end
-- Only what the key does not already say: the run id (and in it the queue) is
-- the key's suffix, and a missing correlation id means the run's own id. Zero
-- and empty fields are left out too (readers default them). Less to store.
if status == 'scheduled' then
  redis.call('HSET', KEYS[1], 'job', ARGV[2], 'status', status, 'payload', ARGV[3],
    'created_at', now, 'scheduled_for', due)
  redis.call('ZADD', KEYS[3], due, ARGV[1])
else
  -- The entry carries the run (job, payload, correlation id), so a worker can
  -- start it from the entry alone, without first reading the record; the
  -- record says where the entry is. start.lua moves job and payload into the
  -- record; created_at is the entry id's time.
  local id
  if ARGV[4] ~= '' then
    id = redis.call('XADD', KEYS[2], '*', 'r', ARGV[1], 'j', ARGV[2], 'p', ARGV[3],
      'c', ARGV[4])
  else
    id = redis.call('XADD', KEYS[2], '*', 'r', ARGV[1], 'j', ARGV[2], 'p', ARGV[3])
  end
  redis.call('HSET', KEYS[1], 'status', status, 'entry', id)
end
if ARGV[4] ~= '' then redis.call('HSET', KEYS[1], 'correlation_id', ARGV[4]) end
if ARGV[5] ~= '' then redis.call('HSET', KEYS[1], 'idempotency_key', ARGV[5]) end
redis.call('HINCRBY', KEYS[4], 'enqueued', 1)
return {ARGV[1], 0, status}
