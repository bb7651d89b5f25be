//! The embedded store after its clock was set back (docs/reliability.md):
//! due times and leases written while the clock ran an hour ahead do not
//! keep their deliveries waiting an hour.

// In tests a failed unwrap is a failed test, with its location.
#![allow(clippy::unwrap_used)]

use webhookd_core::time::unix_millis;
use webhookd_core::{Endpoint, EndpointStatus, Event, EventType, ids};
use webhookd_store::{ClaimRequest, SqliteStore, Store};

const HOUR_MS: i64 = 3_600_000;
const LEASE_MS: i64 = 50_000;

fn claim_request(now_ms: i64) -> ClaimRequest {
    ClaimRequest {
        now_ms,
        lease_until_ms: now_ms + LEASE_MS,
        park_until_ms: now_ms + LEASE_MS,
        limit: 10,
        per_endpoint: 10,
        ..ClaimRequest::default()
    }
}

fn event(event_id: &str, now_ms: i64) -> Event {
    let message = format!(
        r#"{{"event":"generated_video_success","username":"clocked","event_id":"{event_id}","data":{{}}}}"#
    );
    Event::parse(message.as_bytes(), now_ms / 1000).unwrap()
}

/// Campaign `--store sqlite --seed 1 --faults kill,pause,clock-ahead`: a
/// process run for 5 s with its clock an hour ahead left the deliveries it
/// accepted due, and those it claimed leased, an hour later; found still
/// pending when the heal time ran out.
#[tokio::test]
async fn work_written_by_a_clock_an_hour_ahead_is_due_once_the_clock_is_set_back() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("webhookd.db");
    let store = SqliteStore::open(path.to_str().unwrap()).await.unwrap();
    let endpoint = Endpoint {
        ordering: None,
        filter: None,
        endpoint_id: ids::new_endpoint_id(),
        url: "https://example.com/hook".into(),
        secret: ids::new_secret(),
        status: EndpointStatus::Enabled,
        events: vec![EventType::GENERATED_VIDEO_SUCCESS],
        username: "clocked".into(),
        created_at: 0,
        previous_secret: None,
        failing_since: None,
        quota_refused: 0,
        disabled_reason: None,
        rate_limit: None,
        options: None,
    };
    store.create_endpoint(&endpoint, 20).await.unwrap();

    // The process an hour ahead: it accepts two events, leases one of
    // their deliveries until an hour and 50 s from now, and has noted its
    // time (its claims note the wall clock: here the test's, so the note
    // is written by hand).
    let ahead = unix_millis() + HOUR_MS;
    store
        .accept_events(&[event("evt_leased", ahead)], ahead)
        .await
        .unwrap();
    let leased = store.claim_due(&claim_request(ahead)).await.unwrap();
    assert_eq!(leased.len(), 1);
    store
        .accept_events(&[event("evt_fresh", ahead)], ahead)
        .await
        .unwrap();
    store
        .put_setting("clock:high_water", Some(&ahead.to_string()))
        .await
        .unwrap();

    // Restarted on the right clock: the fresh delivery is due now, the
    // leased one when its lease ends, 50 s from now — not an hour later.
    drop(store);
    let store = SqliteStore::open(path.to_str().unwrap()).await.unwrap();
    let claimed_at = |now: i64| {
        let store = &store;
        async move {
            store
                .claim_due(&claim_request(now))
                .await
                .unwrap()
                .into_iter()
                .map(|claim| claim.delivery.event_id)
                .collect::<Vec<String>>()
        }
    };
    let now = unix_millis();
    assert_eq!(claimed_at(now).await, ["evt_fresh"]);
    assert_eq!(
        claimed_at(now + LEASE_MS - 2_000).await,
        Vec::<String>::new()
    );
    let mut later = claimed_at(now + LEASE_MS + 2_000).await;
    later.sort();
    // (The fresh one's lease, from the first claim, has ended too.)
    assert_eq!(later, ["evt_fresh", "evt_leased"]);
}
