//! The RabbitMQ consumer against the real broker and a real store.

// In tests a failed unwrap is a failed test, with its location.
#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use webhookd_core::config::QueueType;
use webhookd_core::health::Readiness;
use webhookd_core::{Endpoint, EndpointStatus, EventType, ids};
use webhookd_ingest::Ingest;
use webhookd_ingest::amqp::{
    AmqpConsumer, AmqpSettings, COMPONENT, DEAD_LETTER_KEEP, ERROR_HEADER, TRUNCATED_HEADER,
};
use webhookd_store::{DeliveryStatus, Page, RedisStore, Store};
use webhookd_testkit::amqp::{
    close_connections_named, publish, publish_typed, take_all, unique_queue,
};
use webhookd_testkit::{Service, require, unique_prefix};

/// A consumer on a queue of its own, feeding a Redis store with a prefix
/// of its own, and one user with `endpoints` endpoints.
struct Fixture {
    amqp_url: String,
    settings: AmqpSettings,
    store: Arc<dyn Store>,
    readiness: Readiness,
    endpoints: Vec<String>,
    shutdown: CancellationToken,
    consumer: tokio::task::JoinHandle<()>,
}

impl Fixture {
    async fn start(test: &str, endpoints: usize) -> Option<Fixture> {
        Fixture::start_with(test, endpoints, QueueType::Classic).await
    }

    async fn start_with(test: &str, endpoints: usize, queue_type: QueueType) -> Option<Fixture> {
        let amqp_url = require(Service::RabbitMq)?;
        let redis_url = require(Service::Redis)?;
        let store: Arc<dyn Store> = Arc::new(
            RedisStore::connect(&redis_url, &unique_prefix(test))
                .await
                .unwrap(),
        );
        let mut endpoint_ids = Vec::new();
        for i in 0..endpoints {
            let endpoint = Endpoint {
                endpoint_id: ids::new_endpoint_id(),
                url: format!("https://example.com/{i}"),
                secret: ids::new_secret(),
                status: EndpointStatus::Enabled,
                events: vec![EventType::GeneratedVideoSuccess],
                username: "producer-user".into(),
                created_at: 0,
                previous_secret: None,
                failing_since: None,
                disabled_reason: None,
                rate_limit: None,
            };
            store.create_endpoint(&endpoint, 20).await.unwrap();
            endpoint_ids.push(endpoint.endpoint_id);
        }
        let queue = unique_queue(test);
        let settings = AmqpSettings {
            url: amqp_url.clone(),
            connection_name: format!("webhookd-{queue}"),
            queue,
            queue_type,
            prefetch: 50,
            heartbeat: std::time::Duration::from_secs(10),
        };
        let readiness = Readiness::default();
        let shutdown = CancellationToken::new();
        let consumer = AmqpConsumer::new(
            settings.clone(),
            Ingest::new(Arc::clone(&store)),
            readiness.clone(),
        );
        let consumer = tokio::spawn(consumer.run(shutdown.clone()));
        Some(Fixture {
            amqp_url,
            settings,
            store,
            readiness,
            endpoints: endpoint_ids,
            shutdown,
            consumer,
        })
    }

    async fn publish(&self, messages: Vec<String>) {
        let (url, queue) = (&self.amqp_url, &self.settings.queue);
        match self.settings.queue_type {
            QueueType::Classic => publish(url, queue, messages).await,
            QueueType::Quorum => publish_typed(url, queue, "quorum", messages).await,
        }
    }

    /// event_id → number of pending deliveries, for one endpoint.
    async fn deliveries_by_event(&self, endpoint: usize) -> HashMap<String, usize> {
        let mut counts = HashMap::new();
        let mut page = Page {
            limit: 1000,
            after: None,
        };
        loop {
            let batch = self
                .store
                .list_deliveries(
                    "producer-user",
                    &self.endpoints[endpoint],
                    DeliveryStatus::Pending,
                    &page,
                )
                .await
                .unwrap();
            let Some(last) = batch.last() else { break };
            page.after = Some(last.delivery_id.clone());
            for delivery in batch {
                *counts.entry(delivery.event_id).or_insert(0) += 1;
            }
        }
        counts
    }

    /// Waits until `expected` events have a delivery on endpoint 0.
    async fn wait_for_events(&self, expected: usize, within: Duration) -> HashMap<String, usize> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let counts = self.deliveries_by_event(0).await;
            if counts.len() >= expected || tokio::time::Instant::now() > deadline {
                return counts;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn wait_until_ready(&self) {
        for _ in 0..100 {
            if self.readiness.problems().is_empty() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!(
            "consumer never became ready: {:?}",
            self.readiness.problems()
        );
    }

    async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(10), self.consumer)
            .await
            .unwrap()
            .unwrap();
        webhookd_testkit::amqp::delete_queues(
            &self.amqp_url,
            &[&self.settings.queue, &self.settings.dead_letter_queue()],
        )
        .await;
    }
}

