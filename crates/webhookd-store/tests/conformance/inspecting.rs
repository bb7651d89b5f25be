//! What the delivery detail reads (SPEC §13): an event's body kept once,
//! shared by its deliveries, after a delivered one dropped its own; and
//! how each attempt was signed.

use webhookd_core::signer::Signing;

use super::*;

pub(crate) async fn an_events_body_is_kept_once_and_outlives_its_delivered_copies(
    store: Arc<dyn Store>,
) {
    let (first, second) = (endpoint("pia", 1), endpoint("pia", 2));
    create(&*store, &first).await;
    create(&*store, &second).await;
    let event = event("pia", "evt_kept", &EventType::GENERATED_VIDEO_SUCCESS);
    let created = deliveries(accept(&*store, &event).await);
    assert_eq!(created.len(), 2);
    for delivery in &created {
        assert_eq!(
            store.kept_payload(delivery, NOW_MS).await.unwrap(),
            Some(event.body()),
            "each delivery of the event reads the one body"
        );
    }

    // Delivered, signed: the delivery's own copy goes, the kept one stays,
    // and the record keeps how the request was signed.
    let claims = claim_at(&*store, NOW_MS, 10).await;
    let claim = claims
        .iter()
        .find(|claim| claim.delivery.endpoint_id == first.endpoint_id)
        .unwrap()
        .clone();
    let signing = Signing {
        timestamp: NOW_MS / 1000 + 1,
        check: "5eed0b0e".into(),
    };
    let record = AttemptRecord {
        signing: Some(signing.clone()),
        ..attempt(1, Some(200), "ok")
    };
    let written = store
        .record_attempts(&[FinishedAttempt {
            claim,
            record,
            result: AttemptResult::Delivered,
        }])
        .await
        .unwrap();
    assert_eq!(written, [Recorded::Written]);
    let (delivered, log) = store
        .delivery_attempts("pia", &first.endpoint_id, &created[0].delivery_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(delivered.status, DeliveryStatus::Delivered);
    assert_eq!(delivered.body, "", "a delivered delivery keeps no body");
    assert_eq!(log[0].signing.as_ref(), Some(&signing));
    assert_eq!(
        store.kept_payload(&delivered, NOW_MS).await.unwrap(),
        Some(event.body())
    );

    // A test delivery's synthetic event is kept too.
    let test_event = webhookd_core::Event {
        event_id: ids::new_event_id(),
        ..event.clone()
    };
    let test = store
        .create_test_delivery(&second.endpoint_id, &test_event, NOW_MS + 5)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        store.kept_payload(&test, NOW_MS + 5).await.unwrap(),
        Some(test_event.body())
    );
}
