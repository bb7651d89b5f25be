//! An endpoint's delivery options document (SPEC §14): stored as given,
//! changed only when an update says so, and carried by every claim — the
//! fast path's included — so an attempt uses the options of its time.

use std::sync::Arc;

use webhookd_core::{EndpointSpec, EventType};
use webhookd_store::{AttemptResult, Store};

use super::{NOW_MS, accept, attempt, claim_at, claim_request, create, endpoint, event};

pub(super) async fn delivery_options_are_kept_changed_and_claimed(store: Arc<dyn Store>) {
    let mut first = endpoint("opal", 1);
    first.options = Some(r#"{"headers":[{"name":"X-A","value":"1"}]}"#.into());
    create(&*store, &first).await;
    let read = store
        .get_endpoint("opal", &first.endpoint_id)
        .await
        .unwrap();
    assert_eq!(read.unwrap().options, first.options);

    let event_type = EventType::GENERATED_VIDEO_SUCCESS;
    accept(&*store, &event("opal", "evt_o1", &event_type)).await;
    let claims = claim_at(&*store, NOW_MS, 10).await;
    assert_eq!(claims.len(), 1);
    assert_eq!(claims[0].options, first.options);

    let mut spec = EndpointSpec {
        ordering: None,
        filter: None,
        url: first.url.clone(),
        status: None,
        events: first.events.clone(),
        rate_limit: None,
        options: None,
    };
    // Left out: unchanged.
    let kept = store
        .update_endpoint("opal", &first.endpoint_id, &spec)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(kept.options, first.options);
    // Replaced: the fast path's claims carry the new document.
    let replaced = Some(r#"{"signature":"ed25519"}"#.to_owned());
    spec.options = Some(replaced.clone());
    let changed = store
        .update_endpoint("opal", &first.endpoint_id, &spec)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(changed.options, replaced);
    let (_, leased) = store
        .accept_and_claim(
            &[event("opal", "evt_o2", &event_type)],
            NOW_MS,
            &claim_request(NOW_MS, 10),
        )
        .await
        .unwrap();
    assert_eq!(leased.len(), 1);
    assert_eq!(leased[0].options, replaced);
    // Removed.
    spec.options = Some(None);
    let removed = store
        .update_endpoint("opal", &first.endpoint_id, &spec)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(removed.options, None);
    accept(&*store, &event("opal", "evt_o3", &event_type)).await;
    let claims = claim_at(&*store, NOW_MS, 10).await;
    assert!(!claims.is_empty());
    assert!(claims.iter().all(|claim| claim.options.is_none()));
}

/// The producer's trace context (SPEC §15) is kept with each delivery of
/// its event and comes back with every claim — the fast path's, a retry's —
/// and in listings; an event without one has none.
pub(super) async fn trace_contexts_are_kept_with_deliveries_and_claimed(store: Arc<dyn Store>) {
    use webhookd_core::trace::TraceContext;

    let first = endpoint("tara", 1);
    create(&*store, &first).await;
    let context = TraceContext::from_headers(
        Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),
        Some("rojo=00f067aa0ba902b7"),
    );
    let stored = context.as_ref().map(TraceContext::to_stored);
    let event_type = EventType::GENERATED_VIDEO_SUCCESS;
    let traced = event("tara", "evt_t1", &event_type).with_trace(context);
    accept(&*store, &traced).await;
    accept(&*store, &event("tara", "evt_t2", &event_type)).await;
    let mut claims = claim_at(&*store, NOW_MS, 10).await;
    claims.sort_by(|a, b| a.delivery.event_id.cmp(&b.delivery.event_id));
    assert_eq!(claims.len(), 2);
    assert_eq!(claims[0].delivery.trace, stored);
    assert_eq!(claims[1].delivery.trace, None);

    let (_, leased) = store
        .accept_and_claim(
            &[event("tara", "evt_t3", &event_type).with_trace(traced.trace.clone())],
            NOW_MS,
            &claim_request(NOW_MS, 10),
        )
        .await
        .unwrap();
    assert_eq!(leased.len(), 1);
    assert_eq!(leased[0].delivery.trace, stored);

    // A retry comes back with it, and the delivery's record keeps it.
    let retry_at = NOW_MS + 5_000;
    let failed = attempt(1, Some(503), "http_5xx");
    assert!(
        store
            .record_attempt(&leased[0], &failed, AttemptResult::RetryAt(retry_at))
            .await
            .unwrap()
    );
    let again = claim_at(&*store, retry_at, 10).await;
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].delivery.trace, stored);
    let (kept, _) = store
        .delivery_attempts("tara", &first.endpoint_id, &leased[0].delivery.delivery_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(kept.trace, stored);
}
