//! The RabbitMQ consumer.
//!
//! One supervised session at a time: connect, declare `<queue>` and
//! `<queue>.dead` (durable), consume with manual acks and a bounded
//! prefetch, and handle messages in batches:
//!
//! 1. invalid messages are published to `<queue>.dead` with the reason in
//!    header `x-webhookd-error`, and the publish is confirmed by the broker;
//! 2. valid events are accepted by the store — retried for as long as it is
//!    unreachable, never skipped; one the store refuses for another reason
//!    (its answer would not change) is dead-lettered with that reason after
//!    a few tries, alone, so it cannot block the queue;
//! 3. the batch is acknowledged with one `multiple` ack once every message
//!    in it is durable: accepted (its deliveries written in the store) or
//!    dead-lettered. Batches are handled one after the other, so every
//!    message below the batch is acknowledged already. On shutdown before
//!    the store answered, only the dead-lettered messages are acknowledged
//!    (one by one); the others go back to the queue.
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
use webhookd_core::operator::{OperatorEvent, OperatorEventKind};
use webhookd_core::telemetry::{self, Source};
use webhookd_core::trace::TraceContext;
use webhookd_core::{Event, MissingId};
use webhookd_store::{Acceptance, StoreError};

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
/// Tries an event the store refuses (not "unavailable": an answer that
/// will not change, such as a script error or unreadable data) gets before
/// its message is dead-lettered with the store's reason.
const REFUSALS_BEFORE_DEAD_LETTER: u32 = 5;

/// Where and how to consume.
#[derive(Debug, Clone)]
pub struct AmqpSettings {
    pub url: String,
    pub queue: String,
    /// Declared for the queue and its `.dead` queue (SPEC §10).
    pub queue_type: QueueType,
    /// A quorum queue's `x-delivery-limit`: a message handed out this many
    /// times without an ack (a poison message that crashes its consumer)
    /// goes to `.dead` instead of back to the queue.
    pub delivery_limit: u32,
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

    /// The arguments the main queue is declared with.
    pub fn main_queue_arguments(&self) -> FieldTable {
        self.queue_arguments(Some(&self.dead_letter_queue()))
    }

