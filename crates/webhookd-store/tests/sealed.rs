//! Secrets at rest (SPEC §7) on both stores: after endpoints are created
//! and rotated, nothing the store holds contains a secret, the store still
//! answers the right ones, secrets stored before a key existed are sealed
//! at the next start, and a wrong key is refused by name.

// In tests a failed unwrap is a failed test, with its location.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use webhookd_core::config::StoreUrl;
use webhookd_core::encryption_key::EncryptionKey;
use webhookd_core::{Config, Endpoint, EndpointStatus, EventType, ids};
use webhookd_store::{RedisStore, SqliteStore, Store, key_id};
use webhookd_testkit::{Service, require, unique_prefix};

fn endpoint(username: &str) -> Endpoint {
    Endpoint {
        ordering: None,
        filter: None,
        endpoint_id: ids::new_endpoint_id(),
        url: "https://example.com/hook".into(),
        secret: ids::new_secret(),
        status: EndpointStatus::Enabled,
        events: vec![EventType::GENERATED_VIDEO_SUCCESS],
        username: username.into(),
        created_at: 0,
        previous_secret: None,
        failing_since: None,
        quota_refused: 0,
        disabled_reason: None,
        rate_limit: None,
        // Delivery options hold secret header values (SPEC §14): sealed too.
        options: Some(format!(
            r#"{{"headers":[{{"name":"X-Api-Key","value":"key-{}","secret":true}}]}}"#,
            ids::new_secret()
        )),
    }
}

/// The secret header value in an endpoint's options.
fn header_secret(endpoint: &Endpoint) -> String {
    let options = webhookd_core::DeliveryOptions::from_stored(endpoint.options.as_deref()).unwrap();
    options.headers[0].value.clone()
}

/// Creates two endpoints through `store` and rotates one with a grace, so
/// three secrets are live; returns them, the endpoints as created.
async fn create_and_rotate(store: &Arc<dyn Store>) -> (Vec<Endpoint>, Vec<String>) {
    store
        .add_api_key("sealer", &ids::hash_api_key(&ids::new_api_key()), 0)
        .await
        .unwrap();
    let endpoints = vec![endpoint("sealer"), endpoint("sealer")];
    for created in &endpoints {
        store.create_endpoint(created, 20).await.unwrap();
    }
    let rotated = ids::new_secret();
    let after = store
        .rotate_secret(
            "sealer",
            &endpoints[0].endpoint_id,
            &rotated,
            Some(i64::MAX / 2),
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(after.secret, rotated);
    assert_eq!(after.previous_secret.unwrap().secret, endpoints[0].secret);
    let secrets = vec![
        endpoints[0].secret.clone(),
        endpoints[1].secret.clone(),
        rotated,
        header_secret(&endpoints[0]),
        header_secret(&endpoints[1]),
    ];
    (endpoints, secrets)
}

/// The store answers the secrets it was given.
async fn answers_the_secrets(store: &Arc<dyn Store>, secrets: &[String]) {
    let listed = store.list_endpoints("sealer").await.unwrap();
    assert_eq!(listed[0].secret, secrets[2]);
    assert_eq!(
        listed[0].previous_secret.as_ref().unwrap().secret,
        secrets[0]
    );
    assert_eq!(listed[1].secret, secrets[1]);
    assert_eq!(header_secret(&listed[0]), secrets[3]);
    assert_eq!(header_secret(&listed[1]), secrets[4]);
}

fn config(store: StoreUrl, prefix: &str, keys: &[&EncryptionKey]) -> Config {
    Config {
        store,
        redis_prefix: prefix.to_owned(),
        encryption_keys: keys.iter().map(|&key| key.clone()).collect(),
        ..Config::default()
    }
}

fn holds(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|window| window == needle.as_bytes())
}

#[tokio::test]
async fn sqlite_holds_no_secret_and_seals_the_ones_stored_before_a_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("webhookd.db");
    let path = path.to_str().unwrap().to_owned();
    // Secrets written by a webhookd that did not seal yet.
    let raw: Arc<dyn Store> = Arc::new(SqliteStore::open(&path).await.unwrap());
    let (_, secrets) = create_and_rotate(&raw).await;
    drop(raw);

    let key = EncryptionKey::generate();
    let sqlite = StoreUrl::Sqlite { path: path.clone() };
    let (store, report) =
        webhookd_store::open_and_reseal(&config(sqlite.clone(), "", &[&key]), false, &|_| ())
            .await
            .unwrap();
    assert_eq!((report.secrets, report.resealed), (5, 5));
    answers_the_secrets(&store, &secrets).await;
    let (_, more) = create_and_rotate_more(&store).await;
    drop(store);
    let mut bytes = Vec::new();
    for suffix in ["", "-wal"] {
        bytes.extend(std::fs::read(format!("{path}{suffix}")).unwrap_or_default());
    }
    for secret in secrets.iter().chain(&more) {
        assert!(!holds(&bytes, secret), "{secret} is in the database file");
    }
    assert!(holds(&bytes, &format!("sealed:v1:{}:", key_id(&key))));

    let wrong = EncryptionKey::generate();
    let error = webhookd_store::open_and_reseal(&config(sqlite, "", &[&wrong]), false, &|_| ())
        .await
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("WEBHOOKD_ENCRYPTION_KEY") && error.contains(&key_id(&key)),
        "{error}"
    );
}

