#!lua
-- start.lua: a worker takes a batch of delivered entries and starts an attempt
-- of each one's run (_start.lua), and carries the finishes of this consumer
-- that were waiting to go out (_finish.lua): one round trip, not two.
-- KEYS: the 10 of _finish.lua (KEYS[1] is the stream), then per entry
-- KEYS[8+3i] run hash  KEYS[9+3i] steps hash  KEYS[10+3i] its queued-index
-- bucket, then 3 per run to finish                       (all in slot {<queue>})
-- ARGV: the 6 of _finish.lua, ARGV[7] max deliveries, ARGV[8] entries n, then
-- per entry ARGV[6+3i] entry id  ARGV[7+3i] run id  ARGV[8+3i] '1' if the
-- worker started the run early from its entry (it has job and payload: the
-- reply need not send them back), else '0'; then 7 per run to finish.
-- Returns {one reply of _finish.lua per run finished, one of start() per entry}.
local f = finish_context(0, 0)
local max, n = tonumber(ARGV[7]), tonumber(ARGV[8])
local finished = finish_runs(f, 10 + 3 * n, 8 + 3 * n)
local out = {}
for i = 1, n do
  local k, a = 10 + 3 * (i - 1), 8 + 3 * (i - 1)
  out[i] = start(f, max, KEYS[k + 1], KEYS[k + 2], KEYS[k + 3], ARGV[a + 1],
    ARGV[a + 2], ARGV[a + 3] == '1')
end
finish_close(f)
return {finished, out}
