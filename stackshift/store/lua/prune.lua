#!lua flags=allow-oom
-- prune.lua: delete a consumer of the group, only if it has no pending entry.
-- XGROUP DELCONSUMER drops a consumer's pending entries for good, so the check
-- and the delete must be one atomic step.
-- KEYS[1] stream                                        (slot {<queue>})
-- ARGV[1] group  ARGV[2] consumer
-- Returns 1 if deleted, 0 if it still has pending entries.
local p = redis.call('XPENDING', KEYS[1], ARGV[1], '-', '+', 1, ARGV[2])
if #p > 0 then
  return 0
end
redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], ARGV[2])
return 1
