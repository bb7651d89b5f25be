//! webhookd's durable state, behind one trait with two implementations.
//!
//! - [`RedisStore`]: production. Every multi-key change is one Lua script, and
//!   every script touches keys of a single hash tag (`{u:<user>}` for a
//!   user's endpoints, `{keys}` for API keys), so the same scripts run on
//!   Redis Cluster.
//! - [`SqliteStore`]: embedded, the default, so one command runs webhookd
//!   with nothing installed. WAL mode, `synchronous=FULL`, versioned
//!   migrations; all SQLite work runs on blocking threads, never on the async
//!   runtime.
//!
//! Both pass the same conformance suite (`tests/conformance.rs`). The store
//! owns persistence and atomicity only; validation (URLs, event names,
//! limits' wording) belongs to the API and the core.

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use tokio_util::sync::CancellationToken;
use webhookd_core::{Endpoint, EndpointSpec, Event, EventType};

mod catalog;
mod changes;
mod clock;
mod delivery;
mod filters;
mod instrumented;
mod listing;
mod open;
mod quotas;
mod redis;
mod retention;
mod sealed;
mod sqlite;

pub use catalog::{event_type_changes, put_event_type_change, refresh_catalog};
pub use changes::EndpointChanges;
pub use delivery::{
    Acceptance, AttemptRecord, AttemptResult, Claim, ClaimRequest, Delivery, DeliveryCounts,
    DeliveryStats, DeliveryStatus, DeliveryWindow, FinishedAttempt, Recorded, RetryOutcome,
    SendingSlot,
};
use delivery::{day_of, new_delivery};
pub use instrumented::Instrumented;
pub use listing::{DeliveryQuery, Listing, MAX_SCANNED, Order, Page};
use open::{PROCESS_SETTING, running_processes};
pub use open::{open, open_and_reseal};
pub use redis::RedisStore;
pub use retention::{KEEP_TEST_DELIVERIES, Retention, SweepReport};
pub use sealed::{Progress, ResealReport, Sealed, SecretBox, key_id};
pub use sqlite::SqliteStore;

/// One record of the operator events' outbox, and where it is kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxEntry {
    pub record: String,
    /// The SQLite row, or the Redis partition.
    place: i64,
}

/// A user and how many API keys they hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserSummary {
    pub username: String,
    pub api_keys: usize,
    /// Unix seconds of the first `users add`.
    pub created_at: i64,
}

/// How long an `event_id` is remembered for de-duplication (SPEC §5).
pub const DEDUP_WINDOW_MS: i64 = 24 * 3600 * 1000;

/// Result of [`Store::create_endpoint`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CreateOutcome {
    Created,
    /// The user already holds `limit` endpoints; nothing was written.
    LimitReached,
}

/// Which of an endpoint's (at most two) secrets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecretSlot {
    /// The secret that signs.
    Current,
    /// The one still signing during a rotation's grace (SPEC §8).
    Previous,
    /// The delivery options document (SPEC §14): secret header values.
    Options,
}

/// Why the store could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The store cannot be reached right now (connection refused, dropped,
    /// timed out, database locked). Worth retrying; the API answers 503.
    #[error("store unavailable: {0}")]
    Unavailable(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The store answered with an error that retrying will not fix.
    #[error("store failed: {0}")]
    Failed(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// Data in the store does not have the shape webhookd wrote.
    #[error("store holds unreadable data: {0}")]
    Corrupt(String),
    /// A sealed secret cannot be sealed or opened (a key missing from
    /// `WEBHOOKD_ENCRYPTION_KEY`, or a value altered); the message says
    /// which key, never a secret.
    #[error("{0}")]
    Sealing(String),
}

impl StoreError {
    pub fn is_unavailable(&self) -> bool {
        matches!(self, StoreError::Unavailable(_))
    }

    /// The metric label of this error.
    pub const fn kind(&self) -> &'static str {
        match self {
            StoreError::Unavailable(_) => "unavailable",
            StoreError::Failed(_) => "failed",
            StoreError::Corrupt(_) => "corrupt",
            StoreError::Sealing(_) => "sealing",
        }
    }
}

