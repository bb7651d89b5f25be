//! RabbitMQ helpers for tests: publish like a producer, read a queue back,
//! and cut a named connection the way an operator or a network would.

use std::process::Command;

use lapin::options::{
    BasicGetOptions, BasicPublishOptions, ConfirmSelectOptions, ExchangeDeclareOptions,
    ExchangeDeleteOptions, QueueBindOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Connection, ConnectionProperties};

/// A queue name no other test uses.
pub fn unique_queue(test: &str) -> String {
    format!("test.{test}.{}", uuid::Uuid::now_v7().simple())
}

async fn connect(url: &str) -> Connection {
    Connection::connect(url, ConnectionProperties::default())
        .await
        .expect("RabbitMQ connects")
}

/// Publishes `messages` persistently to `queue` (declared durable) through
/// the default exchange, waiting for every publisher confirm.
pub async fn publish<I>(url: &str, queue: &str, messages: I)
where
    I: IntoIterator,
    I::Item: AsRef<[u8]>,
{
    publish_with(url, queue, messages, BasicProperties::default()).await;
}

/// [`publish`] with these properties (made persistent).
pub async fn publish_with<I>(url: &str, queue: &str, messages: I, properties: BasicProperties)
where
    I: IntoIterator,
    I::Item: AsRef<[u8]>,
{
    publish_declared(url, queue, FieldTable::default(), messages, properties).await;
}

/// [`publish`] to a queue declared with `arguments` (a queue is
/// redeclared with the arguments it has, or not at all).
pub async fn publish_declared_with<I>(url: &str, queue: &str, arguments: FieldTable, messages: I)
where
    I: IntoIterator,
    I::Item: AsRef<[u8]>,
{
    publish_declared(url, queue, arguments, messages, BasicProperties::default()).await;
}

async fn publish_declared<I>(
    url: &str,
    queue: &str,
    arguments: FieldTable,
    messages: I,
    properties: BasicProperties,
) where
    I: IntoIterator,
    I::Item: AsRef<[u8]>,
{
    let connection = connect(url).await;
    let channel = connection.create_channel().await.expect("channel");
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .expect("confirm mode");
    channel
        .queue_declare(
            queue.into(),
            QueueDeclareOptions {
                durable: true,
                ..QueueDeclareOptions::default()
            },
            arguments,
        )
        .await
        .expect("queue declared");
    let properties = properties.with_delivery_mode(2);
    let mut confirms = Vec::new();
    for message in messages {
        let confirm = channel
            .basic_publish(
                "".into(),
                queue.into(),
                BasicPublishOptions::default(),
                message.as_ref(),
                properties.clone(),
            )
            .await
            .expect("published");
        confirms.push(confirm);
        // Bound the unconfirmed window so large loads do not pile up.
        if confirms.len() >= 1000 {
            for confirm in confirms.drain(..) {
                assert!(confirm.await.expect("confirmed").is_ack());
            }
        }
    }
    for confirm in confirms {
        assert!(confirm.await.expect("confirmed").is_ack());
    }
    let _ = connection.close(200, "done".into()).await;
}

/// A message read back from a queue.
#[derive(Debug)]
pub struct Received {
    pub body: Vec<u8>,
    /// String-valued headers.
    pub headers: Vec<(String, String)>,
    pub routing_key: String,
    pub message_id: Option<String>,
}

impl Received {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }
}

