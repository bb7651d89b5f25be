-- Makes a dead delivery pending again for one last attempt (SPEC §8): if
-- that fails too, it is dead again. KEYS: delivery, failed index,
-- pending index, endpoint due, ready. ARGV: now, id, partition prefix.
-- Returns the status before, or false.
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return false end
if status ~= 'failed' then return status end
redis.call('HSET', KEYS[1], 'status', 'pending', 'next_attempt_at', ARGV[1], 'last_attempt', '1')
-- A re-send is outside its line (SPEC §15): the operator asked for it now.
redis.call('HDEL', KEYS[1], 'lease', 'line')
schedule(KEYS[4], KEYS[5], ARGV[2], ARGV[1])
redis.call('ZREM', KEYS[2], ARGV[2])
redis.call('ZADD', KEYS[3], 0, ARGV[2])
redis.call('ZREM', ARGV[3] .. 'expiry', ARGV[2])
redis.call('DECR', ARGV[3] .. 'dead')
return 'failed'
