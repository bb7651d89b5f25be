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

use tracing::Instrument as _;

use webhookd_core::endpoint::MAX_ENDPOINTS_PER_USER;
use webhookd_core::operator::OperatorEvent;
use webhookd_core::telemetry::{self, EventOutcome, Quota, Source};
use webhookd_core::time::unix_seconds;
use webhookd_core::{Event, MissingId, Rejection, SharedCatalog};
use webhookd_delivery::Dispatcher;
use webhookd_store::{Acceptance, Store, StoreError};

pub mod amqp;
pub mod operator_events;
pub mod publish;

/// The shared ingest path. Both the AMQP consumer and the HTTP route go
/// through it, so they validate and persist identically.
#[derive(Debug, Clone)]
pub struct Ingest {
    store: Arc<dyn Store>,
    /// The event types events may have, and their schemas (SPEC §12).
    catalog: SharedCatalog,
    /// Gets the fresh deliveries leased at acceptance, and a wake-up for
    /// those that were not.
    dispatcher: Option<Arc<Dispatcher>>,
    /// Whether operator events are recorded (SPEC §15).
    operator_events: bool,
}

impl Ingest {
    /// Ingest into `store`, checking events against the JoggAI catalog
    /// until given another ([`Ingest::with_catalog`]).
    pub fn new(store: Arc<dyn Store>) -> Self {
        Ingest {
            store,
            catalog: SharedCatalog::joggai(),
            dispatcher: None,
            operator_events: false,
        }
    }

    /// Checks events against `catalog`.
    #[must_use]
    pub fn with_catalog(self, catalog: SharedCatalog) -> Self {
        Ingest { catalog, ..self }
    }

    /// The catalog events are checked against.
    pub fn catalog(&self) -> &SharedCatalog {
        &self.catalog
    }

    /// Hands fresh deliveries to `dispatcher` as they are accepted.
    #[must_use]
    pub fn with_dispatcher(self, dispatcher: Arc<Dispatcher>) -> Self {
        Ingest {
            dispatcher: Some(dispatcher),
            ..self
        }
    }

    /// Records operator events (SPEC §15) through [`Ingest::tell_operator`].
    #[must_use]
    pub fn with_operator_events(self, operator_events: bool) -> Self {
        Ingest {
            operator_events,
            ..self
        }
    }

    /// Whether operator events are recorded.
    pub fn tells_operator(&self) -> bool {
        self.operator_events
    }

    /// Records an operator event in the store's outbox when operator
    /// events are on; a store that fails is logged (what happened stands,
    /// and the caller is not stopped for the operator's notice).
    pub async fn tell_operator(&self, event: OperatorEvent) {
        if !self.operator_events {
            return;
        }
        if let Err(error) = self.store.add_operator_events(&[event.to_record()]).await {
            tracing::error!(%error, r#type = %event.kind, id = %event.id, "could not record an operator event");
        }
    }

    /// Tells the delivery engine there is due work, e.g. a dead delivery
    /// sent again.
    pub fn wake(&self) {
        if let Some(dispatcher) = &self.dispatcher {
            dispatcher.wake();
        }
    }

    /// Validates one raw message from `source` (its type in the catalog,
    /// its `data` matching the type's schema); the event gets its id (from
    /// `missing_id`) and timestamp here when the producer sent none.
    pub fn parse(
        &self,
        message: &[u8],
        source: Source,
        missing_id: MissingId<'_>,
    ) -> Result<Event, Rejection> {
        Event::parse_with(message, unix_seconds(), missing_id)
            .and_then(|event| {
                self.catalog.current().check(&event)?;
                Ok(event)
            })
            .inspect_err(|rejection| telemetry::event_rejected(source, rejection.code()))
    }

    /// Makes `events` durable: de-duplicated and fanned out into pending
    /// deliveries. Once this returns `Ok`, the events may be acknowledged.
    /// Fresh deliveries the dispatcher has room for are leased to it in the
    /// same store call and sent at once (the fast path).
    pub async fn accept(
        &self,
        events: &[Event],
        source: Source,
    ) -> Result<Vec<Acceptance>, StoreError> {
        let span = webhookd_delivery::trace::accept_span(events, source.as_str());
        self.accept_in_span(events, source).instrument(span).await
    }

    async fn accept_in_span(
        &self,
        events: &[Event],
        source: Source,
    ) -> Result<Vec<Acceptance>, StoreError> {
        let now = self.store.now_ms();
        // An event fans out to at most one delivery per endpoint of its owner.
        let most = events.len() * MAX_ENDPOINTS_PER_USER;
        let owners: HashSet<&str> = events.iter().map(|event| event.username.as_str()).collect();
        let reserved = self
            .dispatcher
            .as_ref()
            .and_then(|dispatcher| Some((dispatcher, dispatcher.reserve(most, &owners)?)));
        let outcomes = if let Some((dispatcher, reservation)) = reserved {
            let (outcomes, claims) = self
                .store
                .accept_and_claim(events, now, &reservation.request)
                .await?;
            let created: usize = outcomes.iter().map(Acceptance::delivery_count).sum();
            if created > claims.len() {
                dispatcher.wake();
            }
            dispatcher.dispatch(reservation, claims);
            outcomes
        } else {
            let outcomes = self.store.accept_events(events, now).await?;
            if outcomes.iter().any(|outcome| outcome.delivery_count() > 0) {
                self.wake();
            }
            outcomes
        };
        for (event, outcome) in events.iter().zip(&outcomes) {
            report(event, outcome, source);
        }
        Ok(outcomes)
    }
}

/// The metrics and the log line of one accepted event.
fn report(event: &Event, outcome: &Acceptance, source: Source) {
    let counted = match outcome {
        Acceptance::Accepted {
            deliveries,
            quota_refused,
        } => {
            for endpoint_id in quota_refused {
                telemetry::quota_refused(Quota::KeptDeliveries);
                tracing::warn!(
                    event_id = %event.event_id, username = %event.username, endpoint_id,
                    "no delivery for an endpoint holding its max_kept_deliveries_per_endpoint"
                );
            }
            if deliveries.is_empty() {
                tracing::debug!(
                    event_id = %event.event_id, username = %event.username, event = %event.event_type,
                    "event accepted; no enabled endpoint subscribes to it (or has room for it)"
                );
                EventOutcome::NoSubscribers
            } else {
                tracing::debug!(event_id = %event.event_id, deliveries = deliveries.len(), "event accepted");
                EventOutcome::Accepted
            }
        }
        Acceptance::Duplicate => {
            tracing::debug!(event_id = %event.event_id, "duplicate event ignored");
            EventOutcome::Duplicate
        }
        Acceptance::OverDailyQuota { per_day } => {
            telemetry::quota_refused(Quota::EventsPerDay);
            tracing::debug!(event_id = %event.event_id, username = %event.username, per_day, "event refused: events per day used up");
            EventOutcome::OverQuota
        }
    };
    telemetry::event_received(source, counted);
}

/// What to tell the producer of an event its owner's `max_events_per_day`
/// refused (SPEC §11).
pub fn over_daily_quota_message(per_day: u64) -> String {
    format!(
        "event quota reached: {per_day} events per day for this user (max_events_per_day); \
         the count starts again at midnight UTC"
    )
}
