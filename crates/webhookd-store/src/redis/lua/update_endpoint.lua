-- Replaces url and events (and status, unless ARGV[2] is empty; and the
-- rate limit, unless ARGV[6] is 'keep': '' removes it), then tells the
-- other webhookd processes, whose queued claims carry the old values.
-- KEYS: endpoint hash. ARGV: url, status, events JSON, change channel,
-- endpoint id, rate limit, delivery options (as the rate limit: 'keep',
-- '' removes them), payload filter (the same) and its digest, ordering
-- (the same).
if redis.call('EXISTS', KEYS[1]) == 0 then return false end
redis.call('HSET', KEYS[1], 'url', ARGV[1], 'events', ARGV[3])
if ARGV[2] ~= '' then
  -- A status set by its owner is not webhookd's doing; enabling also ends
  -- the failure streak, so the endpoint gets its full time again (SPEC §8).
  redis.call('HSET', KEYS[1], 'status', ARGV[2])
  redis.call('HDEL', KEYS[1], 'disabled_reason')
  if ARGV[2] == 'enabled' then redis.call('HDEL', KEYS[1], 'failing_since') end
end
if ARGV[6] == '' then
  redis.call('HDEL', KEYS[1], 'rate_limit')
elseif ARGV[6] ~= 'keep' then
  redis.call('HSET', KEYS[1], 'rate_limit', ARGV[6])
end
if ARGV[7] == '' then
  redis.call('HDEL', KEYS[1], 'options')
elseif ARGV[7] ~= 'keep' then
  redis.call('HSET', KEYS[1], 'options', ARGV[7])
end
if ARGV[8] == '' then
  redis.call('HDEL', KEYS[1], 'filter', 'filter_digest')
elseif ARGV[8] ~= 'keep' then
  redis.call('HSET', KEYS[1], 'filter', ARGV[8], 'filter_digest', ARGV[9])
end
if ARGV[10] == '' then
  redis.call('HDEL', KEYS[1], 'ordering')
elseif ARGV[10] ~= 'keep' then
  redis.call('HSET', KEYS[1], 'ordering', ARGV[10])
end
redis.call('PUBLISH', ARGV[4], ARGV[5])
return redis.call('HGETALL', KEYS[1])
