//! The production store: Redis.
//!
//! Key layout. Every name starts with a configurable prefix (`webhookd:` by
//! default, `redis_prefix`), so deployments and test runs can share a server.
//! A user's data lives in one of the store's partitions, chosen by a fixed
//! hash of the username; `<p>` below is the partition's hash tag — `{p:<n>}`
//! of 16 on one server, `{c:<n>:<k>}` of 48 on a cluster (see
//! `connection.rs`) — and `<u>` is `<p>:u:<username>`.
//!
//! | key | type | holds |
//! |---|---|---|
//! | `{keys}:users` | hash | username → created_at |
//! | `{keys}:by_hash` | hash | API key hash → username |
//! | `{keys}:user:<name>` | set | the user's API key hashes |
//! | `{keys}:links` | hash | portal link hash → `<expires_at> <username>` |
//! | `{keys}:user_links:<name>` | set | the user's portal link hashes |
//! | `<u>:endpoints` | sorted set | endpoint ids, scored by creation sequence |
//! | `<u>:seq` | counter | that sequence |
//! | `<u>:endpoint:<id>` | hash | one endpoint's fields |
//! | `<u>:seen:<event_id>` | string, 24 h TTL | de-duplication |
//! | `<u>:payload:<event_id>:<accepted ms>` | string, `keep_payloads` TTL | the event's body, once per event, for the delivery detail (SPEC §13) |
//! | `<u>:ep:<id>:<status>` | sorted set, score 0 | the endpoint's delivery ids by status (lexical = creation order) |
//! | `<p>:dlv:<id>` | hash | one delivery, with its attempt log as fields `attempt:<n>`; a body or record of 65–512 bytes in 64-byte pieces (`body`, `body~2`…) so the hash stays a listpack |
//! | `<u>:ep:<id>:due` | sorted set | the endpoint's pending delivery ids by due time |
//! | `<u>:ep:<id>:sending` | sorted set | the endpoint's sending slots by when they lapse: its concurrency across processes (SPEC §10) |
//! | `<u>:ep:<id>:line:<line>` | list | an ordered endpoint's line (SPEC §15): its pending delivery ids in acceptance order, the head first — only the head is in `…:due` |
//! | `<u>:ep:<id>:rate` | hash, expires once full | the endpoint's `rate_limit` token bucket: `tokens`, `at` (ms) |
//! | `<p>:ready` | sorted set | the `…:due` keys of endpoints with pending deliveries, by their earliest due time |
//! | `<p>:operator` | list | operator events not yet sent on (SPEC §15): records `{"id", "type", "timestamp", "data"}`, oldest first |
//! | `<u>:quota_reached:<day>` | string, 48 h TTL | the user's daily quota was reported reached that day (operator events) |
//! | `<p>:dead` | counter | dead deliveries kept in the partition |
//! | `<p>:expiry` | sorted set | delivered and dead delivery ids by removal time (ms), SPEC §4 retention |
//! | `<p>:trash` | list | trash bases of deleted endpoints not yet swept |
//! | `<p>:trash:<token>:<due\|pending\|delivered\|failed>` | sorted set | a deleted endpoint's indexes, renamed |
//! | `settings` | hash | name → value |
//!
//! A delivery hash also holds `lease` while claimed, `last_attempt` after
//! a manual re-send (one attempt, SPEC §8), and `line` while it is in an
//! ordered endpoint's line (`next_attempt_at` 0 while held behind its head).
//!
//! Housekeeping is bounded: `sweep.lua` removes at most [`SWEEP_BUDGET`]
//! deliveries per call — past their retention, or left by a deleted
//! endpoint, whose delete was O(1) (its indexes renamed to a trash base) —
//! so no call holds Redis for more than a few milliseconds.
//!
//! Endpoint updates and deletes `PUBLISH` the endpoint id on
//! `<prefix>endpoint-changes`; every process follows it (see `changes.rs`)
//! so claims it holds for that endpoint are re-read before their next
//! attempt.
//!
//! Claims walk `<p>:ready` endpoint by endpoint, oldest due first, and take
//! at most a worker's per-endpoint room from each: an endpoint with a million
//! overdue deliveries costs a claim one skipped entry, not a scan of its
//! backlog, so it cannot starve the others. The backlog gauges count the
//! schedules of the endpoints in `<p>:ready` (`delivery_counts.lua`); a
//! partition-wide schedule kept for them cost every pending delivery one
//! more sorted-set entry (≈ 138 bytes) and two more commands each time it
//! moved, and is gone (the sweep unlinks one an older webhookd left).
//!
//! The braces are Redis Cluster hash tags. Every script and pipeline
//! touches keys of one tag only — an event's de-duplication, its owner's
//! endpoints, its deliveries and the partition's ready queue share the
//! partition's tag — so they run on a cluster unchanged (there the scripts
//! start with `#!lua`, under which Redis refuses a key of another slot, and
//! `tests/conformance/single_slot.rs` lists the keys each one touches).
//! Work that spans partitions is one request per partition, sent together.
//! Changes that span keys are Lua scripts, atomic on the server; nothing is
//! read, modified and written back from here.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::AtomicU32;
use std::time::Duration;

