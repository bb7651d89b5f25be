//! Sends operator events on (SPEC §15): what the stores recorded in their
//! outbox goes to every target of `operator_events`, and leaves the outbox
//! only once every target took it — at least once, through crashes and
//! outages (a target that is down holds the outbox until it is back).
//!
//! - An AMQP target gets each event as a persistent message on its durable
//!   topic exchange, routed by the event's type, with the event's id as
//!   `message_id`, confirmed by the broker.
//! - An https target is an endpoint of the reserved user
//!   [`OPERATOR_USERNAME`]: each event is accepted as that user's event
//!   (its id de-duplicates a repeat), so it is signed, retried and
//!   SSRF-guarded like any delivery. [`sync_webhook_targets`] makes the
//!   user's endpoints the configured URLs.
//!
//! This task also looks for client certificates about to expire, once an
//! hour, and records `certificate.expiring` for each (at most one per
//! endpoint per day, across processes).

use std::sync::Arc;
use std::time::Duration;

use lapin::options::{BasicPublishOptions, ConfirmSelectOptions, ExchangeDeclareOptions};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, ExchangeKind};
use serde_json::json;
use tokio_util::sync::CancellationToken;
use webhookd_core::operator::{
    CERTIFICATE_NOTICE_DAYS, OPERATOR_USERNAME, OperatorEvent, OperatorEventKind, OperatorTarget,
};
use webhookd_core::telemetry;
use webhookd_core::{DeliveryOptions, Endpoint, EndpointStatus, Event, EventType, ids};
use webhookd_store::{OutboxEntry, Store, StoreError};

/// Most outbox records sent on per round.
const BATCH: usize = 100;
/// How often the outbox is looked at: one process sends per such window.
const IDLE: Duration = Duration::from_secs(1);
/// The most one sender spends sending in its window (less than
/// [`IDLE`], so no two processes send at once while the store's clock
/// holds).
const SENDING: Duration = Duration::from_millis(800);
/// How often client certificates are looked at.
const CERTIFICATE_SCAN: Duration = Duration::from_secs(3600);
const DAY_MS: i64 = 86_400_000;

/// Makes the endpoints of [`OPERATOR_USERNAME`] the https targets in
/// `urls`: one per URL (the oldest kept when processes starting together
/// made two), subscribed to every operator event type; the others deleted.
/// Their secrets are the operator's to read, like any user's
/// (`webhookd users add webhookd-operator`, then the API or a portal link).
pub async fn sync_webhook_targets(store: &dyn Store, urls: &[String]) -> Result<(), StoreError> {
    let current = store.list_endpoints(OPERATOR_USERNAME).await?;
    let mut kept: Vec<&str> = Vec::new();
    for endpoint in &current {
        if urls.contains(&endpoint.url) && !kept.contains(&endpoint.url.as_str()) {
            kept.push(&endpoint.url);
        } else {
            store
                .delete_endpoint(OPERATOR_USERNAME, &endpoint.endpoint_id)
                .await?;
        }
    }
    for url in urls.iter().filter(|url| !kept.contains(&url.as_str())) {
        let endpoint = Endpoint {
            endpoint_id: ids::new_endpoint_id(),
            url: url.clone(),
            secret: ids::new_secret(),
            status: EndpointStatus::Enabled,
            events: OperatorEventKind::ALL
                .iter()
                .filter_map(|kind| EventType::new(kind.as_str()).ok())
                .collect(),
            username: OPERATOR_USERNAME.to_owned(),
            created_at: webhookd_core::time::unix_seconds(),
            previous_secret: None,
            failing_since: None,
            disabled_reason: None,
            rate_limit: None,
            quota_refused: 0,
            options: None,
            filter: None,
            ordering: None,
        };
        store
            .create_endpoint(
                &endpoint,
                webhookd_core::endpoint::ENDPOINTS_PER_USER_CEILING as usize,
            )
            .await?;
        tracing::info!(url = %webhookd_core::config::redact_url(url), endpoint_id = %endpoint.endpoint_id, "operator events go to this https target, as deliveries of user webhookd-operator");
    }
    Ok(())
}

/// The task that sends the outbox on.
pub struct OperatorEvents {
    store: Arc<dyn Store>,
    amqp: Vec<AmqpTarget>,
    /// The https targets (the operator user's endpoints), normalised.
    webhooks: Vec<String>,
    /// Told when operator events became deliveries.
    wake: Box<dyn Fn() + Send + Sync>,
}

impl std::fmt::Debug for OperatorEvents {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OperatorEvents")
            .field("amqp_targets", &self.amqp.len())
            .field("webhooks", &self.webhooks.len())
            .finish_non_exhaustive()
    }
}

