-- The partition's pending deliveries for the backlog gauges: {due by now,
-- scheduled later}. Every endpoint with a pending delivery is in the ready
-- queue (refresh_ready drops it only once its schedule is empty), so the
-- counts come from the endpoints' own schedules: O(endpoints with pending
-- work), read every few seconds, where a partition-wide schedule kept for
-- them would cost every pending delivery one more sorted-set entry.
-- KEYS: ready. ARGV: now.
local due, total = 0, 0
for _, endpoint_due in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  due = due + redis.call('ZCOUNT', endpoint_due, '-inf', ARGV[1])
  total = total + redis.call('ZCARD', endpoint_due)
end
return {due, total - due}
