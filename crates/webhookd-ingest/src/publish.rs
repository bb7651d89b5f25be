//! Publishing events as a producer does (SPEC §5): persistent JSON messages
//! on the default exchange, routed by the queue's name, each confirmed by
//! the broker. `webhookd events publish` is built on it, so the README's
//! production steps have a line to paste.

use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};

use lapin::{BasicProperties, Confirmation, Connection, ConnectionProperties};
use webhookd_core::config::redact_url;

/// Why messages could not be published; each says what to do.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("cannot reach RabbitMQ at {url}: {source}")]
    Connect {
        url: String,
        #[source]
        source: lapin::Error,
    },
    #[error("RabbitMQ failed: {0}")]
    Broker(#[from] lapin::Error),
    #[error(
        "queue {queue:?} does not exist, so RabbitMQ returned the message: start `webhookd serve` \
         with WEBHOOKD_AMQP_URL set first (it declares the queue), or check WEBHOOKD_AMQP_QUEUE"
    )]
    NoQueue { queue: String },
    #[error("RabbitMQ refused message {number} (negative acknowledgement)")]
    Refused { number: usize },
}

/// Publishes each of `messages` to `queue` and waits for the broker to
/// confirm it: once this returns `Ok`, RabbitMQ holds them durably.
/// Mandatory publishing makes a missing queue an error, not a message
/// silently dropped.
pub async fn publish(url: &str, queue: &str, messages: &[Vec<u8>]) -> Result<(), PublishError> {
    let connection = Connection::connect(url, ConnectionProperties::default())
        .await
        .map_err(|source| PublishError::Connect {
            url: redact_url(url),
            source,
        })?;
    let channel = connection.create_channel().await?;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    let properties = BasicProperties::default()
        .with_delivery_mode(2)
        .with_content_type("application/json".into());
    let mut confirms = Vec::with_capacity(messages.len());
    for message in messages {
        let confirm = channel
            .basic_publish(
                "".into(),
                queue.into(),
                BasicPublishOptions {
                    mandatory: true,
                    ..BasicPublishOptions::default()
                },
                message,
                properties.clone(),
            )
            .await?;
        confirms.push(confirm);
    }
    let mut outcome = Ok(());
    for (index, confirm) in confirms.into_iter().enumerate() {
        match confirm.await? {
            Confirmation::Ack(None) | Confirmation::NotRequested => {}
            Confirmation::Ack(Some(_)) => {
                outcome = outcome.and(Err(PublishError::NoQueue {
                    queue: queue.to_owned(),
                }));
            }
            Confirmation::Nack(_) => {
                outcome = outcome.and(Err(PublishError::Refused { number: index + 1 }));
            }
        }
    }
    let _ = connection.close(200, "published".into()).await;
    outcome
}
