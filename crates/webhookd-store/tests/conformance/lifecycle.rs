//! Retention (SPEC §4), deleting endpoints in bounded steps, one-attempt
//! re-sends (SPEC §8), and the endpoint-change fence.

use super::*;

const DAY_MS: i64 = 24 * 3600 * 1000;
/// The default retention (SPEC §4).
const KEEP_DELIVERED_MS: i64 = 7 * DAY_MS;
const KEEP_FAILED_MS: i64 = 30 * DAY_MS;

/// Runs sweep steps at `now_ms` until nothing is left; how many it took.
async fn sweep_all(store: &dyn Store, now_ms: i64) -> usize {
    for steps in 1..=100_000 {
        if !store.sweep(now_ms).await.unwrap().more {
            return steps;
        }
    }
    panic!("the sweep never finished");
}

/// `count` events of `username`, each fanned out to its endpoints.
pub(super) async fn accept_many(store: &dyn Store, username: &str, count: usize) {
    let events: Vec<Event> = (0..count)
        .map(|i| {
            event(
                username,
                &format!("evt_{i}"),
                &EventType::GENERATED_VIDEO_SUCCESS,
            )
        })
        .collect();
    for chunk in events.chunks(500) {
        store.accept_events(chunk, NOW_MS).await.unwrap();
    }
}

fn finished_at(number: u32, started_at: i64) -> AttemptRecord {
    AttemptRecord {
        started_at,
        ..attempt(number, Some(200), "ok")
    }
}

async fn exists(store: &dyn Store, target: &Endpoint, delivery_id: &str) -> bool {
    store
        .delivery_attempts(&target.username, &target.endpoint_id, delivery_id)
        .await
        .unwrap()
        .is_some()
}

pub(crate) async fn finished_deliveries_are_removed_after_their_retention(store: Arc<dyn Store>) {
    let target = endpoint("ret", 1);
    create(&*store, &target).await;
    accept_many(&*store, "ret", 2).await;
    let claims = claim_at(&*store, NOW_MS, 10).await;
    assert_eq!(claims.len(), 2);
    let (delivered, dead) = (&claims[0], &claims[1]);
    let record = finished_at(1, NOW_MS);
    assert!(
        store
            .record_attempt(delivered, &record, AttemptResult::Delivered)
            .await
            .unwrap()
    );
    assert!(
        store
            .record_attempt(dead, &record, AttemptResult::Dead)
            .await
            .unwrap()
    );
    let finished = NOW_MS + 12;

    sweep_all(&*store, finished + KEEP_DELIVERED_MS - 1).await;
    assert!(exists(&*store, &target, &delivered.delivery.delivery_id).await);
    sweep_all(&*store, finished + KEEP_DELIVERED_MS).await;
    assert!(!exists(&*store, &target, &delivered.delivery.delivery_id).await);
    let listed = by_status(
        &*store,
        "ret",
        &target.endpoint_id,
        DeliveryStatus::Delivered,
    )
    .await;
    assert!(listed.is_empty(), "{listed:?}");
    assert!(exists(&*store, &target, &dead.delivery.delivery_id).await);
    assert_eq!(store.delivery_stats(finished).await.unwrap().dead, 1);

    sweep_all(&*store, finished + KEEP_FAILED_MS).await;
    assert!(!exists(&*store, &target, &dead.delivery.delivery_id).await);
    assert!(
        by_status(&*store, "ret", &target.endpoint_id, DeliveryStatus::Failed)
            .await
            .is_empty()
    );
    assert_eq!(store.delivery_stats(finished).await.unwrap().dead, 0);
}

