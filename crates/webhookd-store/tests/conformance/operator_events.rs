//! Operator events at the store (SPEC §15): recorded in the outbox in the
//! same step as what they tell — a delivery dead, an endpoint disabled, a
//! quota reached — read back oldest first and removed once sent on; and
//! not recorded at all while operator events are off.

use std::sync::Arc;

use serde_json::Value;
use webhookd_core::quota::Quotas;
use webhookd_store::{
    AttemptRecord, AttemptResult, Claim, FinishedAttempt, Recorded, RedisStore, SqliteStore, Store,
};
use webhookd_testkit::{Service, require, unique_prefix};

use super::{AUTO_DISABLE_AFTER, NOW_MS, attempt, claim_at, create, endpoint, event};

const QUOTAS: Quotas = Quotas {
    max_endpoints: 20,
    test_sends_per_minute: 10,
    max_kept_deliveries_per_endpoint: 3,
    max_events_per_day: Some(4),
};

async fn records(store: &dyn Store) -> Vec<Value> {
    store
        .operator_events(100)
        .await
        .unwrap()
        .iter()
        .map(|entry| serde_json::from_str(&entry.record).unwrap())
        .collect()
}

fn failed(claim: &Claim, at_ms: i64, result: AttemptResult) -> FinishedAttempt {
    FinishedAttempt {
        claim: claim.clone(),
        record: AttemptRecord {
            started_at: at_ms,
            ..attempt(claim.delivery.attempts + 1, Some(500), "http_5xx")
        },
        result,
    }
}

async fn operator_events_are_recorded_with_what_they_tell(store: Arc<dyn Store>) {
    let target = endpoint("ops", 1);
    create(&*store, &target).await;
    let video = webhookd_core::EventType::GENERATED_VIDEO_SUCCESS;
    let accepted = store
        .accept_events(
            &(1..=5)
                .map(|n| event("ops", &format!("e{n}"), &video))
                .collect::<Vec<_>>(),
            NOW_MS,
        )
        .await
        .unwrap();
    // Three kept, then the fourth is refused for the kept quota (one event
    // for the first refusal only), the fifth for the daily quota.
    let reached = records(&*store).await;
    assert_eq!(reached.len(), 2, "{reached:?}");
    assert_eq!(reached[0]["type"], "quota.reached");
    assert_eq!(
        reached[0]["data"]["quota"],
        "max_kept_deliveries_per_endpoint"
    );
    assert_eq!(
        reached[0]["data"]["endpoint_id"],
        target.endpoint_id.as_str()
    );
    assert_eq!(reached[0]["data"]["limit"], 3);
    assert_eq!(reached[0]["timestamp"], NOW_MS / 1000);
    assert_eq!(reached[1]["data"]["quota"], "max_events_per_day");
    assert_eq!(reached[1]["data"]["username"], "ops");
    assert_eq!(reached[1]["data"]["limit"], 4);
    assert!(matches!(
        accepted[4],
        webhookd_store::Acceptance::OverDailyQuota { .. }
    ));
    // Refused again the same day: nothing more to tell.
    store
        .accept_events(&[event("ops", "e6", &video)], NOW_MS + 1)
        .await
        .unwrap();
    assert_eq!(records(&*store).await.len(), 2);

    // Sent on: removed, what came after stays.
    let taken = store.operator_events(1).await.unwrap();
    store.remove_operator_events(&taken).await.unwrap();
    let left = records(&*store).await;
    assert_eq!(left.len(), 1);
    assert_eq!(left[0]["data"]["quota"], "max_events_per_day");
    let rest = store.operator_events(100).await.unwrap();
    store.remove_operator_events(&rest).await.unwrap();

    a_death_and_a_disable_are_told(&*store, &target).await;
}

