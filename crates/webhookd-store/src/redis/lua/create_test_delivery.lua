-- Creates a test delivery (SPEC §8): one pending delivery of a synthetic
-- event to one endpoint, due now, sent whatever the endpoint's status
-- (field `test`). Returns 0 when the endpoint does not exist.
-- KEYS: ready. ARGV: partition prefix, endpoint hash, user prefix,
-- delivery id, username, endpoint id, event id, event type, body, now,
-- how long its body is kept for inspection (ms, 0: not kept; SPEC §13).
local partition, endpoint, user, id = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
if redis.call('EXISTS', endpoint) == 0 then return 0 end
local fields = {'username', ARGV[5], 'endpoint_id', ARGV[6], 'event_id', ARGV[7],
  'event_type', ARGV[8], 'status', 'pending', 'attempts', 0, 'created_at', ARGV[10],
  'next_attempt_at', ARGV[10], 'test', '1'}
put_pieces(fields, 'body', ARGV[9])
redis.call('HSET', partition .. 'dlv:' .. id, unpack(fields))
schedule(user .. 'ep:' .. ARGV[6] .. ':due', KEYS[1], id, ARGV[10])
redis.call('ZADD', user .. 'ep:' .. ARGV[6] .. ':pending', 0, id)
if ARGV[11] ~= '0' then
  redis.call('SET', user .. 'payload:' .. ARGV[7] .. ':' .. ARGV[10], ARGV[9], 'PX', ARGV[11])
end
return 1