/// Security round 3: test deliveries were kept as long as real ones (30
/// days when dead), so test sends could fill the store. They are kept
/// 24 hours at most.
pub(crate) async fn test_deliveries_are_kept_a_day(store: Arc<dyn Store>) {
    let target = endpoint("tester", 1);
    create(&*store, &target).await;
    accept_many(&*store, "tester", 1).await;
    let test = Event::test("tester", EventType::GENERATED_VIDEO_SUCCESS, NOW_MS / 1000);
    store
        .create_test_delivery(&target.endpoint_id, &test, NOW_MS)
        .await
        .unwrap()
        .unwrap();
    let claims = claim_at(&*store, NOW_MS, 10).await;
    assert_eq!(claims.len(), 2);
    let record = finished_at(1, NOW_MS);
    for claim in &claims {
        assert!(
            store
                .record_attempt(claim, &record, AttemptResult::Dead)
                .await
                .unwrap()
        );
    }
    let (tests, real): (Vec<_>, Vec<_>) = claims.iter().partition(|claim| claim.delivery.test);
    let finished = NOW_MS + 12;
    sweep_all(&*store, finished + DAY_MS - 1).await;
    assert!(exists(&*store, &target, &tests[0].delivery.delivery_id).await);
    sweep_all(&*store, finished + DAY_MS).await;
    assert!(
        !exists(&*store, &target, &tests[0].delivery.delivery_id).await,
        "a day, not 30"
    );
    assert!(
        exists(&*store, &target, &real[0].delivery.delivery_id).await,
        "30 days"
    );
}

