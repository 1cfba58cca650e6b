-- Release of the Redisson-style reentrant lock (see reentrant_lock.lua; written by us
-- from Redisson's documented behaviour). Waiters subscribe to the lock's channel and
-- retry when an unlock message arrives.
--   KEYS[1] lock key    KEYS[2] the lock's pub/sub channel
--   ARGV[1] unlock message    ARGV[2] lease in ms    ARGV[3] owner id
-- Returns nil when the owner holds nothing, 0 when it still holds (count > 0, lease
-- reset), 1 when the lock is free (key deleted, unlock message published).
if redis.call('hexists', KEYS[1], ARGV[3]) == 0 then
    return nil
end
local counter = redis.call('hincrby', KEYS[1], ARGV[3], -1)
if counter > 0 then
    redis.call('pexpire', KEYS[1], ARGV[2])
    return 0
end
redis.call('del', KEYS[1])
redis.call('publish', KEYS[2], ARGV[1])
return 1
