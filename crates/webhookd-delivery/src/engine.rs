//! The dispatcher: claims due deliveries from the store with a lease, sends
//! each once, and writes the attempt and its consequence back.
//!
//! - **Retries are data.** A failed attempt is stored as "due at T"; nothing
//!   sleeps in memory, so a crash loses no scheduled retry.
//! - **Leases.** A claim hides a delivery until `lease`, which outlasts the
//!   attempt deadline by a wide margin (a lease shorter than the request
//!   timeout is how Svix once sent duplicates). A worker that dies leaves its
//!   leases to expire; whoever claims next sends.
//! - **Isolation.** At most `max_in_flight` attempts run at once, and at most
//!   `per_endpoint` of them for any one endpoint. A claim whose endpoint is
//!   at its cap is handed back (due shortly, no attempt spent) instead of
//!   waiting, so a slow or dead endpoint can hold a few permits, never the
//!   workers of the healthy ones.
//! - **Wake-ups.** Ingest pokes [`Dispatcher::waker`] after a durable
//!   write, so fresh deliveries go out at once rather than at the next poll.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use rand::Rng as _;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use webhookd_core::telemetry::{self, AttemptOutcome};
use webhookd_core::time::unix_millis;
use webhookd_core::{NextAttempt, RetrySchedule};
use webhookd_store::{AttemptRecord, AttemptResult, Claim, Store};

use crate::classify::{Verdict, classify};
use crate::client::DeliveryClient;

/// How the dispatcher runs.
#[derive(Debug, Clone)]
pub struct DispatcherSettings {
    pub schedule: RetrySchedule,
    /// Per-attempt deadline; the lease is derived from it.
    pub timeout: Duration,
    /// Attempts in flight at once, over all endpoints.
    pub max_in_flight: usize,
    /// Attempts in flight at once to one endpoint.
    pub per_endpoint: usize,
    /// How often the store is asked for due work when nothing woke us.
    pub poll_interval: Duration,
}

impl DispatcherSettings {
    /// The lease: the deadline, the time to read the body and record the
    /// attempt, and a wide margin for a loaded machine.
    pub fn lease(&self) -> Duration {
        self.timeout * 2 + Duration::from_secs(30)
    }
}

/// How long a claim whose endpoint is at its cap waits before it is due again.
const ENDPOINT_BUSY_DELAY: Duration = Duration::from_millis(200);
/// How long deliveries of a disabled endpoint wait before they are looked at again.
const DISABLED_PARK: Duration = Duration::from_secs(60);
/// How long to wait before asking the store again after it failed.
const STORE_ERROR_DELAY: Duration = Duration::from_secs(1);

#[derive(Debug)]
pub struct Dispatcher {
    store: Arc<dyn Store>,
    client: DeliveryClient,
    settings: DispatcherSettings,
    wake: Arc<Notify>,
    in_flight: Arc<Semaphore>,
    endpoints: Mutex<HashMap<String, Arc<Semaphore>>>,
}

impl Dispatcher {
    pub fn new(
        store: Arc<dyn Store>,
        client: DeliveryClient,
        settings: DispatcherSettings,
    ) -> Self {
        Dispatcher {
            store,
            client,
            in_flight: Arc::new(Semaphore::new(settings.max_in_flight)),
            settings,
            wake: Arc::new(Notify::new()),
            endpoints: Mutex::new(HashMap::new()),
        }
    }

    /// Poke this after new deliveries became durable to send them now.
    pub fn waker(&self) -> Arc<Notify> {
        Arc::clone(&self.wake)
    }