/// Everything webhookd keeps. Implementations are cheap to share
/// (`Arc<dyn Store>`) and safe to use from many tasks and processes at once.
#[async_trait]
pub trait Store: Send + Sync + fmt::Debug {
    /// Round trip to the store; `/readyz` uses it.
    async fn ping(&self) -> Result<(), StoreError>;

    /// The store's clock, unix milliseconds: what every time written to the
    /// store (due times, leases, sending slots) is reckoned in, so that
    /// processes whose wall clocks disagree still agree on them (see
    /// `clock.rs`). The wall clock for a store on this machine's disk.
    fn now_ms(&self) -> i64 {
        webhookd_core::time::unix_millis()
    }

    /// Registers an API key (by its hash) for `username`, creating the user
    /// on first use. A user may hold several keys, so keys can be rotated.
    async fn add_api_key(&self, username: &str, key_hash: &str, now: i64)
    -> Result<(), StoreError>;

    /// The owner of the API key with this hash, if it is registered.
    async fn user_for_api_key(&self, key_hash: &str) -> Result<Option<String>, StoreError>;

    /// Every user, by name.
    async fn list_users(&self) -> Result<Vec<UserSummary>, StoreError>;

    /// Removes every API key of `username`, and its portal links; returns
    /// how many keys there were. Endpoints and deliveries stay: revoking
    /// access is not deleting data.
    async fn revoke_api_keys(&self, username: &str) -> Result<usize, StoreError>;

    /// Registers a portal link (SPEC §9), by its token's hash, signing in as
    /// `username` until `expires_at` (unix seconds). `false` when there is
    /// no such user: a link is issued only for a user that exists. Links
    /// that have expired are forgotten here, so they cannot pile up.
    async fn add_portal_link(
        &self,
        username: &str,
        token_hash: &str,
        expires_at: i64,
        now: i64,
    ) -> Result<bool, StoreError>;

    /// The user a portal link with this hash signs in, while it has not
    /// expired at `now` (unix seconds).
    async fn user_for_portal_link(
        &self,
        token_hash: &str,
        now: i64,
    ) -> Result<Option<String>, StoreError>;

    /// Signs in with a portal link, once (SPEC §9): the link with
    /// `link_hash` is forgotten and a portal session with `session_hash`
    /// takes its place — same user, same expiry. Returns the user and the
    /// expiry (unix seconds); `None` when the link is unknown, already used
    /// or expired at `now`. One atomic step: of two tabs opening one link,
    /// one signs in.
    async fn redeem_portal_link(
        &self,
        link_hash: &str,
        session_hash: &str,
        now: i64,
    ) -> Result<Option<(String, i64)>, StoreError>;

    /// Stores a new endpoint unless its owner already holds `limit`; the
    /// count and the insert are one atomic step.
    async fn create_endpoint(
        &self,
        endpoint: &Endpoint,
        limit: usize,
    ) -> Result<CreateOutcome, StoreError>;

    /// The user's endpoints, oldest first.
    async fn list_endpoints(&self, username: &str) -> Result<Vec<Endpoint>, StoreError>;

    /// One endpoint of `username`; another user's endpoint is `None`.
    async fn get_endpoint(
        &self,
        username: &str,
        endpoint_id: &str,
    ) -> Result<Option<Endpoint>, StoreError>;

    /// Replaces url and events, and status when `spec` has one; id, secret,
    /// owner and creation time never change. `None` when the user has no
    /// such endpoint.
    async fn update_endpoint(
        &self,
        username: &str,
        endpoint_id: &str,
        spec: &EndpointSpec,
    ) -> Result<Option<Endpoint>, StoreError>;

    /// Replaces the endpoint's signing secret with `new_secret` (SPEC §8).
    /// With `previous_until` (unix seconds), the current secret keeps
    /// signing until then, and a previous secret an earlier rotation left is
    /// dropped: at most two live. Without, the old secrets are gone at once.
    /// `None` when the user has no such endpoint.
    async fn rotate_secret(
        &self,
        username: &str,
        endpoint_id: &str,
        new_secret: &str,
        previous_until: Option<i64>,
    ) -> Result<Option<Endpoint>, StoreError>;

