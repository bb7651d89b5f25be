//! The RabbitMQ consumer against the real broker and a real store.

// In tests a failed unwrap is a failed test, with its location.
#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use lapin::BasicProperties;
use lapin::types::{AMQPValue, FieldTable};
use tokio_stream::StreamExt as _;
use tokio_util::sync::CancellationToken;
use webhookd_core::catalog::Change;
use webhookd_core::config::QueueType;
use webhookd_core::health::Readiness;
use webhookd_core::{Endpoint, EndpointStatus, EventType, SharedCatalog, ids};
use webhookd_ingest::Ingest;
use webhookd_ingest::amqp::{
    AmqpConsumer, AmqpSettings, COMPONENT, DEAD_LETTER_KEEP, ERROR_HEADER, TRUNCATED_HEADER,
};
use webhookd_store::{DeliveryStatus, Page, RedisStore, Store};
use webhookd_testkit::amqp::{
    Received, close_connections_named, delete_queues, publish, publish_declared_with, ready_count,
    take_all, unique_queue,
};
use webhookd_testkit::{
    CuttableProxy, Service, require, service_address, subscription, unique_prefix,
};

/// The JoggAI catalog plus `invoice.paid`, whose `data` needs an
/// `invoice_id` (SPEC §12).
fn catalog_with_invoices() -> SharedCatalog {
    let catalog = SharedCatalog::joggai();
    catalog.apply(vec![(
        "invoice.paid".to_owned(),
        Change::Defined {
            description: "An invoice was paid.".into(),
            schema: Some(serde_json::json!({"type": "object", "required": ["invoice_id"]})),
            deprecated: false,
        },
    )]);
    catalog
}

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
    /// Between the store and Redis, with [`Options::store_proxy`].
    store_link: Option<CuttableProxy>,
    /// The store's key prefix.
    prefix: String,
}

/// How a [`Fixture`] differs from the plain one.
#[derive(Default)]
struct Options {
    quorum: bool,
    /// Reach Redis through a proxy the test can cut.
    store_proxy: bool,
    /// The quorum delivery limit (default 20).
    delivery_limit: Option<u32>,
    /// A queue that exists already (default: a new one).
    queue: Option<String>,
}

impl Fixture {
    async fn start(test: &str, endpoints: usize) -> Option<Fixture> {
        Fixture::start_with(test, endpoints, Options::default()).await
    }

