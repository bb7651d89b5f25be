//! The workload's producer: events published in bursts to RabbitMQ
//! (persistent, confirmed) or over HTTP ingest, a few ids twice and some
//! messages that are not JSON, with what was accepted written down.

use std::collections::BTreeMap;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use lapin::options::{BasicPublishOptions, ConfirmSelectOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Connection, ConnectionProperties};
use rand::rngs::StdRng;
use rand::{Rng as _, SeedableRng as _};
use webhookd_core::ids;

use crate::checker::Published;
use crate::system::{Mode, Setup};

/// Events are published in bursts, as producers do: several messages reach
/// a consumer in one batch.
const BURST: u32 = 8;

/// One message of the workload: its body, and the event when it is valid.
fn message(
    random: &mut StdRng,
    published: &Mutex<Vec<Published>>,
    n: &mut u64,
) -> (String, Option<Published>) {
    let earlier = {
        let published = published.lock().unwrap_or_else(PoisonError::into_inner);
        (!published.is_empty() && random.random_bool(0.05))
            .then(|| published[random.random_range(0..published.len())].clone())
    };
    let now = Instant::now();
    let event = earlier.map_or_else(
        || {
            *n += 1;
            Published {
                event_id: format!("evt_{n}_{}", ids::new_lease_token()),
                owner: random.random_range(0..3),
                at: now,
            }
        },
        |earlier| Published { at: now, ..earlier },
    );
    if random.random_bool(0.1) {
        return ("not json".to_owned(), None);
    }
    let body = format!(
        r#"{{"event":"generated_video_success","username":"{}","event_id":"{}","data":{{"n":{n}}}}}"#,
        crate::tenant(event.owner),
        event.event_id
    );
    (body, Some(event))
}

/// Publishes `rate` events a second until `stop`, in bursts: to RabbitMQ
/// (persistent, confirmed) or over HTTP ingest to the processes. About one
/// in twenty reuses an earlier event id, as a producer retrying would, and
/// one in ten is not JSON at all (it must be refused — `.dead` or 400 —
/// never take a valid neighbour with it). Only confirmed publishes (or
/// 202s) of valid events go into `published`. HTTP ingest's answers, by
/// status.
pub async fn publish(
    setup: Setup,
    ports: Vec<u16>,
    rate: u32,
    seed: u64,
    published: Arc<Mutex<Vec<Published>>>,
    stop: Arc<AtomicBool>,
) -> anyhow::Result<BTreeMap<String, usize>> {
    let mut random = StdRng::seed_from_u64(seed);
    let mut producer = Producer::connect(&setup, ports).await?;
    let interval = Duration::from_secs(1) * BURST / rate.max(1);
    let mut ticks = tokio::time::interval(interval);
    let mut n = 0_u64;
    let mut in_burst = 0;
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        if in_burst == 0 {
            ticks.tick().await;
            in_burst = BURST;
        }
        in_burst -= 1;
        let (body, event) = message(&mut random, &published, &mut n);
        let accepted = producer.send(&body, event.is_some()).await?;
        if let Some(event) = event.filter(|_| accepted) {
            published
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(event);
        }
    }
    producer.close().await;
    Ok(producer.answers)
}

/// Where the workload's events go, and what HTTP ingest answered
/// ("valid 202", "invalid 400", …).
struct Producer {
    sink: Sink,
    answers: BTreeMap<String, usize>,
}

enum Sink {
    Amqp {
        connection: Box<Connection>,
        channel: lapin::Channel,
        queue: String,
    },
    Http {
        client: reqwest::Client,
        ports: Vec<u16>,
        token: String,
        next: usize,
    },
}

impl Producer {
    async fn connect(setup: &Setup, ports: Vec<u16>) -> anyhow::Result<Producer> {
        let sink = match &setup.mode {
            Mode::Redis {
                amqp_url, queue, ..
            } => {
                let connection =
                    Connection::connect(amqp_url, ConnectionProperties::default()).await?;
                let channel = connection.create_channel().await?;
                channel
                    .confirm_select(ConfirmSelectOptions::default())
                    .await?;
                channel
                    .queue_declare(
                        queue.as_str().into(),
                        QueueDeclareOptions {
                            durable: true,
                            ..QueueDeclareOptions::default()
                        },
                        FieldTable::default(),
                    )
                    .await?;
                Sink::Amqp {
                    connection: Box::new(connection),
                    channel,
                    queue: queue.clone(),
                }
            }
            Mode::Embedded { .. } => Sink::Http {
                client: reqwest::Client::builder()
                    .timeout(Duration::from_secs(5))
                    .build()?,
                ports,
                token: setup.ingest_token.clone(),
                next: 0,
            },
        };
        Ok(Producer {
            sink,
            answers: BTreeMap::new(),
        })
    }

    /// Sends one message; whether it was accepted (confirmed, or 202).
    async fn send(&mut self, body: &str, valid: bool) -> anyhow::Result<bool> {
        match &mut self.sink {
            Sink::Amqp { channel, queue, .. } => {
                let confirmed = channel
                    .basic_publish(
                        "".into(),
                        queue.as_str().into(),
                        BasicPublishOptions::default(),
                        body.as_bytes(),
                        BasicProperties::default().with_delivery_mode(2),
                    )
                    .await?
                    .await?;
                Ok(confirmed.is_ack())
            }
            Sink::Http {
                client,
                ports,
                token,
                next,
            } => {
                let port = ports[*next % ports.len()];
                *next += 1;
                let answer = client
                    .post(format!("http://127.0.0.1:{port}/internal/events"))
                    .bearer_auth(token.as_str())
                    .header("content-type", "application/json")
                    .body(body.to_owned())
                    .send()
                    .await
                    .map_or(0, |response| response.status().as_u16());
                let kind = if valid { "valid" } else { "invalid" };
                *self.answers.entry(format!("{kind} {answer}")).or_default() += 1;
                Ok(answer == 202)
            }
        }
    }

    async fn close(&self) {
        if let Sink::Amqp { connection, .. } = &self.sink {
            let _ = connection.close(200, "done".into()).await;
        }
    }
}
