-- Records a batch of attempts of one partition, each only if its lease
-- still matches: 1 if recorded, 0 if not, and minus the start of its
-- endpoint's failure streak if recording it disabled the endpoint. A
-- delivered or dead delivery is indexed for the listings and scheduled for
-- removal at the end of its retention (SWEEP); one whose endpoint was
-- deleted meanwhile is dropped. Each attempt also keeps its endpoint's
-- failure streak (SPEC §8): a success ends it (and re-enables an endpoint
-- webhookd disabled: only a test delivery can reach one), a failure starts
-- it, and a streak older than the limit disables the endpoint.
-- An unwritten delivery (deliver before writing, ACCEPT_EVENTS) is written
-- here, its lease being its event marker's: delivered, slim (no body: it
-- is never sent again); to retry, dead or handed back untried
-- (`release`: no attempt, no streak), whole. Its endpoint leaves the
-- marker.
-- KEYS: ready. ARGV: partition prefix, auto-disable after (seconds, 0
-- never), change channel, then per attempt 12 values: delivery id, user
-- prefix, endpoint id, lease, attempt number, result
-- (retry|delivered|failed|release), when (a retry's or release's due time,
-- else the removal time), attempt JSON, attempt start (unix seconds), the
-- worker's sending slot token ('' none) and until when it keeps it (''
-- gives it up; see settle_slot), and '1' if unwritten — then 5 more:
-- username, event id, event type, body, created at.
local partition, disable_after, channel = ARGV[1], tonumber(ARGV[2]), ARGV[3]
local expiry = partition .. 'expiry'

-- The endpoint's failure streak after an attempt that started at `started`:
-- 1, or minus the streak's start if it now disables the endpoint.
local function keep_streak(endpoint, endpoint_id, result, started)
  if result == 'delivered' then
    redis.call('HDEL', endpoint, 'failing_since')
    if redis.call('HDEL', endpoint, 'disabled_reason') == 1 then
      redis.call('HSET', endpoint, 'status', 'enabled')
      redis.call('PUBLISH', channel, endpoint_id)
    end
    return 1
  end
  local since = started
  if redis.call('HSETNX', endpoint, 'failing_since', started) == 0 then
    since = tonumber(redis.call('HGET', endpoint, 'failing_since')) or started
  end
  if disable_after > 0 and started - since >= disable_after
      and redis.call('HGET', endpoint, 'status') == 'enabled' then
    redis.call('HSET', endpoint, 'status', 'disabled', 'disabled_reason',
      'no successful delivery since ' .. since .. ' (unix seconds)')
    redis.call('PUBLISH', channel, endpoint_id)
    return -since
  end
  return 1
end

