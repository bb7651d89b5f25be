//! Ordered endpoints (SPEC §15): the deliveries of one line go one at a
//! time in the order their events were accepted; a failing head holds the
//! rest until it is delivered or dead; lines of different keys proceed
//! side by side.

use std::sync::Arc;

use webhookd_core::{Endpoint, Event, EventType};
use webhookd_store::{Acceptance, AttemptResult, Claim, DeliveryStatus, RetryOutcome, Store};

use super::{LEASE_MS, NOW_MS, attempt, claim_at, claim_request, create, endpoint, pending};

fn ordered(username: &str, ordering: &str) -> Endpoint {
    Endpoint {
        ordering: Some(ordering.to_owned()),
        ..endpoint(username, 1)
    }
}

/// An event whose `data` is `data`, with the top-level `extra` fields.
fn event_with(username: &str, event_id: &str, data: &str, extra: &str) -> Event {
    let message = format!(
        r#"{{"event":"{}","username":"{username}","event_id":"{event_id}","data":{data}{extra}}}"#,
        EventType::GENERATED_VIDEO_SUCCESS
    );
    Event::parse(message.as_bytes(), NOW_MS / 1000).unwrap()
}

/// The event ids of `claims`, sorted.
fn claimed(claims: &[Claim]) -> Vec<&str> {
    let mut ids: Vec<&str> = claims
        .iter()
        .map(|c| c.delivery.event_id.as_str())
        .collect();
    ids.sort_unstable();
    ids
}

async fn finish(store: &dyn Store, claim: &Claim, result: AttemptResult) {
    let number = claim.delivery.attempts + 1;
    assert!(
        store
            .record_attempt(claim, &attempt(number, Some(200), "status_200"), result)
            .await
            .unwrap(),
        "the lease still held"
    );
}

pub(super) async fn an_ordered_endpoint_sends_one_at_a_time_in_acceptance_order(
    store: Arc<dyn Store>,
) {
    let target = ordered("ord", "");
    create(&*store, &target).await;
    let events: Vec<Event> = (1..=3)
        .map(|n| event_with("ord", &format!("e{n}"), "{}", ""))
        .collect();
    let accepted = store.accept_events(&events, NOW_MS).await.unwrap();
    for acceptance in &accepted {
        let Acceptance::Accepted { deliveries, .. } = acceptance else {
            panic!("not accepted: {acceptance:?}");
        };
        assert_eq!(deliveries[0].ordering_key.as_deref(), Some(""));
    }
    // The head is due; the others are held (no due time) behind it.
    let listed = pending(&*store, "ord", &target.endpoint_id).await;
    let due: Vec<(&str, bool)> = listed
        .iter()
        .map(|d| (d.event_id.as_str(), d.next_attempt_at != 0))
        .collect();
    assert_eq!(due, [("e1", true), ("e2", false), ("e3", false)]);

    let first = claim_at(&*store, NOW_MS, 10).await;
    assert_eq!(claimed(&first), ["e1"], "one at a time");
    // A worker that dies leaves the head due again, never the next one.
    let again = claim_at(&*store, NOW_MS + LEASE_MS, 10).await;
    assert_eq!(claimed(&again), ["e1"]);
    let later = NOW_MS + LEASE_MS;

    // A failing head holds the line until its retry is due.
    finish(&*store, &again[0], AttemptResult::RetryAt(later + 5_000)).await;
    assert!(claim_at(&*store, later + 4_000, 10).await.is_empty());
    let retried = claim_at(&*store, later + 5_000, 10).await;
    assert_eq!(claimed(&retried), ["e1"]);
    finish(&*store, &retried[0], AttemptResult::Delivered).await;

    // Delivered: the next is the head.
    let second = claim_at(&*store, later + 6_000, 10).await;
    assert_eq!(claimed(&second), ["e2"]);
    // A fresh event joins the end of the line: not leased at acceptance.
    let (_, leased) = store
        .accept_and_claim(
            &[event_with("ord", "e4", "{}", "")],
            later + 6_000,
            &claim_request(later + 6_000, 10),
        )
        .await
        .unwrap();
    assert!(
        leased.is_empty(),
        "a held delivery is not leased: {leased:?}"
    );

    // Dead: the next goes too.
    finish(&*store, &second[0], AttemptResult::Dead).await;
    let third = claim_at(&*store, later + 7_000, 10).await;
    assert_eq!(claimed(&third), ["e3"]);

    // A dead delivery sent again by hand is outside the line: it goes
    // now, beside the head, and finishing it moves nothing.
    let e2 = second[0].delivery.delivery_id.clone();
    assert_eq!(
        store
            .retry_dead("ord", &target.endpoint_id, &e2, later + 7_000)
            .await
            .unwrap(),
        RetryOutcome::Scheduled
    );
    let resent = claim_at(&*store, later + 7_000, 10).await;
    assert_eq!(claimed(&resent), ["e2"]);
    assert_eq!(resent[0].delivery.ordering_key, None);
    finish(&*store, &resent[0], AttemptResult::Delivered).await;
    assert!(
        claim_at(&*store, later + 8_000, 10).await.is_empty(),
        "e4 still waits for e3"
    );
    finish(&*store, &third[0], AttemptResult::Delivered).await;
    let fourth = claim_at(&*store, later + 9_000, 10).await;
    assert_eq!(claimed(&fourth), ["e4"]);
    finish(&*store, &fourth[0], AttemptResult::Delivered).await;
    assert!(
        pending(&*store, "ord", &target.endpoint_id)
            .await
            .is_empty()
    );
    let delivered = store
        .list_deliveries(
            "ord",
            &target.endpoint_id,
            DeliveryStatus::Delivered,
            &webhookd_store::Page {
                limit: 10,
                after: None,
            },
        )
        .await
        .unwrap();
    assert_eq!(delivered.len(), 4);
}

