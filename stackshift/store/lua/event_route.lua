#!lua
-- event_route.lua: an event reaches its name's slot: it joins the name's log
-- (which waits look back over) and claims every waiter whose match it fits,
-- found through the index by digest, never by a scan of waiters. What it
-- claimed is kept (the routed key), so a redelivered event claims the same
-- waiters again and no others. See event_wait.lua for why there is no race.
-- KEYS[1] log stream  KEYS[2] waiter index  KEYS[3] waiter expiry zset
-- KEYS[4] match shapes hash  KEYS[5] this event's routed key (slot {e:<name>})
-- ARGV[1] event id  ARGV[2] data (JSON)  ARGV[3] correlation id  ARGV[4] sent
-- ms  ARGV[5] shapes version the caller computed digests for  ARGV[6] lookback
-- ms  ARGV[7] routed-key TTL ms  ARGV[8] number n of digests, then the digests
-- (one per shape the event fits), then the event's top-level scalar fields as
-- pairs of name, value (JSON) for the log.
-- Returns {'ok', '{"t": sent ms, "w": [waiter members claimed]}'} (the first
-- routing's: an event routed again, from the same entry or another, gets the
-- same send time and claims), or {'shapes', version, shapes}: the caller's
-- shapes are stale; compute the digests again.
local log, index, expiry, shapes, routed = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local done = redis.call('GET', routed)
if done then return {'ok', done} end
local version = redis.call('HGET', shapes, '#v') or '0'
if version ~= ARGV[5] then
  return {'shapes', version, redis.call('HKEYS', shapes)}
end
local now, sent = now_ms(), tonumber(ARGV[4])
local n = tonumber(ARGV[8])

local entry = {'i', ARGV[1], 'd', ARGV[2], 'c', ARGV[3], 't', ARGV[4]}
for i = 9 + n, #ARGV - 1, 2 do
  entry[#entry + 1] = 'f.' .. ARGV[i]
  entry[#entry + 1] = ARGV[i + 1]
end
redis.call('XADD', log, 'MINID', '~', now - tonumber(ARGV[6]), '*', unpack(entry))

-- Waiters past their expiry leave the index (their runs timed out long ago).
local old = redis.call('ZRANGEBYSCORE', expiry, '-inf', now, 'LIMIT', 0, 100)
if #old > 0 then
  redis.call('ZREM', index, unpack(old))
  redis.call('ZREM', expiry, unpack(old))
end

local claims = {}
for i = 9, 8 + n do
  local digest = ARGV[i]
  for _, member in ipairs(redis.call('ZRANGEBYLEX', index, '[' .. digest .. '|',
      '(' .. digest .. '}')) do
    -- Only waiters registered for events sent after their run began.
    local since = tonumber(string.match(member, '^[^|]*|(%d+)|'))
    if since and since <= sent then
      claims[#claims + 1] = member
      redis.call('ZREM', index, member)
      redis.call('ZREM', expiry, member)
    end
  end
end
local claimed = #claims > 0 and cjson.encode(claims) or '[]'
local record = '{"t":' .. ARGV[4] .. ',"w":' .. claimed .. '}'
redis.call('SET', routed, record, 'PX', ARGV[7])
return {'ok', record}
