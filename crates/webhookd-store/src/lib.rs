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

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio_util::sync::CancellationToken;
use webhookd_core::signer::Signing;
use webhookd_core::{Config, Endpoint, EndpointSpec, Event, EventType};

mod catalog;
mod changes;
mod clock;
mod instrumented;
mod listing;
mod open;
mod quotas;
mod redis;
mod sealed;
mod sqlite;

pub use catalog::{event_type_changes, put_event_type_change, refresh_catalog};
pub use changes::EndpointChanges;
pub use instrumented::Instrumented;
pub use listing::{DeliveryQuery, Listing, MAX_SCANNED, Order, Page};
use open::{PROCESS_SETTING, running_processes};
pub use open::{open, open_and_reseal};
pub use redis::RedisStore;
pub use sealed::{Progress, ResealReport, Sealed, SecretBox, key_id};
pub use sqlite::SqliteStore;

/// How long finished deliveries are kept (SPEC §4), counted from their last
/// attempt; then [`Store::sweep`] removes them with their bodies and
/// attempts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    pub keep_delivered: Duration,
    pub keep_failed: Duration,
    /// How long an event's body is kept, once per event, for the delivery
    /// detail (SPEC §13), from its acceptance; zero keeps none.
    pub keep_payloads: Duration,
}

impl Default for Retention {
    fn default() -> Self {
        Retention::of(&Config::default())
    }
}

impl Retention {
    /// The retention `config` sets.
    pub fn of(config: &Config) -> Self {
        Retention {
            keep_delivered: config.keep_delivered,
            keep_failed: config.keep_failed,
            keep_payloads: config.keep_payloads,
        }
    }
}

/// How long a finished test delivery is kept, at most (SPEC §11): test
/// sends are a tool, not history, and each kept one costs the store.
pub const KEEP_TEST_DELIVERIES: Duration = Duration::from_secs(24 * 3600);

impl Retention {
    /// Unix milliseconds at which a delivery that finished at `finished_ms`
    /// with `result` is removed (`None` while it is still pending); a test
    /// delivery is kept [`KEEP_TEST_DELIVERIES`] at most.
    fn removal_at(&self, finished_ms: i64, result: AttemptResult, test: bool) -> Option<i64> {
        let keep = match result {
            AttemptResult::Delivered => self.keep_delivered,
            AttemptResult::Dead => self.keep_failed,
            AttemptResult::RetryAt(_) => return None,
        };
        let keep = if test {
            keep.min(KEEP_TEST_DELIVERIES)
        } else {
            keep
        };
        Some(finished_ms.saturating_add(i64::try_from(keep.as_millis()).unwrap_or(i64::MAX)))
    }
}

/// What one [`Store::sweep`] step did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SweepReport {
    /// Deliveries removed (past retention, or of deleted endpoints).
    pub removed: u64,
    /// Whether more is left to remove now: call again.
    pub more: bool,
}

/// A user and how many API keys they hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserSummary {
    pub username: String,
    pub api_keys: usize,
    /// Unix seconds of the first `users add`.
    pub created_at: i64,
}

/// Where a delivery stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DeliveryStatus {
    /// Waiting for its first or next attempt.
    Pending,
    /// A receiver answered 2xx.
    Delivered,
    /// Every scheduled attempt failed: dead, kept for inspection and re-send.
    Failed,
}

impl DeliveryStatus {
    pub const fn as_str(self) -> &'static str {
        match self {
            DeliveryStatus::Pending => "pending",
            DeliveryStatus::Delivered => "delivered",
            DeliveryStatus::Failed => "failed",
        }
    }
}

impl std::str::FromStr for DeliveryStatus {
    type Err = StoreError;

    fn from_str(text: &str) -> Result<Self, StoreError> {
        match text {
            "pending" => Ok(DeliveryStatus::Pending),
            "delivered" => Ok(DeliveryStatus::Delivered),
            "failed" => Ok(DeliveryStatus::Failed),
            other => Err(StoreError::Corrupt(format!("delivery status {other:?}"))),
        }
    }
}

