-- Read unlock of the Redisson-style hash read-write lock (see rw_read_lock.lua).
--   KEYS[1] lock key    KEYS[2] the lock's pub/sub channel
--   ARGV[1] unlock message    ARGV[2] reader field (owner)
-- Returns nil when the owner holds no read lock, else 1 (one hold fewer). The last
-- holder out deletes the key and publishes the unlock message.
if redis.call('hexists', KEYS[1], ARGV[2]) == 0 then
    return nil
end
local counter = redis.call('hincrby', KEYS[1], ARGV[2], -1)
if counter == 0 then
    redis.call('hdel', KEYS[1], ARGV[2])
end
if redis.call('hlen', KEYS[1]) > 1 then
    return 1
end
redis.call('del', KEYS[1])
redis.call('publish', KEYS[2], ARGV[1])
return 1
