//! One conformance suite, run against every store: each test below is a
//! sentence of the store contract, generated for SQLite, Redis and Redis
//! Cluster (with a prefix of its own, so runs never see each other's keys).

// In tests a failed unwrap is a failed test, with its location.
#![allow(clippy::unwrap_used)]

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use webhookd_core::endpoint::MAX_ENDPOINTS_PER_USER;
use webhookd_core::{Endpoint, EndpointSpec, EndpointStatus, Event, EventType, ids};
use webhookd_store::{
    Acceptance, AttemptRecord, AttemptResult, Claim, ClaimRequest, CreateOutcome, Delivery,
    DeliveryStats, DeliveryStatus, FinishedAttempt, Page, Recorded, RedisStore, RetryOutcome,
    SqliteStore, Store,
};
use webhookd_testkit::{Service, require, unique_prefix};

/// Generates `sqlite::<test>`, `redis::<test>` and `cluster::<test>` for
/// every listed test.
macro_rules! conformance {
    ($($test:ident),+ $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $test() {
                    let dir = tempfile::tempdir().unwrap();
                    let path = dir.path().join("webhookd.db");
                    let store = webhookd_store::SqliteStore::open(path.to_str().unwrap())
                        .await
                        .unwrap()
                        .with_auto_disable_after(super::AUTO_DISABLE_AFTER);
                    super::$test(std::sync::Arc::new(store)).await;
                }
            )+
        }
        mod redis {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $test() {
                    let Some(store) = super::redis_store(webhookd_testkit::Service::Redis, stringify!($test)).await else { return };
                    super::$test(std::sync::Arc::new(store)).await;
                }
            )+
        }
        mod cluster {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $test() {
                    let Some(store) = super::redis_store(webhookd_testkit::Service::RedisCluster, stringify!($test)).await else { return };
                    super::$test(std::sync::Arc::new(store)).await;
                }
            )+
        }
    };
}

conformance!(
    a_created_endpoint_reads_back_exactly,
    endpoints_list_oldest_first,
    users_never_see_each_others_endpoints,
    the_limit_holds_under_fifty_concurrent_creates,
    update_changes_url_status_and_events_but_never_the_secret,
    update_and_delete_of_a_missing_endpoint_report_none,
    deleting_frees_a_place_under_the_limit,
    api_keys_map_to_their_user_until_revoked,
    a_setting_is_inserted_once,
    processes_are_running_until_their_announcement_runs_out,
    ping_answers,
    an_event_fans_out_to_each_enabled_subscribed_endpoint,
    the_same_event_id_fans_out_once,
    an_event_without_subscribers_is_accepted_with_no_deliveries,
    endpoint_changes_apply_to_the_next_event,
    deleting_an_endpoint_drops_its_deliveries,
    deliveries_page_in_creation_order,
    a_claimed_delivery_is_hidden_until_its_lease_ends,
    a_retry_comes_due_at_its_time_and_the_attempt_log_grows,
    long_multibyte_bodies_and_records_come_back_byte_for_byte,
    dead_deliveries_are_kept_and_can_be_sent_again,
    release_hands_a_delivery_back_without_spending_an_attempt,
    disabled_endpoints_park_their_deliveries,
    concurrent_claimers_never_share_a_delivery,
    claims_take_each_endpoint_up_to_its_room,
    a_batch_of_attempts_records_each_on_its_own,
    accepting_can_lease_fresh_deliveries_at_once,
    delivery_stats_count_due_scheduled_and_dead,
    finished_deliveries_are_removed_after_their_retention,
    test_deliveries_are_kept_a_day,
    listings_page_correctly_while_entries_expire,
    deleting_an_endpoint_removes_its_deliveries_in_bounded_steps,
    a_resent_dead_delivery_is_claimed_as_its_last_attempt,
    updates_and_deletes_mark_the_endpoint_changed,
    rotation_keeps_at_most_two_secrets,
    a_failure_streak_disables_and_a_success_or_enabling_ends_it,
    recover_takes_the_dead_of_a_window_in_bounded_steps,
    portal_links_sign_in_until_they_expire_and_expired_ones_are_forgotten,
    revoking_keys_ends_the_users_portal_links,
    a_rate_limit_caps_the_deliveries_that_start_each_second,
    an_endpoint_holding_its_kept_deliveries_gets_no_new_ones,
    events_past_the_daily_quota_are_refused_and_not_remembered,
    listings_run_newest_first_and_filter_by_event_id_and_time,
    a_filtered_listing_pages_through_a_large_index,
    an_events_body_is_kept_once_and_outlives_its_delivered_copies,
    delivery_options_are_kept_changed_and_claimed,
    payload_filters_decide_which_endpoints_get_an_event,
    trace_contexts_are_kept_with_deliveries_and_claimed,
    an_ordered_endpoint_sends_one_at_a_time_in_acceptance_order,
    keyed_lines_proceed_side_by_side_each_in_its_order,
);

mod filters;
mod inspecting;
mod lifecycle;
mod listings;
mod operator_events;
mod options;
mod ordering;
mod quotas;
mod scale_out;
mod single_slot;
mod users;
use filters::*;
use inspecting::*;
use lifecycle::*;
use listings::*;
use options::*;
use ordering::*;
use quotas::*;
use scale_out::*;
use users::*;

/// Every conformance store disables endpoints failing this long (tests
/// choose their attempts' times, so an hour costs nothing).
const AUTO_DISABLE_AFTER: std::time::Duration = std::time::Duration::from_secs(3600);

async fn redis_store(service: Service, test: &str) -> Option<RedisStore> {
    let url = require(service)?;
    Some(
        RedisStore::connect(&url, &unique_prefix(test))
            .await
            .expect("Redis connects")
            .with_auto_disable_after(AUTO_DISABLE_AFTER),
    )
}

