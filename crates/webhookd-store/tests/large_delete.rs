//! Deleting an endpoint with a million deliveries on Redis: the DELETE
//! answers at once, no other client waits more than 50 ms at any moment,
//! and the deliveries are gone soon after (SPEC §1: pending retries stop;
//! the sweep removes the rest in bounded steps).

// In tests a failed unwrap is a failed test, with its location.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use webhookd_core::{Endpoint, EndpointStatus, Event, EventType, ids};
use webhookd_store::{RedisStore, Store};
use webhookd_testkit::{Service, require, unique_prefix};

const DELIVERIES: usize = 1_000_000;
const BATCH: usize = 2_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_million_deliveries_never_stalls_redis() {
    let Some(url) = require(Service::Redis) else {
        return;
    };
    let prefix = unique_prefix("large_delete");
    // A million pending to one endpoint: past the default kept-deliveries
    // quota (SPEC §11), so this store's is raised.
    let store = RedisStore::connect(&url, &prefix)
        .await
        .unwrap()
        .with_quotas(webhookd_core::quota::Quotas {
            max_kept_deliveries_per_endpoint: 2 * DELIVERIES as u64,
            ..webhookd_core::quota::Quotas::default()
        });
    let endpoint = Endpoint {
        ordering: None,
        filter: None,
        endpoint_id: ids::new_endpoint_id(),
        url: "https://example.com/hook".into(),
        secret: ids::new_secret(),
        status: EndpointStatus::Enabled,
        events: vec![EventType::GENERATED_VIDEO_SUCCESS],
        username: "big".into(),
        created_at: 0,
        previous_secret: None,
        failing_since: None,
        quota_refused: 0,
        disabled_reason: None,
        rate_limit: None,
        options: None,
    };
    store.create_endpoint(&endpoint, 20).await.unwrap();
    fill(&store).await;

    // Another client pings throughout and keeps its worst wait.
    let client = redis::Client::open(url.as_str()).unwrap();
    let mut pinger = client.get_multiplexed_async_connection().await.unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let pings = {
        let stop = Arc::clone(&stop);
        tokio::spawn(async move {
            let (mut worst, mut count) = (Duration::ZERO, 0_u64);
            while !stop.load(Ordering::Relaxed) {
                let sent = Instant::now();
                let _: String = redis::cmd("PING").query_async(&mut pinger).await.unwrap();
                worst = worst.max(sent.elapsed());
                count += 1;
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            (worst, count)
        })
    };

    let asked = Instant::now();
    assert!(
        store
            .delete_endpoint("big", &endpoint.endpoint_id)
            .await
            .unwrap()
    );
    let answered = asked.elapsed();
    // The sweep as `webhookd serve` runs it: bounded steps, a short pause.
    let swept = Instant::now();
    let mut removed = 0;
    loop {
        let report = store
            .sweep(webhookd_core::time::unix_millis())
            .await
            .unwrap();
        removed += report.removed;
        if !report.more {
            break;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let sweeping = swept.elapsed();
    stop.store(true, Ordering::Relaxed);
    let (worst_ping, ping_count) = pings.await.unwrap();
    eprintln!(
        "DELETE answered in {answered:?}; swept {removed} in {sweeping:?}; \
         worst PING {worst_ping:?} of {ping_count}"
    );
    assert!(
        answered < Duration::from_millis(50),
        "DELETE took {answered:?}"
    );
    assert!(
        worst_ping < Duration::from_millis(50),
        "a PING waited {worst_ping:?}"
    );
    assert_eq!(removed, DELIVERIES as u64);

    let stray = remove_keys(&client, &prefix).await;
    assert!(
        stray.is_empty(),
        "left behind: {:?}",
        &stray[..stray.len().min(10)]
    );
}

/// A million pending deliveries to the user's one endpoint.
async fn fill(store: &RedisStore) {
    let filled = Instant::now();
    for batch in 0..DELIVERIES / BATCH {
        let events: Vec<Event> = (0..BATCH)
            .map(|i| {
                let message = format!(
                    r#"{{"event":"generated_video_success","username":"big","event_id":"e{batch}_{i}","data":{{}}}}"#
                );
                Event::parse(message.as_bytes(), 1_732_806_631).unwrap()
            })
            .collect();
        store
            .accept_events(&events, 1_732_806_631_000)
            .await
            .unwrap();
    }
    eprintln!("{DELIVERIES} deliveries written in {:?}", filled.elapsed());
}

/// Removes every key under `prefix` (the shared Redis stays clean); returns
/// those that belonged to the deleted endpoint's deliveries — there should
/// be none. De-duplication keys are expected: they expire by themselves.
async fn remove_keys(client: &redis::Client, prefix: &str) -> Vec<String> {
    let mut connection = client.get_multiplexed_async_connection().await.unwrap();
    let mut left = Vec::new();
    let mut cursor = 0_u64;
    loop {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(format!("{prefix}*"))
            .arg("COUNT")
            .arg(10_000)
            .query_async(&mut connection)
            .await
            .unwrap();
        if !keys.is_empty() {
            let _: i64 = redis::cmd("UNLINK")
                .arg(&keys)
                .query_async(&mut connection)
                .await
                .unwrap();
        }
        left.extend(
            keys.into_iter().filter(|key| {
                key.contains("dlv:") || key.contains(":ep:") || key.contains("trash")
            }),
        );
        cursor = next;
        if cursor == 0 {
            return left;
        }
    }
}
