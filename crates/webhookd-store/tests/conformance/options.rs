//! An endpoint's delivery options document (SPEC §14): stored as given,
//! changed only when an update says so, and carried by every claim — the
//! fast path's included — so an attempt uses the options of its time.

use std::sync::Arc;

use webhookd_core::{EndpointSpec, EventType};
use webhookd_store::Store;

use super::{NOW_MS, accept, claim_at, claim_request, create, endpoint, event};

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
