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
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{AsyncCommands, Script};
use tokio_util::sync::CancellationToken;
use webhookd_core::endpoint::MAX_ENDPOINTS_PER_USER;
use webhookd_core::{Endpoint, EndpointSpec, EndpointStatus, Event, ids};

use crate::{
    Acceptance, AttemptRecord, AttemptResult, Claim, ClaimRequest, CreateOutcome, DEDUP_WINDOW_MS,
    Delivery, DeliveryStats, DeliveryStatus, EndpointChanges, FinishedAttempt, Page, Retention,
    RetryOutcome, Store, StoreError, SweepReport, UserSummary, event_type_from_str,
    events_from_json, events_to_json, new_delivery, status_from_str,
};

/// Redis answers in microseconds; 2 s means it is in trouble. (The client's
/// own default of 500 ms trips on a busy two-core machine.)
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(2);
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(2);

mod changes;

const CREATE_ENDPOINT: &str = include_str!("lua/create_endpoint.lua");

const UPDATE_ENDPOINT: &str = include_str!("lua/update_endpoint.lua");

const DELETE_ENDPOINT: &str = include_str!("lua/delete_endpoint.lua");

const SCHEDULE_FUNCTIONS: &str = include_str!("lua/schedule_functions.lua");

const CLAIM_DUE: &str = include_str!("lua/claim_due.lua");

const RECORD_ATTEMPTS: &str = include_str!("lua/record_attempts.lua");

const RELEASE: &str = include_str!("lua/release.lua");

const RETRY_DEAD: &str = include_str!("lua/retry_dead.lua");

const ACCEPT_EVENTS: &str = include_str!("lua/accept_events.lua");

const ADD_API_KEY: &str = include_str!("lua/add_api_key.lua");

const REVOKE_API_KEYS: &str = include_str!("lua/revoke_api_keys.lua");
const SWEEP: &str = include_str!("lua/sweep.lua");

/// Most deliveries one sweep script removes: a few milliseconds of Redis,
/// so other clients never wait long (they are served between two scripts).
const SWEEP_BUDGET: usize = 512;
/// How long one [`Store::sweep`] call keeps sweeping a partition that has
/// more, script after script.
const SWEEP_SLICE: Duration = Duration::from_millis(50);

