local hashes = redis.call('SMEMBERS', KEYS[2])
for _, hash in ipairs(hashes) do redis.call('HDEL', KEYS[1], hash) end
redis.call('DEL', KEYS[2])
return #hashes
