-- De-duplicates a batch of events of one partition and creates their
-- deliveries from each owner's current endpoints, leasing up to `limit` of
-- them to the caller (the fast path; each endpoint within its room, as in
-- CLAIM_DUE). Returns {per event: 0 for a duplicate, -1 past the owner's
-- events per day, -2 when the caller's snapshot of the owner's payload
-- filters is stale (nothing written; nor for the owner's later events), else {the endpoint ids that got a delivery, those
-- refused for holding their kept deliveries' quota, per delivery its line
-- ('=' .. line at an ordered endpoint, else '')}}, {per lease: delivery id, url, secret, lease,
-- previous secret, its expiry, slot, delivery options}. The i-th delivery of an event has
-- the event's id base followed by i as two hex digits.
-- Under a cluster-wide limit, leases come with sending slots, and an
-- endpoint with a rate limit gets no more than its tokens, as in CLAIM_DUE.
-- Operator events (SPEC §15), when on: an endpoint's first refusal for
-- its kept deliveries since its last success, and a user's first event
-- refused for its daily quota each UTC day, are recorded in the
-- partition's outbox (`<p>:operator`).
-- KEYS: ready. ARGV: partition prefix, dedup ms, now ms, lease until,
-- lease token base, limit, room of other endpoints, sending slots per
-- endpoint across every process (0: no limit), suspect room (as in
-- CLAIM_DUE), number of (endpoint id, room, slots the caller's lane
-- holds, '1' if suspect) quads, today (the store's UTC day number), how
-- long an event's body is kept for inspection (ms, 0: not kept; SPEC §13),
-- the operator's username if operator events are on (its own events
-- tell nothing) else '', the quads, then per event 13 values: user prefix, username, event id, event
-- type, quoted event type, body, delivery id base, the owner's
-- max_kept_deliveries_per_endpoint and max_events_per_day (0: none), the
-- owner's filtered endpoints as the caller knows them ('id:digest ...'),
-- and those of them the event's filter check excluded ('id ...'), and the
-- producer's trace context as stored ('' none; SPEC §15), and the event's
-- own ordering key ('' none).
-- Ordered endpoints (SPEC §15): each delivery joins the end of its line
-- (`<u>:ep:<id>:line:<line>`, a list); one with another before it is held
-- — pending, neither leased nor scheduled — until RECORD_ATTEMPTS makes it
-- the head.
-- Filters (SPEC §15): an endpoint whose stored filter digest is not the
-- one the caller decided with makes the event stale; an excluded endpoint
-- whose digest matches gets no delivery.
-- Quotas (SPEC §11): an endpoint holding its kept deliveries (pending +
-- dead) gets none and counts the refusal (`quota_refused`, cleared by its
-- next success); a user's events are counted per day only while a limit
-- is set.
local partition, dedup, now, lease_until, lease_base = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local limit, per_endpoint = tonumber(ARGV[6]), tonumber(ARGV[7])
local endpoint_limit, suspect_room, listed = tonumber(ARGV[8]), tonumber(ARGV[9]), tonumber(ARGV[10])
local today, keep_payload = ARGV[11], ARGV[12]
local operator = ARGV[13] ~= ''
local room_of, held_of, suspect, grant_of, tokens_of, kept_of = {}, {}, {}, {}, {}, {}
local endpoints_of, lowest_ready, known_of, stale_owner = {}, {}, {}, {}

-- Records a quota.reached operator event in the partition's outbox.
local function quota_reached(id, data)
  redis.call('RPUSH', partition .. 'operator', cjson.encode({id = id, type = 'quota.reached',
    timestamp = math.floor(tonumber(now) / 1000), data = data}))
end

-- The value at a JSON pointer (RFC 6901) in a decoded document, or nil.
local function pointed(document, pointer)
  local value = document
  for token in string.gmatch(string.sub(pointer, 2) .. '/', '([^/]*)/') do
    token = string.gsub(string.gsub(token, '~1', '/'), '~0', '~')
    if type(value) ~= 'table' then return nil end
    local index = string.match(token, '^%d+$') and tonumber(token) + 1
    if value[token] ~= nil then
      value = value[token]
    elseif index and value[index] ~= nil then
      value = value[index]
    else
      return nil
    end
  end
  return value
end