/// One event on its way to one endpoint. The body is rendered once at
/// ingest and sent byte-identical on every attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// `dlv_` + UUIDv7: sorts by creation, which paging relies on.
    pub delivery_id: String,
    pub username: String,
    pub endpoint_id: String,
    pub event_id: String,
    pub event_type: EventType,
    pub body: String,
    pub status: DeliveryStatus,
    /// Attempts made so far.
    pub attempts: u32,
    /// Unix milliseconds the next attempt is due (meaningful while pending).
    pub next_attempt_at: i64,
    /// Unix milliseconds of ingest.
    pub created_at: i64,
    /// The next attempt is its last: a manual re-send (SPEC §8) gets one
    /// attempt, and is dead again if that fails.
    pub last_attempt: bool,
    /// A test delivery (SPEC §8): sent whatever the endpoint's status.
    pub test: bool,
}

/// An endpoint's deliveries by status (SPEC §13).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct DeliveryCounts {
    pub pending: u64,
    pub delivered: u64,
    pub failed: u64,
}

impl DeliveryCounts {
    /// What the kept-deliveries quota counts (SPEC §11).
    pub fn kept(&self) -> u64 {
        self.pending + self.failed
    }
}

/// What became of one event handed to [`Store::accept_events`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Acceptance {
    /// New event: one pending delivery per enabled endpoint of the owner
    /// subscribed to its type (possibly none), each due now or leased to the
    /// caller ([`Store::accept_and_claim`]).
    /// `quota_refused`: the subscribed endpoints that got no delivery
    /// because they hold their `max_kept_deliveries_per_endpoint` pending
    /// and dead deliveries (SPEC §11); each counts it.
    Accepted {
        deliveries: Vec<Delivery>,
        quota_refused: Vec<String>,
    },
    /// The owner already sent this `event_id` within the de-duplication
    /// window; nothing was written.
    Duplicate,
    /// The owner has handed in its `max_events_per_day` events today (the
    /// store's clock, UTC days; SPEC §11): nothing was written, the event
    /// id is not remembered.
    OverDailyQuota { per_day: u64 },
}

impl Acceptance {
    /// How many deliveries the event fanned out to.
    pub fn delivery_count(&self) -> usize {
        match self {
            Acceptance::Accepted { deliveries, .. } => deliveries.len(),
            Acceptance::Duplicate | Acceptance::OverDailyQuota { .. } => 0,
        }
    }

    /// The deliveries the event fanned out to.
    pub fn deliveries(&self) -> &[Delivery] {
        match self {
            Acceptance::Accepted { deliveries, .. } => deliveries,
            Acceptance::Duplicate | Acceptance::OverDailyQuota { .. } => &[],
        }
    }
}

/// The store's day (UTC) that holds `now_ms`: what `max_events_per_day`
/// counts in.
fn day_of(now_ms: i64) -> i64 {
    now_ms.div_euclid(86_400_000)
}

/// A delivery leased to one worker for one attempt, with its endpoint's
/// current URL and secret — an endpoint change applies from the next
/// attempt on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    pub delivery: Delivery,
    pub url: String,
    pub secret: String,
    /// The secret a rotation replaced, while it may still be live (SPEC §8).
    pub previous_secret: Option<webhookd_core::PreviousSecret>,
    /// Proves ownership of the lease when the attempt is recorded.
    pub lease: String,
    /// A sending slot of the endpoint's cluster-wide limit (SPEC §10) that
    /// came with the claim, or that the worker recording or handing back
    /// the claim holds, and what becomes of it then.
    pub slot: Option<SendingSlot>,
}

/// One of an endpoint's `endpoint_concurrency` sending slots, shared by
/// every process on a store that counts them
/// ([`Store::counts_sending_slots`]). A worker holds one while it sends,
/// passes it on to its lane's next claim, and gives it up when the lane
/// runs dry; one never given up (a crash) lapses at its time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SendingSlot {
    pub token: String,
    /// Kept, renewed until then (the next claim's lease end), or — `None`
    /// — given up when the claim carrying it is recorded or handed back.
    /// A renewal only ever moves the lapse later, and never brings back a
    /// slot that lapsed (another process may hold its place by then).
    pub keep_until: Option<i64>,
    /// When the store lets it lapse, as granted (the lease end of the
    /// claim it came with): a worker must not send with it past this
    /// unless it knows a renewal landed in time (docs/delivery.md).
    pub lapses_at: i64,
}

