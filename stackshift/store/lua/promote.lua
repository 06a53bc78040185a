#!lua
-- promote.lua: move due runs from the delayed set to the stream.
-- Any number of workers may call it at once: ZREM decides who moves each run.
-- KEYS[1] delayed zset  KEYS[2] stream  KEYS[3..] run hashes of ARGV's runs
--                                                      (all in slot {<queue>})
-- ARGV[1..] candidate run ids (read by the caller from the head of the zset)
-- Returns {number promoted, server now ms, next due ms or -1}.
local now = now_ms()
local moved = 0
for i = 1, #ARGV do
  local score = redis.call('ZSCORE', KEYS[1], ARGV[i])
  if score and tonumber(score) <= now then
    redis.call('ZREM', KEYS[1], ARGV[i])
    redis.call('XADD', KEYS[2], '*', 'r', ARGV[i])
    if redis.call('HGET', KEYS[i + 2], 'status') == 'scheduled' then
      redis.call('HSET', KEYS[i + 2], 'status', 'queued')
    end
    moved = moved + 1
  end
end
local head = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
local next_due = -1
if #head > 0 then next_due = tonumber(head[2]) end
return {moved, now, next_due}
