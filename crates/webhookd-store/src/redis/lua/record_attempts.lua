-- Records a batch of attempts of one partition, each only if its lease
-- still matches: 1 if recorded, 0 if not, and minus the start of its
-- endpoint's failure streak if recording it disabled the endpoint. A
-- delivered or dead delivery is indexed for the listings and scheduled for
-- removal at the end of its retention (SWEEP); one whose endpoint was
-- deleted meanwhile is dropped. Each attempt also keeps its endpoint's
-- failure streak (SPEC §8): a success ends it (and re-enables an endpoint
-- webhookd disabled: only a test delivery can reach one), a failure starts
-- it, and a streak older than the limit disables the endpoint.
-- A delivered or dead head of an ordered endpoint's line (SPEC §15) leaves
-- the line, and the delivery held behind it becomes due: the head.
-- With operator events on (SPEC §15), a dead delivery and an endpoint
-- disabled are each recorded in the partition's outbox (`<p>:operator`)
-- in the same step.
-- KEYS: ready. ARGV: partition prefix, auto-disable after (seconds, 0
-- never), change channel, the operator's username if operator events are
-- on (its own deliveries tell nothing) else '', then per attempt
-- 13 values: delivery id, user
-- prefix, endpoint id, lease, attempt number, result
-- (retry|delivered|failed), when (a retry's due time, else the removal
-- time), attempt record, attempt start (unix seconds; '' for a failure
-- that is not the receiver's — the egress proxy's — which leaves the
-- failure streak alone), the worker's
-- sending slot token ('' none) and until when it keeps it ('' gives it
-- up; see settle_slot), its line ('=' .. line, '' none) and when the
-- attempt ended (ms: when the next in its line is due).
local partition, disable_after, channel = ARGV[1], tonumber(ARGV[2]), ARGV[3]
local operator_user = ARGV[4]
local expiry = partition .. 'expiry'

-- The endpoint's failure streak after an attempt that started at `started`:
-- 1, or minus the streak's start if it now disables the endpoint.
local function keep_streak(endpoint, endpoint_id, result, started)
  if result == 'delivered' then
    redis.call('HDEL', endpoint, 'failing_since', 'quota_refused')
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

local results = {}
-- Per endpoint, within this call: whether it exists, and whether a success
-- has already ended its streak (and no failure came since) — read and
-- written once per endpoint per batch, not per delivery.
local exists_of, streak_ended, lowest_ready = {}, {}, {}

-- Takes a finished delivery off the head of its line and makes the next
-- one due at `now`. Only the head moves the line: a delivery that left it
-- (a re-send, RETRY_DEAD) never makes a second one due.
local function leave_line(line_key, id, endpoint_due, now)
  if redis.call('LINDEX', line_key, 0) ~= id then return end
  redis.call('LPOP', line_key)
  local next_id = redis.call('LINDEX', line_key, 0)
  if next_id then
    redis.call('HSET', partition .. 'dlv:' .. next_id, 'next_attempt_at', now)
    schedule_in_batch(endpoint_due, KEYS[1], next_id, now, lowest_ready)
  end
end

-- A worker's records come in the order it made them, so the last one that
-- names a slot says what becomes of it: only that one is settled.
local last_of_slot = {}
for s = 5, #ARGV, 13 do
  if ARGV[s + 9] ~= '' then last_of_slot[ARGV[s + 9]] = s end
end
-- Records an operator event in the partition's outbox.
local function tell_operator(id, kind, at_ms, data)
  redis.call('RPUSH', partition .. 'operator', cjson.encode({id = id, type = kind,
    timestamp = math.floor(tonumber(at_ms) / 1000), data = data}))
end

