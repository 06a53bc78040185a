-- _prelude.lua: prepended by scripts.py to every script (after its flags line).

-- Server clock in ms: due times and timestamps never depend on a worker's clock.
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- Fencing token check: does `consumer` still own stream entry `entry`, at
-- delivery count `deliveries`? XACK takes no consumer, so every script that
-- acks, checkpoints, renews or finishes asks XPENDING first. A worker paused
-- past its lease (whose entry was reclaimed, bumping the count) fails here.
-- deliveries = '-1' checks the owner only.
local function owns(stream, group, entry, consumer, deliveries)
  local p = redis.call('XPENDING', stream, group, entry, entry, 1)
  if #p == 0 or p[1][2] ~= consumer then
    return false
  end
  return deliveries == '-1' or tonumber(p[1][4]) == tonumber(deliveries)
end

-- Add `member` to the timer set `zset` at `due`; when it becomes the earliest,
-- tell the queue's schedulers (they sleep until the earliest due time).
local function add_timer(zset, due, member, wake)
  redis.call('ZADD', zset, due, member)
  if wake ~= '' then
    local head = redis.call('ZRANGE', zset, 0, 0)
    if head[1] == member then redis.call('SPUBLISH', wake, due) end
  end
end

-- A step record, as serialization.StepRecord encodes it: `value` and `err`
-- are raw JSON; kind: 'sleep', 'event' or 'invoke'. n: its order in the run
-- (after those recorded); a: the attempt it belongs to.
local function step_record(steps, attempt, now, kind, value, err)
  local n = redis.call('HLEN', steps) + 1
  local rec = '{"n":' .. n .. ',"a":' .. (attempt or 0) .. ',"t":' .. now ..
    ',"v":' .. value .. ',"k":"' .. kind .. '"'
  if err and err ~= '' then rec = rec .. ',"e":' .. err end
  return rec .. '}'
end

-- A failed attempt that is retried (_finish.lua) or re-driven (redrive.lua),
-- in the run's attempt log (the last attempt is the record itself): when it
-- ran, where, and why it failed.
local function log_attempt(run, err)
  local r = redis.call('HMGET', run, 'attempt', 'started_at', 'worker', 'attempts')
  local e = cjson.decode(err)
  local log = r[4] and cjson.decode(r[4]) or {}
  log[#log + 1] = {attempt = tonumber(r[1]), started_at = tonumber(r[2]),
    worker = r[3], type = e.type, message = string.sub(tostring(e.message), 1, 500)}
  redis.call('HSET', run, 'attempts', cjson.encode(log))
end
