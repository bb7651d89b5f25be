//! The RabbitMQ consumer.
//!
//! One supervised session at a time: connect, declare `<queue>` and
//! `<queue>.dead` (durable), consume with manual acks and a bounded
//! prefetch, and handle messages in batches:
//!
//! 1. invalid messages are published to `<queue>.dead` with the reason in
//!    header `x-webhookd-error`, and the publish is confirmed by the broker;
//! 2. valid events are made durable by [`Ingest::accept`] — retried for as
//!    long as the store is unreachable, never skipped;
//! 3. only then is the batch acknowledged with one `basic.ack(multiple)`
//!    for its last tag.
//!
//! Anything going wrong with the broker ends the session; the supervisor
//! reconnects with capped, jittered exponential backoff, forever, logging
//! each try. lapin's own auto-recovery stays off: a fresh connection and
//! channel per session is simpler to reason about, and unacked messages
//! are redelivered by the broker (and de-duplicated by the store).

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};
use tokio_stream::StreamExt as _;
use tokio_util::sync::CancellationToken;
use webhookd_core::config::QueueType;
use webhookd_core::health::Readiness;
use webhookd_core::telemetry::{self, Source};
use webhookd_core::{MissingId, Rejection};

use crate::Ingest;

/// Name of this component in `/readyz`.
pub const COMPONENT: &str = "amqp";
/// Header of a dead-lettered message that says why it was set aside.
pub const ERROR_HEADER: &str = "x-webhookd-error";
/// Header of a dead-lettered message whose body was cut to
/// [`DEAD_LETTER_KEEP`]: the size it had.
pub const TRUNCATED_HEADER: &str = "x-webhookd-original-bytes";
/// Most of an invalid message's body kept in the dead-letter queue. A
/// message far over the event limit is not copied whole (that would double
/// what it costs webhookd and the broker); its start is enough to find its
/// producer.
pub const DEAD_LETTER_KEEP: usize = 1024 * 1024;

/// How long a batch waits to fill up once its first message arrived.
const BATCH_LINGER: Duration = Duration::from_millis(5);
const MIN_RECONNECT_DELAY: Duration = Duration::from_millis(200);
const MAX_RECONNECT_DELAY: Duration = Duration::from_secs(30);
/// How often the queue depths are read for the metrics.
const QUEUE_DEPTH_INTERVAL: Duration = Duration::from_secs(15);
/// A session that lasted this long was healthy: the next failure starts the
/// backoff from the beginning again.
const HEALTHY_SESSION: Duration = Duration::from_secs(30);

/// Where and how to consume.
#[derive(Debug, Clone)]
pub struct AmqpSettings {
    pub url: String,
    pub queue: String,
    /// Declared for the queue and its `.dead` queue (SPEC §10).
    pub queue_type: QueueType,
    pub prefetch: u16,
    /// Asked of the broker; a silent link is noticed after about two
    /// missed heartbeats (whole seconds, at least one).
    pub heartbeat: Duration,
    /// How the connection shows in the RabbitMQ management UI and
    /// `rabbitmqctl list_connections`.
    pub connection_name: String,
}

impl AmqpSettings {
    pub fn dead_letter_queue(&self) -> String {
        format!("{}.dead", self.queue)
    }
}

/// Why a session ended.
#[derive(Debug, thiserror::Error)]
enum SessionError {
    #[error("RabbitMQ: {0}")]
    Broker(#[from] lapin::Error),
    #[error("the broker ended the consumer (queue deleted or connection closed)")]
    ConsumerEnded,
    #[error("the broker did not confirm the dead-lettered message")]
    DeadLetterNotConfirmed,
    #[error("the AMQP URL does not parse: {0}")]
    Url(String),
}

/// The supervised consumer.
#[derive(Debug)]
pub struct AmqpConsumer {
    settings: AmqpSettings,
    ingest: Ingest,
    readiness: Readiness,
}

impl AmqpConsumer {
    pub fn new(settings: AmqpSettings, ingest: Ingest, readiness: Readiness) -> Self {
        readiness.register(COMPONENT, "connecting to RabbitMQ");
        AmqpConsumer {
            settings,
            ingest,
            readiness,
        }
    }