fn endpoint(username: &str, created_at: i64) -> Endpoint {
    Endpoint {
        ordering: None,
        filter: None,
        endpoint_id: ids::new_endpoint_id(),
        url: format!("https://example.com/{username}/{created_at}"),
        secret: ids::new_secret(),
        status: EndpointStatus::Enabled,
        events: vec![
            EventType::GENERATED_VIDEO_SUCCESS,
            EventType::GENERATED_VIDEO_FAILED,
        ],
        username: username.into(),
        created_at,
        previous_secret: None,
        failing_since: None,
        quota_refused: 0,
        disabled_reason: None,
        rate_limit: None,
        options: None,
    }
}

async fn create(store: &dyn Store, endpoint: &Endpoint) {
    let outcome = store
        .create_endpoint(endpoint, MAX_ENDPOINTS_PER_USER)
        .await
        .unwrap();
    assert_eq!(outcome, CreateOutcome::Created);
}

async fn a_created_endpoint_reads_back_exactly(store: Arc<dyn Store>) {
    let created = endpoint("alice", 1_732_806_631);
    create(&*store, &created).await;
    let read = store
        .get_endpoint("alice", &created.endpoint_id)
        .await
        .unwrap();
    assert_eq!(read, Some(created.clone()));
    assert_eq!(store.list_endpoints("alice").await.unwrap(), vec![created]);
}

async fn endpoints_list_oldest_first(store: Arc<dyn Store>) {
    let mut created = Vec::new();
    for second in 0..5 {
        // Same creation second for some: order must still be creation order.
        let endpoint = endpoint("alice", 1000 + second / 2);
        create(&*store, &endpoint).await;
        created.push(endpoint.endpoint_id);
    }
    let listed: Vec<_> = store
        .list_endpoints("alice")
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.endpoint_id)
        .collect();
    assert_eq!(listed, created);
}

async fn users_never_see_each_others_endpoints(store: Arc<dyn Store>) {
    let alices = endpoint("alice", 1);
    create(&*store, &alices).await;
    assert_eq!(
        store
            .get_endpoint("bob", &alices.endpoint_id)
            .await
            .unwrap(),
        None
    );
    assert!(store.list_endpoints("bob").await.unwrap().is_empty());
    let spec = EndpointSpec {
        ordering: None,
        filter: None,
        url: "https://evil.example/".into(),
        status: Some(EndpointStatus::Enabled),
        events: vec![EventType::GENERATED_IMAGE_SUCCESS],
        rate_limit: None,
        options: None,
    };
    assert_eq!(
        store
            .update_endpoint("bob", &alices.endpoint_id, &spec)
            .await
            .unwrap(),
        None
    );
    assert!(
        !store
            .delete_endpoint("bob", &alices.endpoint_id)
            .await
            .unwrap()
    );
    assert_eq!(
        store
            .get_endpoint("alice", &alices.endpoint_id)
            .await
            .unwrap(),
        Some(alices)
    );
}

async fn the_limit_holds_under_fifty_concurrent_creates(store: Arc<dyn Store>) {
    let attempts: Vec<_> = (0..50)
        .map(|i| {
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                store
                    .create_endpoint(&endpoint("carol", i), MAX_ENDPOINTS_PER_USER)
                    .await
                    .unwrap()
            })
        })
        .collect();
    let mut created = 0;
    for attempt in attempts {
        if attempt.await.unwrap() == CreateOutcome::Created {
            created += 1;
        }
    }
    assert_eq!(created, MAX_ENDPOINTS_PER_USER);
    assert_eq!(
        store.list_endpoints("carol").await.unwrap().len(),
        MAX_ENDPOINTS_PER_USER
    );
}

async fn update_changes_url_status_and_events_but_never_the_secret(store: Arc<dyn Store>) {
    let original = endpoint("dave", 7);
    create(&*store, &original).await;
    let spec = EndpointSpec {
        ordering: None,
        filter: None,
        url: "https://new-url.com/webhook".into(),
        status: Some(EndpointStatus::Disabled),
        events: vec![EventType::GENERATED_PHOTO_AVATAR_SUCCESS],
        rate_limit: None,
        options: None,
    };
    let updated = store
        .update_endpoint("dave", &original.endpoint_id, &spec)
        .await
        .unwrap();
    let expected = Endpoint {
        url: spec.url.clone(),
        status: EndpointStatus::Disabled,
        events: spec.events.clone(),
        ..original.clone()
    };
    assert_eq!(updated, Some(expected.clone()));
    let read = store
        .get_endpoint("dave", &original.endpoint_id)
        .await
        .unwrap();
    assert_eq!(read, Some(expected));

    // Without a status, the current one stays.
    let spec = EndpointSpec {
        url: "https://third.example/".into(),
        status: None,
        ..spec
    };
    let updated = store
        .update_endpoint("dave", &original.endpoint_id, &spec)
        .await
        .unwrap();
    let updated = updated.unwrap();
    assert_eq!(updated.status, EndpointStatus::Disabled);
    assert_eq!(updated.url, "https://third.example/");
    assert_eq!(updated.secret, original.secret);
}

async fn update_and_delete_of_a_missing_endpoint_report_none(store: Arc<dyn Store>) {
    let spec = EndpointSpec {
        ordering: None,
        filter: None,
        url: "https://example.com/".into(),
        status: Some(EndpointStatus::Enabled),
        events: vec![EventType::GENERATED_VIDEO_SUCCESS],
        rate_limit: None,
        options: None,
    };
    assert_eq!(
        store
            .update_endpoint("erin", "wh_missing", &spec)
            .await
            .unwrap(),
        None
    );
    assert!(!store.delete_endpoint("erin", "wh_missing").await.unwrap());
    assert_eq!(
        store.get_endpoint("erin", "wh_missing").await.unwrap(),
        None
    );
}