struct AmqpTarget {
    url: String,
    exchange: String,
    /// Open while the broker answers; opened again after a failure.
    channel: Option<(Connection, Channel)>,
}

impl OperatorEvents {
    /// Sends to `targets`, the https ones at `webhook_urls` (normalised
    /// as endpoint URLs are).
    pub fn new(
        store: Arc<dyn Store>,
        targets: &[OperatorTarget],
        webhook_urls: Vec<String>,
        wake: impl Fn() + Send + Sync + 'static,
    ) -> Self {
        OperatorEvents {
            store,
            amqp: targets
                .iter()
                .filter_map(|target| match target {
                    OperatorTarget::Amqp { url, exchange } => Some(AmqpTarget {
                        url: url.clone(),
                        exchange: exchange.clone(),
                        channel: None,
                    }),
                    OperatorTarget::Webhook { .. } => None,
                })
                .collect(),
            webhooks: webhook_urls,
            wake: Box::new(wake),
        }
    }

    /// Makes the https targets the operator user's endpoints (trying again
    /// every second while the store does not answer), then sends the
    /// outbox on until `shutdown`.
    pub async fn run(mut self, shutdown: CancellationToken) {
        while let Err(error) = sync_webhook_targets(&*self.store, &self.webhooks).await {
            tracing::warn!(%error, "cannot set up the https operator event targets; trying again");
            tokio::select! {
                () = tokio::time::sleep(IDLE) => {}
                () = shutdown.cancelled() => return,
            }
        }
        let mut next_scan = tokio::time::Instant::now();
        loop {
            if tokio::time::Instant::now() >= next_scan {
                next_scan += CERTIFICATE_SCAN;
                if let Err(error) = self.look_at_certificates().await {
                    tracing::warn!(%error, "cannot look at client certificates; trying again in an hour");
                }
            }
            if let Err(error) = self.send_this_second().await {
                telemetry::operator_event_failed(error.target());
                tracing::warn!(%error, "operator events wait in the outbox; trying again");
            }
            tokio::select! {
                () = tokio::time::sleep(IDLE) => {}
                () = shutdown.cancelled() => return,
            }
        }
    }

    /// Sends the outbox on for up to [`SENDING`], if no other process
    /// does this second: processes sharing a store take turns (a window
    /// of one sender per second, [`Store::take_in_window`]), so an event
    /// is sent twice only after a fault, not once per process.
    async fn send_this_second(&mut self) -> Result<(), SendError> {
        let now_ms = self.store.now_ms();
        let window_ms = i64::try_from(IDLE.as_millis()).unwrap_or(1000);
        if !self
            .store
            .take_in_window("operator:sender", window_ms, now_ms, 1)
            .await?
        {
            return Ok(());
        }
        let started = tokio::time::Instant::now();
        while self.send_on().await? >= BATCH && started.elapsed() < SENDING {}
        Ok(())
    }