fn message(event_id: &str) -> String {
    format!(
        r#"{{"event":"generated_video_success","username":"producer-user","event_id":"{event_id}","data":{{"video_id":"{event_id}"}}}}"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn published_events_become_one_delivery_per_endpoint() {
    let Some(fixture) = Fixture::start("fanout", 2).await else {
        return;
    };
    fixture.wait_until_ready().await;
    fixture
        .publish((0..500).map(|i| message(&format!("evt_{i}"))).collect())
        .await;
    let counts = fixture.wait_for_events(500, Duration::from_secs(30)).await;
    assert_eq!(counts.len(), 500);
    assert!(counts.values().all(|&n| n == 1));
    assert_eq!(
        fixture.deliveries_by_event(1).await.len(),
        500,
        "the second endpoint too"
    );
    fixture.stop().await;
}

/// SPEC §10: `WEBHOOKD_AMQP_QUEUE_TYPE=quorum` declares the queue and its
/// `.dead` queue as quorum queues, and events flow through them as usual.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quorum_queues_are_declared_as_such_and_consumed() {
    let Some(fixture) = Fixture::start_with("quorum", 1, QueueType::Quorum).await else {
        return;
    };
    fixture.wait_until_ready().await;
    // RabbitMQ holds both as quorum queues: declaring one classic is refused.
    for queue in [
        fixture.settings.queue.clone(),
        fixture.settings.dead_letter_queue(),
    ] {
        let connection =
            lapin::Connection::connect(&fixture.amqp_url, lapin::ConnectionProperties::default())
                .await
                .unwrap();
        let channel = connection.create_channel().await.unwrap();
        let mut classic = lapin::types::FieldTable::default();
        classic.insert(
            "x-queue-type".into(),
            lapin::types::AMQPValue::LongString("classic".into()),
        );
        let refused = channel
            .queue_declare(
                queue.as_str().into(),
                lapin::options::QueueDeclareOptions {
                    durable: true,
                    ..lapin::options::QueueDeclareOptions::default()
                },
                classic,
            )
            .await
            .unwrap_err();
        assert!(
            refused.to_string().contains("x-queue-type"),
            "{queue}: {refused}"
        );
        let _ = connection.close(200, "done".into()).await;
    }
    fixture
        .publish((0..200).map(|i| message(&format!("evt_q{i}"))).collect())
        .await;
    fixture.publish(vec!["not json".to_owned()]).await;
    let counts = fixture.wait_for_events(200, Duration::from_secs(30)).await;
    assert_eq!(counts.len(), 200);
    assert!(counts.values().all(|&n| n == 1));
    let mut dead = Vec::new();
    for _ in 0..100 {
        dead.extend(take_all(&fixture.amqp_url, &fixture.settings.dead_letter_queue()).await);
        if !dead.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        dead.len(),
        1,
        "the poison message, in the quorum .dead queue"
    );
    fixture.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_messages_are_dead_lettered_with_a_reason_and_the_queue_keeps_flowing() {
    let Some(fixture) = Fixture::start("poison", 1).await else {
        return;
    };
    let oversized = format!(
        r#"{{"event":"generated_video_success","username":"producer-user","data":{{"pad":"{}"}}}}"#,
        "x".repeat(300 * 1024)
    );
    let poison = vec![
        ("not json at all".to_owned(), "not_json"),
        ("[1,2,3]".to_owned(), "not_an_object"),
        (
            r#"{"event":"video_done","username":"producer-user","data":{}}"#.to_owned(),
            "unknown_event_type",
        ),
        (
            r#"{"event":"generated_video_success","data":{}}"#.to_owned(),
            "missing_field",
        ),
        (
            r#"{"event":"generated_video_success","username":"producer-user"}"#.to_owned(),
            "missing_field",
        ),
        (oversized, "too_large"),
    ];
    let mut messages = Vec::new();
    for (i, (bad, _)) in poison.iter().enumerate() {
        messages.push(message(&format!("evt_before_{i}")));
        messages.push(bad.clone());
        messages.push(message(&format!("evt_after_{i}")));
    }
    fixture.publish(messages).await;
    let counts = fixture
        .wait_for_events(2 * poison.len(), Duration::from_secs(30))
        .await;
    assert_eq!(
        counts.len(),
        2 * poison.len(),
        "every good message around the poison got through"
    );

    let mut dead = Vec::new();
    for _ in 0..50 {
        dead.extend(take_all(&fixture.amqp_url, &fixture.settings.dead_letter_queue()).await);
        if dead.len() >= poison.len() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(dead.len(), poison.len());
    for (received, (body, code)) in dead.iter().zip(&poison) {
        assert_eq!(
            &received.body,
            body.as_bytes(),
            "the message is kept as sent"
        );
        let reason = received.header(ERROR_HEADER).unwrap();
        assert!(reason.starts_with(&format!("{code}: ")), "{reason}");
    }
    fixture.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_event_id_three_times_fans_out_once() {
    let Some(fixture) = Fixture::start("dedup", 1).await else {
        return;
    };
    fixture.publish(vec![message("evt_same"); 3]).await;
    fixture.publish(vec![message("evt_other")]).await;
    let counts = fixture.wait_for_events(2, Duration::from_secs(30)).await;
    // Give any straggling duplicate time to (wrongly) land.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let counts_after = fixture.deliveries_by_event(0).await;
    assert_eq!(counts, counts_after);
    assert_eq!(counts_after.get("evt_same"), Some(&1));
    assert_eq!(counts_after.get("evt_other"), Some(&1));
    fixture.stop().await;
}

/// A message far over the event limit is not copied whole into the
/// dead-letter queue: its start is kept, with its size.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_huge_message_is_dead_lettered_cut_to_its_start() {
    let Some(fixture) = Fixture::start("huge", 1).await else {
        return;
    };
    let huge = "x".repeat(5 * 1024 * 1024);
    fixture
        .publish(vec![huge.clone(), message("evt_after_huge")])
        .await;
    let counts = fixture.wait_for_events(1, Duration::from_secs(30)).await;
    assert_eq!(counts.get("evt_after_huge"), Some(&1));
    let mut dead = Vec::new();
    for _ in 0..50 {
        dead.extend(take_all(&fixture.amqp_url, &fixture.settings.dead_letter_queue()).await);
        if !dead.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].body.len(), DEAD_LETTER_KEEP);
    assert_eq!(&dead[0].body[..], &huge.as_bytes()[..DEAD_LETTER_KEEP]);
    assert_eq!(
        dead[0].header(TRUNCATED_HEADER),
        Some(huge.len().to_string().as_str())
    );
    assert!(
        dead[0]
            .header(ERROR_HEADER)
            .unwrap()
            .starts_with("too_large: ")
    );
    fixture.stop().await;
}

/// A redelivery hands the consumer the same bytes again; without an
/// `event_id` the event must still be recognised (SPEC §5).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_without_event_id_fans_out_once_when_it_comes_again() {
    let Some(fixture) = Fixture::start("derived_id", 1).await else {
        return;
    };
    let without_id = |video: &str| {
        format!(
            r#"{{"event":"generated_video_success","username":"producer-user","timestamp":1732806631,"data":{{"video_id":"{video}"}}}}"#
        )
    };
    fixture
        .publish(vec![without_id("a"), without_id("a"), without_id("b")])
        .await;
    // With a message_id, that names the message, whatever the body.
    let named = lapin::BasicProperties::default().with_message_id("order-42".into());
    webhookd_testkit::amqp::publish_with(
        &fixture.amqp_url,
        &fixture.settings.queue,
        [without_id("c"), without_id("d")],
        named,
    )
    .await;
    let counts = fixture.wait_for_events(3, Duration::from_secs(30)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let counts_after = fixture.deliveries_by_event(0).await;
    assert_eq!(counts, counts_after);
    assert_eq!(counts_after.len(), 3, "a, b and order-42: {counts_after:?}");
    assert!(counts_after.values().all(|&n| n == 1), "{counts_after:?}");
    assert_eq!(counts_after.get("order-42"), Some(&1));
    fixture.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cutting_the_connection_mid_stream_loses_and_duplicates_nothing() {
    let Some(fixture) = Fixture::start("cut", 1).await else {
        return;
    };
    fixture.wait_until_ready().await;
    let total = 5000;
    let publisher = {
        let (url, queue) = (fixture.amqp_url.clone(), fixture.settings.queue.clone());
        tokio::spawn(async move {
            for chunk in 0..10 {
                let messages: Vec<_> = (0..total / 10)
                    .map(|i| message(&format!("evt_{chunk}_{i}")))
                    .collect();
                publish(&url, &queue, messages).await;
            }
        })
    };
    let mut cuts = 0;
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let name = fixture.settings.connection_name.clone();
        cuts += tokio::task::spawn_blocking(move || close_connections_named(&name))
            .await
            .unwrap();
    }
    publisher.await.unwrap();
    assert!(cuts >= 2, "the connection was cut ({cuts} times)");
    let counts = fixture
        .wait_for_events(total, Duration::from_secs(60))
        .await;
    assert_eq!(counts.len(), total, "every event has its delivery");
    assert!(
        counts.values().all(|&n| n == 1),
        "no event fanned out twice"
    );
    fixture.wait_until_ready().await;
    fixture.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_follows_the_connection() {
    let Some(fixture) = Fixture::start("ready", 1).await else {
        return;
    };
    fixture.wait_until_ready().await;
    let name = fixture.settings.connection_name.clone();
    let closed = tokio::task::spawn_blocking(move || close_connections_named(&name))
        .await
        .unwrap();
    assert_eq!(closed, 1);
    let mut saw_down = false;
    for _ in 0..50 {
        if let Some((component, reason)) = fixture.readiness.problems().first() {
            assert_eq!(*component, COMPONENT);
            assert!(reason.starts_with("disconnected"), "{reason}");
            saw_down = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(saw_down, "/readyz reports the lost connection");
    fixture.wait_until_ready().await;
    fixture.stop().await;
}