    /// Consumes until `shutdown` is cancelled, reconnecting after every
    /// failure. Messages not yet durable when shutdown comes are left
    /// unacknowledged, so the broker hands them out again.
    pub async fn run(self, shutdown: CancellationToken) {
        let backoff = || {
            ExponentialBuilder::default()
                .with_min_delay(MIN_RECONNECT_DELAY)
                .with_max_delay(MAX_RECONNECT_DELAY)
                .with_jitter()
                .without_max_times()
                .build()
        };
        let mut delays = backoff();
        let mut attempt: u32 = 0;
        while !shutdown.is_cancelled() {
            let started = tokio::time::Instant::now();
            let result = self.session(&shutdown).await;
            if shutdown.is_cancelled() {
                break;
            }
            if started.elapsed() >= HEALTHY_SESSION {
                delays = backoff();
                attempt = 0;
            }
            attempt += 1;
            let reason = match result {
                Ok(()) => "session ended".to_owned(),
                Err(error) => error.to_string(),
            };
            // The reason goes to the log; /readyz only says what is down.
            self.readiness.set_not_ready(COMPONENT, "disconnected");
            telemetry::amqp_connected(false);
            let delay = delays.next().unwrap_or(MAX_RECONNECT_DELAY);
            tracing::warn!(attempt, retry_in_ms = delay.as_millis(), error = %reason, "RabbitMQ unavailable; reconnecting");
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                () = shutdown.cancelled() => break,
            }
        }
        self.readiness.set_not_ready(COMPONENT, "shutting down");
        telemetry::amqp_connected(false);
        tracing::info!("RabbitMQ consumer stopped");
    }

    /// One connection's life. Returns `Ok` only on shutdown.
    async fn session(&self, shutdown: &CancellationToken) -> Result<(), SessionError> {
        let properties = ConnectionProperties::default()
            .with_connection_name(self.settings.connection_name.clone().into());
        let mut uri: lapin::uri::AMQPUri = self.settings.url.parse().map_err(SessionError::Url)?;
        // Ours, whatever the URL says: the heartbeat, and a connection
        // timeout of three of them, so a broker that accepts TCP but never
        // answers (a frozen link) fails the attempt instead of hanging it.
        let heartbeat = self
            .settings
            .heartbeat
            .as_secs()
            .clamp(1, u64::from(u16::MAX));
        uri.query.heartbeat = Some(u16::try_from(heartbeat).unwrap_or(u16::MAX));
        uri.query.connection_timeout = Some(heartbeat * 3 * 1000);
        let connection = Connection::connect_uri(uri, properties).await?;
        let channel = connection.create_channel().await?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        channel
            .basic_qos(self.settings.prefetch, BasicQosOptions::default())
            .await?;
        for queue in [
            self.settings.queue.clone(),
            self.settings.dead_letter_queue(),
        ] {
            channel
                .queue_declare(
                    queue.into(),
                    QueueDeclareOptions {
                        durable: true,
                        ..QueueDeclareOptions::default()
                    },
                    self.queue_arguments(),
                )
                .await?;
        }
        let consumer = channel
            .basic_consume(
                self.settings.queue.clone().into(),
                "webhookd".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await?;
        self.readiness.set_ready(COMPONENT);
        telemetry::amqp_connected(true);
        tracing::info!(queue = %self.settings.queue, prefetch = self.settings.prefetch, "consuming from RabbitMQ");

        let batches = consumer.chunks_timeout(usize::from(self.settings.prefetch), BATCH_LINGER);
        tokio::pin!(batches);
        let mut depth_ticks = tokio::time::interval(QUEUE_DEPTH_INTERVAL);
        let result = loop {
            let batch = tokio::select! {
                biased;
                () = shutdown.cancelled() => break Ok(()),
                batch = batches.next() => batch,
                _ = depth_ticks.tick() => {
                    if let Err(error) = self.report_queue_depth(&channel).await {
                        break Err(error);
                    }
                    continue;
                }
            };
            let Some(batch) = batch else {
                break Err(SessionError::ConsumerEnded);
            };
            if let Err(error) = self.handle_batch(&channel, batch, shutdown).await {
                break Err(error);
            }
        };
        // Closing hands every unacknowledged message back to the queue.
        let _ = connection.close(200, "webhookd is closing".into()).await;
        result
    }

    /// `x-queue-type` for a quorum queue. A classic queue is declared with
    /// no arguments, exactly as before the setting existed, so upgrading
    /// never trips RabbitMQ's check that a redeclare matches.
    fn queue_arguments(&self) -> FieldTable {
        let mut arguments = FieldTable::default();
        if self.settings.queue_type == QueueType::Quorum {
            arguments.insert(
                ShortString::from("x-queue-type"),
                AMQPValue::LongString(LongString::from(QueueType::Quorum.as_str())),
            );
        }
        arguments
    }

    /// Publishes how many messages wait in the queue and its dead-letter
    /// queue (a passive declare only reads).
    async fn report_queue_depth(&self, channel: &Channel) -> Result<(), SessionError> {
        for (label, queue) in [
            ("main", self.settings.queue.clone()),
            ("dead", self.settings.dead_letter_queue()),
        ] {
            let declared = channel
                .queue_declare(
                    queue.into(),
                    QueueDeclareOptions {
                        passive: true,
                        ..QueueDeclareOptions::default()
                    },
                    FieldTable::default(),
                )
                .await?;
            telemetry::amqp_queue_messages(label, declared.message_count());
        }
        Ok(())
    }

    /// Dead-letters the invalid, persists the valid, then acks the lot.
    async fn handle_batch(
        &self,
        channel: &Channel,
        batch: Vec<Result<lapin::message::Delivery, lapin::Error>>,
        shutdown: &CancellationToken,
    ) -> Result<(), SessionError> {
        let mut last_tag = None;
        let mut events = Vec::with_capacity(batch.len());
        for message in batch {
            let message = message?;
            last_tag = Some(message.delivery_tag);
            // A redelivered message must keep the id it got the first time.
            let missing_id = MissingId::Derived {
                message_id: message
                    .properties
                    .message_id()
                    .as_ref()
                    .map(ShortString::as_str),
            };
            match Ingest::parse(&message.data, Source::Amqp, missing_id) {
                Ok(event) => events.push(event),
                Err(rejection) => self.dead_letter(channel, &message, &rejection).await?,
            }
        }
        if !events.is_empty() && !self.persist(&events, shutdown).await {
            // Shutting down before the batch was durable: leave it unacked.
            return Ok(());
        }
        if let Some(tag) = last_tag {
            channel
                .basic_ack(tag, BasicAckOptions { multiple: true })
                .await?;
        }
        Ok(())
    }

    /// Retries the store until the events are durable; `false` if shutdown
    /// came first.
    async fn persist(&self, events: &[webhookd_core::Event], shutdown: &CancellationToken) -> bool {
        let mut delays = ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(50))
            .with_max_delay(Duration::from_secs(5))
            .with_jitter()
            .without_max_times()
            .build();
        loop {
            match self.ingest.accept(events, Source::Amqp).await {
                Ok(_) => return true,
                Err(error) => {
                    let delay = delays.next().unwrap_or(Duration::from_secs(5));
                    tracing::warn!(%error, events = events.len(), retry_in_ms = delay.as_millis(), "store unavailable; holding the batch unacknowledged");
                    tokio::select! {
                        () = tokio::time::sleep(delay) => {}
                        () = shutdown.cancelled() => return false,
                    }
                }
            }
        }
    }

