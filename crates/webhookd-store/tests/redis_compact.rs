//! Delivery hashes on Redis stay compact while they wait: a delivery
//! written and leased at acceptance (the durable fast path) keeps its body
//! whole (its hash is then a `hashtable`, which Redis never turns back into
//! a listpack), and is written again in pieces once it has to wait — after
//! a failed attempt.

// In tests a failed unwrap is a failed test, with its location.
#![allow(clippy::unwrap_used)]

use webhookd_core::{Event, EventType};
use webhookd_store::{AttemptRecord, AttemptResult, ClaimRequest, RedisStore, Store};
use webhookd_testkit::{Service, require, subscription, unique_prefix};

const NOW_MS: i64 = 1_732_806_631_000;

#[tokio::test]
async fn a_delivery_leased_at_acceptance_is_compacted_once_it_waits() {
    let Some(url) = require(Service::Redis) else {
        return;
    };
    let prefix = unique_prefix("compact");
    let store = RedisStore::connect(&url, &prefix).await.unwrap();
    let client = redis::Client::open(url.as_str()).unwrap();
    let mut redis = client.get_multiplexed_async_connection().await.unwrap();
    let endpoint = subscription(
        "compact",
        "https://example.com/hook",
        &[EventType::GENERATED_VIDEO_SUCCESS],
    );
    store.create_endpoint(&endpoint, 20).await.unwrap();
    // A body of 65–512 bytes, multi-byte characters at the piece borders.
    let text = "é".repeat(90);
    let message = format!(
        r#"{{"event":"generated_video_success","username":"compact","event_id":"e1","data":{{"text":"{text}"}}}}"#
    );
    let event = Event::parse(message.as_bytes(), NOW_MS / 1000).unwrap();
    let body = event.body();
    assert!((65..=512).contains(&body.len()));

    // Written and leased at once (202 = durable): its body whole.
    let (_, claims) = store
        .accept_and_claim(std::slice::from_ref(&event), NOW_MS, &request(NOW_MS))
        .await
        .unwrap();
    assert_eq!(claims.len(), 1);
    let key = delivery_key(&mut redis, &prefix).await;
    assert_eq!(encoding(&mut redis, &key).await, "hashtable");
    assert_eq!(claims[0].delivery.body, body);
    let failed = AttemptRecord {
        attempt: 1,
        started_at: NOW_MS,
        duration_ms: 12,
        status_code: Some(503),
        reason: "http_5xx".into(),
        response: Some("down | for maintenance".into()),
        signing: None,
    };
    let retry_at = NOW_MS + 5_000;
    assert!(
        store
            .record_attempt(&claims[0], &failed, AttemptResult::RetryAt(retry_at))
            .await
            .unwrap()
    );

    assert_eq!(encoding(&mut redis, &key).await, "listpack");
    let (delivery, attempts) = store
        .delivery_attempts(
            "compact",
            &endpoint.endpoint_id,
            &claims[0].delivery.delivery_id,
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(delivery.body, body, "the body reads back byte for byte");
    assert_eq!(delivery.next_attempt_at, retry_at);
    assert_eq!(attempts, vec![failed]);
    let again = store.claim_due(&request(retry_at)).await.unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].delivery.body, body, "and is sent byte for byte");

    // Not leased at acceptance: it waits, and is written in pieces at once.
    let second = Event::parse(message.replace("e1", "e2").as_bytes(), NOW_MS / 1000).unwrap();
    store
        .accept_and_claim(&[second], NOW_MS, &ClaimRequest::default())
        .await
        .unwrap();
    let keys = delivery_keys(&mut redis, &prefix).await;
    let other = keys.iter().find(|k| **k != key).unwrap();
    assert_eq!(encoding(&mut redis, other).await, "listpack");
    let _: i64 = redis::cmd("UNLINK")
        .arg(&keys)
        .query_async(&mut redis)
        .await
        .unwrap();
}

fn request(now_ms: i64) -> ClaimRequest {
    ClaimRequest {
        now_ms,
        lease_until_ms: now_ms + 60_000,
        park_until_ms: now_ms + 60_000,
        limit: 10,
        per_endpoint: 10,
        ..ClaimRequest::default()
    }
}

async fn delivery_keys(redis: &mut redis::aio::MultiplexedConnection, prefix: &str) -> Vec<String> {
    redis::cmd("KEYS")
        .arg(format!("{prefix}*:dlv:*"))
        .query_async(redis)
        .await
        .unwrap()
}

async fn delivery_key(redis: &mut redis::aio::MultiplexedConnection, prefix: &str) -> String {
    let keys = delivery_keys(redis, prefix).await;
    assert_eq!(keys.len(), 1, "{keys:?}");
    keys.into_iter().next().unwrap()
}

async fn encoding(redis: &mut redis::aio::MultiplexedConnection, key: &str) -> String {
    redis::cmd("OBJECT")
        .arg("ENCODING")
        .arg(key)
        .query_async(redis)
        .await
        .unwrap()
}
