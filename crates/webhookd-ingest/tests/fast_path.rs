//! The fast path: deliveries the store leased while accepting go straight to
//! the dispatcher's lanes. The dispatcher's claim loop is not even running
//! when they are sent, so nothing but the fast path can have sent them.

// In tests a failed unwrap is a failed test, with its location.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use webhookd_core::address::AddressPolicy;
use webhookd_core::telemetry::Source;
use webhookd_core::{Endpoint, EndpointStatus, Event, EventType, RetrySchedule, ids};
use webhookd_delivery::{DeliveryClient, Dispatcher, DispatcherSettings};
use webhookd_ingest::Ingest;
use webhookd_store::{DeliveryStatus, Page, RedisStore, SqliteStore, Store};
use webhookd_testkit::receiver::{Answer, Receiver};
use webhookd_testkit::{Service, require, unique_prefix};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_accepted_deliveries_go_out_without_the_claim_loop() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("webhookd.db");
    let store = SqliteStore::open(path.to_str().unwrap()).await.unwrap();
    accepted_deliveries_go_out_without_the_claim_loop(Arc::new(store)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_accepted_deliveries_go_out_without_the_claim_loop() {
    let Some(url) = require(Service::Redis) else {
        return;
    };
    let store = RedisStore::connect(&url, &unique_prefix("fast_path"))
        .await
        .unwrap();
    accepted_deliveries_go_out_without_the_claim_loop(Arc::new(store)).await;
}

async fn accepted_deliveries_go_out_without_the_claim_loop(store: Arc<dyn Store>) {
    let receiver = Receiver::start(Answer::Status(200)).await;
    let mut endpoints = Vec::new();
    for _ in 0..3 {
        let endpoint = Endpoint {
            ordering: None,
            filter: None,
            endpoint_id: ids::new_endpoint_id(),
            url: receiver.url.clone(),
            secret: ids::new_secret(),
            status: EndpointStatus::Enabled,
            events: vec![EventType::GENERATED_VIDEO_SUCCESS],
            username: "johndoe".into(),
            created_at: 0,
            previous_secret: None,
            failing_since: None,
            quota_refused: 0,
            disabled_reason: None,
            rate_limit: None,
            options: None,
        };
        store.create_endpoint(&endpoint, 20).await.unwrap();
        endpoints.push(endpoint);
    }
    let settings = DispatcherSettings {
        schedule: RetrySchedule::parse("1s").unwrap(),
        timeout: Duration::from_secs(2),
        max_in_flight: 64,
        per_endpoint: 4,
        poll_interval: Duration::from_secs(3600),
    };
    let client = DeliveryClient::new(
        AddressPolicy::new(vec!["127.0.0.0/8".parse().unwrap()]),
        settings.timeout,
    );
    let dispatcher = Dispatcher::new(Arc::clone(&store), client, settings);
    let ingest = Ingest::new(Arc::clone(&store)).with_dispatcher(Arc::clone(&dispatcher));
    let message =
        r#"{"event":"generated_video_success","username":"johndoe","event_id":"evt_1","data":{}}"#;
    let events: Vec<Event> = vec![
        ingest
            .parse(
                message.as_bytes(),
                Source::Http,
                webhookd_core::MissingId::Random,
            )
            .unwrap(),
    ];

    // One event to three endpoints: each leased its fresh delivery at once
    // (an endpoint not seen yet gets one claim, a probe: docs/delivery.md,
    // "Fairness").
    ingest.accept(&events, Source::Http).await.unwrap();
    let received = receiver.wait_for(3, Duration::from_secs(5)).await;
    assert_eq!(
        received.len(),
        3,
        "sent from memory, with no claim loop running"
    );

    // The attempts waited for the recorder, which runs with the loop.
    let shutdown = CancellationToken::new();
    let running = tokio::spawn(Arc::clone(&dispatcher).run(shutdown.clone()));
    let page = Page {
        limit: 10,
        after: None,
    };
    let mut delivered = 0;
    for _ in 0..100 {
        delivered = 0;
        for endpoint in &endpoints {
            delivered += store
                .list_deliveries(
                    "johndoe",
                    &endpoint.endpoint_id,
                    DeliveryStatus::Delivered,
                    &page,
                )
                .await
                .unwrap()
                .len();
        }
        if delivered == 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(delivered, 3, "each attempt recorded");
    shutdown.cancel();
    running.await.unwrap();
}
