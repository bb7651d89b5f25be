//! Payload filters at acceptance (SPEC §15): an event becomes a delivery
//! only to the endpoints whose filter holds for it, and a filter set,
//! changed or removed — by this process or another — applies to the next
//! event accepted.

use std::sync::Arc;

use webhookd_core::{Endpoint, EndpointSpec, Event, EventType};
use webhookd_store::{Acceptance, RedisStore, Store};
use webhookd_testkit::{Service, require, unique_prefix};

use super::{NOW_MS, claim_request, create, endpoint};

fn event_with(username: &str, event_id: &str, data: &str) -> Event {
    let message = format!(
        r#"{{"event":"{}","username":"{username}","event_id":"{event_id}","data":{data}}}"#,
        EventType::GENERATED_VIDEO_SUCCESS
    );
    Event::parse(message.as_bytes(), NOW_MS / 1000).unwrap()
}

fn filtered(username: &str, created_at: i64, filter: Option<&str>) -> Endpoint {
    Endpoint {
        filter: filter.map(str::to_owned),
        ..endpoint(username, created_at)
    }
}

/// The endpoints that got a delivery of each event, in order.
async fn receivers(store: &dyn Store, events: &[Event]) -> Vec<Vec<String>> {
    store
        .accept_events(events, NOW_MS)
        .await
        .unwrap()
        .into_iter()
        .map(|acceptance| match acceptance {
            Acceptance::Accepted { deliveries, .. } => deliveries
                .into_iter()
                .map(|delivery| delivery.endpoint_id)
                .collect(),
            other => panic!("expected the event to be accepted, got {other:?}"),
        })
        .collect()
}

async fn set_filter(store: &dyn Store, endpoint: &Endpoint, filter: Option<&str>) {
    let spec = EndpointSpec {
        ordering: None,
        url: endpoint.url.clone(),
        status: None,
        events: endpoint.events.clone(),
        rate_limit: None,
        options: None,
        filter: Some(filter.map(str::to_owned)),
    };
    let updated = store
        .update_endpoint(&endpoint.username, &endpoint.endpoint_id, &spec)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(updated.filter.as_deref(), filter);
}

pub(super) async fn payload_filters_decide_which_endpoints_get_an_event(store: Arc<dyn Store>) {
    let all = filtered("fil", 1, None);
    let big = filtered("fil", 2, Some(r#"{"data.amount":{"$gte":100}}"#));
    let eu = filtered(
        "fil",
        3,
        Some(r#"{"$or":[{"data.region":{"$in":["eu","uk"]}},{"data.vip":true}]}"#),
    );
    for endpoint in [&all, &big, &eu] {
        create(&*store, endpoint).await;
    }
    let read = store.get_endpoint("fil", &big.endpoint_id).await.unwrap();
    assert_eq!(read.unwrap().filter, big.filter);
    // Another owner without filters shares the batch.
    let plain = endpoint("nofil", 1);
    create(&*store, &plain).await;

    let got = receivers(
        &*store,
        &[
            event_with("fil", "f1", r#"{"amount":5,"region":"us"}"#),
            event_with("fil", "f2", r#"{"amount":500,"region":"uk"}"#),
            event_with("nofil", "f3", r#"{"amount":1}"#),
            event_with("fil", "f4", r#"{"amount":99.5,"vip":true}"#),
        ],
    )
    .await;
    let (all, big, eu) = (all.endpoint_id, big, eu.endpoint_id);
    assert_eq!(
        got,
        [
            vec![all.clone()],
            vec![all.clone(), big.endpoint_id.clone(), eu.clone()],
            vec![plain.endpoint_id.clone()],
            vec![all.clone(), eu.clone()],
        ]
    );

    // Changed: the next event follows the new filter, the fast path too.
    set_filter(&*store, &big, Some(r#"{"data.amount":{"$lt":100}}"#)).await;
    let (accepted, leased) = store
        .accept_and_claim(
            &[event_with("fil", "f5", r#"{"amount":5,"region":"us"}"#)],
            NOW_MS,
            &claim_request(NOW_MS, 10),
        )
        .await
        .unwrap();
    let Acceptance::Accepted { deliveries, .. } = &accepted[0] else {
        panic!("f5 was not accepted: {accepted:?}");
    };
    let to: Vec<&str> = deliveries.iter().map(|d| d.endpoint_id.as_str()).collect();
    assert_eq!(to, [all.as_str(), big.endpoint_id.as_str()]);
    assert_eq!(leased.len(), 2);

    // Removed: every event of its types again.
    set_filter(&*store, &big, None).await;
    let got = receivers(
        &*store,
        &[event_with("fil", "f6", r#"{"amount":1,"vip":true}"#)],
    )
    .await;
    assert_eq!(got, [vec![all, big.endpoint_id.clone(), eu]]);
}

/// Another process's change reaches this process's next accept: the Redis
/// accept decides from a snapshot of the owner's filters, and the script
/// refuses a stale one.
async fn a_filter_changed_by_another_process_applies_to_the_next_event(service: Service) {
    let Some(url) = require(service) else {
        return;
    };
    let prefix = unique_prefix("filters_elsewhere");
    let here = RedisStore::connect(&url, &prefix).await.unwrap();
    let there = RedisStore::connect(&url, &prefix).await.unwrap();
    let only_big = r#"{"data.amount":{"$gte":100}}"#;
    let watched = filtered("far", 1, Some(only_big));
    create(&there, &watched).await;
    let small = |id| event_with("far", id, r#"{"amount":1}"#);
    // `here` takes its snapshot: the filter holds back a small amount.
    assert_eq!(
        receivers(&here, &[small("s1")]).await,
        [Vec::<String>::new()]
    );

    set_filter(&there, &watched, Some(r#"{"data.amount":{"$lt":100}}"#)).await;
    assert_eq!(
        receivers(&here, &[small("s2"), small("s3")]).await,
        [
            vec![watched.endpoint_id.clone()],
            vec![watched.endpoint_id.clone()]
        ]
    );
    // A filtered endpoint created elsewhere is one the snapshot lacks.
    let newcomer = filtered("far", 2, Some(only_big));
    create(&there, &newcomer).await;
    assert_eq!(
        receivers(&here, &[small("s4")]).await,
        [vec![watched.endpoint_id.clone()]]
    );
    set_filter(&there, &watched, None).await;
    assert_eq!(
        receivers(&here, &[event_with("far", "s5", r#"{"amount":100}"#)]).await,
        [vec![
            watched.endpoint_id.clone(),
            newcomer.endpoint_id.clone()
        ]]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_a_filter_changed_by_another_process_applies_to_the_next_event() {
    a_filter_changed_by_another_process_applies_to_the_next_event(Service::Redis).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_a_filter_changed_by_another_process_applies_to_the_next_event() {
    a_filter_changed_by_another_process_applies_to_the_next_event(Service::RedisCluster).await;
}
