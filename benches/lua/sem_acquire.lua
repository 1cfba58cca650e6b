-- A counting semaphore with expirable permits, written by us from the documented
-- behaviour of Redisson's RPermitExpirableSemaphore (not copied from Redisson's
-- source). The semaphore is three keys:
--   KEYS[1] "<name>": a string holding the number of free permits, created once by
--           trySetPermits (SET <name> <limit> NX) and never deleted while in use;
--   KEYS[2] "<name>:timeout": a sorted set of the permits handed out, one member per
--           permit, the member its permit id (a random 128-bit id the client made) and
--           the score the end of its lease (unix ms);
--   KEYS[3] the semaphore's pub/sub channel: whoever frees permits publishes the new
--           number of free permits there; waiting clients subscribe and retry.
-- tryAcquire(permits, leaseTime): one try, never waits (the client waits, see below).
--   ARGV[1] permits wanted    ARGV[2] now, the client's clock in unix ms (Redisson passes
--   the client's System.currentTimeMillis(); the script does not read the server's)
--   ARGV[3] end of the lease (now + leaseTime)    ARGV[4..3+permits] the new permit ids
-- 1. Like every Redisson call on this semaphore, first reclaim the permits whose lease
--    ended (a holder that died gives its permits back on somebody's next call, not at
--    the deadline): remove them and add them back to the free count, and tell the
--    waiters on the channel.
-- 2. Grant when at least `permits` are free, whoever else waits ("works in non-fair
--    mode: order of acquiring is unpredictable"): take them from the free count and
--    record one id per permit with the lease's end. Returns the granted ids.
-- 3. Else return how long (ms) until the first lease ends (-1 when no permit is out):
--    the waiter waits for a message at most that long before it tries again.
local now = tonumber(ARGV[2])
local expired = redis.call('zrangebyscore', KEYS[2], '-inf', now)
if #expired > 0 then
    redis.call('zrem', KEYS[2], unpack(expired))
    local free = redis.call('incrby', KEYS[1], #expired)
    redis.call('publish', KEYS[3], free)
end
local permits = tonumber(ARGV[1])
local free = tonumber(redis.call('get', KEYS[1]) or '0')
if free >= permits then
    redis.call('decrby', KEYS[1], permits)
    local ids = {}
    for i = 1, permits do
        redis.call('zadd', KEYS[2], ARGV[3], ARGV[3 + i])
        ids[i] = ARGV[3 + i]
    end
    return ids
end
local first = redis.call('zrange', KEYS[2], 0, 0, 'WITHSCORES')
if first[2] == nil then
    return -1
end
return math.max(0, tonumber(first[2]) - now)