use futures_util::future::try_join_all;
use redis::Script;
use webhookd_core::endpoint::ENDPOINTS_PER_USER_CEILING;
use webhookd_core::quota::Quotas;

use crate::{
    Claim, DEDUP_WINDOW_MS, Delivery, DeliveryStatus, EndpointChanges, Recorded, Retention,
    StoreError,
};

mod accept;
mod changes;
mod cluster;
mod connection;
mod listings;
mod operator;
mod resend;
mod rows;
mod store;
mod users;

use self::connection::Connection;
use self::rows::redis_error;

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
const ADD_PORTAL_LINK: &str = include_str!("lua/add_portal_link.lua");
const REDEEM_PORTAL_LINK: &str = include_str!("lua/redeem_portal_link.lua");
const REPLACE_FIELD: &str = include_str!("lua/replace_field.lua");
const SWEEP: &str = include_str!("lua/sweep.lua");
const CREATE_TEST_DELIVERY: &str = include_str!("lua/create_test_delivery.lua");
const ROTATE_SECRET: &str = include_str!("lua/rotate_secret.lua");
const RECOVER: &str = include_str!("lua/recover.lua");
const DELIVERY_COUNTS: &str = include_str!("lua/delivery_counts.lua");

/// How long an accepted batch waits for its replicas (`WAIT`).
const WAIT_TIMEOUT_MS: u64 = 1_000;

/// Most deliveries one sweep script removes: a few milliseconds of Redis,
/// so other clients never wait long (they are served between two scripts).
const SWEEP_BUDGET: usize = 512;
/// How long one [`Store::sweep`] call keeps sweeping a partition that has
/// more, script after script.
const SWEEP_SLICE: Duration = Duration::from_millis(50);

#[derive(Clone)]
pub struct RedisStore {
    connection: Connection,
    /// For the change subscription, which needs a connection of its own:
    /// the server, or each node given for a cluster, tried in turn.
    subscribers: Arc<Vec<redis::Client>>,
    /// `<prefix>{<tag>}:` of each partition.
    partition_prefixes: Arc<Vec<String>>,
    prefix: String,
    retention: Retention,
    /// Zero: never (SPEC §8).
    auto_disable_after: Duration,
    /// Replicas that must have each accepted batch before it counts as
    /// durable (`WAIT`; 0: Redis's asynchronous replication alone).
    wait_replicas: usize,
    changes: Arc<EndpointChanges>,
    scripts: Arc<Scripts>,
    /// Where the next claim starts, rotating so no partition starves.
    next_partition: Arc<AtomicU32>,
    /// Redis's clock, read with each claim probe.
    clock: Arc<crate::clock::StoreClock>,
    /// Users' quotas as ingest last read them (SPEC §11).
    quotas: Arc<crate::quotas::QuotaBook>,
    /// Owners' payload filters as accepts last read them (SPEC §15).
    filters: Arc<crate::filters::FilterSnapshots>,
    /// Whether the scripts record operator events (SPEC §15).
    operator_events: bool,
}

