#!lua
-- bury.lua: dead-letter an entry that names no usable run (undecodable fields,
-- or a run record that is gone), keeping what it held for inspection.
-- KEYS: the 10 of _finish.lua, then KEYS[11] a new run hash  KEYS[12] its steps
-- ARGV: the 6 of _finish.lua, then ARGV[7] entry id  ARGV[8] new run id
-- ARGV[9] entry fields (JSON)  ARGV[10] error (JSON)    (all in slot {<queue>})
-- Returns {'ok'} or {'lost'}.
local f = finish_context(0, 0)
local entry = ARGV[7]
if not owns(f.stream, f.group, entry, f.consumer, '-1') then
  return {'lost'}
end
redis.call('HSET', KEYS[11], 'job', '', 'payload', ARGV[9], 'created_at', f.now,
  'entry', entry)
dead_letter(f, KEYS[11], KEYS[12], ARGV[8], ARGV[10])
f.acked[1] = entry
finish_close(f)
return {'ok'}
