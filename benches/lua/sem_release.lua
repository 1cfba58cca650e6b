-- release(permitIds) of the Redisson-style expirable-permit semaphore (see
-- sem_acquire.lua; written by us from RPermitExpirableSemaphore's documented
-- behaviour): a permit is released by its id only, by anyone who has the id.
--   KEYS[1] free-permit count    KEYS[2] "<name>:timeout" (id -> end of lease)
--   KEYS[3] the semaphore's channel
--   ARGV[1] now, the client's clock in unix ms    ARGV[2..] the permit ids
-- Every id still in the sorted set goes back to the free count. An id whose lease had
-- already ended is given back too but not counted as released (its holder had lost it
-- already), and an unknown id is ignored.
-- When permits went back, the new free count is published for the waiters.
-- Returns the number of permits released while their lease was still running.
local now = tonumber(ARGV[1])
local returned = 0
local released = 0
for i = 2, #ARGV do
    local lease_end = redis.call('zscore', KEYS[2], ARGV[i])
    if lease_end then
        redis.call('zrem', KEYS[2], ARGV[i])
        returned = returned + 1
        if tonumber(lease_end) > now then
            released = released + 1
        end
    end
end
if returned > 0 then
    local free = redis.call('incrby', KEYS[1], returned)
    redis.call('publish', KEYS[3], free)
end
return released