struct Scripts {
    create_endpoint: Script,
    update_endpoint: Script,
    delete_endpoint: Script,
    add_api_key: Script,
    revoke_api_keys: Script,
    add_portal_link: Script,
    redeem_portal_link: Script,
    replace_field: Script,
    accept_events: Script,
    claim_due: Script,
    record_attempts: Script,
    release: Script,
    retry_dead: Script,
    sweep: Script,
    create_test_delivery: Script,
    rotate_secret: Script,
    recover: Script,
    delivery_counts: Script,
}

// Two hex digits number the deliveries of one event.
const _: () = assert!(ENDPOINTS_PER_USER_CEILING <= 256);

/// What became of one claim, for RECORD_ATTEMPTS.
struct Write<'a> {
    claim: &'a Claim,
    /// `delivered`, `retry` or `failed`.
    outcome: &'static str,
    /// A retry's due time, else the removal time.
    at: i64,
    /// The attempt count it now has.
    attempt: u32,
    /// The attempt's log entry (`rows::attempt_field`).
    log: String,
    /// When the attempt started, unix seconds; `None` when it does not
    /// count toward the endpoint's failure streak
    /// ([`AttemptRecord::counts_toward_streak`]).
    started_s: Option<i64>,
    /// When it ended, unix ms: the next delivery of its line is due then.
    finished_ms: i64,
}

