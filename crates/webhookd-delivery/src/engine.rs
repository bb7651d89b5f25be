//! The dispatcher: claims due deliveries from the store with a lease, sends
//! each once, and writes the attempt and its consequence back.
//!
//! - **Retries are data.** A failed attempt is stored as "due at T"; nothing
//!   sleeps in memory, so a crash loses no scheduled retry.
//! - **Leases.** A claim hides a delivery until `lease`, which outlasts the
//!   attempt deadline by a wide margin (a lease shorter than the request
//!   timeout is how Svix once sent duplicates). A worker that dies leaves its
//!   leases to expire; whoever claims next sends.
//! - **Isolation.** Each endpoint has a lane: at most `per_endpoint`
//!   attempts sending, and — while the endpoint answers quickly — a queue of
//!   claims waiting their turn, so a fast endpoint's claims come in large
//!   batches. The store claims for an endpoint only what its lane has room
//!   for, walking endpoints in order of their oldest due delivery. A lane's
//!   room follows its endpoint's health (a circuit breaker, see `Health`):
//!   one probe while failing or not yet known, and slow and failing
//!   endpoints together hold at most half of `max_in_flight` — so hanging
//!   endpoints, however many, never take the healthy endpoints' turn.
//! - **Across processes.** On a store shared by several processes (Redis)
//!   an endpoint's `per_endpoint` sending slots are counted in the store
//!   (SPEC §10): claims come with slots, at most what is free; a lane sends
//!   only with a slot, each worker passing its slot on to the lane's next
//!   claim and giving it up when the lane runs dry — so queued claims cost
//!   no store call, and the limit holds however many processes send.
//! - **Endpoint changes.** Before each attempt the lane asks the store's
//!   [`EndpointChanges`] fence whether the endpoint changed since the claim
//!   was taken; if so the claim is handed back and claimed again fresh.
//! - **Fast path.** Ingest [`Dispatcher::reserve`]s room before it accepts
//!   a batch, has the store lease the fresh deliveries to it in the same
//!   atomic step, and [`Dispatcher::dispatch`]es them: they go out from
//!   memory with no claim round trip, the store copy (leased, due again when
//!   the lease ends) being the safety net. What did not fit is claimed by
//!   the loop, which ingest [`Dispatcher::wake`]s.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use rand::Rng as _;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, mpsc};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument as _;
use webhookd_core::telemetry::{self, AttemptOutcome};
use webhookd_core::{NextAttempt, RetrySchedule};
use webhookd_store::{
    AttemptRecord, AttemptResult, Claim, ClaimRequest, EndpointChanges, FinishedAttempt,
    SendingSlot, Store,
};

use crate::classify::{Verdict, classify};
use crate::client::DeliveryClient;
use crate::health::Health;
use crate::on_the_way::{ClaimsOnTheWay, Expected};
use crate::recorder::{Unrecorded, record_finished};
use crate::slot_lapse::SlotLapse;
use crate::trace::AttemptSpan;

/// How the dispatcher runs.
#[derive(Debug, Clone)]
pub struct DispatcherSettings {
    pub schedule: RetrySchedule,
    /// Per-attempt deadline; the lease is derived from it.
    pub timeout: Duration,
    /// Claims held at once over all endpoints: sending, queued in a lane,
    /// or waiting to be recorded.
    pub max_in_flight: usize,
    /// Attempts in flight at once to one endpoint.
    pub per_endpoint: usize,
    /// How often the store is asked for due work when nothing woke us.
    pub poll_interval: Duration,
}

/// The share of `max_in_flight` that endpoints which are not flowing (slow
/// or failing) may hold together: however many hang, the rest of the
/// permits stay for the endpoints that answer (SPEC §7, fairness).
const SUSPECT_SHARE_PERCENT: usize = 50;

impl DispatcherSettings {
    /// The lease: time for a claim to wait behind a few attempts of a
    /// flowing endpoint, take its own (bounded by the deadline), and be
    /// recorded, plus a wide margin for a loaded machine. A queued claim that
    /// waited longer is handed back unsent (see `LEASE_SAFETY`). The lease
    /// also bounds how long a crashed worker's claims stay hidden.
    pub fn lease(&self) -> Duration {
        self.timeout * 4 + Duration::from_secs(30)
    }
}

