-- The classic Redis lock's release (the Redlock recipe): delete the key only if it
-- still holds our random value, so a client whose lease ran out cannot free a lock
-- someone else took since. Sent with EVALSHA.
--   KEYS[1] lock key    ARGV[1] owner value given to SET key owner NX PX ttl
-- Returns 1 when it deleted the lock, 0 when the key holds another value or is gone.
if redis.call('get', KEYS[1]) == ARGV[1] then
    return redis.call('del', KEYS[1])
else
    return 0
end
