-- Deletes an endpoint in O(1), whatever its backlog: the endpoint and its
-- place in the ready queue go at once (so its retries stop), and its
-- delivery indexes are renamed under a trash base that SWEEP empties in
-- bounded steps, deleting the deliveries they list. Tells the other
-- webhookd processes, whose queued claims may be for it.
-- KEYS: endpoints, endpoint hash, ready, endpoint due, pending index,
-- delivered index, failed index, trash list, leases. ARGV: endpoint id, trash base,
-- dead counter key, change channel.
if redis.call('ZREM', KEYS[1], ARGV[1]) == 0 then return 0 end
redis.call('DEL', KEYS[2], KEYS[9])
redis.call('ZREM', KEYS[3], KEYS[4])
-- Its dead deliveries stop counting now, not when they are swept.
redis.call('DECRBY', ARGV[3], redis.call('ZCARD', KEYS[7]))
local moved = 0
for i, suffix in ipairs({'due', 'pending', 'delivered', 'failed'}) do
  if redis.call('EXISTS', KEYS[3 + i]) == 1 then
    redis.call('RENAME', KEYS[3 + i], ARGV[2] .. suffix)
    moved = moved + 1
  end
end
if moved > 0 then redis.call('RPUSH', KEYS[8], ARGV[2]) end
redis.call('PUBLISH', ARGV[4], ARGV[1])
return 1