    async fn dead_letter(
        &self,
        channel: &Channel,
        message: &lapin::message::Delivery,
        rejection: &Rejection,
    ) -> Result<(), SessionError> {
        let reason = format!("{}: {rejection}", rejection.code());
        tracing::warn!(reason = %reason, bytes = message.data.len(), "invalid event message moved to the dead-letter queue");
        let mut headers = message.properties.headers().clone().unwrap_or_default();
        headers.insert(
            ShortString::from(ERROR_HEADER),
            AMQPValue::LongString(LongString::from(reason)),
        );
        let kept = if message.data.len() > DEAD_LETTER_KEEP {
            headers.insert(
                ShortString::from(TRUNCATED_HEADER),
                AMQPValue::LongString(LongString::from(message.data.len().to_string())),
            );
            &message.data[..DEAD_LETTER_KEEP]
        } else {
            &message.data[..]
        };
        let properties = message
            .properties
            .clone()
            .with_headers(headers)
            .with_delivery_mode(2);
        let confirmation = channel
            .basic_publish(
                "".into(),
                self.settings.dead_letter_queue().into(),
                BasicPublishOptions::default(),
                kept,
                properties,
            )
            .await?
            .await?;
        if confirmation.is_nack() {
            return Err(SessionError::DeadLetterNotConfirmed);
        }
        Ok(())
    }
}

/// Properties producers should publish with: persistent, JSON.
pub fn persistent_json() -> BasicProperties {
    BasicProperties::default()
        .with_delivery_mode(2)
        .with_content_type("application/json".into())
}