async fn deleting_frees_a_place_under_the_limit(store: Arc<dyn Store>) {
    let mut ids = Vec::new();
    for i in 0..3 {
        let endpoint = endpoint("frank", i);
        assert_eq!(
            store.create_endpoint(&endpoint, 3).await.unwrap(),
            CreateOutcome::Created
        );
        ids.push(endpoint.endpoint_id);
    }
    assert_eq!(
        store
            .create_endpoint(&endpoint("frank", 9), 3)
            .await
            .unwrap(),
        CreateOutcome::LimitReached
    );
    assert!(store.delete_endpoint("frank", &ids[1]).await.unwrap());
    assert!(
        !store.delete_endpoint("frank", &ids[1]).await.unwrap(),
        "second delete finds nothing"
    );
    assert_eq!(store.get_endpoint("frank", &ids[1]).await.unwrap(), None);
    assert_eq!(
        store
            .create_endpoint(&endpoint("frank", 10), 3)
            .await
            .unwrap(),
        CreateOutcome::Created
    );
    assert_eq!(store.list_endpoints("frank").await.unwrap().len(), 3);
}

/// What a key rotation checks (`open_and_reseal`): the processes that said
/// they run, with their keys, until their word runs out.
async fn processes_are_running_until_their_announcement_runs_out(store: Arc<dyn Store>) {
    store
        .announce_process("p1", "aaaa,bbbb", 2_000)
        .await
        .unwrap();
    store.announce_process("p2", "bbbb", 1_000).await.unwrap();
    assert_eq!(
        store.running_processes(1_000).await.unwrap(),
        vec![
            ("p1".to_owned(), "aaaa,bbbb".to_owned()),
            ("p2".to_owned(), "bbbb".to_owned())
        ]
    );
    // Said again, with other keys: the latest word counts.
    store.announce_process("p2", "cccc", 3_000).await.unwrap();
    assert_eq!(
        store.running_processes(2_500).await.unwrap(),
        vec![("p2".to_owned(), "cccc".to_owned())]
    );
    assert!(store.running_processes(3_001).await.unwrap().is_empty());
    // Announcements are settings of their own: the others are untouched.
    assert_eq!(
        store.setting_or_insert("ingest_token", "t").await.unwrap(),
        "t"
    );
    assert!(
        store.running_processes(0).await.unwrap().is_empty(),
        "forgotten once run out"
    );
}

async fn a_setting_is_inserted_once(store: Arc<dyn Store>) {
    assert_eq!(
        store
            .setting_or_insert("ingest_token", "first")
            .await
            .unwrap(),
        "first"
    );
    assert_eq!(
        store
            .setting_or_insert("ingest_token", "second")
            .await
            .unwrap(),
        "first"
    );
}

async fn ping_answers(store: Arc<dyn Store>) {
    store.ping().await.unwrap();
}

#[tokio::test]
async fn sqlite_keeps_everything_across_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nested/dir/webhookd.db");
    let path = path.to_str().unwrap();
    let created = endpoint("ivan", 5);
    {
        let store = SqliteStore::open(path).await.unwrap();
        create(&store, &created).await;
    }
    let reopened = SqliteStore::open(path).await.unwrap();
    assert_eq!(
        reopened.list_endpoints("ivan").await.unwrap(),
        vec![created]
    );
}

const NOW_MS: i64 = 1_732_806_631_000;

fn event(username: &str, event_id: &str, event_type: &EventType) -> Event {
    let message = json_message(username, event_id, event_type);
    Event::parse(message.as_bytes(), NOW_MS / 1000).unwrap()
}

fn json_message(username: &str, event_id: &str, event_type: &EventType) -> String {
    format!(
        r#"{{"event":"{event_type}","username":"{username}","event_id":"{event_id}","data":{{"video_id":"v-{event_id}","n":1.50}}}}"#
    )
}

async fn accept(store: &dyn Store, event: &Event) -> Acceptance {
    let mut outcomes = store
        .accept_events(std::slice::from_ref(event), NOW_MS)
        .await
        .unwrap();
    assert_eq!(outcomes.len(), 1);
    outcomes.remove(0)
}

fn deliveries(acceptance: Acceptance) -> Vec<Delivery> {
    match acceptance {
        Acceptance::Accepted { deliveries, .. } => deliveries,
        other => panic!("expected the event to be accepted, got {other:?}"),
    }
}

async fn pending(store: &dyn Store, username: &str, endpoint_id: &str) -> Vec<Delivery> {
    let page = Page {
        limit: 1000,
        after: None,
    };
    store
        .list_deliveries(username, endpoint_id, DeliveryStatus::Pending, &page)
        .await
        .unwrap()
}

async fn an_event_fans_out_to_each_enabled_subscribed_endpoint(store: Arc<dyn Store>) {
    let subscribed = endpoint("kate", 1);
    let disabled = Endpoint {
        status: EndpointStatus::Disabled,
        ..endpoint("kate", 2)
    };
    let other_type = Endpoint {
        events: vec![EventType::GENERATED_IMAGE_SUCCESS],
        ..endpoint("kate", 3)
    };
    let second = endpoint("kate", 4);
    for e in [&subscribed, &disabled, &other_type, &second] {
        create(&*store, e).await;
    }
    let event = event("kate", "evt_fanout", &EventType::GENERATED_VIDEO_SUCCESS);
    let created = deliveries(accept(&*store, &event).await);
    let targets: Vec<_> = created.iter().map(|d| d.endpoint_id.clone()).collect();
    assert_eq!(
        targets,
        vec![subscribed.endpoint_id.clone(), second.endpoint_id.clone()]
    );
    for delivery in &created {
        assert_eq!(
            delivery.body,
            event.body(),
            "the body is rendered once, as sent"
        );
        assert_eq!(delivery.status, DeliveryStatus::Pending);
        assert_eq!(delivery.attempts, 0);
        assert_eq!(delivery.next_attempt_at, NOW_MS, "due at once");
        assert_eq!(delivery.event_id, "evt_fanout");
        assert_eq!(
            pending(&*store, "kate", &delivery.endpoint_id).await,
            vec![delivery.clone()]
        );
    }
    assert!(
        pending(&*store, "kate", &disabled.endpoint_id)
            .await
            .is_empty()
    );
    assert!(
        pending(&*store, "kate", &other_type.endpoint_id)
            .await
            .is_empty()
    );
}