pub(super) async fn keyed_lines_proceed_side_by_side_each_in_its_order(store: Arc<dyn Store>) {
    let by_video = ordered("keyed", "/data/video_id");
    let by_event_key = Endpoint {
        ordering: Some(String::new()),
        ..endpoint("keyed", 2)
    };
    create(&*store, &by_video).await;
    create(&*store, &by_event_key).await;
    let events = [
        event_with(
            "keyed",
            "a1",
            r#"{"video_id":"a"}"#,
            r#","ordering_key":"x""#,
        ),
        event_with(
            "keyed",
            "b1",
            r#"{"video_id":"b"}"#,
            r#","ordering_key":"x""#,
        ),
        event_with(
            "keyed",
            "a2",
            r#"{"video_id":"a"}"#,
            r#","ordering_key":"y""#,
        ),
        event_with("keyed", "n1", r#"{"video_id":7}"#, ""),
        event_with("keyed", "n2", r#"{"video_id":7}"#, ""),
        event_with("keyed", "z1", r#"{"other":1}"#, ""),
        event_with(
            "keyed",
            "b2",
            r#"{"video_id":"b"}"#,
            r#","ordering_key":"y""#,
        ),
    ];
    let accepted = store.accept_events(&events, NOW_MS).await.unwrap();
    let lines: Vec<(String, Option<String>)> = accepted
        .iter()
        .flat_map(|acceptance| match acceptance {
            Acceptance::Accepted { deliveries, .. } => deliveries.clone(),
            other => panic!("not accepted: {other:?}"),
        })
        .filter(|d| d.endpoint_id == by_video.endpoint_id)
        .map(|d| (d.event_id, d.ordering_key))
        .collect();
    let line = |text: &str| Some(text.to_owned());
    assert_eq!(
        lines,
        [
            ("a1".into(), line("a")),
            ("b1".into(), line("b")),
            ("a2".into(), line("a")),
            ("n1".into(), line("7")),
            ("n2".into(), line("7")),
            ("z1".into(), line("")),
            ("b2".into(), line("b")),
        ]
    );

    let heads = claim_at(&*store, NOW_MS, 20).await;
    let (video, event_key): (Vec<Claim>, Vec<Claim>) = heads
        .into_iter()
        .partition(|c| c.delivery.endpoint_id == by_video.endpoint_id);
    // One head per key.
    assert_eq!(claimed(&video), ["a1", "b1", "n1", "z1"]);
    // By the events' own keys: x (a1, b1) and y (a2, b2); the rest unkeyed.
    assert_eq!(claimed(&event_key), ["a1", "a2", "n1"]);

    let later = NOW_MS + 1_000;
    for claim in video.iter().chain(&event_key) {
        finish(&*store, claim, AttemptResult::Delivered).await;
    }
    let next = claim_at(&*store, later, 20).await;
    let (video, event_key): (Vec<Claim>, Vec<Claim>) = next
        .into_iter()
        .partition(|c| c.delivery.endpoint_id == by_video.endpoint_id);
    assert_eq!(claimed(&video), ["a2", "b2", "n2"]);
    assert_eq!(claimed(&event_key), ["b1", "b2", "n2"]);
}
