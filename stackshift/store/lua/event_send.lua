#!lua
-- event_send.lua: accept an event for routing, once per (name, event id)
-- within the dedupe TTL. The workers' event routers read the events stream
-- through its consumer group (worker/events.py).
-- KEYS[1] events stream  KEYS[2] the event id's seen key   (slot {events})
-- ARGV[1] event name  ARGV[2] event id  ARGV[3] data (JSON)  ARGV[4] correlation
-- id  ARGV[5] dedupe TTL ms  ARGV[6] this call's token (random)
-- Returns {'sent', entry id} or {'duplicate', entry id of the first}. Safe to
-- repeat: the same call sent again (a lost reply) finds its own token, 'sent'.
local seen = redis.call('GET', KEYS[2])
if seen then
  local token, id = string.match(seen, '^(%S+) (%S+)$')
  if token == ARGV[6] then return {'sent', id} end
  return {'duplicate', id or seen}
end
local id = redis.call('XADD', KEYS[1], '*', 'n', ARGV[1], 'i', ARGV[2],
  'd', ARGV[3], 'c', ARGV[4])
redis.call('SET', KEYS[2], ARGV[6] .. ' ' .. id, 'PX', ARGV[5])
return {'sent', id}