async fn the_same_event_id_fans_out_once(store: Arc<dyn Store>) {
    let target = endpoint("liam", 1);
    create(&*store, &target).await;
    let first = event("liam", "evt_once", &EventType::GENERATED_VIDEO_SUCCESS);
    assert_eq!(deliveries(accept(&*store, &first).await).len(), 1);
    // Redelivered later, and twice within one batch.
    assert_eq!(accept(&*store, &first).await, Acceptance::Duplicate);
    let batch = [first.clone(), first.clone()];
    let outcomes = store.accept_events(&batch, NOW_MS).await.unwrap();
    assert_eq!(outcomes, vec![Acceptance::Duplicate, Acceptance::Duplicate]);
    let fresh = [
        event("liam", "evt_twice", &EventType::GENERATED_VIDEO_SUCCESS),
        event("liam", "evt_twice", &EventType::GENERATED_VIDEO_SUCCESS),
    ];
    let outcomes = store.accept_events(&fresh, NOW_MS).await.unwrap();
    assert_eq!(deliveries(outcomes[0].clone()).len(), 1);
    assert_eq!(outcomes[1], Acceptance::Duplicate);
    assert_eq!(pending(&*store, "liam", &target.endpoint_id).await.len(), 2);

    // The window is per owner: another user's event with the same id is new.
    create(&*store, &endpoint("mia", 1)).await;
    let theirs = event("mia", "evt_once", &EventType::GENERATED_VIDEO_SUCCESS);
    assert_eq!(deliveries(accept(&*store, &theirs).await).len(), 1);
}

async fn an_event_without_subscribers_is_accepted_with_no_deliveries(store: Arc<dyn Store>) {
    let nobody = event("noah", "evt_lonely", &EventType::GENERATED_SCRIPT_FAILED);
    assert_eq!(
        accept(&*store, &nobody).await,
        Acceptance::Accepted {
            deliveries: vec![],
            quota_refused: vec![]
        }
    );
    assert_eq!(accept(&*store, &nobody).await, Acceptance::Duplicate);
}

async fn endpoint_changes_apply_to_the_next_event(store: Arc<dyn Store>) {
    let target = endpoint("olga", 1);
    create(&*store, &target).await;
    let spec = |status, events: Vec<EventType>| EndpointSpec {
        ordering: None,
        filter: None,
        url: target.url.clone(),
        status: Some(status),
        events,
        rate_limit: None,
        options: None,
    };
    let disabled = spec(EndpointStatus::Disabled, target.events.clone());
    store
        .update_endpoint("olga", &target.endpoint_id, &disabled)
        .await
        .unwrap();
    let first = event("olga", "evt_1", &EventType::GENERATED_VIDEO_SUCCESS);
    assert!(
        deliveries(accept(&*store, &first).await).is_empty(),
        "disabled: nothing"
    );

    let images_only = spec(
        EndpointStatus::Enabled,
        vec![EventType::GENERATED_IMAGE_SUCCESS],
    );
    store
        .update_endpoint("olga", &target.endpoint_id, &images_only)
        .await
        .unwrap();
    let second = event("olga", "evt_2", &EventType::GENERATED_VIDEO_SUCCESS);
    assert!(
        deliveries(accept(&*store, &second).await).is_empty(),
        "unsubscribed: nothing"
    );
    let third = event("olga", "evt_3", &EventType::GENERATED_IMAGE_SUCCESS);
    assert_eq!(deliveries(accept(&*store, &third).await).len(), 1);

    assert!(
        store
            .delete_endpoint("olga", &target.endpoint_id)
            .await
            .unwrap()
    );
    let fourth = event("olga", "evt_4", &EventType::GENERATED_IMAGE_SUCCESS);
    assert!(
        deliveries(accept(&*store, &fourth).await).is_empty(),
        "deleted: nothing"
    );
}

async fn deleting_an_endpoint_drops_its_deliveries(store: Arc<dyn Store>) {
    let doomed = endpoint("pia", 1);
    let kept = endpoint("pia", 2);
    create(&*store, &doomed).await;
    create(&*store, &kept).await;
    for i in 0..3 {
        accept(
            &*store,
            &event(
                "pia",
                &format!("evt_{i}"),
                &EventType::GENERATED_VIDEO_SUCCESS,
            ),
        )
        .await;
    }
    assert_eq!(pending(&*store, "pia", &doomed.endpoint_id).await.len(), 3);
    assert!(
        store
            .delete_endpoint("pia", &doomed.endpoint_id)
            .await
            .unwrap()
    );
    assert!(
        pending(&*store, "pia", &doomed.endpoint_id)
            .await
            .is_empty()
    );
    assert_eq!(pending(&*store, "pia", &kept.endpoint_id).await.len(), 3);
}

async fn deliveries_page_in_creation_order(store: Arc<dyn Store>) {
    let target = endpoint("quinn", 1);
    create(&*store, &target).await;
    let mut expected = Vec::new();
    for i in 0..5 {
        let created = deliveries(
            accept(
                &*store,
                &event(
                    "quinn",
                    &format!("evt_{i}"),
                    &EventType::GENERATED_VIDEO_SUCCESS,
                ),
            )
            .await,
        );
        expected.push(created[0].delivery_id.clone());
    }
    let mut seen = Vec::new();
    let mut page = Page {
        limit: 2,
        after: None,
    };
    loop {
        let batch = store
            .list_deliveries("quinn", &target.endpoint_id, DeliveryStatus::Pending, &page)
            .await
            .unwrap();
        if batch.is_empty() {
            break;
        }
        assert!(batch.len() <= 2);
        page.after = batch.last().map(|d| d.delivery_id.clone());
        seen.extend(batch.into_iter().map(|d| d.delivery_id));
    }
    assert_eq!(seen, expected);
    let none = store
        .list_deliveries(
            "quinn",
            &target.endpoint_id,
            DeliveryStatus::Failed,
            &Page {
                limit: 10,
                after: None,
            },
        )
        .await
        .unwrap();
    assert!(none.is_empty());
}