/// The partition of a user of `partitions`: FNV-1a of the name, fixed
/// forever (the partition count is part of the key layout: changing it on
/// a deployment with data would strand that data).
fn partition_of(username: &str, partitions: usize) -> usize {
    let hash = username.bytes().fold(0x811c_9dc5_u32, |hash, byte| {
        (hash ^ u32::from(byte)).wrapping_mul(0x0100_0193)
    });
    hash as usize % partitions
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

impl RedisStore {
    /// Connects to `url`: `redis://…` for one server, `redis+cluster://
    /// host:port,…` for a Redis Cluster. The connection reconnects by itself
    /// after Redis restarts (or a cluster fails over); requests in the
    /// meantime fail as [`StoreError::Unavailable`].
    pub async fn connect(url: &str, prefix: &str) -> Result<Self, StoreError> {
        assert!(
            !prefix.contains(['{', '}']),
            "the key prefix must not contain hash-tag braces"
        );
        let connected = connection::connect(url).await?;
        // On a cluster (Redis 7 or later) the `#!lua` header makes Redis
        // refuse any key outside the slot of the declared ones, even one
        // the node happens to serve too: a layout mistake fails in every
        // test, not only on clusters whose slots fall apart. One server
        // (6.2 or later) runs them without it.
        let header = match connected.connection {
            Connection::Cluster(_) => "#!lua\n",
            Connection::Server(_) => "",
        };
        let script = |body: &str| Script::new(&format!("{header}{body}"));
        let scheduling = |body: &str| script(&format!("{SCHEDULE_FUNCTIONS}{body}"));
        let scripts = Scripts {
            create_endpoint: script(CREATE_ENDPOINT),
            update_endpoint: script(UPDATE_ENDPOINT),
            delete_endpoint: script(DELETE_ENDPOINT),
            add_api_key: script(ADD_API_KEY),
            revoke_api_keys: script(REVOKE_API_KEYS),
            add_portal_link: script(ADD_PORTAL_LINK),
            redeem_portal_link: script(REDEEM_PORTAL_LINK),
            replace_field: script(REPLACE_FIELD),
            accept_events: scheduling(ACCEPT_EVENTS),
            claim_due: scheduling(CLAIM_DUE),
            record_attempts: scheduling(RECORD_ATTEMPTS),
            release: scheduling(RELEASE),
            retry_dead: scheduling(RETRY_DEAD),
            sweep: script(SWEEP),
            rotate_secret: script(ROTATE_SECRET),
            recover: scheduling(RECOVER),
            create_test_delivery: scheduling(CREATE_TEST_DELIVERY),
            delivery_counts: script(DELIVERY_COUNTS),
        };
        Ok(RedisStore {
            connection: connected.connection,
            subscribers: Arc::new(connected.subscribers),
            partition_prefixes: Arc::new(
                connected
                    .partition_tags
                    .iter()
                    .map(|tag| format!("{prefix}{{{tag}}}:"))
                    .collect(),
            ),
            prefix: prefix.to_owned(),
            retention: Retention::default(),
            auto_disable_after: Duration::ZERO,
            wait_replicas: 0,
            changes: Arc::default(),
            scripts: Arc::new(scripts),
            next_partition: Arc::new(AtomicU32::new(0)),
            clock: Arc::new(crate::clock::StoreClock::new()),
            quotas: Arc::new(crate::quotas::QuotaBook::new(Quotas::default())),
            filters: Arc::default(),
            operator_events: false,
        }
        .with_clock_read()
        .await)
    }

    /// Reads Redis's clock, trying for a few seconds: until it is read the
    /// process's wall clock stands in, and a process whose clock is off
    /// would write due times and ids off by as much (the fault campaign
    /// found a delivery due an hour late, accepted by a process started an
    /// hour ahead while its store link was cut). Every claim probe reads
    /// it again.
    async fn with_clock_read(self) -> Self {
        const TRIES: u32 = 20;
        for _ in 0..TRIES {
            let time: redis::RedisResult<Vec<String>> =
                redis::cmd("TIME").query_async(&mut self.connection()).await;
            if let Some(store_ms) = time
                .ok()
                .and_then(|time| crate::clock::StoreClock::from_redis_time(&time))
            {
                self.clock.read(store_ms, std::time::Instant::now());
                return self;
            }
            tokio::time::sleep(std::time::Duration::from_millis(250)).await;
        }
        tracing::warn!(
            "Redis did not tell its time; the wall clock stands in until a claim probe reads it"
        );
        self
    }

    /// Keeps finished deliveries as `retention` says (default: SPEC §4).
    #[must_use]
    pub fn with_retention(self, retention: Retention) -> Self {
        RedisStore { retention, ..self }
    }

    /// Disables endpoints with no successful attempt for this long (SPEC
    /// §8; zero never, the default here).
    #[must_use]
    pub fn with_auto_disable_after(self, auto_disable_after: Duration) -> Self {
        RedisStore {
            auto_disable_after,
            ..self
        }
    }

    /// Records operator events (SPEC §15) in the outbox as deliveries die,
    /// endpoints are disabled and quotas are reached.
    #[must_use]
    pub fn with_operator_events(self, operator_events: bool) -> Self {
        RedisStore {
            operator_events,
            ..self
        }
    }

    /// The scripts' flag for [`RedisStore::with_operator_events`]: the
    /// operator's username (whose own deliveries tell nothing: a target
    /// that is down would tell itself forever), or `""` when off.
    fn operator_flag(&self) -> &'static str {
        if self.operator_events {
            webhookd_core::operator::OPERATOR_USERNAME
        } else {
            ""
        }
    }

    /// Checks events against these quota defaults (SPEC §11; a user's own
    /// setting overrides them).
    #[must_use]
    pub fn with_quotas(self, defaults: Quotas) -> Self {
        RedisStore {
            quotas: Arc::new(crate::quotas::QuotaBook::new(defaults)),
            ..self
        }
    }

    /// The quotas in force for each of `usernames`, as last read within a
    /// few seconds (see `QuotaBook`).
    async fn quotas_of<'a>(
        &self,
        usernames: impl Iterator<Item = &'a String>,
    ) -> Result<HashMap<&'a str, Quotas>, StoreError> {
        let mut quotas = HashMap::new();
        for username in usernames {
            if quotas.contains_key(username.as_str()) {
                continue;
            }
            let in_force = if let Some(in_force) = self.quotas.fresh(username) {
                in_force
            } else {
                let name = webhookd_core::quota::setting_name(username);
                let setting = crate::Store::setting(self, &name).await?;
                self.quotas.remember(username, setting.as_deref())
            };
            quotas.insert(username.as_str(), in_force);
        }
        Ok(quotas)
    }

    /// Has every accepted batch reach `replicas` replicas of its primary
    /// before it counts as durable (`redis_wait_replicas`; see
    /// docs/operations.md): a failover then cannot lose an event already
    /// acknowledged to its producer.
    #[must_use]
    pub fn with_wait_replicas(self, wait_replicas: usize) -> Self {
        RedisStore {
            wait_replicas,
            ..self
        }
    }

    /// The pub/sub channel endpoint updates and deletes are announced on.
    fn changes_channel(&self) -> String {
        format!("{}endpoint-changes", self.prefix)
    }

    fn connection(&self) -> Connection {
        self.connection.clone()
    }

    fn partitions(&self) -> usize {
        self.partition_prefixes.len()
    }

    /// Indexes of `usernames`, grouped by their users' partition.
    fn group_by_partition<'a>(
        &self,
        usernames: impl Iterator<Item = &'a String>,
    ) -> BTreeMap<usize, Vec<usize>> {
        let mut groups = BTreeMap::<usize, Vec<usize>>::new();
        for (i, username) in usernames.enumerate() {
            groups
                .entry(partition_of(username, self.partitions()))
                .or_default()
                .push(i);
        }
        groups
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

    fn links_key(&self) -> String {
        format!("{}{{keys}}:links", self.prefix)
    }

    fn user_links_key(&self, username: &str) -> String {
        format!("{}{{keys}}:user_links:{username}", self.prefix)
    }

    /// `<prefix>{p:<n>}:`, the start of every key in a user's partition.
    fn partition_prefix(&self, username: &str) -> String {
        self.prefix_of_partition(partition_of(username, self.partitions()))
    }

    fn prefix_of_partition(&self, partition: usize) -> String {
        self.partition_prefixes[partition].clone()
    }

    /// Runs `script` once per partition of `groups`, atomically, with KEYS
    /// ready and the partition prefix as ARGV[1]; `add_args` adds
    /// the rest for the partition and its members. The invocations go out
    /// together (one request per partition: on a cluster each goes to its
    /// own primary); a script Redis does not have yet is loaded on the way.
    /// Answers in the order of `groups`.
    /// With `replicas` above 0, each invocation is followed by `WAIT` on the
    /// same primary, and fails as unavailable unless that many replicas
    /// have it.
    async fn per_partition<T: redis::FromRedisValue>(
        &self,
        script: &Script,
        groups: &BTreeMap<usize, Vec<usize>>,
        replicas: usize,
        mut add_args: impl FnMut(&mut redis::ScriptInvocation<'_>, usize, &[usize]),
    ) -> Result<Vec<T>, StoreError> {
        let invocations: Vec<redis::ScriptInvocation<'_>> = groups
            .iter()
            .map(|(partition, members)| {
                let partition_prefix = self.prefix_of_partition(*partition);
                let mut invocation = script.prepare_invoke();
                invocation
                    .key(format!("{partition_prefix}ready"))
                    .arg(&partition_prefix);
                add_args(&mut invocation, *partition, members);
                invocation
            })
            .collect();
        if replicas == 0 {
            return try_join_all(invocations.iter().map(|invocation| async {
                invocation.invoke_async(&mut self.connection()).await
            }))
            .await
            .map_err(redis_error);
        }
        try_join_all(
            invocations
                .iter()
                .map(|invocation| self.invoke_replicated(script, invocation, replicas)),
        )
        .await
    }

    /// Runs `invocation` and `WAIT replicas` in one pipeline, so both reach
    /// the primary of the invocation's slot (loading the script first if
    /// Redis does not have it).
    async fn invoke_replicated<T: redis::FromRedisValue>(
        &self,
        script: &Script,
        invocation: &redis::ScriptInvocation<'_>,
        replicas: usize,
    ) -> Result<T, StoreError> {
        let mut pipeline = redis::pipe();
        pipeline
            .invoke_script(invocation)
            .cmd("WAIT")
            .arg(replicas)
            .arg(WAIT_TIMEOUT_MS);
        let mut connection = self.connection();
        let answer: redis::RedisResult<(T, usize)> = pipeline.query_async(&mut connection).await;
        let (value, acknowledged) = match answer {
            Err(error) if error.kind() == redis::ServerErrorKind::NoScript.into() => {
                script
                    .load_async(&mut connection)
                    .await
                    .map_err(redis_error)?;
                pipeline
                    .query_async(&mut connection)
                    .await
                    .map_err(redis_error)?
            }
            answer => answer.map_err(redis_error)?,
        };
        if acknowledged < replicas {
            return Err(StoreError::Unavailable(
                format!(
                    "the write reached {acknowledged} of the {replicas} replicas \
                     redis_wait_replicas asks for within {WAIT_TIMEOUT_MS} ms"
                )
                .into(),
            ));
        }
        Ok(value)
    }

    /// Writes what became of claims (RECORD_ATTEMPTS), one script call per
    /// partition: each only if its lease is still its claim's.
    async fn write_claims(&self, writes: &[Write<'_>]) -> Result<Vec<Recorded>, StoreError> {
        if writes.is_empty() {
            return Ok(Vec::new());
        }
        let by_partition =
            self.group_by_partition(writes.iter().map(|write| &write.claim.delivery.username));
        let answers: Vec<Vec<i64>> = self
            .per_partition(
                &self.scripts.record_attempts,
                &by_partition,
                // A lost record costs a duplicate, never a delivery.
                0,
                |invocation, _, members| {
                    invocation
                        .arg(self.auto_disable_after.as_secs())
                        .arg(self.changes_channel())
                        .arg(self.operator_flag());
                    for &i in members {
                        let Write {
                            claim,
                            outcome,
                            at,
                            attempt,
                            log,
                            started_s,
                            finished_ms,
                        } = &writes[i];
                        let delivery = &claim.delivery;
                        let (slot_token, slot_until) = rows::slot_arguments(claim);
                        invocation
                            .arg(&delivery.delivery_id)
                            .arg(self.user_prefix(&delivery.username))
                            .arg(&delivery.endpoint_id)
                            .arg(&claim.lease)
                            .arg(attempt)
                            .arg(outcome)
                            .arg(at)
                            .arg(log)
                            .arg(started_s.map_or_else(String::new, |s| s.to_string()))
                            .arg(slot_token)
                            .arg(slot_until)
                            .arg(rows::stored_ordering(delivery.ordering_key.as_deref()))
                            .arg(finished_ms);
                    }
                },
            )
            .await?;
        let mut recorded = vec![Recorded::Stale; writes.len()];
        for ((_, members), answer) in by_partition.iter().zip(answers) {
            for (&i, answer) in members.iter().zip(answer) {
                recorded[i] = match answer {
                    0 => Recorded::Stale,
                    1 => Recorded::Written,
                    since => Recorded::WrittenAndDisabled {
                        failing_since: -since,
                    },
                };
                if let Recorded::WrittenAndDisabled { .. } = recorded[i] {
                    self.changes.mark(&writes[i].claim.delivery.endpoint_id);
                }
            }
        }
        Ok(recorded)
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

    /// The endpoint's pending deliveries by due time.
    fn endpoint_due_key(&self, username: &str, endpoint_id: &str) -> String {
        format!("{}ep:{endpoint_id}:due", self.user_prefix(username))
    }

    /// The endpoint's sending slots by when they lapse (its cluster-wide
    /// concurrency, SPEC §10).
    fn sending_key(&self, username: &str, endpoint_id: &str) -> String {
        format!("{}ep:{endpoint_id}:sending", self.user_prefix(username))
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
