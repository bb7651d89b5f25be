-- Replaces an endpoint's secret (SPEC §8). With a grace, the current secret
-- becomes the previous one, signing until ARGV[2]; whatever previous secret
-- an earlier rotation left is dropped (at most two live). Without, only the
-- new secret remains. Tells the other webhookd processes, whose held claims
-- carry the old secrets.
-- KEYS: endpoint hash. ARGV: new secret, previous expires at (unix seconds,
-- '' for none), change channel, endpoint id.
if redis.call('EXISTS', KEYS[1]) == 0 then return false end
if ARGV[2] == '' then
  redis.call('HDEL', KEYS[1], 'previous_secret', 'previous_expires_at')
else
  redis.call('HSET', KEYS[1], 'previous_secret', redis.call('HGET', KEYS[1], 'secret'),
    'previous_expires_at', ARGV[2])
end
redis.call('HSET', KEYS[1], 'secret', ARGV[1])
redis.call('PUBLISH', ARGV[3], ARGV[4])
return redis.call('HGETALL', KEYS[1])
