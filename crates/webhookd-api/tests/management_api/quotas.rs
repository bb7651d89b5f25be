//! The quotas ingest enforces (SPEC §11) and how an endpoint shows its use
//! of them (SPEC §13).

use super::*;

/// An endpoint past `max_kept_deliveries_per_endpoint` gets no new
/// deliveries (the event is still accepted: 202) and shows the refusals on
/// `GET /v2/endpoint/{id}`; past `max_events_per_day` ingest answers
/// 10429 naming the limit.
pub(crate) async fn ingest_quotas_refuse_and_the_endpoint_shows_its_use(api: Api) {
    let endpoint = api.create(seed_body()).await;
    let id = endpoint["endpoint_id"].as_str().unwrap();
    let (status, json) = api
        .admin(
            Method::PUT,
            "/internal/users/johndoe/quotas",
            Some(json!({"max_kept_deliveries_per_endpoint": 2, "max_events_per_day": 4})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{json}");
    for n in 0..4 {
        let (status, json) = api.ingest(&event_message(&format!("evt_{n}"))).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{json}");
    }
    assert_eq!(api.pending_event_ids(id).await, vec!["evt_0", "evt_1"]);
    let refused = api.ingest(&event_message("evt_4")).await;
    assert_error(
        &refused,
        StatusCode::TOO_MANY_REQUESTS,
        10429,
        "4 events per day",
    );
    // A producer's retry of an event accepted today is still a duplicate.
    assert_eq!(
        api.ingest(&event_message("evt_0")).await.0,
        StatusCode::ACCEPTED
    );

    let (status, json) = api
        .call(Method::GET, &format!("/v2/endpoint/{id}"), None)
        .await;
    assert_eq!(status, StatusCode::OK, "{json}");
    let data = &json["data"];
    assert_eq!(data["endpoint_id"], id);
    assert_eq!(data["url"], endpoint["url"]);
    assert_eq!(data["quota_refused"], 2);
    assert_eq!(
        data["counts"],
        json!({"pending": 2, "delivered": 0, "failed": 0})
    );
    assert_eq!(
        data["quota"],
        json!({"max_kept_deliveries_per_endpoint": 2, "kept": 2})
    );

    let missing = api.call(Method::GET, "/v2/endpoint/ep_missing", None).await;
    assert_error(&missing, StatusCode::NOT_FOUND, 10104, "not found");
}