/// Takes (and acknowledges) every message currently in `queue`.
pub async fn take_all(url: &str, queue: &str) -> Vec<Received> {
    let connection = connect(url).await;
    let channel = connection.create_channel().await.expect("channel");
    let mut received = Vec::new();
    while let Some(message) = channel
        .basic_get(queue.into(), BasicGetOptions { no_ack: true })
        .await
        .expect("basic.get")
    {
        let headers = message
            .delivery
            .properties
            .headers()
            .as_ref()
            .map(|table| {
                table
                    .inner()
                    .iter()
                    .filter_map(|(key, value)| match value {
                        AMQPValue::LongString(text) => Some((
                            key.to_string(),
                            String::from_utf8_lossy(text.as_bytes()).into_owned(),
                        )),
                        _ => None,
                    })
                    .collect()
            })
            .unwrap_or_default();
        received.push(Received {
            body: message.delivery.data.clone(),
            headers,
            routing_key: message.delivery.routing_key.to_string(),
            message_id: message
                .delivery
                .properties
                .message_id()
                .as_ref()
                .map(ToString::to_string),
        });
    }
    let _ = connection.close(200, "done".into()).await;
    received
}

/// Messages waiting in `queue` (ready, not yet delivered to a consumer).
pub async fn ready_count(url: &str, queue: &str) -> u32 {
    let connection = connect(url).await;
    let channel = connection.create_channel().await.expect("channel");
    let declared = channel
        .queue_declare(
            queue.into(),
            QueueDeclareOptions {
                passive: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .expect("queue exists");
    let _ = connection.close(200, "done".into()).await;
    declared.message_count()
}

/// Declares the durable topic `exchange` (as webhookd declares an operator
/// events target) and a durable `queue` bound to it with `#`: every message
/// published there from now on lands in `queue`.
pub async fn bind_to_exchange(url: &str, exchange: &str, queue: &str) {
    let connection = connect(url).await;
    let channel = connection.create_channel().await.expect("channel");
    channel
        .exchange_declare(
            exchange.into(),
            lapin::ExchangeKind::Topic,
            ExchangeDeclareOptions {
                durable: true,
                ..ExchangeDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .expect("exchange declared");
    channel
        .queue_declare(
            queue.into(),
            QueueDeclareOptions {
                durable: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .expect("queue declared");
    channel
        .queue_bind(
            queue.into(),
            exchange.into(),
            "#".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect("queue bound");
    let _ = connection.close(200, "done".into()).await;
}

/// Deletes a test exchange.
pub async fn delete_exchange(url: &str, exchange: &str) {
    let connection = connect(url).await;
    let channel = connection.create_channel().await.expect("channel");
    let _ = channel
        .exchange_delete(exchange.into(), ExchangeDeleteOptions::default())
        .await;
    let _ = connection.close(200, "done".into()).await;
}

/// Deletes test queues.
pub async fn delete_queues(url: &str, queues: &[&str]) {
    let connection = connect(url).await;
    let channel = connection.create_channel().await.expect("channel");
    for queue in queues {
        let _ = channel
            .queue_delete((*queue).into(), QueueDeleteOptions::default())
            .await;
    }
    let _ = connection.close(200, "done".into()).await;
}

/// Force-closes every broker connection whose client named itself
/// `connection_name`, as `rabbitmqctl close_connection` does — the same
/// thing `close_all_connections` does, aimed so parallel tests are not hit.
/// Returns how many were closed.
pub fn close_connections_named(connection_name: &str) -> usize {
    let output = Command::new("rabbitmqctl")
        .args(["list_connections", "pid", "client_properties", "--quiet"])
        .output()
        .expect("rabbitmqctl runs");
    assert!(
        output.status.success(),
        "rabbitmqctl list_connections failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    // One line per connection: `<pid>\t[{"connection_name",longstr,"…"},…]`.
    let listing = String::from_utf8_lossy(&output.stdout);
    let quoted_name = format!("\"{connection_name}\"");
    let mut closed = 0;
    for line in listing.lines().filter(|line| line.contains(&quoted_name)) {
        let Some(pid) = line.split('\t').next() else {
            continue;
        };
        let status = Command::new("rabbitmqctl")
            .args([
                "close_connection",
                pid,
                "test cut the connection",
                "--quiet",
            ])
            .status()
            .expect("rabbitmqctl runs");
        if status.success() {
            closed += 1;
        }
    }
    closed
}