#[tokio::test]
async fn sqlite_forgets_an_event_id_after_the_window() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path().join("w.db").to_str().unwrap())
        .await
        .unwrap();
    create(&store, &endpoint("rita", 1)).await;
    let event = event("rita", "evt_window", &EventType::GENERATED_VIDEO_SUCCESS);
    let later = NOW_MS + webhookd_store::DEDUP_WINDOW_MS;
    assert_eq!(
        store
            .accept_events(std::slice::from_ref(&event), NOW_MS)
            .await
            .unwrap()
            .len(),
        1
    );
    let outcome = store
        .accept_events(std::slice::from_ref(&event), later - 1)
        .await
        .unwrap();
    assert_eq!(outcome, vec![Acceptance::Duplicate]);
    store.sweep(later - 1).await.unwrap();
    let outcome = store
        .accept_events(std::slice::from_ref(&event), later)
        .await
        .unwrap();
    assert!(
        matches!(&outcome[0], Acceptance::Accepted { deliveries, .. } if deliveries.len() == 1)
    );
    store
        .sweep(later + webhookd_store::DEDUP_WINDOW_MS)
        .await
        .unwrap();
}

const LEASE_MS: i64 = 30_000;
const PARK_MS: i64 = 60_000;

fn claim_request(now_ms: i64, limit: usize) -> ClaimRequest {
    ClaimRequest {
        now_ms,
        lease_until_ms: now_ms + LEASE_MS,
        park_until_ms: now_ms + PARK_MS,
        limit,
        per_endpoint: limit,
        room: HashMap::new(),
        ..ClaimRequest::default()
    }
}

async fn claim_at(store: &dyn Store, now_ms: i64, limit: usize) -> Vec<Claim> {
    store
        .claim_due(&claim_request(now_ms, limit))
        .await
        .unwrap()
}

/// A long backlog on one endpoint does not keep another endpoint's due
/// delivery waiting, and a worker gets no more of an endpoint than the room
/// it asks for (the default room, or the endpoint's own).
async fn claims_take_each_endpoint_up_to_its_room(store: Arc<dyn Store>) {
    let subscribed = |created_at, event_type| Endpoint {
        events: vec![event_type],
        ..endpoint("una", created_at)
    };
    let busy = subscribed(1, EventType::GENERATED_VIDEO_SUCCESS);
    let calm = subscribed(2, EventType::GENERATED_VIDEO_FAILED);
    create(&*store, &busy).await;
    create(&*store, &calm).await;
    let backlog: Vec<Event> = (0..30)
        .map(|i| {
            event(
                "una",
                &format!("evt_b{i}"),
                &EventType::GENERATED_VIDEO_SUCCESS,
            )
        })
        .collect();
    store.accept_events(&backlog, NOW_MS).await.unwrap();
    let later = event("una", "evt_c", &EventType::GENERATED_VIDEO_FAILED);
    store
        .accept_events(std::slice::from_ref(&later), NOW_MS + 5)
        .await
        .unwrap();

    let with_room = |room: &[(&Endpoint, usize)]| ClaimRequest {
        per_endpoint: 4,
        room: room
            .iter()
            .map(|(endpoint, n)| (endpoint.endpoint_id.clone(), *n))
            .collect(),
        ..claim_request(NOW_MS + 10, 10)
    };
    let per_endpoint = |claims: &[Claim], endpoint: &Endpoint| {
        claims
            .iter()
            .filter(|claim| claim.delivery.endpoint_id == endpoint.endpoint_id)
            .count()
    };
    let first = store.claim_due(&with_room(&[])).await.unwrap();
    assert_eq!(per_endpoint(&first, &busy), 4, "the busy endpoint's room");
    assert_eq!(
        per_endpoint(&first, &calm),
        1,
        "the calm endpoint is not kept waiting"
    );
    assert_eq!(first.len(), 5);

    let full = store.claim_due(&with_room(&[(&busy, 0)])).await.unwrap();
    assert!(full.is_empty(), "no room left: {} claimed", full.len());
    let two_free = store.claim_due(&with_room(&[(&busy, 2)])).await.unwrap();
    assert_eq!(per_endpoint(&two_free, &busy), 2);
    assert_eq!(two_free.len(), 2);
}

fn attempt(number: u32, status_code: Option<u16>, reason: &str) -> AttemptRecord {
    AttemptRecord {
        attempt: number,
        started_at: NOW_MS + i64::from(number),
        duration_ms: 12,
        status_code,
        reason: reason.into(),
        response: status_code.map(|code| format!("answer {code}")),
        signing: None,
    }
}

/// One user, one endpoint, one accepted event: its delivery id.
async fn one_delivery(store: &dyn Store, username: &str) -> (Endpoint, String) {
    let target = endpoint(username, 1);
    create(store, &target).await;
    let created = deliveries(
        accept(
            store,
            &event(username, "evt_1", &EventType::GENERATED_VIDEO_SUCCESS),
        )
        .await,
    );
    (target, created[0].delivery_id.clone())
}

async fn by_status(
    store: &dyn Store,
    username: &str,
    endpoint_id: &str,
    status: DeliveryStatus,
) -> Vec<String> {
    let page = Page {
        limit: 100,
        after: None,
    };
    let listed = store
        .list_deliveries(username, endpoint_id, status, &page)
        .await
        .unwrap();
    listed.into_iter().map(|d| d.delivery_id).collect()
}

async fn a_claimed_delivery_is_hidden_until_its_lease_ends(store: Arc<dyn Store>) {
    let (target, id) = one_delivery(&*store, "sam").await;
    let claims = claim_at(&*store, NOW_MS, 10).await;
    assert_eq!(claims.len(), 1);
    let first = &claims[0];
    assert_eq!(first.delivery.delivery_id, id);
    assert_eq!(first.url, target.url);
    assert_eq!(first.secret, target.secret);
    assert!(
        claim_at(&*store, NOW_MS + LEASE_MS - 1, 10)
            .await
            .is_empty(),
        "leased"
    );

    // The worker died: at the lease's end another worker takes it over.
    let second = claim_at(&*store, NOW_MS + LEASE_MS, 10).await;
    assert_eq!(second.len(), 1);
    assert_ne!(second[0].lease, first.lease);
    let stale = store
        .record_attempt(
            first,
            &attempt(1, Some(200), "ok"),
            AttemptResult::Delivered,
        )
        .await
        .unwrap();
    assert!(!stale, "an expired lease records nothing");
    let current = store
        .record_attempt(
            &second[0],
            &attempt(1, Some(200), "ok"),
            AttemptResult::Delivered,
        )
        .await
        .unwrap();
    assert!(current);
    assert_eq!(
        by_status(
            &*store,
            "sam",
            &target.endpoint_id,
            DeliveryStatus::Delivered
        )
        .await,
        vec![id]
    );
}