    async fn start_with(test: &str, endpoints: usize, options: Options) -> Option<Fixture> {
        let amqp_url = require(Service::RabbitMq)?;
        let mut redis_url = require(Service::Redis)?;
        let store_link = if options.store_proxy {
            let proxy = CuttableProxy::start(service_address(Service::Redis)).await;
            redis_url = Service::Redis.url_through(proxy.address);
            Some(proxy)
        } else {
            None
        };
        let prefix = unique_prefix(test);
        let store: Arc<dyn Store> =
            Arc::new(RedisStore::connect(&redis_url, &prefix).await.unwrap());
        let mut endpoint_ids = Vec::new();
        for i in 0..endpoints {
            let endpoint = Endpoint {
                ordering: None,
                filter: None,
                endpoint_id: ids::new_endpoint_id(),
                url: format!("https://example.com/{i}"),
                secret: ids::new_secret(),
                status: EndpointStatus::Enabled,
                events: vec![EventType::GENERATED_VIDEO_SUCCESS],
                username: "producer-user".into(),
                created_at: 0,
                previous_secret: None,
                failing_since: None,
                quota_refused: 0,
                disabled_reason: None,
                rate_limit: None,
                options: None,
            };
            store.create_endpoint(&endpoint, 20).await.unwrap();
            endpoint_ids.push(endpoint.endpoint_id);
        }
        let queue = options.queue.unwrap_or_else(|| unique_queue(test));
        let settings = AmqpSettings {
            url: amqp_url.clone(),
            connection_name: format!("webhookd-{queue}"),
            queue,
            queue_type: if options.quorum {
                QueueType::Quorum
            } else {
                QueueType::Classic
            },
            prefetch: 50,
            delivery_limit: options.delivery_limit.unwrap_or(20),
            heartbeat: std::time::Duration::from_secs(10),
        };
        let readiness = Readiness::default();
        let shutdown = CancellationToken::new();
        let consumer = AmqpConsumer::new(
            settings.clone(),
            Ingest::new(Arc::clone(&store)).with_catalog(catalog_with_invoices()),
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
            store_link,
            prefix,
        })
    }

    async fn publish(&self, messages: Vec<String>) {
        let (url, queue) = (&self.amqp_url, &self.settings.queue);
        match self.settings.queue_type {
            QueueType::Classic => publish(url, queue, messages).await,
            QueueType::Quorum => {
                let arguments = self.settings.main_queue_arguments();
                publish_declared_with(url, queue, arguments, messages).await;
            }
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
        let (amqp_url, settings) = (self.amqp_url.clone(), self.settings.clone());
        self.stop_consumer().await;
        webhookd_testkit::amqp::delete_queues(
            &amqp_url,
            &[&settings.queue, &settings.dead_letter_queue()],
        )
        .await;
    }

    /// Stops the consumer, keeping the queues.
    async fn stop_consumer(self) {
        self.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(10), self.consumer)
            .await
            .unwrap()
            .unwrap();
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
    let options = Options {
        quorum: true,
        ..Options::default()
    };
    let Some(fixture) = Fixture::start_with("quorum", 1, options).await else {
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
            refused.to_string().contains("inequivalent arg"),
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
            r#"{"event":"invoice.paid","username":"producer-user","data":{"amount":1}}"#.to_owned(),
            "schema_mismatch",
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

/// SPEC §11: past its owner's `max_events_per_day`, an event goes to
/// `.dead` with reason `quota` — nothing of it written — and the messages
/// around it flow on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_past_the_daily_quota_are_dead_lettered_with_reason_quota() {
    let Some(fixture) = Fixture::start("daily_quota", 1).await else {
        return;
    };
    fixture
        .store
        .put_setting(
            &webhookd_core::quota::setting_name("producer-user"),
            Some(r#"{"max_events_per_day":3}"#),
        )
        .await
        .unwrap();
    let messages: Vec<String> = (0..5).map(|n| message(&format!("evt_{n}"))).collect();
    fixture.publish(messages.clone()).await;
    let counts = fixture.wait_for_events(3, Duration::from_secs(30)).await;
    let dead = dead_letters(&fixture.amqp_url, &fixture.settings.dead_letter_queue(), 2).await;
    assert_eq!(dead.len(), 2);
    for received in &dead {
        let reason = received.header(ERROR_HEADER).unwrap();
        assert!(
            reason.starts_with("quota: ") && reason.contains("3 events per day"),
            "{reason}"
        );
    }
    let mut accepted: Vec<&String> = counts.keys().collect();
    accepted.sort();
    assert_eq!(accepted, ["evt_0", "evt_1", "evt_2"]);
    let dead_bodies: Vec<&[u8]> = dead.iter().map(|received| &received.body[..]).collect();
    assert_eq!(
        dead_bodies,
        [messages[3].as_bytes(), messages[4].as_bytes()]
    );
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

/// Dead-lettered messages of `queue`, waiting until there are `expected`.
async fn dead_letters(fixture_url: &str, queue: &str, expected: usize) -> Vec<Received> {
    let mut dead = Vec::new();
    for _ in 0..100 {
        dead.extend(take_all(fixture_url, queue).await);
        if dead.len() >= expected {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    dead
}

/// Takes each message of `queue` and rejects it back to the queue, `times`
/// times in all, as a consumer that crashes on it would.
async fn reject_back(url: &str, queue: &str, times: usize) {
    let connection = lapin::Connection::connect(url, lapin::ConnectionProperties::default())
        .await
        .unwrap();
    let channel = connection.create_channel().await.unwrap();
    let mut consumer = channel
        .basic_consume(
            queue.into(),
            "rejecter".into(),
            lapin::options::BasicConsumeOptions::default(),
            lapin::types::FieldTable::default(),
        )
        .await
        .unwrap();
    for _ in 0..times {
        let next = tokio::time::timeout(Duration::from_secs(5), consumer.next()).await;
        let Ok(Some(Ok(message))) = next else { break };
        channel
            .basic_reject(
                message.delivery_tag,
                lapin::options::BasicRejectOptions { requeue: true },
            )
            .await
            .unwrap();
    }
    let _ = connection.close(200, "done".into()).await;
}

/// "Correctness, round 3", item 1: a batch holding a valid event and an
/// invalid one arrives while the store is down, and shutdown comes before
/// the store is back. Only the dead-lettered message may be acknowledged:
/// the valid one goes back to the queue (before, one `multiple` ack over
/// the invalid one's tag acknowledged it too, and the event was lost).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_while_the_store_is_down_acknowledges_only_what_was_dead_lettered() {
    let options = Options {
        store_proxy: true,
        ..Options::default()
    };
    let Some(fixture) = Fixture::start_with("store_down_shutdown", 1, options).await else {
        return;
    };
    fixture.wait_until_ready().await;
    fixture.store_link.as_ref().unwrap().cut();
    fixture
        .publish(vec![message("evt_kept"), "not json".to_owned()])
        .await;
    let (url, queue) = (fixture.amqp_url.clone(), fixture.settings.queue.clone());
    let dead_queue = fixture.settings.dead_letter_queue();
    let dead = dead_letters(&url, &dead_queue, 1).await;
    assert_eq!(
        dead.len(),
        1,
        "the invalid message is dead-lettered at once"
    );
    // The valid one is being offered to the unreachable store.
    tokio::time::sleep(Duration::from_millis(500)).await;
    fixture.stop_consumer().await;
    let mut waiting = 0;
    for _ in 0..50 {
        waiting = ready_count(&url, &queue).await;
        if waiting > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        waiting, 1,
        "the valid message is back in the queue, unacknowledged"
    );
    assert!(
        take_all(&url, &dead_queue).await.is_empty(),
        "nothing was dead-lettered twice"
    );
    delete_queues(&url, &[&queue, &dead_queue]).await;
}

/// A quorum queue is declared with `x-delivery-limit`: a message handed
/// out that many times without an ack (a consumer crashing on it) goes to
/// `.dead`, not back to the queue forever (nor, RabbitMQ 4's default,
/// dropped).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quorum_queue_dead_letters_a_message_past_its_delivery_limit() {
    let options = Options {
        quorum: true,
        delivery_limit: Some(3),
        ..Options::default()
    };
    let Some(fixture) = Fixture::start_with("delivery_limit", 1, options).await else {
        return;
    };
    fixture.wait_until_ready().await;
    let (url, settings) = (fixture.amqp_url.clone(), fixture.settings.clone());
    fixture.stop_consumer().await;
    publish_declared_with(
        &url,
        &settings.queue,
        settings.main_queue_arguments(),
        [message("evt_poison")],
    )
    .await;
    reject_back(&url, &settings.queue, 10).await;
    let dead = dead_letters(&url, &settings.dead_letter_queue(), 1).await;
    assert_eq!(dead.len(), 1, "the message went to .dead past its limit");
    assert_eq!(ready_count(&url, &settings.queue).await, 0);
    delete_queues(&url, &[&settings.queue, &settings.dead_letter_queue()]).await;
}

/// A quorum queue an older webhookd declared without the limit is used as
/// it is, and webhookd applies the limit itself from the message's
/// `x-delivery-count`, with a reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_redelivered_past_the_limit_is_dead_lettered_by_webhookd() {
    let Some(url) = require(Service::RabbitMq) else {
        return;
    };
    let queue = unique_queue("old_quorum");
    let dead_queue = format!("{queue}.dead");
    let mut only_type = lapin::types::FieldTable::default();
    only_type.insert(
        "x-queue-type".into(),
        lapin::types::AMQPValue::LongString("quorum".into()),
    );
    publish_declared_with(&url, &dead_queue, only_type.clone(), Vec::<String>::new()).await;
    publish_declared_with(&url, &queue, only_type, [message("evt_poison")]).await;
    reject_back(&url, &queue, 3).await;
    let options = Options {
        quorum: true,
        delivery_limit: Some(3),
        queue: Some(queue.clone()),
        ..Options::default()
    };
    let Some(fixture) = Fixture::start_with("old_quorum", 1, options).await else {
        return;
    };
    fixture.wait_until_ready().await;
    let dead = dead_letters(&url, &dead_queue, 1).await;
    assert_eq!(dead.len(), 1);
    let reason = dead[0].header(ERROR_HEADER).unwrap().to_owned();
    // The rejecter may have been handed it once more as it closed.
    let count: u32 = reason
        .strip_prefix("redelivered ")
        .and_then(|rest| rest.split(' ').next())
        .and_then(|count| count.parse().ok())
        .unwrap_or_else(|| panic!("{reason}"));
    assert!(count >= 3, "{reason}");
    assert!(reason.ends_with("(amqp_delivery_limit 3)"), "{reason}");
    assert!(fixture.deliveries_by_event(0).await.is_empty());
    fixture.stop().await;
}

/// An event the store keeps refusing with an answer retrying will not
/// change (here: its owner's data is not what webhookd wrote) is, after a
/// few tries alone, dead-lettered with the store's reason; the events
/// around it are accepted and the queue keeps flowing. Before, the consumer
/// retried the whole batch forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_the_store_keeps_refusing_is_dead_lettered_and_the_queue_flows() {
    let Some(fixture) = Fixture::start("store_refuses", 1).await else {
        return;
    };
    fixture.wait_until_ready().await;
    let broken = subscription(
        "broken-user",
        "https://example.com/b",
        &[EventType::GENERATED_VIDEO_SUCCESS],
    );
    fixture.store.create_endpoint(&broken, 20).await.unwrap();
    // The user's endpoint index becomes a string: every accept of an event
    // of theirs fails with WRONGTYPE.
    let client = redis::Client::open(Service::Redis.url()).unwrap();
    let mut redis = client.get_multiplexed_async_connection().await.unwrap();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{}*u:broken-user:endpoints", fixture.prefix))
        .query_async(&mut redis)
        .await
        .unwrap();
    assert_eq!(keys.len(), 1, "{keys:?}");
    let _: () = redis::cmd("SET")
        .arg(&keys[0])
        .arg("not a sorted set")
        .query_async(&mut redis)
        .await
        .unwrap();
    let refused = r#"{"event":"generated_video_success","username":"broken-user","event_id":"evt_refused","data":{}}"#;
    fixture
        .publish(vec![
            message("evt_before"),
            refused.to_owned(),
            message("evt_after"),
        ])
        .await;
    let counts = fixture.wait_for_events(2, Duration::from_secs(30)).await;
    assert_eq!(
        counts.len(),
        2,
        "the events around it are accepted: {counts:?}"
    );
    let dead = dead_letters(&fixture.amqp_url, &fixture.settings.dead_letter_queue(), 1).await;
    assert_eq!(dead.len(), 1);
    let reason = dead[0].header(ERROR_HEADER).unwrap();
    assert!(reason.starts_with("store_refused: "), "{reason}");
    assert!(reason.contains("WRONGTYPE"), "{reason}");
    fixture.stop().await;
}

/// SPEC §15: a message's `traceparent` and `tracestate` headers are kept
/// with each of its event's deliveries (a message without them has none,
/// and a malformed `traceparent` counts as none — never a dead letter).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_messages_trace_headers_are_kept_with_its_deliveries() {
    let Some(fixture) = Fixture::start("trace_headers", 1).await else {
        return;
    };
    fixture.wait_until_ready().await;
    let parent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    let mut headers = FieldTable::default();
    headers.insert("traceparent".into(), AMQPValue::LongString(parent.into()));
    headers.insert(
        "tracestate".into(),
        AMQPValue::LongString("rojo=00f067aa0ba902b7".into()),
    );
    let url = &fixture.amqp_url;
    let queue = &fixture.settings.queue;
    let traced = BasicProperties::default().with_headers(headers);
    webhookd_testkit::amqp::publish_with(url, queue, [message("evt_traced")], traced).await;
    let mut malformed = FieldTable::default();
    malformed.insert(
        "traceparent".into(),
        AMQPValue::LongString("00-nope".into()),
    );
    let malformed = BasicProperties::default().with_headers(malformed);
    webhookd_testkit::amqp::publish_with(url, queue, [message("evt_malformed")], malformed).await;
    publish(url, queue, [message("evt_plain")]).await;
    assert_eq!(
        fixture
            .wait_for_events(3, Duration::from_secs(30))
            .await
            .len(),
        3
    );
    let deliveries = fixture
        .store
        .list_deliveries(
            "producer-user",
            &fixture.endpoints[0],
            DeliveryStatus::Pending,
            &Page {
                limit: 10,
                after: None,
            },
        )
        .await
        .unwrap();
    let trace_of = |event_id: &str| {
        deliveries
            .iter()
            .find(|delivery| delivery.event_id == event_id)
            .unwrap()
            .trace
            .clone()
    };
    assert_eq!(
        trace_of("evt_traced").as_deref(),
        Some(format!("{parent}\nrojo=00f067aa0ba902b7").as_str())
    );
    assert_eq!(trace_of("evt_malformed"), None);
    assert_eq!(trace_of("evt_plain"), None);
    fixture.stop().await;
}
