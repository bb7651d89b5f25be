-- Records a batch of attempts of one partition, each only if its lease
-- still matches: 1 if recorded, else 0. A delivered or dead delivery is
-- indexed for the listings and scheduled for removal at the end of its
-- retention (SWEEP); one whose endpoint was deleted meanwhile is dropped.
-- KEYS: due, ready. ARGV: partition prefix, then per attempt 8 values:
-- delivery id, user prefix, endpoint id, lease, attempt number, result
-- (retry|delivered|failed), when (a retry's due time, else the removal
-- time), attempt JSON.
local partition = ARGV[1]
local expiry = partition .. 'expiry'
local results = {}
for a = 2, #ARGV, 8 do
  local id, user, endpoint_id, lease, number, result, at, log = ARGV[a], ARGV[a + 1],
    ARGV[a + 2], ARGV[a + 3], ARGV[a + 4], ARGV[a + 5], ARGV[a + 6], ARGV[a + 7]
  local key = partition .. 'dlv:' .. id
  if redis.call('HGET', key, 'lease') ~= lease then
    results[#results + 1] = 0
  else
    local endpoint_due = user .. 'ep:' .. endpoint_id .. ':due'
    if redis.call('EXISTS', user .. 'endpoint:' .. endpoint_id) == 0 then
      unschedule(KEYS[1], endpoint_due, id)
      redis.call('DEL', key)
    elseif result == 'retry' then
      redis.call('HDEL', key, 'lease')
      redis.call('HSET', key, 'attempts', number, 'next_attempt_at', at, 'attempt:' .. number, log)
      schedule(KEYS[1], endpoint_due, KEYS[2], id, at)
    else
      redis.call('HDEL', key, 'lease', 'last_attempt')
      redis.call('HSET', key, 'attempts', number, 'status', result, 'attempt:' .. number, log)
      if result == 'failed' then redis.call('INCR', partition .. 'dead') end
      unschedule(KEYS[1], endpoint_due, id)
      redis.call('ZREM', user .. 'ep:' .. endpoint_id .. ':pending', id)
      redis.call('ZADD', user .. 'ep:' .. endpoint_id .. ':' .. result, 0, id)
      redis.call('ZADD', expiry, at, id)
    end
    results[#results + 1] = 1
  end
end
return results
