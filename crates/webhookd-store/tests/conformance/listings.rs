//! Delivery listings with order and filters (SPEC §13).

use webhookd_store::{DeliveryQuery, Listing, Order};

use super::*;

/// Six deliveries to one endpoint, ten minutes apart: two event types,
/// accepted at their own times (the store's `created_at`).
pub(crate) async fn listings_run_newest_first_and_filter_by_event_id_and_time(
    store: Arc<dyn Store>,
) {
    let target = endpoint("vera", 1);
    create(&*store, &target).await;
    let start = webhookd_core::time::unix_millis() - 3_600_000;
    let minute = 60_000;
    let mut created = Vec::new();
    for i in 0..6_i64 {
        let event_type = if i % 2 == 0 {
            EventType::GENERATED_VIDEO_SUCCESS
        } else {
            EventType::GENERATED_VIDEO_FAILED
        };
        let at = start + i * 10 * minute;
        let message = json_message("vera", &format!("evt_{i}"), &event_type);
        let event = Event::parse(message.as_bytes(), at / 1000).unwrap();
        let outcomes = store.accept_events(&[event], at).await.unwrap();
        let [Acceptance::Accepted { deliveries, .. }] = outcomes.as_slice() else {
            panic!("{outcomes:?}");
        };
        created.push((deliveries[0].delivery_id.clone(), at));
    }
    let ids = |listing: &Listing| -> Vec<String> {
        listing
            .deliveries
            .iter()
            .map(|d| d.event_id.clone())
            .collect()
    };
    let list = |query: DeliveryQuery| {
        let store = Arc::clone(&store);
        let endpoint_id = target.endpoint_id.clone();
        async move {
            store
                .query_deliveries("vera", &endpoint_id, DeliveryStatus::Pending, &query)
                .await
                .unwrap()
        }
    };
    let page = |limit: usize, after: Option<String>| Page { limit, after };

    // Newest first, paged.
    let first = list(DeliveryQuery {
        page: page(4, None),
        order: Order::Descending,
        ..DeliveryQuery::default()
    })
    .await;
    assert_eq!(ids(&first), ["evt_5", "evt_4", "evt_3", "evt_2"]);
    let second = list(DeliveryQuery {
        page: page(4, first.next_after.clone()),
        order: Order::Descending,
        ..DeliveryQuery::default()
    })
    .await;
    assert_eq!(ids(&second), ["evt_1", "evt_0"]);
    assert_eq!(second.next_after, None, "the end");

    // By event type, oldest first, paged through the filter.
    let mut seen = Vec::new();
    let mut after = None;
    loop {
        let listing = list(DeliveryQuery {
            page: page(2, after.clone()),
            event: Some(EventType::GENERATED_VIDEO_FAILED),
            ..DeliveryQuery::default()
        })
        .await;
        seen.extend(ids(&listing));
        match listing.next_after {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    assert_eq!(seen, ["evt_1", "evt_3", "evt_5"]);

    // By event id.
    let one = list(DeliveryQuery {
        page: page(10, None),
        event_id: Some("evt_4".into()),
        ..DeliveryQuery::default()
    })
    .await;
    assert_eq!(ids(&one), ["evt_4"]);
    assert_eq!(one.deliveries[0].delivery_id, created[4].0);

    // A time window, both ends inclusive, newest first.
    let window = list(DeliveryQuery {
        page: page(10, None),
        order: Order::Descending,
        since_ms: Some(created[1].1),
        until_ms: Some(created[3].1),
        ..DeliveryQuery::default()
    })
    .await;
    assert_eq!(ids(&window), ["evt_3", "evt_2", "evt_1"]);
    let nothing = list(DeliveryQuery {
        page: page(10, None),
        since_ms: Some(created[5].1 + 1),
        ..DeliveryQuery::default()
    })
    .await;
    assert!(nothing.deliveries.is_empty());
    assert_eq!(nothing.next_after, None);
}

/// A filter that matches little never makes one call walk the whole index:
/// a call looks at no more than `MAX_SCANNED` entries and says where to go
/// on (`next_after`), so paging still finds every match.
pub(crate) async fn a_filtered_listing_pages_through_a_large_index(store: Arc<dyn Store>) {
    let target = endpoint("walt", 1);
    create(&*store, &target).await;
    let total = webhookd_store::MAX_SCANNED + 100;
    let events: Vec<Event> = (0..total)
        .map(|i| {
            event(
                "walt",
                &format!("evt_{i}"),
                &EventType::GENERATED_VIDEO_SUCCESS,
            )
        })
        .collect();
    for chunk in events.chunks(500) {
        store.accept_events(chunk, NOW_MS).await.unwrap();
    }
    let wanted = format!("evt_{}", total - 1);
    let mut found = Vec::new();
    let mut after = None;
    let mut calls = 0;
    loop {
        calls += 1;
        let query = DeliveryQuery {
            page: Page { limit: 10, after },
            event_id: Some(wanted.clone()),
            ..DeliveryQuery::default()
        };
        let listing = store
            .query_deliveries("walt", &target.endpoint_id, DeliveryStatus::Pending, &query)
            .await
            .unwrap();
        found.extend(listing.deliveries.into_iter().map(|d| d.event_id));
        match listing.next_after {
            Some(next) => after = Some(next),
            None => break,
        }
        assert!(calls <= 3, "paging goes forward");
    }
    assert_eq!(found, [wanted]);
}