/// 25 delivered, the 20 oldest past retention: pages still fill and follow
/// each other, whatever has expired.
pub(crate) async fn listings_page_correctly_while_entries_expire(store: Arc<dyn Store>) {
    let target = endpoint("pager", 1);
    create(&*store, &target).await;
    accept_many(&*store, "pager", 25).await;
    let mut claims = claim_at(&*store, NOW_MS, 100).await;
    claims.sort_by(|a, b| a.delivery.delivery_id.cmp(&b.delivery.delivery_id));
    for (i, claim) in (0_i64..).zip(&claims) {
        let record = finished_at(1, NOW_MS + i * 1000);
        assert!(
            store
                .record_attempt(claim, &record, AttemptResult::Delivered)
                .await
                .unwrap()
        );
    }
    // The 20th oldest finished at NOW + 19 s + 12 ms.
    sweep_all(&*store, NOW_MS + KEEP_DELIVERED_MS + 19_500).await;
    let newest: Vec<String> = claims[20..]
        .iter()
        .map(|claim| claim.delivery.delivery_id.clone())
        .collect();
    let page = |limit, after: Option<String>| {
        let store = Arc::clone(&store);
        let endpoint_id = target.endpoint_id.clone();
        async move {
            store
                .list_deliveries(
                    "pager",
                    &endpoint_id,
                    DeliveryStatus::Delivered,
                    &Page { limit, after },
                )
                .await
                .unwrap()
                .into_iter()
                .map(|d| d.delivery_id)
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(page(20, None).await, newest);
    let mut walked = Vec::new();
    let mut after = None;
    loop {
        let batch = page(2, after.clone()).await;
        if batch.is_empty() {
            break;
        }
        after = batch.last().cloned();
        walked.extend(batch);
    }
    assert_eq!(walked, newest);
}

/// DELETE answers at once; the deliveries go in bounded sweep steps, and
/// another endpoint of the same user keeps all of its own.
pub(crate) async fn deleting_an_endpoint_removes_its_deliveries_in_bounded_steps(
    store: Arc<dyn Store>,
) {
    let doomed = endpoint("del", 1);
    let kept = endpoint("del", 2);
    create(&*store, &doomed).await;
    create(&*store, &kept).await;
    accept_many(&*store, "del", 1500).await;
    let claims = store
        .claim_due(&ClaimRequest {
            room: HashMap::from([(kept.endpoint_id.clone(), 0)]),
            ..claim_request(NOW_MS, 200)
        })
        .await
        .unwrap();
    assert_eq!(claims.len(), 200);
    for (i, claim) in claims.iter().enumerate() {
        let result = if i < 100 {
            AttemptResult::Delivered
        } else {
            AttemptResult::Dead
        };
        let recorded = store
            .record_attempt(claim, &finished_at(1, NOW_MS), result)
            .await
            .unwrap();
        assert!(recorded);
    }
    assert_eq!(store.delivery_stats(NOW_MS).await.unwrap().dead, 100);

    assert!(
        store
            .delete_endpoint("del", &doomed.endpoint_id)
            .await
            .unwrap()
    );
    assert_eq!(
        store
            .get_endpoint("del", &doomed.endpoint_id)
            .await
            .unwrap(),
        None
    );
    assert_eq!(store.delivery_stats(NOW_MS).await.unwrap().dead, 0);
    // Bounded steps: at most 1,000 deliveries per SQLite transaction, 512
    // per Redis script (large_delete.rs measures what other clients see).
    while store.sweep(NOW_MS).await.unwrap().more {}
    for claim in &claims {
        assert!(!exists(&*store, &doomed, &claim.delivery.delivery_id).await);
    }
    let stats = store.delivery_stats(NOW_MS).await.unwrap();
    assert_eq!(
        stats.due + stats.scheduled,
        1500,
        "only the kept endpoint's"
    );
    let page = Page {
        limit: 2000,
        after: None,
    };
    let kept_pending = store
        .list_deliveries("del", &kept.endpoint_id, DeliveryStatus::Pending, &page)
        .await
        .unwrap();
    assert_eq!(kept_pending.len(), 1500);
    assert_eq!(claim_at(&*store, NOW_MS, 5000).await.len(), 1500);
}

/// A re-sent dead delivery is claimed as its last attempt; recording that
/// attempt clears the mark.
pub(crate) async fn a_resent_dead_delivery_is_claimed_as_its_last_attempt(store: Arc<dyn Store>) {
    let (target, id) = one_delivery(&*store, "last").await;
    let claim = claim_at(&*store, NOW_MS, 10).await.remove(0);
    assert!(
        !claim.delivery.last_attempt,
        "a fresh delivery has a schedule"
    );
    let record = attempt(1, Some(500), "http_5xx");
    assert!(
        store
            .record_attempt(&claim, &record, AttemptResult::Dead)
            .await
            .unwrap()
    );
    let outcome = store
        .retry_dead("last", &target.endpoint_id, &id, NOW_MS + 1)
        .await
        .unwrap();
    assert_eq!(outcome, RetryOutcome::Scheduled);
    let again = claim_at(&*store, NOW_MS + 1, 10).await.remove(0);
    assert!(again.delivery.last_attempt);
    assert_eq!(again.delivery.attempts, 1);
    let record = attempt(2, Some(500), "http_5xx");
    assert!(
        store
            .record_attempt(&again, &record, AttemptResult::Dead)
            .await
            .unwrap()
    );
    let (delivery, attempts) = store
        .delivery_attempts("last", &target.endpoint_id, &id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(delivery.status, DeliveryStatus::Failed);
    assert!(!delivery.last_attempt);
    assert_eq!(attempts.len(), 2);
    // Dead again, it is kept (and can be re-sent) like any dead delivery.
    assert_eq!(store.delivery_stats(NOW_MS).await.unwrap().dead, 1);
}

pub(crate) async fn updates_and_deletes_mark_the_endpoint_changed(store: Arc<dyn Store>) {
    let first = endpoint("fence", 1);
    let second = endpoint("fence", 2);
    create(&*store, &first).await;
    create(&*store, &second).await;
    let changes = store.endpoint_changes();
    let before = changes.version();
    let spec = EndpointSpec {
        ordering: None,
        filter: None,
        url: "https://example.com/moved".into(),
        status: None,
        events: first.events.clone(),
        rate_limit: None,
        options: None,
    };
    store
        .update_endpoint("fence", &first.endpoint_id, &spec)
        .await
        .unwrap()
        .unwrap();
    assert!(changes.changed_since(&first.endpoint_id, before));
    assert!(!changes.changed_since(&second.endpoint_id, before));
    let missing = store
        .update_endpoint("fence", "wh_missing", &spec)
        .await
        .unwrap();
    assert!(missing.is_none());
    assert!(!changes.changed_since("wh_missing", before));
    assert!(
        store
            .delete_endpoint("fence", &second.endpoint_id)
            .await
            .unwrap()
    );
    assert!(changes.changed_since(&second.endpoint_id, before));
}

/// At most two live secrets (SPEC §8): a rotation with a grace keeps the
/// replaced secret until then, a rotation during a grace drops the oldest,
/// grace 0 keeps none; claims carry what signs; held claims are told.
pub(crate) async fn rotation_keeps_at_most_two_secrets(store: Arc<dyn Store>) {
    let (target, _) = one_delivery(&*store, "rot").await;
    let original = target.secret.clone();
    let changes = store.endpoint_changes();
    let before = changes.version();
    let first = ids::new_secret();
    let rotated = store
        .rotate_secret("rot", &target.endpoint_id, &first, Some(1_000))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(rotated.secret, first);
    let previous = rotated.previous_secret.clone().unwrap();
    assert_eq!(
        (previous.secret.as_str(), previous.expires_at),
        (original.as_str(), 1_000)
    );
    assert!(changes.changed_since(&target.endpoint_id, before));
    let claim = claim_at(&*store, NOW_MS, 10).await.remove(0);
    assert_eq!(claim.secret, first);
    assert_eq!(claim.previous_secret, Some(previous.clone()));
    // The grace ends by itself: nothing has to run at that instant.
    assert!(previous.is_live(999) && !previous.is_live(1_000));
    assert_eq!(rotated.clone().as_of(1_000).previous_secret, None);

    let second = ids::new_secret();
    let again = store
        .rotate_secret("rot", &target.endpoint_id, &second, Some(2_000))
        .await
        .unwrap()
        .unwrap();
    let previous = again.previous_secret.unwrap();
    assert_eq!(
        previous.secret, first,
        "the oldest secret is dropped at once"
    );
    assert_eq!(previous.expires_at, 2_000);
    let read = store
        .get_endpoint("rot", &target.endpoint_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(read.secret, second);

    let leaked = ids::new_secret();
    let replaced = store
        .rotate_secret("rot", &target.endpoint_id, &leaked, None)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(replaced.secret, leaked);
    assert_eq!(replaced.previous_secret, None, "grace 0 replaces at once");
    let listed = store.list_endpoints("rot").await.unwrap();
    assert_eq!(listed[0].previous_secret, None);
    assert!(
        store
            .rotate_secret("rot", "wh_missing", &leaked, None)
            .await
            .unwrap()
            .is_none()
    );
}

/// SPEC §8: `failing_since` is the first failed attempt of the current
/// streak; a streak of `auto_disable_after` disables the endpoint with a
/// reason; enabling it again, or a success (a test delivery reaches a
/// disabled endpoint), ends the streak.
// One story, read top to bottom.
#[allow(clippy::too_many_lines)]
pub(crate) async fn a_failure_streak_disables_and_a_success_or_enabling_ends_it(
    store: Arc<dyn Store>,
) {
    let target = endpoint("streak", 1);
    create(&*store, &target).await;
    accept_many(&*store, "streak", 4).await;
    let claims = claim_at(&*store, NOW_MS, 10).await;
    assert_eq!(claims.len(), 4);
    let read = |store: Arc<dyn Store>| {
        let endpoint_id = target.endpoint_id.clone();
        async move {
            store
                .get_endpoint("streak", &endpoint_id)
                .await
                .unwrap()
                .unwrap()
        }
    };
    let fail_at = |claim: &Claim, at_ms: i64, result: AttemptResult| FinishedAttempt {
        claim: claim.clone(),
        record: AttemptRecord {
            started_at: at_ms,
            ..attempt(1, Some(500), "http_5xx")
        },
        result,
    };
    let started = NOW_MS / 1000;
    let recorded = store
        .record_attempts(&[fail_at(
            &claims[0],
            NOW_MS,
            AttemptResult::RetryAt(NOW_MS + DAY_MS),
        )])
        .await
        .unwrap();
    assert_eq!(recorded, vec![Recorded::Written]);
    assert_eq!(read(Arc::clone(&store)).await.failing_since, Some(started));
    // Half an hour later: failing, not long enough.
    let half = store
        .record_attempts(&[fail_at(&claims[1], NOW_MS + 1_800_000, AttemptResult::Dead)])
        .await
        .unwrap();
    assert_eq!(half, vec![Recorded::Written]);
    let changes = store.endpoint_changes();
    let before = changes.version();
    let hour = store
        .record_attempts(&[fail_at(
            &claims[2],
            NOW_MS + 3_600_000,
            AttemptResult::RetryAt(NOW_MS + DAY_MS),
        )])
        .await
        .unwrap();
    assert_eq!(
        hour,
        vec![Recorded::WrittenAndDisabled {
            failing_since: started
        }]
    );
    assert!(
        changes.changed_since(&target.endpoint_id, before),
        "held claims are told"
    );
    let disabled = read(Arc::clone(&store)).await;
    assert_eq!(disabled.status, EndpointStatus::Disabled);
    assert_eq!(disabled.failing_since, Some(started));
    let reason = disabled.disabled_reason.clone().unwrap();
    assert!(reason.contains(&started.to_string()), "{reason}");
    // Its deliveries wait (parked), as for any disabled endpoint.
    assert!(claim_at(&*store, NOW_MS + 2 * DAY_MS, 10).await.is_empty());

    // Enabling it again ends the streak and clears the reason.
    let spec = EndpointSpec {
        ordering: None,
        filter: None,
        url: target.url.clone(),
        status: Some(EndpointStatus::Enabled),
        events: target.events.clone(),
        rate_limit: None,
        options: None,
    };
    let enabled = store
        .update_endpoint("streak", &target.endpoint_id, &spec)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(enabled.status, EndpointStatus::Enabled);
    assert_eq!(
        (enabled.failing_since, enabled.disabled_reason),
        (None, None)
    );

    // Disabled again; a successful test delivery re-enables it.
    let later = NOW_MS + 10 * DAY_MS;
    store
        .record_attempts(&[fail_at(
            &claims[3],
            later,
            AttemptResult::RetryAt(later + DAY_MS),
        )])
        .await
        .unwrap();
    let test = Event::test("streak", EventType::GENERATED_VIDEO_SUCCESS, later / 1000);
    store
        .create_test_delivery(&target.endpoint_id, &test, later)
        .await
        .unwrap()
        .unwrap();
    let probes = claim_at(&*store, later + 2 * 3_600_000, 10).await;
    let retry = probes.iter().find(|claim| !claim.delivery.test).unwrap();
    let disabling = store
        .record_attempts(&[fail_at(retry, later + 2 * 3_600_000, AttemptResult::Dead)])
        .await
        .unwrap();
    assert!(matches!(disabling[0], Recorded::WrittenAndDisabled { .. }));
    let test_claim = probes.iter().find(|claim| claim.delivery.test).unwrap();
    let success = FinishedAttempt {
        claim: test_claim.clone(),
        record: attempt(1, Some(200), "ok"),
        result: AttemptResult::Delivered,
    };
    assert_eq!(
        store.record_attempts(&[success]).await.unwrap(),
        vec![Recorded::Written]
    );
    let healed = read(Arc::clone(&store)).await;
    assert_eq!(healed.status, EndpointStatus::Enabled);
    assert_eq!((healed.failing_since, healed.disabled_reason), (None, None));
}

/// What an older webhookd left behind (delivery hashes that expired on
/// their own, their ids still indexed) does not break a page.
#[tokio::test]
async fn redis_listing_skips_deliveries_that_vanished() {
    let Some(url) = require(Service::Redis) else {
        return;
    };
    let prefix = unique_prefix("vanished");
    let store = RedisStore::connect(&url, &prefix).await.unwrap();
    let target = endpoint("gone", 1);
    create(&store, &target).await;
    accept_many(&store, "gone", 25).await;
    let mut ids = by_status(&store, "gone", &target.endpoint_id, DeliveryStatus::Pending).await;
    ids.sort();
    let mut connection = ::redis::Client::open(url.as_str())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    // The key's partition is private to the store: delete the id under
    // every partition a prefix could name (a missing key is a no-op), so
    // the test neither scans the whole database nor copies the hash.
    let mut pipeline = ::redis::pipe();
    for id in &ids[..20] {
        for partition in 0..256 {
            pipeline.del(format!("{prefix}{{p:{partition}}}:dlv:{id}"));
        }
    }
    let deleted: Vec<i64> = pipeline.query_async(&mut connection).await.unwrap();
    assert_eq!(deleted.iter().sum::<i64>(), 20);
    let page = Page {
        limit: 20,
        after: None,
    };
    let listed: Vec<String> = store
        .list_deliveries("gone", &target.endpoint_id, DeliveryStatus::Pending, &page)
        .await
        .unwrap()
        .into_iter()
        .map(|d| d.delivery_id)
        .collect();
    assert_eq!(listed, ids[20..].to_vec());
}

pub(super) async fn wait_until(condition: impl Fn() -> bool) {
    for _ in 0..200 {
        if condition() {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    panic!("condition not met within 2 s");
}

/// Accepting and leasing are one transaction: when leasing fails, nothing
/// was accepted, so the producer's retry is not taken for a duplicate.
#[tokio::test]
async fn sqlite_accept_and_claim_commits_nothing_when_leasing_fails() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("w.db");
    let store = SqliteStore::open(path.to_str().unwrap()).await.unwrap();
    create(&store, &endpoint("tx", 1)).await;
    let saboteur = rusqlite::Connection::open(&path).unwrap();
    saboteur
        .execute_batch(
            "CREATE TRIGGER no_insert_lease BEFORE INSERT ON deliveries
                 WHEN NEW.lease_owner IS NOT NULL BEGIN SELECT RAISE(ABORT, 'injected'); END;
             CREATE TRIGGER no_update_lease BEFORE UPDATE OF lease_owner ON deliveries
                 WHEN NEW.lease_owner IS NOT NULL BEGIN SELECT RAISE(ABORT, 'injected'); END;",
        )
        .unwrap();
    let events = [event("tx", "evt_once", &EventType::GENERATED_VIDEO_SUCCESS)];
    let leased = store
        .accept_and_claim(&events, NOW_MS, &claim_request(NOW_MS, 10))
        .await;
    assert!(leased.is_err(), "leasing was sabotaged");
    saboteur
        .execute_batch("DROP TRIGGER no_insert_lease; DROP TRIGGER no_update_lease;")
        .unwrap();
    let retried = store.accept_events(&events, NOW_MS).await.unwrap();
    assert!(
        matches!(&retried[0], Acceptance::Accepted { deliveries, .. } if deliveries.len() == 1),
        "the retry is a first acceptance: {retried:?}"
    );
}

/// SPEC §8, recover: dead deliveries of one endpoint created in a window get
/// one more attempt each, oldest first; pending ones and those outside the
/// window are untouched; steps are bounded and a second run finds nothing.
pub(crate) async fn recover_takes_the_dead_of_a_window_in_bounded_steps(store: Arc<dyn Store>) {
    let target = endpoint("rec", 1);
    create(&*store, &target).await;
    let mut dead = Vec::new();
    // Delivery ids carry the real time of their creation, which is what a
    // window selects: the events are accepted a few milliseconds apart.
    let mut accepted_from = Vec::new();
    for second in 0..6_i64 {
        tokio::time::sleep(std::time::Duration::from_millis(3)).await;
        accepted_from.push(webhookd_core::time::unix_millis());
        let at = NOW_MS + second * 1000;
        let event = event(
            "rec",
            &format!("evt_{second}"),
            &EventType::GENERATED_VIDEO_SUCCESS,
        );
        store
            .accept_events(std::slice::from_ref(&event), at)
            .await
            .unwrap();
        let claim = claim_at(&*store, at, 10).await.remove(0);
        if second < 5 {
            let record = attempt(1, Some(500), "http_5xx");
            assert!(
                store
                    .record_attempt(&claim, &record, AttemptResult::Dead)
                    .await
                    .unwrap()
            );
            dead.push(claim.delivery.delivery_id.clone());
        } else {
            assert!(store.release(&claim, at).await.unwrap(), "stays pending");
        }
    }
    let window = webhookd_store::DeliveryWindow {
        from_ms: accepted_from[1],
        until_ms: accepted_from[4],
    };
    let count = store
        .count_dead("rec", &target.endpoint_id, window)
        .await
        .unwrap();
    assert_eq!(count, 3);
    let later = NOW_MS + DAY_MS;
    assert_eq!(
        store
            .recover("rec", &target.endpoint_id, window, later, 2)
            .await
            .unwrap(),
        2,
        "bounded"
    );
    assert_eq!(
        store
            .recover("rec", &target.endpoint_id, window, later, 2)
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        store
            .recover("rec", &target.endpoint_id, window, later, 2)
            .await
            .unwrap(),
        0
    );
    let failed = by_status(&*store, "rec", &target.endpoint_id, DeliveryStatus::Failed).await;
    assert_eq!(failed, vec![dead[0].clone(), dead[4].clone()]);
    let claims = claim_at(&*store, later, 10).await;
    let recovered: Vec<&str> = claims
        .iter()
        .filter(|claim| claim.delivery.last_attempt)
        .map(|claim| claim.delivery.delivery_id.as_str())
        .collect();
    assert_eq!(
        recovered,
        vec![dead[1].as_str(), dead[2].as_str(), dead[3].as_str()],
        "oldest first"
    );
    assert_eq!(claims.len(), 4, "and the pending one, once");
    assert_eq!(store.delivery_stats(later).await.unwrap().dead, 2);
}
