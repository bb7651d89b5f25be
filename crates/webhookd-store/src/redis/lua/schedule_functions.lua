-- Lua functions every script that moves a pending delivery in time shares:
-- the flat schedule and the endpoint's own change together. An endpoint's
-- score in the ready queue is a lower bound of its earliest due time: it
-- only ever moves down here (`ZADD LT`, Redis 6.2+), and the claim script,
-- which visits the endpoint anyway, sets it exactly. A score too low costs
-- a claim one empty visit; one too high would hide due work, and cannot
-- happen.
local function refresh_ready(ready, endpoint_due)
  local first = redis.call('ZRANGE', endpoint_due, 0, 0, 'WITHSCORES')
  if first[1] then
    redis.call('ZADD', ready, first[2], endpoint_due)
  else
    redis.call('ZREM', ready, endpoint_due)
  end
end
local function schedule(due, endpoint_due, ready, id, at)
  redis.call('ZADD', due, at, id)
  redis.call('ZADD', endpoint_due, at, id)
  redis.call('ZADD', ready, 'LT', at, endpoint_due)
end
local function unschedule(due, endpoint_due, id)
  redis.call('ZREM', due, id)
  redis.call('ZREM', endpoint_due, id)
end
-- The room left under an endpoint's cluster-wide limit of leases (SPEC
-- §10: `endpoint_concurrency` across every process). `leased` holds the
-- endpoint's leased delivery ids scored by their lease's end: a lease
-- leaves it when its attempt is recorded or handed back, or by itself at
-- its end (a crashed worker's). A limit of 0 is none.
local function free_leases(leased, endpoint_limit, now)
  if endpoint_limit <= 0 then return math.huge end
  redis.call('ZREMRANGEBYSCORE', leased, '-inf', now)
  return endpoint_limit - redis.call('ZCARD', leased)
end
