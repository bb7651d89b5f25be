//! Ingest: how events get in (SPEC §5).
//!
//! Owns the one path from a raw event message to durable deliveries —
//! [`Ingest`] parses, then has the store de-duplicate and fan out in one
//! atomic step — and the RabbitMQ consumer ([`amqp`]) that feeds it,
//! supervised and reconnecting forever. The HTTP route (`POST
//! /internal/events`) lives with the other routes in `webhookd-api` and
//! calls the same [`Ingest`]. Sending the deliveries is the delivery
//! engine's job, not this crate's.

use std::sync::Arc;

use tokio::sync::Notify;
use webhookd_core::telemetry::{self, EventOutcome, Source};
use webhookd_core::time::{unix_millis, unix_seconds};
use webhookd_core::{Event, Rejection};
use webhookd_store::{Acceptance, Store, StoreError};

pub mod amqp;

/// The shared ingest path. Both the AMQP consumer and the HTTP route go
/// through it, so they validate and persist identically.
#[derive(Debug, Clone)]
pub struct Ingest {
    store: Arc<dyn Store>,
    /// Pokes the delivery engine when new deliveries are durable, so they
    /// go out at once instead of at its next poll.
    waker: Option<Arc<Notify>>,
}

impl Ingest {
    pub fn new(store: Arc<dyn Store>) -> Self {
        Ingest { store, waker: None }
    }

    /// Wakes `waker` whenever deliveries were created.
    #[must_use]
    pub fn with_waker(self, waker: Arc<Notify>) -> Self {
        Ingest {
            waker: Some(waker),
            ..self
        }
    }

    /// Tells the delivery engine there is work due now.
    pub fn wake(&self) {
        if let Some(waker) = &self.waker {
            waker.notify_one();
        }
    }

    /// Validates one raw message from `source`; the event gets its id and
    /// timestamp here when the producer sent none.
    pub fn parse(message: &[u8], source: Source) -> Result<Event, Rejection> {
        Event::parse(message, unix_seconds())
            .inspect_err(|rejection| telemetry::event_rejected(source, rejection.code()))
    }

    /// Makes `events` durable: de-duplicated and fanned out into pending
    /// deliveries. Once this returns `Ok`, the events may be acknowledged.
    pub async fn accept(
        &self,
        events: &[Event],
        source: Source,
    ) -> Result<Vec<Acceptance>, StoreError> {
        let outcomes = self.store.accept_events(events, unix_millis()).await?;
        let created = outcomes
            .iter()
            .any(|outcome| matches!(outcome, Acceptance::Accepted { deliveries } if !deliveries.is_empty()));
        if created {
            self.wake();
        }
        for (event, outcome) in events.iter().zip(&outcomes) {
            telemetry::event_received(
                source,
                match outcome {
                    Acceptance::Accepted { deliveries } if deliveries.is_empty() => {
                        EventOutcome::NoSubscribers
                    }
                    Acceptance::Accepted { .. } => EventOutcome::Accepted,
                    Acceptance::Duplicate => EventOutcome::Duplicate,
                },
            );
            match outcome {
                Acceptance::Accepted { deliveries } if deliveries.is_empty() => tracing::debug!(
                    event_id = %event.event_id, username = %event.username, event = %event.event_type,
                    "event accepted; no enabled endpoint subscribes to it"
                ),
                Acceptance::Accepted { deliveries } => tracing::debug!(
                    event_id = %event.event_id, deliveries = deliveries.len(), "event accepted"
                ),
                Acceptance::Duplicate => {
                    tracing::debug!(event_id = %event.event_id, "duplicate event ignored");
                }
            }
        }
        Ok(outcomes)
    }
}