    /// One round: up to [`BATCH`] records to every target, then out of the
    /// outbox. How many there were.
    async fn send_on(&mut self) -> Result<usize, SendError> {
        let entries = self.store.operator_events(BATCH).await?;
        if entries.is_empty() {
            return Ok(0);
        }
        let mut events = Vec::with_capacity(entries.len());
        let mut unreadable: Vec<OutboxEntry> = Vec::new();
        for entry in &entries {
            if let Some(event) = OperatorEvent::from_record(&entry.record) {
                events.push(event);
            } else {
                tracing::error!(record = %entry.record, "an operator event record does not parse; dropped");
                unreadable.push(entry.clone());
            }
        }
        self.store.remove_operator_events(&unreadable).await?;
        if !self.webhooks.is_empty() {
            self.deliver(&events).await.map_err(SendError::Webhook)?;
        }
        for target in &mut self.amqp {
            target.publish(&events).await?;
        }
        let sent: Vec<OutboxEntry> = entries
            .into_iter()
            .filter(|entry| !unreadable.contains(entry))
            .collect();
        self.store.remove_operator_events(&sent).await?;
        for event in &events {
            telemetry::operator_event_sent(&event.kind);
            tracing::info!(id = %event.id, r#type = %event.kind, "operator event sent on");
        }
        Ok(sent.len() + unreadable.len())
    }

    /// Accepts `events` as the operator user's: its endpoints (the https
    /// targets) get them as deliveries.
    async fn deliver(&self, events: &[OperatorEvent]) -> Result<(), StoreError> {
        let as_events: Vec<Event> = events
            .iter()
            .filter_map(|event| {
                Some(Event {
                    event_id: event.id.clone(),
                    event_type: EventType::new(&event.kind).ok()?,
                    username: OPERATOR_USERNAME.to_owned(),
                    timestamp: event.timestamp,
                    data: event.data.to_string(),
                    trace: None,
                    ordering_key: None,
                })
            })
            .collect();
        self.store
            .accept_events(&as_events, self.store.now_ms())
            .await?;
        (self.wake)();
        Ok(())
    }

    /// Records `certificate.expiring` for every endpoint whose client
    /// certificate expires within [`CERTIFICATE_NOTICE_DAYS`] (or has
    /// expired), once a day per endpoint across every process.
    async fn look_at_certificates(&self) -> Result<(), StoreError> {
        let now_ms = self.store.now_ms();
        let notice = now_ms.div_euclid(1000) + CERTIFICATE_NOTICE_DAYS * 86_400;
        let mut records = Vec::new();
        for user in self.store.list_users().await? {
            for endpoint in self.store.list_endpoints(&user.username).await? {
                let Some(expires_at) = DeliveryOptions::from_stored(endpoint.options.as_deref())
                    .ok()
                    .and_then(|options| options.client_cert)
                    .and_then(|cert| webhookd_core::delivery_options::tls::expires_at(&cert).ok())
                else {
                    continue;
                };
                if expires_at > notice
                    || !self
                        .store
                        .take_in_window(
                            &format!("operator:certificate:{}", endpoint.endpoint_id),
                            DAY_MS,
                            now_ms,
                            1,
                        )
                        .await?
                {
                    continue;
                }
                let event = OperatorEvent::new(
                    format!(
                        "op_cert_{}_{}",
                        endpoint.endpoint_id,
                        now_ms.div_euclid(DAY_MS)
                    ),
                    OperatorEventKind::CertificateExpiring,
                    now_ms.div_euclid(1000),
                    json!({"endpoint_id": endpoint.endpoint_id, "username": endpoint.username,
                           "url": endpoint.url, "client_cert_expires_at": expires_at}),
                );
                records.push(event.to_record());
            }
        }
        self.store.add_operator_events(&records).await
    }
}

impl AmqpTarget {
    /// Publishes `events` and waits for the broker's confirms; a failure
    /// closes the channel, to be opened again next round.
    async fn publish(&mut self, events: &[OperatorEvent]) -> Result<(), SendError> {
        let result = self.publish_on_channel(events).await;
        if result.is_err() {
            self.channel = None;
        }
        result
    }

    async fn publish_on_channel(&mut self, events: &[OperatorEvent]) -> Result<(), SendError> {
        if self.channel.is_none() {
            let connection =
                Connection::connect(&self.url, ConnectionProperties::default()).await?;
            let channel = connection.create_channel().await?;
            channel
                .confirm_select(ConfirmSelectOptions::default())
                .await?;
            channel
                .exchange_declare(
                    self.exchange.as_str().into(),
                    ExchangeKind::Topic,
                    ExchangeDeclareOptions {
                        durable: true,
                        ..ExchangeDeclareOptions::default()
                    },
                    FieldTable::default(),
                )
                .await?;
            self.channel = Some((connection, channel));
        }
        let Some((_, channel)) = &self.channel else {
            return Ok(());
        };
        let mut confirms = Vec::with_capacity(events.len());
        for event in events {
            let properties = BasicProperties::default()
                .with_delivery_mode(2)
                .with_content_type("application/json".into())
                .with_message_id(event.id.as_str().into())
                .with_timestamp(u64::try_from(event.timestamp).unwrap_or_default());
            confirms.push(
                channel
                    .basic_publish(
                        self.exchange.as_str().into(),
                        event.kind.as_str().into(),
                        BasicPublishOptions::default(),
                        event.published().as_bytes(),
                        properties,
                    )
                    .await?,
            );
        }
        for confirm in confirms {
            if confirm.await?.is_nack() {
                return Err(SendError::Refused {
                    exchange: self.exchange.clone(),
                });
            }
        }
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
enum SendError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("accepting them for the https targets: {0}")]
    Webhook(StoreError),
    #[error("RabbitMQ: {0}")]
    Broker(#[from] lapin::Error),
    #[error("RabbitMQ refused an operator event on exchange {exchange:?}")]
    Refused { exchange: String },
}

impl SendError {
    /// What failed, for `webhookd_operator_event_send_failures_total`.
    fn target(&self) -> &'static str {
        match self {
            SendError::Store(_) => "store",
            SendError::Webhook(_) => "webhook",
            SendError::Broker(_) | SendError::Refused { .. } => "amqp",
        }
    }
}
