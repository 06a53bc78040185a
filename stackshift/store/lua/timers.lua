#!lua
-- timers.lua: runs whose time has come. A scheduled run (a delay, a retry's
-- backoff) moves from the delayed set to the stream; a suspended run whose
-- sleep is over or whose wait timed out has that recorded and is put back in
-- the stream. Any number of workers may call it at once: the ZSCORE/ZREM here
-- decides who moves each run.
-- KEYS[1] delayed zset  KEYS[2] suspended zset  KEYS[3] stream, then per
-- candidate KEYS[2+2i] run hash  KEYS[3+2i] steps hash  (all in slot {<queue>})
-- ARGV[1] number d of delayed candidates  ARGV[2] mode: 'real' (what is due on
-- the server's clock), 'skip' (tests: every scheduled run and every sleep is
-- due now) or 'skip_all' (and every wait with a timeout times out now), then
-- the candidate run ids (read by the caller from the heads of the sets): d
-- delayed ones, then suspended ones.
-- Returns {scheduled runs moved, suspended runs moved, server now ms, next due
-- ms or -1 (delayed), the same (suspended)}.
local delayed, suspended, stream = KEYS[1], KEYS[2], KEYS[3]
local now = now_ms()
local d, mode = tonumber(ARGV[1]), ARGV[2]

local function due(zset, member)
  local score = tonumber(redis.call('ZSCORE', zset, member))
  return score ~= nil and (score <= now or mode ~= 'real')
end

-- Does this wait of a suspended run come due now?
local function wait_due(wait)
  if not wait.a then return false end
  if mode == 'skip_all' or (mode == 'skip' and wait.k == 'sleep') then
    return true
  end
  return wait.a <= now
end

local moved, woken = 0, 0
for i = 1, #ARGV - 2 do
  local run_id, run, steps = ARGV[i + 2], KEYS[2 + 2 * i], KEYS[3 + 2 * i]
  if i <= d then
    if due(delayed, run_id) then
      redis.call('ZREM', delayed, run_id)
      local id = redis.call('XADD', stream, '*', 'r', run_id)
      if redis.call('HGET', run, 'status') == 'scheduled' then
        redis.call('HSET', run, 'status', 'queued', 'entry', id)
      end
      moved = moved + 1
    end
  elseif due(suspended, run_id) then
    local state = redis.call('HMGET', run, 'status', 'attempt', 'waiting')
    if state[1] == 'suspended' and state[3] then
      local fired = false
      for _, wait in ipairs(cjson.decode(state[3]).w) do
        if wait_due(wait) then
          record_due(steps, state[2], now, wait)
          fired = true
        end
      end
      if fired then
        requeue(stream, suspended, run, run_id)
        woken = woken + 1
      end
    else
      redis.call('ZREM', suspended, run_id)  -- not suspended any more
      woken = woken + 1
    end
  end
end

local function head(zset)
  local h = redis.call('ZRANGE', zset, 0, 0, 'WITHSCORES')
  local score = h[2] and tonumber(h[2])
  if score and score < 1e15 then return score end
  return -1  -- empty, or only runs that wait with no deadline
end
return {moved, woken, now, head(delayed), head(suspended)}
