#!lua
-- event_wait.lua: a run waits for an event of one name. In one atomic call,
-- in the event name's slot: look back over the events of that name routed
-- recently, and if none matches, register the waiter in the name's index. The
-- router (event_route.lua, same slot) appends to the log and probes the index
-- atomically too, so an event routed before the registration is found here and
-- one routed after it finds the waiter: none falls between the two.
-- KEYS[1] the name's log stream  KEYS[2] waiter index (zset by lex)
-- KEYS[3] waiter expiry zset  KEYS[4] match shapes hash   (slot {e:<name>})
-- ARGV[1] member ('<digest>|<since ms>|<run id>|<step key>')  ARGV[2] shape
-- (the sorted match fields, JSON)  ARGV[3] since ms (the run's creation: older
-- events never match)  ARGV[4] expiry ms ('inf': none)  ARGV[5] lookback ms,
-- then pairs of match field, value (JSON)
-- Returns {'matched', event id, data, correlation id, sent ms} or {'waiting'}.
local log, index, expiry, shapes = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local now = now_ms()
local created = tonumber(ARGV[3])
local since = math.max(created, now - tonumber(ARGV[5]))

local function matches(fields)
  local f = {}
  for i = 1, #fields - 1, 2 do f[fields[i]] = fields[i + 1] end
  if tonumber(f.t) < created then return nil end  -- sent before the run existed
  for i = 6, #ARGV - 1, 2 do
    if f['f.' .. ARGV[i]] ~= ARGV[i + 1] then return nil end
  end
  return f
end

-- Oldest first: the first matching event wins.
local from = tostring(since)
while true do
  local batch = redis.call('XRANGE', log, from, '+', 'COUNT', 100)
  for _, e in ipairs(batch) do
    local f = matches(e[2])
    if f then return {'matched', f.i, f.d, f.c, f.t} end
  end
  if #batch < 100 then break end
  from = '(' .. batch[#batch][1]
end

redis.call('ZADD', index, 0, ARGV[1])
redis.call('ZADD', expiry, ARGV[4], ARGV[1])
if redis.call('HSETNX', shapes, ARGV[2], now) == 1 then
  redis.call('HINCRBY', shapes, '#v', 1)  -- routers re-read the shapes
end
return {'waiting'}
