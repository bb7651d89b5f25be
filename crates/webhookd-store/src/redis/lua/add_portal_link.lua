-- Registers a portal link (SPEC §9) for an existing user, first forgetting
-- that user's links that have expired, so links cannot pile up.
-- KEYS[1] {keys}:users, KEYS[2] {keys}:links, KEYS[3] {keys}:user_links:<name>
-- ARGV[1] username, ARGV[2] token hash, ARGV[3] expires_at, ARGV[4] now
-- (unix seconds). Returns 1, or 0 when there is no such user.
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 then return 0 end
local now = tonumber(ARGV[4])
for _, hash in ipairs(redis.call('SMEMBERS', KEYS[3])) do
  local link = redis.call('HGET', KEYS[2], hash)
  local expires_at = link and tonumber(string.match(link, '^%d+'))
  if not expires_at or expires_at <= now then
    redis.call('HDEL', KEYS[2], hash)
    redis.call('SREM', KEYS[3], hash)
  end
end
redis.call('HSET', KEYS[2], ARGV[2], ARGV[3] .. ' ' .. ARGV[1])
redis.call('SADD', KEYS[3], ARGV[2])
return 1