    /// Claims and sends until `shutdown`; then stops claiming and waits for
    /// the attempts in flight, each bounded by the deadline, so their results
    /// are recorded and no lease is left dangling.
    pub async fn run(self, shutdown: CancellationToken) {
        let this = Arc::new(self);
        let attempts = TaskTracker::new();
        loop {
            // Wait for room before claiming, so nothing claimed waits.
            let permit = tokio::select! {
                permit = Arc::clone(&this.in_flight).acquire_owned() => permit,
                () = shutdown.cancelled() => break,
            };
            let Ok(first_permit) = permit else { break };
            let room = this.in_flight.available_permits() + 1;
            let claims = match this.claim(room).await {
                Ok(claims) => claims,
                Err(error) => {
                    tracing::warn!(%error, "cannot claim due deliveries; retrying");
                    drop(first_permit);
                    tokio::select! {
                        () = tokio::time::sleep(STORE_ERROR_DELAY) => continue,
                        () = shutdown.cancelled() => break,
                    }
                }
            };
            if claims.is_empty() {
                drop(first_permit);
                tokio::select! {
                    () = tokio::time::sleep(this.settings.poll_interval) => {}
                    () = this.wake.notified() => {}
                    () = shutdown.cancelled() => break,
                }
                continue;
            }
            let mut first_permit = Some(first_permit);
            for claim in claims {
                let Some(endpoint_permit) = this.endpoint_permit(&claim.delivery.endpoint_id)
                else {
                    this.hand_back(&claim).await;
                    continue;
                };
                // Claimed no more than the room there was, so this holds.
                let permit = first_permit
                    .take()
                    .or_else(|| Arc::clone(&this.in_flight).try_acquire_owned().ok());
                let Some(permit) = permit else {
                    this.hand_back(&claim).await;
                    continue;
                };
                let this = Arc::clone(&this);
                attempts.spawn(async move {
                    this.attempt(claim).await;
                    drop((permit, endpoint_permit));
                });
            }
        }
        attempts.close();
        attempts.wait().await;
        tracing::info!("delivery engine stopped");
    }

    async fn claim(&self, limit: usize) -> Result<Vec<Claim>, webhookd_store::StoreError> {
        let now = unix_millis();
        let lease = millis(self.settings.lease());
        self.store
            .claim_due(now, now + lease, now + millis(DISABLED_PARK), limit)
            .await
    }

    /// A permit for the endpoint, unless it is at its cap. Semaphores of
    /// endpoints with nothing in flight are dropped, keeping the map small.
    fn endpoint_permit(&self, endpoint_id: &str) -> Option<OwnedSemaphorePermit> {
        let mut endpoints = self
            .endpoints
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if endpoints.len() > 10_000 {
            let cap = self.settings.per_endpoint;
            endpoints.retain(|_, semaphore| semaphore.available_permits() < cap);
        }
        let semaphore = endpoints
            .entry(endpoint_id.to_owned())
            .or_insert_with(|| Arc::new(Semaphore::new(self.settings.per_endpoint)));
        Arc::clone(semaphore).try_acquire_owned().ok()
    }

    async fn hand_back(&self, claim: &Claim) {
        let due = unix_millis() + millis(ENDPOINT_BUSY_DELAY);
        if let Err(error) = self.store.release(claim, due).await {
            // The lease runs out by itself; the delivery is only late.
            tracing::warn!(%error, delivery_id = %claim.delivery.delivery_id, "could not hand a claim back");
        }
    }

    /// One attempt, start to recorded.
    async fn attempt(&self, claim: Claim) {
        let delivery = &claim.delivery;
        let number = delivery.attempts + 1;
        let started_at = unix_millis();
        let clock = Instant::now();
        telemetry::attempts_in_flight(1.0);
        let response = self.client.send(&claim).await;
        telemetry::attempts_in_flight(-1.0);
        let duration = clock.elapsed();
        let verdict = classify(response.observed);
        let result = match verdict {
            Verdict::Delivered => AttemptResult::Delivered,
            Verdict::Failed { .. } => AttemptResult::Dead,
            Verdict::Retry { retry_after, .. } => {
                let jitter = rand::rng().random::<f64>();
                match self
                    .settings
                    .schedule
                    .next_attempt(number, jitter, retry_after)
                {
                    NextAttempt::After(delay) => {
                        AttemptResult::RetryAt(unix_millis() + millis(delay))
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
        if outcome == AttemptOutcome::Delivered {
            let lag_ms = unix_millis().saturating_sub(delivery.created_at);
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
        };
        self.record(&claim, &record, result).await;
    }

    /// Writes the attempt back, retrying briefly while the store is down. If
    /// it stays down the lease expires and the delivery is sent again: a
    /// duplicate after a fault, never a loss.
    async fn record(&self, claim: &Claim, record: &AttemptRecord, result: AttemptResult) {
        for _ in 0..5 {
            match self.store.record_attempt(claim, record, result).await {
                Ok(true) => return,
                Ok(false) => {
                    tracing::warn!(delivery_id = %claim.delivery.delivery_id, "lease expired before the attempt was recorded; another worker owns it");
                    return;
                }
                Err(error) => {
                    tracing::warn!(%error, delivery_id = %claim.delivery.delivery_id, "cannot record the attempt; retrying");
                    tokio::time::sleep(STORE_ERROR_DELAY).await;
                }
            }
        }
    }
}

fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}
