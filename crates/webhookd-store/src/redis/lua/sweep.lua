-- One bounded step of removing what a partition no longer keeps, so no
-- call holds Redis for more than a few milliseconds: at most `budget`
-- deliveries past their retention (`expiry`), then what is left of deleted
-- endpoints (`trash`, see DELETE_ENDPOINT). Returns {removed, 1 if more is
-- left else 0}.
-- KEYS: ready. ARGV: partition prefix, now, budget.
local partition, now, budget = ARGV[1], ARGV[2], tonumber(ARGV[3])
local expiry, trash = partition .. 'expiry', partition .. 'trash'
local removed = 0
-- A partition-wide schedule an older webhookd kept (`<p>:due`, for the
-- gauges; see DELIVERY_COUNTS), freed in the background.
redis.call('UNLINK', partition .. 'due')
local expired = redis.call('ZRANGEBYSCORE', expiry, '-inf', now, 'LIMIT', 0, budget)
for _, id in ipairs(expired) do
  local key = partition .. 'dlv:' .. id
  local d = redis.call('HMGET', key, 'username', 'endpoint_id', 'status')
  if d[3] == 'delivered' or d[3] == 'failed' then
    local user = partition .. 'u:' .. d[1] .. ':'
    -- A deleted endpoint's indexes and dead count are the trash's business.
    if redis.call('EXISTS', user .. 'endpoint:' .. d[2]) == 1 then
      redis.call('ZREM', user .. 'ep:' .. d[2] .. ':' .. d[3], id)
      if d[3] == 'failed' then redis.call('DECR', partition .. 'dead') end
    end
    redis.call('DEL', key)
  end
  removed = removed + 1
end
if #expired > 0 then redis.call('ZREM', expiry, unpack(expired)) end
local left = budget - removed
while left > 0 do
  local base = redis.call('LINDEX', trash, 0)
  if not base then break end
  for _, status in ipairs({'pending', 'delivered', 'failed'}) do
    -- (ZRANGE 0 -1 would be the whole index.)
    if left > 0 then
      local index = base .. status
      local ids = redis.call('ZRANGE', index, 0, left - 1)
      for _, id in ipairs(ids) do
        if status == 'pending' then
          -- The line an ordered endpoint's delivery waited in goes with it.
          local d = redis.call('HMGET', partition .. 'dlv:' .. id, 'username', 'endpoint_id', 'line')
          if d[3] then
            redis.call('DEL', partition .. 'u:' .. d[1] .. ':ep:' .. d[2] .. ':line:' .. d[3])
          end
        end
        redis.call('DEL', partition .. 'dlv:' .. id)
        redis.call('ZREM', expiry, id)
      end
      if #ids > 0 then redis.call('ZREMRANGEBYRANK', index, 0, #ids - 1) end
      left = left - #ids
      removed = removed + #ids
    end
  end
  if left > 0 then
    local trimmed = redis.call('ZREMRANGEBYRANK', base .. 'due', 0, left - 1)
    left = left - trimmed
  end
  -- Every index of this base had less than was asked: it is empty.
  if left > 0 then redis.call('LPOP', trash) end
end
local more = #expired == budget or redis.call('LLEN', trash) > 0
return {removed, more and 1 or 0}
