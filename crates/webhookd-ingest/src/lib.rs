//! Ingest: how events get in (SPEC §5).
//!
//! Owns the one path from a raw event message to durable deliveries —
//! [`Ingest`] parses, then has the store de-duplicate and fan out in one
//! atomic step — and the RabbitMQ consumer ([`amqp`]) that feeds it,
//! supervised and reconnecting forever. The HTTP route (`POST
//! /internal/events`) lives with the other routes in `webhookd-api` and
//! calls the same [`Ingest`]. Sending is the delivery engine's job; ingest
//! only hands it the deliveries the store leased at acceptance (the fast
//! path, see `webhookd_delivery::Dispatcher::reserve`).

use std::collections::HashSet;
use std::sync::Arc;

use tokio::sync::mpsc;
use webhookd_core::endpoint::MAX_ENDPOINTS_PER_USER;
use webhookd_core::telemetry::{self, EventOutcome, Source};
use webhookd_core::time::{unix_millis, unix_seconds};
use webhookd_core::{Event, MissingId, Rejection};
use webhookd_delivery::Dispatcher;
use webhookd_store::{Acceptance, ClaimRequest, Store, StoreError};

mod acks;
pub mod amqp;

/// The shared ingest path. Both the AMQP consumer and the HTTP route go
/// through it, so they validate and persist identically.
#[derive(Debug, Clone)]
pub struct Ingest {
    store: Arc<dyn Store>,
    /// Gets the fresh deliveries leased at acceptance, and a wake-up for
    /// those that were not.
    dispatcher: Option<Arc<Dispatcher>>,
}

impl Ingest {
    pub fn new(store: Arc<dyn Store>) -> Self {
        Ingest {
            store,
            dispatcher: None,
        }
    }

    /// Hands fresh deliveries to `dispatcher` as they are accepted.
    #[must_use]
    pub fn with_dispatcher(self, dispatcher: Arc<Dispatcher>) -> Self {
        Ingest {
            dispatcher: Some(dispatcher),
            ..self
        }
    }

    /// Tells the delivery engine there is due work, e.g. a dead delivery
    /// sent again.
    pub fn wake(&self) {
        if let Some(dispatcher) = &self.dispatcher {
            dispatcher.wake();
        }
    }

    /// Validates one raw message from `source`; the event gets its id
    /// (from `missing_id`) and timestamp here when the producer sent none.
    pub fn parse(
        message: &[u8],
        source: Source,
        missing_id: MissingId<'_>,
    ) -> Result<Event, Rejection> {
        Event::parse_with(message, unix_seconds(), missing_id)
            .inspect_err(|rejection| telemetry::event_rejected(source, rejection.code()))
    }

    /// Makes `events` durable: de-duplicated and fanned out into pending
    /// deliveries. Once this returns `Ok`, the events may be acknowledged.
    pub async fn accept(
        &self,
        events: &[Event],
        source: Source,
    ) -> Result<Vec<Acceptance>, StoreError> {
        let accepted = self.accept_with(events, source, Mode::Durable).await?;
        Ok(accepted.into_iter().map(|(outcome, _)| outcome).collect())
    }

    /// The delivery ids of unwritten deliveries as the store answers for
    /// them, for [`Ingest::accept_unacknowledged`]'s caller; `None` without
    /// a dispatcher, or after the first call.
    pub fn take_settled(&self) -> Option<mpsc::UnboundedReceiver<String>> {
        self.dispatcher.as_ref()?.take_settled()
    }

    /// Accepts events whose messages stay unacknowledged until their
    /// deliveries are recorded (deliver before writing, docs/delivery.md):
    /// with `send_unwritten`, fresh deliveries sent at once are not written
    /// yet. With each outcome come the ids of those deliveries; the message
    /// may be acknowledged once [`Ingest::take_settled`] has given each of
    /// them (the rest are durable when this returns). Either way an event
    /// another consumer holds so is [`Acceptance::HeldElsewhere`], never a
    /// duplicate.
    pub async fn accept_unacknowledged(
        &self,
        events: &[Event],
        source: Source,
        send_unwritten: bool,
    ) -> Result<Unacknowledged, StoreError> {
        let lease_until_ms = self
            .dispatcher
            .as_ref()
            .map_or(0, |dispatcher| unix_millis() + dispatcher.lease_millis());
        let mode = Mode::FromBroker { send_unwritten };
        let outcomes = self.accept_with(events, source, mode).await?;
        Ok(Unacknowledged {
            outcomes,
            lease_until_ms,
        })
    }

