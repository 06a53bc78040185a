-- _complete.lua: finishing runs with their results, shared by complete.lua and
-- fetch.lua (which completes the runs a worker just finished, then reads more:
-- one call instead of two). Each run is fenced on its own: one whose entry is
-- no longer ours is left alone. Per call, not per run: one XACK and one XDEL
-- for all the entries, one HINCRBY of the stats.
-- Run i (1..n) has KEYS[k0 + 2i] run hash, KEYS[k0 + 1 + 2i] steps hash and
-- ARGV[a0 + 4i] entry id, ARGV[a0 + 1 + 4i] deliveries, ARGV[a0 + 2 + 4i] run id,
-- ARGV[a0 + 3 + 4i] result (JSON).
-- Returns, per run, 'ok' (also for a repeat of a completion that was written)
-- or 'lost' (not ours any more: nothing written).
local function complete_runs(stream, group, consumer, stats, channel, retention,
    now, n, k0, a0)
  local out, acked = {}, {}
  for i = 1, n do
    local run, steps = KEYS[k0 + 2 * i], KEYS[k0 + 1 + 2 * i]
    local entry, deliveries = ARGV[a0 + 4 * i], ARGV[a0 + 1 + 4 * i]
    if owns(stream, group, entry, consumer, deliveries) then
      redis.call('HSET', run, 'status', 'completed', 'result', ARGV[a0 + 3 + 4 * i],
        'finished_at', now)
      redis.call('HDEL', run, 'error')
      redis.call('PEXPIRE', run, retention)
      redis.call('PEXPIRE', steps, retention)
      redis.call('PUBLISH', channel, ARGV[a0 + 2 + 4 * i])
      acked[#acked + 1] = entry
      out[i] = 'ok'
    else
      -- Not ours any more, or already done: a completion sent again (its
      -- first reply was lost) finds its own write, and is told 'ok'.
      local done = redis.call('HMGET', run, 'status', 'entry', 'worker')
      local repeated = done[1] == 'completed' and done[2] == entry
        and done[3] == consumer
      out[i] = repeated and 'ok' or 'lost'
    end
  end
  if #acked > 0 then
    redis.call('XACK', stream, group, unpack(acked))
    redis.call('XDEL', stream, unpack(acked))
    redis.call('HINCRBY', stats, 'completed', #acked)
  end
  return out
end
