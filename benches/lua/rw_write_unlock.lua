-- Write unlock of the Redisson-style hash read-write lock (see rw_read_lock.lua).
--   KEYS[1] lock key    KEYS[2] the lock's pub/sub channel
--   ARGV[1] unlock message    ARGV[2] lease in ms    ARGV[3] writer field
-- Returns nil when the owner does not hold the write lock, else 1 (one hold fewer).
-- At zero holds: free (delete + publish), or read mode if the writer also reads.
if redis.call('hget', KEYS[1], 'mode') ~= 'write' then
    return nil
end
if redis.call('hexists', KEYS[1], ARGV[3]) == 0 then
    return nil
end
local counter = redis.call('hincrby', KEYS[1], ARGV[3], -1)
if counter > 0 then
    redis.call('pexpire', KEYS[1], ARGV[2])
    return 1
end
redis.call('hdel', KEYS[1], ARGV[3])
if redis.call('hlen', KEYS[1]) == 1 then
    redis.call('del', KEYS[1])
    redis.call('publish', KEYS[2], ARGV[1])
else
    redis.call('hset', KEYS[1], 'mode', 'read')
end
return 1