/// Continues [`operator_events_are_recorded_with_what_they_tell`] with its
/// endpoint's three kept deliveries.
async fn a_death_and_a_disable_are_told(store: &dyn Store, target: &webhookd_core::Endpoint) {
    let video = webhookd_core::EventType::GENERATED_VIDEO_SUCCESS;
    // A dead delivery, then the streak that disables the endpoint.
    let claims = claim_at(store, NOW_MS, 10).await;
    assert_eq!(claims.len(), 3);
    store
        .record_attempts(&[failed(&claims[0], NOW_MS, AttemptResult::Dead)])
        .await
        .unwrap();
    let disabled = store
        .record_attempts(&[failed(
            &claims[1],
            NOW_MS + 3_600_000,
            AttemptResult::RetryAt(NOW_MS + 7_200_000),
        )])
        .await
        .unwrap();
    assert!(
        matches!(disabled[0], Recorded::WrittenAndDisabled { .. }),
        "{disabled:?}"
    );
    let told = records(store).await;
    assert_eq!(told.len(), 2, "{told:?}");
    let dead = &told[0];
    assert_eq!(dead["type"], "delivery.dead");
    assert_eq!(
        dead["data"]["delivery_id"],
        claims[0].delivery.delivery_id.as_str()
    );
    assert_eq!(
        dead["data"]["event_id"],
        claims[0].delivery.event_id.as_str()
    );
    assert_eq!(dead["data"]["event"], video.as_str());
    assert_eq!(dead["data"]["username"], "ops");
    assert_eq!(dead["data"]["attempts"], 1);
    assert!(dead["id"].as_str().unwrap().starts_with("op_dead_"));
    let off = &told[1];
    assert_eq!(off["type"], "endpoint.disabled");
    assert_eq!(off["data"]["endpoint_id"], target.endpoint_id.as_str());
    assert_eq!(off["data"]["failing_since"], NOW_MS / 1000);
    assert!(
        off["data"]["reason"]
            .as_str()
            .unwrap()
            .starts_with("no successful delivery since"),
        "{off}"
    );

    // From outside the store's own steps (the API, ingest): added as given.
    store
        .add_operator_events(&[
            r#"{"id":"op_x","type":"ingest.dead_lettered","timestamp":1,"data":{}}"#.into(),
        ])
        .await
        .unwrap();
    // (On Redis it goes to the partition its record hashes to: the
    // outbox is in order per partition, not across them.)
    let all = records(store).await;
    assert_eq!(all.len(), 3);
    assert!(
        all.iter()
            .any(|record| record["type"] == "ingest.dead_lettered")
    );
}

/// Off (the default): nothing is recorded.
async fn without_targets_nothing_is_recorded(store: Arc<dyn Store>) {
    let target = endpoint("quiet", 1);
    create(&*store, &target).await;
    let video = webhookd_core::EventType::GENERATED_VIDEO_SUCCESS;
    store
        .accept_events(
            &(1..=6)
                .map(|n| event("quiet", &format!("q{n}"), &video))
                .collect::<Vec<_>>(),
            NOW_MS,
        )
        .await
        .unwrap();
    let claims = claim_at(&*store, NOW_MS, 10).await;
    store
        .record_attempts(&[failed(&claims[0], NOW_MS, AttemptResult::Dead)])
        .await
        .unwrap();
    assert!(records(&*store).await.is_empty());
}

async fn sqlite(operator_events: bool) -> (Arc<dyn Store>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("webhookd.db");
    let store = SqliteStore::open(path.to_str().unwrap())
        .await
        .unwrap()
        .with_auto_disable_after(AUTO_DISABLE_AFTER)
        .with_quotas(QUOTAS)
        .with_operator_events(operator_events);
    (Arc::new(store), dir)
}

async fn redis(service: Service, test: &str, operator_events: bool) -> Option<Arc<dyn Store>> {
    let url = require(service)?;
    let store = RedisStore::connect(&url, &unique_prefix(test))
        .await
        .unwrap()
        .with_auto_disable_after(AUTO_DISABLE_AFTER)
        .with_quotas(QUOTAS)
        .with_operator_events(operator_events);
    Some(Arc::new(store))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_operator_events_are_recorded_with_what_they_tell() {
    let (store, _dir) = sqlite(true).await;
    operator_events_are_recorded_with_what_they_tell(store).await;
    let (store, _dir) = sqlite(false).await;
    without_targets_nothing_is_recorded(store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_operator_events_are_recorded_with_what_they_tell() {
    let Some(store) = redis(Service::Redis, "operator-on", true).await else {
        return;
    };
    operator_events_are_recorded_with_what_they_tell(store).await;
    let store = redis(Service::Redis, "operator-off", false).await.unwrap();
    without_targets_nothing_is_recorded(store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_operator_events_are_recorded_with_what_they_tell() {
    let Some(store) = redis(Service::RedisCluster, "operator-on", true).await else {
        return;
    };
    operator_events_are_recorded_with_what_they_tell(store).await;
    let store = redis(Service::RedisCluster, "operator-off", false)
        .await
        .unwrap();
    without_targets_nothing_is_recorded(store).await;
}
