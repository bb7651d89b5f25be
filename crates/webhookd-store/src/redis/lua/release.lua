-- Hands a lease back, and settles the sending slot of the worker that
-- held it (see settle_slot). KEYS: delivery, endpoint due, ready, the
-- endpoint's sending slots. ARGV: lease, due at, id, slot token, kept until.
settle_slot(KEYS[4], KEYS[3], KEYS[2], ARGV[4], ARGV[5])
if redis.call('HGET', KEYS[1], 'lease') ~= ARGV[1] then return 0 end
redis.call('HDEL', KEYS[1], 'lease')
redis.call('HSET', KEYS[1], 'next_attempt_at', ARGV[2])
schedule(KEYS[2], KEYS[3], ARGV[3], ARGV[2])
return 1