/// One more endpoint created through the sealing store itself.
async fn create_and_rotate_more(store: &Arc<dyn Store>) -> (Endpoint, Vec<String>) {
    let more = endpoint("sealer");
    store.create_endpoint(&more, 20).await.unwrap();
    let listed = store.list_endpoints("sealer").await.unwrap();
    assert_eq!(listed.last().unwrap().secret, more.secret);
    assert_eq!(header_secret(listed.last().unwrap()), header_secret(&more));
    let secrets = vec![more.secret.clone(), header_secret(&more)];
    (more, secrets)
}

#[tokio::test]
async fn redis_holds_no_secret_and_seals_the_ones_stored_before_a_key() {
    let Some(url) = require(Service::Redis) else {
        return;
    };
    let prefix = unique_prefix("sealed");
    let raw: Arc<dyn Store> = Arc::new(RedisStore::connect(&url, &prefix).await.unwrap());
    let (_, secrets) = create_and_rotate(&raw).await;

    let (old, new) = (EncryptionKey::generate(), EncryptionKey::generate());
    let redis = StoreUrl::Redis { url: url.clone() };
    let (store, report) =
        webhookd_store::open_and_reseal(&config(redis.clone(), &prefix, &[&old]), false, &|_| ())
            .await
            .unwrap();
    assert_eq!((report.secrets, report.resealed), (5, 5));
    answers_the_secrets(&store, &secrets).await;
    let (_, more) = create_and_rotate_more(&store).await;

    let values = every_value_under(&url, &prefix).await;
    for secret in secrets.iter().chain(&more) {
        assert!(!holds(&values, secret), "{secret} is in Redis");
    }
    assert!(holds(&values, &format!("sealed:v1:{}:", key_id(&old))));

    // Rotating: the new key first re-seals everything, user by user, as
    // progress tells; then it alone opens.
    let seen = std::sync::Mutex::new(Vec::new());
    let (_, report) = webhookd_store::open_and_reseal(
        &config(redis.clone(), &prefix, &[&new, &old]),
        false,
        &|progress| seen.lock().unwrap().push(progress),
    )
    .await
    .unwrap();
    assert_eq!((report.secrets, report.resealed), (7, 7));
    let seen = seen.into_inner().unwrap();
    let total = seen.last().unwrap().total;
    assert!(total >= 1);
    assert_eq!(
        seen.first(),
        Some(&webhookd_store::Progress { done: 0, total })
    );
    assert_eq!(
        seen.last(),
        Some(&webhookd_store::Progress { done: total, total })
    );
    assert!(seen.windows(2).all(|pair| pair[0].done <= pair[1].done));
    let values = every_value_under(&url, &prefix).await;
    assert!(!holds(&values, &format!("sealed:v1:{}:", key_id(&old))));
    let (store, report) =
        webhookd_store::open_and_reseal(&config(redis.clone(), &prefix, &[&new]), false, &|_| ())
            .await
            .unwrap();
    assert_eq!(report.resealed, 0);
    answers_the_secrets(&store, &secrets).await;

    for keys in [vec![&old], vec![]] {
        let error =
            webhookd_store::open_and_reseal(&config(redis.clone(), &prefix, &keys), false, &|_| ())
                .await
                .unwrap_err()
                .to_string();
        assert!(error.contains("WEBHOOKD_ENCRYPTION_KEY"), "{error}");
    }
}