    /// Replaces the stored form of one of the endpoint's secrets, if it is
    /// still `expected` (a compare-and-set): re-sealing at rest, never a
    /// change of the secret itself. `false` when it was not.
    async fn replace_secret(
        &self,
        username: &str,
        endpoint_id: &str,
        slot: SecretSlot,
        expected: &str,
        replacement: &str,
    ) -> Result<bool, StoreError>;

    /// Deletes an endpoint, so pending retries to it stop at once; its
    /// deliveries are removed by [`Store::sweep`] in bounded steps (a large
    /// backlog never stalls the store). `false` when the user had no such
    /// endpoint.
    async fn delete_endpoint(&self, username: &str, endpoint_id: &str) -> Result<bool, StoreError>;

    /// Durably accepts events, each in one atomic step: remember its
    /// `event_id` for [`DEDUP_WINDOW_MS`] and create its deliveries, reading
    /// the owner's endpoints in that same step — so an endpoint change that
    /// has returned applies to every event accepted after it. Outcomes are
    /// in the order of `events`. When this returns, everything is durable and
    /// the events may be acknowledged to their producer.
    async fn accept_events(
        &self,
        events: &[Event],
        now_ms: i64,
    ) -> Result<Vec<Acceptance>, StoreError> {
        let nothing = ClaimRequest::default();
        Ok(self.accept_and_claim(events, now_ms, &nothing).await?.0)
    }

    /// [`Store::accept_events`], and in the same atomic step leases fresh
    /// deliveries to the caller as [`Store::claim_due`] would with `claim`:
    /// the fast path, where what ingest accepted goes out without a claim
    /// round trip. At most `claim.limit` in all and each endpoint's room;
    /// the rest stay due as usual. An error means nothing was accepted.
    async fn accept_and_claim(
        &self,
        events: &[Event],
        now_ms: i64,
        claim: &ClaimRequest,
    ) -> Result<(Vec<Acceptance>, Vec<Claim>), StoreError>;

    /// Creates one pending delivery of `event` (a synthetic test event) to
    /// the user's endpoint, due `now_ms`, sent whatever the endpoint's
    /// status ([`Delivery::test`]) and retried as usual. `None` when the user
    /// has no such endpoint. The event id is not remembered for
    /// de-duplication.
    async fn create_test_delivery(
        &self,
        endpoint_id: &str,
        event: &Event,
        now_ms: i64,
    ) -> Result<Option<Delivery>, StoreError>;

    /// An endpoint's deliveries with `status`, oldest first.
    async fn list_deliveries(
        &self,
        username: &str,
        endpoint_id: &str,
        status: DeliveryStatus,
        page: &Page,
    ) -> Result<Vec<Delivery>, StoreError> {
        let query = DeliveryQuery {
            page: page.clone(),
            ..DeliveryQuery::default()
        };
        Ok(self
            .query_deliveries(username, endpoint_id, status, &query)
            .await?
            .deliveries)
    }

    /// One page of `username`'s deliveries to `endpoint_id` in `status`
    /// that pass `query`'s filters, in its order (SPEC §13).
    async fn query_deliveries(
        &self,
        username: &str,
        endpoint_id: &str,
        status: DeliveryStatus,
        query: &DeliveryQuery,
    ) -> Result<Listing, StoreError>;

    /// Leases due deliveries as `request` says, endpoint by endpoint in the
    /// order of each endpoint's earliest due delivery, never more for one
    /// endpoint than its room: a slow endpoint's backlog cannot crowd out the
    /// others, and an endpoint without room costs one skipped entry. Each claim is hidden from other workers until
    /// `lease_until_ms`, and due again if its worker dies without recording
    /// the attempt. Deliveries of deleted endpoints are dropped; those of
    /// disabled endpoints wait until `park_until_ms` without spending an
    /// attempt.
    async fn claim_due(&self, request: &ClaimRequest) -> Result<Vec<Claim>, StoreError>;

