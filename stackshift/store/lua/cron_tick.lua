#!lua
-- cron_tick.lua: make the run of one cron tick, once, however many workers
-- try: the schedule's last tick only moves forward, and the run id is derived
-- from the schedule's name and the tick. The next tick does not depend on this
-- run at all (a crashed or slow run never stops the schedule).
-- KEYS[1] the cron's hash  KEYS[2] stream  KEYS[3] delayed zset  KEYS[4] stats
-- KEYS[5] the tick's run hash  KEYS[6] its queued-index bucket (slot {<queue>})
-- ARGV[1] tick ms  ARGV[2] ticks missed before it  ARGV[3] job  ARGV[4] payload
-- ARGV[5] run id  ARGV[6] wake channel  ARGV[7] schedule  ARGV[8] time zone
-- Returns {'made'|'repeated'|'done'|'early', last tick ms, server now ms}:
-- 'done': this tick (or a later one) was made already; 'early': not due yet.
local cron = KEYS[1]
local now, tick = now_ms(), tonumber(ARGV[1])
local last = tonumber(redis.call('HGET', cron, 'last') or '-1')
if last >= tick then return {'done', last, now} end
if tick > now then return {'early', last, now} end
redis.call('HSET', cron, 'last', tick, 'run', ARGV[5], 'schedule', ARGV[7],
  'tz', ARGV[8], 'job', ARGV[3], 'updated_at', now)
if tonumber(ARGV[2]) > 0 then
  redis.call('HINCRBY', cron, 'missed', ARGV[2])
end
local q = {stream = KEYS[2], delayed = KEYS[3], wake = ARGV[6]}
local status = create_run(q, KEYS[5], KEYS[6], ARGV[5], ARGV[3], ARGV[4], '', '',
  nil, now, {'cron_tick', tick})
if status ~= 'repeated' then
  redis.call('HINCRBY', KEYS[4], 'enqueued', 1)
  return {'made', tick, now}
end
return {'repeated', tick, now}