async fn a_retry_comes_due_at_its_time_and_the_attempt_log_grows(store: Arc<dyn Store>) {
    let (target, id) = one_delivery(&*store, "tara").await;
    let claim = claim_at(&*store, NOW_MS, 10).await.remove(0);
    let retry_at = NOW_MS + 5_000;
    let failed = attempt(1, Some(503), "http_5xx");
    assert!(
        store
            .record_attempt(&claim, &failed, AttemptResult::RetryAt(retry_at))
            .await
            .unwrap()
    );
    assert!(
        claim_at(&*store, retry_at - 1, 10).await.is_empty(),
        "not due yet"
    );
    let claim = claim_at(&*store, retry_at, 10).await.remove(0);
    assert_eq!(claim.delivery.attempts, 1);
    assert_eq!(
        claim.delivery.body,
        event("tara", "evt_1", &EventType::GENERATED_VIDEO_SUCCESS).body(),
        "same bytes every attempt"
    );
    let delivered = attempt(2, Some(204), "ok");
    assert!(
        store
            .record_attempt(&claim, &delivered, AttemptResult::Delivered)
            .await
            .unwrap()
    );

    let (delivery, attempts) = store
        .delivery_attempts("tara", &target.endpoint_id, &id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(delivery.status, DeliveryStatus::Delivered);
    assert_eq!(delivery.attempts, 2);
    assert_eq!(attempts, vec![failed, delivered]);
    assert!(
        by_status(
            &*store,
            "tara",
            &target.endpoint_id,
            DeliveryStatus::Pending
        )
        .await
        .is_empty()
    );
    assert!(
        claim_at(&*store, retry_at + LEASE_MS * 10, 10)
            .await
            .is_empty(),
        "delivered is done"
    );
    assert_eq!(
        store
            .delivery_attempts("someone-else", &target.endpoint_id, &id)
            .await
            .unwrap(),
        None
    );
}

/// Bodies and attempt records of every length around the 64-byte pieces
/// Redis keeps them in (`put_pieces`), full of 2-, 3- and 4-byte UTF-8
/// characters that a cut could split: each comes back byte for byte from
/// a claim, the listing and the attempt log — whether the delivery waited
/// from the start or was leased at acceptance (whole) and compacted when
/// its retry was recorded.
async fn long_multibyte_bodies_and_records_come_back_byte_for_byte(store: Arc<dyn Store>) {
    let target = endpoint("vera", 1);
    create(&*store, &target).await;
    let mut sent = HashMap::new();
    let mut claims = Vec::new();
    for (n, repeat) in [1usize, 12, 40, 63, 64, 130, 400].into_iter().enumerate() {
        let text = "é€😀a".repeat(repeat);
        let message = format!(
            r#"{{"event":"generated_video_success","username":"vera","event_id":"evt_{n}","data":{{"text":"{text}"}}}}"#
        );
        let event = Event::parse(message.as_bytes(), NOW_MS / 1000).unwrap();
        for leased in [false, true] {
            let event = Event {
                event_id: format!("{}-{leased}", event.event_id),
                ..event.clone()
            };
            let request = claim_request(NOW_MS, usize::from(leased));
            let (mut accepted, leases) = store
                .accept_and_claim(std::slice::from_ref(&event), NOW_MS, &request)
                .await
                .unwrap();
            let delivery = deliveries(accepted.remove(0)).remove(0);
            assert_eq!(delivery.body, event.body());
            claims.extend(leases);
            sent.insert(delivery.delivery_id, (event.body(), text.clone()));
        }
    }
    claims.extend(claim_at(&*store, NOW_MS, 100).await);
    assert_eq!(claims.len(), sent.len());
    let retry_at = NOW_MS + 5_000;
    for claim in &claims {
        let (body, text) = &sent[&claim.delivery.delivery_id];
        assert_eq!(&claim.delivery.body, body, "a claim reads the body whole");
        let failed = AttemptRecord {
            response: Some(text.clone()),
            signing: None,
            ..attempt(1, Some(500), "http_5xx")
        };
        assert!(
            store
                .record_attempt(claim, &failed, AttemptResult::RetryAt(retry_at))
                .await
                .unwrap()
        );
    }
    for listed in pending(&*store, "vera", &target.endpoint_id).await {
        assert_eq!(listed.body, sent[&listed.delivery_id].0, "the listing too");
    }
    for (id, (body, text)) in &sent {
        let (delivery, attempts) = store
            .delivery_attempts("vera", &target.endpoint_id, id)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(&delivery.body, body);
        assert_eq!(attempts.len(), 1);
        assert_eq!(
            attempts[0].response.as_ref(),
            Some(text),
            "the attempt log too"
        );
    }
    let again = claim_at(&*store, retry_at, 100).await;
    assert!(
        again
            .iter()
            .all(|claim| claim.delivery.body == sent[&claim.delivery.delivery_id].0)
    );
    assert_eq!(again.len(), sent.len());
}

async fn dead_deliveries_are_kept_and_can_be_sent_again(store: Arc<dyn Store>) {
    let (target, id) = one_delivery(&*store, "uma").await;
    let claim = claim_at(&*store, NOW_MS, 10).await.remove(0);
    assert!(
        store
            .record_attempt(&claim, &attempt(1, None, "timeout"), AttemptResult::Dead)
            .await
            .unwrap()
    );
    assert_eq!(
        by_status(&*store, "uma", &target.endpoint_id, DeliveryStatus::Failed).await,
        vec![id.clone()]
    );
    assert!(
        claim_at(&*store, NOW_MS + LEASE_MS * 100, 10)
            .await
            .is_empty(),
        "dead is not retried by itself"
    );

    assert_eq!(
        store
            .retry_dead("intruder", &target.endpoint_id, &id, NOW_MS)
            .await
            .unwrap(),
        RetryOutcome::NotFound
    );
    assert_eq!(
        store
            .retry_dead("uma", &target.endpoint_id, "dlv_unknown", NOW_MS)
            .await
            .unwrap(),
        RetryOutcome::NotFound
    );
    let later = NOW_MS + 1_000_000;
    assert_eq!(
        store
            .retry_dead("uma", &target.endpoint_id, &id, later)
            .await
            .unwrap(),
        RetryOutcome::Scheduled
    );
    assert_eq!(
        store
            .retry_dead("uma", &target.endpoint_id, &id, later)
            .await
            .unwrap(),
        RetryOutcome::NotFailed(DeliveryStatus::Pending)
    );
    assert_eq!(
        by_status(&*store, "uma", &target.endpoint_id, DeliveryStatus::Pending).await,
        vec![id.clone()]
    );
    let claim = claim_at(&*store, later, 10).await.remove(0);
    assert_eq!(claim.delivery.attempts, 1, "the attempt log is kept");
    let (_, attempts) = store
        .delivery_attempts("uma", &target.endpoint_id, &id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(attempts.len(), 1);
}

/// Attempts recorded in one batch each take effect on their own: a stale
/// lease among current ones writes nothing and says so.
async fn a_batch_of_attempts_records_each_on_its_own(store: Arc<dyn Store>) {
    let target = endpoint("vic", 1);
    create(&*store, &target).await;
    let events: Vec<Event> = (1..=3)
        .map(|i| {
            event(
                "vic",
                &format!("evt_{i}"),
                &EventType::GENERATED_VIDEO_SUCCESS,
            )
        })
        .collect();
    store.accept_events(&events[..2], NOW_MS).await.unwrap();
    store.accept_events(&events[2..], NOW_MS + 1).await.unwrap();
    let first_two = claim_at(&*store, NOW_MS, 10).await;
    let third = claim_at(&*store, NOW_MS + 1, 10).await;
    assert_eq!((first_two.len(), third.len()), (2, 1));
    // The first two leases end; another worker takes both over.
    let retaken = claim_at(&*store, NOW_MS + LEASE_MS, 10).await;
    assert_eq!(retaken.len(), 2);
    let stale = first_two[0].clone();
    let current = retaken
        .iter()
        .find(|claim| claim.delivery.delivery_id != stale.delivery.delivery_id)
        .unwrap()
        .clone();
    let retry_at = NOW_MS + LEASE_MS + 500;
    let batch = [
        FinishedAttempt {
            claim: stale.clone(),
            record: attempt(1, Some(200), "ok"),
            result: AttemptResult::Delivered,
        },
        FinishedAttempt {
            claim: current.clone(),
            record: attempt(1, Some(200), "ok"),
            result: AttemptResult::Delivered,
        },
        FinishedAttempt {
            claim: third[0].clone(),
            record: attempt(1, Some(500), "http_5xx"),
            result: AttemptResult::RetryAt(retry_at),
        },
    ];
    assert_eq!(
        store.record_attempts(&batch).await.unwrap(),
        vec![Recorded::Stale, Recorded::Written, Recorded::Written]
    );
    let delivered = by_status(
        &*store,
        "vic",
        &target.endpoint_id,
        DeliveryStatus::Delivered,
    )
    .await;
    assert_eq!(delivered, vec![current.delivery.delivery_id.clone()]);
    let (stale_now, stale_log) = store
        .delivery_attempts("vic", &target.endpoint_id, &stale.delivery.delivery_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (stale_now.status, stale_log.len()),
        (DeliveryStatus::Pending, 0)
    );
    let (retried, log) = store
        .delivery_attempts("vic", &target.endpoint_id, &third[0].delivery.delivery_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (retried.status, retried.next_attempt_at, log.len()),
        (DeliveryStatus::Pending, retry_at, 1)
    );
}

/// Accepting with a claim leases fresh deliveries at once, within the limit
/// and each endpoint's room; the rest stay due for the next claim.
async fn accepting_can_lease_fresh_deliveries_at_once(store: Arc<dyn Store>) {
    let first = endpoint("wes", 1);
    let second = endpoint("wes", 2);
    create(&*store, &first).await;
    create(&*store, &second).await;
    let events: Vec<Event> = (1..=3)
        .map(|i| {
            event(
                "wes",
                &format!("evt_{i}"),
                &EventType::GENERATED_VIDEO_SUCCESS,
            )
        })
        .collect();
    let request = ClaimRequest {
        per_endpoint: 2,
        room: HashMap::from([(second.endpoint_id.clone(), 1)]),
        ..claim_request(NOW_MS, 10)
    };
    let (accepted, claims) = store
        .accept_and_claim(&events, NOW_MS, &request)
        .await
        .unwrap();
    assert_eq!(accepted.len(), 3);
    let fanned_out: Vec<Delivery> = accepted.into_iter().flat_map(deliveries).collect();
    assert_eq!(fanned_out.len(), 6);
    let of = |target: &Endpoint| {
        claims
            .iter()
            .filter(|claim| claim.delivery.endpoint_id == target.endpoint_id)
            .collect::<Vec<_>>()
    };
    assert_eq!(of(&first).len(), 2, "the default room");
    assert_eq!(of(&second).len(), 1, "the endpoint's own room");
    assert!(
        of(&first)
            .iter()
            .all(|claim| claim.url == first.url && claim.secret == first.secret)
    );

    let rest = claim_at(&*store, NOW_MS, 10).await;
    assert_eq!(rest.len(), 3, "the others stay due");
    let leased: HashSet<&str> = claims
        .iter()
        .map(|c| c.delivery.delivery_id.as_str())
        .collect();
    assert!(
        rest.iter()
            .all(|c| !leased.contains(c.delivery.delivery_id.as_str()))
    );
    let recorded = store
        .record_attempt(
            &claims[0],
            &attempt(1, Some(200), "ok"),
            AttemptResult::Delivered,
        )
        .await
        .unwrap();
    assert!(
        recorded,
        "a lease taken at acceptance records like any other"
    );
}

async fn release_hands_a_delivery_back_without_spending_an_attempt(store: Arc<dyn Store>) {
    let (_, id) = one_delivery(&*store, "vera").await;
    let claim = claim_at(&*store, NOW_MS, 10).await.remove(0);
    assert!(store.release(&claim, NOW_MS + 1_000).await.unwrap());
    assert!(
        !store.release(&claim, NOW_MS + 1_000).await.unwrap(),
        "the lease is gone"
    );
    assert!(claim_at(&*store, NOW_MS + 999, 10).await.is_empty());
    let again = claim_at(&*store, NOW_MS + 1_000, 10).await.remove(0);
    assert_eq!(again.delivery.delivery_id, id);
    assert_eq!(again.delivery.attempts, 0);
}

async fn disabled_endpoints_park_their_deliveries(store: Arc<dyn Store>) {
    let (target, id) = one_delivery(&*store, "walt").await;
    let disable = EndpointSpec {
        ordering: None,
        filter: None,
        url: target.url.clone(),
        status: Some(EndpointStatus::Disabled),
        events: target.events.clone(),
        rate_limit: None,
        options: None,
    };
    store
        .update_endpoint("walt", &target.endpoint_id, &disable)
        .await
        .unwrap();
    assert!(claim_at(&*store, NOW_MS, 10).await.is_empty());
    let enable = EndpointSpec {
        status: Some(EndpointStatus::Enabled),
        url: "https://moved.example/hook".into(),
        ..disable
    };
    store
        .update_endpoint("walt", &target.endpoint_id, &enable)
        .await
        .unwrap();
    assert!(
        claim_at(&*store, NOW_MS + PARK_MS - 1, 10).await.is_empty(),
        "parked"
    );
    let claim = claim_at(&*store, NOW_MS + PARK_MS, 10).await.remove(0);
    assert_eq!(claim.delivery.delivery_id, id);
    assert_eq!(claim.delivery.attempts, 0, "parking spends no attempt");
    assert_eq!(
        claim.url, "https://moved.example/hook",
        "the next attempt uses the new URL"
    );
}

async fn concurrent_claimers_never_share_a_delivery(store: Arc<dyn Store>) {
    let target = endpoint("xena", 1);
    create(&*store, &target).await;
    let events: Vec<_> = (0..200)
        .map(|i| {
            event(
                "xena",
                &format!("evt_{i}"),
                &EventType::GENERATED_VIDEO_SUCCESS,
            )
        })
        .collect();
    store.accept_events(&events, NOW_MS).await.unwrap();
    let workers: Vec<_> = (0..8)
        .map(|_| {
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                let mut mine = Vec::new();
                loop {
                    let claims = claim_at(&*store, NOW_MS, 7).await;
                    if claims.is_empty() {
                        return mine;
                    }
                    mine.extend(claims.into_iter().map(|c| c.delivery.delivery_id));
                }
            })
        })
        .collect();
    let mut all = Vec::new();
    for worker in workers {
        all.extend(worker.await.unwrap());
    }
    let unique: HashSet<_> = all.iter().collect();
    assert_eq!(all.len(), 200);
    assert_eq!(unique.len(), 200, "no delivery was claimed twice");
}