/// Lanes kept in memory before idle ones are forgotten.
const MAX_LANES: usize = 10_000;
/// A queued claim is sent only if this much of its lease is left beyond the
/// deadline; otherwise it is handed back, never sent on a lease that may run
/// out mid-attempt.
const LEASE_SAFETY: Duration = Duration::from_secs(5);
/// How long deliveries of a disabled endpoint wait before they are looked at again.
const DISABLED_PARK: Duration = Duration::from_secs(60);
/// The longest a lane run dry keeps its sending slot for claims on their
/// way to it (see `on_the_way`): a claim's round trip, with room for a
/// loaded store.
const CLAIMS_AWAITED: Duration = Duration::from_millis(500);
/// After a claim that got fewer than it asked for, the longest the loop
/// waits for a lane to wake it before claiming again: what comes due
/// meanwhile (a retry, a rate limit's next token) waits at most this.
const PARTIAL_CLAIM_PAUSE: Duration = Duration::from_millis(10);
/// How long to wait before asking the store again after it failed.
pub(crate) const STORE_ERROR_DELAY: Duration = Duration::from_secs(1);

#[derive(Debug)]
pub struct Dispatcher {
    store: Arc<dyn Store>,
    /// Tells held claims their endpoint changed since they were taken.
    endpoint_changes: Arc<EndpointChanges>,
    /// Whether the store counts sending slots across processes: lanes then
    /// send only with a slot.
    counts_slots: bool,
    client: DeliveryClient,
    settings: DispatcherSettings,
    wake: Notify,
    /// One permit per claim held, sending or queued.
    in_flight: Arc<Semaphore>,
    lanes: Mutex<HashMap<String, Lane>>,
    /// Claim requests out that counted a lane's slots: the lane keeps them
    /// meanwhile (see `on_the_way`).
    on_the_way: Arc<ClaimsOnTheWay>,
    /// The lane workers.
    attempts: TaskTracker,
    /// Cancelled when `run` is told to stop: no new attempts start.
    stopping: CancellationToken,
    /// Where lane workers send finished attempts; taken (closing the
    /// channel) once the last worker is done.
    recorder: Mutex<Option<mpsc::UnboundedSender<Unrecorded>>>,
    finished: Mutex<Option<mpsc::UnboundedReceiver<Unrecorded>>>,
}

/// Room reserved for fresh claims: the request to lease them with, and a
/// permit for each.
#[derive(Debug)]
pub struct Reservation {
    pub request: ClaimRequest,
    permits: OwnedSemaphorePermit,
    /// The endpoint-change version before the store was asked (see
    /// [`EndpointChanges`]).
    endpoints_seen: u64,
    /// Dropped with the reservation: once its claims are in their lanes.
    _expected: Expected,
}

/// One endpoint's claims in this process.
#[derive(Debug, Default)]
struct Lane {
    sending: usize,
    waiting: VecDeque<Held>,
    /// Sending slots that came with claims and no worker holds yet.
    free_slots: Vec<SendingSlot>,
    health: Health,
    /// Failed attempts since the last success (see `Health::after`).
    failures_in_row: u32,
    /// The endpoint's owner.
    owner: String,
}

impl Lane {
    fn held(&self) -> usize {
        self.sending + self.waiting.len()
    }

    /// Sending slots the lane holds: one per worker, and those not yet
    /// taken up.
    fn slots(&self) -> usize {
        self.sending + self.free_slots.len()
    }

    /// Claims the lane may hold, sending or waiting.
    fn capacity(&self, per_endpoint: usize) -> usize {
        self.health.room(per_endpoint)
    }
}

/// Where [`Dispatcher::enqueue`] put a claim.
enum Enqueued {
    /// The lane may start one more sender: start a worker with this claim
    /// and slot.
    Start(Held, Option<SendingSlot>),
    /// Behind the lane's senders.
    Waiting,
    /// Not sendable here: the lane holds no sending slot. Hand it back.
    NoSlot(Held),
}

/// What became of a claim a lane worker took up.
enum Done {
    Attempted(FinishedAttempt),
    HandBack(Claim),
}

/// A claim and the permit it holds until its attempt is recorded.
#[derive(Debug)]
struct Held {
    claim: Claim,
    permit: OwnedSemaphorePermit,
    /// The endpoint-change version its claim is at least as new as.
    endpoints_seen: u64,
}

