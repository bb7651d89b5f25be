-- Creates an endpoint unless its owner has ARGV[1] already. KEYS:
-- endpoints, endpoint hash, sequence. ARGV: limit, id, url, secret,
-- status, events JSON, username, created at, rate limit ('' none),
-- delivery options ('' none), payload filter and its digest ('' none),
-- ordering ('=' and its pointer; '' unordered).
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[1]) then return 0 end
local seq = redis.call('INCR', KEYS[3])
redis.call('HSET', KEYS[2], 'endpoint_id', ARGV[2], 'url', ARGV[3], 'secret', ARGV[4],
  'status', ARGV[5], 'events', ARGV[6], 'username', ARGV[7], 'created_at', ARGV[8])
if ARGV[9] ~= '' then redis.call('HSET', KEYS[2], 'rate_limit', ARGV[9]) end
if ARGV[10] ~= '' then redis.call('HSET', KEYS[2], 'options', ARGV[10]) end
if ARGV[11] ~= '' then redis.call('HSET', KEYS[2], 'filter', ARGV[11], 'filter_digest', ARGV[12]) end
if ARGV[13] ~= '' then redis.call('HSET', KEYS[2], 'ordering', ARGV[13]) end
redis.call('ZADD', KEYS[1], seq, ARGV[2])
return 1
