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