-- Writes an unwritten delivery as the attempt left it: 'written', 'gone'
-- (its endpoint was deleted: nothing to write), or nil if the lease (its
-- marker's) is no longer the caller's.
local function write_unwritten(a, key, user, endpoint_id, lease, number, result, at, log)
  local username, event_id, event_type, body, created_at =
    ARGV[a + 12], ARGV[a + 13], ARGV[a + 14], ARGV[a + 15], ARGV[a + 16]
  local seen = user .. 'seen:' .. event_id
  local marker = parse_marker(redis.call('GET', seen))
  if not marker or not marker.ids[endpoint_id]
      or string.sub(lease, 1, #marker.token + 1) ~= marker.token .. ':' then
    return nil
  end
  unmark(seen, marker, endpoint_id)
  if redis.call('EXISTS', user .. 'endpoint:' .. endpoint_id) == 0 then return 'gone' end
  local fields = {'username', username, 'endpoint_id', endpoint_id, 'event_id', event_id,
    'event_type', event_type, 'created_at', created_at, 'attempts', number}
  local status = (result == 'retry' or result == 'release') and 'pending' or result
  fields[#fields + 1] = 'status'
  fields[#fields + 1] = status
  fields[#fields + 1] = 'next_attempt_at'
  fields[#fields + 1] = status == 'pending' and at or created_at
  if result == 'delivered' then
    fields[#fields + 1] = 'attempt:' .. number
    fields[#fields + 1] = log
  else
    put_pieces(fields, 'body', body)
    if result ~= 'release' then put_pieces(fields, 'attempt:' .. number, log) end
  end
  redis.call('HSET', key, unpack(fields))
  if status == 'pending' then
    schedule(user .. 'ep:' .. endpoint_id .. ':due', KEYS[1], ARGV[a], at)
    redis.call('ZADD', user .. 'ep:' .. endpoint_id .. ':pending', 0, ARGV[a])
  else
    if status == 'failed' then redis.call('INCR', partition .. 'dead') end
    redis.call('ZADD', user .. 'ep:' .. endpoint_id .. ':' .. status, 0, ARGV[a])
    redis.call('ZADD', expiry, at, ARGV[a])
  end
  return 'written'
end

local results = {}
local a = 4
while a <= #ARGV do
  local id, user, endpoint_id, lease, number, result, at, log, started = ARGV[a], ARGV[a + 1],
    ARGV[a + 2], ARGV[a + 3], ARGV[a + 4], ARGV[a + 5], ARGV[a + 6], ARGV[a + 7],
    tonumber(ARGV[a + 8])
  local key = partition .. 'dlv:' .. id
  -- The slot is the worker's, not the delivery's: settled even when the
  -- lease went stale.
  settle_slot(user .. 'ep:' .. endpoint_id .. ':sending', KEYS[1],
    user .. 'ep:' .. endpoint_id .. ':due', ARGV[a + 9], ARGV[a + 10])
  if ARGV[a + 11] == '1' then
    local answer = 0
    local written = write_unwritten(a, key, user, endpoint_id, lease, number, result, at, log)
    if written == 'written' and result ~= 'release' then
      answer = keep_streak(user .. 'endpoint:' .. endpoint_id, endpoint_id, result, started)
    elseif written then
      answer = 1
    end
    results[#results + 1] = answer
    a = a + 17
  elseif redis.call('HGET', key, 'lease') ~= lease then
    results[#results + 1] = 0
    a = a + 12
  else
    local endpoint = user .. 'endpoint:' .. endpoint_id
    local endpoint_due = user .. 'ep:' .. endpoint_id .. ':due'
    local answer = 1
    if redis.call('EXISTS', endpoint) == 0 then
      redis.call('ZREM', endpoint_due, id)
      redis.call('DEL', key)
    else
      if result == 'retry' then
        redis.call('HDEL', key, 'lease')
        local fields = {'attempts', number, 'next_attempt_at', at}
        put_pieces(fields, 'attempt:' .. number, log)
        -- It waits now: its body too is kept compact (see put_pieces).
        compact_body(key)
        redis.call('HSET', key, unpack(fields))
        schedule(endpoint_due, KEYS[1], id, at)
      else
        redis.call('HDEL', key, 'lease', 'last_attempt')
        local fields = {'attempts', number, 'status', result}
        if result == 'failed' then
          -- Kept for weeks (keep_failed): compact.
          put_pieces(fields, 'attempt:' .. number, log)
          compact_body(key)
        else
          -- Delivered: its body is whole anyway (see ACCEPT_EVENTS).
          fields[#fields + 1] = 'attempt:' .. number
          fields[#fields + 1] = log
        end
        redis.call('HSET', key, unpack(fields))
        if result == 'failed' then redis.call('INCR', partition .. 'dead') end
        redis.call('ZREM', endpoint_due, id)
        redis.call('ZREM', user .. 'ep:' .. endpoint_id .. ':pending', id)
        redis.call('ZADD', user .. 'ep:' .. endpoint_id .. ':' .. result, 0, id)
        redis.call('ZADD', expiry, at, id)
      end
      answer = keep_streak(endpoint, endpoint_id, result, started)
    end
    results[#results + 1] = answer
    a = a + 12
  end
end
return results
