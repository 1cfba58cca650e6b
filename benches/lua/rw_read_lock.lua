-- A hash-based read-write lock written by us from the documented behaviour of
-- Redisson's RReadWriteLock (simplified: one PEXPIRE lease for the whole hash, no
-- per-reader timeout keys). The hash has field 'mode' ('read' or 'write') and one
-- field per holder with its hold count; a writer's field is "<owner>:write".
-- Read lock:
--   KEYS[1] lock key    ARGV[1] lease in ms    ARGV[2] reader field (owner)
--   ARGV[3] the same owner's writer field (a writer may take the read lock too)
-- Returns nil when granted, else the remaining lease (PTTL) in ms.
local mode = redis.call('hget', KEYS[1], 'mode')
if mode == false then
    redis.call('hset', KEYS[1], 'mode', 'read', ARGV[2], 1)
    redis.call('pexpire', KEYS[1], ARGV[1])
    return nil
end
if (mode == 'read') or (mode == 'write' and redis.call('hexists', KEYS[1], ARGV[3]) == 1) then
    redis.call('hincrby', KEYS[1], ARGV[2], 1)
    local remaining = redis.call('pttl', KEYS[1])
    redis.call('pexpire', KEYS[1], math.max(remaining, tonumber(ARGV[1])))
    return nil
end
return redis.call('pttl', KEYS[1])
