//! RabbitMQ as the scenarios use it: preload a queue the way a producer
//! would (persistent, publisher confirms), publish at a steady rate, and the
//! raw drain ceiling (one consumer, multi-acks).

use std::time::{Duration, Instant};

use anyhow::Context as _;
use futures_util::StreamExt as _;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};

/// The event message webhookd gets for event number `n` (SPEC §5), carrying
/// its publish time for the latency scenario.
pub fn event_message(n: u64, sent_at_us: u64) -> String {
    event_message_of("bench", n, sent_at_us)
}

/// [`event_message`] for another owner.
pub fn event_message_of(username: &str, n: u64, sent_at_us: u64) -> String {
    format!(
        r#"{{"event":"generated_video_success","username":"{username}","event_id":"evt_{n}","data":{{"n":{n},"sent_at_us":{sent_at_us}}}}}"#
    )
}

/// The owner of tenant `n` of a scenario with several.
pub fn tenant_name(n: u64) -> String {
    format!("bench-{n}")
}

/// A queue name no other run uses.
pub fn unique_queue(scenario: &str) -> String {
    format!("bench.{scenario}.{}", uuid::Uuid::now_v7().simple())
}

#[derive(Debug)]
pub struct Broker {
    connection: Connection,
}

impl Broker {
    pub async fn connect(url: &str) -> anyhow::Result<Broker> {
        let connection = Connection::connect(url, ConnectionProperties::default())
            .await
            .with_context(|| format!("connecting to RabbitMQ at {url}"))?;
        Ok(Broker { connection })
    }

    async fn channel_for(&self, queue: &str) -> anyhow::Result<Channel> {
        let channel = self.connection.create_channel().await?;
        channel
            .queue_declare(
                queue.into(),
                QueueDeclareOptions {
                    durable: true,
                    ..QueueDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await?;
        Ok(channel)
    }

    /// Publishes events `numbers` persistently with publisher confirms,
    /// keeping up to 1,000 unconfirmed. Returns messages per second.
    pub async fn preload(&self, queue: &str, numbers: std::ops::Range<u64>) -> anyhow::Result<f64> {
        self.preload_for(queue, numbers, 1).await
    }

    /// [`Broker::preload`] with the events spread over `tenants` owners,
    /// `bench` alone for one, else `bench-<n % tenants>`.
    pub async fn preload_for(
        &self,
        queue: &str,
        numbers: std::ops::Range<u64>,
        tenants: u64,
    ) -> anyhow::Result<f64> {
        let channel = self.channel_for(queue).await?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        let count = numbers.end - numbers.start;
        let started = Instant::now();
        let mut confirms = Vec::with_capacity(1000);
        for n in numbers {
            let message = if tenants <= 1 {
                event_message(n, crate::unix_micros())
            } else {
                event_message_of(&tenant_name(n % tenants), n, crate::unix_micros())
            };
            confirms.push(publish(&channel, queue, &message).await?);
            if confirms.len() == 1000 {
                for confirm in confirms.drain(..) {
                    anyhow::ensure!(confirm.await?.is_ack(), "the broker refused a message");
                }
            }
        }
        for confirm in confirms {
            anyhow::ensure!(confirm.await?.is_ack(), "the broker refused a message");
        }
        let _ = channel.close(200, "done".into()).await;
        Ok(per_second(count, started.elapsed()))
    }

    /// Publishes `rate` events per second for `duration`, each stamped with
    /// the moment it is published. Returns how many were published.
    pub async fn publish_steadily(
        &self,
        queue: &str,
        rate: u32,
        duration: Duration,
    ) -> anyhow::Result<u64> {
        self.publish_steadily_as(queue, rate, duration, |_| "bench".to_owned())
            .await
    }

    /// [`Broker::publish_steadily`], event `n` owned by `owner(n)`.
    pub async fn publish_steadily_as(
        &self,
        queue: &str,
        rate: u32,
        duration: Duration,
        owner: impl Fn(u64) -> String,
    ) -> anyhow::Result<u64> {
        let channel = self.channel_for(queue).await?;
        let total = u64::from(rate) * duration.as_secs();
        let period = Duration::from_secs(1) / rate;
        let mut ticks = tokio::time::interval(period);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        for n in 0..total {
            ticks.tick().await;
            // Not waiting for the confirm: the broker hands the message on
            // as soon as it routes it; the wait would only pace us.
            let message = event_message_of(&owner(n), n, crate::unix_micros());
            drop(publish(&channel, queue, &message).await?);
        }
        Ok(total)
    }

    /// The drain ceiling: one consumer, prefetch 1,000, acking every 100th
    /// message with `multiple`. Returns messages per second.
    pub async fn drain(&self, queue: &str, count: u64) -> anyhow::Result<f64> {
        let channel = self.channel_for(queue).await?;
        channel.basic_qos(1000, BasicQosOptions::default()).await?;
        let mut consumer = channel
            .basic_consume(
                queue.into(),
                "bench-drain".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await?;
        let started = Instant::now();
        let mut received = 0;
        while received < count {
            let delivery = consumer
                .next()
                .await
                .context("the consumer ended before the queue drained")??;
            received += 1;
            if received % 100 == 0 || received == count {
                delivery.ack(BasicAckOptions { multiple: true }).await?;
            }
        }
        let rate = per_second(count, started.elapsed());
        let _ = channel.close(200, "done".into()).await;
        Ok(rate)
    }

    pub async fn delete(&self, queues: &[&str]) {
        if let Ok(channel) = self.connection.create_channel().await {
            for queue in queues {
                let _ = channel
                    .queue_delete((*queue).into(), QueueDeleteOptions::default())
                    .await;
            }
        }
    }
}

/// Publishes event `n`, persistent, stamped with the moment it is sent.
async fn publish(
    channel: &Channel,
    queue: &str,
    message: &str,
) -> Result<lapin::PublisherConfirm, lapin::Error> {
    channel
        .basic_publish(
            "".into(),
            queue.into(),
            BasicPublishOptions::default(),
            message.as_bytes(),
            BasicProperties::default().with_delivery_mode(2),
        )
        .await
}

pub fn per_second(count: u64, elapsed: Duration) -> f64 {
    #[allow(clippy::cast_precision_loss)]
    let count = count as f64;
    count / elapsed.as_secs_f64().max(1e-9)
}