local a = 5
while a <= #ARGV do
  local id, user, endpoint_id, lease, number, result, at, log, started = ARGV[a], ARGV[a + 1],
    ARGV[a + 2], ARGV[a + 3], ARGV[a + 4], ARGV[a + 5], ARGV[a + 6], ARGV[a + 7],
    tonumber(ARGV[a + 8])
  local key = partition .. 'dlv:' .. id
  -- The slot is the worker's, not the delivery's: settled even when the
  -- lease went stale.
  if last_of_slot[ARGV[a + 9]] == a then
    settle_slot(user .. 'ep:' .. endpoint_id .. ':sending', KEYS[1],
      user .. 'ep:' .. endpoint_id .. ':due', ARGV[a + 9], ARGV[a + 10])
  end
  if redis.call('HGET', key, 'lease') ~= lease then
    results[#results + 1] = 0
  else
    local endpoint = user .. 'endpoint:' .. endpoint_id
    local endpoint_due = user .. 'ep:' .. endpoint_id .. ':due'
    local answer = 1
    if exists_of[endpoint_id] == nil then
      exists_of[endpoint_id] = redis.call('EXISTS', endpoint) == 1
    end
    local line_key = ARGV[a + 11] ~= '' and
      user .. 'ep:' .. endpoint_id .. ':line:' .. string.sub(ARGV[a + 11], 2)
    if not exists_of[endpoint_id] then
      redis.call('ZREM', endpoint_due, id)
      redis.call('DEL', key)
      if line_key then redis.call('DEL', line_key) end
    else
      if result == 'retry' then
        redis.call('HDEL', key, 'lease')
        local fields = {'attempts', number, 'next_attempt_at', at}
        put_pieces(fields, 'attempt:' .. number, log)
        -- It waits now: its body too is kept compact (see put_pieces).
        compact_body(key)
        redis.call('HSET', key, unpack(fields))
        schedule_in_batch(endpoint_due, KEYS[1], id, at, lowest_ready)
      else
        local fields = {'attempts', number, 'status', result}
        if result == 'failed' then
          redis.call('HDEL', key, 'lease', 'last_attempt')
          -- Kept for weeks (keep_failed): compact.
          put_pieces(fields, 'attempt:' .. number, log)
          compact_body(key)
        else
          -- Delivered: never sent again, so its body goes (the event's
          -- kept payload shows it, SPEC §13) in the same command.
          redis.call('HDEL', key, 'lease', 'last_attempt', 'body', unpack(BODY_PIECES))
          fields[#fields + 1] = 'attempt:' .. number
          fields[#fields + 1] = log
        end
        redis.call('HSET', key, unpack(fields))
        if result == 'failed' then
          redis.call('INCR', partition .. 'dead')
          local d = operator_user ~= '' and redis.call('HMGET', key, 'username', 'event_id', 'event_type')
          if d and d[1] ~= operator_user then
            tell_operator('op_dead_' .. id .. '_' .. number, 'delivery.dead', ARGV[a + 12],
              {delivery_id = id, endpoint_id = endpoint_id, username = d[1], event_id = d[2],
               event = d[3], attempts = tonumber(number)})
          end
        end
        redis.call('ZREM', endpoint_due, id)
        redis.call('ZREM', user .. 'ep:' .. endpoint_id .. ':pending', id)
        redis.call('ZADD', user .. 'ep:' .. endpoint_id .. ':' .. result, 0, id)
        redis.call('ZADD', expiry, at, id)
        if line_key then leave_line(line_key, id, endpoint_due, ARGV[a + 12]) end
      end
      if started and (result ~= 'delivered' or not streak_ended[endpoint_id]) then
        answer = keep_streak(endpoint, endpoint_id, result, started)
        streak_ended[endpoint_id] = result == 'delivered'
        if answer < 0 and operator_user ~= '' and operator_user ~= redis.call('HGET', endpoint, 'username') then
          tell_operator('op_disabled_' .. endpoint_id .. '_' .. -answer, 'endpoint.disabled',
            ARGV[a + 12], {endpoint_id = endpoint_id,
              username = redis.call('HGET', endpoint, 'username'), failing_since = -answer,
              reason = redis.call('HGET', endpoint, 'disabled_reason')})
        end
      end
    end
    results[#results + 1] = answer
  end
  a = a + 13
end
return results
