//! Per-tenant quotas the store enforces as it accepts events (SPEC §11):
//! an endpoint's kept deliveries, a user's events per day.

use super::*;

async fn set_quotas(store: &dyn Store, username: &str, json: &str) {
    store
        .put_setting(&webhookd_core::quota::setting_name(username), Some(json))
        .await
        .unwrap();
}

async fn accept_at(store: &dyn Store, username: &str, event_id: &str, now_ms: i64) -> Acceptance {
    let event = event(username, event_id, &EventType::GENERATED_VIDEO_SUCCESS);
    let mut outcomes = store
        .accept_events(std::slice::from_ref(&event), now_ms)
        .await
        .unwrap();
    outcomes.remove(0)
}

async fn quota_refused(store: &dyn Store, endpoint: &Endpoint) -> u64 {
    store
        .get_endpoint(&endpoint.username, &endpoint.endpoint_id)
        .await
        .unwrap()
        .unwrap()
        .quota_refused
}

/// An endpoint holding `max_kept_deliveries_per_endpoint` pending + dead
/// deliveries gets no new ones — the event still reaches the owner's other
/// endpoints — and counts each refusal until its next success.
pub(crate) async fn an_endpoint_holding_its_kept_deliveries_gets_no_new_ones(
    store: Arc<dyn Store>,
) {
    let (full, other) = (endpoint("keeper", 1), endpoint("keeper", 2));
    create(&*store, &full).await;
    create(&*store, &other).await;
    set_quotas(
        &*store,
        "keeper",
        r#"{"max_kept_deliveries_per_endpoint":3}"#,
    )
    .await;
    for n in 0..3 {
        let accepted = accept_at(&*store, "keeper", &format!("evt_{n}"), NOW_MS).await;
        assert_eq!(accepted.delivery_count(), 2);
    }
    // `full` keeps one dead and two pending; `other` delivers its three.
    let claims = claim_at(&*store, NOW_MS, 10).await;
    assert_eq!(claims.len(), 6);
    let record = AttemptRecord {
        started_at: NOW_MS,
        ..attempt(1, Some(500), "http_5xx")
    };
    let mut dead_one = false;
    for claim in &claims {
        let result = if claim.delivery.endpoint_id == other.endpoint_id {
            AttemptResult::Delivered
        } else if dead_one {
            AttemptResult::RetryAt(NOW_MS + 60_000)
        } else {
            dead_one = true;
            AttemptResult::Dead
        };
        assert!(store.record_attempt(claim, &record, result).await.unwrap());
    }

    for n in 3..5 {
        let accepted = accept_at(&*store, "keeper", &format!("evt_{n}"), NOW_MS + 1).await;
        let Acceptance::Accepted {
            deliveries,
            quota_refused,
        } = accepted
        else {
            panic!("accepted for the other endpoint, got {accepted:?}");
        };
        assert_eq!(quota_refused, vec![full.endpoint_id.clone()]);
        assert_eq!(deliveries.len(), 1);
        assert_eq!(deliveries[0].endpoint_id, other.endpoint_id);
    }
    assert_eq!(quota_refused(&*store, &full).await, 2);
    assert_eq!(quota_refused(&*store, &other).await, 0);

    // One of `full`'s retries delivered: room for one, and the count of
    // refusals starts again.
    let retries: Vec<Claim> = claim_at(&*store, NOW_MS + 60_000, 10)
        .await
        .into_iter()
        .filter(|claim| claim.delivery.endpoint_id == full.endpoint_id)
        .collect();
    assert_eq!(retries.len(), 2);
    assert!(
        store
            .record_attempt(&retries[0], &record, AttemptResult::Delivered)
            .await
            .unwrap()
    );
    assert_eq!(quota_refused(&*store, &full).await, 0);
    let accepted = accept_at(&*store, "keeper", "evt_5", NOW_MS + 60_001).await;
    assert_eq!(accepted.delivery_count(), 2, "{accepted:?}");
    // Both full now (`other` holds three pending): accepted, for nobody.
    let accepted = accept_at(&*store, "keeper", "evt_6", NOW_MS + 60_001).await;
    assert!(
        matches!(&accepted, Acceptance::Accepted { deliveries, quota_refused }
            if deliveries.is_empty() && quota_refused.len() == 2),
        "{accepted:?}"
    );
}

/// Past `max_events_per_day`, an event is refused with nothing written —
/// a duplicate still reads as one, and the next day counts afresh; a user
/// without the quota is not counted.
pub(crate) async fn events_past_the_daily_quota_are_refused_and_not_remembered(
    store: Arc<dyn Store>,
) {
    let target = endpoint("daily", 1);
    create(&*store, &target).await;
    create(&*store, &endpoint("unlimited", 1)).await;
    set_quotas(&*store, "daily", r#"{"max_events_per_day":2}"#).await;
    for n in 0..2 {
        let accepted = accept_at(&*store, "daily", &format!("evt_{n}"), NOW_MS).await;
        assert_eq!(accepted.delivery_count(), 1);
    }
    assert_eq!(
        accept_at(&*store, "daily", "evt_2", NOW_MS).await,
        Acceptance::OverDailyQuota { per_day: 2 }
    );
    assert_eq!(
        accept_at(&*store, "daily", "evt_0", NOW_MS).await,
        Acceptance::Duplicate
    );
    assert_eq!(
        pending(&*store, "daily", &target.endpoint_id).await.len(),
        2
    );
    for n in 0..5 {
        let accepted = accept_at(&*store, "unlimited", &format!("evt_{n}"), NOW_MS).await;
        assert_eq!(accepted.delivery_count(), 1);
    }
    let tomorrow = NOW_MS + 24 * 3600 * 1000;
    assert_eq!(
        accept_at(&*store, "daily", "evt_2", tomorrow)
            .await
            .delivery_count(),
        1,
        "refused yesterday, not remembered"
    );
}