    async fn accept_with(
        &self,
        events: &[Event],
        source: Source,
        mode: Mode,
    ) -> Result<Vec<(Acceptance, Vec<String>)>, StoreError> {
        let now = unix_millis();
        // An event fans out to at most one delivery per endpoint of its owner.
        let most = events.len() * MAX_ENDPOINTS_PER_USER;
        let owners: HashSet<&str> = events.iter().map(|event| event.username.as_str()).collect();
        let unwritten = matches!(mode, Mode::FromBroker { .. });
        let reserved = self
            .dispatcher
            .as_ref()
            .filter(|_| {
                mode != Mode::FromBroker {
                    send_unwritten: false,
                }
            })
            .and_then(|dispatcher| {
                Some((dispatcher, dispatcher.reserve(most, &owners, unwritten)?))
            });
        let (outcomes, unwritten) = if let Some((dispatcher, reservation)) = reserved {
            let (outcomes, claims) = self
                .store
                .accept_and_claim(events, now, &reservation.request)
                .await?;
            let created: usize = outcomes.iter().map(Acceptance::delivery_count).sum();
            if created > claims.len() {
                dispatcher.wake();
            }
            let unwritten: HashSet<String> = claims
                .iter()
                .filter(|claim| claim.unwritten)
                .map(|claim| claim.delivery.delivery_id.clone())
                .collect();
            dispatcher.dispatch(reservation, claims);
            (outcomes, unwritten)
        } else {
            // No room to send: everything is written. Asked as unwritten
            // still, so that an event another consumer holds is not taken
            // for a duplicate.
            let nothing = ClaimRequest {
                unwritten,
                ..ClaimRequest::default()
            };
            let (outcomes, _) = self.store.accept_and_claim(events, now, &nothing).await?;
            if outcomes.iter().any(|outcome| outcome.delivery_count() > 0) {
                self.wake();
            }
            (outcomes, HashSet::new())
        };
        for (event, outcome) in events.iter().zip(&outcomes) {
            report(event, outcome, source);
        }
        Ok(outcomes
            .into_iter()
            .map(|outcome| {
                let held = match &outcome {
                    Acceptance::Accepted { deliveries } => deliveries
                        .iter()
                        .filter(|delivery| unwritten.contains(&delivery.delivery_id))
                        .map(|delivery| delivery.delivery_id.clone())
                        .collect(),
                    _ => Vec::new(),
                };
                (outcome, held)
            })
            .collect())
    }
}

/// How events are accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Durable when accepted (HTTP: 202 = durable).
    Durable,
    /// From a broker whose message is their record until acknowledged.
    FromBroker { send_unwritten: bool },
}

/// What [`Ingest::accept_unacknowledged`] did.
#[derive(Debug)]
pub struct Unacknowledged {
    /// Per event: its outcome, and the unwritten deliveries its message
    /// waits for.
    pub outcomes: Vec<(Acceptance, Vec<String>)>,
    /// About when their lease ends (unix ms; it was taken a little later):
    /// past it, the message is better handed back to the queue.
    pub lease_until_ms: i64,
}

/// The metric and the log line of one accepted event.
fn report(event: &Event, outcome: &Acceptance, source: Source) {
    let counted = match outcome {
        Acceptance::Accepted { deliveries } if deliveries.is_empty() => {
            tracing::debug!(
                event_id = %event.event_id, username = %event.username, event = %event.event_type,
                "event accepted; no enabled endpoint subscribes to it"
            );
            EventOutcome::NoSubscribers
        }
        Acceptance::Accepted { deliveries } => {
            tracing::debug!(event_id = %event.event_id, deliveries = deliveries.len(), "event accepted");
            EventOutcome::Accepted
        }
        Acceptance::Duplicate => {
            tracing::debug!(event_id = %event.event_id, "duplicate event ignored");
            EventOutcome::Duplicate
        }
        // Counted when it is offered again.
        Acceptance::HeldElsewhere { until_ms } => {
            tracing::debug!(event_id = %event.event_id, until_ms, "event held by another consumer; offered again later");
            return;
        }
    };
    telemetry::event_received(source, counted);
}
