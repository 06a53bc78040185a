#!lua
-- enqueue.lua: create runs of one job on one queue (one from enqueue, a batch
-- from enqueue_many), at most once per idempotency key.
-- KEYS[1] stream  KEYS[2] delayed zset  KEYS[3] stats hash  KEYS[4] idempotency
-- key (when ARGV[3] is not ''; else the stats hash again)  KEYS[5] the index of
-- the correlation id's runs (when ARGV[2] is not ''; else the stats hash), then
-- per run: KEYS[4+2i] run hash  KEYS[5+2i] its queued-index bucket
--                                                      (all in slot {<queue>})
-- ARGV[1] job  ARGV[2] correlation id ('': the run's own id)
-- ARGV[3] idempotency key as given ('': none; then exactly one run)
-- ARGV[4] idempotency TTL ms  ARGV[5] delay ms (-1: none)  ARGV[6] run-at ms (-1)
-- ARGV[7] wake channel  ARGV[8] extra record fields (JSON object, '' for none)
-- ARGV[9] correlation index TTL ms
-- then per run: ARGV[8+2i] run id  ARGV[9+2i] payload (JSON)
-- Returns per run {run_id, 1 if deduplicated else 0, status}.
-- Safe to repeat (a reply lost on the wire): run ids are made by the caller,
-- so a second call with the same ids finds its own runs and adds nothing.
-- Declared #!lua (not allow-oom): under maxmemory it is refused whole, so no
-- idempotency key is ever left without its run.
local job, correlation, idem = ARGV[1], ARGV[2], ARGV[3]
if idem ~= '' then
  local existing = redis.call('GET', KEYS[4])
  if existing then
    if existing == ARGV[10] then return {{existing, 0, 'repeated'}} end
    return {{existing, 1, 'deduplicated'}}
  end
  redis.call('SET', KEYS[4], ARGV[10], 'PX', ARGV[4])
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

local extra = {}
if ARGV[8] ~= '' then
  for k, v in pairs(cjson.decode(ARGV[8])) do
    extra[#extra + 1] = k
    extra[#extra + 1] = v
  end
end

local q = {stream = KEYS[1], delayed = KEYS[2], wake = ARGV[7]}
local out, created = {}, 0
for i = 1, (#ARGV - 9) / 2 do
  local run_id = ARGV[8 + 2 * i]
  local status = create_run(q, KEYS[4 + 2 * i], KEYS[5 + 2 * i], run_id, job,
    ARGV[9 + 2 * i], correlation, idem, due, now, extra)
  out[i] = {run_id, 0, status}
  if status ~= 'repeated' then
    created = created + 1
    -- Found by correlation id later (the dashboard): ids sort by time.
    if correlation ~= '' then redis.call('ZADD', KEYS[5], 0, run_id) end
  end
end
if created > 0 then
  redis.call('HINCRBY', KEYS[3], 'enqueued', created)
  if correlation ~= '' then redis.call('PEXPIRE', KEYS[5], ARGV[9]) end
end
return out
