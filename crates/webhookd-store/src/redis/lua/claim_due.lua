-- Leases due deliveries of one partition, endpoint by endpoint in the order
-- of their earliest due delivery, at most `room` per endpoint: each claimed
-- id's due time moves to the lease's end, so a worker that dies leaves it
-- due again then. Deliveries of deleted endpoints are dropped; of disabled
-- ones, parked (test deliveries excepted). An endpoint with a rate limit
-- gets no more than its bucket's tokens (see rate_tokens). Under a
-- cluster-wide limit the
-- first claims of an endpoint come with sending slots (see free_slots),
-- at most what the limit leaves free; an endpoint with no slot free and
-- none in the caller's lane gets nothing, and its place in the ready queue
-- moves to when its first slot lapses (a slot given up moves it back at
-- once), so it does not hide other endpoints.
-- Slow and failing endpoints ('1' in their quad) share `suspect room`
-- claims between them, in the order they come due.
-- KEYS: ready. ARGV: now, lease until, limit, partition prefix, park
-- until, lease token base, room of other endpoints, sending slots per
-- endpoint across every process (0: no limit), suspect room, then
-- (endpoint id, room, slots the caller's lane holds, '1' if suspect)
-- quads.
local now, limit, per_endpoint = tonumber(ARGV[1]), tonumber(ARGV[3]), tonumber(ARGV[7])
local endpoint_limit, suspect_room = tonumber(ARGV[8]), tonumber(ARGV[9])
local room_of, held_of, suspect, listed = {}, {}, {}, 0
for i = 10, #ARGV, 4 do
  room_of[ARGV[i]] = tonumber(ARGV[i + 1])
  held_of[ARGV[i]] = tonumber(ARGV[i + 2])
  suspect[ARGV[i]] = ARGV[i + 3] == '1'
  listed = listed + 1
end
local claimed = {}
-- Endpoints without room are skipped; at most `listed` of them.
local queues = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, limit + listed)
for _, endpoint_due in ipairs(queues) do
  if #claimed >= limit then break end
  local user, endpoint_id = string.match(endpoint_due, '^(.*)ep:([^:]+):due$')
  local room = math.min(room_of[endpoint_id] or per_endpoint, limit - #claimed)
  if suspect[endpoint_id] then room = math.min(room, suspect_room) end
  local sending = user .. 'ep:' .. endpoint_id .. ':sending'
  local bucket, rate, tokens = user .. 'ep:' .. endpoint_id .. ':rate', nil, 0
  if room > 0 then
    rate = tonumber(redis.call('HGET', user .. 'endpoint:' .. endpoint_id, 'rate_limit'))
    if rate then
      tokens = rate_tokens(bucket, rate, now)
      room = math.min(room, math.floor(tokens))
      if room <= 0 then
        -- Out of tokens: look again when the next one is in.
        redis.call('ZADD', KEYS[1], now + math.ceil((1 - tokens) * 1000 / rate), endpoint_due)
      end
    end
  end
  local grant = 0
  if room > 0 and endpoint_limit > 0 then
    local held = held_of[endpoint_id] or 0
    grant = math.max(0, math.min(free_slots(sending, endpoint_limit, now), endpoint_limit - held, room))
    if held + grant == 0 then
      room = 0
      local first = redis.call('ZRANGE', sending, 0, 0, 'WITHSCORES')
      if first[2] then redis.call('ZADD', KEYS[1], first[2], endpoint_due) end
    end
  end
  if room > 0 then
    local endpoint = redis.call('HMGET', user .. 'endpoint:' .. endpoint_id, 'url', 'secret', 'status',
      'previous_secret', 'previous_expires_at', 'options')
    local spent = 0
    for _, id in ipairs(redis.call('ZRANGEBYSCORE', endpoint_due, '-inf', now, 'LIMIT', 0, room)) do
      local key = ARGV[4] .. 'dlv:' .. id
      -- A body kept in pieces (put_pieces) is read whole, in the same call.
      local d = redis.call('HMGET', key, 'username', 'event_id', 'event_type', 'body', 'attempts',
        'created_at', 'status', 'last_attempt', 'test', 'trace', 'line', unpack(BODY_PIECES))
      if d[12] then d[4] = d[4] .. join_pieces(d, 12) end
      if not d[1] or d[7] ~= 'pending' then
        redis.call('ZREM', endpoint_due, id)
      elseif not endpoint[1] then
        redis.call('ZREM', endpoint_due, id)
        redis.call('ZREM', user .. 'ep:' .. endpoint_id .. ':pending', id)
        redis.call('DEL', key)
      elseif endpoint[3] ~= 'enabled' and d[9] ~= '1' then
        redis.call('ZADD', endpoint_due, ARGV[5], id)
        -- Parked while its endpoint is disabled: it waits.
        compact_body(key)
        redis.call('HSET', key, 'next_attempt_at', ARGV[5])
      else
        local lease = ARGV[6] .. ':' .. (#claimed + 1)
        spent = spent + 1
        redis.call('HSET', key, 'lease', lease, 'next_attempt_at', ARGV[2])
        redis.call('ZADD', endpoint_due, ARGV[2], id)
        local slot = ''
        if grant > 0 then
          grant = grant - 1
          slot = lease .. ':slot'
          redis.call('ZADD', sending, ARGV[2], slot)
        end
        claimed[#claimed + 1] = {id, d[1], endpoint_id, d[2], d[3], d[4], d[5], d[6], endpoint[1],
          endpoint[2], lease, d[8] or '0', d[9] or '0', endpoint[4] or '', endpoint[5] or '', slot,
          endpoint[6] or '', d[10] or '', d[11] and ('=' .. d[11]) or ''}
      end
    end
    refresh_ready(KEYS[1], endpoint_due)
    if rate then rate_spend(bucket, rate, now, tokens, spent) end
    if suspect[endpoint_id] then suspect_room = suspect_room - spent end
  end
end
return claimed