    /// `x-queue-type` for a quorum queue and, for the main queue
    /// (`dead_letters_to` given), its delivery limit with where a message
    /// past it goes. A classic queue is declared with no arguments, exactly
    /// as before the setting existed, so upgrading never trips RabbitMQ's
    /// check that a redeclare matches.
    ///
    /// A producer that declares the queue too must declare it with exactly
    /// these (or passively): RabbitMQ refuses a redeclare whose arguments
    /// differ.
    pub fn queue_arguments(&self, dead_letters_to: Option<&str>) -> FieldTable {
        let mut arguments = FieldTable::default();
        if self.queue_type != QueueType::Quorum {
            return arguments;
        }
        arguments.insert(
            ShortString::from("x-queue-type"),
            AMQPValue::LongString(LongString::from(QueueType::Quorum.as_str())),
        );
        if let Some(dead) = dead_letters_to {
            arguments.insert(
                ShortString::from("x-delivery-limit"),
                AMQPValue::LongUInt(self.delivery_limit),
            );
            arguments.insert(
                ShortString::from("x-dead-letter-exchange"),
                AMQPValue::LongString(LongString::from("")),
            );
            arguments.insert(
                ShortString::from("x-dead-letter-routing-key"),
                AMQPValue::LongString(LongString::from(dead)),
            );
        }
        arguments
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
    #[error("shutting down")]
    ShuttingDown,
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
        let channel = self.declare_queues(&connection, channel).await?;
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
            let step = tokio::select! {
                biased;
                () = shutdown.cancelled() => break Ok(()),
                batch = batches.next() => match batch {
                    Some(batch) => self.handle_batch(&channel, batch, shutdown).await,
                    None => Err(SessionError::ConsumerEnded),
                },
                _ = depth_ticks.tick() => self.report_queue_depth(&channel).await,
            };
            match step {
                Ok(()) => {}
                Err(SessionError::ShuttingDown) => break Ok(()),
                Err(error) => break Err(error),
            }
        };
        // Closing hands every unacknowledged message back to the queue.
        let _ = connection.close(200, "webhookd is closing".into()).await;
        result
    }

    /// Declares `<queue>` and `<queue>.dead`, durable, of the configured
    /// type. A quorum queue an older webhookd declared without a delivery
    /// limit cannot be redeclared with one (RabbitMQ refuses a redeclare
    /// whose arguments differ, closing the channel): it is then used as it
    /// is, on a fresh channel, with a warning saying how to set the limit by
    /// policy. Returns the channel to consume on.
    async fn declare_queues(
        &self,
        connection: &Connection,
        channel: Channel,
    ) -> Result<Channel, SessionError> {
        let durable = QueueDeclareOptions {
            durable: true,
            ..QueueDeclareOptions::default()
        };
        let dead = self.settings.dead_letter_queue();
        channel
            .queue_declare(
                dead.as_str().into(),
                durable,
                self.settings.queue_arguments(None),
            )
            .await?;
        let limited = self.settings.main_queue_arguments();
        let declared = channel
            .queue_declare(self.settings.queue.as_str().into(), durable, limited)
            .await;
        match declared {
            Ok(_) => Ok(channel),
            Err(error) if self.settings.queue_type == QueueType::Quorum => {
                tracing::warn!(
                    %error,
                    queue = %self.settings.queue,
                    "the quorum queue exists without webhookd's delivery limit; using it as it is: \
                     set the limit by policy (docs/operations.md, \"Quorum queues\")"
                );
                let channel = connection.create_channel().await?;
                channel
                    .confirm_select(ConfirmSelectOptions::default())
                    .await?;
                channel
                    .basic_qos(self.settings.prefetch, BasicQosOptions::default())
                    .await?;
                let passive = QueueDeclareOptions {
                    passive: true,
                    ..durable
                };
                channel
                    .queue_declare(
                        self.settings.queue.as_str().into(),
                        passive,
                        FieldTable::default(),
                    )
                    .await?;
                Ok(channel)
            }
            Err(error) => Err(error.into()),
        }
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

    /// Dead-letters the invalid messages, has the store accept the valid
    /// ones, and acknowledges the batch once every message in it is durable
    /// (`ShuttingDown` if shutdown came first: then only the dead-lettered
    /// ones are acknowledged).
    async fn handle_batch(
        &self,
        channel: &Channel,
        batch: Vec<Result<lapin::message::Delivery, lapin::Error>>,
        shutdown: &CancellationToken,
    ) -> Result<(), SessionError> {
        let mut valid = Vec::with_capacity(batch.len());
        let mut events = Vec::with_capacity(batch.len());
        let mut dead_lettered = Vec::new();
        let mut last_tag = None;
        for message in batch {
            let message = message?;
            last_tag = Some(message.delivery_tag);
            if let Some(count) = redeliveries(&message)
                && count >= self.settings.delivery_limit
            {
                // A queue declared without the limit (by an older webhookd,
                // or a producer) leaves it to webhookd.
                let reason = format!(
                    "redelivered {count} times without an acknowledgement (amqp_delivery_limit {})",
                    self.settings.delivery_limit
                );
                self.dead_letter(channel, &message, &reason).await?;
                dead_lettered.push(message.delivery_tag);
                continue;
            }
            // A redelivered message must keep the id it got the first time.
            let missing_id = MissingId::Derived {
                message_id: message
                    .properties
                    .message_id()
                    .as_ref()
                    .map(ShortString::as_str),
            };
            match self.ingest.parse(&message.data, Source::Amqp, missing_id) {
                Ok(event) => {
                    let trace = TraceContext::from_headers(
                        text_header(&message, "traceparent"),
                        text_header(&message, "tracestate"),
                    );
                    valid.push(message);
                    events.push(event.with_trace(trace));
                }
                Err(rejection) => {
                    let reason = format!("{}: {rejection}", rejection.code());
                    self.dead_letter(channel, &message, &reason).await?;
                    dead_lettered.push(message.delivery_tag);
                }
            }
        }
        let Some(last_tag) = last_tag else {
            return Ok(());
        };
        if let Err(error) = self
            .accept_all(channel, &valid, &events, &mut dead_lettered, shutdown)
            .await
        {
            if matches!(error, SessionError::ShuttingDown) {
                // What is in `.dead` must not be dead-lettered again; the
                // rest stays unacknowledged and goes back to the queue.
                for tag in dead_lettered {
                    channel.basic_ack(tag, BasicAckOptions::default()).await?;
                }
            }
            return Err(error);
        }
        channel
            .basic_ack(last_tag, BasicAckOptions { multiple: true })
            .await?;
        Ok(())
    }

    /// Has the store accept `events` (of the messages `valid`), retrying
    /// while it is unreachable. A batch the store refuses otherwise is
    /// offered event by event, and an event it keeps refusing is
    /// dead-lettered with the store's reason (its tag joins
    /// `dead_lettered`).
    async fn accept_all(
        &self,
        channel: &Channel,
        valid: &[lapin::message::Delivery],
        events: &[Event],
        dead_lettered: &mut Vec<u64>,
        shutdown: &CancellationToken,
    ) -> Result<(), SessionError> {
        if events.is_empty() {
            return Ok(());
        }
        let most_refusals = if events.len() == 1 {
            REFUSALS_BEFORE_DEAD_LETTER
        } else {
            1
        };
        let refused = match self.until_accepted(events, most_refusals, shutdown).await? {
            Ok(outcomes) => {
                return self
                    .dead_letter_over_quota(channel, valid, &outcomes, dead_lettered)
                    .await;
            }
            Err(refused) => refused,
        };
        if events.len() > 1 {
            // One of them, or the batch as a whole: find out alone.
            for (message, event) in valid.iter().zip(events) {
                let one = std::slice::from_ref(event);
                match self
                    .until_accepted(one, REFUSALS_BEFORE_DEAD_LETTER, shutdown)
                    .await?
                {
                    Ok(outcomes) => {
                        let message = std::slice::from_ref(message);
                        self.dead_letter_over_quota(channel, message, &outcomes, dead_lettered)
                            .await?;
                    }
                    Err(refused) => {
                        self.dead_letter_refused(channel, message, event, &refused)
                            .await?;
                        dead_lettered.push(message.delivery_tag);
                    }
                }
            }
            return Ok(());
        }
        if let (Some(message), Some(event)) = (valid.first(), events.first()) {
            self.dead_letter_refused(channel, message, event, &refused)
                .await?;
            dead_lettered.push(message.delivery_tag);
        }
        Ok(())
    }

    /// Dead-letters, with reason `quota`, the messages of the events
    /// their owner's `max_events_per_day` refused (SPEC §11): the store
    /// wrote nothing of them, and the producer must learn it.
    async fn dead_letter_over_quota(
        &self,
        channel: &Channel,
        messages: &[lapin::message::Delivery],
        outcomes: &[Acceptance],
        dead_lettered: &mut Vec<u64>,
    ) -> Result<(), SessionError> {
        for (message, outcome) in messages.iter().zip(outcomes) {
            if let Acceptance::OverDailyQuota { per_day } = outcome {
                let reason = format!("quota: {}", crate::over_daily_quota_message(*per_day));
                self.dead_letter(channel, message, &reason).await?;
                dead_lettered.push(message.delivery_tag);
            }
        }
        Ok(())
    }

    async fn dead_letter_refused(
        &self,
        channel: &Channel,
        message: &lapin::message::Delivery,
        event: &Event,
        refused: &StoreError,
    ) -> Result<(), SessionError> {
        tracing::error!(event_id = %event.event_id, error = %refused, "the store keeps refusing an event; dead-lettering its message");
        telemetry::event_rejected(Source::Amqp, "store_refused");
        let reason = format!("store_refused: {refused}");
        self.dead_letter(channel, message, &reason).await
    }

    /// Offers `events` until the store accepts them (`Ok(Ok)`, with their
    /// outcomes), or has
    /// refused them `most_refusals` times with an error retrying will not
    /// fix (`Ok(Err)`); waits out an unavailable store for as long as it
    /// takes. `ShuttingDown` if shutdown came first.
    async fn until_accepted(
        &self,
        events: &[Event],
        most_refusals: u32,
        shutdown: &CancellationToken,
    ) -> Result<Result<Vec<Acceptance>, StoreError>, SessionError> {
        let mut delays = ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(50))
            .with_max_delay(Duration::from_secs(5))
            .with_jitter()
            .without_max_times()
            .build();
        let mut refusals = 0;
        loop {
            let error = match self.ingest.accept(events, Source::Amqp).await {
                Ok(outcomes) => return Ok(Ok(outcomes)),
                Err(error) => error,
            };
            if !error.is_unavailable() {
                refusals += 1;
                if refusals >= most_refusals {
                    return Ok(Err(error));
                }
            }
            let delay = delays.next().unwrap_or(Duration::from_secs(5));
            tracing::warn!(%error, events = events.len(), retry_in_ms = delay.as_millis(), "store did not accept the batch; holding it unacknowledged");
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                () = shutdown.cancelled() => return Err(SessionError::ShuttingDown),
            }
        }
    }

    async fn dead_letter(
        &self,
        channel: &Channel,
        message: &lapin::message::Delivery,
        reason: &str,
    ) -> Result<(), SessionError> {
        tracing::warn!(reason = %reason, bytes = message.data.len(), "invalid event message moved to the dead-letter queue");
        let mut headers = message.properties.headers().clone().unwrap_or_default();
        headers.insert(
            ShortString::from(ERROR_HEADER),
            AMQPValue::LongString(LongString::from(reason.to_owned())),
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
        // Before the ack: a crash now redelivers the message, which is
        // dead-lettered (and told) again under the same id.
        self.ingest
            .tell_operator(dead_lettered(
                message,
                reason,
                &self.settings.dead_letter_queue(),
            ))
            .await;
        Ok(())
    }
}