impl Dispatcher {
    pub fn new(
        store: Arc<dyn Store>,
        client: DeliveryClient,
        settings: DispatcherSettings,
    ) -> Arc<Self> {
        let (recorder, finished) = mpsc::unbounded_channel();
        Arc::new(Dispatcher {
            endpoint_changes: store.endpoint_changes(),
            counts_slots: store.counts_sending_slots(),
            store,
            client,
            in_flight: Arc::new(Semaphore::new(settings.max_in_flight)),
            settings,
            wake: Notify::new(),
            lanes: Mutex::new(HashMap::new()),
            on_the_way: Arc::default(),
            attempts: TaskTracker::new(),
            stopping: CancellationToken::new(),
            recorder: Mutex::new(Some(recorder)),
            finished: Mutex::new(Some(finished)),
        })
    }

    /// Tells the claim loop there is due work (deliveries accepted but not
    /// leased at once).
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// Reserves up to `most` free permits for the fresh deliveries of
    /// events owned by `owners`; none when all are taken.
    pub fn reserve(&self, most: usize, owners: &HashSet<&str>) -> Option<Reservation> {
        let free = u32::try_from(self.in_flight.available_permits().min(most)).ok()?;
        if free == 0 || self.stopping.is_cancelled() {
            return None;
        }
        let permits = Arc::clone(&self.in_flight)
            .try_acquire_many_owned(free)
            .ok()?;
        Some(self.reservation(permits, Some(owners)))
    }

    /// A claim request for as many claims as `permits` hold, listing the
    /// lanes of `owners` only when given (fresh deliveries can only be
    /// theirs: a shorter request for the fast path).
    fn reservation(
        &self,
        permits: OwnedSemaphorePermit,
        owners: Option<&HashSet<&str>>,
    ) -> Reservation {
        let endpoints_seen = self.endpoint_changes.version();
        let (request, expected) = self.claim_request(permits.num_permits(), owners);
        Reservation {
            endpoints_seen,
            request,
            permits,
            _expected: expected,
        }
    }

    /// Sends claims leased under `reservation`; its unused permits return.
    pub fn dispatch(self: &Arc<Self>, mut reservation: Reservation, claims: Vec<Claim>) {
        for claim in claims {
            match reservation.permits.split(1) {
                Some(permit) => self.start(Held {
                    claim,
                    permit,
                    endpoints_seen: reservation.endpoints_seen,
                }),
                // More claims than permits is a store bug; the lease expires.
                None => {
                    tracing::error!(delivery_id = %claim.delivery.delivery_id, "a claim beyond the reservation");
                }
            }
        }
    }