/// What a worker asks of [`Store::claim_due`].
#[derive(Debug, Clone, Default)]
pub struct ClaimRequest {
    pub now_ms: i64,
    pub lease_until_ms: i64,
    pub park_until_ms: i64,
    /// Most claims in all.
    pub limit: usize,
    /// Most claims for an endpoint not in `room`.
    pub per_endpoint: usize,
    /// Most claims for these endpoints (0: none).
    pub room: HashMap<String, usize>,
    /// Endpoints of `room` that are slow or failing: together they get at
    /// most `suspect_room` claims, handed out as the store meets them in
    /// the order of their oldest due delivery — so the share goes to those
    /// with work due, the longest waiting first, and none starves.
    pub suspects: HashSet<String>,
    pub suspect_room: usize,
    /// Sending slots an endpoint has across every process sharing the
    /// store (SPEC §10; 0: no such limit), on a store that counts them.
    pub endpoint_limit: usize,
    /// Slots the caller's lanes hold, by endpoint: a lane that holds some
    /// may queue claims behind them; one that holds none only takes claims
    /// that come with a slot.
    pub slots_held: HashMap<String, usize>,
}

/// An attempt to record: the claim it was made on, its log entry (whose
/// `attempt` becomes the delivery's attempt count), and what follows.
#[derive(Debug, Clone)]
pub struct FinishedAttempt {
    pub claim: Claim,
    pub record: AttemptRecord,
    pub result: AttemptResult,
}

/// One finished attempt, as the attempt log keeps it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct AttemptRecord {
    /// 1 for the first attempt.
    pub attempt: u32,
    /// Unix milliseconds the attempt started.
    pub started_at: i64,
    pub duration_ms: u64,
    /// The receiver's HTTP status, when it answered.
    pub status_code: Option<u16>,
    /// A bounded reason code, as in logs and metrics (`ok`, `http_5xx`,
    /// `timeout`, `blocked_address`, …).
    pub reason: String,
    /// The start of the response body, when there was one.
    pub response: Option<String>,
    /// How the request was signed, when one was sent (SPEC §13).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signing: Option<Signing>,
}

/// What recording one finished attempt did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recorded {
    /// The lease had run out: the delivery may belong to another worker;
    /// nothing was written.
    Stale,
    Written,
    /// Written, and the endpoint had had no success for
    /// `auto_disable_after` since `failing_since` (unix seconds): webhookd
    /// disabled it (SPEC §8).
    WrittenAndDisabled {
        failing_since: i64,
    },
}

impl Recorded {
    pub fn is_written(self) -> bool {
        self != Recorded::Stale
    }
}

/// What an attempt leads to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptResult {
    Delivered,
    /// Try again at this unix millisecond.
    RetryAt(i64),
    /// The schedule is used up (or the failure is final): dead.
    Dead,
}

/// Counts for the backlog gauges.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DeliveryStats {
    /// Pending and due now (including leased ones whose lease ran out).
    pub due: u64,
    /// Pending and due later (retries waiting, and leased claims).
    pub scheduled: u64,
    /// Dead deliveries kept.
    pub dead: u64,
}

/// Result of [`Store::retry_dead`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RetryOutcome {
    /// Pending again, due now.
    Scheduled,
    NotFound,
    /// Only failed (dead) deliveries can be re-sent.
    NotFailed(DeliveryStatus),
}

/// Deliveries created in `[from_ms, until_ms)` (unix milliseconds).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeliveryWindow {
    pub from_ms: i64,
    pub until_ms: i64,
}

impl DeliveryWindow {
    /// The delivery ids of the window's bounds: ids are `dlv_` + UUIDv7,
    /// whose first 48 bits are the creation time in milliseconds, so ids
    /// sort by creation and a window is an id range.
    fn id_bounds(self) -> (String, String) {
        let bound = |ms: i64| {
            let ms = u64::try_from(ms.clamp(0, 0xFFFF_FFFF_FFFF)).unwrap_or_default();
            format!("{}{ms:012x}", webhookd_core::ids::DELIVERY_ID_PREFIX)
        };
        (bound(self.from_ms), bound(self.until_ms))
    }
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

/// A fresh pending delivery of `event` to `endpoint_id`, due `now_ms`.
fn new_delivery(
    delivery_id: String,
    event: &Event,
    endpoint_id: &str,
    body: &str,
    now_ms: i64,
) -> Delivery {
    Delivery {
        delivery_id,
        username: event.username.clone(),
        endpoint_id: endpoint_id.to_owned(),
        event_id: event.event_id.clone(),
        event_type: event.event_type.clone(),
        body: body.to_owned(),
        status: DeliveryStatus::Pending,
        attempts: 0,
        next_attempt_at: now_ms,
        created_at: now_ms,
        last_attempt: false,
        test: false,
    }
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
