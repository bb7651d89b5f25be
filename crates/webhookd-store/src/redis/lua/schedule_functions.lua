-- Lua functions every script that moves a pending delivery in time shares:
-- the endpoint's schedule and its place in the ready queue change
-- together. An endpoint's score in the ready queue is a lower bound of its
-- earliest due time: it only ever moves down here (`ZADD LT`, Redis
-- 6.2+), and the claim script, which visits the endpoint anyway, sets it
-- exactly. A score too low costs a claim one empty visit; one too high
-- would hide due work, and cannot happen.
local function refresh_ready(ready, endpoint_due)
  local first = redis.call('ZRANGE', endpoint_due, 0, 0, 'WITHSCORES')
  if first[1] then
    redis.call('ZADD', ready, first[2], endpoint_due)
  else
    redis.call('ZREM', ready, endpoint_due)
  end
end
local function schedule(endpoint_due, ready, id, at)
  redis.call('ZADD', endpoint_due, at, id)
  redis.call('ZADD', ready, 'LT', at, endpoint_due)
end
-- `schedule` for a script that schedules many deliveries: the ready queue
-- is written only when `at` is below what this call already put there
-- (`lowest`, the caller's table) — once per endpoint per batch, not per
-- delivery. Written as it goes, never deferred to the end: a script that
-- fails keeps what it wrote before, and that must not be hidden.
local function schedule_in_batch(endpoint_due, ready, id, at, lowest)
  redis.call('ZADD', endpoint_due, at, id)
  local known = lowest[endpoint_due]
  if not known or tonumber(at) < known then
    redis.call('ZADD', ready, 'LT', at, endpoint_due)
    lowest[endpoint_due] = tonumber(at)
  end
end
-- SPEC §10, `endpoint_concurrency` across every process: an endpoint's
-- `sending` set holds its sending slots, tokens scored by when they lapse.
-- Claims grant slots (at most the limit in all); a worker that finishes an
-- attempt passes its slot on to the next claim of its lane (renewing it),
-- or gives it up when the lane has none. A crashed worker's slots lapse.
-- Claims beyond a lane's slots queue behind them, uncounted: they are not
-- being sent.
local function free_slots(sending, endpoint_limit, now)
  redis.call('ZREMRANGEBYSCORE', sending, '-inf', now)
  return endpoint_limit - redis.call('ZCARD', sending)
end
-- What a recorded or handed-back claim says of its worker's slot: kept
-- until `keep_until`, or given up (an empty keep_until); no token, nothing.
-- A renewal only moves a lapse later (GT) and never brings back a slot
-- that lapsed (XX): its place may be another's. The worker learns whether
-- its renewal landed in time from when the record answered (engine).
-- An endpoint set aside as full (CLAIM_DUE) shows again once a slot frees.
local function settle_slot(sending, ready, endpoint_due, token, keep_until)
  if token == '' then return end
  if keep_until ~= '' then
    redis.call('ZADD', sending, 'XX', 'GT', keep_until, token)
  elseif redis.call('ZREM', sending, token) == 1 then
    refresh_ready(ready, endpoint_due)
  end
end
-- An endpoint's `rate_limit` (SPEC §10) is a token bucket in `bucket`
-- that every process draws from: `limit` tokens a second, at most one
-- second's worth saved (a full bucket is no key at all: it expires once
-- full). The tokens there are now:
local function rate_tokens(bucket, limit, now)
  local saved = redis.call('HMGET', bucket, 'tokens', 'at')
  local tokens = tonumber(saved[1])
  if not tokens then return limit end
  return math.min(limit, tokens + (now - tonumber(saved[2])) * limit / 1000)
end
-- Takes `spent` of the `tokens` rate_tokens found at `now`.
local function rate_spend(bucket, limit, now, tokens, spent)
  if spent == 0 then return end
  local left = tokens - spent
  redis.call('HSET', bucket, 'tokens', left, 'at', now)
  redis.call('PEXPIRE', bucket, math.ceil((limit - left) * 1000 / limit) + 1)
end
-- A delivery's hash stays compact (a listpack: 648 bytes where a
-- `hashtable` took 1,232) only while every value is at most Redis's
-- `hash-max-listpack-value`, 64 bytes by default. So a longer body or
-- attempt record of up to 512 bytes of a delivery that waits (due later,
-- or dead) is kept as pieces of at most 64:
-- `name`, `name~2`, `name~3`… (never cutting a UTF-8 character); a longer
-- one stays whole, its hash being a `hashtable` anyway. Readers join the
-- pieces (`rows.rs` on the Rust side).
local function put_pieces(fields, name, value)
  if #value <= 64 or #value > 512 then
    fields[#fields + 1] = name
    fields[#fields + 1] = value
    return
  end
  local start, n = 1, 1
  while start <= #value do
    local stop = math.min(start + 63, #value)
    -- Back off while the next byte continues a UTF-8 character.
    while stop < #value and stop > start do
      local next_byte = string.byte(value, stop + 1)
      if next_byte < 128 or next_byte >= 192 then break end
      stop = stop - 1
    end
    fields[#fields + 1] = (n == 1) and name or (name .. '~' .. n)
    fields[#fields + 1] = string.sub(value, start, stop)
    start, n = stop + 1, n + 1
  end
end
-- The names of a body's pieces after the first (put_pieces: at most 512
-- bytes in pieces of at least 61 — 64 less a UTF-8 character not cut —
-- so at most 9), for a reader to ask for with the rest of the delivery;
-- and the pieces read that way, joined from `values[from]` up to the
-- first missing one.
local BODY_PIECES = {}
for n = 2, 12 do BODY_PIECES[n - 1] = 'body~' .. n end
local function join_pieces(values, from)
  local pieces = {}
  for n = from, from + #BODY_PIECES - 1 do
    if not values[n] then break end
    pieces[#pieces + 1] = values[n]
  end
  return table.concat(pieces)
end
-- Compacts delivery `key` once it has to wait, if its body is still whole
-- and could be kept in pieces: a delivery written to be sent at once keeps
-- its body whole, and its hash became a `hashtable` then — which Redis
-- never turns back into a listpack, so the hash is written again.
local function compact_body(key)
  local body = redis.call('HGET', key, 'body')
  if not body or #body <= 64 or #body > 512 then return end
  local all, kept = redis.call('HGETALL', key), {}
  for i = 1, #all, 2 do
    if all[i] ~= 'body' then
      kept[#kept + 1] = all[i]
      kept[#kept + 1] = all[i + 1]
    end
  end
  put_pieces(kept, 'body', body)
  redis.call('DEL', key)
  redis.call('HSET', key, unpack(kept))
end
