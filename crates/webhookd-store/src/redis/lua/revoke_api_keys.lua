-- Removes a user's API keys and portal links; returns how many keys.
-- KEYS[1] {keys}:by_hash, KEYS[2] {keys}:user:<name>,
-- KEYS[3] {keys}:links, KEYS[4] {keys}:user_links:<name>
local hashes = redis.call('SMEMBERS', KEYS[2])
for _, hash in ipairs(hashes) do redis.call('HDEL', KEYS[1], hash) end
redis.call('DEL', KEYS[2])
for _, hash in ipairs(redis.call('SMEMBERS', KEYS[4])) do redis.call('HDEL', KEYS[3], hash) end
redis.call('DEL', KEYS[4])
return #hashes
