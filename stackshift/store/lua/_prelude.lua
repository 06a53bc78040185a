-- _prelude.lua: prepended by scripts.py to every script (after its flags line).

-- Server clock in ms: due times and timestamps never depend on a worker's clock.
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- Fencing token check: does `consumer` still own stream entry `entry`, at
-- delivery count `deliveries`? XACK takes no consumer, so every script that
-- acks, checkpoints, renews or completes asks XPENDING first. A worker paused
-- past its lease (whose entry was reclaimed, bumping the count) fails here.
-- deliveries = '-1' checks the owner only.
local function owns(stream, group, entry, consumer, deliveries)
  local p = redis.call('XPENDING', stream, group, entry, entry, 1)
  if #p == 0 or p[1][2] ~= consumer then
    return false
  end
  return deliveries == '-1' or tonumber(p[1][4]) == tonumber(deliveries)
end

-- Where a queued run that has no record yet is indexed (keys.py's
-- QueueKeys.queued_index): a hash per millisecond of run ids (the first 10
-- characters of a run id are its time), field = the rest of the id's 26
-- characters, value = its stream entry id. Small hashes are stored compactly.
local function queued_index(base, run_id)
  return base .. 'queued:' .. string.sub(run_id, 1, 10), string.sub(run_id, 11, 26)
end