    /// Claims and sends until `shutdown`; then stops claiming and waits for
    /// the attempts in flight, each bounded by the deadline, so their results
    /// are recorded and no lease is left dangling.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        let finished = self
            .finished
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        let Some(finished) = finished else {
            tracing::error!("the dispatcher runs once");
            return;
        };
        // Weak: the recorder ends once the dispatcher (its senders) is gone.
        let dispatcher = Arc::downgrade(&self);
        let recording = tokio::spawn(record_finished(
            Arc::clone(&self.store),
            finished,
            move || {
                if let Some(dispatcher) = dispatcher.upgrade() {
                    dispatcher.wake();
                }
            },
        ));
        loop {
            // Wait for room before claiming, then take all there is: every
            // claim holds a permit until its attempt is recorded, so claims
            // never outnumber permits, even with ingest reserving alongside.
            let first = tokio::select! {
                permit = Arc::clone(&self.in_flight).acquire_owned() => permit,
                () = shutdown.cancelled() => break,
            };
            let Ok(mut permits) = first else { break };
            let more = u32::try_from(self.in_flight.available_permits()).unwrap_or(u32::MAX);
            if let Ok(more) = Arc::clone(&self.in_flight).try_acquire_many_owned(more) {
                permits.merge(more);
            }
            let reservation = self.reservation(permits, None);
            let limit = reservation.request.limit;
            match self.store.claim_due(&reservation.request).await {
                Ok(claims) if claims.len() >= limit => self.dispatch(reservation, claims),
                // Fewer than asked: the lanes are full or little is due.
                // Claiming again at once would fetch a few at a time as
                // lanes free up (a script call for a handful, issue 26);
                // the lanes wake this loop once half empty.
                Ok(claims) if !claims.is_empty() => {
                    self.dispatch(reservation, claims);
                    tokio::select! {
                        () = tokio::time::sleep(PARTIAL_CLAIM_PAUSE) => {}
                        () = self.wake.notified() => {}
                        () = shutdown.cancelled() => break,
                    }
                }
                Ok(_) => {
                    drop(reservation);
                    tokio::select! {
                        () = tokio::time::sleep(self.settings.poll_interval) => {}
                        () = self.wake.notified() => {}
                        () = shutdown.cancelled() => break,
                    }
                }
                Err(error) => {
                    tracing::warn!(%error, "cannot claim due deliveries; retrying");
                    drop(reservation);
                    tokio::select! {
                        () = tokio::time::sleep(STORE_ERROR_DELAY) => {}
                        () = shutdown.cancelled() => break,
                    }
                }
            }
        }
        self.stopping.cancel();
        self.attempts.close();
        self.attempts.wait().await;
        drop(
            self.recorder
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take(),
        );
        if let Err(error) = recording.await {
            tracing::error!(%error, "the attempt recorder failed");
        }
        tracing::info!("delivery engine stopped");
    }

    /// What this worker can take now: `limit` in all, and per endpoint the
    /// room its lane has. Slow and failing endpoints share at most
    /// `SUSPECT_SHARE_PERCENT` of the permits between them.
    /// The request comes with the mark that keeps the slots it counts (see
    /// `on_the_way`).
    fn claim_request(
        &self,
        limit: usize,
        owners: Option<&HashSet<&str>>,
    ) -> (ClaimRequest, Expected) {
        let now = self.store.now_ms();
        let per_endpoint = self.settings.per_endpoint;
        let lanes = self.lock_lanes();
        // The share is counted over every lane, listed or not.
        let suspects_held: usize = lanes
            .values()
            .filter(|lane| lane.health.is_suspect())
            .map(Lane::held)
            .sum();
        let suspect_share = (self.settings.max_in_flight * SUSPECT_SHARE_PERCENT / 100).max(1);
        // Endpoints not listed get one claim (see `Health::Unknown`): an
        // idle lane starts again with one, and is listed with its full room
        // while it holds claims. Suspects are always listed: they must not
        // get even that. (Listing idle healthy lanes as well made every
        // claim carry hundreds of ids: Redis CPU ×2.5 with 900 endpoints.)
        // A request for fresh deliveries of some owners lists their flowing
        // lanes, idle or not — a few ids at most — so an idle endpoint's
        // burst goes out whole by the fast path.
        let listed: Vec<(&String, &Lane)> = lanes
            .iter()
            .filter(|(_, lane)| owners.is_none_or(|owners| owners.contains(lane.owner.as_str())))
            .filter(|(_, lane)| {
                lane.held() > 0
                    || lane.health.is_suspect()
                    || (owners.is_some() && lane.health == Health::Flowing)
            })
            .collect();
        let room = listed
            .iter()
            .map(|(endpoint_id, lane)| {
                let room = lane.capacity(per_endpoint).saturating_sub(lane.held());
                ((*endpoint_id).clone(), room)
            })
            .collect();
        // Which suspects get the share is the store's choice: it meets them
        // in the order their work came due (a choice made here, without
        // knowing who has work due, starved all but the first few).
        let suspects = listed
            .iter()
            .filter(|(_, lane)| lane.health.is_suspect())
            .map(|(endpoint_id, _)| (*endpoint_id).clone())
            .collect();
        let slots_held = if self.counts_slots {
            listed
                .iter()
                .map(|(endpoint_id, lane)| ((*endpoint_id).clone(), lane.slots()))
                .collect()
        } else {
            HashMap::new()
        };
        let counted = slots_held
            .iter()
            .filter(|(_, slots)| **slots > 0)
            .map(|(endpoint_id, _)| endpoint_id.clone())
            .collect();
        // Marked under the lanes' lock: a worker deciding whether to keep
        // its slot sees the mark, or the claims already in its lane.
        let expected = self.on_the_way.expect(counted);
        drop(lanes);
        let request = ClaimRequest {
            now_ms: now,
            lease_until_ms: now + millis(self.settings.lease()),
            park_until_ms: now + millis(DISABLED_PARK),
            limit,
            // An endpoint not listed is not known to flow.
            per_endpoint: Health::Unknown.room(per_endpoint),
            room,
            suspects,
            suspect_room: suspect_share.saturating_sub(suspects_held),
            // The lanes hold `per_endpoint` sending in this process; a store
            // shared by several holds it across all of them (SPEC §10).
            endpoint_limit: if self.counts_slots { per_endpoint } else { 0 },
            slots_held,
        };
        (request, expected)
    }

    /// Puts a claim in its lane, starting a worker for the lane when it has
    /// a free sending slot. After `run` stopped, hands it back instead.
    fn start(self: &Arc<Self>, held: Held) {
        let recorder = self
            .recorder
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let Some(recorder) = recorder.filter(|_| !self.stopping.is_cancelled()) else {
            let this = Arc::clone(self);
            self.attempts
                .spawn(async move { this.hand_back(&held.claim).await });
            return;
        };
        match self.enqueue(held) {
            Enqueued::Start(first, slot) => {
                let this = Arc::clone(self);
                self.attempts
                    .spawn(async move { this.work_lane(first, slot, recorder).await });
            }
            Enqueued::Waiting => {}
            Enqueued::NoSlot(held) => {
                let this = Arc::clone(self);
                self.attempts
                    .spawn(async move { this.hand_back(&held.claim).await });
            }
        }
    }

    fn lock_lanes(&self) -> std::sync::MutexGuard<'_, HashMap<String, Lane>> {
        self.lanes.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Puts a claim in its endpoint's lane, and the slot it came with in the
    /// lane's; see [`Enqueued`].
    fn enqueue(&self, mut held: Held) -> Enqueued {
        let mut lanes = self.lock_lanes();
        // Idle lanes are kept for what they remember (whether the endpoint
        // is flowing), up to a point.
        if lanes.len() > MAX_LANES {
            // Suspects are kept: forgetting one would hand it full room.
            lanes.retain(|_, lane| lane.held() > 0 || lane.health.is_suspect());
        }
        let lane = lanes
            .entry(held.claim.delivery.endpoint_id.clone())
            .or_insert_with(|| Lane {
                owner: held.claim.delivery.username.clone(),
                ..Lane::default()
            });
        lane.free_slots.extend(held.claim.slot.take());
        if self.counts_slots && lane.slots() == 0 {
            // Queued behind slots the lane gave up meanwhile: nothing would
            // ever send it.
            return Enqueued::NoSlot(held);
        }
        let slot_free = !self.counts_slots || !lane.free_slots.is_empty();
        if lane.sending < self.settings.per_endpoint && slot_free {
            lane.sending += 1;
            Enqueued::Start(held, lane.free_slots.pop())
        } else {
            lane.waiting.push_back(held);
            Enqueued::Waiting
        }
    }

    /// Sends `first`, then whatever waits in the same lane, one at a time;
    /// one task per sending slot, not per delivery. On shutdown the claims
    /// still waiting are handed back rather than sent. `slot` (on a store
    /// that counts them) goes from claim to claim with the worker, and is
    /// given up with the record or hand-back of its last one.
    async fn work_lane(
        &self,
        first: Held,
        mut slot: Option<SendingSlot>,
        recorder: mpsc::UnboundedSender<Unrecorded>,
    ) {
        let endpoint_id = first.claim.delivery.endpoint_id.clone();
        let lapse = slot
            .as_ref()
            .map(|slot| Arc::new(SlotLapse::new(slot.lapses_at)));
        let mut next = Some(first);
        while let Some(Held {
            claim,
            permit,
            endpoints_seen,
        }) = next.take()
        {
            if let Some(lapse) = &lapse
                && !lapse
                    .lasts(self.settings.timeout + LEASE_SAFETY, || self.store.now_ms())
                    .await
            {
                tracing::warn!(%endpoint_id, "a sending slot's renewal did not land in time (late records); giving the slot up, so no other process's sender shares it");
                let mut claim = claim;
                claim.slot = slot.take().map(|held| SendingSlot {
                    keep_until: None,
                    ..held
                });
                self.hand_back(&claim).await;
                drop(permit);
                for held in self.leave_lane(&endpoint_id) {
                    self.hand_back(&held.claim).await;
                }
                return;
            }
            let lease_left = claim.delivery.next_attempt_at - self.store.now_ms();
            let done = if self
                .endpoint_changes
                .changed_since(&endpoint_id, endpoints_seen)
            {
                // Updated or deleted since the claim read it: claimed again,
                // it carries the endpoint as it is now (or is dropped).
                tracing::debug!(delivery_id = %claim.delivery.delivery_id, "endpoint changed; handing the claim back");
                Done::HandBack(claim)
            } else if lease_left > millis(self.settings.timeout + LEASE_SAFETY) {
                let started = Instant::now();
                let finished = self.attempt(claim).await;
                self.set_health(&endpoint_id, finished.result, started.elapsed());
                Done::Attempted(finished)
            } else {
                tracing::warn!(delivery_id = %claim.delivery.delivery_id, "a queued claim's lease is nearly over; handing it back");
                Done::HandBack(claim)
            };
            let (following, abandoned) = self.next_in_lane(&endpoint_id).await;
            // The slot passes on to the next claim (renewed until its lease
            // ends) or, with none, is given up along with this one.
            let settled = slot.take().map(|held| SendingSlot {
                keep_until: following
                    .as_ref()
                    .map(|next| next.claim.delivery.next_attempt_at),
                ..held
            });
            if following.is_some() {
                slot.clone_from(&settled);
            }
            match done {
                Done::Attempted(mut finished) => {
                    // The write joins the recorder's next batch; the worker
                    // goes on at once.
                    finished.claim.slot = settled;
                    let renews = lapse.clone().filter(|_| following.is_some());
                    let unrecorded = Unrecorded {
                        finished,
                        permit,
                        renews,
                    };
                    if recorder.send(unrecorded).is_err() {
                        tracing::error!(
                            "the attempt recorder is gone; the lease will expire and the delivery be sent again"
                        );
                    }
                }
                Done::HandBack(mut claim) => {
                    claim.slot = settled;
                    let handed_back = self.hand_back(&claim).await;
                    if let (Some(lapse), Some(keep_until)) = (
                        lapse.as_ref().filter(|_| handed_back),
                        claim.slot.as_ref().and_then(|slot| slot.keep_until),
                    ) {
                        lapse.renewed(keep_until, self.store.now_ms());
                    }
                    drop(permit);
                }
            }
            for held in abandoned {
                self.hand_back(&held.claim).await;
            }
            next = following;
        }
    }

    fn set_health(&self, endpoint_id: &str, result: AttemptResult, took: Duration) {
        if let Some(lane) = self.lock_lanes().get_mut(endpoint_id) {
            lane.health = lane.health.after(result, took, &mut lane.failures_in_row);
        }
    }

    /// The lane's next waiting claim, or none (the slot is then given up);
    /// when stopping, the waiting claims instead, to be handed back. A lane
    /// run dry waits, up to `CLAIMS_AWAITED`, for the claim requests out
    /// that counted its slots (see `on_the_way`).
    async fn next_in_lane(&self, endpoint_id: &str) -> (Option<Held>, Vec<Held>) {
        let give_up_at = tokio::time::Instant::now() + CLAIMS_AWAITED;
        loop {
            let answered = self.on_the_way.answered();
            tokio::pin!(answered);
            answered.as_mut().enable();
            let may_wait = tokio::time::Instant::now() < give_up_at;
            if let Some(next) = self.take_next_in_lane(endpoint_id, may_wait) {
                return next;
            }
            let _ = tokio::time::timeout_at(give_up_at, answered).await;
        }
    }

    /// [`Dispatcher::next_in_lane`] now; `None` to wait for claims on their
    /// way (only when `may_wait`).
    fn take_next_in_lane(
        &self,
        endpoint_id: &str,
        may_wait: bool,
    ) -> Option<(Option<Held>, Vec<Held>)> {
        let stopping = self.stopping.is_cancelled();
        let mut lanes = self.lock_lanes();
        let Some(lane) = lanes.get_mut(endpoint_id) else {
            return Some((None, Vec::new()));
        };
        let abandoned: Vec<Held> = if stopping {
            lane.waiting.drain(..).collect()
        } else {
            Vec::new()
        };
        let next = lane.waiting.pop_front();
        if next.is_none() {
            if may_wait && !stopping && self.on_the_way.awaited(endpoint_id) {
                return None;
            }
            lane.sending -= 1;
        }
        if lane.held() <= lane.capacity(self.settings.per_endpoint) / 2 {
            self.wake.notify_one();
        }
        Some((next, abandoned))
    }

    /// Makes a claim due again now, without spending an attempt; whether
    /// the store answered.
    async fn hand_back(&self, claim: &Claim) -> bool {
        match self.store.release(claim, self.store.now_ms()).await {
            Ok(_) => true,
            // The lease runs out by itself; the delivery is only late.
            Err(error) => {
                tracing::warn!(%error, delivery_id = %claim.delivery.delivery_id, "could not hand a claim back");
                false
            }
        }
    }

    /// A worker that lost its slot leaves its lane; the claims waiting there
    /// are returned to be handed back when no worker is left to send them.
    fn leave_lane(&self, endpoint_id: &str) -> Vec<Held> {
        let mut lanes = self.lock_lanes();
        let Some(lane) = lanes.get_mut(endpoint_id) else {
            return Vec::new();
        };
        lane.sending -= 1;
        if lane.sending == 0 {
            lane.waiting.drain(..).collect()
        } else {
            Vec::new()
        }
    }

    /// One attempt, from the request to what follows from its answer.
    async fn attempt(&self, claim: Claim) -> FinishedAttempt {
        let delivery = &claim.delivery;
        let number = delivery.attempts + 1;
        let started_at = self.store.now_ms();
        let clock = Instant::now();
        telemetry::attempts_in_flight(1.0);
        let trace = AttemptSpan::start(&claim, number);
        let response = self
            .client
            .send(&claim, &trace)
            .instrument(trace.span.clone())
            .await;
        telemetry::attempts_in_flight(-1.0);
        let duration = clock.elapsed();
        let verdict = classify(response.observed);
        let result = match verdict {
            Verdict::Delivered => AttemptResult::Delivered,
            Verdict::Failed { .. } => AttemptResult::Dead,
            // A re-sent dead delivery gets this one attempt (SPEC §8).
            Verdict::Retry { .. } if delivery.last_attempt => AttemptResult::Dead,
            Verdict::Retry { retry_after, .. } => {
                let jitter = rand::rng().random::<f64>();
                let own = self.client.retry_schedule(&claim);
                let schedule = own.as_ref().unwrap_or(&self.settings.schedule);
                match schedule.next_attempt(number, jitter, retry_after) {
                    NextAttempt::After(delay) => {
                        AttemptResult::RetryAt(self.store.now_ms() + millis(delay))
                    }
                    NextAttempt::GiveUp => AttemptResult::Dead,
                }
            }
        };
        let status_code = match response.observed {
            crate::classify::Observed::Status { code, .. } => Some(code),
            crate::classify::Observed::NoResponse(_) => None,
        };
        let reason = verdict.reason();
        let outcome = match result {
            AttemptResult::Delivered => AttemptOutcome::Delivered,
            AttemptResult::RetryAt(_) => AttemptOutcome::Retry,
            AttemptResult::Dead => AttemptOutcome::Dead,
        };
        telemetry::attempt_finished(outcome, reason.as_str(), duration);
        trace.finish(
            status_code,
            reason.as_str(),
            outcome == AttemptOutcome::Delivered,
            duration,
        );
        if outcome == AttemptOutcome::Delivered {
            let lag_ms = self.store.now_ms().saturating_sub(delivery.created_at);
            telemetry::delivered_after(Duration::from_millis(
                u64::try_from(lag_ms).unwrap_or_default(),
            ));
        }
        if verdict != Verdict::Delivered {
            tracing::warn!(
                endpoint_id = %delivery.endpoint_id,
                event_id = %delivery.event_id,
                delivery_id = %delivery.delivery_id,
                attempt = number,
                reason = reason.as_str(),
                status = status_code,
                duration_ms = duration.as_millis(),
                dead = matches!(result, AttemptResult::Dead),
                "delivery attempt failed"
            );
        }
        let record = AttemptRecord {
            attempt: number,
            started_at,
            duration_ms: u64::try_from(duration.as_millis()).unwrap_or(u64::MAX),
            status_code,
            reason: reason.as_str().to_owned(),
            response: response.excerpt,
            signing: response.signing,
        };
        FinishedAttempt {
            claim,
            record,
            result,
        }
    }
}

fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}
