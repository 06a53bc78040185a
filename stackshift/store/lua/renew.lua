#!lua flags=allow-oom
-- renew.lua: keep this worker's leases fresh (reset the idle clock of its entries).
-- allow-oom: renewing frees nothing but must not stop when Redis is full, or
-- every in-flight run would be reclaimed at once.
-- KEYS[1] stream  KEYS[2] cancel requests hash             (slot {<queue>})
-- ARGV[1] group  ARGV[2] consumer  ARGV[3..] pairs of entry id, deliveries
-- Returns {entry ids this worker no longer owns (their runs must stop), entry
-- ids whose runs were asked to cancel (a backstop for the cancel channel)}.
local lost, cancel = {}, {}
for i = 3, #ARGV, 2 do
  local entry = ARGV[i]
  if owns(KEYS[1], ARGV[1], entry, ARGV[2], ARGV[i + 1]) then
    -- JUSTID: the idle clock resets, the delivery count (our fence) does not move.
    redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, entry, 'JUSTID')
    if redis.call('HEXISTS', KEYS[2], entry) == 1 then
      cancel[#cancel + 1] = entry
    end
  else
    lost[#lost + 1] = entry
  end
end
return {lost, cancel}
