//! The production store: Redis.
//!
//! Key layout. Every name starts with a configurable prefix (`webhookd:` by
//! default, `redis_prefix`), so deployments and test runs can share a server.
//! A user's data lives in one of [`PARTITIONS`] partitions, chosen by a
//! fixed hash of the username; `<p>` below is `{p:<n>}`, and `<u>` is
//! `<p>:u:<username>`.
//!
//! | key | type | holds |
//! |---|---|---|
//! | `{keys}:users` | hash | username → created_at |
//! | `{keys}:by_hash` | hash | API key hash → username |
//! | `{keys}:user:<name>` | set | the user's API key hashes |
//! | `<u>:endpoints` | sorted set | endpoint ids, scored by creation sequence |
//! | `<u>:seq` | counter | that sequence |
//! | `<u>:endpoint:<id>` | hash | one endpoint's fields |
//! | `<u>:seen:<event_id>` | string, 24 h TTL | de-duplication |
//! | `<u>:ep:<id>:<status>` | sorted set, score 0 | the endpoint's delivery ids by status (lexical = creation order) |
//! | `<p>:dlv:<id>` | hash | one delivery, with its attempt log as fields `attempt:<n>` |
//! | `<p>:due` | sorted set | pending delivery ids by due time (ms) |
//! | `<u>:ep:<id>:due` | sorted set | the endpoint's pending delivery ids by due time |
//! | `<p>:ready` | sorted set | the `…:due` keys of endpoints with pending deliveries, by their earliest due time |
//! | `<p>:dead` | counter | dead deliveries kept in the partition |
//! | `settings` | hash | name → value |
//!
//! Claims walk `<p>:ready` endpoint by endpoint, oldest due first, and take
//! at most a worker's per-endpoint room from each: an endpoint with a million
//! overdue deliveries costs a claim one skipped entry, not a scan of its
//! backlog, so it cannot starve the others. `<p>:due` holds the same
//! schedule flat, for the backlog gauges.
//!
//! The braces are Redis Cluster hash tags. Every script touches keys of one
//! tag only — an event's de-duplication, its owner's endpoints, its
//! deliveries and the partition's due queue share the partition's tag — so
//! the scripts run on a cluster unchanged, and the 16 partitions spread over
//! up to 16 primaries. Changes that span keys are Lua scripts, atomic on the
//! server; nothing is read, modified and written back from here.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{AsyncCommands, Script};
use webhookd_core::endpoint::MAX_ENDPOINTS_PER_USER;
use webhookd_core::{Endpoint, EndpointSpec, EndpointStatus, Event, ids};

use crate::{
    Acceptance, AttemptRecord, AttemptResult, Claim, ClaimRequest, CreateOutcome, DEDUP_WINDOW_MS,
    Delivery, DeliveryStats, DeliveryStatus, FinishedAttempt, Page, RetryOutcome, Store,
    StoreError, UserSummary, event_type_from_str, events_from_json, events_to_json, new_delivery,
    status_from_str,
};

/// Redis answers in microseconds; 2 s means it is in trouble. (The client's
/// own default of 500 ms trips on a busy two-core machine.)
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(2);
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(2);

const CREATE_ENDPOINT: &str = r"
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[1]) then return 0 end
local seq = redis.call('INCR', KEYS[3])
redis.call('HSET', KEYS[2], 'endpoint_id', ARGV[2], 'url', ARGV[3], 'secret', ARGV[4],
  'status', ARGV[5], 'events', ARGV[6], 'username', ARGV[7], 'created_at', ARGV[8])
redis.call('ZADD', KEYS[1], seq, ARGV[2])
return 1
";

const UPDATE_ENDPOINT: &str = r"
if redis.call('EXISTS', KEYS[1]) == 0 then return false end
redis.call('HSET', KEYS[1], 'url', ARGV[1], 'events', ARGV[3])
if ARGV[2] ~= '' then redis.call('HSET', KEYS[1], 'status', ARGV[2]) end
return redis.call('HGETALL', KEYS[1])
";

/// Removes the endpoint and its deliveries, taking pending ones off the due
/// queues so their retries stop.
/// KEYS: endpoints, endpoint hash, due, endpoint due, ready. ARGV: endpoint
/// id, user prefix, partition prefix.
const DELETE_ENDPOINT: &str = r"
local removed = redis.call('ZREM', KEYS[1], ARGV[1])
if removed == 0 then return 0 end
redis.call('DEL', KEYS[2])
for _, status in ipairs({'pending', 'delivered', 'failed'}) do
  local index = ARGV[2] .. 'ep:' .. ARGV[1] .. ':' .. status
  if status == 'failed' then redis.call('DECRBY', ARGV[3] .. 'dead', redis.call('ZCARD', index)) end
  for _, id in ipairs(redis.call('ZRANGE', index, 0, -1)) do
    redis.call('DEL', ARGV[3] .. 'dlv:' .. id)
    if status == 'pending' then redis.call('ZREM', KEYS[3], id) end
  end
  redis.call('DEL', index)
end
redis.call('DEL', KEYS[4])
redis.call('ZREM', KEYS[5], KEYS[4])
return 1
";

/// Lua functions every script that moves a pending delivery in time shares:
/// the flat schedule and the endpoint's own change together. An endpoint's
/// score in the ready queue is a lower bound of its earliest due time: it
/// only ever moves down here (`ZADD LT`, Redis 6.2+), and the claim script,
/// which visits the endpoint anyway, sets it exactly. A score too low costs
/// a claim one empty visit; one too high would hide due work, and cannot
/// happen.
const SCHEDULE_FUNCTIONS: &str = r"
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
";

