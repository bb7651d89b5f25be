//! `keep_payloads` (SPEC §13) on each store: an event's body is kept for
//! that long from its acceptance, then gone (Redis lets it expire; SQLite's
//! sweep removes it), and `0` keeps none.

// In tests a failed unwrap is a failed test, with its location.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use webhookd_core::{Event, EventType};
use webhookd_store::{Acceptance, Delivery, RedisStore, Retention, SqliteStore, Store};
use webhookd_testkit::{Service, require, subscription, unique_prefix};

fn retention(keep_payloads: Duration) -> Retention {
    Retention {
        keep_payloads,
        ..Retention::default()
    }
}

async fn one_delivery(store: &dyn Store, username: &str, now_ms: i64) -> (Event, Delivery) {
    let endpoint = subscription(
        username,
        "https://example.com/hook",
        &[EventType::GENERATED_VIDEO_SUCCESS],
    );
    store.create_endpoint(&endpoint, 20).await.unwrap();
    let message = format!(
        r#"{{"event":"generated_video_success","username":"{username}","event_id":"e1","data":{{"n":1}}}}"#
    );
    let event = Event::parse(message.as_bytes(), now_ms / 1000).unwrap();
    let outcomes = store
        .accept_events(std::slice::from_ref(&event), now_ms)
        .await
        .unwrap();
    let [Acceptance::Accepted { deliveries, .. }] = outcomes.as_slice() else {
        panic!("{outcomes:?}");
    };
    (event, deliveries[0].clone())
}

#[tokio::test]
async fn sqlite_keeps_a_body_until_its_time_and_the_sweep_removes_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("webhookd.db");
    let store = SqliteStore::open(path.to_str().unwrap())
        .await
        .unwrap()
        .with_retention(retention(Duration::from_secs(60)));
    let now = webhookd_core::time::unix_millis();
    let (event, delivery) = one_delivery(&store, "kept", now).await;
    assert_eq!(
        store.kept_payload(&delivery, now + 59_999).await.unwrap(),
        Some(event.body())
    );
    assert_eq!(
        store.kept_payload(&delivery, now + 60_000).await.unwrap(),
        None
    );
    store.sweep(now + 60_000).await.unwrap();
    let rows: i64 = rusqlite::Connection::open(&path)
        .unwrap()
        .query_row("SELECT COUNT(*) FROM payloads", [], |row| row.get(0))
        .unwrap();
    assert_eq!(rows, 0, "the sweep removed the expired body");
}

#[tokio::test]
async fn sqlite_keeps_none_when_told_so() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("webhookd.db");
    let store = SqliteStore::open(path.to_str().unwrap())
        .await
        .unwrap()
        .with_retention(retention(Duration::ZERO));
    let now = webhookd_core::time::unix_millis();
    let (_, delivery) = one_delivery(&store, "none", now).await;
    assert_eq!(store.kept_payload(&delivery, now).await.unwrap(), None);
}

#[tokio::test]
async fn redis_lets_a_kept_body_expire_and_keeps_none_when_told_so() {
    let Some(url) = require(Service::Redis) else {
        return;
    };
    let prefix = unique_prefix("kept_payloads");
    let store = RedisStore::connect(&url, &prefix)
        .await
        .unwrap()
        .with_retention(retention(Duration::from_millis(300)));
    let now = webhookd_core::time::unix_millis();
    let (event, delivery) = one_delivery(&store, "kept", now).await;
    assert_eq!(
        store.kept_payload(&delivery, now).await.unwrap(),
        Some(event.body())
    );
    // Redis expires it on its own clock: wait for that, within bounds.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while store.kept_payload(&delivery, now).await.unwrap().is_some() {
        assert!(std::time::Instant::now() < deadline, "never expired");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let none = RedisStore::connect(&url, &unique_prefix("kept_payloads_none"))
        .await
        .unwrap()
        .with_retention(retention(Duration::ZERO));
    let (_, delivery) = one_delivery(&none, "none", now).await;
    assert_eq!(none.kept_payload(&delivery, now).await.unwrap(), None);
}