async fn delivery_stats_count_due_scheduled_and_dead(store: Arc<dyn Store>) {
    let stats = |due, scheduled, dead| DeliveryStats {
        due,
        scheduled,
        dead,
    };
    assert_eq!(store.delivery_stats(NOW_MS).await.unwrap(), stats(0, 0, 0));
    let target = endpoint("yara", 1);
    create(&*store, &target).await;
    let events: Vec<_> = (0..3)
        .map(|i| {
            event(
                "yara",
                &format!("evt_{i}"),
                &EventType::GENERATED_VIDEO_SUCCESS,
            )
        })
        .collect();
    store.accept_events(&events, NOW_MS).await.unwrap();
    assert_eq!(store.delivery_stats(NOW_MS).await.unwrap(), stats(3, 0, 0));

    let claim = claim_at(&*store, NOW_MS, 1).await.remove(0);
    assert_eq!(
        store.delivery_stats(NOW_MS).await.unwrap(),
        stats(2, 1, 0),
        "a lease is scheduled work"
    );
    store
        .record_attempt(
            &claim,
            &attempt(1, Some(500), "http_5xx"),
            AttemptResult::Dead,
        )
        .await
        .unwrap();
    assert_eq!(store.delivery_stats(NOW_MS).await.unwrap(), stats(2, 0, 1));

    store
        .retry_dead(
            "yara",
            &target.endpoint_id,
            &claim.delivery.delivery_id,
            NOW_MS,
        )
        .await
        .unwrap();
    assert_eq!(store.delivery_stats(NOW_MS).await.unwrap(), stats(3, 0, 0));

    let claim = claim_at(&*store, NOW_MS, 1).await.remove(0);
    store
        .record_attempt(
            &claim,
            &attempt(2, Some(500), "http_5xx"),
            AttemptResult::Dead,
        )
        .await
        .unwrap();
    assert_eq!(store.delivery_stats(NOW_MS).await.unwrap(), stats(2, 0, 1));
    assert!(
        store
            .delete_endpoint("yara", &target.endpoint_id)
            .await
            .unwrap()
    );
    assert_eq!(
        store.delivery_stats(NOW_MS).await.unwrap().dead,
        0,
        "deleting drops its dead at once"
    );
    // Its pending deliveries stop counting once swept (bounded steps).
    while store.sweep(NOW_MS).await.unwrap().more {}
    assert_eq!(store.delivery_stats(NOW_MS).await.unwrap(), stats(0, 0, 0));
}