    /// Records finished attempts and their consequences, each atomically if
    /// the lease is still its claim's, and keeps each endpoint's failure
    /// streak (`failing_since`), disabling an endpoint whose streak has
    /// lasted `auto_disable_after` (SPEC §8). One answer per attempt, in
    /// order. One call for many attempts is one round trip (Redis) or one
    /// commit (SQLite).
    async fn record_attempts(
        &self,
        finished: &[FinishedAttempt],
    ) -> Result<Vec<Recorded>, StoreError>;

    /// [`Store::record_attempts`] for one attempt.
    async fn record_attempt(
        &self,
        claim: &Claim,
        attempt: &AttemptRecord,
        result: AttemptResult,
    ) -> Result<bool, StoreError> {
        let finished = [FinishedAttempt {
            claim: claim.clone(),
            record: attempt.clone(),
            result,
        }];
        Ok(self
            .record_attempts(&finished)
            .await?
            .first()
            .is_some_and(|recorded| recorded.is_written()))
    }

    /// Hands a claimed delivery back untried, due at `due_ms`, without
    /// spending an attempt (shutdown, or a queued claim whose lease is
    /// nearly over), settling the sending slot it carries.
    async fn release(&self, claim: &Claim, due_ms: i64) -> Result<bool, StoreError>;

    /// Whether claims come with sending slots, counted across every
    /// process sharing the store ([`ClaimRequest::endpoint_limit`]). A
    /// store serving one process (SQLite) does not count them: its
    /// dispatcher's lanes hold the limit.
    fn counts_sending_slots(&self) -> bool {
        false
    }

    /// One delivery of the user's endpoint with its attempt log, oldest
    /// attempt first.
    async fn delivery_attempts(
        &self,
        username: &str,
        endpoint_id: &str,
        delivery_id: &str,
    ) -> Result<Option<(Delivery, Vec<AttemptRecord>)>, StoreError>;

    /// The body of the event `delivery` belongs to while it is kept
    /// (`keep_payloads` from the event's acceptance, SPEC §13): one copy
    /// shared by the event's deliveries. `None` once it expired (at
    /// `now_ms`; Redis expires it on its own clock).
    async fn kept_payload(
        &self,
        delivery: &Delivery,
        now_ms: i64,
    ) -> Result<Option<String>, StoreError>;

    /// How many deliveries of the user's endpoint stand in each status
    /// (SPEC §13); `None` when the user has no such endpoint.
    async fn delivery_counts(
        &self,
        username: &str,
        endpoint_id: &str,
    ) -> Result<Option<DeliveryCounts>, StoreError>;

    /// Makes a dead delivery pending again, due `now_ms`, attempts kept, for
    /// one last attempt ([`Delivery::last_attempt`]).
    async fn retry_dead(
        &self,
        username: &str,
        endpoint_id: &str,
        delivery_id: &str,
        now_ms: i64,
    ) -> Result<RetryOutcome, StoreError>;

    /// How many dead deliveries of the user's endpoint were created in
    /// `[from_ms, until_ms)`: what [`Store::recover`] will take.
    async fn count_dead(
        &self,
        username: &str,
        endpoint_id: &str,
        window: DeliveryWindow,
    ) -> Result<u64, StoreError>;

    /// Makes up to `most` dead deliveries of the endpoint created in the
    /// window pending again, due `now_ms`, oldest first, each for one last
    /// attempt as [`Store::retry_dead`] does (SPEC §8, recover). Call again
    /// until it answers 0: each call is one bounded step. Pending
    /// deliveries are never touched, so nothing is sent twice.
    async fn recover(
        &self,
        username: &str,
        endpoint_id: &str,
        window: DeliveryWindow,
        now_ms: i64,
        most: usize,
    ) -> Result<usize, StoreError>;

    /// Backlog counts for the metrics.
    async fn delivery_stats(&self, now_ms: i64) -> Result<DeliveryStats, StoreError>;

    /// One bounded step of housekeeping, short enough never to stall other
    /// clients of the store: removes deliveries past their [`Retention`] and
    /// what is left of deleted endpoints, and forgets de-duplication entries
    /// older than the window (where the store does not expire them itself).
    /// Call again while [`SweepReport::more`].
    async fn sweep(&self, now_ms: i64) -> Result<SweepReport, StoreError>;

