-- Recovers up to ARGV[4] dead deliveries of one endpoint created in a
-- window, oldest first (SPEC §8): each becomes pending, due now, for one
-- last attempt, exactly as a single re-send does. Delivery ids are UUIDv7,
-- so the failed index's lexical order is creation order and the window is
-- a lexical range. Returns how many were recovered.
-- KEYS: ready. ARGV: partition prefix, user prefix, endpoint id,
-- most, now, lowest id (inclusive), highest id (exclusive).
local partition, user, endpoint_id, most, now = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4]), ARGV[5]
local failed = user .. 'ep:' .. endpoint_id .. ':failed'
local pending = user .. 'ep:' .. endpoint_id .. ':pending'
local endpoint_due = user .. 'ep:' .. endpoint_id .. ':due'
local ids = redis.call('ZRANGEBYLEX', failed, '[' .. ARGV[6], '(' .. ARGV[7], 'LIMIT', 0, most)
for _, id in ipairs(ids) do
  local key = partition .. 'dlv:' .. id
  redis.call('HSET', key, 'status', 'pending', 'next_attempt_at', now, 'last_attempt', '1')
  -- Outside its line, as a re-send (RETRY_DEAD).
  redis.call('HDEL', key, 'lease', 'line')
  schedule(endpoint_due, KEYS[1], id, now)
  redis.call('ZADD', pending, 0, id)
  redis.call('ZREM', partition .. 'expiry', id)
  redis.call('ZREM', failed, id)
end
if #ids > 0 then redis.call('DECRBY', partition .. 'dead', #ids) end
return #ids
