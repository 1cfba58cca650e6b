-- Write lock of the Redisson-style hash read-write lock (see rw_read_lock.lua; written
-- by us from Redisson's documented behaviour).
--   KEYS[1] lock key    ARGV[1] lease in ms    ARGV[2] writer field ("<owner>:write")
-- Returns nil when granted (free, or reentrant by the same writer), else PTTL in ms.
local mode = redis.call('hget', KEYS[1], 'mode')
if mode == false then
    redis.call('hset', KEYS[1], 'mode', 'write', ARGV[2], 1)
    redis.call('pexpire', KEYS[1], ARGV[1])
    return nil
end
if mode == 'write' and redis.call('hexists', KEYS[1], ARGV[2]) == 1 then
    redis.call('hincrby', KEYS[1], ARGV[2], 1)
    redis.call('pexpire', KEYS[1], ARGV[1])
    return nil
end
return redis.call('pttl', KEYS[1])