/// The `ingest.dead_lettered` operator event of `message` (SPEC §15): its
/// id the same for a redelivery of the same message and reason.
fn dead_lettered(message: &lapin::message::Delivery, reason: &str, queue: &str) -> OperatorEvent {
    let mut identity = message.data.clone();
    identity.extend_from_slice(reason.as_bytes());
    let digest = webhookd_core::ids::derived_event_id(&identity);
    OperatorEvent::new(
        format!("op_dlq_{}", digest.trim_start_matches("evt_")),
        OperatorEventKind::IngestDeadLettered,
        webhookd_core::time::unix_seconds(),
        serde_json::json!({
            "queue": queue,
            "reason": reason,
            "code": reason.split(':').next().unwrap_or(reason),
            "message_id": message.properties.message_id().as_ref().map(ShortString::as_str),
            "bytes": message.data.len(),
        }),
    )
}

/// A header of `message` that holds text (`traceparent`, say).
fn text_header<'a>(message: &'a lapin::message::Delivery, name: &str) -> Option<&'a str> {
    match message.properties.headers().as_ref()?.inner().get(name)? {
        AMQPValue::LongString(text) => std::str::from_utf8(text.as_bytes()).ok(),
        AMQPValue::ShortString(text) => Some(text.as_str()),
        _ => None,
    }
}

/// How often a quorum queue handed this message out before without an ack
/// (its `x-delivery-count` header); `None` on a classic queue.
fn redeliveries(message: &lapin::message::Delivery) -> Option<u32> {
    let headers = message.properties.headers().as_ref()?;
    let count = headers.inner().get("x-delivery-count")?;
    let count = match count {
        AMQPValue::LongLongInt(n) => *n,
        AMQPValue::LongInt(n) => i64::from(*n),
        AMQPValue::LongUInt(n) => i64::from(*n),
        AMQPValue::ShortInt(n) => i64::from(*n),
        AMQPValue::ShortUInt(n) => i64::from(*n),
        AMQPValue::ShortShortInt(n) => i64::from(*n),
        AMQPValue::ShortShortUInt(n) => i64::from(*n),
        AMQPValue::Timestamp(n) => i64::try_from(*n).unwrap_or(i64::MAX),
        _ => return None,
    };
    Some(u32::try_from(count).unwrap_or(if count < 0 { 0 } else { u32::MAX }))
}

/// Properties producers should publish with: persistent, JSON.
pub fn persistent_json() -> BasicProperties {
    BasicProperties::default()
        .with_delivery_mode(2)
        .with_content_type("application/json".into())
}
