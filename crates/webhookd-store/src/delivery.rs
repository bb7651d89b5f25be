//! What the store keeps of deliveries and hands its callers: a delivery
//! and its status, what an accept did, a claim with its lease and sending
//! slot, an attempt's record and what follows from it.

use std::collections::{HashMap, HashSet};

use webhookd_core::signer::Signing;
use webhookd_core::trace::TraceContext;
use webhookd_core::{Event, EventType};

use crate::StoreError;

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
    /// Unix milliseconds the next attempt is due (meaningful while pending);
    /// 0 while it is held behind the head of its line (SPEC §15).
    pub next_attempt_at: i64,
    /// Unix milliseconds of ingest.
    pub created_at: i64,
    /// The next attempt is its last: a manual re-send (SPEC §8) gets one
    /// attempt, and is dead again if that fails.
    pub last_attempt: bool,
    /// A test delivery (SPEC §8): sent whatever the endpoint's status.
    pub test: bool,
    /// The producer's trace context as stored
    /// ([`webhookd_core::trace::TraceContext::to_stored`]); `None`: the
    /// event came without one (its attempts derive one from its id).
    pub trace: Option<String>,
    /// The line it waits in at an ordered endpoint (SPEC §15,
    /// [`webhookd_core::ordering::line_of`]); `None`: not in a line (an
    /// unordered endpoint, a test, or a manual re-send).
    pub ordering_key: Option<String>,
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
pub(crate) fn day_of(now_ms: i64) -> i64 {
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
    /// The endpoint's delivery options document (SPEC §14), opened;
    /// `None`: none set.
    pub options: Option<String>,
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

impl AttemptRecord {
    /// The reason of a failure that is not the receiver's: the egress
    /// proxy's (SPEC §14).
    pub const PROXY: &'static str = "proxy";

    /// Whether this attempt moves its endpoint's failure streak (SPEC §8):
    /// every attempt but a failure of the egress proxy, which says nothing
    /// of the receiver and must not auto-disable its endpoint.
    pub fn counts_toward_streak(&self) -> bool {
        self.reason != Self::PROXY
    }
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
    pub(crate) fn id_bounds(self) -> (String, String) {
        let bound = |ms: i64| {
            let ms = u64::try_from(ms.clamp(0, 0xFFFF_FFFF_FFFF)).unwrap_or_default();
            format!("{}{ms:012x}", webhookd_core::ids::DELIVERY_ID_PREFIX)
        };
        (bound(self.from_ms), bound(self.until_ms))
    }
}

/// A fresh pending delivery of `event` to `endpoint_id`, due `now_ms`.
pub(crate) fn new_delivery(
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
        trace: event.trace.as_ref().map(TraceContext::to_stored),
        ordering_key: None,
    }
}
