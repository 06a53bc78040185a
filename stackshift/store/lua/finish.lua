#!lua
-- finish.lua: runs leave this worker: complete, retry, dead-letter, cancel,
-- suspend or release (_finish.lua). Takes any number of runs of one queue (the
-- batcher merges concurrent finishes into one call); each is fenced on its own.
-- KEYS: the 10 of _finish.lua, then 3 per run; ARGV: the 6 of _finish.lua, then
-- 7 per run. Returns one reply per run.
local f = finish_context(0, 0)
local out = finish_runs(f, 10, 6)
finish_close(f)
return out
