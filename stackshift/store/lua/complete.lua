#!lua
-- complete.lua: finish runs with their results; ack and delete their entries.
-- Takes any number of runs of one queue (the batcher merges concurrent
-- completions into one call); each is fenced on its own.
-- KEYS[1] stream  KEYS[2] stats hash, then per run:
-- KEYS[1+2i] run hash  KEYS[2+2i] steps hash          (all in slot {<queue>})
-- ARGV[1] group  ARGV[2] consumer  ARGV[3] retention ms  ARGV[4] finished channel,
-- then per run: ARGV[1+4i] entry id  ARGV[2+4i] deliveries  ARGV[3+4i] run id
-- ARGV[4+4i] result (JSON)
-- Returns, per run, 'ok' or 'lost' (not ours any more: nothing written).
local stream, group, consumer = KEYS[1], ARGV[1], ARGV[2]
local now = now_ms()
local out = {}
for i = 1, (#KEYS - 2) / 2 do
  local run, steps = KEYS[1 + 2 * i], KEYS[2 + 2 * i]
  local entry, deliveries = ARGV[1 + 4 * i], ARGV[2 + 4 * i]
  if owns(stream, group, entry, consumer, deliveries) then
    redis.call('HSET', run, 'status', 'completed', 'result', ARGV[4 + 4 * i],
      'finished_at', now)
    redis.call('HDEL', run, 'error')
    redis.call('XACK', stream, group, entry)
    redis.call('XDEL', stream, entry)
    redis.call('PEXPIRE', run, ARGV[3])
    redis.call('PEXPIRE', steps, ARGV[3])
    redis.call('HINCRBY', KEYS[2], 'completed', 1)
    redis.call('PUBLISH', ARGV[4], ARGV[3 + 4 * i])
    out[i] = 'ok'
  else
    out[i] = 'lost'
  end
end
return out