#[derive(Clone)]
pub struct RedisStore {
    connection: ConnectionManager,
    /// For the change subscription, which needs a connection of its own.
    client: redis::Client,
    prefix: String,
    retention: Retention,
    changes: Arc<EndpointChanges>,
    scripts: Arc<Scripts>,
    /// Where the next claim starts, rotating so no partition starves.
    next_partition: Arc<AtomicU32>,
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
    sweep: Script,
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
        let connection = ConnectionManager::new_with_config(client.clone(), config)
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
            sweep: Script::new(SWEEP),
        };
        Ok(RedisStore {
            connection,
            client,
            prefix: prefix.to_owned(),
            retention: Retention::default(),
            changes: Arc::default(),
            scripts: Arc::new(scripts),
            next_partition: Arc::new(AtomicU32::new(0)),
        })
    }

    /// Keeps finished deliveries as `retention` says (default: SPEC §4).
    #[must_use]
    pub fn with_retention(self, retention: Retention) -> Self {
        RedisStore { retention, ..self }
    }

    /// The pub/sub channel endpoint updates and deletes are announced on.
    fn changes_channel(&self) -> String {
        format!("{}endpoint-changes", self.prefix)
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
/// body, attempts, created at, url, secret, lease, last attempt (0 or 1).
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
        last_attempt,
    ]: [String; 12] = row.try_into().map_err(|row: Vec<String>| {
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
            last_attempt: last_attempt == "1",
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
        last_attempt: fields.get("last_attempt").is_some_and(|flag| flag == "1"),
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
            .arg(self.changes_channel())
            .arg(endpoint_id)
            .invoke_async(&mut self.connection())
            .await
            .map_err(redis_error)?;
        if fields.is_some() {
            self.changes.mark(endpoint_id);
        }
        fields.map(endpoint_from_fields).transpose()
    }

    async fn delete_endpoint(&self, username: &str, endpoint_id: &str) -> Result<bool, StoreError> {
        let removed: i64 = self
            .scripts
            .delete_endpoint
            .key(self.endpoints_key(username))
            .key(self.endpoint_key(username, endpoint_id))
            .key(self.ready_key(username))
            .key(self.endpoint_due_key(username, endpoint_id))
            .key(self.delivery_index_key(username, endpoint_id, DeliveryStatus::Pending))
            .key(self.delivery_index_key(username, endpoint_id, DeliveryStatus::Delivered))
            .key(self.delivery_index_key(username, endpoint_id, DeliveryStatus::Failed))
            .key(format!("{}trash", self.partition_prefix(username)))
            .arg(endpoint_id)
            .arg(format!(
                "{}trash:{}:",
                self.partition_prefix(username),
                ids::new_lease_token()
            ))
            .arg(format!("{}dead", self.partition_prefix(username)))
            .arg(self.changes_channel())
            .invoke_async(&mut self.connection())
            .await
            .map_err(redis_error)?;
        if removed == 1 {
            self.changes.mark(endpoint_id);
        }
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
        let mut after = page.after.clone();
        let mut deliveries = Vec::with_capacity(page.limit.min(1000));
        // An id whose delivery is gone (removed between two calls, or left
        // by an older webhookd whose deliveries expired on their own) is
        // skipped and dropped from the index; the page is still filled.
        while deliveries.len() < page.limit {
            let wanted = page.limit - deliveries.len();
            let start = after
                .as_ref()
                .map_or_else(|| "-".to_owned(), |after| format!("({after}"));
            let ids: Vec<String> = redis::cmd("ZRANGEBYLEX")
                .arg(&index)
                .arg(start)
                .arg("+")
                .arg("LIMIT")
                .arg(0)
                .arg(wanted)
                .query_async(&mut connection)
                .await
                .map_err(redis_error)?;
            let Some(last) = ids.last() else { break };
            after = Some(last.clone());
            let index_ends = ids.len() < wanted;
            let mut pipeline = redis::pipe();
            for id in &ids {
                pipeline.hgetall(format!("{}dlv:{id}", self.partition_prefix(username)));
            }
            let rows: Vec<HashMap<String, String>> = pipeline
                .query_async(&mut connection)
                .await
                .map_err(redis_error)?;
            let mut gone = Vec::new();
            for (id, fields) in ids.into_iter().zip(rows) {
                if fields.is_empty() {
                    gone.push(id);
                } else {
                    deliveries.push(delivery_from_fields(id, fields)?);
                }
            }
            if !gone.is_empty() {
                let _: i64 = connection.zrem(&index, gone).await.map_err(redis_error)?;
            }
            if index_ends {
                break;
            }
        }
        Ok(deliveries)
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
                    for &i in members {
                        let FinishedAttempt {
                            claim,
                            record,
                            result,
                        } = &finished[i];
                        let delivery = &claim.delivery;
                        let finished_ms = record
                            .started_at
                            .saturating_add(i64::try_from(record.duration_ms).unwrap_or(i64::MAX));
                        let (outcome, at) = match result {
                            AttemptResult::Delivered => ("delivered", 0),
                            AttemptResult::RetryAt(at) => ("retry", *at),
                            AttemptResult::Dead => ("failed", 0),
                        };
                        let at = self
                            .retention
                            .removal_at(finished_ms, *result)
                            .unwrap_or(at);
                        invocation
                            .arg(&delivery.delivery_id)
                            .arg(self.user_prefix(&delivery.username))
                            .arg(&delivery.endpoint_id)
                            .arg(&claim.lease)
                            .arg(record.attempt)
                            .arg(outcome)
                            .arg(at)
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
            .arg(self.partition_prefix(username))
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

    async fn sweep(&self, now_ms: i64) -> Result<SweepReport, StoreError> {
        // One partition per call (never a pipeline of them: Redis would run
        // the whole pipeline before serving anyone else). De-duplication
        // keys carry a TTL; Redis expires them itself.
        let mut report = SweepReport::default();
        for partition in 0..PARTITIONS {
            let partition_prefix = self.prefix_of_partition(partition);
            let started = std::time::Instant::now();
            loop {
                let (removed, more): (u64, u8) = self
                    .scripts
                    .sweep
                    .key(format!("{partition_prefix}due"))
                    .key(format!("{partition_prefix}ready"))
                    .arg(&partition_prefix)
                    .arg(now_ms)
                    .arg(SWEEP_BUDGET)
                    .invoke_async(&mut self.connection())
                    .await
                    .map_err(redis_error)?;
                report.removed += removed;
                if more == 0 {
                    break;
                }
                if started.elapsed() > SWEEP_SLICE {
                    report.more = true;
                    break;
                }
            }
        }
        Ok(report)
    }

    fn endpoint_changes(&self) -> Arc<EndpointChanges> {
        Arc::clone(&self.changes)
    }

    async fn follow_endpoint_changes(&self, shutdown: CancellationToken) {
        changes::follow(
            &self.client,
            &self.changes_channel(),
            &self.changes,
            &shutdown,
        )
        .await;
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