/// Every value of every key under `prefix`, concatenated, read by type
/// (not `DUMP`, whose compression could hide a secret from the search).
async fn every_value_under(url: &str, prefix: &str) -> Vec<u8> {
    let mut connection = redis::Client::open(url)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let mut keys = Vec::new();
    let mut cursor = 0u64;
    loop {
        let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(format!("{prefix}*"))
            .arg("COUNT")
            .arg(10_000)
            .query_async(&mut connection)
            .await
            .unwrap();
        keys.extend(batch);
        if next == 0 {
            break;
        }
        cursor = next;
    }
    assert!(!keys.is_empty());
    let mut values = Vec::new();
    for key in keys {
        let kind: String = redis::cmd("TYPE")
            .arg(&key)
            .query_async(&mut connection)
            .await
            .unwrap();
        let parts: Vec<Vec<u8>> = match kind.as_str() {
            "string" => vec![
                redis::cmd("GET")
                    .arg(&key)
                    .query_async(&mut connection)
                    .await
                    .unwrap(),
            ],
            "hash" => redis::cmd("HGETALL")
                .arg(&key)
                .query_async(&mut connection)
                .await
                .unwrap(),
            "set" => redis::cmd("SMEMBERS")
                .arg(&key)
                .query_async(&mut connection)
                .await
                .unwrap(),
            "zset" => redis::cmd("ZRANGE")
                .arg(&key)
                .arg(0)
                .arg(-1)
                .query_async(&mut connection)
                .await
                .unwrap(),
            "list" => redis::cmd("LRANGE")
                .arg(&key)
                .arg(0)
                .arg(-1)
                .query_async(&mut connection)
                .await
                .unwrap(),
            other => panic!("{key} is a {other}"),
        };
        values.push(key.into_bytes());
        values.extend(parts);
    }
    values.concat()
}

/// The delivery path opens each sealed secret once per process, not once
/// per claim: 200 deliveries to two endpoints (one mid-rotation, so three
/// live secrets, and each with sealed delivery options) cost five
/// decryptions.
#[tokio::test]
async fn claims_cost_one_decryption_per_secret_not_per_delivery() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("webhookd.db");
    let raw: Arc<dyn Store> = Arc::new(SqliteStore::open(path.to_str().unwrap()).await.unwrap());
    let sealed = Arc::new(webhookd_store::Sealed::new(
        raw,
        webhookd_store::SecretBox::new(&[EncryptionKey::generate()]),
    ));
    let store: Arc<dyn Store> = Arc::clone(&sealed) as Arc<dyn Store>;
    let (_, secrets) = create_and_rotate(&store).await;
    let opened_by_setup = sealed.decryptions();
    assert_eq!(
        opened_by_setup, 3,
        "rotate answers the endpoint: its two secrets and its options"
    );

    let now_ms = 1_732_806_631_000;
    let events: Vec<webhookd_core::Event> = (0..100)
        .map(|i| {
            let message = format!(
                r#"{{"event":"generated_video_success","username":"sealer","event_id":"evt_{i}","data":{{}}}}"#
            );
            webhookd_core::Event::parse(message.as_bytes(), now_ms / 1000).unwrap()
        })
        .collect();
    store.accept_events(&events, now_ms).await.unwrap();
    let request = webhookd_store::ClaimRequest {
        now_ms,
        lease_until_ms: now_ms + 30_000,
        park_until_ms: now_ms + 60_000,
        limit: 1000,
        per_endpoint: 1000,
        room: std::collections::HashMap::new(),
        ..webhookd_store::ClaimRequest::default()
    };
    let claims = store.claim_due(&request).await.unwrap();
    assert_eq!(claims.len(), 200);
    for claim in &claims {
        assert!(secrets.contains(&claim.secret));
        let options = claim.options.as_deref().unwrap();
        assert!(
            secrets
                .iter()
                .any(|secret| options.contains(secret.as_str()))
        );
    }
    assert_eq!(
        sealed.decryptions(),
        5,
        "two more: the second endpoint's secret and options"
    );
}

/// A sealed secret copied onto another endpoint does not open there, even
/// after this process has opened (and cached) it for its own endpoint.
#[tokio::test]
async fn a_secret_copied_onto_another_endpoint_does_not_open_even_when_cached() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("webhookd.db");
    let raw: Arc<dyn Store> = Arc::new(SqliteStore::open(path.to_str().unwrap()).await.unwrap());
    let store: Arc<dyn Store> = Arc::new(webhookd_store::Sealed::new(
        Arc::clone(&raw),
        webhookd_store::SecretBox::new(&[EncryptionKey::generate()]),
    ));
    let (endpoints, _) = create_and_rotate(&store).await;
    let listed = store.list_endpoints("sealer").await.unwrap();
    assert_eq!(listed[1].secret, endpoints[1].secret, "opened, and cached");
    // Copy endpoint 1's sealed secret over endpoint 0's, in the store below.
    let stored = raw.list_endpoints("sealer").await.unwrap();
    let copied = raw
        .replace_secret(
            "sealer",
            &stored[0].endpoint_id,
            webhookd_store::SecretSlot::Current,
            &stored[0].secret,
            &stored[1].secret,
        )
        .await
        .unwrap();
    assert!(copied);
    let error = store
        .list_endpoints("sealer")
        .await
        .unwrap_err()
        .to_string();
    assert!(error.contains("copied from another endpoint"), "{error}");
}

