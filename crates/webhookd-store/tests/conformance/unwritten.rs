//! Deliver before writing (`ClaimRequest::unwritten`, docs/delivery.md): a
//! store may lease fresh deliveries without writing them, the caller's
//! broker message being their record until they are recorded. Whether it
//! does or not, what follows must be the same: recording writes them,
//! handing back writes them, and one never recorded is sent again — by the
//! store (written) or by the event offered again (unwritten).

use super::*;

fn unwritten_request(now_ms: i64) -> ClaimRequest {
    ClaimRequest {
        unwritten: true,
        ..claim_request(now_ms, 10)
    }
}

/// Two endpoints of `username` and one event to both, leased unwritten.
async fn leased_to_two(store: &dyn Store, username: &str) -> (Event, [Endpoint; 2], [Claim; 2]) {
    let first = endpoint(username, 1);
    let second = endpoint(username, 2);
    create(store, &first).await;
    create(store, &second).await;
    let sent = event(username, "evt_u", EventType::GeneratedVideoSuccess);
    let (accepted, mut claims) = store
        .accept_and_claim(
            std::slice::from_ref(&sent),
            NOW_MS,
            &unwritten_request(NOW_MS),
        )
        .await
        .unwrap();
    assert_eq!(deliveries(accepted.into_iter().next().unwrap()).len(), 2);
    assert_eq!(claims.len(), 2);
    claims.sort_by_key(|claim| claim.delivery.endpoint_id != first.endpoint_id);
    let [a, b]: [Claim; 2] = claims.try_into().unwrap();
    (sent, [first, second], [a, b])
}

async fn offer_again(store: &dyn Store, sent: &Event, now_ms: i64) -> (Acceptance, Vec<Claim>) {
    let (mut accepted, claims) = store
        .accept_and_claim(
            std::slice::from_ref(sent),
            now_ms,
            &unwritten_request(now_ms),
        )
        .await
        .unwrap();
    (accepted.remove(0), claims)
}

pub(crate) async fn unwritten_deliveries_are_written_by_their_records(store: Arc<dyn Store>) {
    let (sent, [first, second], [a, b]) = leased_to_two(&*store, "ulla").await;
    let retry_at = NOW_MS + 60_000;
    let recorded = store
        .record_attempts(&[
            FinishedAttempt {
                claim: a.clone(),
                record: attempt(1, Some(200), "ok"),
                result: AttemptResult::Delivered,
            },
            FinishedAttempt {
                claim: b.clone(),
                record: attempt(1, Some(500), "http_5xx"),
                result: AttemptResult::RetryAt(retry_at),
            },
        ])
        .await
        .unwrap();
    assert_eq!(recorded, vec![Recorded::Written, Recorded::Written]);

    let delivered = by_status(
        &*store,
        "ulla",
        &first.endpoint_id,
        DeliveryStatus::Delivered,
    )
    .await;
    assert_eq!(delivered, vec![a.delivery.delivery_id.clone()]);
    let (_, log) = store
        .delivery_attempts("ulla", &first.endpoint_id, &a.delivery.delivery_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(log, vec![attempt(1, Some(200), "ok")]);

    let waiting = pending(&*store, "ulla", &second.endpoint_id).await;
    assert_eq!(waiting.len(), 1);
    assert_eq!(
        (
            &waiting[0].delivery_id,
            waiting[0].attempts,
            waiting[0].next_attempt_at
        ),
        (&b.delivery.delivery_id, 1, retry_at)
    );
    assert!(claim_at(&*store, retry_at - 1, 10).await.is_empty());
    let again = claim_at(&*store, retry_at, 10).await;
    assert_eq!(again.len(), 1);
    assert_eq!(
        again[0].delivery.body,
        sent.body(),
        "sent again byte for byte"
    );
    assert!(!again[0].unwritten);

    let (outcome, claims) = offer_again(&*store, &sent, NOW_MS + 1).await;
    assert_eq!((outcome, claims.len()), (Acceptance::Duplicate, 0));
}

pub(crate) async fn an_unwritten_delivery_handed_back_is_written_due_then(store: Arc<dyn Store>) {
    let (sent, [first, _], [a, _]) = leased_to_two(&*store, "uma").await;
    assert!(store.release(&a, NOW_MS + 1_000).await.unwrap());
    assert!(
        claim_at(&*store, NOW_MS + 999, 10)
            .await
            .iter()
            .all(|claim| claim.delivery.delivery_id != a.delivery.delivery_id)
    );
    let again: Vec<Claim> = claim_at(&*store, NOW_MS + 1_000, 10)
        .await
        .into_iter()
        .filter(|claim| claim.delivery.endpoint_id == first.endpoint_id)
        .collect();
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].delivery.delivery_id, a.delivery.delivery_id);
    assert_eq!(again[0].delivery.attempts, 0, "no attempt spent");
    assert_eq!(again[0].delivery.body, sent.body());
}

