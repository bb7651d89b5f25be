-- Signs in with a portal link once (SPEC §9): the link is forgotten and a
-- portal session takes its place, same user, same expiry.
-- KEYS[1] {keys}:links
-- ARGV[1] link hash, ARGV[2] session hash, ARGV[3] now (unix seconds),
-- ARGV[4] the user_links key of a user, without the name (same hash slot).
-- Returns the link as stored (`<expires_at> <username>`), or false when it
-- is unknown, used or expired.
local link = redis.call('HGET', KEYS[1], ARGV[1])
if not link then return false end
local expires_at, username = string.match(link, '^(%d+) (.*)$')
local user_links = ARGV[4] .. (username or '')
redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('SREM', user_links, ARGV[1])
if not expires_at or tonumber(expires_at) <= tonumber(ARGV[3]) then return false end
redis.call('HSET', KEYS[1], ARGV[2], link)
redis.call('SADD', user_links, ARGV[2])
return link
