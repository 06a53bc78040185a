#!lua
-- fetch.lua: complete the runs this worker just finished, then read up to COUNT
-- new entries for it and start each one's run: one round trip instead of
-- complete.lua, XREADGROUP and start.lua. Used while the queue has a backlog;
-- an idle worker blocks on XREADGROUP instead (a script cannot block).
-- _start.lua, prepended, starts one entry; _complete.lua completes runs.
-- KEYS[1] stream  KEYS[2] dead zset  KEYS[3] stats hash, then per run to
-- complete: KEYS[2+2i] run hash  KEYS[3+2i] steps hash  (all in slot {<queue>})
-- ARGV[1] group  ARGV[2] consumer  ARGV[3] max deliveries  ARGV[4] dead-letter TTL ms
-- ARGV[5] finished channel  ARGV[6] key base ('<prefix>{<queue>}:', the prefix
-- of KEYS[1]; run and step keys of the entries read are built from it and the
-- run id, so they share the queue's hash slot)  ARGV[7] count  ARGV[8] queue
-- ARGV[9] retention ms of a completed run, then per run to complete (as
-- complete.lua): ARGV[6+4i] entry id  ARGV[7+4i] deliveries  ARGV[8+4i] run id
-- ARGV[9+4i] result (JSON).
-- Returns {per run completed: 'ok' or 'lost' (as complete.lua), per entry read:
-- {entry id, entry fields (flat; for an entry that is not 'gone', only its run
-- id), start() reply}}; an entry without a valid run id of this queue gets
-- {'gone', 1} for the caller to bury.
local completions = complete_runs(stream, group, consumer, stats, ARGV[5], ARGV[9],
  now, (#KEYS - 3) / 2, 2, 6)

local read = redis.call('XREADGROUP', 'GROUP', group, consumer,
  'COUNT', ARGV[7], 'STREAMS', stream, '>')
if not read or not read[1] then  -- nil from Redis, {} from fakeredis
  return {completions, {}}
end
-- Redis: {{stream, entries}}; fakeredis (memory://): {stream, entries}.
local entries = type(read[1]) == 'table' and read[1][2] or read[2]
local queue = ARGV[8]

local function valid(run_id)
  -- As keys.py's run id: 26 Crockford base32 characters, '.', the queue.
  return type(run_id) == 'string' and #run_id == 27 + #queue
    and string.sub(run_id, 27) == '.' .. queue
    and string.find(string.sub(run_id, 1, 26), '^[0-9A-HJKMNP-TV-Z]+$') ~= nil
end

local out = {}
for i, e in ipairs(entries) do
  local entry, fields = e[1], e[2]
  local run_id
  for j = 1, #fields - 1, 2 do
    if fields[j] == 'r' then run_id = fields[j + 1] end
  end
  local reply
  if valid(run_id) then
    reply = start(base .. 'run:' .. run_id, base .. 'steps:' .. run_id, entry, run_id,
      fields)
  else
    reply = {'gone', 1}
  end
  -- The entry's fields go back only for an entry to bury (they are kept in its
  -- dead letter); a started run's job and payload are in start()'s reply already.
  if reply[1] ~= 'gone' then fields = {'r', run_id} end
  out[i] = {entry, fields, reply}
end
return {completions, out}
