#!lua
-- complete.lua: finish runs with their results; ack and delete their entries.
-- Takes any number of runs of one queue (the batcher merges concurrent
-- completions into one call); each is fenced on its own (_complete.lua).
-- KEYS[1] stream  KEYS[2] stats hash, then per run:
-- KEYS[1+2i] run hash  KEYS[2+2i] steps hash          (all in slot {<queue>})
-- ARGV[1] group  ARGV[2] consumer  ARGV[3] retention ms  ARGV[4] finished channel,
-- then per run: ARGV[1+4i] entry id  ARGV[2+4i] deliveries  ARGV[3+4i] run id
-- ARGV[4+4i] result (JSON)
-- Returns, per run, 'ok' (also for a repeat of a completion that was written)
-- or 'lost' (not ours any more: nothing written).
return complete_runs(KEYS[1], ARGV[1], ARGV[2], KEYS[2], ARGV[4], ARGV[3], now_ms(),
  (#KEYS - 2) / 2, 1, 1)
