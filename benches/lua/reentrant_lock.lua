-- A reentrant, hash-based lock written by us from the documented behaviour of
-- Redisson's RLock (not copied from Redisson's source): the lock is a hash of
-- owner id -> hold count with a PEXPIRE lease. Acquire:
--   KEYS[1] lock key    ARGV[1] lease in ms    ARGV[2] owner id ("uuid:thread")
-- Returns nil when granted (fresh or reentrant: hold count + 1, lease reset), or the
-- lock's remaining lease in ms (PTTL) when another owner holds it; waiters use that
-- as the longest time to wait for an unlock message before they try again.
if (redis.call('exists', KEYS[1]) == 0) or (redis.call('hexists', KEYS[1], ARGV[2]) == 1) then
    redis.call('hincrby', KEYS[1], ARGV[2], 1)
    redis.call('pexpire', KEYS[1], ARGV[1])
    return nil
end
return redis.call('pttl', KEYS[1])
