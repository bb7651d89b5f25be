-- Hands a lease back. KEYS: delivery, due, endpoint due, ready, the
-- endpoint's leases. ARGV: lease, due at, id.
if redis.call('HGET', KEYS[1], 'lease') ~= ARGV[1] then return 0 end
redis.call('HDEL', KEYS[1], 'lease')
redis.call('ZREM', KEYS[5], ARGV[3])
redis.call('HSET', KEYS[1], 'next_attempt_at', ARGV[2])
schedule(KEYS[2], KEYS[3], KEYS[4], ARGV[3], ARGV[2])
return 1
