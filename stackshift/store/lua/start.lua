#!lua
-- start.lua: a worker takes a batch of delivered entries and starts an attempt
-- of each one's run (one call per fetched batch, not per entry); _start.lua,
-- prepended, holds how one entry is started and what it returns.
-- KEYS[1] stream  KEYS[2] dead zset  KEYS[3] stats hash, then per entry:
-- KEYS[2+2i] run hash  KEYS[3+2i] steps hash           (all in slot {<queue>})
-- ARGV[1] group  ARGV[2] consumer  ARGV[3] max deliveries  ARGV[4] dead-letter TTL ms
-- ARGV[5] finished channel  ARGV[6] key base, then per entry: ARGV[5+2i] entry id
-- ARGV[6+2i] run id
-- Returns one reply of start() per entry.
local out = {}
for i = 1, (#KEYS - 3) / 2 do
  out[i] = start(KEYS[2 + 2 * i], KEYS[3 + 2 * i], ARGV[5 + 2 * i], ARGV[6 + 2 * i])
end
return out