-- The line of a delivery of `body` to an endpoint ordered by `ordering`
-- ('' the event's own key, else a pointer), as ordering::line_of decides
-- it: a string, a number or a boolean names the line; anything else is the
-- endpoint's unkeyed line ''. `decoded` caches the body, decoded once.
local function line_of(ordering, body, event_key, decoded)
  local line = event_key
  if ordering ~= '' then
    if decoded[1] == nil then
      local ok, document = pcall(cjson.decode, body)
      decoded[1] = ok and document or false
    end
    local value = decoded[1] and pointed(decoded[1], ordering)
    local kind = type(value)
    line = (kind == 'string' or kind == 'number' or kind == 'boolean') and tostring(value) or ''
  end
  -- Kept short (a listpack value); values sharing a digest share a line.
  if #line > 64 then line = '#' .. redis.sha1hex(line) end
  return line
end
for i = 14, 13 + 4 * listed, 4 do
  room_of[ARGV[i]] = tonumber(ARGV[i + 1])
  held_of[ARGV[i]] = tonumber(ARGV[i + 2])
  suspect[ARGV[i]] = ARGV[i + 3] == '1'
end
local results, leased = {}, {}
for e = 14 + 4 * listed, #ARGV, 13 do
  local user, username, event_id, event_type, quoted, body, base =
    ARGV[e], ARGV[e + 1], ARGV[e + 2], ARGV[e + 3], ARGV[e + 4], ARGV[e + 5], ARGV[e + 6]
  local kept_limit, per_day, trace = tonumber(ARGV[e + 7]), tonumber(ARGV[e + 8]), ARGV[e + 11]
  local event_key, decoded = ARGV[e + 12], {}
  local known, excluded = known_of[user], {}
  if not known then
    known = {}
    for id, digest in string.gmatch(ARGV[e + 9], '([^%s:]+):(%S+)') do known[id] = digest end
    known_of[user] = known
  end
  for id in string.gmatch(ARGV[e + 10], '%S+') do excluded[id] = true end
  local seen, counted = user .. 'seen:' .. event_id, user .. 'events:' .. today
  -- Read first: a read that fails (data not as webhookd wrote it) must
  -- leave nothing of this event written, not even its de-duplication
  -- entry, or a retry would take it for a duplicate and drop it. A script
  -- that fails keeps what it wrote before (the events before this one):
  -- their retry is a duplicate.
  -- A user's endpoints are read once per call: nothing here changes them.
  local endpoints = endpoints_of[user]
  if not endpoints then
    endpoints = {}
    for _, id in ipairs(redis.call('ZRANGE', user .. 'endpoints', 0, -1)) do
      endpoints[#endpoints + 1] = {id, redis.call('HMGET', user .. 'endpoint:' .. id, 'status', 'events',
        'url', 'secret', 'previous_secret', 'previous_expires_at', 'rate_limit', 'options',
        'filter_digest', 'ordering')}
    end
    endpoints_of[user] = endpoints
  end
  local subscribed = {}
  for _, pair in ipairs(endpoints) do
    local endpoint = pair[2]
    if endpoint[1] == 'enabled' and string.find(endpoint[2], quoted, 1, true) then
      local digest = endpoint[9]
      if digest and known[pair[1]] ~= digest then stale_owner[user] = true end
      if not (digest and excluded[pair[1]]) then subscribed[#subscribed + 1] = pair end
    end
  end
  if stale_owner[user] then
    results[#results + 1] = -2
  elseif per_day > 0 and (tonumber(redis.call('GET', counted)) or 0) >= per_day
      and redis.call('EXISTS', seen) == 0 then
    results[#results + 1] = -1
    if operator and redis.call('SET', user .. 'quota_reached:' .. today, '1', 'NX', 'PX', 172800000) then
      quota_reached('op_quota_day_' .. string.sub(redis.sha1hex(username), 1, 16) .. '_' .. today,
        {quota = 'max_events_per_day', username = username, limit = per_day})
    end
  elseif not redis.call('SET', seen, '1', 'NX', 'PX', dedup) then
    results[#results + 1] = 0
  else
    if per_day > 0 then
      redis.call('INCR', counted)
      redis.call('PEXPIRE', counted, 172800000)
    end
    local chosen, refused, lines = {}, {}, {}
    for _, pair in ipairs(subscribed) do
      local id, endpoint = pair[1], pair[2]
      local indexed = user .. 'ep:' .. id
      kept_of[id] = kept_of[id]
        or redis.call('ZCARD', indexed .. ':pending') + redis.call('ZCARD', indexed .. ':failed')
      if kept_of[id] >= kept_limit then
        if redis.call('HINCRBY', user .. 'endpoint:' .. id, 'quota_refused', 1) == 1 and operator then
          quota_reached('op_quota_' .. id .. '_' .. now, {quota = 'max_kept_deliveries_per_endpoint',
            username = username, endpoint_id = id, limit = kept_limit})
        end
        refused[#refused + 1] = id
      else
        kept_of[id] = kept_of[id] + 1
        local delivery = base .. string.format('%02x', #chosen)
        local due_at, lease = now, nil
        local room = room_of[id] or per_endpoint
        local line, held = nil, false
        if endpoint[10] then
          line = line_of(string.sub(endpoint[10], 2), body, event_key, decoded)
          held = redis.call('RPUSH', user .. 'ep:' .. id .. ':line:' .. line, delivery) > 1
          -- Held: due at 0 (never) until it is the head.
          if held then room, due_at = 0, 0 end
        end
        if suspect[id] then room = math.min(room, suspect_room) end
        local sending = user .. 'ep:' .. id .. ':sending'
        if endpoint_limit > 0 and #leased < limit and room > 0 then
          local held = held_of[id] or 0
          if grant_of[id] == nil then
            grant_of[id] = math.max(0, math.min(free_slots(sending, endpoint_limit, tonumber(now)),
              endpoint_limit - held))
          end
          -- No slot in the lane and none free: the lane could not send it.
          if held + grant_of[id] == 0 then room = 0 end
        end
        local rate = tonumber(endpoint[7])
        if rate and #leased < limit and room > 0 then
          tokens_of[id] = tokens_of[id] or rate_tokens(user .. 'ep:' .. id .. ':rate', rate, tonumber(now))
          if tokens_of[id] < 1 then room = 0 end
        end
        if #leased < limit and room > 0 then
          room_of[id] = (room_of[id] or per_endpoint) - 1
          if suspect[id] then suspect_room = suspect_room - 1 end
          lease = lease_base .. ':' .. (#leased + 1)
          local slot = ''
          if endpoint_limit > 0 and grant_of[id] > 0 then
            grant_of[id] = grant_of[id] - 1
            slot = lease .. ':slot'
            redis.call('ZADD', sending, lease_until, slot)
          end
          if rate then
            rate_spend(user .. 'ep:' .. id .. ':rate', rate, tonumber(now), tokens_of[id], 1)
            tokens_of[id] = tokens_of[id] - 1
          end
          due_at = lease_until
          leased[#leased + 1] = {delivery, endpoint[3], endpoint[4], lease, endpoint[5] or '',
            endpoint[6] or '', slot, endpoint[8] or ''}
        end
        local fields = {'username', username, 'endpoint_id', id, 'event_id', event_id,
          'event_type', event_type, 'status', 'pending', 'attempts', 0, 'created_at', now,
          'next_attempt_at', due_at}
        if trace ~= '' then
          fields[#fields + 1] = 'trace'
          fields[#fields + 1] = trace
        end
        if line then
          fields[#fields + 1] = 'line'
          fields[#fields + 1] = line
        end
        if lease then
          -- Sent at once, most likely delivered at once: splitting its
          -- body would be work for nothing (a retry compacts it then).
          fields[#fields + 1] = 'lease'
          fields[#fields + 1] = lease
          fields[#fields + 1] = 'body'
          fields[#fields + 1] = body
        else
          -- It waits: compact (see put_pieces).
          put_pieces(fields, 'body', body)
        end
        redis.call('HSET', partition .. 'dlv:' .. delivery, unpack(fields))
        if not held then
          schedule_in_batch(user .. 'ep:' .. id .. ':due', KEYS[1], delivery, due_at, lowest_ready)
        end
        redis.call('ZADD', user .. 'ep:' .. id .. ':pending', 0, delivery)
        chosen[#chosen + 1] = id
        lines[#lines + 1] = line and ('=' .. line) or ''
      end
    end
    if #chosen > 0 and keep_payload ~= '0' then
      -- One copy per event, for the delivery detail; it expires on its own.
      redis.call('SET', user .. 'payload:' .. event_id .. ':' .. now, body, 'PX', keep_payload)
    end
    results[#results + 1] = {chosen, refused, lines}
  end
end
return {results, leased}
