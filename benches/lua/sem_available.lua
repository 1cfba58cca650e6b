-- availablePermits() of the Redisson-style expirable-permit semaphore (see
-- sem_acquire.lua; written by us from RPermitExpirableSemaphore's documented
-- behaviour): like every call, it first reclaims the permits whose lease ended
-- (and tells the waiters), then answers the free count.
--   KEYS[1] free-permit count    KEYS[2] "<name>:timeout"    KEYS[3] channel
--   ARGV[1] now, the client's clock in unix ms
-- Returns the number of free permits (0 when the semaphore was never set up).
local expired = redis.call('zrangebyscore', KEYS[2], '-inf', tonumber(ARGV[1]))
if #expired > 0 then
    redis.call('zrem', KEYS[2], unpack(expired))
    local free = redis.call('incrby', KEYS[1], #expired)
    redis.call('publish', KEYS[3], free)
    return free
end
return tonumber(redis.call('get', KEYS[1]) or '0')