/// Leases due deliveries of one partition, endpoint by endpoint in the order
/// of their earliest due delivery, at most `room` per endpoint: each claimed
/// id's due time moves to the lease's end, so a worker that dies leaves it
/// due again then. Deliveries of deleted endpoints are dropped; of disabled
/// ones, parked.
/// KEYS: due, ready. ARGV: now, lease until, limit, partition prefix, park
/// until, lease token base, room of other endpoints, then (endpoint id,
/// room) pairs.
const CLAIM_DUE: &str = r"
local now, limit, per_endpoint = tonumber(ARGV[1]), tonumber(ARGV[3]), tonumber(ARGV[7])
local room_of, listed = {}, 0
for i = 8, #ARGV, 2 do
  room_of[ARGV[i]] = tonumber(ARGV[i + 1])
  listed = listed + 1
end
local claimed = {}
-- Endpoints without room are skipped; at most `listed` of them.
local queues = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now, 'LIMIT', 0, limit + listed)
for _, endpoint_due in ipairs(queues) do
  if #claimed >= limit then break end
  local user, endpoint_id = string.match(endpoint_due, '^(.*)ep:([^:]+):due$')
  local room = math.min(room_of[endpoint_id] or per_endpoint, limit - #claimed)
  if room > 0 then
    local endpoint = redis.call('HMGET', user .. 'endpoint:' .. endpoint_id, 'url', 'secret', 'status')
    for _, id in ipairs(redis.call('ZRANGEBYSCORE', endpoint_due, '-inf', now, 'LIMIT', 0, room)) do
      local key = ARGV[4] .. 'dlv:' .. id
      local d = redis.call('HMGET', key, 'username', 'event_id', 'event_type', 'body', 'attempts',
        'created_at', 'status')
      if not d[1] or d[7] ~= 'pending' then
        redis.call('ZREM', KEYS[1], id)
        redis.call('ZREM', endpoint_due, id)
      elseif not endpoint[1] then
        redis.call('ZREM', KEYS[1], id)
        redis.call('ZREM', endpoint_due, id)
        redis.call('ZREM', user .. 'ep:' .. endpoint_id .. ':pending', id)
        redis.call('DEL', key)
      elseif endpoint[3] ~= 'enabled' then
        redis.call('ZADD', KEYS[1], ARGV[5], id)
        redis.call('ZADD', endpoint_due, ARGV[5], id)
        redis.call('HSET', key, 'next_attempt_at', ARGV[5])
      else
        local lease = ARGV[6] .. ':' .. (#claimed + 1)
        redis.call('HSET', key, 'lease', lease, 'next_attempt_at', ARGV[2])
        redis.call('ZADD', KEYS[1], ARGV[2], id)
        redis.call('ZADD', endpoint_due, ARGV[2], id)
        claimed[#claimed + 1] = {id, d[1], endpoint_id, d[2], d[3], d[4], d[5], d[6], endpoint[1],
          endpoint[2], lease}
      end
    end
    refresh_ready(KEYS[2], endpoint_due)
  end
end
return claimed
";

/// Records a batch of attempts of one partition, each only if its lease
/// still matches: 1 if recorded, else 0.
/// KEYS: due, ready. ARGV: partition prefix, retention seconds, delivered
/// index cap, then per attempt 8 values: delivery id, user prefix, endpoint
/// id, lease, attempt number, result (retry|delivered|failed), next attempt
/// at, attempt JSON.
const RECORD_ATTEMPTS: &str = r"
local partition, retention, keep = ARGV[1], ARGV[2], -1 - tonumber(ARGV[3])
local results = {}
for a = 4, #ARGV, 8 do
  local id, user, endpoint_id, lease, number, result, next_at, log = ARGV[a], ARGV[a + 1],
    ARGV[a + 2], ARGV[a + 3], ARGV[a + 4], ARGV[a + 5], ARGV[a + 6], ARGV[a + 7]
  local key = partition .. 'dlv:' .. id
  if redis.call('HGET', key, 'lease') ~= lease then
    results[#results + 1] = 0
  else
    redis.call('HDEL', key, 'lease')
    local endpoint_due = user .. 'ep:' .. endpoint_id .. ':due'
    if result == 'retry' then
      redis.call('HSET', key, 'attempts', number, 'next_attempt_at', next_at, 'attempt:' .. number, log)
      schedule(KEYS[1], endpoint_due, KEYS[2], id, next_at)
    else
      local index = user .. 'ep:' .. endpoint_id .. ':' .. result
      redis.call('HSET', key, 'attempts', number, 'status', result, 'attempt:' .. number, log)
      if result == 'failed' then redis.call('INCR', partition .. 'dead') end
      unschedule(KEYS[1], endpoint_due, id)
      redis.call('ZREM', user .. 'ep:' .. endpoint_id .. ':pending', id)
      redis.call('ZADD', index, 0, id)
      if result == 'delivered' then
        redis.call('EXPIRE', key, retention)
        -- Keeps the newest `cap` ids: ranks 0 .. -(cap + 1) are the rest.
        redis.call('ZREMRANGEBYRANK', index, 0, keep)
      end
    end
    results[#results + 1] = 1
  end
end
return results
";

/// Hands a lease back. KEYS: delivery, due, endpoint due, ready. ARGV:
/// lease, due at, id.
const RELEASE: &str = r"
if redis.call('HGET', KEYS[1], 'lease') ~= ARGV[1] then return 0 end
redis.call('HDEL', KEYS[1], 'lease')
redis.call('HSET', KEYS[1], 'next_attempt_at', ARGV[2])
schedule(KEYS[2], KEYS[3], KEYS[4], ARGV[3], ARGV[2])
return 1
";

/// Makes a dead delivery pending again. KEYS: delivery, due, failed index,
/// pending index, endpoint due, ready. ARGV: now, id, dead counter key.
/// Returns the status before, or false.
const RETRY_DEAD: &str = r"
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return false end
if status ~= 'failed' then return status end
redis.call('HSET', KEYS[1], 'status', 'pending', 'next_attempt_at', ARGV[1])
redis.call('HDEL', KEYS[1], 'lease')
schedule(KEYS[2], KEYS[5], KEYS[6], ARGV[2], ARGV[1])
redis.call('ZREM', KEYS[3], ARGV[2])
redis.call('ZADD', KEYS[4], 0, ARGV[2])
redis.call('DECR', ARGV[3])
return 'failed'
";

/// How long a delivered delivery and its attempts are kept.
const DELIVERED_RETENTION_SECS: u64 = 7 * 24 * 3600;
/// Most delivered ids an endpoint's index keeps (oldest go first).
const DELIVERED_INDEX_CAP: usize = 10_000;

/// De-duplicates a batch of events of one partition and creates their
/// deliveries from each owner's current endpoints, leasing up to `limit` of
/// them to the caller (the fast path; each endpoint within its room, as in
/// CLAIM_DUE). Returns {per event: 0 for a duplicate, else the endpoint ids
/// that got a delivery}, {per lease: delivery id, url, secret, lease}. The
/// i-th delivery of an event has the event's id base followed by i as two
/// hex digits.
/// KEYS: due, ready. ARGV: partition prefix, dedup ms, now ms, lease until,
/// lease token base, limit, room of other endpoints, number of (endpoint id,
/// room) pairs, the pairs, then per event 7 values: user prefix, username,
/// event id, event type, quoted event type, body, delivery id base.
const ACCEPT_EVENTS: &str = r"
local partition, dedup, now, lease_until, lease_base = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local limit, per_endpoint, listed = tonumber(ARGV[6]), tonumber(ARGV[7]), tonumber(ARGV[8])
local room_of = {}
for i = 9, 8 + 2 * listed, 2 do room_of[ARGV[i]] = tonumber(ARGV[i + 1]) end
local results, leased = {}, {}
for e = 9 + 2 * listed, #ARGV, 7 do
  local user, username, event_id, event_type, quoted, body, base =
    ARGV[e], ARGV[e + 1], ARGV[e + 2], ARGV[e + 3], ARGV[e + 4], ARGV[e + 5], ARGV[e + 6]
  if not redis.call('SET', user .. 'seen:' .. event_id, '1', 'NX', 'PX', dedup) then
    results[#results + 1] = 0
  else
    local chosen = {}
    for _, id in ipairs(redis.call('ZRANGE', user .. 'endpoints', 0, -1)) do
      local endpoint = redis.call('HMGET', user .. 'endpoint:' .. id, 'status', 'events', 'url', 'secret')
      if endpoint[1] == 'enabled' and string.find(endpoint[2], quoted, 1, true) then
        local delivery = base .. string.format('%02x', #chosen)
        local due_at = now
        local fields = {'username', username, 'endpoint_id', id, 'event_id', event_id,
          'event_type', event_type, 'body', body, 'status', 'pending', 'attempts', 0,
          'created_at', now}
        local room = room_of[id] or per_endpoint
        if #leased < limit and room > 0 then
          room_of[id] = room - 1
          local lease = lease_base .. ':' .. (#leased + 1)
          due_at = lease_until
          fields[#fields + 1] = 'lease'
          fields[#fields + 1] = lease
          leased[#leased + 1] = {delivery, endpoint[3], endpoint[4], lease}
        end
        fields[#fields + 1] = 'next_attempt_at'
        fields[#fields + 1] = due_at
        redis.call('HSET', partition .. 'dlv:' .. delivery, unpack(fields))
        schedule(KEYS[1], user .. 'ep:' .. id .. ':due', KEYS[2], delivery, due_at)
        redis.call('ZADD', user .. 'ep:' .. id .. ':pending', 0, delivery)
        chosen[#chosen + 1] = id
      end
    end
    results[#results + 1] = chosen
  end
end
return {results, leased}
";

const ADD_API_KEY: &str = r"
redis.call('HSETNX', KEYS[1], ARGV[2], ARGV[3])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
redis.call('SADD', KEYS[3], ARGV[1])
return 1
";

const REVOKE_API_KEYS: &str = r"
local hashes = redis.call('SMEMBERS', KEYS[2])
for _, hash in ipairs(hashes) do redis.call('HDEL', KEYS[1], hash) end
redis.call('DEL', KEYS[2])
return #hashes
";

#[derive(Clone)]
pub struct RedisStore {
    connection: ConnectionManager,
    prefix: String,
    scripts: std::sync::Arc<Scripts>,
    /// Where the next claim starts, rotating so no partition starves.
    next_partition: std::sync::Arc<AtomicU32>,
}

struct Scripts {
    create_endpoint: Script,
    update_endpoint: Script,
    delete_endpoint: Script,
    add_api_key: Script,
    revoke_api_keys: Script,
    accept_events: Script,
    claim_due: Script,
    record_attempts: Script,
    release: Script,
    retry_dead: Script,
}

/// Number of partitions user data is spread over. Part of the key layout:
/// changing it on a deployment with data would strand that data.
pub const PARTITIONS: u32 = 16;

// Two hex digits number the deliveries of one event.
const _: () = assert!(MAX_ENDPOINTS_PER_USER <= 256);

/// One event's answer from ACCEPT_EVENTS: 0 for a duplicate, else the
/// endpoint ids that got a delivery.
fn acceptance_from_answer(
    answer: redis::Value,
    event: &Event,
    body: &str,
    id_base: &str,
    now_ms: i64,
) -> Result<Acceptance, StoreError> {
    let redis::Value::Array(endpoint_ids) = answer else {
        return Ok(Acceptance::Duplicate);
    };
    let deliveries = endpoint_ids
        .into_iter()
        .enumerate()
        .map(|(n, endpoint_id)| {
            let endpoint_id: String = redis::from_redis_value(endpoint_id)
                .map_err(|e| StoreError::Corrupt(format!("accept answer: {e}")))?;
            Ok(new_delivery(
                format!("{id_base}{n:02x}"),
                event,
                &endpoint_id,
                body,
                now_ms,
            ))
        })
        .collect::<Result<_, StoreError>>()?;
    Ok(Acceptance::Accepted { deliveries })
}

/// Indexes of `usernames`, grouped by their users' partition.
fn group_by_partition<'a>(
    usernames: impl Iterator<Item = &'a String>,
) -> BTreeMap<u32, Vec<usize>> {
    let mut groups = BTreeMap::<u32, Vec<usize>>::new();
    for (i, username) in usernames.enumerate() {
        groups.entry(partition_of(username)).or_default().push(i);
    }
    groups
}

/// The partition of a user: FNV-1a of the name, fixed forever.
fn partition_of(username: &str) -> u32 {
    let hash = username.bytes().fold(0x811c_9dc5_u32, |hash, byte| {
        (hash ^ u32::from(byte)).wrapping_mul(0x0100_0193)
    });
    hash % PARTITIONS
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

impl RedisStore {
    /// Connects to `url`. The connection reconnects by itself after Redis
    /// restarts; requests in the meantime fail as [`StoreError::Unavailable`].
    pub async fn connect(url: &str, prefix: &str) -> Result<Self, StoreError> {
        assert!(
            !prefix.contains(['{', '}']),
            "the key prefix must not contain hash-tag braces"
        );
        let client = redis::Client::open(url).map_err(|e| StoreError::Failed(Box::new(e)))?;
        let config = ConnectionManagerConfig::new()
            .set_response_timeout(Some(RESPONSE_TIMEOUT))
            .set_connection_timeout(Some(CONNECTION_TIMEOUT))
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_secs(1));
        let connection = ConnectionManager::new_with_config(client, config)
            .await
            .map_err(redis_error)?;
        let scripts = Scripts {
            create_endpoint: Script::new(CREATE_ENDPOINT),
            update_endpoint: Script::new(UPDATE_ENDPOINT),
            delete_endpoint: Script::new(DELETE_ENDPOINT),
            add_api_key: Script::new(ADD_API_KEY),
            revoke_api_keys: Script::new(REVOKE_API_KEYS),
            accept_events: Script::new(&format!("{SCHEDULE_FUNCTIONS}{ACCEPT_EVENTS}")),
            claim_due: Script::new(&format!("{SCHEDULE_FUNCTIONS}{CLAIM_DUE}")),
            record_attempts: Script::new(&format!("{SCHEDULE_FUNCTIONS}{RECORD_ATTEMPTS}")),
            release: Script::new(&format!("{SCHEDULE_FUNCTIONS}{RELEASE}")),
            retry_dead: Script::new(&format!("{SCHEDULE_FUNCTIONS}{RETRY_DEAD}")),
        };
        Ok(RedisStore {
            connection,
            prefix: prefix.to_owned(),
            scripts: std::sync::Arc::new(scripts),
            next_partition: std::sync::Arc::new(AtomicU32::new(0)),
        })
    }

    fn connection(&self) -> ConnectionManager {
        self.connection.clone()
    }

    fn users_key(&self) -> String {
        format!("{}{{keys}}:users", self.prefix)
    }

    fn key_owner_key(&self) -> String {
        format!("{}{{keys}}:by_hash", self.prefix)
    }

    fn user_keys_key(&self, username: &str) -> String {
        format!("{}{{keys}}:user:{username}", self.prefix)
    }

    /// `<prefix>{p:<n>}:`, the start of every key in a user's partition.
    fn partition_prefix(&self, username: &str) -> String {
        self.prefix_of_partition(partition_of(username))
    }

    fn prefix_of_partition(&self, partition: u32) -> String {
        format!("{}{{p:{partition}}}:", self.prefix)
    }

    /// One round trip: loads `script` (a no-op when it is cached, and it
    /// survives a Redis restart this way), then runs it once per partition
    /// of `groups`, atomically, with KEYS due and ready and the partition
    /// prefix as ARGV[1]; `add_args` adds the rest for the partition and its
    /// members. Answers in the order of `groups`.
    async fn per_partition<T: redis::FromRedisValue>(
        &self,
        script: &Script,
        groups: &BTreeMap<u32, Vec<usize>>,
        mut add_args: impl FnMut(&mut redis::ScriptInvocation<'_>, u32, &[usize]),
    ) -> Result<Vec<T>, StoreError> {
        let mut pipeline = redis::pipe();
        pipeline.load_script(script).ignore();
        for (partition, members) in groups {
            let partition_prefix = self.prefix_of_partition(*partition);
            let mut invocation = script.prepare_invoke();
            invocation
                .key(format!("{partition_prefix}due"))
                .key(format!("{partition_prefix}ready"))
                .arg(&partition_prefix);
            add_args(&mut invocation, *partition, members);
            pipeline.invoke_script(&invocation);
        }
        pipeline
            .query_async(&mut self.connection())
            .await
            .map_err(redis_error)
    }

    /// Accepts `events`, leasing fresh deliveries as `claim` allows (a
    /// default request, limit 0, leases nothing).
    async fn accept(
        &self,
        events: &[Event],
        now_ms: i64,
        claim: &ClaimRequest,
    ) -> Result<(Vec<Acceptance>, Vec<Claim>), StoreError> {
        if events.is_empty() {
            return Ok((Vec::new(), Vec::new()));
        }
        let bodies: Vec<String> = events.iter().map(Event::body).collect();
        // The deliveries of one event share all but the last two hex digits
        // of their ids (a user has at most 256 endpoints, asserted at
        // `group_by_partition`), so ids stay time-ordered and one fresh id
        // serves every endpoint.
        let id_bases: Vec<String> = events
            .iter()
            .map(|_| {
                let mut id = ids::new_delivery_id();
                id.truncate(id.len() - 2);
                id
            })
            .collect();
        let by_partition = group_by_partition(events.iter().map(|event| &event.username));
        let lease_base = ids::new_lease_token();
        let room: Vec<(&String, &usize)> = claim.room.iter().collect();
        // The claim limit is shared out in proportion to each partition's
        // events.
        let answers: Vec<(Vec<redis::Value>, Vec<[String; 4]>)> = self
            .per_partition(
                &self.scripts.accept_events,
                &by_partition,
                |invocation, partition, members| {
                    invocation
                        .arg(DEDUP_WINDOW_MS)
                        .arg(now_ms)
                        .arg(claim.lease_until_ms)
                        .arg(format!("{lease_base}:{partition}"))
                        .arg(claim.limit * members.len() / events.len())
                        .arg(claim.per_endpoint)
                        .arg(room.len());
                    for (endpoint_id, room) in &room {
                        invocation.arg(endpoint_id.as_str()).arg(**room);
                    }
                    for &i in members {
                        let event = &events[i];
                        invocation
                            .arg(self.user_prefix(&event.username))
                            .arg(&event.username)
                            .arg(&event.event_id)
                            .arg(event.event_type.as_str())
                            .arg(format!("\"{}\"", event.event_type.as_str()))
                            .arg(&bodies[i])
                            .arg(&id_bases[i]);
                    }
                },
            )
            .await?;
        let mut outcomes: Vec<Option<Acceptance>> = vec![None; events.len()];
        let mut leases: HashMap<String, (String, String, String)> = HashMap::new();
        for ((_, members), (chosen_per_event, leased)) in by_partition.iter().zip(answers) {
            for (&i, chosen) in members.iter().zip(chosen_per_event) {
                outcomes[i] = Some(acceptance_from_answer(
                    chosen,
                    &events[i],
                    &bodies[i],
                    &id_bases[i],
                    now_ms,
                )?);
            }
            for [delivery_id, url, secret, lease] in leased {
                leases.insert(delivery_id, (url, secret, lease));
            }
        }
        let outcomes = outcomes
            .into_iter()
            .map(|outcome| {
                outcome.ok_or_else(|| StoreError::Corrupt("an event got no answer".into()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let claims = outcomes
            .iter()
            .flat_map(|outcome| match outcome {
                Acceptance::Accepted { deliveries } => deliveries.as_slice(),
                Acceptance::Duplicate => &[],
            })
            .filter_map(|delivery| {
                let (url, secret, lease) = leases.remove(&delivery.delivery_id)?;
                Some(Claim {
                    delivery: Delivery {
                        next_attempt_at: claim.lease_until_ms,
                        ..delivery.clone()
                    },
                    url,
                    secret,
                    lease,
                })
            })
            .collect();
        Ok((outcomes, claims))
    }

    /// `<prefix>{p:<n>}:u:<username>:`, the start of every key of a user.
    fn user_prefix(&self, username: &str) -> String {
        format!("{}u:{username}:", self.partition_prefix(username))
    }

    fn endpoints_key(&self, username: &str) -> String {
        format!("{}endpoints", self.user_prefix(username))
    }

    fn sequence_key(&self, username: &str) -> String {
        format!("{}seq", self.user_prefix(username))
    }

    fn endpoint_key(&self, username: &str, endpoint_id: &str) -> String {
        format!("{}endpoint:{endpoint_id}", self.user_prefix(username))
    }

    fn due_key(&self, username: &str) -> String {
        format!("{}due", self.partition_prefix(username))
    }

    /// The endpoint's pending deliveries by due time.
    fn endpoint_due_key(&self, username: &str, endpoint_id: &str) -> String {
        format!("{}ep:{endpoint_id}:due", self.user_prefix(username))
    }

    /// The partition's endpoints with pending deliveries, by earliest due.
    fn ready_key(&self, username: &str) -> String {
        format!("{}ready", self.partition_prefix(username))
    }

    fn delivery_key(&self, delivery: &Delivery) -> String {
        format!(
            "{}dlv:{}",
            self.partition_prefix(&delivery.username),
            delivery.delivery_id
        )
    }

    fn delivery_index_key(
        &self,
        username: &str,
        endpoint_id: &str,
        status: DeliveryStatus,
    ) -> String {
        format!(
            "{}ep:{endpoint_id}:{}",
            self.user_prefix(username),
            status.as_str()
        )
    }

    fn settings_key(&self) -> String {
        format!("{}settings", self.prefix)
    }
}

/// Connection trouble is "unavailable" (the API answers 503 and recovers);
/// anything else is a failure.
fn redis_error(error: redis::RedisError) -> StoreError {
    if error.is_io_error()
        || error.is_timeout()
        || error.is_connection_dropped()
        || error.is_connection_refusal()
    {
        StoreError::Unavailable(Box::new(error))
    } else {
        StoreError::Failed(Box::new(error))
    }
}

fn endpoint_from_fields(mut fields: HashMap<String, String>) -> Result<Endpoint, StoreError> {
    let mut take = |name: &str| {
        fields
            .remove(name)
            .ok_or_else(|| StoreError::Corrupt(format!("endpoint without {name}")))
    };
    let created_at = take("created_at")?;
    Ok(Endpoint {
        endpoint_id: take("endpoint_id")?,
        url: take("url")?,
        secret: take("secret")?,
        status: status_from_str(&take("status")?)?,
        events: events_from_json(&take("events")?)?,
        username: take("username")?,
        created_at: created_at
            .parse()
            .map_err(|_| StoreError::Corrupt(format!("endpoint created_at {created_at:?}")))?,
    })
}

/// A row of [`CLAIM_DUE`]: id, username, endpoint id, event id, event type,
/// body, attempts, created at, url, secret, lease.
fn claim_from_row(row: Vec<String>, lease_until_ms: i64) -> Result<Claim, StoreError> {
    let [
        id,
        username,
        endpoint_id,
        event_id,
        event_type,
        body,
        attempts,
        created_at,
        url,
        secret,
        lease,
    ]: [String; 11] = row.try_into().map_err(|row: Vec<String>| {
        StoreError::Corrupt(format!("claim row of {} fields", row.len()))
    })?;
    let number = |name: &str, text: &str| {
        text.parse::<i64>()
            .map_err(|_| StoreError::Corrupt(format!("delivery {name} {text:?}")))
    };
    Ok(Claim {
        delivery: Delivery {
            delivery_id: id,
            username,
            endpoint_id,
            event_id,
            event_type: event_type_from_str(&event_type)?,
            body,
            status: DeliveryStatus::Pending,
            attempts: u32::try_from(number("attempts", &attempts)?)
                .map_err(|_| StoreError::Corrupt(format!("delivery attempts {attempts}")))?,
            next_attempt_at: lease_until_ms,
            created_at: number("created_at", &created_at)?,
        },
        url,
        secret,
        lease,
    })
}

fn delivery_from_fields(
    delivery_id: String,
    mut fields: HashMap<String, String>,
) -> Result<Delivery, StoreError> {
    let mut take = |name: &str| {
        fields
            .remove(name)
            .ok_or_else(|| StoreError::Corrupt(format!("delivery without {name}")))
    };
    let number = |name: &str, text: String| {
        text.parse::<i64>()
            .map_err(|_| StoreError::Corrupt(format!("delivery {name} {text:?}")))
    };
    let attempts = number("attempts", take("attempts")?)?;
    Ok(Delivery {
        username: take("username")?,
        endpoint_id: take("endpoint_id")?,
        event_id: take("event_id")?,
        event_type: event_type_from_str(&take("event_type")?)?,
        body: take("body")?,
        status: take("status")?.parse()?,
        attempts: u32::try_from(attempts)
            .map_err(|_| StoreError::Corrupt(format!("delivery attempts {attempts}")))?,
        next_attempt_at: number("next_attempt_at", take("next_attempt_at")?)?,
        created_at: number("created_at", take("created_at")?)?,
        delivery_id,
    })
}

#[async_trait]
impl Store for RedisStore {
    async fn ping(&self) -> Result<(), StoreError> {
        let _: String = redis::cmd("PING")
            .query_async(&mut self.connection())
            .await
            .map_err(redis_error)?;
        Ok(())
    }

    async fn add_api_key(
        &self,
        username: &str,
        key_hash: &str,
        now: i64,
    ) -> Result<(), StoreError> {
        let _: i64 = self
            .scripts
            .add_api_key
            .key(self.users_key())
            .key(self.key_owner_key())
            .key(self.user_keys_key(username))
            .arg(key_hash)
            .arg(username)
            .arg(now)
            .invoke_async(&mut self.connection())
            .await
            .map_err(redis_error)?;
        Ok(())
    }

    async fn user_for_api_key(&self, key_hash: &str) -> Result<Option<String>, StoreError> {
        self.connection()
            .hget(self.key_owner_key(), key_hash)
            .await
            .map_err(redis_error)
    }

    async fn list_users(&self) -> Result<Vec<UserSummary>, StoreError> {
        let mut connection = self.connection();
        let users: HashMap<String, i64> = connection
            .hgetall(self.users_key())
            .await
            .map_err(redis_error)?;
        let mut names: Vec<_> = users.keys().cloned().collect();
        names.sort();
        let mut pipeline = redis::pipe();
        for name in &names {
            pipeline.scard(self.user_keys_key(name));
        }
        let key_counts: Vec<usize> = pipeline
            .query_async(&mut connection)
            .await
            .map_err(redis_error)?;
        Ok(names
            .into_iter()
            .zip(key_counts)
            .map(|(username, api_keys)| UserSummary {
                created_at: users[&username],
                username,
                api_keys,
            })
            .collect())
    }

    async fn revoke_api_keys(&self, username: &str) -> Result<usize, StoreError> {
        self.scripts
            .revoke_api_keys
            .key(self.key_owner_key())
            .key(self.user_keys_key(username))
            .invoke_async(&mut self.connection())
            .await
            .map_err(redis_error)
    }

    async fn create_endpoint(
        &self,
        endpoint: &Endpoint,
        limit: usize,
    ) -> Result<CreateOutcome, StoreError> {
        let username = &endpoint.username;
        let created: i64 = self
            .scripts
            .create_endpoint
            .key(self.endpoints_key(username))
            .key(self.endpoint_key(username, &endpoint.endpoint_id))
            .key(self.sequence_key(username))
            .arg(limit)
            .arg(&endpoint.endpoint_id)
            .arg(&endpoint.url)
            .arg(&endpoint.secret)
            .arg(endpoint.status.as_str())
            .arg(events_to_json(&endpoint.events))
            .arg(username)
            .arg(endpoint.created_at)
            .invoke_async(&mut self.connection())
            .await
            .map_err(redis_error)?;
        Ok(if created == 1 {
            CreateOutcome::Created
        } else {
            CreateOutcome::LimitReached
        })
    }

    async fn list_endpoints(&self, username: &str) -> Result<Vec<Endpoint>, StoreError> {
        let mut connection = self.connection();
        let ids: Vec<String> = connection
            .zrange(self.endpoints_key(username), 0, -1)
            .await
            .map_err(redis_error)?;
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipeline = redis::pipe();
        for id in &ids {
            pipeline.hgetall(self.endpoint_key(username, id));
        }
        let rows: Vec<HashMap<String, String>> = pipeline
            .query_async(&mut connection)
            .await
            .map_err(redis_error)?;
        rows.into_iter()
            // An endpoint deleted between the two round trips reads as empty.
            .filter(|fields| !fields.is_empty())
            .map(endpoint_from_fields)
            .collect()
    }

    async fn get_endpoint(
        &self,
        username: &str,
        endpoint_id: &str,
    ) -> Result<Option<Endpoint>, StoreError> {
        let fields: HashMap<String, String> = self
            .connection()
            .hgetall(self.endpoint_key(username, endpoint_id))
            .await
            .map_err(redis_error)?;
        if fields.is_empty() {
            return Ok(None);
        }
        endpoint_from_fields(fields).map(Some)
    }

    async fn update_endpoint(
        &self,
        username: &str,
        endpoint_id: &str,
        spec: &EndpointSpec,
    ) -> Result<Option<Endpoint>, StoreError> {
        let fields: Option<HashMap<String, String>> = self
            .scripts
            .update_endpoint
            .key(self.endpoint_key(username, endpoint_id))
            .arg(&spec.url)
            // An empty status keeps the current one.
            .arg(spec.status.map_or("", EndpointStatus::as_str))
            .arg(events_to_json(&spec.events))
            .invoke_async(&mut self.connection())
            .await
            .map_err(redis_error)?;
        fields.map(endpoint_from_fields).transpose()
    }

    async fn delete_endpoint(&self, username: &str, endpoint_id: &str) -> Result<bool, StoreError> {
        let removed: i64 = self
            .scripts
            .delete_endpoint
            .key(self.endpoints_key(username))
            .key(self.endpoint_key(username, endpoint_id))
            .key(self.due_key(username))
            .key(self.endpoint_due_key(username, endpoint_id))
            .key(self.ready_key(username))
            .arg(endpoint_id)
            .arg(self.user_prefix(username))
            .arg(self.partition_prefix(username))
            .invoke_async(&mut self.connection())
            .await
            .map_err(redis_error)?;
        Ok(removed == 1)
    }

    async fn accept_events(
        &self,
        events: &[Event],
        now_ms: i64,
    ) -> Result<Vec<Acceptance>, StoreError> {
        let nothing = ClaimRequest::default();
        Ok(self.accept(events, now_ms, &nothing).await?.0)
    }

    async fn accept_and_claim(
        &self,
        events: &[Event],
        now_ms: i64,
        claim: &ClaimRequest,
    ) -> Result<(Vec<Acceptance>, Vec<Claim>), StoreError> {
        self.accept(events, now_ms, claim).await
    }

    async fn list_deliveries(
        &self,
        username: &str,
        endpoint_id: &str,
        status: DeliveryStatus,
        page: &Page,
    ) -> Result<Vec<Delivery>, StoreError> {
        let mut connection = self.connection();
        let index = format!(
            "{}ep:{endpoint_id}:{}",
            self.user_prefix(username),
            status.as_str()
        );
        let start = page
            .after
            .as_ref()
            .map_or_else(|| "-".to_owned(), |after| format!("({after}"));
        let ids: Vec<String> = redis::cmd("ZRANGEBYLEX")
            .arg(&index)
            .arg(start)
            .arg("+")
            .arg("LIMIT")
            .arg(0)
            .arg(page.limit)
            .query_async(&mut connection)
            .await
            .map_err(redis_error)?;
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipeline = redis::pipe();
        for id in &ids {
            pipeline.hgetall(format!("{}dlv:{id}", self.partition_prefix(username)));
        }
        let rows: Vec<HashMap<String, String>> = pipeline
            .query_async(&mut connection)
            .await
            .map_err(redis_error)?;
        ids.into_iter()
            .zip(rows)
            .filter(|(_, fields)| !fields.is_empty())
            .map(|(id, fields)| delivery_from_fields(id, fields))
            .collect()
    }

    async fn claim_due(&self, request: &ClaimRequest) -> Result<Vec<Claim>, StoreError> {
        let mut connection = self.connection();
        // One round trip finds the partitions with a ready endpoint, so an
        // idle store costs one call, not one per partition.
        let first = self.next_partition.fetch_add(1, Ordering::Relaxed);
        let partitions: Vec<u32> = (0..PARTITIONS)
            .map(|offset| (first + offset) % PARTITIONS)
            .collect();
        let mut probe = redis::pipe();
        for partition in &partitions {
            probe
                .cmd("ZRANGEBYSCORE")
                .arg(format!("{}ready", self.prefix_of_partition(*partition)))
                .arg("-inf")
                .arg(request.now_ms)
                .arg("LIMIT")
                .arg(0)
                .arg(1);
        }
        let ready: Vec<Vec<String>> = probe
            .query_async(&mut connection)
            .await
            .map_err(redis_error)?;
        let lease_base = ids::new_lease_token();
        let room: Vec<(&String, &usize)> = request.room.iter().collect();
        let mut claims = Vec::new();
        for (partition, ready) in partitions.into_iter().zip(ready) {
            let wanted = request.limit.saturating_sub(claims.len());
            if wanted == 0 {
                break;
            }
            if ready.is_empty() {
                continue;
            }
            let partition_prefix = self.prefix_of_partition(partition);
            let mut invocation = self.scripts.claim_due.prepare_invoke();
            invocation
                .key(format!("{partition_prefix}due"))
                .key(format!("{partition_prefix}ready"))
                .arg(request.now_ms)
                .arg(request.lease_until_ms)
                .arg(wanted)
                .arg(&partition_prefix)
                .arg(request.park_until_ms)
                .arg(format!("{lease_base}:{partition}"))
                .arg(request.per_endpoint);
            for (endpoint_id, room) in &room {
                invocation.arg(endpoint_id.as_str()).arg(**room);
            }
            let rows: Vec<Vec<String>> = invocation
                .invoke_async(&mut connection)
                .await
                .map_err(redis_error)?;
            for row in rows {
                claims.push(claim_from_row(row, request.lease_until_ms)?);
            }
        }
        Ok(claims)
    }

    async fn record_attempts(&self, finished: &[FinishedAttempt]) -> Result<Vec<bool>, StoreError> {
        if finished.is_empty() {
            return Ok(Vec::new());
        }
        let by_partition = group_by_partition(
            finished
                .iter()
                .map(|attempt| &attempt.claim.delivery.username),
        );
        let answers: Vec<Vec<i64>> = self
            .per_partition(
                &self.scripts.record_attempts,
                &by_partition,
                |invocation, _, members| {
                    invocation
                        .arg(DELIVERED_RETENTION_SECS)
                        .arg(DELIVERED_INDEX_CAP);
                    for &i in members {
                        let FinishedAttempt {
                            claim,
                            record,
                            result,
                        } = &finished[i];
                        let delivery = &claim.delivery;
                        let (outcome, next_at) = match result {
                            AttemptResult::Delivered => ("delivered", 0),
                            AttemptResult::RetryAt(at) => ("retry", *at),
                            AttemptResult::Dead => ("failed", 0),
                        };
                        invocation
                            .arg(&delivery.delivery_id)
                            .arg(self.user_prefix(&delivery.username))
                            .arg(&delivery.endpoint_id)
                            .arg(&claim.lease)
                            .arg(record.attempt)
                            .arg(outcome)
                            .arg(next_at)
                            .arg(serde_json::to_string(record).expect("attempt records serialize"));
                    }
                },
            )
            .await?;
        let mut recorded = vec![false; finished.len()];
        for ((_, members), answer) in by_partition.iter().zip(answers) {
            for (&i, ok) in members.iter().zip(answer) {
                recorded[i] = ok == 1;
            }
        }
        Ok(recorded)
    }

    async fn release(&self, claim: &Claim, due_ms: i64) -> Result<bool, StoreError> {
        let released: i64 = self
            .scripts
            .release
            .key(self.delivery_key(&claim.delivery))
            .key(self.due_key(&claim.delivery.username))
            .key(self.endpoint_due_key(&claim.delivery.username, &claim.delivery.endpoint_id))
            .key(self.ready_key(&claim.delivery.username))
            .arg(&claim.lease)
            .arg(due_ms)
            .arg(&claim.delivery.delivery_id)
            .invoke_async(&mut self.connection())
            .await
            .map_err(redis_error)?;
        Ok(released == 1)
    }

    async fn delivery_attempts(
        &self,
        username: &str,
        endpoint_id: &str,
        delivery_id: &str,
    ) -> Result<Option<(Delivery, Vec<AttemptRecord>)>, StoreError> {
        let key = format!("{}dlv:{delivery_id}", self.partition_prefix(username));
        let fields: HashMap<String, String> =
            self.connection().hgetall(&key).await.map_err(redis_error)?;
        if fields.is_empty() {
            return Ok(None);
        }
        // The attempt log is kept in the delivery's hash, `attempt:<n>`.
        let mut attempts: Vec<AttemptRecord> = fields
            .iter()
            .filter(|(name, _)| name.starts_with("attempt:"))
            .map(|(_, text)| {
                serde_json::from_str(text)
                    .map_err(|e| StoreError::Corrupt(format!("attempt record: {e}")))
            })
            .collect::<Result<_, _>>()?;
        attempts.sort_by_key(|attempt| attempt.attempt);
        let delivery = delivery_from_fields(delivery_id.to_owned(), fields)?;
        if delivery.username != username || delivery.endpoint_id != endpoint_id {
            return Ok(None);
        }
        Ok(Some((delivery, attempts)))
    }

    async fn retry_dead(
        &self,
        username: &str,
        endpoint_id: &str,
        delivery_id: &str,
        now_ms: i64,
    ) -> Result<RetryOutcome, StoreError> {
        // Ownership first: the id must be one of this endpoint's deliveries.
        let Some((delivery, _)) = self
            .delivery_attempts(username, endpoint_id, delivery_id)
            .await?
        else {
            return Ok(RetryOutcome::NotFound);
        };
        let before: Option<String> = self
            .scripts
            .retry_dead
            .key(self.delivery_key(&delivery))
            .key(self.due_key(username))
            .key(self.delivery_index_key(username, endpoint_id, DeliveryStatus::Failed))
            .key(self.delivery_index_key(username, endpoint_id, DeliveryStatus::Pending))
            .key(self.endpoint_due_key(username, endpoint_id))
            .key(self.ready_key(username))
            .arg(now_ms)
            .arg(delivery_id)
            .arg(format!("{}dead", self.partition_prefix(username)))
            .invoke_async(&mut self.connection())
            .await
            .map_err(redis_error)?;
        Ok(
            match before
                .as_deref()
                .map(str::parse::<DeliveryStatus>)
                .transpose()?
            {
                None => RetryOutcome::NotFound,
                Some(DeliveryStatus::Failed) => RetryOutcome::Scheduled,
                Some(other) => RetryOutcome::NotFailed(other),
            },
        )
    }

    async fn delivery_stats(&self, now_ms: i64) -> Result<DeliveryStats, StoreError> {
        let mut pipeline = redis::pipe();
        for partition in 0..PARTITIONS {
            let prefix = self.prefix_of_partition(partition);
            pipeline
                .zcount(format!("{prefix}due"), "-inf", now_ms)
                .zcount(format!("{prefix}due"), format!("({now_ms}"), "+inf")
                .get(format!("{prefix}dead"));
        }
        let counts: Vec<Option<i64>> = pipeline
            .query_async(&mut self.connection())
            .await
            .map_err(redis_error)?;
        let mut stats = DeliveryStats::default();
        for triple in counts.chunks(3) {
            let value = |i: usize| u64::try_from(triple[i].unwrap_or_default()).unwrap_or_default();
            stats.due += value(0);
            stats.scheduled += value(1);
            stats.dead += value(2);
        }
        Ok(stats)
    }

    async fn purge_expired(&self, _now_ms: i64) -> Result<(), StoreError> {
        // De-duplication keys carry a TTL; Redis expires them itself.
        Ok(())
    }

    async fn setting_or_insert(&self, name: &str, value: &str) -> Result<String, StoreError> {
        let mut connection = self.connection();
        let (_, stored): (bool, String) = redis::pipe()
            .atomic()
            .hset_nx(self.settings_key(), name, value)
            .hget(self.settings_key(), name)
            .query_async(&mut connection)
            .await
            .map_err(redis_error)?;
        Ok(stored)
    }
}
