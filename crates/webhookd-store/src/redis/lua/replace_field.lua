-- Compare-and-set of one field of a hash (re-sealing a secret at rest).
-- KEYS[1] the hash; ARGV[1] field, ARGV[2] expected value, ARGV[3] new one.
-- Returns 1 if replaced, 0 if the field no longer held the expected value.
if redis.call('HGET', KEYS[1], ARGV[1]) ~= ARGV[2] then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
return 1