/// "Correctness, round 3", item 5: a process meets a secret sealed with a
/// key it does not hold (mid-rotation, the other process re-sealed it).
/// Only that claim is set aside — handed back for a process holding the
/// key, and `ping` (so `/readyz`) says why — while the healthy endpoint
/// leased in the same batch is sent; an accept that leased both answers
/// for the committed event instead of failing. Before, the whole batch
/// failed, and its claims stayed hidden for a lease, again and again.
async fn an_unopenable_secret_sets_aside_only_its_own_claim(raw: Arc<dyn Store>) {
    let old_key = EncryptionKey::generate();
    let new_key = EncryptionKey::generate();
    let behind = webhookd_store::Sealed::new(
        Arc::clone(&raw),
        webhookd_store::SecretBox::new(std::slice::from_ref(&old_key)),
    );
    let ahead = webhookd_store::Sealed::new(
        Arc::clone(&raw),
        webhookd_store::SecretBox::new(&[new_key, old_key]),
    );
    let healthy = endpoint("sealer");
    behind.create_endpoint(&healthy, 20).await.unwrap();
    let resealed = endpoint("sealer");
    ahead.create_endpoint(&resealed, 20).await.unwrap();

    let now_ms = 1_732_806_631_000;
    let event = |id: &str| {
        let message = format!(
            r#"{{"event":"generated_video_success","username":"sealer","event_id":"{id}","data":{{}}}}"#
        );
        webhookd_core::Event::parse(message.as_bytes(), now_ms / 1000).unwrap()
    };
    let request = |now_ms: i64| webhookd_store::ClaimRequest {
        now_ms,
        lease_until_ms: now_ms + 30_000,
        park_until_ms: now_ms + 60_000,
        limit: 10,
        per_endpoint: 10,
        ..webhookd_store::ClaimRequest::default()
    };
    // The fast path: the event is committed, so the accept answers.
    let (accepted, leased) = behind
        .accept_and_claim(&[event("evt_fast")], now_ms, &request(now_ms))
        .await
        .unwrap();
    assert_eq!(accepted[0].delivery_count(), 2);
    assert_eq!(leased.len(), 1);
    assert_eq!(leased[0].delivery.endpoint_id, healthy.endpoint_id);
    assert_eq!(leased[0].secret, healthy.secret);
    let readiness = behind.ping().await.unwrap_err().to_string();
    assert!(readiness.contains("does not open"), "{readiness}");

    // The claim loop: the same.
    behind
        .accept_events(&[event("evt_loop")], now_ms)
        .await
        .unwrap();
    let claims = behind.claim_due(&request(now_ms)).await.unwrap();
    assert_eq!(claims.len(), 1, "the healthy endpoint's delivery only");
    assert_eq!(claims[0].delivery.endpoint_id, healthy.endpoint_id);

    // The set-aside deliveries wait a minute, then a process holding the
    // key takes them.
    assert!(
        ahead
            .claim_due(&request(now_ms + 1))
            .await
            .unwrap()
            .is_empty()
    );
    let later = now_ms + 61_000;
    let taken = ahead.claim_due(&request(later)).await.unwrap();
    let to_resealed: Vec<_> = taken
        .iter()
        .filter(|claim| claim.delivery.endpoint_id == resealed.endpoint_id)
        .collect();
    assert_eq!(to_resealed.len(), 2, "both events' deliveries to it");
    assert!(
        to_resealed
            .iter()
            .all(|claim| claim.secret == resealed.secret)
    );
}

#[tokio::test]
async fn sqlite_an_unopenable_secret_sets_aside_only_its_own_claim() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("webhookd.db");
    let raw: Arc<dyn Store> = Arc::new(SqliteStore::open(path.to_str().unwrap()).await.unwrap());
    an_unopenable_secret_sets_aside_only_its_own_claim(raw).await;
}

#[tokio::test]
async fn redis_an_unopenable_secret_sets_aside_only_its_own_claim() {
    let Some(url) = require(Service::Redis) else {
        return;
    };
    let raw: Arc<dyn Store> = Arc::new(
        RedisStore::connect(&url, &unique_prefix("unopenable"))
            .await
            .unwrap(),
    );
    an_unopenable_secret_sets_aside_only_its_own_claim(raw).await;
}
