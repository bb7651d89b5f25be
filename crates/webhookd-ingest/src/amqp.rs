//! The RabbitMQ consumer.
//!
//! One supervised session at a time: connect, declare `<queue>` and
//! `<queue>.dead` (durable), consume with manual acks and a bounded
//! prefetch, and handle messages in batches:
//!
//! 1. invalid messages are published to `<queue>.dead` with the reason in
//!    header `x-webhookd-error`, and the publish is confirmed by the broker;
//! 2. valid events are accepted by the store — retried for as long as it is
//!    unreachable, never skipped. Deliveries the dispatcher can send at once
//!    are not written (deliver before writing, docs/delivery.md): the
//!    message, unacknowledged, is their record;
//! 3. a message is acknowledged once the store has answered for each of its
//!    deliveries: at acceptance, or when the unwritten ones are recorded
//!    (see `acks`). One whose deliveries are not answered for by the end of
//!    their lease is handed back to the queue; its redelivery takes the
//!    event over. An event another consumer holds that way waits, parked,
//!    and is offered again.
//!
//! Anything going wrong with the broker ends the session; the supervisor
//! reconnects with capped, jittered exponential backoff, forever, logging
//! each try. lapin's own auto-recovery stays off: a fresh connection and
//! channel per session is simpler to reason about, and unacked messages
//! are redelivered by the broker (and de-duplicated by the store).

use std::time::{Duration, Instant};

use backon::{BackoffBuilder, ExponentialBuilder};
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions, BasicRejectOptions,
    ConfirmSelectOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};
use tokio::sync::mpsc;
use tokio_stream::StreamExt as _;
use tokio_util::sync::CancellationToken;
use webhookd_core::config::QueueType;
use webhookd_core::health::Readiness;
use webhookd_core::telemetry::{self, Source};
use webhookd_core::time::unix_millis;
use webhookd_core::{Event, MissingId, Rejection};
use webhookd_store::Acceptance;