/// A crash between sending and recording: after the lease, the endpoint
/// that has no record gets the event again, the recorded one never does,
/// and the first worker's late record is stale.
pub(crate) async fn an_unrecorded_unwritten_delivery_is_sent_again_after_its_lease(
    store: Arc<dyn Store>,
) {
    let (sent, [_, second], [a, b]) = leased_to_two(&*store, "ursa").await;
    assert!(
        store
            .record_attempt(&a, &attempt(1, Some(200), "ok"), AttemptResult::Delivered)
            .await
            .unwrap()
    );
    let lease_end = NOW_MS + LEASE_MS;

    let (held, claims) = offer_again(&*store, &sent, NOW_MS + 1).await;
    let again = if b.unwritten {
        assert_eq!(
            held,
            Acceptance::HeldElsewhere {
                until_ms: lease_end
            }
        );
        assert!(claims.is_empty());
        let (taken_over, mut claims) = offer_again(&*store, &sent, lease_end + 1).await;
        let to: Vec<String> = deliveries(taken_over)
            .into_iter()
            .map(|delivery| delivery.endpoint_id)
            .collect();
        assert_eq!(
            to,
            vec![second.endpoint_id.clone()],
            "only the unrecorded endpoint"
        );
        assert_eq!(claims.len(), 1);
        claims.remove(0)
    } else {
        // Written at acceptance: the store itself offers it again.
        assert_eq!((held, claims.len()), (Acceptance::Duplicate, 0));
        let mut claims = claim_at(&*store, lease_end + 1, 10).await;
        assert_eq!(claims.len(), 1);
        claims.remove(0)
    };
    assert_eq!(again.delivery.endpoint_id, second.endpoint_id);
    assert_eq!(again.delivery.body, sent.body());
    assert!(
        !store
            .record_attempt(&b, &attempt(1, Some(200), "ok"), AttemptResult::Delivered)
            .await
            .unwrap(),
        "the first worker's lease is over"
    );
    assert!(
        store
            .record_attempt(
                &again,
                &attempt(1, Some(200), "ok"),
                AttemptResult::Delivered
            )
            .await
            .unwrap()
    );
    let (outcome, claims) = offer_again(&*store, &sent, lease_end + 2).await;
    assert_eq!((outcome, claims.len()), (Acceptance::Duplicate, 0));
}

/// Taken over by a consumer with no room to send: what the marker still
/// lists is written, due at once — never mistaken for a duplicate.
pub(crate) async fn a_held_event_taken_over_without_room_is_written(store: Arc<dyn Store>) {
    let (sent, [_, second], [a, _]) = leased_to_two(&*store, "uwe").await;
    assert!(
        store
            .record_attempt(&a, &attempt(1, Some(200), "ok"), AttemptResult::Delivered)
            .await
            .unwrap()
    );
    let after_lease = NOW_MS + LEASE_MS + 1;
    let no_room = ClaimRequest {
        unwritten: true,
        ..ClaimRequest::default()
    };
    let (accepted, claims) = store
        .accept_and_claim(std::slice::from_ref(&sent), after_lease, &no_room)
        .await
        .unwrap();
    assert!(claims.is_empty());
    let due = claim_at(&*store, after_lease, 10).await;
    assert_eq!(due.len(), 1, "{accepted:?}");
    assert_eq!(due[0].delivery.endpoint_id, second.endpoint_id);
    assert_eq!(due[0].delivery.body, sent.body());
}