    /// The fence that tells held claims their endpoint changed (see
    /// [`EndpointChanges`]); update and delete mark it before they return.
    fn endpoint_changes(&self) -> Arc<EndpointChanges>;

    /// Marks the fence for endpoint changes other processes make, until
    /// `shutdown`. Stores used by one process only have nothing to follow.
    async fn follow_endpoint_changes(&self, shutdown: CancellationToken) {
        shutdown.cancelled().await;
    }

    /// Adds operator event records (SPEC §15,
    /// [`webhookd_core::operator::OperatorEvent::to_record`]) to the
    /// outbox. The stores add their own — a delivery dead, an endpoint
    /// disabled, a quota reached at acceptance — in the step that makes
    /// them true, once [`open`] turned operator events on.
    async fn add_operator_events(&self, records: &[String]) -> Result<(), StoreError>;

    /// Up to `most` records of the outbox (per partition on Redis), oldest
    /// first.
    async fn operator_events(&self, most: usize) -> Result<Vec<OutboxEntry>, StoreError>;

    /// Removes `entries` from the outbox: every target took them.
    async fn remove_operator_events(&self, entries: &[OutboxEntry]) -> Result<(), StoreError>;

    /// Returns the stored value of setting `name`, storing `value` first if
    /// there is none (atomically: concurrent callers all get the same one).
    async fn setting_or_insert(&self, name: &str, value: &str) -> Result<String, StoreError>;

    /// Setting `name`, if it is set.
    async fn setting(&self, name: &str) -> Result<Option<String>, StoreError>;

    /// Sets setting `name` (`Some`) or removes it (`None`).
    async fn put_setting(&self, name: &str, value: Option<&str>) -> Result<(), StoreError>;

    /// `(name, value)` of every setting whose name starts with `prefix`.
    async fn settings_with_prefix(&self, prefix: &str)
    -> Result<Vec<(String, String)>, StoreError>;

    /// Counts one use of `name` in the fixed window of `window_ms` that
    /// holds `now_ms`, unless `limit` uses are counted there already
    /// (`false`). One atomic step shared by every process: what the
    /// per-tenant quotas (SPEC §11) count with.
    async fn take_in_window(
        &self,
        name: &str,
        window_ms: i64,
        now_ms: i64,
        limit: u64,
    ) -> Result<bool, StoreError>;

    /// Says that serving process `process_id` runs until `until_ms` (the
    /// store's clock) unless it says so again, holding the sealing keys
    /// `key_ids` (comma-separated, the first seals): what a key rotation
    /// checks before it re-seals ([`open_and_reseal`]).
    async fn announce_process(
        &self,
        process_id: &str,
        key_ids: &str,
        until_ms: i64,
    ) -> Result<(), StoreError>;

    /// `(process id, key ids)` of every process whose announcement has not
    /// run out at `now_ms`; those that have are forgotten.
    async fn running_processes(&self, now_ms: i64) -> Result<Vec<(String, String)>, StoreError>;
}

/// Endpoint event lists are stored as a JSON array of names.
fn events_to_json(events: &[webhookd_core::EventType]) -> String {
    serde_json::to_string(events).expect("event names always serialize")
}

fn events_from_json(text: &str) -> Result<Vec<webhookd_core::EventType>, StoreError> {
    let names: Vec<String> = serde_json::from_str(text)
        .map_err(|e| StoreError::Corrupt(format!("endpoint events {text:?}: {e}")))?;
    names
        .iter()
        .map(|name| {
            name.parse().map_err(|_| {
                StoreError::Corrupt(format!("invalid event type name {name:?} in store"))
            })
        })
        .collect()
}

fn event_type_from_str(text: &str) -> Result<EventType, StoreError> {
    text.parse()
        .map_err(|_| StoreError::Corrupt(format!("invalid event type name {text:?} in store")))
}

fn status_from_str(text: &str) -> Result<webhookd_core::EndpointStatus, StoreError> {
    text.parse()
        .map_err(|_| StoreError::Corrupt(format!("endpoint status {text:?}")))
}