use crate::acks::{AckPlan, Acks};
use crate::{Ingest, Unacknowledged};

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
/// How often waiting messages are looked at: overdue ones handed back,
/// parked ones offered again.
const HOUSEKEEPING_INTERVAL: Duration = Duration::from_millis(250);
/// A message waits this long past its deliveries' lease before it is
/// handed back: their records may be on their way.
const GIVE_UP_MARGIN: Duration = Duration::from_secs(5);
/// A parked event is offered again at least this often: its holder's
/// records usually end the hold long before its lease does.
const PARKED_RETRY: Duration = Duration::from_secs(1);

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
        // With it, deliveries go out before they are written.
        let mut settled = self.ingest.take_settled();
        while !shutdown.is_cancelled() {
            let started = tokio::time::Instant::now();
            let result = self.session(&shutdown, settled.as_mut()).await;
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
    async fn session(
        &self,
        shutdown: &CancellationToken,
        mut settled: Option<&mut mpsc::UnboundedReceiver<String>>,
    ) -> Result<(), SessionError> {
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
        let mut housekeeping = tokio::time::interval(HOUSEKEEPING_INTERVAL);
        // Ids of deliveries sent on an earlier channel mean nothing here.
        if let Some(settled) = settled.as_deref_mut() {
            while settled.try_recv().is_ok() {}
        }
        let mut waiting = Waiting {
            unwritten: settled.is_some(),
            ..Waiting::default()
        };
        let result = loop {
            let step = tokio::select! {
                biased;
                () = shutdown.cancelled() => break Ok(()),
                Some(first) = next_settled(settled.as_deref_mut()) => {
                    waiting.acks.settled(&first);
                    if let Some(settled) = settled.as_deref_mut() {
                        while let Ok(delivery_id) = settled.try_recv() {
                            waiting.acks.settled(&delivery_id);
                        }
                    }
                    Ok(())
                }
                batch = batches.next() => match batch {
                    Some(batch) => self.handle_batch(&channel, batch, &mut waiting, shutdown).await,
                    None => Err(SessionError::ConsumerEnded),
                },
                _ = housekeeping.tick() => self.look_after(&channel, &mut waiting, shutdown).await,
                _ = depth_ticks.tick() => self.report_queue_depth(&channel).await,
            };
            if let Err(error) = step {
                break Err(error);
            }
            if let Err(error) = send_acks(&channel, waiting.acks.plan(Instant::now())).await {
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

    /// Dead-letters the invalid and offers the valid to the store; what may
    /// be acknowledged goes to `waiting.acks`.
    async fn handle_batch(
        &self,
        channel: &Channel,
        batch: Vec<Result<lapin::message::Delivery, lapin::Error>>,
        waiting: &mut Waiting,
        shutdown: &CancellationToken,
    ) -> Result<(), SessionError> {
        let mut tags = Vec::with_capacity(batch.len());
        let mut events = Vec::with_capacity(batch.len());
        for message in batch {
            let message = message?;
            // A redelivered message must keep the id it got the first time.
            let missing_id = MissingId::Derived {
                message_id: message
                    .properties
                    .message_id()
                    .as_ref()
                    .map(ShortString::as_str),
            };
            match Ingest::parse(&message.data, Source::Amqp, missing_id) {
                Ok(event) => {
                    tags.push(message.delivery_tag);
                    events.push(event);
                }
                Err(rejection) => {
                    self.dead_letter(channel, &message, &rejection).await?;
                    waiting.acks.done(message.delivery_tag);
                }
            }
        }
        self.offer(tags, events, waiting, shutdown).await;
        Ok(())
    }

    /// Has the store accept the events of the messages `tags`, retrying
    /// while it is unreachable; on shutdown first, leaves them unacked.
    async fn offer(
        &self,
        tags: Vec<u64>,
        events: Vec<Event>,
        waiting: &mut Waiting,
        shutdown: &CancellationToken,
    ) {
        if events.is_empty() {
            return;
        }
        // Once half the prefetch window is held for deliveries, a batch's
        // deliveries are written at once and its messages acknowledged, so
        // slow endpoints, however many, cannot stall the queue.
        let send_unwritten =
            waiting.unwritten && waiting.acks.held() < usize::from(self.settings.prefetch) / 2;
        let Some(accepted) = self.until_accepted(&events, send_unwritten, shutdown).await else {
            return;
        };
        let lease_left = accepted.lease_until_ms.saturating_sub(unix_millis());
        let give_up_at = Instant::now()
            + Duration::from_millis(u64::try_from(lease_left).unwrap_or_default())
            + GIVE_UP_MARGIN;
        let outcomes = accepted.outcomes.into_iter();
        for ((tag, event), (outcome, unwritten)) in tags.into_iter().zip(events).zip(outcomes) {
            match outcome {
                Acceptance::HeldElsewhere { until_ms } => {
                    let wait = until_ms.saturating_sub(unix_millis());
                    let wait = Duration::from_millis(u64::try_from(wait).unwrap_or_default());
                    waiting.acks.park(tag);
                    waiting.parked.push(Parked {
                        tag,
                        event,
                        offer_at: Instant::now() + wait.min(PARKED_RETRY),
                    });
                }
                _ => waiting.acks.wait(tag, unwritten, give_up_at),
            }
        }
    }

    /// Hands back to the queue the messages whose deliveries' lease is
    /// over, and offers the parked ones again when their time comes.
    async fn look_after(
        &self,
        channel: &Channel,
        waiting: &mut Waiting,
        shutdown: &CancellationToken,
    ) -> Result<(), SessionError> {
        let now = Instant::now();
        for tag in waiting.acks.overdue(now) {
            tracing::warn!(
                delivery_tag = tag,
                "deliveries of a message were not recorded within their lease; handing it back to the queue"
            );
            channel
                .basic_reject(tag, BasicRejectOptions { requeue: true })
                .await?;
        }
        let (due, later): (Vec<Parked>, Vec<Parked>) = std::mem::take(&mut waiting.parked)
            .into_iter()
            .partition(|parked| parked.offer_at <= now);
        waiting.parked = later;
        let (tags, events): (Vec<u64>, Vec<Event>) = due
            .into_iter()
            .map(|parked| {
                waiting.acks.unpark(parked.tag);
                (parked.tag, parked.event)
            })
            .unzip();
        self.offer(tags, events, waiting, shutdown).await;
        Ok(())
    }

    /// Offers `events` until the store answers; `None` if shutdown came
    /// first.
    async fn until_accepted(
        &self,
        events: &[Event],
        send_unwritten: bool,
        shutdown: &CancellationToken,
    ) -> Option<Unacknowledged> {
        let mut delays = ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(50))
            .with_max_delay(Duration::from_secs(5))
            .with_jitter()
            .without_max_times()
            .build();
        loop {
            let accepted = self
                .ingest
                .accept_unacknowledged(events, Source::Amqp, send_unwritten)
                .await;
            match accepted {
                Ok(accepted) => return Some(accepted),
                Err(error) => {
                    let delay = delays.next().unwrap_or(Duration::from_secs(5));
                    tracing::warn!(%error, events = events.len(), retry_in_ms = delay.as_millis(), "store unavailable; holding the batch unacknowledged");
                    tokio::select! {
                        () = tokio::time::sleep(delay) => {}
                        () = shutdown.cancelled() => return None,
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

/// One channel's messages not yet acknowledged.
#[derive(Debug, Default)]
struct Waiting {
    /// Whether deliveries go out before they are written.
    unwritten: bool,
    acks: Acks,
    /// Events another consumer holds, to offer again.
    parked: Vec<Parked>,
}

#[derive(Debug)]
struct Parked {
    tag: u64,
    event: Event,
    offer_at: Instant,
}

async fn send_acks(channel: &Channel, plan: AckPlan) -> Result<(), SessionError> {
    if let Some(tag) = plan.up_to {
        channel
            .basic_ack(tag, BasicAckOptions { multiple: true })
            .await?;
    }
    for tag in plan.single {
        channel.basic_ack(tag, BasicAckOptions::default()).await?;
    }
    Ok(())
}

/// The next settled delivery id; never, without a receiver.
async fn next_settled(settled: Option<&mut mpsc::UnboundedReceiver<String>>) -> Option<String> {
    match settled {
        Some(settled) => settled.recv().await,
        None => std::future::pending().await,
    }
}

/// Properties producers should publish with: persistent, JSON.
pub fn persistent_json() -> BasicProperties {
    BasicProperties::default()
        .with_delivery_mode(2)
        .with_content_type("application/json".into())
}
